"""Microbenchmarks of one check, run by `pytest --benchmark-only`.

Each benchmark times single calls from Python, the way a request handler
makes them.  The peers (`limits` with memory storage, and with Redis on
loopback when redis-server is installed) run in the same session, so
their ratios compare like with like.  The test_ratio_* tests record the
ratios in the benchmark's extra_info and print them.
"""

import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import time
import timeit

import pytest

import fastlimit

pytest.importorskip("pytest_benchmark")

KEY = "203.0.113.7"


@pytest.fixture
def table_path(tmp_path):
    return str(tmp_path / "bench.table")


def _allowed_limiter(path, limits="16000000/day"):
    return fastlimit.Limiter(limits, path=path)


def _run(benchmark, function, *args, iterations=20000, rounds=30):
    """Benchmark single calls, batched so that the timer's own cost and
    resolution vanish: pytest-benchmark divides each round by iterations."""
    return benchmark.pedantic(
        function, args=args, iterations=iterations, rounds=rounds, warmup_rounds=2
    )


def _alternate(fast, peer_call, peer_name, peer_number):
    """Time fast.hit(KEY) and peer_call alternately, five times each.

    Returns the medians in ns per call and their ratio, peer to fastlimit.
    """
    fast_ns = []
    peer_ns = []
    for _ in range(5):
        fast_ns.append(_median_ns(lambda: fast.hit(KEY), repeat=3))
        peer_ns.append(_median_ns(peer_call, number=peer_number, repeat=3))
    info = {
        "fastlimit_ns": statistics.median(fast_ns),
        f"{peer_name}_ns": statistics.median(peer_ns),
    }
    info[f"{peer_name}_ratio"] = info[f"{peer_name}_ns"] / info["fastlimit_ns"]
    return info


def _median_ns(call, number=20000, repeat=7):
    times = timeit.repeat(call, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e9


def test_hit_allowed(benchmark, table_path):
    limiter = _allowed_limiter(table_path)
    decision = _run(benchmark, limiter.hit, KEY)
    assert decision.allowed


def test_hit_rejected(benchmark, table_path):
    limiter = fastlimit.Limiter("1/day", path=table_path)
    limiter.hit(KEY)
    decision = _run(benchmark, limiter.hit, KEY)
    assert not decision.allowed


def test_hit_bytes_key(benchmark, table_path):
    limiter = _allowed_limiter(table_path)
    decision = _run(benchmark, limiter.hit, KEY.encode())
    assert decision.allowed


def test_peek(benchmark, table_path):
    limiter = _allowed_limiter(table_path)
    decision = _run(benchmark, limiter.peek, KEY)
    assert decision.allowed


def test_hit_two_policies(benchmark, table_path):
    limiter = _allowed_limiter(table_path, "8000000/hour; 16000000/day")
    decision = _run(benchmark, limiter.hit, KEY)
    assert decision.allowed


@pytest.mark.parametrize("live_keys", [1_000, 1_000_000])
def test_hit_among_live_keys(benchmark, table_path, live_keys):
    """Hit keys in turn among many live ones: the cost of cache misses.

    The table has ten counters per live key, because at the default size
    (about three per key here) a few percent of a million keys would find
    their line full.  The full-line rate is recorded in extra_info.
    """
    limiter = fastlimit.Limiter(
        "16000000/day", path=table_path, slots=max(3 << 20, 10 * live_keys)
    )
    keys = [f"client-{number}" for number in range(live_keys)]
    for key in keys:
        limiter.hit(key)
    position = iter(range(10**9))
    count = len(keys)
    hit = limiter.hit

    def hit_next_key():
        return hit(keys[next(position) % count])

    decision = _run(benchmark, hit_next_key, iterations=min(live_keys, 20000))
    stats = limiter.stats()
    benchmark.extra_info["full_line_rate"] = stats["full_events"] / stats["probes"]
    assert decision.allowed


def _hammer(path, key, stop_at):
    limiter = fastlimit.Limiter("16000000/day", path=path)
    while time.monotonic() < stop_at:
        for _ in range(1000):
            limiter.hit(key)


@contextlib.contextmanager
def _second_process(limiter, seconds=60):
    """Run _hammer on KEY in a spawned process until the block ends.

    Enters only once the other process is counting on the shared key.
    """
    context = multiprocessing.get_context("spawn")
    other = context.Process(
        target=_hammer, args=(limiter.path, KEY, time.monotonic() + seconds)
    )
    other.start()
    try:
        before = limiter.peek(KEY).remaining
        deadline = time.monotonic() + 30
        while limiter.peek(KEY).remaining == before:
            assert time.monotonic() < deadline, "the second process never started"
            time.sleep(0.01)
        yield
    finally:
        other.kill()
        other.join()


def _record(benchmark, info, digits=1):
    """Store figures in the benchmark's extra_info and print them."""
    benchmark.extra_info.update(info)
    print()
    for name, value in info.items():
        print(f"{name}: {value:.{digits}f}")


def test_hit_two_processes_one_key(benchmark, table_path):
    """Time hits on a key that a second process hits in a tight loop."""
    limiter = _allowed_limiter(table_path)
    limiter.hit(KEY)
    with _second_process(limiter):
        decision = _run(benchmark, limiter.hit, KEY)
    assert decision.allowed


def test_limits_memory_peer(benchmark):
    limits = pytest.importorskip("limits")
    storage = limits.storage.MemoryStorage()
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.parse("16000000/day")
    assert _run(benchmark, limiter.hit, item, KEY, iterations=2000)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start within 10 seconds")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_limits_redis_peer(benchmark, redis_url):
    limits = pytest.importorskip("limits")
    storage = limits.storage.RedisStorage(redis_url)
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.parse("16000000/day")
    assert benchmark.pedantic(
        limiter.hit, args=(item, KEY), rounds=2000, iterations=1
    )


def test_ratio_to_limits(benchmark, table_path):
    """Time fastlimit and `limits` with memory storage alternately; record
    the ratio."""
    limits = pytest.importorskip("limits")
    fast = _allowed_limiter(table_path)
    memory = limits.strategies.FixedWindowRateLimiter(limits.storage.MemoryStorage())
    item = limits.parse("16000000/day")
    info = _alternate(fast, lambda: memory.hit(item, KEY), "limits_memory", 5000)
    _record(benchmark, info)
    decision = _run(benchmark, fast.hit, KEY)
    assert decision.allowed


@pytest.fixture
def redis_limiter(redis_url):
    limits = pytest.importorskip("limits")
    storage = limits.storage.RedisStorage(redis_url)
    return limits.strategies.FixedWindowRateLimiter(storage), limits.parse(
        "16000000/day"
    )


def test_ratio_to_limits_redis(benchmark, table_path, redis_limiter):
    """Time fastlimit and `limits` with Redis alternately; record the ratio."""
    fast = _allowed_limiter(table_path)
    limiter, item = redis_limiter
    info = _alternate(fast, lambda: limiter.hit(item, KEY), "limits_redis", 300)
    _record(benchmark, info)
    decision = _run(benchmark, fast.hit, KEY)
    assert decision.allowed


def test_two_process_ratio(benchmark, table_path):
    """Record the per-hit cost with a second process on the same key,
    as a ratio to the cost alone, measured alternately in one run."""
    limiter = _allowed_limiter(table_path)
    limiter.hit(KEY)
    alone = []
    shared = []
    for _ in range(3):
        alone.append(_median_ns(lambda: limiter.hit(KEY), repeat=3))
        with _second_process(limiter, seconds=30):
            shared.append(_median_ns(lambda: limiter.hit(KEY), repeat=3))
    info = {
        "alone_ns": statistics.median(alone),
        "two_processes_ns": statistics.median(shared),
    }
    info["ratio"] = info["two_processes_ns"] / info["alone_ns"]
    _record(benchmark, info, digits=2)
    decision = _run(benchmark, limiter.hit, KEY)
    assert decision.allowed
    assert os.path.getsize(table_path) == limiter.table.file_size
