"""Rate limit response headers.

Three header sets, each of which can be switched off:

- "ratelimit": the `RateLimit-Policy` and `RateLimit` fields of
  draft-ietf-httpapi-ratelimit-headers-10, as Structured Field lists of
  String items with Integer parameters:

      RateLimit-Policy: "ip 100/second";q=100;w=1
      RateLimit: "ip 100/second";r=42;t=1

  q is the quota, w the window in seconds, r the remaining quota and t the
  seconds until the window resets, rounded up.
- "x-ratelimit": `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
  `X-RateLimit-Reset` (seconds until the window resets, rounded up).
- "retry-after": `Retry-After` on rejected requests, in whole seconds,
  rounded up and at least 1.

Nothing here depends on Sanic: the functions take decisions and return
header names and values as strings.
"""

import math

HEADER_SETS = ("ratelimit", "x-ratelimit", "retry-after")


def parse_header_sets(text):
    """Parse a comma-separated list of header set names into a frozenset.

    "" and "none" give the empty set. Raises ValueError naming an unknown
    set and listing the known ones.
    """
    names = [name.strip().lower() for name in text.split(",")]
    names = [name for name in names if name]
    if names == ["none"]:
        return frozenset()
    for name in names:
        if name not in HEADER_SETS:
            raise ValueError(
                f"invalid header set {name!r}: use {', '.join(HEADER_SETS)} "
                "or none, separated by commas"
            )
    return frozenset(names)


def seconds_until(delay):
    """Round a delay in seconds up to whole seconds, never below 0."""
    if delay <= 0:
        return 0
    return math.ceil(delay)


def retry_after_seconds(decision):
    """Return the Retry-After value of a rejected decision: at least 1."""
    return max(1, seconds_until(decision.retry_after))


def sf_string(text):
    """Serialise text as a Structured Field String (RFC 8941, section 3.3.3).

    A String contains printable ASCII only, so other characters are written as
    UTF-8 percent-escapes, and "%" itself as %25, to keep names distinct.
    """
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "%" or not " " <= char <= "~":
            escaped.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def policy_name(rule_name, policy):
    """Return the policy identifier used in both fields, as "ip 100/second"."""
    return f"{rule_name} {policy}"


def policy_field(named_policies):
    """Return the RateLimit-Policy value for (identifier, Policy) pairs."""
    items = [
        f"{sf_string(name)};q={policy.limit};w={int(policy.window)}"
        for name, policy in named_policies
    ]
    return ", ".join(items)


def ratelimit_field(name, decision):
    """Return the RateLimit value reporting one decision under its policy."""
    reset = seconds_until(decision.reset_after)
    return f"{sf_string(name)};r={decision.remaining};t={reset}"


def _ceil_seconds(delay):
    # seconds_until() inlined for the hot path.
    return math.ceil(delay) if delay > 0 else 0


class HeaderWriter:
    """Build the enabled header sets for a decision.

    `sets` is a collection of names from HEADER_SETS. The writer is made
    once per app, so the hot path only checks three booleans. `name_type`
    converts the header names once, for example to multidict.istr, which
    Sanic's header map stores without case-folding each name again.
    """

    __slots__ = ("sets", "ratelimit", "x_ratelimit", "retry_after", "_names")

    def __init__(self, sets=HEADER_SETS, name_type=str):
        unknown = set(sets) - set(HEADER_SETS)
        if unknown:
            raise ValueError(
                f"invalid header sets {sorted(unknown)!r}: use "
                f"{', '.join(HEADER_SETS)}"
            )
        self.sets = frozenset(sets)
        self.ratelimit = "ratelimit" in self.sets
        self.x_ratelimit = "x-ratelimit" in self.sets
        self.retry_after = "retry-after" in self.sets
        self._names = tuple(
            name_type(name)
            for name in (
                "RateLimit-Policy",
                "RateLimit",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Retry-After",
            )
        )

    def headers(self, decision, item, policies, rejected=False):
        """Return the header (name, value) pairs for a decision.

        `item` is the identifier of the decision's policy, already
        serialised with sf_string() because this runs on every request.
        `policies` is the RateLimit-Policy value for the route, from
        policy_field(). `rejected` adds Retry-After when that set is on.
        """
        names = self._names
        pairs = []
        reset = _ceil_seconds(decision.reset_after)
        remaining = decision.remaining
        if self.ratelimit:
            pairs.append((names[0], policies))
            pairs.append((names[1], f"{item};r={remaining};t={reset}"))
        if self.x_ratelimit:
            pairs.append((names[2], str(decision.limit)))
            pairs.append((names[3], str(remaining)))
            pairs.append((names[4], str(reset)))
        if rejected and self.retry_after:
            retry_after = max(1, _ceil_seconds(decision.retry_after))
            pairs.append((names[5], str(retry_after)))
        return pairs
