"""Tests of rate limit parsing and of Policy values."""

import pytest

import fastlimit
from fastlimit import MAX_LIMIT, InvalidLimit, Policy, parse, parse_many


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("10/minute", 10, 60.0),
        ("10/minutes", 10, 60.0),
        ("1/second", 1, 1.0),
        ("3/seconds", 3, 1.0),
        ("1/hour", 1, 3600.0),
        ("1/day", 1, 86400.0),
        ("2/days", 2, 86400.0),
        ("10 per minute", 10, 60.0),
        ("7 PER Hour", 7, 3600.0),
        ("10/Minute", 10, 60.0),
        ("5/2 hours", 5, 7200.0),
        ("5/2hours", 5, 7200.0),
        ("5/1 hour", 5, 3600.0),
        ("10 per 2 minutes", 10, 120.0),
        ("3 / 10 seconds", 3, 10.0),
        ("  3/second  ", 3, 1.0),
        ("\t3/second\n", 3, 1.0),
        ("007/second", 7, 1.0),
        (f"{MAX_LIMIT}/second", MAX_LIMIT, 1.0),
        ("1/49710 days", 1, 49710 * 86400.0),
    ],
)
def test_parse_accepts(text, limit, window):
    policy = parse(text)
    assert policy.limit == limit
    assert policy.window == window
    assert isinstance(policy.window, float)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",
        "10/",
        "/minute",
        "minute",
        "0/minute",
        "-1/minute",
        "1.5/minute",
        "10/0 minutes",
        "10/-2 minutes",
        "10/2.5 hours",
        "10/horu",
        "10/s",
        "10/secs",
        "10/ss",
        "10/week",
        "10per minute",
        "10 per",
        "10/minute/second",
        "10/minute 5",
        "ten/minute",
        "\u0661\u0660/minute",
        "10\u00a0/\u00a0minute x",
        f"{MAX_LIMIT + 1}/second",
        "1/49711 days",
        "1/99999999999999999999 days",
    ],
)
def test_parse_rejects(text):
    with pytest.raises(InvalidLimit) as caught:
        parse(text)
    assert repr(text) in str(caught.value)


def test_invalid_limit_is_value_error():
    assert issubclass(InvalidLimit, ValueError)


def test_invalid_limit_exported():
    assert fastlimit.InvalidLimit is InvalidLimit


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("10/horu", "second, minute, hour or day"),
        ("0/minute", "positive whole numbers"),
        ("-1/minute", "positive whole numbers"),
        ("1.5/minute", "positive whole numbers"),
        ("", "N/unit"),
        (f"{MAX_LIMIT + 1}/second", str(MAX_LIMIT)),
    ],
)
def test_parse_message_lists_allowed(text, hint):
    with pytest.raises(InvalidLimit, match="invalid rate limit") as caught:
        parse(text)
    assert hint in str(caught.value)


def test_parse_unknown_unit_named():
    with pytest.raises(InvalidLimit) as caught:
        parse("10/horu")
    assert "unknown unit 'horu'" in str(caught.value)


@pytest.mark.parametrize("value", [None, 10, b"10/minute", ["10/minute"]])
def test_parse_type_error(value):
    with pytest.raises(TypeError):
        parse(value)


def test_max_limit_value():
    assert MAX_LIMIT == (1 << 24) - 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", [(10, 1.0)]),
        ("10/second; 1000/hour", [(10, 1.0), (1000, 3600.0)]),
        ("10/second,1000/hour", [(10, 1.0), (1000, 3600.0)]),
        ("10/second | 1000/hour", [(10, 1.0), (1000, 3600.0)]),
        ("1/second;2/minute,3/hour|4/day", [(1, 1), (2, 60), (3, 3600), (4, 86400)]),
        ("  1/second ;  2 per minute  ", [(1, 1.0), (2, 60.0)]),
        ("5/minute; 5/minute", [(5, 60.0), (5, 60.0)]),
        ("1000/hour; 10/second", [(1000, 3600.0), (10, 1.0)]),
    ],
)
def test_parse_many_accepts(text, expected):
    policies = parse_many(text)
    assert [(policy.limit, policy.window) for policy in policies] == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        ";",
        "10/second;",
        ";10/second",
        "10/second;;1/hour",
        "10/second; 10/horu",
        "10/second 1/hour",
        "10/second; 0/hour",
    ],
)
def test_parse_many_rejects(text):
    with pytest.raises(InvalidLimit):
        parse_many(text)


def test_parse_many_bad_part_named():
    with pytest.raises(InvalidLimit) as caught:
        parse_many("10/second; 10/horu")
    assert "10/horu" in str(caught.value)


@pytest.mark.parametrize("text", ["10/second;", "10/second;;1/hour", ";"])
def test_parse_many_empty_part_names_text(text):
    # The message for an empty part must let the user find it in the text.
    with pytest.raises(InvalidLimit) as caught:
        parse_many(text)
    assert repr(text) in str(caught.value)


def test_parse_many_empty_message():
    with pytest.raises(InvalidLimit) as caught:
        parse_many("")
    assert "empty" in str(caught.value)


@pytest.mark.parametrize("value", [None, 10, b"10/second"])
def test_parse_many_type_error(value):
    with pytest.raises(TypeError):
        parse_many(value)


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (Policy(10, 60), "10/minute"),
        (Policy(1, 1), "1/second"),
        (Policy(5, 7200), "5/2 hours"),
        (Policy(5, 90), "5/90 seconds"),
        (Policy(3, 86400), "3/day"),
        (Policy(3, 172800), "3/2 days"),
    ],
)
def test_policy_str(policy, text):
    assert str(policy) == text


@pytest.mark.parametrize(
    "text", ["10/minute", "5/2 hours", "5/90 seconds", "3/2 days", "1/second"]
)
def test_policy_str_round_trip(text):
    policy = parse(text)
    assert parse(str(policy)) == policy


def test_policy_equal_values():
    assert Policy(10, 60) == Policy(10.0, 60.0)


def test_policy_hashable():
    assert len({Policy(10, 60), parse("10/minute")}) == 1


def test_policy_frozen():
    policy = Policy(10, 60)
    with pytest.raises(AttributeError):
        policy.limit = 11


def test_policy_float_limit_converted():
    assert type(Policy(10.0, 60).limit) is int


@pytest.mark.parametrize(
    ("limit", "window"),
    [
        (0, 60),
        (-1, 60),
        (MAX_LIMIT + 1, 60),
        (1.5, 60),
        (float("nan"), 60),
        (float("inf"), 60),
        (1, 0),
        (1, -1),
        (1, 1.5),
        (1, 2**32),
        (1, float("nan")),
        (1, float("inf")),
    ],
)
def test_policy_rejects(limit, window):
    with pytest.raises(InvalidLimit):
        Policy(limit, window)


@pytest.mark.parametrize(
    ("limit", "window"),
    [(True, 60), (10, True), ("10", 60), (10, "60"), (None, 60), (10, None)],
)
def test_policy_type_error(limit, window):
    with pytest.raises(TypeError):
        Policy(limit, window)


def test_parse_huge_number_invalid_limit():
    with pytest.raises(InvalidLimit, match="too large"):
        parse("1" * 5000 + "/second")
