"""Tests of exact counting when several processes share one table.

Workers start together behind a barrier and hammer a few keys, and the
parent adds up what each worker was allowed.  With now= and a barrier per window,
all workers agree on the window, so the totals are exact whatever the
scheduling: per key and window, allowed == min(limit, attempts).
"""

import collections
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from fastlimit import Limiter

BASE = 86400 * 19675.0
JOIN_SECONDS = 60


def run_workers(context, target, args_list):
    """Start one process per argument tuple and return what each reported."""
    results = context.Queue()
    workers = [
        context.Process(target=target, args=(*args, results)) for args in args_list
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=JOIN_SECONDS) for _ in workers]
    for worker in workers:
        worker.join(timeout=JOIN_SECONDS)
    exit_codes = [worker.exitcode for worker in workers]
    assert exit_codes == [0] * len(workers)
    return reports


def add_counts(reports):
    totals = collections.Counter()
    for report in reports:
        totals.update(report)
    return totals


def _hammer(limiter_or_path, limits, keys, attempts, cost, barrier, results):
    # A str is a path to open (spawn), and anything else is a limiter
    # inherited through fork.
    if isinstance(limiter_or_path, str):
        limiter = Limiter(limits, path=limiter_or_path)
    else:
        limiter = limiter_or_path
    allowed = collections.Counter()
    order = list(keys) * attempts
    random.Random(os.getpid()).shuffle(order)
    barrier.wait(timeout=JOIN_SECONDS)
    for key in order:
        if limiter.hit(key, cost=cost, now=BASE + 0.5).allowed:
            allowed[key] += cost
    results.put(dict(allowed))


@pytest.mark.parametrize(
    ("method", "rounds"), [("fork", 5), ("spawn", 1)]
)
@pytest.mark.parametrize(
    ("limits", "attempts", "cost", "expected"),
    [
        ("300/minute", 200, 1, 300),
        ("5000/minute", 200, 1, 800),
        ("300/minute", 50, 3, 300),
        ("400/minute; 60/second", 200, 1, 60),
        ("60/second; 400/minute", 200, 1, 60),
    ],
    ids=["limit", "no-limit", "cost", "refund", "refund-reversed"],
)
def test_totals_exact(tmp_path, method, rounds, limits, attempts, cost, expected):
    context = multiprocessing.get_context(method)
    processes = 4
    keys = ["a", "b", b"c"]
    for round_index in range(rounds):
        path = str(tmp_path / f"table{round_index}")
        limiter = Limiter(limits, path=path, slots=3000)
        owner = path if method == "spawn" else limiter
        barrier = context.Barrier(processes)
        args = [(owner, limits, keys, attempts, cost, barrier)] * processes
        totals = add_counts(run_workers(context, _hammer, args))
        assert totals == {"a": expected, "b": expected, b"c": expected}


def test_stats_counts_exact(tmp_path):
    context = multiprocessing.get_context("fork")
    limiter = Limiter("100/minute", path=str(tmp_path / "table"), slots=3000)
    barrier = context.Barrier(4)
    run_workers(context, _hammer, [(limiter, None, ["a"], 50, 1, barrier)] * 4)
    stats = limiter.stats()
    assert stats["allowed"] == 100
    assert stats["rejected"] == 100
    assert stats["probes"] == 200
    assert stats["inserts"] == 1


def pick_keys(path, limits, windows, per_window, window_seconds):
    """Choose per-window key sets that fit the table without a full line.

    The keys are tried one by one on a copy of the table, which has the
    same seed and size and so maps each key to the same line.  A key that
    finds its line full, or shares a counter with a key already chosen,
    is dropped, so no line gets more than three keys of one window.
    """
    scratch = path + ".scratch"
    shutil.copyfile(path, scratch)
    os.chmod(scratch, 0o600)
    limiter = Limiter(limits, path=scratch, on_full="reject")
    fresh = limiter.policies[0].limit - 1
    chosen = []
    candidate = 0
    for window in range(windows):
        now = BASE + window * window_seconds + 0.5
        keys = []
        while len(keys) < per_window:
            key = f"k{candidate}"
            candidate += 1
            decision = limiter.hit(key, now=now)
            if decision.allowed and decision.remaining == fresh:
                keys.append(key)
        chosen.append(keys)
    limiter.close()
    os.unlink(scratch)
    return chosen


def _rotate(path, limits, key_sets, attempts, on_full, barrier, results):
    limiter = Limiter(limits, path=path, on_full=on_full)
    window_seconds = limiter.policies[0].window
    rng = random.Random(os.getpid())
    allowed = collections.Counter()
    for window, keys in enumerate(key_sets):
        order = list(keys) * attempts
        rng.shuffle(order)
        now = BASE + window * window_seconds + 0.5
        barrier.wait(timeout=JOIN_SECONDS)
        for key in order:
            if limiter.hit(key, now=now).allowed:
                allowed[window, key] += 1
    results.put(dict(allowed))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_tiny_table_rotation_exact(tmp_path, method):
    # Every window brings new keys, so each one evicts an expired entry.
    context = multiprocessing.get_context(method)
    processes = 4
    windows = 40 if method == "fork" else 15
    limit = 4
    path = str(tmp_path / "table")
    limiter = Limiter(f"{limit}/second", path=path, slots=30, on_full="reject")
    key_sets = pick_keys(path, f"{limit}/second", windows, 12, 1)
    barrier = context.Barrier(processes)
    args = [(path, f"{limit}/second", key_sets, 3, "reject", barrier)] * processes
    totals = add_counts(run_workers(context, _rotate, args))

    expected = {
        (window, key): limit
        for window, keys in enumerate(key_sets)
        for key in keys
    }
    stats = limiter.stats()
    assert stats["full_events"] == 0
    assert stats["evictions"] > 0
    assert {pair: count for pair, count in totals.items() if count > limit} == {}
    assert dict(totals) == expected


@pytest.mark.parametrize("on_full", ["reject", "allow"])
def test_tiny_table_full_never_over(tmp_path, on_full):
    # 60 keys on 10 lines: most keys find their line full in every window.
    context = multiprocessing.get_context("fork")
    processes = 4
    limit = 3
    path = str(tmp_path / "table")
    limiter = Limiter(f"{limit}/second", path=path, slots=30, on_full=on_full)
    key_sets = [[f"k{i}" for i in range(60)]] * 30
    barrier = context.Barrier(processes)
    args = [(path, f"{limit}/second", key_sets, 2, on_full, barrier)] * processes
    totals = add_counts(run_workers(context, _rotate, args))

    stats = limiter.stats()
    assert stats["full_events"] > 0
    assert stats["evictions"] > 0
    if on_full == "reject":
        over = {pair: count for pair, count in totals.items() if count > limit}
        assert over == {}
    else:
        # A key either counts in its own entry or finds its line full and
        # passes, so none gets less than its limit.
        pairs = [(window, key) for window in range(30) for key in key_sets[0]]
        under = {pair: totals[pair] for pair in pairs if totals[pair] < limit}
        assert under == {}


def _hammer_until_killed(path, limits, key, budget, progress, started):
    # Spends at most `budget` allowed hits on key, then only rotates other
    # keys through a tiny table, until the parent kills it.  progress[0]
    # is written after each allowed hit, so it can lag the table by one.
    limiter = Limiter(limits, path=path)
    rotating = Limiter("2/second", path=path, namespace="rotating")
    started.set()
    index = 0
    while True:
        index += 1
        if progress[0] < budget and limiter.hit(key, now=BASE + 0.5).allowed:
            progress[0] += 1
        rotating.hit(f"r{index % 50}", now=BASE + (index // 40) % 60)


def _hammer_count(path, limits, key, attempts, barrier, results):
    limiter = Limiter(limits, path=path)
    rotating = Limiter("2/second", path=path, namespace="rotating")
    barrier.wait(timeout=JOIN_SECONDS)
    allowed = 0
    for index in range(attempts):
        if limiter.hit(key, now=BASE + 0.5).allowed:
            allowed += 1
        rotating.hit(f"r{index % 50}", now=BASE + (index // 40) % 60)
    results.put(allowed)


def test_killed_process_blocks_nobody(tmp_path):
    # SIGKILL can land in the middle of a compare-and-swap sequence,
    # including an eviction between its freeze and its hand-over.  The
    # other hits stay inside the minute of key "a", so its entry is live
    # for every process and may never be evicted.
    context = multiprocessing.get_context("fork")
    limit = 6000
    limits = f"{limit}/minute"
    for round_index in range(3):
        path = str(tmp_path / f"table{round_index}")
        limiter = Limiter(limits, path=path, slots=30)
        limiter.hit("a", cost=1, now=BASE + 0.5)
        progress = context.Array("q", 1, lock=False)
        started = context.Event()
        victim = context.Process(
            target=_hammer_until_killed,
            args=(path, limits, "a", limit // 2, progress, started),
        )
        victim.start()
        assert started.wait(timeout=JOIN_SECONDS)
        time.sleep(0.05 + 0.1 * round_index)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=JOIN_SECONDS)
        # The parent's hit, and what the victim reported.
        counted_before = 1 + progress[0]

        survivors = 3
        barrier = context.Barrier(survivors)
        args = [(path, limits, "a", 3000, barrier)] * survivors
        started_at = time.monotonic()
        allowed = sum(run_workers(context, _hammer_count, args))

        assert victim.exitcode == -signal.SIGKILL
        assert time.monotonic() - started_at < JOIN_SECONDS
        assert 1 < counted_before <= 1 + limit // 2
        assert limit - 1 <= allowed + counted_before <= limit
        assert limiter.peek("a", now=BASE + 0.5).allowed is False


# Replays one interleaving of two processes by calling the functions of
# table.h in order: C reads the control word of a full line, Y evicts the
# expired X and counts five hits, then C claims with its stale copy.
STALE_CLAIM_PROGRAM = r"""
#include <stdio.h>
#include "table.h"

static fl_header header;
static fl_stats stats;
static fl_line line;

static uint64_t hit(uint64_t tag, uint64_t second)
{
    fl_entry_key key = {tag, 1, 4, 10};
    fl_result result;
    fl_hit(&line, &header, &key, second, second * 1000000000ULL, 1, 0,
           &stats, &result);
    return result.count;
}

int main(void)
{
    uint64_t stale;
    int i;

    header.classes[1] = (1ULL << 8) | 4;
    hit(101, 5);
    hit(102, 5);
    hit(103, 5);
    stale = fl_load(&line.ctl);
    for (i = 0; i < 5; i++)
        hit(200, 6);
    fl_claim(&line, &header, stale, 300, 6 * 1000000000ULL, &stats);
    printf("%llu\n", (unsigned long long)hit(200, 6));
    return 0;
}
"""

INCLUDES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "fastlimit_ext",
    "includes",
)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_claim_stale_control_word(tmp_path):
    # A claim working from an old control word must not destroy the live
    # entry that another process wrote meanwhile: Y's sixth hit counts 6.
    source = tmp_path / "stale_claim.c"
    program = tmp_path / "stale_claim"
    source.write_text(textwrap.dedent(STALE_CLAIM_PROGRAM))
    compiled = subprocess.run(
        ["cc", "-std=c11", "-O1", f"-I{INCLUDES}", str(source), "-o", str(program)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compiled.returncode == 0, compiled.stderr
    result = subprocess.run(
        [str(program)], capture_output=True, text=True, timeout=10, check=True
    )
    assert result.stdout.strip() == "6"
