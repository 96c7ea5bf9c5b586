"""python -m bench: load a fastlimit server and check that its limit held.

`python -m bench` starts `python -m server` on a free loopback port (or
loads the server at --url), sends requests from several client processes,
and prints counts, rate, latency and the exactness check. The exit status
is 0 when every request got a 200 or a 429 and the 200s are exactly what
the limit allows, 1 otherwise, and 2 for invalid options.

`python -m bench compare` runs the side-by-side comparison of limiters, and
`python -m bench plot` draws the figures of a comparison.
"""

import argparse
import os
import secrets
import sys
import tempfile

from fastlimit import parse_many

from . import load, report
from .process import ROOT, ServerProcess, free_port, python_argv

DEFAULT_LIMIT = "20/second"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Load a fastlimit server with many client ids and check that the "
            "number of 200s is exactly what the limit allows."
        ),
        epilog=(
            "Other commands: 'python -m bench compare --help' compares "
            "limiters, 'python -m bench plot --help' draws its figures."
        ),
    )
    parser.add_argument(
        "--url",
        help="load this running server on loopback instead of starting one "
        "(set --limit and --key-spec to what it uses)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=load.cpu_count(),
        help="worker processes of the started server (default: %(default)s, "
        "the cores available)",
    )
    parser.add_argument(
        "--limit",
        default=DEFAULT_LIMIT,
        help="the limit per client id, one policy such as 20/second "
        "(default: %(default)s, low enough that windows fill up and both "
        "200s and 429s are checked)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=50,
        help="number of client ids (default: %(default)s)",
    )
    parser.add_argument(
        "--key-spec",
        default="ip",
        help="how requests carry the client id: ip (an X-Real-IP and "
        "X-Forwarded-For header that the started server trusts), query:NAME "
        "or header:NAME (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="open connections, summed over client processes (default: %(default)s)",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration",
        type=float,
        help="seconds to send requests for (default: 10 unless --requests is set)",
    )
    stop.add_argument("--requests", type=int, help="number of requests to send")
    parser.add_argument(
        "--rate",
        type=float,
        help="target requests per second over all clients, paced evenly "
        "(default: as fast as the connections allow)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=load.cpu_count(),
        help="client processes (default: %(default)s, the cores available)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds before one request counts as failed (default: %(default)s)",
    )
    parser.add_argument(
        "--clock-slack",
        type=float,
        default=0.0,
        help="seconds by which the server's clock may differ from the client's; "
        "widens the window of every request in the check (default: %(default)s)",
    )
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="open a new connection for every request, which spreads requests "
        "over the server's workers more evenly (default: keep connections open)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--quiet", action="store_true", help="print no progress while running"
    )
    return parser


def validate(parser, args):
    """Check option values that argparse cannot, exiting with status 2."""
    for name in ("workers", "keys", "concurrency", "processes", "requests"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"invalid --{name} {value}: use 1 or more")
    for name in ("duration", "rate", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"invalid --{name} {value}: use a positive number")
    if args.clock_slack < 0:
        parser.error(f"invalid --clock-slack {args.clock_slack}: use 0 or more")
    try:
        policies = parse_many(args.limit)
        kind, _ = load.parse_key_spec(args.key_spec)
        keys = load.client_ids(args.keys, kind, secrets.token_hex(3))
    except ValueError as exc:
        parser.error(str(exc))
    if len(policies) != 1:
        parser.error(
            f"invalid --limit {args.limit!r}: the exactness check takes one "
            "policy, such as 20/second"
        )
    if args.url and not args.url.startswith(
        ("http://127.", "http://[::1]", "http://localhost")
    ):
        parser.error(f"invalid --url {args.url!r}: use a server on loopback")
    if args.duration is None and args.requests is None:
        args.duration = 10.0
    return policies[0], keys


def server_environment(limit, key_spec, table_path):
    """Return the environment for `python -m server` with this limit and key."""
    env = dict(os.environ)
    env["FASTLIMIT_LIMIT"] = limit
    env["FASTLIMIT_KEY"] = key_spec
    env["FASTLIMIT_TABLE"] = table_path
    if key_spec == "ip":
        # Sanic takes the client address from X-Real-IP only when its config
        # states that one proxy sits in front of it.
        env["SANIC_PROXIES_COUNT"] = "1"
        env["SANIC_REAL_IP_HEADER"] = "x-real-ip"
    return env


def run_main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    policy, keys = validate(parser, args)
    spec = load.LoadSpec(
        url=args.url or "",
        key_spec=args.key_spec,
        keys=keys,
        concurrency=args.concurrency,
        processes=args.processes,
        duration=args.duration,
        requests=args.requests,
        rate=args.rate,
        timeout=args.timeout,
        keep_alive=not args.new_connections,
    )

    if args.url:
        records = load.run(spec, show_progress=not args.quiet)
        summary = report.summarize(records, spec, policy, slack=args.clock_slack)
    else:
        with tempfile.TemporaryDirectory(prefix="fastlimit-bench-") as directory:
            port = free_port()
            spec.url = f"http://127.0.0.1:{port}"
            server = ServerProcess(
                python_argv(
                    "-m",
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ),
                spec.url,
                env=server_environment(
                    args.limit, args.key_spec, os.path.join(directory, "table")
                ),
                cwd=ROOT,
            )
            with server:
                before = server.cpu_seconds_by_pid()
                records = load.run(spec, show_progress=not args.quiet)
                after = server.cpu_seconds_by_pid()
            # The CPU time of each server process during the run shows how
            # the load spread over the workers, because the server does not
            # name its worker in responses.
            by_pid = {
                str(pid): seconds - before.get(pid, 0.0)
                for pid, seconds in after.items()
            }
            described = {
                "command": "python -m server",
                "url": spec.url,
                "workers": args.workers,
                "pid": server.pid,
                "cpu_seconds": sum(by_pid.values()) if by_pid else None,
                "cpu_seconds_by_pid": by_pid,
            }
            summary = report.summarize(
                records, spec, policy, server=described, slack=args.clock_slack
            )

    print("\n".join(report.format_text(summary)))
    if args.json:
        report.write_json(summary, args.json)
    return 0 if summary["ok"] else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from . import compare

        return compare.main(argv[1:])
    if argv[:1] == ["plot"]:
        from . import plot

        return plot.main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
