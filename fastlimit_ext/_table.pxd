from libc.stdint cimport uint32_t, uint64_t


cdef extern from "table.h" nogil:
    const uint64_t FL_MAGIC
    enum:
        FL_FORMAT_VERSION
        FL_HEADER_SIZE
        FL_LINE_SIZE
        FL_SLOTS_PER_LINE
        FL_CLASSES
        FL_STAT_BLOCKS
        FL_TAG_MASK
        FL_MAX_COUNT_BITS
        FL_ALLOWED
        FL_REJECTED
        FL_FULL

    ctypedef struct fl_header:
        uint64_t magic
        uint32_t version
        uint32_t header_size
        uint64_t file_size
        uint64_t line_count
        uint32_t slots_per_line
        uint32_t line_size
        uint64_t seed[2]
        uint64_t created_ns
        uint64_t classes[64]

    ctypedef struct fl_stats:
        uint64_t allowed
        uint64_t rejected
        uint64_t inserts
        uint64_t evictions
        uint64_t full
        uint64_t retries
        uint64_t refunds
        uint64_t probes

    ctypedef struct fl_line:
        uint64_t ctl

    ctypedef struct fl_entry_key:
        uint64_t tag
        uint64_t cls
        uint64_t count_bits
        uint64_t limit

    ctypedef struct fl_result:
        int status
        uint64_t count
        uint64_t window

    void fl_hit(fl_line *line, const fl_header *h, const fl_entry_key *k,
                uint64_t window, uint64_t now_ns, uint64_t cost, int dry_run,
                fl_stats *st, fl_result *out)
    int fl_refund(fl_line *line, const fl_entry_key *k, uint64_t window,
                  uint64_t cost)
    void fl_clear(fl_line *line, const fl_entry_key *k)
    void fl_census(const fl_header *h, const fl_line *lines,
                   uint64_t line_count, uint64_t now_ns, uint64_t *used,
                   uint64_t *live)


cdef extern from "atomics.h" nogil:
    uint64_t fl_load_relaxed(const uint64_t *p)
    void fl_add_relaxed(uint64_t *p, uint64_t delta)
    int fl_cas(uint64_t *p, uint64_t *expected, uint64_t desired)


cdef extern from "siphash.h" nogil:
    uint64_t fl_siphash13(uint64_t k0, uint64_t k1, const void *data,
                          size_t length)


cdef struct PolicyState:
    uint64_t salt
    uint64_t window_ns
    fl_entry_key key


cdef class Table:
    cdef fl_header *header
    cdef fl_line *lines
    cdef size_t size
    cdef uint64_t line_count
    cdef readonly str path
    cdef readonly bint readonly

    cdef fl_stats *stats_block(self)
    cdef int class_for(self, uint64_t window_seconds,
                       uint64_t count_bits) except -1


cdef class Decision:
    cdef readonly bint allowed
    cdef readonly long long limit
    cdef readonly long long remaining
    cdef readonly double reset_after
    cdef readonly double retry_after
    cdef readonly object policy
    cdef readonly double now


cdef class LimiterCore:
    cdef Table _table
    cdef PolicyState *_states
    cdef int _count
    cdef list _policies
    cdef bint _fail_closed
    cdef uint64_t _min_limit

    cdef Decision _decide(self, object key, object cost, object now,
                          bint dry_run)
    cdef Table _require_table(self)
    cdef fl_line *_locate(self, Table table, uint64_t digest, int index,
                          fl_entry_key *entry) noexcept
    cdef void _refund(self, Table table, uint64_t digest, int upto,
                      uint64_t units, fl_result *results)
    cdef uint64_t _check_cost(self, object cost) except 0
