"""Limiter and its Decision, over the shared table."""

import os
import tempfile

from fastlimit_ext._table import DEFAULT_SLOTS, Decision, LimiterCore, Table

from .policy import Policy, parse_many

COMPILED = True
"""True when checks run in the compiled table (the only implementation:
a pure-Python table could not update shared memory atomically)."""

ON_FULL = ("allow", "reject")


def default_path():
    """Return the default table path: one file per user under /dev/shm
    where it exists (memory-backed), else in the temporary directory."""
    directory = "/dev/shm"
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        directory = tempfile.gettempdir()
    return os.path.join(directory, f"fastlimit-{os.geteuid()}.table")


def _policies(limits):
    if isinstance(limits, str):
        return parse_many(limits)
    if isinstance(limits, Policy):
        return [limits]
    try:
        policies = list(limits)
    except TypeError:
        raise TypeError(
            "limits must be a str such as '10/second; 1000/hour' or a list "
            f"of Policy, not {type(limits).__name__}"
        ) from None
    for policy in policies:
        if not isinstance(policy, Policy):
            raise TypeError(
                f"limits must contain Policy objects, not {type(policy).__name__}"
            )
    if not policies:
        raise ValueError("limits is empty: give at least one policy")
    return policies


class Limiter(LimiterCore):
    """Fixed-window rate limits whose counts are shared through a table file.

    Limiter(limits, path=None, slots=None, namespace="", on_full="allow",
            create=True)

    limits: a str such as "10/second; 1000/hour", a Policy, or a list of
    Policy.  A request is allowed only when every policy allows it.
    path: the table file, created if missing and opened if present;
    default default_path().  Every process that opens the same path shares
    the counts.  slots: counters in a new table (default 3,145,728: a
    32 MiB file); ignored when the file exists.  create=False raises
    TableError instead of creating a missing file.  namespace: separates the
    keys of limiters sharing one table, for example one per rule.
    on_full: what hit() decides for a key that finds its line of three
    counters full of keys whose windows have not ended: "allow" (the
    default: an undersized table then lets a few keys through instead of
    rejecting clients that did nothing) or "reject".  Both are counted in
    the statistics as full_events.

    hit(key, cost=1, now=None) -> Decision counts and decides,
    peek(key, now=None) decides without counting, reset(key) clears the
    counts of key; see LimiterCore.
    """

    def __init__(
        self, limits, path=None, slots=None, namespace="", on_full="allow", create=True
    ):
        policies = _policies(limits)
        if not isinstance(namespace, (str, bytes)):
            raise TypeError(
                f"namespace must be str or bytes, not {type(namespace).__name__}"
            )
        if on_full not in ON_FULL:
            raise ValueError(f"invalid on_full {on_full!r}: use 'allow' or 'reject'")
        if path is None:
            path = default_path()
        table = Table(path, DEFAULT_SLOTS if slots is None else slots, create=create)
        if isinstance(namespace, str):
            namespace = namespace.encode("utf-8", "surrogatepass")
        self._bind(table, policies, namespace, on_full == "reject")
        self.path = table.path
        self.namespace = namespace
        self.on_full = on_full

    def stats(self, now=None):
        """Return the statistics of the table (see table_stats)."""
        return self.table.stats(now)

    def close(self):
        """Unmap the table. Other limiters on the same Table close too."""
        self.table.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        limits = "; ".join(str(policy) for policy in self.policies)
        return f"Limiter({limits!r}, path={self.path!r})"


def table_stats(path, now=None):
    """Return the statistics of the table file at path, opened read-only.

    Keys: path, file_size, slots, lines, slots_used, live_keys, fullness,
    policy_layouts, and the cumulative event counts allowed, rejected,
    inserts, evictions, full_events, retries, refunds and probes.
    """
    with Table(path, create=False, readonly=True) as table:
        return table.stats(now)


__all__ = ["COMPILED", "Decision", "Limiter", "default_path", "table_stats"]
