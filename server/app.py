"""The Sanic app that python -m server runs.

Routes:
    GET/HEAD /          200 with a small JSON body, limited by the rules.
    GET/HEAD /healthz   200 {"status": "ok"}, never limited or counted.
"""

import logging
import os
import sys

from sanic import Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from fastlimit.sanic import attach, exempt

from .workers import WorkerWatchdog, mark_serving, watch_parent

APP_NAME = "fastlimit_server"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
_HANDLER_NAME = "fastlimit.server.stderr"

INDEX_BODY = b'{"message":"hello from fastlimit"}'
HEALTH_BODY = b'{"status":"ok"}'

logger = logging.getLogger("fastlimit.server")


def configure_logging(level):
    """Send the "fastlimit" loggers (library and server) to stderr.

    Safe to call again in the same process, as workers started by fork do.
    """
    package_logger = logging.getLogger("fastlimit")
    if not any(handler.name == _HANDLER_NAME for handler in package_logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False


def _add_routes(app):
    @app.route("/", methods=["GET", "HEAD"])
    async def index(request):
        return HTTPResponse(INDEX_BODY, content_type="application/json")

    @app.route("/healthz", methods=["GET", "HEAD"])
    @exempt
    async def healthz(request):
        return HTTPResponse(HEALTH_BODY, content_type="application/json")


def _add_worker_listeners(app, config):
    @app.before_server_start
    async def log_worker_start(app):
        logger.info("worker started: pid %d", os.getpid())

    @app.after_server_stop
    async def log_worker_stop(app):
        logger.info("worker stopped: pid %d", os.getpid())

    @app.after_server_start
    async def mark_worker_serving(app):
        if config.single_process:
            logger.info("ready: 1 process serving")
        else:
            mark_serving(app)
            app.add_task(watch_parent(os.getppid()))

    @app.main_process_ready
    async def start_watchdog(app):
        app.ctx.watchdog = WorkerWatchdog(app.manager)
        app.ctx.watchdog.start()

    @app.main_process_stop
    async def stop_watchdog(app):
        watchdog = getattr(app.ctx, "watchdog", None)
        if watchdog is not None:
            watchdog.stop()


def create_app(config):
    """Return the server's Sanic app for a server.config.Config.

    Runs in the main process and again in every spawned worker. A worker
    started by fork already has the app from its parent, so that one is
    returned.
    """
    configure_logging(config.log_level)
    try:
        return Sanic.get_app(APP_NAME)
    except SanicException:
        pass

    app = Sanic(APP_NAME)
    app.config.MOTD = False
    app.config.ACCESS_LOG = config.access_log
    _add_routes(app)
    if config.enabled:
        attach(
            app,
            list(config.rules),
            table=config.table,
            slots=config.slots,
            headers=config.headers,
            ipv6_prefix=config.ipv6_prefix,
            allow=config.allow,
        )
    _add_worker_listeners(app, config)
    return app
