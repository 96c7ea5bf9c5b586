"""Measure what the limiter and its header fields cost the real server.

    python -m bench.server_cost [--rounds 5] [--duration 5] [--workers 2]

Starts `python -m server` three ways, in a random order each round: with
the limiter off (FASTLIMIT_ENABLED=0), with one `ip` rule and no header
fields (FASTLIMIT_HEADERS=none), and with one `ip` rule and every header
set (the default). Each run gets 1 s of unmeasured load, then `wrk -t1
-c64` for --duration seconds at a limit of 1000000/hour, so every request
is counted and allowed. Prints the median requests per second and the
median server CPU time per request (main process and workers) per variant.
Needs wrk.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .process import free_port

VARIANTS = {
    "no limiter": {"FASTLIMIT_ENABLED": "0"},
    "ip rule, no header fields": {"FASTLIMIT_HEADERS": "none"},
    "ip rule, all header sets": {},
}
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_cpu_seconds(pid):
    """Return the user and system CPU seconds of pid and its children."""
    pids = [pid]
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children") as file:
                pids += [int(child) for child in file.read().split()]
    except OSError:
        pass
    total = 0.0
    for member in pids:
        try:
            with open(f"/proc/{member}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_ready(log_path, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        with open(log_path) as log:
            if "ready:" in log.read():
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def wrk(url, seconds):
    output = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return requests, rate


def measure(variant, duration, workers, directory):
    port = free_port()
    environment = dict(
        os.environ,
        FASTLIMIT_LIMIT="1000000/hour",
        FASTLIMIT_TABLE=os.path.join(directory, f"{port}.table"),
        **VARIANTS[variant],
    )
    log_path = os.path.join(directory, f"{port}.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPOSITORY,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(log_path, server)
        url = f"http://127.0.0.1:{port}/"
        wrk(url, 1)
        before = tree_cpu_seconds(server.pid)
        requests, rate = wrk(url, duration)
        cpu = tree_cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return rate, cpu / requests * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.server_cost")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds of load per run (default 5)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="server workers (default 2)"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("python -m bench.server_cost: wrk is not installed", file=sys.stderr)
        return 2

    results = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as directory:
        for number in range(1, args.rounds + 1):
            order = list(VARIANTS)
            random.shuffle(order)
            for variant in order:
                rate, cpu = measure(variant, args.duration, args.workers, directory)
                results[variant].append((rate, cpu))
                print(
                    f"round {number}: {variant}: {rate:,.0f} req/s, "
                    f"{cpu:.1f} us CPU per request",
                    file=sys.stderr,
                )

    print(f"{'variant':<28} {'req/s':>9} {'CPU us/request':>15}  (medians)")
    for variant, samples in results.items():
        rate = statistics.median(sample[0] for sample in samples)
        cpu = statistics.median(sample[1] for sample in samples)
        print(f"{variant:<28} {rate:>9,.0f} {cpu:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
