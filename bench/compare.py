"""python -m bench compare: the same Sanic app with and without limiters.

Each variant of bench.apps runs as its own server with the same number of
workers. The throughput runs use wrk where it is installed, because wrk
costs far less CPU per request than an aiohttp client and both share the
machine with the server. Without wrk the aiohttp load generator is used.
Runs alternate between the variants, and every figure is the median of the
rounds.

Two loads are measured, and both send one of `--keys` client ids in an
X-Client header:

- allowed: a limit of 1000000/hour per client id, which no run reaches, so
  every request is counted and gets a 200 with rate limit headers.
- rejected: a limit of 1/hour, so all but the first request of each client
  id are counted and rejected with a 429.

Then a probe sends a fixed number of requests per client id with a limit of
100/hour and applies the exactness check, which shows whether the limit
applies across workers or per worker.
"""

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from fastlimit import Policy

from . import load, machine, report
from .apps import VARIANTS
from .process import ROOT, ServerProcess, free_port, python_argv

SCENARIOS = {
    "allowed": "1000000/hour",
    "rejected": "1/hour",
}
PROBE_LIMIT = Policy(100, 3600.0)
PROBE_KEYS = 4
PROBE_REQUESTS_PER_KEY = 300
REDIS_START_TIMEOUT = 10.0

WRK_SCRIPT = """\
-- Send one of {keys} client ids per request, in turn.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, {{["X-Client"] = "c" .. (counter % {keys})}})
end
"""


class RedisServer:
    """A redis-server on a free loopback port, without persistence."""

    def __init__(self, binary):
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self):
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {self.process.returncode}"
                )
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server not ready on port {self.port} after 10 s")

    def flush(self):
        """Delete every key, so each scenario starts with empty counters."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        client.flushall()
        client.close()

    def __exit__(self, *exc_info):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_app(variant, limit, workers, directory, redis_url):
    """Start bench.apps with `variant` and return its ServerProcess."""
    port = free_port()
    argv = python_argv(
        "-m",
        "bench.apps",
        "--variant",
        variant,
        "--limit",
        limit,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--table",
        os.path.join(directory, f"{variant}-{port}.table"),
    )
    if redis_url is not None:
        argv += ["--redis-url", redis_url]
    server = ServerProcess(argv, f"http://127.0.0.1:{port}", cwd=ROOT)
    server.start()
    return server


_WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_MAX = re.compile(r"^\s+Latency\s+\S+\s+\S+\s+([0-9.]+)(us|ms|s)", re.MULTILINE)
_WRK_TOTAL = re.compile(r"^\s+([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")
_WRK_ERRORS = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(output):
    """Return requests/s, latency in ms and error counts from wrk's output.

    Raises ValueError when the output lacks the totals, which happens when
    wrk could not connect at all.
    """
    total = _WRK_TOTAL.search(output)
    if total is None:
        raise ValueError(f"wrk output without a request count:\n{output}")
    requests = int(total[1])
    seconds = float(total[2]) * _UNIT_MS[total[3]] / 1000.0
    latency = {
        f"p{match[1]}": float(match[2]) * _UNIT_MS[match[3]]
        for match in _WRK_LATENCY.finditer(output)
    }
    largest = _WRK_MAX.search(output)
    if largest is not None:
        latency["max"] = float(largest[1]) * _UNIT_MS[largest[2]]
    non_2xx = _WRK_NON_2XX.search(output)
    errors = _WRK_ERRORS.search(output)
    return {
        "requests": requests,
        "seconds": seconds,
        "requests_per_second": requests / seconds,
        "latency_ms": latency,
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def run_wrk(url, duration, connections, threads, script):
    """Run wrk once and return parse_wrk's dict plus wrk's own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration:g}s",
            "--latency",
            "-s",
            script,
            url + "/",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(
            f"wrk failed with status {completed.returncode}: {completed.stderr}"
        )
    result = parse_wrk(completed.stdout)
    result["client_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    return result


def run_aiohttp(url, duration, connections, processes, keys):
    """Run the aiohttp load generator once, in the shape run_wrk returns."""
    spec = load.LoadSpec(
        url=url,
        key_spec="header:x-client",
        keys=[f"c{n}" for n in range(keys)],
        concurrency=connections,
        processes=processes,
        duration=duration,
    )
    records = load.run(spec, show_progress=False)
    elapsed = max(records.stopped - records.started, 1e-9)
    latency = report.latency_summary(records)
    return {
        "requests": len(records),
        "seconds": elapsed,
        "requests_per_second": len(records) / elapsed,
        "latency_ms": latency,
        "non_2xx": sum(1 for status in records.status if status and status != 200),
        "socket_errors": sum(1 for status in records.status if not status),
        "client_cpu_seconds": records.client_cpu,
    }


def probe(server, variant, workers):
    """Send PROBE_REQUESTS_PER_KEY requests per client id and check the 200s."""
    run_id = f"probe-{variant}-{os.getpid()}"
    spec = load.LoadSpec(
        url=server.url,
        key_spec="header:x-client",
        keys=load.client_ids(PROBE_KEYS, "header", run_id),
        concurrency=max(8, 4 * workers),
        processes=1,
        requests=PROBE_KEYS * PROBE_REQUESTS_PER_KEY,
        keep_alive=False,
    )
    records = load.run(spec, show_progress=False)
    check = report.exactness(
        records, spec.keys, PROBE_LIMIT.limit, PROBE_LIMIT.window
    ).to_dict()
    workers_seen = {records.workers[index] for index in records.worker if index >= 0}
    failed = sum(1 for status in records.status if status not in (200, 429))
    return {
        "variant": variant,
        "limit": str(PROBE_LIMIT),
        "keys": PROBE_KEYS,
        "requests": len(records),
        "failed": failed,
        "workers_seen": len(workers_seen),
        "allowed": check["allowed"],
        "observed": check["observed"],
        "windows": sum(key["windows"] for key in check["keys"]),
        "exact": check["exact"] and failed == 0,
    }


def summarize_runs(runs):
    """Return the medians of a variant's runs."""
    median = {
        "requests_per_second": statistics.median(
            run["requests_per_second"] for run in runs
        ),
        "client_cpu_seconds": statistics.median(
            run["client_cpu_seconds"] for run in runs
        ),
        "non_2xx": statistics.median(run["non_2xx"] for run in runs),
    }
    cpu = [run["server_cpu_seconds"] for run in runs if run.get("server_cpu_seconds")]
    if cpu:
        median["server_cpu_seconds"] = statistics.median(cpu)
        # CPU time per request is less disturbed than throughput by other
        # processes that take the same cores.
        median["server_cpu_us_per_request"] = statistics.median(
            run["server_cpu_seconds"] * 1e6 / run["requests"]
            for run in runs
            if run.get("server_cpu_seconds") and run["requests"]
        )
    for name in ("p50", "p75", "p90", "p99", "max"):
        values = [run["latency_ms"][name] for run in runs if name in run["latency_ms"]]
        if values:
            median.setdefault("latency_ms", {})[name] = statistics.median(values)
    return median


def measure_scenario(name, limit, variants, args, directory, redis):
    """Start every variant with `limit`, run alternated rounds, return results."""
    if redis is not None:
        redis.flush()
    script = os.path.join(directory, "keys.lua")
    with open(script, "w", encoding="utf-8") as stream:
        stream.write(WRK_SCRIPT.format(keys=args.keys))

    servers = {}
    try:
        for variant in variants:
            redis_url = redis.url if variant == "limits-redis" else None
            servers[variant] = start_app(
                variant, limit, args.workers, directory, redis_url
            )

        def once(server, duration):
            before = server.cpu_seconds()
            if args.client == "wrk":
                result = run_wrk(
                    server.url, duration, args.connections, args.threads, script
                )
            else:
                result = run_aiohttp(
                    server.url, duration, args.connections, args.processes, args.keys
                )
            after = server.cpu_seconds()
            if before is not None and after is not None:
                result["server_cpu_seconds"] = after - before
            return result

        for variant in variants:
            once(servers[variant], args.warmup)

        runs = {variant: [] for variant in variants}
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            order = variants[shift:] + variants[:shift]
            for variant in order:
                result = once(servers[variant], args.duration)
                runs[variant].append(result)
                _progress(
                    f"{name:<9} round {round_index + 1}/{args.rounds} "
                    f"{variant:<14} {result['requests_per_second']:>9,.0f} req/s"
                )
    finally:
        for server in servers.values():
            server.stop()

    results = {}
    for variant in variants:
        results[variant] = {
            "runs": runs[variant],
            "median": summarize_runs(runs[variant]),
        }
    # Each ratio compares a run with the run without a limiter of the same
    # round, and the median of those ratios is reported, so a slow spell of
    # the machine shifts both sides of a ratio.
    baseline = runs.get("none")
    for variant, result in results.items():
        if baseline is None:
            continue
        ratios = [
            run["requests_per_second"] / base["requests_per_second"]
            for run, base in zip(runs[variant], baseline)
        ]
        result["ratios"] = ratios
        result["ratio"] = statistics.median(ratios)
    return {"limit": limit, "variants": results}


def run_probes(variants, args, directory, redis):
    if redis is not None:
        redis.flush()
    probes = {}
    for variant in variants:
        redis_url = redis.url if variant == "limits-redis" else None
        server = start_app(
            variant, str(PROBE_LIMIT), args.workers, directory, redis_url
        )
        try:
            probes[variant] = probe(server, variant, args.workers)
        finally:
            server.stop()
        _progress(
            f"probe     {variant:<14} allowed {probes[variant]['allowed']}, "
            f"observed {probes[variant]['observed']}"
        )
    return probes


def _progress(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def format_text(result):
    """Return the comparison as lines of text."""
    lines = machine.format_text(result["machine"])
    settings = result["settings"]
    lines.append("")
    lines.append(
        f"client {settings['client']}, {settings['connections']} connections, "
        f"{settings['workers']} server workers, {settings['keys']} client ids, "
        f"{settings['rounds']} rounds of {settings['duration']:g} s, medians"
    )
    lines.append(
        "ratio: median over rounds of req/s against 'none' in the same round, "
        "range: lowest and highest of those ratios; us/request: server CPU "
        "time per request"
    )
    for name, scenario in result["scenarios"].items():
        lines.append("")
        lines.append(f"{name}: limit {scenario['limit']} per client id")
        lines.append(
            f"  {'variant':<14} {'req/s':>9} {'ratio':>6} {'range':>10} {'p50 ms':>7} "
            f"{'p90 ms':>7} {'p99 ms':>7} {'non-2xx':>9} {'client cpu':>10} "
            f"{'server cpu':>10} {'us/request':>10}"
        )
        for variant, data in scenario["variants"].items():
            median = data["median"]
            latency = median.get("latency_ms", {})
            ratios = data.get("ratios") or [float("nan")]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            lines.append(
                f"  {variant:<14} {median['requests_per_second']:>9,.0f} "
                f"{data.get('ratio', float('nan')):>6.2f} {spread:>10} "
                f"{latency.get('p50', float('nan')):>7.2f} "
                f"{latency.get('p90', float('nan')):>7.2f} "
                f"{latency.get('p99', float('nan')):>7.2f} "
                f"{median['non_2xx']:>9,.0f} "
                f"{median['client_cpu_seconds']:>9.1f}s "
                f"{median.get('server_cpu_seconds', float('nan')):>9.1f}s "
                f"{median.get('server_cpu_us_per_request', float('nan')):>10.1f}"
            )
    probes = result.get("probes")
    if probes:
        lines.append("")
        lines.append(
            f"exactness probe: {PROBE_KEYS} client ids x {PROBE_REQUESTS_PER_KEY} "
            f"requests, limit {PROBE_LIMIT}, {settings['workers']} workers"
        )
        lines.append(
            f"  {'variant':<14} {'workers seen':>12} {'allowed':>8} "
            f"{'observed':>9}  limit held"
        )
        for variant, data in probes.items():
            held = "yes" if data["exact"] else "no"
            lines.append(
                f"  {variant:<14} {data['workers_seen']:>12} {data['allowed']:>8} "
                f"{data['observed']:>9}  {held}"
            )
    return lines


def build_parser():
    have_wrk = shutil.which("wrk") is not None
    parser = argparse.ArgumentParser(
        prog="python -m bench compare",
        description="Compare the benchmark app without a limiter, with "
        "fastlimit and with limits (memory and Redis storage).",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated variants to run (default: %(default)s; "
        "limits-redis is skipped without redis-server)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated loads: allowed, rejected (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=load.cpu_count(),
        help="server workers of every variant (default: %(default)s)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "aiohttp"),
        default="wrk" if have_wrk else "aiohttp",
        help="load generator (default: %(default)s)",
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="open connections (default: 64)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default: 1, to leave the other cores to the server)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=load.cpu_count(),
        help="aiohttp client processes (default: %(default)s)",
    )
    parser.add_argument(
        "--keys", type=int, default=50, help="client ids (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds per run (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternated runs per variant (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of unmeasured load per server first (default: %(default)s)",
    )
    parser.add_argument(
        "--no-probe", action="store_true", help="skip the exactness probe"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"invalid variant {variant!r}: use {', '.join(VARIANTS)}")
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"invalid scenario {name!r}: use {', '.join(SCENARIOS)}")
    for name in ("workers", "connections", "threads", "processes", "keys", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"invalid --{name} {getattr(args, name)}: use 1 or more")
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk not found: install it or use --client aiohttp")

    redis_binary = shutil.which("redis-server")
    if "limits-redis" in variants and redis_binary is None:
        _progress("redis-server not found, so limits-redis is skipped")
        variants.remove("limits-redis")

    result = {
        "machine": machine.describe(),
        "settings": {
            "client": args.client,
            "connections": args.connections,
            "threads": args.threads if args.client == "wrk" else None,
            "processes": args.processes if args.client == "aiohttp" else None,
            "workers": args.workers,
            "keys": args.keys,
            "duration": args.duration,
            "rounds": args.rounds,
            "variants": variants,
            "command": "python -m bench compare " + " ".join(argv or sys.argv[2:]),
        },
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="fastlimit-compare-") as directory:
        redis = RedisServer(redis_binary) if "limits-redis" in variants else None
        if redis is not None:
            redis.__enter__()
        try:
            for name in scenarios:
                result["scenarios"][name] = measure_scenario(
                    name, SCENARIOS[name], variants, args, directory, redis
                )
            if not args.no_probe:
                result["probes"] = run_probes(variants, args, directory, redis)
        finally:
            if redis is not None:
                redis.__exit__()

    print("\n".join(format_text(result)))
    if args.json:
        report.write_json(result, args.json)
    return 0
