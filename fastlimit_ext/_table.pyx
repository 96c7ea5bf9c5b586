# cython: language_level=3
"""The mapped counter table and the hot path of a rate limit check.

A table is one file of fixed size: a header (format, layout, a random hash
seed, the policy layouts in use and event counters) and an array of lines
of three counters each, mapped MAP_SHARED by every process that opens the
file.  The protocol on the lines is in includes/table.h.
"""

import errno
import numbers
import os
import secrets
import stat
import struct

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from .errors import TableError, TableFull


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL


# The fixed part of fl_header, in the byte order of this machine: a table
# file is only ever mapped on the machine that made it.
_HEADER = struct.Struct("=QIIQQII2QQ")

DEFAULT_SLOTS = 3 << 20
"""Counters in a new table: 3,145,728, a 32 MiB file."""

MAX_SLOTS = 3 << 36
SLOTS_PER_LINE = FL_SLOTS_PER_LINE
HEADER_SIZE = FL_HEADER_SIZE
LINE_SIZE = FL_LINE_SIZE
FORMAT_VERSION = FL_FORMAT_VERSION

cdef uint64_t NS_PER_SECOND = 1000000000ULL

# Each process adds its event counts to the block picked by its pid, so
# that processes rarely share a cache line.  Forked children pick again.
cdef int _stat_index = os.getpid() % FL_STAT_BLOCKS


def _pick_stat_block():
    global _stat_index
    _stat_index = os.getpid() % FL_STAT_BLOCKS


os.register_at_fork(after_in_child=_pick_stat_block)


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    # The splitmix64 finaliser: a bijection that spreads every input bit
    # over the output, so one keyed hash serves every policy of a key.
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline uint64_t _clock_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * NS_PER_SECOND + <uint64_t>ts.tv_nsec


cdef uint64_t _key_digest(Table table, object key) except? 0:
    # Hash the bytes of key with the table's seed.  A str counts as its
    # UTF-8 bytes; CPython caches those in the str, so nothing is
    # allocated for a str seen before, except one with lone surrogates.
    cdef const char *data
    cdef Py_ssize_t length
    cdef object encoded
    if PyUnicode_Check(key):
        try:
            data = PyUnicode_AsUTF8AndSize(key, &length)
        except UnicodeEncodeError:
            encoded = (<str>key).encode("utf-8", "surrogatepass")
            return fl_siphash13(table.header.seed[0], table.header.seed[1],
                                PyBytes_AS_STRING(encoded),
                                PyBytes_GET_SIZE(encoded))
    elif PyBytes_Check(key):
        data = PyBytes_AS_STRING(key)
        length = PyBytes_GET_SIZE(key)
    else:
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}")
    return fl_siphash13(table.header.seed[0], table.header.seed[1], data, length)


def lines_for(slots):
    """Return the number of lines a table of `slots` counters needs."""
    if isinstance(slots, bool) or not isinstance(slots, int):
        raise TypeError(f"slots must be an int, not {type(slots).__name__}")
    if not SLOTS_PER_LINE <= slots <= MAX_SLOTS:
        raise ValueError(
            f"invalid slots {slots}: use {SLOTS_PER_LINE} to {MAX_SLOTS}"
        )
    return -(-slots // SLOTS_PER_LINE)


def _table_error(code, path, reason):
    return TableError(code, f"table {path!r} {reason}", path)


def _create(path, slots):
    """Create the table file at path, or return None if another process did.

    The header is written to a private temporary file that is then linked
    to path, so the table appears complete or not at all, and exactly one
    of several processes creating it at once wins.
    """
    line_count = lines_for(slots)
    size = FL_HEADER_SIZE + line_count * FL_LINE_SIZE
    seed = secrets.token_bytes(16)
    header = _HEADER.pack(
        FL_MAGIC, FL_FORMAT_VERSION, FL_HEADER_SIZE, size, line_count,
        FL_SLOTS_PER_LINE, FL_LINE_SIZE,
        int.from_bytes(seed[:8], "little"), int.from_bytes(seed[8:], "little"),
        _clock_ns(),
    )
    directory, name = os.path.split(path)
    temporary = os.path.join(
        directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o600)
    except OSError as exc:
        raise _table_error(
            exc.errno, path, f"cannot be created: {exc.strerror}"
        ) from exc
    try:
        try:
            os.fchmod(fd, 0o600)
            # Reserve the blocks now: a sparse file on a full tmpfs would
            # raise SIGBUS at the first write to a new page instead.
            os.posix_fallocate(fd, 0, size)
            os.pwrite(fd, header, 0)
            os.link(temporary, path)
        except FileExistsError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise _table_error(
                exc.errno, path, f"cannot be created: {exc.strerror}"
            ) from exc
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
    return fd


def _open(path, slots, create, readonly):
    # O_NONBLOCK keeps a FIFO at path from blocking the open; the checks
    # after it reject anything that is not a regular file.
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    flags |= os.O_RDONLY if readonly else os.O_RDWR
    for _ in range(3):
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            if not create or readonly:
                raise _table_error(errno.ENOENT, path, "does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _table_error(
                    errno.ELOOP, path,
                    "is a symbolic link; give the path of the file itself",
                ) from None
            raise _table_error(
                exc.errno, path, f"cannot be opened: {exc.strerror}"
            ) from exc
        fd = _create(path, slots)
        if fd is not None:
            return fd
    raise _table_error(
        errno.EAGAIN, path, "keeps appearing and disappearing while opened"
    )


def _check(fd, path, readonly):
    """Validate an open table file; return (file size, line count)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _table_error(errno.EINVAL, path, "is not a regular file")
    if not readonly:
        if info.st_uid != os.geteuid():
            raise _table_error(
                errno.EPERM, path,
                f"belongs to uid {info.st_uid}, not to this process "
                f"(uid {os.geteuid()}); remove it or choose another path",
            )
        if info.st_mode & 0o022:
            raise _table_error(
                errno.EPERM, path,
                f"is writable by other users (mode {info.st_mode & 0o777:o}); "
                "it must be mode 600",
            )
    if info.st_size < FL_HEADER_SIZE:
        raise _table_error(
            errno.EINVAL, path,
            f"is truncated or not a table: {info.st_size} bytes, "
            f"less than the {FL_HEADER_SIZE}-byte header",
        )
    raw = os.pread(fd, _HEADER.size, 0)
    (magic, version, header_size, file_size, line_count, per_line, line_size,
     _seed0, _seed1, _created) = _HEADER.unpack(raw)
    if magic != FL_MAGIC:
        raise _table_error(errno.EINVAL, path, "is not a fastlimit table (bad magic)")
    if version != FL_FORMAT_VERSION:
        raise _table_error(
            errno.EINVAL, path,
            f"has format version {version}; this build reads version "
            f"{FL_FORMAT_VERSION}: remove the file to create a new table",
        )
    if (header_size != FL_HEADER_SIZE or per_line != FL_SLOTS_PER_LINE
            or line_size != FL_LINE_SIZE or line_count < 1
            or file_size != FL_HEADER_SIZE + line_count * FL_LINE_SIZE):
        raise _table_error(errno.EINVAL, path, "has an inconsistent header")
    if info.st_size != file_size:
        raise _table_error(
            errno.EINVAL, path,
            f"is truncated or extended: {info.st_size} bytes, the header "
            f"says {file_size}",
        )
    return file_size, line_count


cdef class Table:
    """A table file mapped into this process.

    Table(path, slots=DEFAULT_SLOTS, create=True, readonly=False) opens the
    file at path, creating it with `slots` counters when it is missing and
    create is true; `slots` is ignored for an existing file.  Raises
    TableError (an OSError) naming the path when the file is a symbolic
    link, not a table, truncated, of another format version, or not safe
    to share (owned by another user or writable by others).

    NOTE: a file truncated by someone else while mapped makes the next
    access raise SIGBUS; nothing in a process can prevent that.
    """

    def __cinit__(self, path, slots=DEFAULT_SLOTS, create=True, readonly=False):
        cdef void *base
        self.header = NULL
        self.lines = NULL
        self.path = os.fsdecode(os.fspath(path))
        self.readonly = readonly
        if create and not readonly:
            lines_for(slots)

        fd = _open(self.path, slots, create, readonly)
        try:
            size, line_count = _check(fd, self.path, readonly)
            prot = PROT_READ if readonly else PROT_READ | PROT_WRITE
            base = mmap(NULL, size, prot, MAP_SHARED, fd, 0)
            if base == MAP_FAILED:
                raise _table_error(errno.ENOMEM, self.path, "cannot be mapped")
        finally:
            os.close(fd)
        self.size = size
        self.line_count = line_count
        self.header = <fl_header *>base
        self.lines = <fl_line *>(<char *>base + FL_HEADER_SIZE)

    def __dealloc__(self):
        if self.header != NULL:
            munmap(self.header, self.size)

    def close(self):
        """Unmap the table; limiters on it raise ValueError afterwards."""
        if self.header != NULL:
            munmap(self.header, self.size)
            self.header = NULL
            self.lines = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def closed(self):
        return self.header == NULL

    @property
    def slots(self):
        """Number of counters: three per line."""
        return self.line_count * FL_SLOTS_PER_LINE

    @property
    def file_size(self):
        return self.size

    cdef fl_stats *stats_block(self):
        return <fl_stats *>(<char *>self.header + sizeof(fl_header)) + _stat_index

    cdef int class_for(self, uint64_t window_seconds,
                       uint64_t count_bits) except -1:
        # Find or register the layout (window, counter width) in the
        # header, so that any process can tell when an entry has expired.
        cdef uint64_t layout = window_seconds << 8 | count_bits
        cdef uint64_t seen
        cdef int index
        self._require_open()
        for index in range(1, FL_CLASSES):
            seen = fl_load_relaxed(&self.header.classes[index])
            if seen == 0:
                seen = 0
                if fl_cas(&self.header.classes[index], &seen, layout):
                    return index
            if seen == layout:
                return index
        raise TableFull(
            f"table {self.path!r} already holds {FL_CLASSES - 1} kinds of "
            "policy (window and limit size); use another table file"
        )

    def _require_open(self):
        if self.header == NULL:
            raise ValueError(f"table {self.path!r} is closed")

    def seed(self):
        """Return the 128-bit hash seed as two ints."""
        self._require_open()
        return self.header.seed[0], self.header.seed[1]

    def policy_layouts(self):
        """Return the registered (window seconds, counter bits) pairs."""
        self._require_open()
        layouts = []
        for index in range(1, FL_CLASSES):
            value = fl_load_relaxed(&self.header.classes[index])
            if value:
                layouts.append((value >> 8, value & 0xff))
        return layouts

    def stats(self, now=None):
        """Return counts of entries and events, summed over all processes.

        slots_used counts counters that belong to a key, live_keys those
        whose window has not ended at `now` (default: the clock).  The
        event counts are cumulative since the table was created.  Reading
        them scans the whole table: milliseconds per million counters.
        """
        cdef uint64_t used = 0
        cdef uint64_t live = 0
        cdef uint64_t now_ns
        cdef fl_stats *blocks
        self._require_open()
        now_ns = _clock_ns() if now is None else <uint64_t>(now * 1e9)
        fl_census(self.header, self.lines, self.line_count, now_ns, &used, &live)
        blocks = <fl_stats *>(<char *>self.header + sizeof(fl_header))
        totals = dict.fromkeys(
            ("allowed", "rejected", "inserts", "evictions", "full_events",
             "retries", "refunds", "probes"), 0)
        for index in range(FL_STAT_BLOCKS):
            totals["allowed"] += fl_load_relaxed(&blocks[index].allowed)
            totals["rejected"] += fl_load_relaxed(&blocks[index].rejected)
            totals["inserts"] += fl_load_relaxed(&blocks[index].inserts)
            totals["evictions"] += fl_load_relaxed(&blocks[index].evictions)
            totals["full_events"] += fl_load_relaxed(&blocks[index].full)
            totals["retries"] += fl_load_relaxed(&blocks[index].retries)
            totals["refunds"] += fl_load_relaxed(&blocks[index].refunds)
            totals["probes"] += fl_load_relaxed(&blocks[index].probes)
        result = {
            "path": self.path,
            "file_size": self.size,
            "slots": self.line_count * FL_SLOTS_PER_LINE,
            "lines": self.line_count,
            "slots_used": used,
            "live_keys": live,
            "fullness": <double>used / (self.line_count * FL_SLOTS_PER_LINE),
            "policy_layouts": len(self.policy_layouts()),
        }
        result.update(totals)
        return result


@cython.freelist(16)
cdef class Decision:
    """The outcome of one check against every policy of a limiter.

    allowed: whether the request may proceed.  limit, remaining,
    reset_after (seconds until the reported window ends, > 0) and policy
    describe the most restrictive policy: the one that rejected, or the
    one with the least budget left.  retry_after is 0 when allowed, else
    the seconds after which the same request can succeed.  now is the
    instant the decision was made for, in Unix seconds.
    """

    def __repr__(self):
        return (
            f"Decision(allowed={self.allowed}, limit={self.limit}, "
            f"remaining={self.remaining}, reset_after={self.reset_after:.3f}, "
            f"retry_after={self.retry_after:.3f}, policy={self.policy})"
        )

    def __bool__(self):
        return self.allowed


cdef inline uint64_t _now_ns(object now) except? 0:
    cdef double seconds
    if now is None:
        return _clock_ns()
    if isinstance(now, bool) or not isinstance(now, numbers.Real):
        raise TypeError(
            f"now must be a number of seconds, not {type(now).__name__}"
        )
    seconds = float(now)
    if not (seconds >= 0.0 and seconds < 9.2e9):
        raise ValueError(
            f"invalid now {now!r}: use Unix seconds from 0 to 9.2e9"
        )
    return <uint64_t>(seconds * 1e9)


cdef class LimiterCore:
    """The compiled part of fastlimit.Limiter: hit, peek and reset."""

    def __cinit__(self, *args, **kwargs):
        self._states = NULL
        self._count = 0
        self._policies = []

    def __dealloc__(self):
        if self._states != NULL:
            PyMem_Free(self._states)

    def _bind(self, Table table not None, list policies, bytes namespace,
              bint fail_closed):
        """Attach the policies (objects with int .limit and .window in
        whole seconds) to table; every policy is one entry per key."""
        cdef PolicyState *states
        cdef uint64_t seed0
        cdef uint64_t seed1
        cdef int index
        if table.readonly:
            raise ValueError(f"table {table.path!r} is open read-only")
        if not policies:
            raise ValueError("a limiter needs at least one policy")
        if not 1 <= len(policies) <= 64:
            raise ValueError("a limiter takes at most 64 policies")
        seed0, seed1 = table.seed()
        states = <PolicyState *>PyMem_Malloc(len(policies) * sizeof(PolicyState))
        if states == NULL:
            raise MemoryError()
        memset(states, 0, len(policies) * sizeof(PolicyState))
        try:
            seen = {}
            for index, policy in enumerate(policies):
                limit = int(policy.limit)
                window = int(policy.window)
                count_bits = limit.bit_length()
                if not 1 <= limit < (1 << FL_MAX_COUNT_BITS) or window < 1:
                    raise ValueError(f"policy {policy} is out of range")
                # Equal policies in one limiter are separate counters: the
                # occurrence number keeps their salts apart.
                text = f"{limit}/{window}"
                occurrence = seen.get(text, 0)
                seen[text] = occurrence + 1
                salt_input = b"\0".join(
                    [b"fastlimit policy", namespace, text.encode(),
                     str(occurrence).encode()])
                states[index].salt = fl_siphash13(
                    seed0, seed1, <const char *>salt_input, len(salt_input))
                states[index].window_ns = window * NS_PER_SECOND
                states[index].key.cls = table.class_for(window, count_bits)
                states[index].key.count_bits = count_bits
                states[index].key.limit = limit
        except BaseException:
            PyMem_Free(states)
            raise
        if self._states != NULL:
            PyMem_Free(self._states)
        self._states = states
        self._count = len(policies)
        self._policies = list(policies)
        self._table = table
        self._fail_closed = fail_closed
        self._min_limit = min(int(policy.limit) for policy in policies)

    def hit(self, key, cost=1, now=None):
        """Count one request of `cost` units for key and return a Decision.

        key is str (counted as its UTF-8 bytes, lone surrogates allowed)
        or bytes, of any length.  now overrides the clock (Unix seconds).
        The request is counted only if every policy allows it.
        """
        return self._decide(key, cost, now, False)

    def peek(self, key, now=None):
        """Return the Decision that hit(key, 1, now) would make, counting
        nothing: remaining is what is left before this request."""
        return self._decide(key, 1, now, True)

    def refund(self, key, cost=1, now=None):
        """Give back `cost` that hit(key, cost, now) counted, in every policy.

        Pass the `now` of that decision (Decision.now) so that the refund
        goes to the windows the hit was counted in: a window that has ended
        since is left alone, and a count never goes below zero.  Use it to undo a hit that another check
        rejected, such as a second limiter on another key.
        """
        cdef uint64_t digest
        cdef uint64_t now_ns
        cdef uint64_t units
        cdef fl_entry_key entry
        cdef fl_line *line
        cdef int index
        table = self._require_table()
        digest = _key_digest(table, key)
        units = self._check_cost(cost)
        now_ns = _now_ns(now)
        for index in range(self._count):
            line = self._locate(table, digest, index, &entry)
            if fl_refund(line, &entry, now_ns // self._states[index].window_ns, units):
                fl_add_relaxed(&table.stats_block().refunds, 1)

    def reset(self, key):
        """Set the counts of key to zero in every policy."""
        cdef uint64_t digest
        cdef fl_entry_key entry
        cdef fl_line *line
        cdef int index
        table = self._require_table()
        digest = _key_digest(table, key)
        for index in range(self._count):
            line = self._locate(table, digest, index, &entry)
            fl_clear(line, &entry)

    @property
    def policies(self):
        return list(self._policies)

    @property
    def table(self):
        return self._table

    cdef Table _require_table(self):
        if self._table is None:
            raise ValueError("the limiter has no table")
        if self._table.header == NULL:
            raise ValueError(f"table {self._table.path!r} is closed")
        return self._table

    cdef fl_line *_locate(self, Table table, uint64_t digest, int index,
                          fl_entry_key *entry) noexcept:
        # Pick the line and tag of policy `index` for a key's digest: each
        # policy mixes in its own salt, so one keyed hash serves them all.
        cdef uint64_t hashed = _mix(digest ^ self._states[index].salt)
        entry[0] = self._states[index].key
        entry.tag = hashed & FL_TAG_MASK
        if entry.tag == 0:
            entry.tag = 1
        return &table.lines[(hashed >> 20) % table.line_count]

    cdef Decision _decide(self, object key, object cost, object now,
                          bint dry_run):
        cdef uint64_t units
        cdef uint64_t now_ns
        cdef uint64_t digest
        cdef uint64_t best_remaining
        cdef uint64_t remaining
        cdef uint64_t end_ns
        cdef double reset_after
        cdef double best_reset = 0.0
        cdef double retry_after = 0.0
        cdef int index
        cdef int best = -1
        cdef int rejected_at = -1
        cdef fl_entry_key entry
        cdef fl_line *line
        cdef fl_result results[64]
        cdef PolicyState *state
        cdef Table table
        cdef fl_stats *block
        cdef Decision decision
        cdef bint counting = not dry_run

        table = self._require_table()
        digest = _key_digest(table, key)
        if type(cost) is int and 1 <= <object>cost <= self._min_limit:
            units = cost
        else:
            units = self._check_cost(cost)
        now_ns = _now_ns(now)
        block = table.stats_block()

        for index in range(self._count):
            state = &self._states[index]
            line = self._locate(table, digest, index, &entry)
            fl_hit(line, table.header, &entry, now_ns // state.window_ns, now_ns,
                   units, not counting, block, &results[index])
            if results[index].status == FL_FULL:
                if self._fail_closed:
                    results[index].status = FL_REJECTED
                    results[index].count = entry.limit
                else:
                    # Let through uncounted: report the budget as unused.
                    results[index].status = FL_ALLOWED
                    results[index].count = units if counting else 0
            if results[index].status == FL_REJECTED and rejected_at < 0:
                rejected_at = index
                # Keep going without counting, to learn how long the other
                # policies would keep rejecting.
                counting = False

        if not dry_run:
            fl_add_relaxed(&block.probes, self._count)
            if rejected_at >= 0:
                self._refund(table, digest, rejected_at, units, results)
                fl_add_relaxed(&block.rejected, 1)
            else:
                fl_add_relaxed(&block.allowed, 1)

        # Report the policy that rejects longest, or the one with least left.
        best_remaining = <uint64_t>-1
        for index in range(self._count):
            state = &self._states[index]
            end_ns = (results[index].window + 1) * state.window_ns
            reset_after = (end_ns - now_ns) / 1e9
            # A key sharing a counter with another key (same line and tag)
            # can see a count above its own limit.
            if results[index].count < state.key.limit:
                remaining = state.key.limit - results[index].count
            else:
                remaining = 0
            if rejected_at >= 0:
                if results[index].status != FL_REJECTED:
                    continue
                if best < 0 or reset_after > retry_after:
                    best = index
                    retry_after = reset_after
                    best_reset = reset_after
                    best_remaining = remaining
            elif remaining < best_remaining or (
                    remaining == best_remaining and reset_after > best_reset):
                best = index
                best_remaining = remaining
                best_reset = reset_after

        decision = Decision.__new__(Decision)
        decision.allowed = rejected_at < 0
        decision.limit = self._states[best].key.limit
        decision.remaining = best_remaining
        decision.reset_after = best_reset
        decision.retry_after = retry_after
        decision.policy = self._policies[best]
        decision.now = now_ns / 1e9
        return decision

    cdef void _refund(self, Table table, uint64_t digest, int upto,
                      uint64_t units, fl_result *results):
        # Give back what the policies before the rejecting one counted.
        cdef fl_entry_key entry
        cdef fl_line *line
        cdef int index
        for index in range(upto):
            line = self._locate(table, digest, index, &entry)
            if fl_refund(line, &entry, results[index].window, units):
                fl_add_relaxed(&table.stats_block().refunds, 1)
            results[index].count -= units

    cdef uint64_t _check_cost(self, object cost) except 0:
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an int, not {type(cost).__name__}")
        if cost < 1:
            raise ValueError(f"invalid cost {cost}: use a whole number >= 1")
        if cost > self._min_limit:
            raise ValueError(
                f"invalid cost {cost}: larger than the limit {self._min_limit} "
                "of the strictest policy, so it could never pass"
            )
        return cost
