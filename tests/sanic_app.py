"""A Sanic app that uses fastlimit.sanic directly, for test_sanic.py.

python tests/sanic_app.py --host H --port P --workers N

Environment: TEST_TABLE (table path), TEST_ON_ERROR (attach's on_error).
Logs "worker started: pid N" and "ready: ..." like python -m server, so
tests/serverproc.py can start and stop it.

Routes:
    /            app-wide rule only: ip=3/day
    /search      adds @limit("2/day", key="query:q")
    /twice       adds two stacked rules on header:x-client
    /same-a, /same-b   the same @limit each, counted apart
    /free        @exempt
    /break       @exempt; closes this worker's limiters so checks fail
"""

import argparse
import logging
import os
import sys

from sanic import Sanic
from sanic.response import HTTPResponse, json
from sanic.worker.loader import AppLoader

from fastlimit.sanic import attach, exempt, limit

logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(levelname)s %(name)s [%(process)d] %(message)s",
)


def create_app():
    app = Sanic("fastlimit_test_app")
    app.config.MOTD = False

    @app.get("/")
    async def index(request):
        return HTTPResponse(b"index")

    @app.get("/search")
    @limit("2/day", key="query:q")
    async def search(request):
        return HTTPResponse(b"search")

    @limit("5/day", key="header:x-client")
    @app.get("/twice")
    @limit("1/day; 50/day", key="header:x-client", name="tight")
    async def twice(request):
        return HTTPResponse(b"twice")

    @app.get("/same-a")
    @limit("1/day", key="path")
    async def same_a(request):
        return HTTPResponse(b"a")

    @app.get("/same-b")
    @limit("1/day", key="path")
    async def same_b(request):
        return HTTPResponse(b"b")

    @app.get("/free")
    @exempt
    async def free(request):
        return HTTPResponse(b"free")

    @app.get("/break")
    @exempt
    async def break_limiters(request):
        for limiter in app.ctx.fastlimit._limiters:
            limiter.close()
        return json({"closed": os.getpid()})

    @app.get("/healthz")
    @exempt
    async def healthz(request):
        return HTTPResponse(b"ok")

    attach(
        app,
        "3/day",
        table=os.environ["TEST_TABLE"],
        slots=4096,
        on_error=os.environ.get("TEST_ON_ERROR", "allow"),
    )

    @app.before_server_start
    async def log_start(app):
        print(f"worker started: pid {os.getpid()}", file=sys.stderr, flush=True)

    @app.main_process_ready
    async def log_ready(app):
        print(f"ready: {app.state.workers} workers serving", file=sys.stderr, flush=True)

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    options = parser.parse_args()
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=options.host, port=options.port, workers=options.workers)
    Sanic.serve(primary=app, app_loader=loader)
