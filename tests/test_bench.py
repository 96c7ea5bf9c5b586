"""Tests of python -m bench: the exactness check, wrk parsing, and real runs.

The end-to-end tests start real servers on loopback and send real requests.
The paced run is the one test with a timing assertion: it requires 100
requests per second, far below what two workers serve.
"""

import json
import subprocess
import sys

import pytest

from bench import exact
from bench.compare import parse_wrk
from bench.load import client_ids, parse_key_spec
from bench.process import ROOT, ServerProcess, free_port

RUN_TIMEOUT = 120


@pytest.mark.parametrize(
    ("sent", "received", "allowed", "exact_expected"),
    [
        # Two allowed, then one rejected, all inside one window of a 2/s limit.
        ([10.1, 10.2, 10.3], [10.15, 10.25, 10.35], [1, 1, 0], True),
        # A third 200 in one window is one too many.
        ([10.1, 10.2, 10.3], [10.15, 10.25, 10.35], [1, 1, 1], False),
        # A 429 while the window still had room.
        ([10.1, 10.2], [10.15, 10.25], [1, 0], False),
        # The crossing 200 fits only in window 11, where it is the first.
        ([10.1, 10.2, 10.3, 10.99], [10.15, 10.25, 10.35, 11.01], [1, 1, 0, 1], True),
        # The crossing 429 fits only in window 10, which is full.
        ([10.1, 10.2, 10.99, 11.2], [10.15, 10.25, 11.01, 11.3], [1, 1, 0, 1], True),
        # A 200 sent after a 429 of the same window had arrived.
        ([10.1, 10.2, 10.4, 10.5], [10.15, 10.25, 10.45, 10.55], [1, 0, 1, 0], False),
    ],
)
def test_check_key_cases(sent, received, allowed, exact_expected):
    result = exact.check_key("k", sent, received, allowed, limit=2, window=1.0)
    assert result.exact is exact_expected


def test_check_key_counts_allowed():
    sent = [10.1, 10.2, 10.3, 10.99, 11.2]
    received = [10.15, 10.25, 10.35, 11.01, 11.3]
    result = exact.check_key("k", sent, received, [1, 1, 0, 1, 1], limit=2, window=1.0)
    assert result.allowed == 4
    assert result.observed == 4
    assert result.ambiguous == 1
    assert result.windows == 2


def test_check_key_unresolved_fails():
    # A response that took longer than the window cannot be placed.
    result = exact.check_key("k", [10.5], [12.5], [1], limit=2, window=1.0)
    assert result.unresolved == 1
    assert not result.exact


def test_check_key_slack_widens():
    # Inside one window unless the server's clock may differ by 0.1 s.
    result = exact.check_key("k", [10.95], [10.97], [1], limit=1, window=1.0, slack=0.1)
    assert result.ambiguous == 1
    assert result.exact


def test_check_sums_keys():
    columns = {
        "a": ([10.1, 10.2], [10.15, 10.25], [True, False]),
        "b": ([10.1, 10.2], [10.15, 10.25], [True, True]),
    }
    result = exact.check(columns, limit=1, window=1.0)
    assert result.allowed == 2
    assert result.observed == 3
    assert not result.exact


WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:18431/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.31ms    4.86ms  34.67ms   65.36%
    Req/Sec     8.98k     1.45k   13.17k    80.00%
  Latency Distribution
     50%    6.78ms
     75%   10.24ms
     90%   14.12ms
     99%  620.00us
  26921 requests in 3.02s, 6.40MB read
  Non-2xx or 3xx responses: 20921
Requests/sec:   8910.57
Transfer/sec:      2.12MB
"""


def test_parse_wrk_fields():
    result = parse_wrk(WRK_OUTPUT)
    assert result["requests"] == 26921
    assert result["requests_per_second"] == pytest.approx(26921 / 3.02)
    assert result["latency_ms"]["p50"] == pytest.approx(6.78)
    assert result["latency_ms"]["p99"] == pytest.approx(0.62)
    assert result["latency_ms"]["max"] == pytest.approx(34.67)
    assert result["non_2xx"] == 20921
    assert result["socket_errors"] == 0


def test_parse_wrk_without_totals():
    with pytest.raises(ValueError, match="without a request count"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ip", ("ip", "")),
        ("query:id", ("query", "id")),
        ("header:X-Id", ("header", "X-Id")),
    ],
)
def test_parse_key_spec_valid(spec, expected):
    assert parse_key_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "ip:x", "query:", "path", "cookie:a"])
def test_parse_key_spec_invalid(spec):
    with pytest.raises(ValueError, match="invalid key spec"):
        parse_key_spec(spec)


def test_client_ids_unique():
    ips = client_ids(300, "ip", "00ff01")
    assert len(set(ips)) == 300
    assert ips[0] == "10.1.0.0"
    assert ips[299] == "10.1.1.43"


def _run_bench(args, tmp_path):
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quiet", "--json", str(report), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    summary = json.loads(report.read_text()) if report.exists() else None
    return completed, summary


@pytest.mark.slow
def test_bench_paced_exact(tmp_path):
    # 3 client ids at 40 requests per second each against 20/second, so
    # every window has both 200s and 429s to check.
    completed, summary = _run_bench(
        [
            "--workers",
            "2",
            "--keys",
            "3",
            "--limit",
            "20/second",
            "--rate",
            "120",
            "--duration",
            "4",
            "--concurrency",
            "16",
            "--new-connections",
        ],
        tmp_path,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert summary["requests_per_second"] >= 100
    assert summary["failed"] == 0
    assert summary["statuses"].get("429", 0) > 0
    assert summary["exactness"]["exact"]
    assert summary["exactness"]["observed"] == summary["exactness"]["allowed"]
    assert summary["server"]["workers"] == 2
    busy = [
        pid
        for pid, seconds in summary["server"]["cpu_seconds_by_pid"].items()
        if seconds >= 0.02 and pid != str(summary["server"]["pid"])
    ]
    assert len(busy) >= 2, summary["server"]["cpu_seconds_by_pid"]


@pytest.mark.slow
def test_bench_detects_excess(tmp_path):
    # The app without a limiter allows every request, so the check fails.
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.apps",
        "--variant",
        "none",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with ServerProcess(argv, f"http://127.0.0.1:{port}", cwd=ROOT) as server:
        completed, summary = _run_bench(
            [
                "--url",
                server.url,
                "--key-spec",
                "header:x-client",
                "--keys",
                "2",
                "--limit",
                "5/minute",
                "--requests",
                "40",
                "--processes",
                "1",
            ],
            tmp_path,
        )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert summary["failed"] == 0
    assert summary["exactness"]["observed"] == 40
    assert summary["exactness"]["allowed"] <= 20
    assert not summary["exactness"]["exact"]
