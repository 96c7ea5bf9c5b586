"""Server configuration from the command line, the environment and .env.

Every setting has an environment variable and a default; --host, --port
and --workers override their variables. A `.env` file in the working
directory is read too, and a variable set in the real environment wins
over the same name in the file. Invalid values raise ConfigError with a
one-line message naming the value.
"""

import argparse
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass

from fastlimit.headers import HEADER_SETS, parse_header_sets
from fastlimit.keys import DEFAULT_IPV6_PREFIX, normalise_spec
from fastlimit.policy import parse_many
from fastlimit.sanic import Rule, parse_allowlist

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_LIMIT = "100/second"
DEFAULT_KEY = "ip"
# Not forkserver: Sanic 25.12 names each worker through an environment
# variable that a forkserver child does not inherit, so its workers never
# acknowledge their start and Sanic stops the server after 30 s.
START_METHODS = ("spawn", "fork")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_RULE_SEPARATORS = re.compile(r"[&\n]")
_DOTENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ConfigError(ValueError):
    """An invalid setting. The message is one line that names the value."""


@dataclass(frozen=True)
class Config:
    """The server settings. Picklable, so spawned workers receive a copy."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    rules: tuple = ()
    table: str = ""
    slots: object = None
    headers: frozenset = frozenset(HEADER_SETS)
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX
    allow: tuple = ()
    enabled: bool = True
    access_log: bool = False
    start_method: str = "spawn"
    single_process: bool = False
    log_level: str = "INFO"


def cpu_count():
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_table_path(port):
    """Return the default table path, unique per user and port.

    The file lives in /dev/shm (memory-backed) where it exists and is
    writable, else in the temporary directory, so two servers on different
    ports never share a table by accident.
    """
    directory = "/dev/shm"
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        directory = tempfile.gettempdir()
    return os.path.join(directory, f"fastlimit-server-{os.geteuid()}-{port}.table")


def parse_dotenv(text, source=".env"):
    """Parse KEY=VALUE lines into a dict.

    Blank lines and lines starting with # are skipped, an `export ` prefix
    is allowed, and a value in matching single or double quotes is taken
    literally without them. Raises ConfigError naming the line otherwise.
    """
    values = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not _DOTENV_NAME.fullmatch(name):
            raise ConfigError(
                f"invalid line {number} in {source}: {raw_line!r} "
                "(use NAME=VALUE)"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load_dotenv(environ, path=".env"):
    """Add the variables of the .env file at path to environ, if it exists.

    Names already in environ keep their value. Returns the names added.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"failed to read {path}: {error}") from None
    added = []
    for name, value in parse_dotenv(text, path).items():
        if name not in environ:
            environ[name] = value
            added.append(name)
    return added


def _integer(name, text, minimum, maximum=None):
    digits = text.strip()
    # Plain ASCII digits only: int() would also take "1_0", "+5" and the
    # digits of other scripts.
    value = None
    if digits.isascii() and digits.isdigit() and len(digits) < 20:
        value = int(digits)
    if value is None or value < minimum or (maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise ConfigError(f"invalid {name} {text!r}: use a whole number {minimum}{upper}")
    return value


def _boolean(name, text):
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"invalid {name} {text!r}: use 1 or 0")


def _choice(name, text, choices):
    value = text.strip()
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ConfigError(f"invalid {name} {text!r}: use one of {', '.join(choices)}")


def parse_rules(text):
    """Parse FASTLIMIT_RULES, such as "ip=100/second;1000/hour & query:q=10/minute".

    Rules are separated by "&" or newlines, and each is KEYSPEC=LIMITS.
    Rules with the same key spec are merged into one rule with all their
    limits, because a request must pass all of them anyway. Returns a tuple
    of Rule; raises ConfigError naming the bad rule.
    """
    merged = {}
    for part in _RULE_SEPARATORS.split(text):
        if not part.strip():
            continue
        spec, equals, limits = part.partition("=")
        if not equals:
            raise ConfigError(
                f"invalid FASTLIMIT_RULES rule {part.strip()!r}: use KEYSPEC=LIMITS, "
                "such as ip=100/second"
            )
        try:
            rule = Rule(spec, limits)
        except ValueError as error:
            raise ConfigError(f"invalid FASTLIMIT_RULES: {error}") from None
        if rule.key in merged:
            rule = Rule(rule.key, merged[rule.key].limits + rule.limits)
        merged[rule.key] = rule
    if not merged:
        raise ConfigError(f"invalid FASTLIMIT_RULES {text!r}: no rule given")
    return tuple(merged.values())


def _default_rule(environ):
    key = environ.get("FASTLIMIT_KEY", DEFAULT_KEY)
    try:
        key = normalise_spec(key)
    except ValueError as error:
        raise ConfigError(f"invalid FASTLIMIT_KEY: {error}") from None
    try:
        limits = parse_many(environ.get("FASTLIMIT_LIMIT", DEFAULT_LIMIT))
    except ValueError as error:
        raise ConfigError(f"invalid FASTLIMIT_LIMIT: {error}") from None
    return (Rule(key, limits),)


def _check_sanic_proxy_settings(environ):
    """Check the SANIC_ proxy variables that Sanic itself reads in workers."""
    count = environ.get("SANIC_PROXIES_COUNT")
    if count is not None:
        _integer("SANIC_PROXIES_COUNT", count, 0)
    header = environ.get("SANIC_REAL_IP_HEADER")
    if header is not None and not _HEADER_NAME.fullmatch(header):
        raise ConfigError(
            f"invalid SANIC_REAL_IP_HEADER {header!r}: use a header name "
            "such as X-Real-IP"
        )
    secret = environ.get("SANIC_FORWARDED_SECRET")
    if secret is not None and not secret.strip():
        raise ConfigError("invalid SANIC_FORWARDED_SECRET: the value is empty")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def build_parser(environ):
    """Return the argument parser, with defaults shown from environ."""
    parser = _Parser(
        prog="python -m server",
        description=(
            "Serve a Sanic app with fastlimit rate limits shared by every "
            "worker. Every option also has an environment variable; see "
            "docs/server.md for the others (rules, table, headers, "
            "allowlist, proxies)."
        ),
    )
    parser.add_argument(
        "--host",
        default=environ.get("FASTLIMIT_HOST", DEFAULT_HOST),
        help=f"address to listen on (FASTLIMIT_HOST, default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        default=environ.get("FASTLIMIT_PORT", str(DEFAULT_PORT)),
        help=f"TCP port to listen on (FASTLIMIT_PORT, default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--workers",
        default=environ.get("FASTLIMIT_WORKERS"),
        help=(
            "number of worker processes (FASTLIMIT_WORKERS, default: the "
            f"number of CPU cores, {cpu_count()} here)"
        ),
    )
    return parser


def load_config(argv, environ):
    """Build the Config from command-line arguments and environ.

    Raises ConfigError for any invalid option or variable.
    """
    options = build_parser(environ).parse_args(argv)

    host = options.host.strip()
    if not host:
        raise ConfigError("invalid host '': give an address such as 127.0.0.1")
    port = _integer("port (--port, FASTLIMIT_PORT)", options.port, 1, 65535)
    if options.workers is None:
        workers = cpu_count()
    else:
        workers = _integer(
            "workers (--workers, FASTLIMIT_WORKERS)", options.workers, 1, 1024
        )

    if environ.get("FASTLIMIT_RULES", "").strip():
        rules = parse_rules(environ["FASTLIMIT_RULES"])
    else:
        rules = _default_rule(environ)

    table = environ.get("FASTLIMIT_TABLE", "").strip() or default_table_path(port)
    slots_text = environ.get("FASTLIMIT_SLOTS", "").strip()
    slots = _integer("FASTLIMIT_SLOTS", slots_text, 3) if slots_text else None

    try:
        headers = parse_header_sets(
            environ.get("FASTLIMIT_HEADERS", ",".join(HEADER_SETS))
        )
    except ValueError as error:
        raise ConfigError(f"invalid FASTLIMIT_HEADERS: {error}") from None

    prefix_text = environ.get("FASTLIMIT_IPV6_PREFIX", str(DEFAULT_IPV6_PREFIX))
    ipv6_prefix = _integer("FASTLIMIT_IPV6_PREFIX", prefix_text, 1, 128)

    allow_text = environ.get("FASTLIMIT_ALLOW", "")
    try:
        parse_allowlist(allow_text)
    except ValueError as error:
        raise ConfigError(f"invalid FASTLIMIT_ALLOW: {error}") from None
    allow = tuple(entry.strip() for entry in allow_text.split(",") if entry.strip())

    _check_sanic_proxy_settings(environ)

    single_process = _boolean(
        "FASTLIMIT_SINGLE_PROCESS", environ.get("FASTLIMIT_SINGLE_PROCESS", "0")
    )
    if single_process:
        workers = 1

    return Config(
        host=host,
        port=port,
        workers=workers,
        rules=rules,
        table=table,
        slots=slots,
        headers=headers,
        ipv6_prefix=ipv6_prefix,
        allow=allow,
        enabled=_boolean("FASTLIMIT_ENABLED", environ.get("FASTLIMIT_ENABLED", "1")),
        access_log=_boolean(
            "FASTLIMIT_ACCESS_LOG", environ.get("FASTLIMIT_ACCESS_LOG", "0")
        ),
        start_method=_choice(
            "FASTLIMIT_START_METHOD",
            environ.get("FASTLIMIT_START_METHOD", "spawn"),
            START_METHODS,
        ),
        single_process=single_process,
        log_level=_choice(
            "FASTLIMIT_LOG_LEVEL", environ.get("FASTLIMIT_LOG_LEVEL", "INFO"), LOG_LEVELS
        ),
    )


def describe_host(host):
    """Return host in URL form: IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host
