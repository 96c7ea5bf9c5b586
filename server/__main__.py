"""python -m server: serve the rate-limited app with Sanic's worker manager.

Exits with status 2 and a one-line message on stderr for invalid
configuration, including a table file that cannot be created or opened and
an address that cannot be bound.
"""

import logging
import os
import socket
import sys
from functools import partial

from sanic import Sanic
from sanic.worker.loader import AppLoader

import fastlimit
from fastlimit.sanic import namespace

from .app import configure_logging, create_app
from .config import ConfigError, describe_host, load_config, load_dotenv

logger = logging.getLogger("fastlimit.server")


def check_table(config):
    """Create or open the table for every rule, then unmap it.

    Returns the table statistics. Raises ConfigError naming the path when
    the file cannot be used.
    """
    if not config.enabled:
        return None
    for rule in config.rules:
        try:
            limiter = fastlimit.Limiter(
                list(rule.limits),
                path=config.table,
                slots=config.slots,
                namespace=namespace(rule),
            )
        except (OSError, ValueError, fastlimit.FastlimitError) as error:
            raise ConfigError(
                f"cannot use table {config.table!r} (FASTLIMIT_TABLE): {error}"
            ) from None
        limiter.close()
    return fastlimit.table_stats(config.table)


def check_address(config):
    """Bind the host and port once, so a bad address fails before Sanic starts."""
    # An IP address only (or localhost): resolving a name here would send
    # a DNS query from a server that is only meant to listen.
    flags = socket.AI_PASSIVE
    if config.host != "localhost":
        flags |= socket.AI_NUMERICHOST
    try:
        infos = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM, flags=flags
        )
    except socket.gaierror:
        raise ConfigError(
            f"invalid host {config.host!r}: use an IP address such as "
            "127.0.0.1 or ::1, or localhost"
        ) from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {describe_host(config.host)}:{config.port}: "
                f"{error.strerror or error}"
            ) from None


def describe_rules(rules):
    return " & ".join(str(rule) for rule in rules) or "none"


def serve(config):
    """Run Sanic until it stops, with one worker per config.workers.

    Returns the app. In multi-worker mode, its ctx.watchdog.gave_up is true
    when the server stopped because its workers kept dying.
    """
    loader = AppLoader(factory=partial(create_app, config))
    app = loader.load()
    Sanic.start_method = config.start_method
    app.prepare(
        host=config.host,
        port=config.port,
        workers=config.workers,
        access_log=config.access_log,
        single_process=config.single_process,
        motd=False,
    )
    if config.single_process:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return app


def main(argv=None):
    environ = os.environ
    try:
        # Workers inherit os.environ, so the SANIC_ settings from .env
        # reach Sanic's configuration in every worker too.
        load_dotenv(environ)
        config = load_config(argv, environ)
        configure_logging(config.log_level)
        stats = check_table(config)
        check_address(config)
    except ConfigError as error:
        print(f"python -m server: error: {error}", file=sys.stderr)
        return 2

    mode = "single process" if config.single_process else f"{config.workers} workers"
    if stats is None:
        table = "none (limiting disabled by FASTLIMIT_ENABLED=0)"
    else:
        table = f"{config.table} ({stats['slots']} slots, {stats['file_size']} bytes)"
    logger.info(
        "starting on http://%s:%d: rules %s, %s (%s start method), table %s, "
        "compiled extension %s, access log %s",
        describe_host(config.host),
        config.port,
        describe_rules(config.rules) if config.enabled else "none",
        mode,
        config.start_method,
        table,
        "in use" if fastlimit.COMPILED else "not in use",
        "on" if config.access_log else "off",
    )
    try:
        app = serve(config)
    finally:
        logger.info("stopped on http://%s:%d", describe_host(config.host), config.port)
    watchdog = getattr(app.ctx, "watchdog", None)
    if watchdog is not None and watchdog.gave_up:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
