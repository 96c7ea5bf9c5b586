"""Unit tests of rate limit header formatting."""

from dataclasses import dataclass

import pytest

from fastlimit.headers import (
    HEADER_SETS,
    HeaderWriter,
    parse_header_sets,
    policy_field,
    policy_name,
    ratelimit_field,
    retry_after_seconds,
    seconds_until,
    sf_string,
)
from fastlimit.policy import Policy


@dataclass
class FakeDecision:
    """The attributes of fastlimit.Decision that headers read."""

    allowed: bool = True
    limit: int = 100
    remaining: int = 42
    reset_after: float = 0.25
    retry_after: float = 0.0


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(0.0, 0), (-1.0, 0), (0.001, 1), (0.999, 1), (1.0, 1), (1.0001, 2), (59.5, 60)],
)
def test_seconds_until_rounds_up(delay, expected):
    assert seconds_until(delay) == expected


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 1), (0.01, 1), (1.0, 1), (1.5, 2), (-3.0, 1)]
)
def test_retry_after_at_least_one(retry_after, expected):
    decision = FakeDecision(allowed=False, retry_after=retry_after)
    assert retry_after_seconds(decision) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default", '"default"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("100%", '"100%25"'),
        ("é", '"%C3%A9"'),
        ("tab\there", '"tab%09here"'),
    ],
)
def test_sf_string_escapes(text, expected):
    assert sf_string(text) == expected


def test_policy_field_one_policy():
    policy = Policy(100, 1.0)
    field = policy_field([(policy_name("ip", policy), policy)])
    assert field == '"ip 100/second";q=100;w=1'


def test_policy_field_several_policies():
    second = Policy(10, 1.0)
    hour = Policy(1000, 3600.0)
    field = policy_field([("ip 10/second", second), ("ip 1000/hour", hour)])
    assert field == '"ip 10/second";q=10;w=1, "ip 1000/hour";q=1000;w=3600'


def test_ratelimit_field_rounds_reset_up():
    decision = FakeDecision(remaining=42, reset_after=0.25)
    assert ratelimit_field("ip 100/second", decision) == '"ip 100/second";r=42;t=1'


def test_ratelimit_field_long_window():
    decision = FakeDecision(remaining=0, reset_after=3599.2)
    assert ratelimit_field("x", decision) == '"x";r=0;t=3600'


def test_header_writer_all_sets_allowed():
    writer = HeaderWriter()
    headers = dict(writer.headers(FakeDecision(), sf_string("ip 100/second"), "POLICIES"))
    assert headers["RateLimit-Policy"] == "POLICIES"
    assert headers["RateLimit"] == '"ip 100/second";r=42;t=1'
    assert headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "42"
    assert headers["X-RateLimit-Reset"] == "1"
    assert "Retry-After" not in headers


def test_header_writer_rejected_adds_retry_after():
    writer = HeaderWriter()
    decision = FakeDecision(
        allowed=False, remaining=0, reset_after=2.5, retry_after=2.5
    )
    headers = dict(writer.headers(decision, '"n"', "P", rejected=True))
    assert headers["Retry-After"] == "3"
    assert headers["X-RateLimit-Reset"] == "3"
    assert headers["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    ("sets", "present", "absent"),
    [
        ({"ratelimit"}, {"RateLimit", "RateLimit-Policy"}, {"X-RateLimit-Limit", "Retry-After"}),
        ({"x-ratelimit"}, {"X-RateLimit-Limit", "X-RateLimit-Reset"}, {"RateLimit", "Retry-After"}),
        ({"retry-after"}, {"Retry-After"}, {"RateLimit", "X-RateLimit-Limit"}),
        (set(), set(), {"RateLimit", "X-RateLimit-Limit", "Retry-After"}),
    ],
)
def test_header_writer_switches(sets, present, absent):
    writer = HeaderWriter(sets)
    decision = FakeDecision(allowed=False, remaining=0, retry_after=1.0)
    names = {name for name, _ in writer.headers(decision, '"n"', "P", rejected=True)}
    assert present <= names
    assert not absent & names


def test_header_writer_rejects_unknown_set():
    with pytest.raises(ValueError, match="draft"):
        HeaderWriter({"draft"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ratelimit,x-ratelimit,retry-after", frozenset(HEADER_SETS)),
        (" RateLimit , retry-after ", frozenset({"ratelimit", "retry-after"})),
        ("", frozenset()),
        ("none", frozenset()),
        ("x-ratelimit", frozenset({"x-ratelimit"})),
    ],
)
def test_parse_header_sets(text, expected):
    assert parse_header_sets(text) == expected


def test_parse_header_sets_rejects_unknown():
    with pytest.raises(ValueError, match="'legacy'"):
        parse_header_sets("ratelimit,legacy")
