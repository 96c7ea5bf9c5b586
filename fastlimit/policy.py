"""Rate limits as values: parsing "10/minute" into a Policy.

A policy allows `limit` units of cost per fixed window of `window` seconds.
Windows are aligned to the Unix epoch, so the window of an instant t is
floor(t / window) in every process.
"""

import math
import re
from dataclasses import dataclass

from .errors import InvalidLimit

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

# The counter of one slot has at most 24 bits (see fastlimit_ext/_table.pyx),
# and a window must fit the 32-bit field of the table's policy registry.
MAX_LIMIT = (1 << 24) - 1
MAX_WINDOW = (1 << 32) - 1

ALLOWED = (
    "use N/unit, N per unit or N/K units, where N and K are positive whole "
    "numbers and unit is second, minute, hour or day"
)

_POLICY = re.compile(
    r"""
    ^\s*
    (?P<limit>[0-9]+)
    \s*(?:/|\s[Pp][Ee][Rr]\s)\s*
    (?:(?P<count>[0-9]+)\s*)?
    (?P<unit>[A-Za-z]+)
    \s*$
    """,
    re.VERBOSE,
)
_SEPARATORS = re.compile(r"[;,|]")


@dataclass(frozen=True)
class Policy:
    """A limit of `limit` cost units per window of `window` seconds."""

    limit: int
    window: float

    def __post_init__(self):
        for name in ("limit", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Policy {name} must be a number, not {value!r}")
        for name in ("limit", "window"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidLimit(f"invalid {name} {value!r}: use a finite number")
        if isinstance(self.limit, float) and not self.limit.is_integer():
            raise InvalidLimit(f"invalid limit {self.limit!r}: use a whole number")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidLimit(
                f"invalid limit {self.limit!r}: use 1 to {MAX_LIMIT}"
            )
        if self.window != int(self.window) or not 1 <= self.window <= MAX_WINDOW:
            raise InvalidLimit(
                f"invalid window {self.window!r}: use a whole number of seconds "
                f"from 1 to {MAX_WINDOW}"
            )
        object.__setattr__(self, "limit", int(self.limit))
        object.__setattr__(self, "window", float(self.window))

    def __str__(self):
        seconds = int(self.window)
        for unit, size in reversed(UNIT_SECONDS.items()):
            if seconds % size == 0:
                count = seconds // size
                if count == 1:
                    return f"{self.limit}/{unit}"
                return f"{self.limit}/{count} {unit}s"
        raise AssertionError("every window is a whole number of seconds")


def _unit_seconds(text, unit):
    name = unit.lower()
    if name.endswith("s") and name[:-1] in UNIT_SECONDS:
        name = name[:-1]
    if name not in UNIT_SECONDS:
        raise InvalidLimit(
            f"invalid rate limit {text!r}: unknown unit {unit!r} "
            "(use second, minute, hour or day)"
        )
    return UNIT_SECONDS[name]


def parse(text):
    """Parse one rate limit such as "10/minute", "10 per minute" or "5/2 hours".

    Raises InvalidLimit (a ValueError) naming the text for anything else:
    an unknown unit, a missing, zero, negative or fractional number, or an
    empty string.
    """
    if not isinstance(text, str):
        raise TypeError(f"rate limit must be a str, not {type(text).__name__}")
    match = _POLICY.match(text)
    if match is None:
        raise InvalidLimit(f"invalid rate limit {text!r}: {ALLOWED}")
    for digits in (match["limit"], match["count"] or ""):
        if len(digits) > 20:
            raise InvalidLimit(
                f"invalid rate limit {text[:40]!r}...: the number is too large"
            )
    limit = int(match["limit"])
    count = int(match["count"]) if match["count"] is not None else 1
    if limit == 0 or count == 0:
        raise InvalidLimit(f"invalid rate limit {text!r}: {ALLOWED}")
    if limit > MAX_LIMIT:
        raise InvalidLimit(
            f"invalid rate limit {text!r}: at most {MAX_LIMIT} per window"
        )
    window = count * _unit_seconds(text, match["unit"])
    if window > MAX_WINDOW:
        raise InvalidLimit(
            f"invalid rate limit {text!r}: the window is longer than "
            f"{MAX_WINDOW} seconds"
        )
    return Policy(limit, float(window))


def parse_many(text):
    """Parse limits separated by ";", "," or "|", such as "10/second; 1000/hour".

    Returns a list of Policy in the order given. Raises InvalidLimit for an
    empty string or any part that parse() rejects.
    """
    if not isinstance(text, str):
        raise TypeError(f"rate limits must be a str, not {type(text).__name__}")
    if not text.strip():
        raise InvalidLimit(f"invalid rate limits {text!r}: the string is empty")
    parts = _SEPARATORS.split(text)
    if len(parts) == 1:
        return [parse(text)]
    policies = []
    for number, part in enumerate(parts, start=1):
        if not part.strip():
            raise InvalidLimit(
                f"invalid rate limits {text!r}: part {number} is empty "
                "(remove the extra separator)"
            )
        try:
            policies.append(parse(part))
        except InvalidLimit as exc:
            raise InvalidLimit(f"invalid rate limits {text!r}: {exc}") from None
    return policies
