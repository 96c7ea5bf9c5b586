"""Tests of Limiter decisions, with the clock set through now=."""

import pytest

from fastlimit import (
    Decision,
    InvalidLimit,
    Limiter,
    Policy,
    TableError,
    TableFull,
    parse,
    table_stats,
)

# A Unix time that starts a day, so it starts a second, minute and hour too.
BASE = 86400 * 19675.0


@pytest.fixture
def make_limiter(tmp_path):
    """Return a factory of limiters on one small table under tmp_path."""

    def make(limits, **options):
        options.setdefault("path", tmp_path / "table")
        options.setdefault("slots", 3000)
        return Limiter(limits, **options)

    return make


def hit_times(limiter, key, times, now=BASE, cost=1):
    return [limiter.hit(key, cost=cost, now=now) for _ in range(times)]


def test_hit_first_decision(make_limiter):
    decision = make_limiter("5/minute").hit("a", now=BASE + 15)
    assert isinstance(decision, Decision)
    assert decision.allowed is True
    assert decision.limit == 5
    assert decision.remaining == 4
    assert decision.reset_after == pytest.approx(45.0)
    assert decision.retry_after == 0.0
    assert decision.policy == parse("5/minute")


def test_hit_counts_to_limit(make_limiter):
    decisions = hit_times(make_limiter("5/minute"), "a", 7)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]


def test_hit_rejected_decision(make_limiter):
    limiter = make_limiter("2/minute")
    hit_times(limiter, "a", 2, now=BASE + 20)
    decision = limiter.hit("a", now=BASE + 20)
    assert decision.allowed is False
    assert decision.remaining == 0
    assert decision.retry_after == pytest.approx(40.0)
    assert decision.reset_after == pytest.approx(40.0)


def test_decision_bool(make_limiter):
    limiter = make_limiter("1/minute")
    assert bool(limiter.hit("a", now=BASE))
    assert not limiter.hit("a", now=BASE)


def test_decision_repr(make_limiter):
    text = repr(make_limiter("1/minute").hit("a", now=BASE))
    assert text.startswith("Decision(allowed=True")
    assert "policy=1/minute" in text


@pytest.mark.parametrize(
    ("limits", "window"),
    [("3/second", 1), ("3/minute", 60), ("3/hour", 3600), ("3/2 hours", 7200)],
)
def test_window_boundary(make_limiter, limits, window):
    limiter = make_limiter(limits)
    start = BASE + 10 * window
    hit_times(limiter, "a", 3, now=start)
    last_instant = limiter.hit("a", now=start + window - 0.25)
    next_window = limiter.hit("a", now=start + window)
    assert last_instant.allowed is False
    assert next_window.allowed is True
    assert next_window.remaining == 2


@pytest.mark.parametrize("offset", [0.0, 0.25, 1.0, 59.0, 59.75])
def test_reset_after_in_window(make_limiter, offset):
    decision = make_limiter("3/minute").hit("a", now=BASE + offset)
    assert decision.reset_after == pytest.approx(60.0 - offset)


def test_reset_after_full_window_at_start(make_limiter):
    decision = make_limiter("3/minute").hit("a", now=BASE + 120)
    assert decision.reset_after == pytest.approx(60.0)


def test_window_aligned_to_epoch(make_limiter):
    # 5000 s windows do not divide a day: window k spans [5000k, 5000k + 5000).
    limiter = make_limiter("1/5000 seconds")
    start = 5000.0 * 340000
    first = limiter.hit("a", now=start + 4999.5)
    second = limiter.hit("a", now=start + 5000)
    assert first.allowed is True
    assert first.reset_after == pytest.approx(0.5)
    assert second.allowed is True


def test_fractional_now_same_window(make_limiter):
    limiter = make_limiter("2/second")
    hit_times(limiter, "a", 2, now=BASE + 0.001)
    assert limiter.hit("a", now=BASE + 0.999).allowed is False


@pytest.mark.parametrize("on_full", ["allow", "reject"])
def test_remaining_never_negative(make_limiter, on_full):
    limiter = make_limiter("3/minute; 5/hour", slots=3, on_full=on_full)
    decisions = []
    for i in range(6):
        for cost in (1, 2, 3):
            decisions.append(limiter.hit(f"k{i}", cost=cost, now=BASE))
    assert min(d.remaining for d in decisions) >= 0


@pytest.mark.parametrize(
    ("costs", "allowed", "remaining"),
    [
        ([5], [True], [5]),
        ([10], [True], [0]),
        ([4, 4, 4], [True, True, False], [6, 2, 2]),
        ([9, 2, 1], [True, False, True], [1, 1, 0]),
        ([3, 3, 3, 1, 1], [True, True, True, True, False], [7, 4, 1, 0, 0]),
    ],
)
def test_cost_sequence(make_limiter, costs, allowed, remaining):
    limiter = make_limiter("10/minute")
    decisions = [limiter.hit("a", cost=cost, now=BASE) for cost in costs]
    assert [d.allowed for d in decisions] == allowed
    assert [d.remaining for d in decisions] == remaining


def test_cost_rejected_counts_nothing(make_limiter):
    limiter = make_limiter("10/minute")
    limiter.hit("a", cost=8, now=BASE)
    limiter.hit("a", cost=3, now=BASE)
    assert limiter.peek("a", now=BASE).remaining == 2


@pytest.mark.parametrize("cost", [0, -1, 11, 2**64])
def test_cost_value_error(make_limiter, cost):
    limiter = make_limiter("10/minute; 50/hour")
    with pytest.raises(ValueError, match="invalid cost"):
        limiter.hit("a", cost=cost, now=BASE)


@pytest.mark.parametrize("cost", [1.0, True, "1", None, b"1"])
def test_cost_type_error(make_limiter, cost):
    limiter = make_limiter("10/minute")
    with pytest.raises(TypeError, match="cost"):
        limiter.hit("a", cost=cost, now=BASE)


def test_cost_error_counts_nothing(make_limiter):
    limiter = make_limiter("10/minute")
    with pytest.raises(ValueError):
        limiter.hit("a", cost=11, now=BASE)
    assert limiter.stats()["probes"] == 0


@pytest.mark.parametrize("key", [None, 1, 1.5, bytearray(b"a"), memoryview(b"a"), ["a"]])
def test_key_type_error(make_limiter, key):
    limiter = make_limiter("1/minute")
    with pytest.raises(TypeError, match="key must be str or bytes"):
        limiter.hit(key, now=BASE)


@pytest.mark.parametrize("key", [None, 1, bytearray(b"a")])
def test_peek_key_type_error(make_limiter, key):
    with pytest.raises(TypeError):
        make_limiter("1/minute").peek(key, now=BASE)


@pytest.mark.parametrize("key", [None, 1, bytearray(b"a")])
def test_reset_key_type_error(make_limiter, key):
    with pytest.raises(TypeError):
        make_limiter("1/minute").reset(key)


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("abc", b"abc"),
        ("", b""),
        ("caf\u00e9", "caf\u00e9".encode()),
        ("\U0001f600", "\U0001f600".encode()),
        ("\ud800", b"\xed\xa0\x80"),
        ("a\udfffb", b"a\xed\xbf\xbfb"),
        ("\x00", b"\x00"),
    ],
)
def test_str_key_is_utf8(make_limiter, text, raw):
    limiter = make_limiter("1/minute")
    assert limiter.hit(text, now=BASE).allowed is True
    assert limiter.hit(raw, now=BASE).allowed is False


def test_str_subclass_key(make_limiter):
    class Name(str):
        pass

    limiter = make_limiter("1/minute")
    limiter.hit(Name("abc"), now=BASE)
    assert limiter.hit("abc", now=BASE).allowed is False


def test_keys_independent(make_limiter):
    limiter = make_limiter("1/minute")
    limiter.hit("a", now=BASE)
    assert limiter.hit("b", now=BASE).allowed is True


@pytest.mark.parametrize("now", [-1, -0.5, 9.3e9, float("inf"), float("nan")])
def test_now_value_error(make_limiter, now):
    with pytest.raises(ValueError, match="invalid now"):
        make_limiter("1/minute").hit("a", now=now)


@pytest.mark.parametrize(
    "now", ["31", b"31", True, [1], object()],
    ids=["str", "bytes", "bool", "list", "object"],
)
def test_now_type_error(make_limiter, now):
    with pytest.raises(TypeError, match="now must be a number"):
        make_limiter("1/minute").hit("a", now=now)


def test_now_zero_accepted(make_limiter):
    decision = make_limiter("1/minute").hit("a", now=0)
    assert decision.allowed is True
    assert decision.reset_after == pytest.approx(60.0)


def test_now_default_clock(make_limiter):
    decision = make_limiter("1/day").hit("a")
    assert 0.0 < decision.reset_after <= 86400.0


def test_several_policies_least_remaining(make_limiter):
    decision = make_limiter("10/second; 3/minute").hit("a", now=BASE)
    assert decision.remaining == 2
    assert decision.limit == 3
    assert decision.policy == parse("3/minute")


@pytest.mark.parametrize("limits", ["1/second; 1/minute", "1/minute; 1/second"])
def test_several_policies_longest_retry(make_limiter, limits):
    limiter = make_limiter(limits)
    limiter.hit("a", now=BASE)
    decision = limiter.hit("a", now=BASE + 0.5)
    assert decision.allowed is False
    assert decision.policy == parse("1/minute")
    assert decision.retry_after == pytest.approx(59.5)


def test_several_policies_only_rejecting_reported(make_limiter):
    # The hour still has budget, so the per-second policy is reported.
    limiter = make_limiter("2/second; 100/hour")
    hit_times(limiter, "a", 2)
    decision = limiter.hit("a", now=BASE + 0.5)
    assert decision.allowed is False
    assert decision.policy == parse("2/second")
    assert decision.retry_after == pytest.approx(0.5)


@pytest.mark.parametrize("limits", ["5/minute; 2/second", "2/second; 5/minute"])
def test_several_policies_refund(make_limiter, limits):
    limiter = make_limiter(limits)
    hit_times(limiter, "a", 3, now=BASE)
    hit_times(limiter, "a", 2, now=BASE + 1)
    decision = limiter.peek("a", now=BASE + 2)
    assert decision.allowed is True
    assert decision.policy == parse("5/minute")
    assert decision.remaining == 1


def test_refund_counted_in_stats(make_limiter):
    limiter = make_limiter("5/minute; 1/second")
    hit_times(limiter, "a", 3)
    assert limiter.stats()["refunds"] == 2


def test_several_policies_cost(make_limiter):
    limiter = make_limiter("10/second; 25/minute")
    allowed = [limiter.hit("a", cost=10, now=BASE + t).allowed for t in range(4)]
    assert allowed == [True, True, False, False]


def test_equal_policies_count_separately(make_limiter):
    limiter = make_limiter("3/minute; 3/minute")
    decisions = hit_times(limiter, "a", 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]


def test_policies_limit_count(make_limiter):
    limits = [Policy(1000, window) for window in range(1, 66)]
    with pytest.raises(ValueError, match="at most 64"):
        make_limiter(limits)


def test_sixty_four_policies(make_limiter):
    # Each window twice: 64 distinct windows would need more layouts than
    # a table has.
    limits = [Policy(2, window) for window in range(1, 33)] * 2
    limiter = make_limiter(limits)
    hit_times(limiter, "a", 2)
    decision = limiter.hit("a", now=BASE)
    assert decision.allowed is False
    assert decision.policy == Policy(2, 32)


def test_peek_counts_nothing(make_limiter):
    limiter = make_limiter("3/minute")
    for _ in range(5):
        limiter.peek("a", now=BASE)
    assert limiter.hit("a", now=BASE).remaining == 2


def test_peek_new_key(make_limiter):
    decision = make_limiter("3/minute").peek("a", now=BASE + 10)
    assert decision.allowed is True
    assert decision.remaining == 3
    assert decision.reset_after == pytest.approx(50.0)


def test_peek_after_hits(make_limiter):
    limiter = make_limiter("3/minute")
    hit_times(limiter, "a", 2)
    decision = limiter.peek("a", now=BASE)
    assert decision.allowed is True
    assert decision.remaining == 1


def test_peek_exhausted(make_limiter):
    limiter = make_limiter("3/minute")
    hit_times(limiter, "a", 3)
    decision = limiter.peek("a", now=BASE + 20)
    assert decision.allowed is False
    assert decision.remaining == 0
    assert decision.retry_after == pytest.approx(40.0)


def test_peek_not_in_stats(make_limiter):
    limiter = make_limiter("3/minute")
    limiter.peek("a", now=BASE)
    stats = limiter.stats()
    assert stats["allowed"] == 0
    assert stats["inserts"] == 0


def test_reset_clears(make_limiter):
    limiter = make_limiter("2/minute")
    hit_times(limiter, "a", 2)
    limiter.reset("a")
    decision = limiter.hit("a", now=BASE)
    assert decision.allowed is True
    assert decision.remaining == 1


def test_reset_every_policy(make_limiter):
    limiter = make_limiter("2/second; 3/minute")
    hit_times(limiter, "a", 2)
    limiter.reset(b"a")
    assert limiter.peek("a", now=BASE).remaining == 2


def test_reset_other_key_kept(make_limiter):
    limiter = make_limiter("1/minute")
    limiter.hit("a", now=BASE)
    limiter.hit("b", now=BASE)
    limiter.reset("a")
    assert limiter.hit("b", now=BASE).allowed is False


def test_reset_unknown_key(make_limiter):
    limiter = make_limiter("1/minute")
    limiter.reset("never seen")
    assert limiter.hit("never seen", now=BASE).allowed is True


def test_clock_back_keeps_spent(make_limiter):
    limiter = make_limiter("3/minute")
    hit_times(limiter, "a", 3, now=BASE + 60)
    decision = limiter.hit("a", now=BASE + 30)
    assert decision.allowed is False
    assert decision.retry_after == pytest.approx(90.0)


def test_clock_back_counts_newer_window(make_limiter):
    limiter = make_limiter("5/minute")
    hit_times(limiter, "a", 2, now=BASE + 60)
    back = limiter.hit("a", now=BASE + 30)
    forward = limiter.hit("a", now=BASE + 61)
    assert back.remaining == 2
    assert forward.remaining == 1


@pytest.mark.parametrize("windows_back", [1, 10, 500])
def test_clock_back_largest_limit(make_limiter, windows_back):
    limit = (1 << 24) - 1
    limiter = make_limiter(f"{limit}/second")
    limiter.hit("a", cost=limit, now=BASE + 1000)
    assert limiter.hit("a", now=BASE + 1000 - windows_back).allowed is False


def test_clock_forward_new_window(make_limiter):
    limiter = make_limiter("3/minute")
    hit_times(limiter, "a", 3)
    decision = limiter.hit("a", now=BASE + 3600 * 24 * 365)
    assert decision.allowed is True
    assert decision.remaining == 2


@pytest.mark.parametrize(
    ("limits", "cost", "idle"),
    [
        ("16777215/second", 16777215, 7700),
        ("16777215/second", 16777215, 8192),
        ("100000/second", 100000, 1 << 20),
        ("1000000/minute", 1000000, 60 * (1 << 17)),
    ],
)
def test_clock_forward_long_idle(make_limiter, limits, cost, idle):
    # A key idle for many windows starts afresh, however large its limit.
    limiter = make_limiter(limits)
    limiter.hit("a", cost=cost, now=BASE + 0.5)
    decision = limiter.hit("a", now=BASE + 0.5 + idle)
    assert decision.allowed is True


def test_namespace_separates(make_limiter):
    first = make_limiter("1/minute", namespace="login")
    second = make_limiter("1/minute", namespace=b"search")
    first.hit("a", now=BASE)
    assert second.hit("a", now=BASE).allowed is True


def test_same_path_shares(make_limiter):
    first = make_limiter("2/minute", namespace="api")
    second = make_limiter("2/minute", namespace="api")
    first.hit("a", now=BASE)
    first.hit("a", now=BASE)
    assert second.hit("a", now=BASE).allowed is False


@pytest.mark.parametrize(
    "limits",
    ["2/minute", parse("2/minute"), [parse("2/minute")], (parse("2/minute"),)],
)
def test_limits_forms(make_limiter, limits):
    limiter = make_limiter(limits)
    assert limiter.policies == [parse("2/minute")]


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        ([], ValueError),
        ("", InvalidLimit),
        ("10/horu", InvalidLimit),
        (5, TypeError),
        (None, TypeError),
        (["10/minute"], TypeError),
        ([parse("1/minute"), "1/hour"], TypeError),
    ],
)
def test_limits_rejected(make_limiter, limits, error):
    with pytest.raises(error):
        make_limiter(limits)


@pytest.mark.parametrize("on_full", ["deny", "", None, True])
def test_on_full_rejected(make_limiter, on_full):
    with pytest.raises(ValueError, match="on_full"):
        make_limiter("1/minute", on_full=on_full)


@pytest.mark.parametrize("namespace", [1, None, ["a"]])
def test_namespace_type_error(make_limiter, namespace):
    with pytest.raises(TypeError, match="namespace"):
        make_limiter("1/minute", namespace=namespace)


@pytest.mark.parametrize(("slots", "lines"), [(3, 1), (30, 10), (31, 11), (3000, 1000)])
def test_slots_size_new_table(make_limiter, slots, lines):
    stats = make_limiter("1/minute", slots=slots).stats()
    assert stats["lines"] == lines
    assert stats["slots"] == 3 * lines
    assert stats["file_size"] == 8192 + 32 * lines


def test_slots_ignored_when_file_exists(make_limiter):
    make_limiter("1/minute", slots=30)
    assert make_limiter("1/minute", slots=3000).stats()["slots"] == 30


@pytest.mark.parametrize("slots", [0, 2, -3])
def test_slots_value_error(make_limiter, slots):
    with pytest.raises(ValueError, match="invalid slots"):
        make_limiter("1/minute", slots=slots)


@pytest.mark.parametrize("slots", ["30", 30.0, True])
def test_slots_type_error(make_limiter, slots):
    with pytest.raises(TypeError, match="slots"):
        make_limiter("1/minute", slots=slots)


def test_path_str_and_pathlike(make_limiter, tmp_path):
    first = make_limiter("1/minute", path=str(tmp_path / "shared"))
    second = make_limiter("1/minute", path=tmp_path / "shared")
    first.hit("a", now=BASE)
    assert second.hit("a", now=BASE).allowed is False


def test_stats_keys(make_limiter):
    stats = make_limiter("1/minute").stats()
    expected = {
        "slots", "lines", "slots_used", "live_keys", "fullness", "allowed",
        "rejected", "inserts", "evictions", "full_events", "retries",
        "refunds", "probes", "file_size", "path",
    }
    assert expected <= set(stats)


def test_stats_counts(make_limiter, tmp_path):
    limiter = make_limiter("2/minute; 10/hour")
    hit_times(limiter, "a", 3)
    limiter.hit("b", now=BASE)
    stats = limiter.stats(now=BASE)
    assert stats["allowed"] == 3
    assert stats["rejected"] == 1
    assert stats["probes"] == 8
    assert stats["inserts"] == 4
    assert stats["slots_used"] == 4
    assert stats["live_keys"] == 4
    assert stats["fullness"] == pytest.approx(4 / 3000)
    assert stats["path"] == str(tmp_path / "table")


def test_stats_live_keys_expire(make_limiter):
    limiter = make_limiter("2/minute")
    limiter.hit("a", now=BASE)
    stats = limiter.stats(now=BASE + 60)
    assert stats["slots_used"] == 1
    assert stats["live_keys"] == 0


def test_table_stats_by_path(make_limiter, tmp_path):
    limiter = make_limiter("2/minute")
    hit_times(limiter, "a", 3)
    stats = table_stats(tmp_path / "table", now=BASE)
    assert stats["allowed"] == 2
    assert stats["rejected"] == 1
    assert stats["live_keys"] == 1


def test_table_stats_missing(tmp_path):
    path = str(tmp_path / "absent")
    with pytest.raises(TableError, match="does not exist") as caught:
        table_stats(path)
    assert path in str(caught.value)


@pytest.mark.parametrize(("on_full", "allowed"), [("allow", True), ("reject", False)])
def test_on_full_decision(make_limiter, on_full, allowed):
    limiter = make_limiter("5/minute", slots=3, on_full=on_full)
    results = [limiter.hit(f"k{i}", now=BASE) for i in range(4)]
    stats = limiter.stats(now=BASE)
    assert results[3].allowed is allowed
    assert stats["full_events"] == 1
    assert stats["live_keys"] == 3


def test_on_full_reject_retry(make_limiter):
    limiter = make_limiter("5/minute", slots=3, on_full="reject")
    for i in range(4):
        decision = limiter.hit(f"k{i}", now=BASE + 20)
    assert decision.remaining == 0
    assert decision.retry_after == pytest.approx(40.0)


def test_on_full_allow_remaining(make_limiter):
    limiter = make_limiter("5/minute", slots=3)
    for i in range(4):
        decision = limiter.hit(f"k{i}", cost=2, now=BASE)
    assert decision.remaining == 3


def test_peek_full_line_rejects(make_limiter):
    # peek must make the decision hit would make, full line included.
    limiter = make_limiter("5/minute", slots=3, on_full="reject")
    for i in range(3):
        limiter.hit(f"k{i}", now=BASE)
    assert limiter.hit("k3", now=BASE).allowed is False
    assert limiter.peek("k3", now=BASE).allowed is False


def test_flood_keeps_live_entry(make_limiter):
    limiter = make_limiter("2/minute", slots=3)
    hit_times(limiter, "victim", 2)
    for i in range(2000):
        limiter.hit(f"flood{i}", now=BASE + 1)
    assert limiter.hit("victim", now=BASE + 2).allowed is False


def test_flood_keeps_live_entries_larger_table(make_limiter):
    # A victim whose line was already full of victims is never stored, so
    # only the stored ones are checked.
    limiter = make_limiter("1/hour", slots=300, on_full="reject")
    keys = [f"victim{i}" for i in range(50)]
    victims = [key for key in keys if limiter.hit(key, now=BASE).allowed]
    assert len(victims) > 40
    for i in range(20000):
        limiter.hit(f"flood{i}", now=BASE + 1)
    allowed = [key for key in victims if limiter.hit(key, now=BASE + 2).allowed]
    assert allowed == []


def test_expired_entries_evicted(make_limiter):
    limiter = make_limiter("5/minute", slots=3, on_full="reject")
    for i in range(3):
        limiter.hit(f"old{i}", now=BASE)
    decisions = [limiter.hit(f"new{i}", now=BASE + 60) for i in range(3)]
    stats = limiter.stats(now=BASE + 60)
    assert all(d.allowed for d in decisions)
    assert stats["evictions"] == 3
    assert stats["full_events"] == 0


def test_evicted_key_starts_afresh(make_limiter):
    limiter = make_limiter("1/minute", slots=3, on_full="reject")
    for i in range(3):
        limiter.hit(f"old{i}", now=BASE)
    limiter.hit("new", now=BASE + 60)
    assert limiter.hit("old0", now=BASE + 60).allowed is True


def test_layouts_exhausted(make_limiter, tmp_path):
    for window in range(1, 64):
        make_limiter(Policy(1, window))
    with pytest.raises(TableFull, match="table"):
        make_limiter(Policy(1, 64))


def test_layouts_shared_by_limit_size(make_limiter):
    # Limits 4 to 7 need three counter bits, so they share one layout.
    for limit in range(4, 8):
        make_limiter(Policy(limit, 60))
    assert make_limiter("1/minute").table.policy_layouts() == [(60, 3), (60, 1)]


def test_close_then_hit(make_limiter):
    limiter = make_limiter("1/minute")
    limiter.close()
    with pytest.raises(ValueError, match="closed"):
        limiter.hit("a", now=BASE)


def test_context_manager_closes(make_limiter):
    with make_limiter("1/minute") as limiter:
        limiter.hit("a", now=BASE)
    assert limiter.table.closed is True


def test_repr_names_limits(make_limiter, tmp_path):
    text = repr(make_limiter("1/second; 5/minute"))
    assert "1/second; 5/minute" in text
    assert str(tmp_path / "table") in text


def test_decision_now_is_the_instant(make_limiter):
    limiter = make_limiter("5/minute")
    assert limiter.hit("k", now=BASE + 1.5).now == BASE + 1.5


def test_refund_gives_budget_back(make_limiter):
    limiter = make_limiter("2/minute; 10/hour")
    first = limiter.hit("k", now=BASE)
    limiter.hit("k", now=BASE + 1)
    limiter.refund("k", now=first.now)
    decision = limiter.peek("k", now=BASE + 2)
    assert decision.allowed
    assert decision.remaining == 1


def test_refund_skips_ended_window(make_limiter):
    limiter = make_limiter("2/minute")
    old = limiter.hit("k", now=BASE)
    limiter.hit("k", now=BASE + 60)
    limiter.hit("k", now=BASE + 61)
    limiter.refund("k", now=old.now)
    assert limiter.peek("k", now=BASE + 62).remaining == 0


def test_refund_never_below_zero(make_limiter):
    limiter = make_limiter("3/minute")
    limiter.refund("k", now=BASE)
    assert limiter.peek("k", now=BASE).remaining == 3


@pytest.mark.parametrize("cost", [0, -1, 4])
def test_refund_cost_value_error(make_limiter, cost):
    limiter = make_limiter("3/minute")
    with pytest.raises(ValueError):
        limiter.refund("k", cost=cost, now=BASE)


def test_refund_more_than_counted_clears(make_limiter):
    limiter = make_limiter("3/minute")
    decision = limiter.hit("k", now=BASE)
    limiter.refund("k", cost=3, now=decision.now)
    assert limiter.peek("k", now=BASE).remaining == 3


def test_bytes_path(tmp_path):
    path = bytes(tmp_path / "table")
    limiter = Limiter("3/minute", path=path, slots=3000)
    assert limiter.path == str(tmp_path / "table")
