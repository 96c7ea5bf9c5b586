"""Tests of the key space: bounded memory, false sharing and odd keys."""

import os

import pytest

from fastlimit import Limiter

BASE = 86400 * 19675.0
DEFAULT_SLOTS = 3 << 20


def test_million_keys_file_size_fixed(tmp_path):
    path = tmp_path / "table"
    limiter = Limiter("10/second", path=path, slots=3000)
    size_before = os.path.getsize(path)
    for i in range(1_000_000):
        limiter.hit(b"%d" % i, now=BASE + i // 10_000)
    stats = limiter.stats(now=BASE + 99)
    assert os.path.getsize(path) == size_before
    assert stats["file_size"] == size_before
    assert stats["slots_used"] <= 3000
    assert stats["evictions"] > 0
    assert stats["full_events"] > 0


def test_live_keys_at_most_slots(tmp_path):
    limiter = Limiter("10/minute", path=tmp_path / "table", slots=300)
    for i in range(5000):
        limiter.hit(b"%d" % i, now=BASE)
    stats = limiter.stats(now=BASE)
    assert stats["live_keys"] <= 300
    # A key whose tag matches a stored one in its line counts there, so a
    # few keys may be neither inserted nor full.
    assert stats["inserts"] == stats["live_keys"]
    assert stats["full_events"] <= 5000 - stats["live_keys"]
    assert stats["full_events"] >= 4990 - stats["live_keys"]


def test_false_sharing_rate_default_size(tmp_path):
    # Each round puts 100,000 new keys of limit 1 in one window, hashed
    # through another namespace, so a key rejected on its first hit shares
    # a counter with another key.  Expected: 100,000^2 / 2 pairs, each in
    # one line with one tag with odds 2^-40, so about 5e-8 per key.
    rounds = 50
    keys_per_round = 100_000
    path = tmp_path / "table"
    wrongly_limited = 0
    for round_index in range(rounds):
        limiter = Limiter(
            "1/hour", path=path, slots=DEFAULT_SLOTS, namespace=f"round{round_index}"
        )
        now = BASE + 3600 * round_index
        for i in range(keys_per_round):
            if not limiter.hit(b"key%d" % i, now=now).allowed:
                wrongly_limited += 1
        stats = limiter.stats(now=now)
        assert stats["live_keys"] > keys_per_round - 100
        limiter.close()

    rate = wrongly_limited / (rounds * keys_per_round)
    print(
        f"false sharing: {wrongly_limited} of {rounds * keys_per_round} keys "
        f"wrongly limited ({rate:.2e}) at {DEFAULT_SLOTS} slots, "
        f"{keys_per_round} live keys per window"
    )
    assert os.path.getsize(path) == 8192 + DEFAULT_SLOTS // 3 * 32
    assert rate < 1e-6


@pytest.mark.parametrize("size", [1 << 16, 1 << 20, 10 << 20])
def test_huge_key(tmp_path, size):
    limiter = Limiter("1/minute", path=tmp_path / "table", slots=3000)
    key = os.urandom(size)
    first = limiter.hit(key, now=BASE)
    again = limiter.hit(bytes(key), now=BASE)
    assert first.allowed is True
    assert again.allowed is False


def test_huge_keys_differ_at_end(tmp_path):
    limiter = Limiter("1/minute", path=tmp_path / "table", slots=3000)
    prefix = b"x" * (4 << 20)
    limiter.hit(prefix + b"a", now=BASE)
    assert limiter.hit(prefix + b"b", now=BASE).allowed is True


def test_huge_str_key(tmp_path):
    limiter = Limiter("1/minute", path=tmp_path / "table", slots=3000)
    key = "\u00e9" * (1 << 20)
    limiter.hit(key, now=BASE)
    assert limiter.hit(key.encode(), now=BASE).allowed is False


def test_single_byte_keys_distinct(tmp_path):
    limiter = Limiter(
        "1/minute", path=tmp_path / "table", slots=300_000, on_full="reject"
    )
    keys = [bytes([value]) for value in range(256)] + [b""]
    first = [limiter.hit(key, now=BASE).allowed for key in keys]
    again = [limiter.hit(key, now=BASE).allowed for key in keys]
    assert first == [True] * len(keys)
    assert again == [False] * len(keys)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (b"", b"\x00"),
        (b"\x00", b"\x00\x00"),
        (b"a", b"a\x00"),
        (b"ab", b"ba"),
        ("\ud800", "\udc00"),
        ("\u00e9", "e\u0301"),
        (b"\xff" * 7, b"\xff" * 8),
        (b"a" * 15, b"a" * 16),
    ],
)
def test_similar_keys_distinct(tmp_path, one, other):
    limiter = Limiter("1/minute", path=tmp_path / "table", slots=3000)
    limiter.hit(one, now=BASE)
    assert limiter.hit(other, now=BASE).allowed is True


def test_random_keys_distinct(tmp_path):
    limiter = Limiter("1/minute", path=tmp_path / "table", slots=300_000)
    keys = {os.urandom(length % 40) for length in range(2000)}
    first = [limiter.hit(key, now=BASE).allowed for key in keys]
    assert first.count(False) == 0


def test_collision_remaining_not_negative(tmp_path):
    # In a one-line table some key shares its 20-bit tag with "x" within
    # about 2^20 tries.  Limits 7 and 5 have one counter layout, so that
    # key reads the count 7 written under the larger limit.
    path = tmp_path / "table"
    larger = Limiter("7/minute", path=path, slots=3)
    smaller = Limiter("5/minute", path=path)
    larger.hit("x", cost=7, now=BASE)
    shared = None
    for i in range(8 << 20):
        if smaller.peek(b"%d" % i, now=BASE).remaining != 5:
            shared = b"%d" % i
            break
    if shared is None:
        pytest.skip("no key shared a tag with 'x' in 8 Mi tries")
    decision = smaller.hit(shared, now=BASE)
    assert decision.allowed is False
    assert decision.remaining >= 0
