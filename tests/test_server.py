"""End-to-end tests of python -m server, driven over loopback with aiohttp.

Each test starts the real server as a subprocess (see serverproc.py), most
with 2 workers, so counts must be exact across processes. Limits use day
or hour windows, and tests that count a full window first wait out the
last seconds before a window boundary.
"""

import asyncio
import math
import os
import re
import signal
import socket
import time

import aiohttp
import pytest
import yarl

from serverproc import (
    REPOSITORY,
    ServerProcess,
    ipv6_loopback_available,
    run_server,
)

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)


def avoid_window_boundary(window, margin=5.0):
    """Sleep past the next boundary of `window` if it is less than margin away."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.2)


class Response:
    """Status, headers and body of one response, or the error instead."""

    def __init__(self, status=None, headers=None, body=b"", error=None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.error = error


async def _fetch(session, method, url, headers):
    try:
        async with session.request(method, url, headers=headers) as response:
            body = await response.read()
            return Response(response.status, response.headers, body)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
        return Response(error=error)


async def _fetch_many(requests, concurrency, force_close):
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=force_close)
    async with aiohttp.ClientSession(
        connector=connector, timeout=REQUEST_TIMEOUT
    ) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(method, url, headers):
            async with semaphore:
                return await _fetch(session, method, url, headers)

        responses = await asyncio.gather(*(one(*request) for request in requests))
    # Let the closed transports release their sockets before asyncio.run
    # closes the loop; a leaked keep-alive socket delays server shutdown.
    await asyncio.sleep(0.01)
    return responses


def fetch_many(requests, concurrency=32, force_close=False):
    """Send (method, url, headers) requests concurrently; return Responses in order."""
    return asyncio.run(_fetch_many(requests, concurrency, force_close))


def fetch(server, path="/", method="GET", headers=None):
    """Send one request; path is sent as written, without re-encoding."""
    url = yarl.URL(server.url(path), encoded=True)
    return fetch_many([(method, url, headers)], concurrency=1, force_close=True)[0]


def raw_request(server, target, headers=b""):
    """Send a request line with arbitrary bytes over a plain socket.

    Returns (status, headers as a dict with lower-case names).
    """
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n" + headers
            + b"Connection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields


def statuses(responses):
    return [response.status for response in responses]


def parse_ratelimit(value):
    """Parse a RateLimit field of one item into (name, {param: int})."""
    match = re.fullmatch(r'"((?:[^"\\]|\\.)*)"((?:;[a-z]+=\d+)*)', value)
    assert match, value
    params = dict(
        (name, int(number))
        for name, number in re.findall(r";([a-z]+)=(\d+)", match.group(2))
    )
    return match.group(1), params


@pytest.fixture
def make_server():
    """Return a function that starts a ServerProcess; all stop at teardown."""
    servers = []

    def start(env=None, workers=2, **options):
        server = ServerProcess(env, workers=workers, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


# Exact counts


@pytest.mark.parametrize("mode", ["spawn", "fork", "single"])
def test_exact_count_across_workers(make_server, mode):
    limit = 60
    env = {"FASTLIMIT_LIMIT": f"{limit}/day", "FASTLIMIT_KEY": "header:x-client"}
    workers = 2
    if mode == "fork":
        env["FASTLIMIT_START_METHOD"] = "fork"
    elif mode == "single":
        env["FASTLIMIT_SINGLE_PROCESS"] = "1"
        workers = 1
    server = make_server(env, workers=workers)
    avoid_window_boundary(86400)

    requests = []
    for client in ("a", "b"):
        requests += [("GET", server.url("/"), {"X-Client": client})] * (3 * limit)
    responses = fetch_many(requests, concurrency=64, force_close=True)

    for client in ("a", "b"):
        mine = [r for r, q in zip(responses, requests) if q[2]["X-Client"] == client]
        assert [r.error for r in mine if r.error] == []
        assert statuses(mine).count(200) == limit
        assert statuses(mine).count(429) == 2 * limit


def test_rejections_carry_headers(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "20/day"})
    avoid_window_boundary(86400)
    responses = fetch_many([("GET", server.url("/"), None)] * 50)

    rejected = [r for r in responses if r.status == 429]
    assert len(rejected) == 30
    for response in rejected:
        assert response.headers["Content-Type"].startswith("application/json")
        assert b'"error":"too many requests"' in response.body
        assert b'"limit":"20/day"' in response.body
        assert response.headers["X-RateLimit-Limit"] == "20"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 86400
        assert response.headers["X-RateLimit-Reset"] == str(retry_after)
        assert response.headers["RateLimit-Policy"] == '"ip 20/day";q=20;w=86400'
        assert response.headers["RateLimit"] == f'"ip 20/day";r=0;t={retry_after}'


def test_two_servers_share_one_table(make_server, tmp_path):
    table = str(tmp_path / "shared.table")
    env = {"FASTLIMIT_LIMIT": "40/day", "FASTLIMIT_TABLE": table}
    first = make_server(env)
    second = make_server(env)
    avoid_window_boundary(86400)
    requests = [("GET", first.url("/"), None), ("GET", second.url("/"), None)] * 50
    responses = fetch_many(requests)
    assert statuses(responses).count(200) == 40


# Header values


def test_remaining_counts_down_to_zero(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "5/day"})
    avoid_window_boundary(86400)
    remaining = []
    for _ in range(8):
        response = fetch(server)
        remaining.append(response.headers["X-RateLimit-Remaining"])
        name, params = parse_ratelimit(response.headers["RateLimit"])
        assert name == "ip 5/day"
        assert str(params["r"]) == response.headers["X-RateLimit-Remaining"]
    assert remaining == ["4", "3", "2", "1", "0", "0", "0", "0"]


def test_reset_agrees_with_window(make_server):
    window = 20
    server = make_server({"FASTLIMIT_LIMIT": f"2/{window} seconds"})
    avoid_window_boundary(window, margin=3)
    for expected_status in (200, 200, 429):
        before = time.time()
        response = fetch(server)
        after = time.time()
        assert response.status == expected_status

        reset = int(response.headers["X-RateLimit-Reset"])
        earliest = math.ceil(window - after % window) - 1
        latest = math.ceil(window - before % window)
        assert earliest <= reset <= latest
        _, params = parse_ratelimit(response.headers["RateLimit"])
        assert params["t"] == reset
        assert response.headers["RateLimit-Policy"] == (
            f'"ip 2/{window} seconds";q=2;w={window}'
        )
    assert response.headers["Retry-After"] == str(reset)


def test_header_sets_switched_off(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_HEADERS": "none"})
    first = fetch(server)
    second = fetch(server)
    assert first.status == 200
    assert second.status == 429
    for name in ("RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "Retry-After"):
        assert name not in first.headers
        assert name not in second.headers


def test_only_x_ratelimit_headers(make_server):
    server = make_server(
        {"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_HEADERS": "x-ratelimit"}
    )
    fetch(server)
    rejected = fetch(server)
    assert rejected.status == 429
    assert rejected.headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit" not in rejected.headers
    assert "Retry-After" not in rejected.headers


# Methods, allowlist, exempt routes


def test_options_not_counted_head_counted(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "3/day"})
    for _ in range(5):
        assert fetch(server, method="OPTIONS").status != 429
    assert fetch(server, method="HEAD").status == 200
    assert fetch(server, method="HEAD").status == 200
    assert fetch(server).status == 200
    assert fetch(server).status == 429
    assert fetch(server, method="HEAD").status == 429


def test_allowlisted_peer_never_limited(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_ALLOW": "127.0.0.0/8"})
    responses = fetch_many([("GET", server.url("/"), None)] * 20)
    assert statuses(responses) == [200] * 20
    assert "X-RateLimit-Remaining" not in responses[0].headers


def test_allowlist_uses_trusted_forwarded(make_server):
    server = make_server(
        {
            "FASTLIMIT_LIMIT": "1/day",
            "FASTLIMIT_ALLOW": "203.0.113.0/24, 2001:db8::/32",
            "SANIC_PROXIES_COUNT": "1",
        }
    )
    for client in ("203.0.113.9", "::ffff:203.0.113.10", "2001:db8::5"):
        for _ in range(3):
            response = fetch(server, headers={"X-Forwarded-For": client})
            assert response.status == 200, client
    assert fetch(server, headers={"X-Forwarded-For": "198.51.100.1"}).status == 200
    assert fetch(server, headers={"X-Forwarded-For": "198.51.100.1"}).status == 429


def test_healthz_exempt(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day"})
    assert fetch(server).status == 200
    for _ in range(5):
        response = fetch(server, "/healthz")
        assert response.status == 200
        assert "X-RateLimit-Remaining" not in response.headers
    assert fetch(server).status == 429


def test_unrouted_paths_limited(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day"})
    assert fetch(server, "/missing").status == 404
    assert fetch(server, "/other").status == 404
    assert fetch(server, "/missing").status == 429


# Key specs


def test_ip_ignores_untrusted_forwarded(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day"})
    for client, expected in (("203.0.113.1", 200), ("203.0.113.2", 200), ("203.0.113.3", 429)):
        response = fetch(server, headers={"X-Forwarded-For": client})
        assert response.status == expected, client


def test_ip_trusts_forwarded_with_proxies_count(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "SANIC_PROXIES_COUNT": "1"})
    for client in ("203.0.113.1", "203.0.113.2"):
        assert fetch(server, headers={"X-Forwarded-For": client}).status == 200
    # Only the last entry is trusted with one proxy.
    spoofed = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
    assert fetch(server, headers=spoofed).status == 429


def test_ip_trusts_real_ip_header(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "SANIC_REAL_IP_HEADER": "X-Real-IP"})
    assert fetch(server, headers={"X-Real-IP": "203.0.113.1"}).status == 200
    assert fetch(server, headers={"X-Real-IP": "203.0.113.2"}).status == 200
    assert fetch(server, headers={"X-Real-IP": "203.0.113.1"}).status == 429


def test_ip_trusts_forwarded_with_secret(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "SANIC_FORWARDED_SECRET": "s3cret"})
    trusted = {"Forwarded": "for=203.0.113.1;secret=s3cret"}
    untrusted = {"Forwarded": "for=203.0.113.2;secret=wrong"}
    assert fetch(server, headers=trusted).status == 200
    assert fetch(server, headers=trusted).status == 429
    assert fetch(server, headers=untrusted).status == 200
    assert fetch(server, headers=untrusted).status == 429


def test_ip_mapped_addresses_one_client(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "3/day", "SANIC_PROXIES_COUNT": "1"})
    spellings = ["203.0.113.5", "::ffff:203.0.113.5", "::ffff:cb00:7105", "[::ffff:203.0.113.5]:443"]
    results = [
        fetch(server, headers={"X-Forwarded-For": spelling}).status
        for spelling in spellings
    ]
    assert results == [200, 200, 200, 429]


def test_ip_groups_ipv6_by_prefix(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "SANIC_PROXIES_COUNT": "1"})
    same_network = ["2001:db8:0:1::1", "2001:db8:0:1:ffff::2", "2001:db8:0:1::3"]
    results = [
        fetch(server, headers={"X-Forwarded-For": client}).status
        for client in same_network
    ]
    assert results == [200, 200, 429]
    other = {"X-Forwarded-For": "2001:db8:0:2::1"}
    assert fetch(server, headers=other).status == 200


def test_ip_prefix_configurable(make_server):
    server = make_server(
        {
            "FASTLIMIT_LIMIT": "1/day",
            "SANIC_PROXIES_COUNT": "1",
            "FASTLIMIT_IPV6_PREFIX": "128",
        }
    )
    for client in ("2001:db8::1", "2001:db8::2"):
        assert fetch(server, headers={"X-Forwarded-For": client}).status == 200


def test_ip_forwarded_garbage_shares_bucket(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "SANIC_PROXIES_COUNT": "1"})
    results = [
        fetch(server, headers={"X-Forwarded-For": value}).status
        for value in ("not-an-ip", "_hidden", "999.1.1.1")
    ]
    assert results == [200, 200, 429]


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ip_over_ipv6_loopback(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day"}, host="::1")
    results = [fetch(server).status for _ in range(3)]
    assert results == [200, 200, 429]


def test_query_key_normalisation(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "FASTLIMIT_KEY": "query:q"})
    cases = [
        ("/?q=abc", 200),
        ("/?q=%61bc", 200),
        ("/?q=abc&x=1", 429),
        ("/?x=1&q=abc&q=zzz", 429),
        ("/?q=&q=abc", 429),
        ("/?q=zzz&q=abc", 200),
        ("/?q=a+b", 200),
        ("/?q=a%20b", 200),
        ("/?q=a%20b", 429),
        ("/?q=a%2Bb", 200),
    ]
    for path, expected in cases:
        assert fetch(server, path).status == expected, path


def test_query_key_missing_bucket(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "FASTLIMIT_KEY": "query:q"})
    assert fetch(server, "/").status == 200
    assert fetch(server, "/?q=").status == 200
    assert fetch(server, "/?other=1").status == 429
    assert fetch(server, "/?q").status == 429
    assert fetch(server, "/?q=-").status == 200


def test_query_key_long_value(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_KEY": "query:q"})
    long_value = "x" * 8000
    assert fetch(server, f"/?q={long_value}").status == 200
    assert fetch(server, f"/?q={long_value}y").status == 200
    assert fetch(server, f"/?q={long_value}").status == 429


def test_query_key_non_utf8_bytes(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "FASTLIMIT_KEY": "query:q"})
    status, fields = raw_request(server, b"/?q=%ff%fe")
    assert status == 200
    assert fields["x-ratelimit-remaining"] == "1"
    status, fields = raw_request(server, b"/?q=%FF%FE&x=%80")
    assert status == 200
    assert fields["x-ratelimit-remaining"] == "0"
    status, fields = raw_request(server, b"/?q=%ff%fe")
    assert status == 429
    assert fields["retry-after"]


def test_raw_non_ascii_target_rejected_as_400(make_server):
    # Sanic's HTTP parser (httptools) rejects raw bytes above 0x7F in the
    # request target before any middleware runs.
    server = make_server({"FASTLIMIT_LIMIT": "2/day", "FASTLIMIT_KEY": "query:q"})
    status, _ = raw_request(server, b"/?q=\xff\xfe")
    assert status == 400
    assert fetch(server, "/?q=%ff%fe").status == 200


def test_header_key(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_KEY": "header:X-Api-Key"})
    assert fetch(server, headers={"x-api-key": "one"}).status == 200
    assert fetch(server, headers={"X-API-KEY": "one"}).status == 429
    assert fetch(server, headers={"X-Api-Key": "two"}).status == 200
    assert fetch(server).status == 200
    assert fetch(server, headers={"X-Api-Key": ""}).status == 429
    status, _ = raw_request(server, b"/", headers=b"X-Api-Key: \xff\r\n")
    assert status == 200


def test_path_key(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_KEY": "path"})
    assert fetch(server, "/").status == 200
    assert fetch(server, "/?x=1").status == 429
    assert fetch(server, "/healthz").status == 200
    assert fetch(server, "/nothing").status == 404
    assert fetch(server, "/nothin%67").status == 429


def test_composite_key(make_server):
    server = make_server(
        {"FASTLIMIT_LIMIT": "1/day", "FASTLIMIT_KEY": "ip+query:q", "SANIC_PROXIES_COUNT": "1"}
    )
    one = {"X-Forwarded-For": "203.0.113.1"}
    two = {"X-Forwarded-For": "203.0.113.2"}
    assert fetch(server, "/?q=a", headers=one).status == 200
    assert fetch(server, "/?q=a", headers=two).status == 200
    assert fetch(server, "/?q=b", headers=one).status == 200
    assert fetch(server, "/?q=a", headers=one).status == 429


def test_several_rules_most_restrictive(make_server):
    server = make_server({"FASTLIMIT_RULES": "ip=100/day & query:q=2/day"})
    avoid_window_boundary(86400)
    first = fetch(server, "/?q=a")
    assert first.status == 200
    assert first.headers["RateLimit-Policy"] == (
        '"ip 100/day";q=100;w=86400, "query:q 2/day";q=2;w=86400'
    )
    name, params = parse_ratelimit(first.headers["RateLimit"])
    assert name == "query:q 2/day"
    assert params["r"] == 1
    assert first.headers["X-RateLimit-Limit"] == "2"

    assert fetch(server, "/?q=a").status == 200
    rejected = fetch(server, "/?q=a")
    assert rejected.status == 429
    assert rejected.headers["X-RateLimit-Limit"] == "2"
    other = fetch(server, "/?q=b")
    assert other.status == 200
    assert other.headers["X-RateLimit-Remaining"] == "1"


def test_several_limits_in_one_rule(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "3/day; 100/hour"})
    avoid_window_boundary(3600)
    response = fetch(server)
    assert response.headers["RateLimit-Policy"] == (
        '"ip 3/day";q=3;w=86400, "ip 100/hour";q=100;w=3600'
    )
    assert response.headers["X-RateLimit-Remaining"] == "2"
    assert [fetch(server).status for _ in range(3)] == [200, 200, 429]


# Worker failure


def test_killed_worker_restarted_limits_exact(make_server):
    limit = 150
    server = make_server({"FASTLIMIT_LIMIT": f"{limit}/day", "FASTLIMIT_KEY": "header:x-client"})
    avoid_window_boundary(86400, margin=30)
    victim = server.live_worker_pids()[0]

    async def load():
        connector = aiohttp.TCPConnector(limit=16, force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, timeout=REQUEST_TIMEOUT
        ) as session:
            done = []
            semaphore = asyncio.Semaphore(16)

            async def one():
                async with semaphore:
                    response = await _fetch(session, "GET", server.url("/"), {"X-Client": "a"})
                    done.append(response)
                    if len(done) == 60:
                        os.kill(victim, signal.SIGKILL)
                    return response

            responses = await asyncio.gather(*(one() for _ in range(3 * limit)))
        await asyncio.sleep(0.01)
        return responses

    responses = asyncio.run(load())
    ok = statuses(responses).count(200)
    failed = sum(1 for response in responses if response.error is not None)
    # A request in flight on the killed worker may have been counted
    # without its response arriving. aiohttp (3.14) resends a GET once when
    # the server disconnects, so such a request need not show as failed:
    # at most the 16 requests in flight are missing.
    assert ok <= limit
    assert ok >= limit - 16
    assert failed <= 16

    server.wait_ready(timeout=20, workers=3)
    live = server.live_worker_pids()
    assert len(live) == 2
    assert victim not in live
    assert "restarting it" in server.output()

    # The restarted worker shares the table: another key is still exact.
    requests = [("GET", server.url("/"), {"X-Client": "b"})] * (2 * limit)
    after = fetch_many(requests, concurrency=32, force_close=True)
    assert statuses(after).count(200) == limit
    assert statuses(after).count(429) == limit


def _alive(pid):
    """Return whether pid runs: a zombie, exited but not yet reaped, does not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            state = file.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid):
    children = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/children", encoding="ascii") as file:
            children.update(int(child) for child in file.read().split())
    return children


def test_killed_main_process_stops_workers(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "10/day"})
    workers = server.live_worker_pids()
    # The workers, Sanic's state manager and the resource tracker.
    children = _children(server.pid)
    assert len(workers) == 2
    assert set(workers) <= children
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = [pid for pid in children if _alive(pid)]
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert leftover == []
    assert "main process" in server.output()


def test_server_exits_when_workers_keep_dying(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "10/day"}, workers=1)
    killed = set()
    deadline = time.monotonic() + 60
    while server.process.poll() is None and time.monotonic() < deadline:
        for pid in set(server.worker_pids()) - killed:
            time.sleep(0.5)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.2)
    assert server.process.wait(timeout=30) == 1
    assert "no server worker left; stopping the server" in server.output()
    assert len(killed) == 6


# Startup, shutdown and configuration


def test_startup_and_shutdown_lines(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "7/minute"})
    status = server.stop()
    output = server.output()
    assert status == 0
    assert "rules ip=7/minute" in output
    assert "2 workers" in output
    assert f"table {server.table} (" in output
    assert "compiled extension in use" in output
    assert "stopped on http://127.0.0.1:" in output
    assert "Traceback" not in output


def test_access_log_off_by_default(make_server):
    quiet = make_server({"FASTLIMIT_LIMIT": "10/day"})
    loud = make_server({"FASTLIMIT_LIMIT": "10/day", "FASTLIMIT_ACCESS_LOG": "1"})
    fetch(quiet, "/?marker=quiet")
    fetch(loud, "/?marker=loud")
    time.sleep(0.5)
    assert "marker=quiet" not in quiet.output()
    assert "marker=loud" in loud.output()


def test_dotenv_read_environment_wins(make_server, tmp_path):
    (tmp_path / ".env").write_text(
        "# test settings\nFASTLIMIT_LIMIT=1/day\nexport FASTLIMIT_KEY='header:x-client'\n"
    )
    from_file = make_server(cwd=str(tmp_path))
    assert fetch(from_file, headers={"X-Client": "a"}).status == 200
    assert fetch(from_file, headers={"X-Client": "a"}).status == 429
    assert fetch(from_file, headers={"X-Client": "b"}).status == 200

    overridden = make_server({"FASTLIMIT_LIMIT": "2/day"}, cwd=str(tmp_path))
    results = [fetch(overridden, headers={"X-Client": "a"}).status for _ in range(3)]
    assert results == [200, 200, 429]


def _not_a_table(tmp_path):
    path = tmp_path / "garbage.table"
    path.write_bytes(b"not a table" * 100)
    return str(path)


BAD_CONFIGURATIONS = [
    ({"FASTLIMIT_LIMIT": "10/horu"}, [], "'10/horu'"),
    ({"FASTLIMIT_LIMIT": ""}, [], "FASTLIMIT_LIMIT"),
    ({"FASTLIMIT_KEY": "cookie:session"}, [], "'cookie:session'"),
    ({"FASTLIMIT_RULES": "ip"}, [], "'ip'"),
    ({"FASTLIMIT_RULES": "ip=10/second & query=5/minute"}, [], "'query'"),
    ({"FASTLIMIT_TABLE": "/nonexistent-directory/x.table"}, [], "/nonexistent-directory/x.table"),
    ({"FASTLIMIT_TABLE": "/"}, [], "'/'"),
    ({"FASTLIMIT_SLOTS": "-5"}, [], "'-5'"),
    ({"FASTLIMIT_SLOTS": "lots"}, [], "'lots'"),
    ({"FASTLIMIT_HEADERS": "draft"}, [], "'draft'"),
    ({"FASTLIMIT_IPV6_PREFIX": "129"}, [], "'129'"),
    ({"FASTLIMIT_ALLOW": "10.0.0.0/33"}, [], "'10.0.0.0/33'"),
    ({"FASTLIMIT_START_METHOD": "thread"}, [], "'thread'"),
    ({"FASTLIMIT_START_METHOD": "forkserver"}, [], "'forkserver'"),
    ({"FASTLIMIT_ACCESS_LOG": "maybe"}, [], "'maybe'"),
    ({"SANIC_PROXIES_COUNT": "-1"}, [], "'-1'"),
    ({"SANIC_PROXIES_COUNT": "two"}, [], "'two'"),
    ({"SANIC_REAL_IP_HEADER": "bad header"}, [], "'bad header'"),
    ({}, ["--port", "http"], "'http'"),
    ({}, ["--port", "70000"], "'70000'"),
    ({"FASTLIMIT_PORT": "0"}, [], "'0'"),
    ({}, ["--workers", "0"], "'0'"),
    ({"FASTLIMIT_WORKERS": "many"}, [], "'many'"),
    # An address of TEST-NET-1 (RFC 5737), which no interface here has:
    # bind() fails without any packet being sent or any DNS lookup.
    ({}, ["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:"),
    ({}, ["--colour"], "--colour"),
]


@pytest.mark.parametrize(("env", "args", "named"), BAD_CONFIGURATIONS)
def test_bad_configuration_exits_2(env, args, named):
    result = run_server(env, args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert lines[0].startswith("python -m server: error: ")
    assert "Traceback" not in result.stderr


def test_table_not_a_table_exits_2(tmp_path):
    path = _not_a_table(tmp_path)
    result = run_server({"FASTLIMIT_TABLE": path})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert path in result.stderr


def test_port_in_use_exits_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_server({}, ["--port", str(port)])
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_dotenv_exits_2(tmp_path):
    (tmp_path / ".env").write_text("FASTLIMIT_LIMIT=10/day\nthis is not a setting\n")
    result = run_server({}, cwd=str(tmp_path))
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_lists_options():
    result = run_server({}, ["--help"])
    assert result.returncode == 0
    for option in ("--host", "--port", "--workers", "FASTLIMIT_HOST", "default 8000"):
        assert option in result.stdout


def test_runs_from_repository_root(make_server):
    server = make_server({"FASTLIMIT_LIMIT": "1/day"}, workers=1, cwd=REPOSITORY)
    assert fetch(server).status == 200
