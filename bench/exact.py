"""The exactness check: did the server allow exactly what its limit allows?

A fixed-window limit of L per W seconds allows, for one key, the first
min(L, n) of the n requests decided in one window. Windows are aligned to
the Unix epoch, so the window of a decision at time t is floor(t / W).
The client cannot see when the server decided, only that it was after the
request was sent (t0) and before its response arrived (t1). A request whose
[t0, t1] lies inside one window belongs to that window. A request whose
interval crosses one boundary may belong to either side, and only those
requests are allowed to move.

The check finds the assignment of the crossing requests that fits the
observed statuses best. The cost of a window is |ok - min(L, ok + rejected)|,
summed over the windows of a key, and the minimum is found by dynamic
programming over the key's windows in order. The state is how many of the
crossing 200s and 429s of the next boundary go right. For a fixed placement
of the 200s the cost is concave in the number of 429s that go right, so only
"all of them" and "none" need to be tried. A minimum of zero means the
limit held exactly, and anything else is a difference.

A request whose interval spans more than two windows (latency above W) is
counted as unresolved and fails the check rather than being guessed.
"""

import math
from dataclasses import asdict, dataclass


@dataclass
class KeyResult:
    """The check of one key: what the limit allows against what was seen."""

    key: str
    attempts: int
    allowed: int
    observed: int
    windows: int
    ambiguous: int
    unresolved: int
    late_allowed: int
    cost: int

    @property
    def exact(self):
        return self.cost == 0 and self.unresolved == 0 and self.late_allowed == 0


@dataclass
class Check:
    """The check of a whole run: one KeyResult per key, and their sums."""

    limit: int
    window: float
    keys: list

    @property
    def attempts(self):
        return sum(key.attempts for key in self.keys)

    @property
    def allowed(self):
        return sum(key.allowed for key in self.keys)

    @property
    def observed(self):
        return sum(key.observed for key in self.keys)

    @property
    def ambiguous(self):
        return sum(key.ambiguous for key in self.keys)

    @property
    def unresolved(self):
        return sum(key.unresolved for key in self.keys)

    @property
    def late_allowed(self):
        return sum(key.late_allowed for key in self.keys)

    @property
    def exact(self):
        return all(key.exact for key in self.keys)

    def to_dict(self):
        return {
            "limit": self.limit,
            "window": self.window,
            "exact": self.exact,
            "attempts": self.attempts,
            "allowed": self.allowed,
            "observed": self.observed,
            "ambiguous": self.ambiguous,
            "unresolved": self.unresolved,
            "late_allowed": self.late_allowed,
            "keys": [dict(asdict(key), exact=key.exact) for key in self.keys],
        }


class _Window:
    __slots__ = ("allowed_sent_at", "first_rejected_at", "ok", "rejected")

    def __init__(self):
        self.ok = 0
        self.rejected = 0
        self.first_rejected_at = math.inf
        self.allowed_sent_at = []


def check_key(key, sent, received, allowed, limit, window, slack=0.0):
    """Check one key's requests against a limit of `limit` per `window` s.

    `sent`, `received` and `allowed` are parallel sequences: the Unix time a
    request was sent, the time its response arrived, and whether it was
    allowed (200) rather than rejected (429). Leave out requests that got
    neither. `slack` widens every interval by that many seconds on both
    sides, for a server whose clock may lag the client's.
    """
    inside = {}
    crossing = {}
    unresolved = 0

    for t0, t1, ok in zip(sent, received, allowed):
        first = math.floor((t0 - slack) / window)
        last = math.floor((t1 + slack) / window)
        if first == last:
            bucket = inside.get(first)
            if bucket is None:
                bucket = inside[first] = _Window()
            if ok:
                bucket.ok += 1
                bucket.allowed_sent_at.append(t0 - slack)
            else:
                bucket.rejected += 1
                bucket.first_rejected_at = min(bucket.first_rejected_at, t1 + slack)
        elif last == first + 1:
            counts = crossing.setdefault(first, [0, 0])
            counts[0 if ok else 1] += 1
        else:
            unresolved += 1

    late_allowed = 0
    for bucket in inside.values():
        late_allowed += sum(
            1 for t in bucket.allowed_sent_at if t > bucket.first_rejected_at
        )

    cost, expected, count = _best_assignment(inside, crossing, limit)
    return KeyResult(
        key=key,
        attempts=len(sent),
        allowed=expected,
        observed=sum(1 for ok in allowed if ok),
        windows=count,
        ambiguous=sum(ok + rejected for ok, rejected in crossing.values()),
        unresolved=unresolved,
        late_allowed=late_allowed,
        cost=cost,
    )


def _choices(boundary):
    """Return the (200s, 429s) that may go right across one boundary."""
    if boundary is None:
        return [(0, 0)]
    ok, rejected = boundary
    sides = (0, rejected) if rejected else (0,)
    return [(right, rejects) for right in range(ok + 1) for rejects in sides]


def _best_assignment(inside, crossing, limit):
    """Return (cost, allowed, windows) of the best placement of crossing requests."""
    indexes = sorted(set(inside) | set(crossing) | {first + 1 for first in crossing})
    empty = _Window()

    # best maps a choice at the boundary left of the current window to
    # (cost, allowed) of the windows already placed.
    best = {(0, 0): (0, 0)}
    previous = None
    for index in indexes:
        bucket = inside.get(index, empty)
        incoming = crossing.get(index - 1) if previous == index - 1 else None
        if incoming is None:
            best = {(0, 0): min(best.values())}
        outgoing = crossing.get(index)
        out_ok, out_rejected = outgoing or (0, 0)

        following = {}
        for (in_ok, in_rejected), (cost, allowed) in best.items():
            for right_ok, right_rejected in _choices(outgoing):
                ok = bucket.ok + in_ok + out_ok - right_ok
                rejected = bucket.rejected + in_rejected + out_rejected - right_rejected
                window_allowed = min(limit, ok + rejected)
                candidate = (
                    cost + abs(ok - window_allowed),
                    allowed + window_allowed,
                )
                choice = (right_ok, right_rejected)
                if choice not in following or candidate < following[choice]:
                    following[choice] = candidate
        best = following
        previous = index

    cost, allowed = min(best.values())
    return cost, allowed, len(indexes)


def check(requests_by_key, limit, window, slack=0.0):
    """Check every key: `requests_by_key` maps a key to (sent, received, allowed)."""
    results = [
        check_key(key, *columns, limit=limit, window=window, slack=slack)
        for key, columns in requests_by_key.items()
    ]
    return Check(limit=limit, window=window, keys=results)
