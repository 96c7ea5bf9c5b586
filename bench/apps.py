"""One Sanic app, served with each limiter that the comparison measures.

python -m bench.apps --variant NAME --port N --workers N --limit L

Every variant has the same handler, which returns a small JSON body, and
names its worker process in X-Worker-Pid. The client id comes from the
X-Client header. The limiting variants add X-RateLimit-Limit,
X-RateLimit-Remaining and X-RateLimit-Reset to every response and reject
with 429 and Retry-After:

- none: no limiter.
- fastlimit: fastlimit.sanic over a table file that every worker maps, so
  the limit applies across workers.
- limits-memory: limits' FixedWindowRateLimiter over MemoryStorage. Each
  worker has its own storage, so with N workers a client can get up to N
  times the limit.
- limits-redis: limits' asyncio FixedWindowRateLimiter over RedisStorage
  (the redis-py client), shared by every worker through one redis-server.

The limits variants call hit() and then get_window_stats() for the
remaining count, which for Redis is a second round trip per request.
"""

import argparse
import functools
import math
import os
import time

from sanic import Sanic
from sanic.response import json as json_response
from sanic.worker.loader import AppLoader

VARIANTS = ("none", "fastlimit", "limits-memory", "limits-redis")
KEY_HEADER = "x-client"


def _handler_app(name):
    app = Sanic(name)
    app.config.MOTD = False
    app.config.ACCESS_LOG = False
    body = {"ok": True}

    @app.get("/")
    async def index(request):
        return json_response(body)

    @app.get("/healthz")
    async def healthz(request):
        return json_response({"ok": True})

    @app.on_response
    async def name_worker(request, response):
        response.headers["X-Worker-Pid"] = app.ctx.pid

    @app.before_server_start
    async def remember_pid(app):
        app.ctx.pid = str(os.getpid())

    return app


def _rejected(limit, reset_after):
    retry_after = max(1, math.ceil(reset_after))
    response = json_response(
        {"error": "rate limit exceeded", "retry_after": retry_after}, status=429
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _add_limits_middleware(app, limit, storage_uri):
    from limits import parse

    item = parse(limit)

    @app.before_server_start
    async def open_storage(app):
        if storage_uri is None:
            from limits.storage import MemoryStorage
            from limits.strategies import FixedWindowRateLimiter

            app.ctx.limiter = FixedWindowRateLimiter(MemoryStorage())
            app.ctx.is_async = False
        else:
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import FixedWindowRateLimiter

            storage = RedisStorage(storage_uri, implementation="redispy")
            app.ctx.limiter = FixedWindowRateLimiter(storage)
            app.ctx.is_async = True

    @app.on_request
    async def limit_request(request):
        if request.path != "/":
            return None
        key = request.headers.get(KEY_HEADER, "")
        limiter = request.app.ctx.limiter
        if request.app.ctx.is_async:
            allowed = await limiter.hit(item, key)
            reset, remaining = await limiter.get_window_stats(item, key)
        else:
            allowed = limiter.hit(item, key)
            reset, remaining = limiter.get_window_stats(item, key)
        reset_after = max(0.0, reset - time.time())
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_after)),
        }
        request.ctx.limit_headers = headers
        if not allowed:
            response = _rejected(item.amount, reset_after)
            response.headers.update(headers)
            return response
        return None

    @app.on_response
    async def add_headers(request, response):
        headers = getattr(request.ctx, "limit_headers", None)
        if headers is not None and response.status != 429:
            response.headers.update(headers)


def _add_fastlimit(app, limit, table):
    from fastlimit.sanic import attach

    # The same header sets as the limits variants send, so that every
    # limiting variant writes the same response.
    attach(
        app,
        limit,
        key=f"header:{KEY_HEADER}",
        table=table,
        headers=("x-ratelimit", "retry-after"),
    )


def create_app(variant, limit, table=None, redis_url=None):
    """Return the benchmark app with limiter `variant` and `limit` per client id."""
    if variant not in VARIANTS:
        raise ValueError(
            f"invalid variant {variant!r}: use one of {', '.join(VARIANTS)}"
        )
    app = _handler_app(f"bench_{variant.replace('-', '_')}")
    if variant == "fastlimit":
        _add_fastlimit(app, limit, table)
    elif variant == "limits-memory":
        _add_limits_middleware(app, limit, None)
    elif variant == "limits-redis":
        if redis_url is None:
            raise ValueError("the limits-redis variant needs --redis-url")
        _add_limits_middleware(app, limit, "async+" + redis_url)
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.apps", description="Serve the benchmark app."
    )
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    parser.add_argument("--limit", default="1000000/hour", help="limit per client id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--table", help="table file of the fastlimit variant")
    parser.add_argument("--redis-url", help="redis://127.0.0.1:PORT for limits-redis")
    args = parser.parse_args(argv)

    loader = AppLoader(
        factory=functools.partial(
            create_app, args.variant, args.limit, args.table, args.redis_url
        )
    )
    app = loader.load()
    app.prepare(
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        motd=False,
        single_process=False,
    )
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
