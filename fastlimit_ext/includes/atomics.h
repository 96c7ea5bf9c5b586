/*
 * 64-bit atomics on memory shared between processes.
 *
 * The table is one file mapped MAP_SHARED by every process that uses it, so
 * its counters are updated by several address spaces at once.  C11 atomics
 * are only guaranteed to work across processes when they are lock-free: a
 * lock-based fallback (libatomic's) keeps its locks in the memory of each
 * process, so two processes would each take their own lock and race.  The
 * static assertion below refuses to build on a target without lock-free
 * 64-bit atomics, instead of building a table that silently loses updates.
 *
 * Cython cannot declare _Atomic types, so these wrappers take plain
 * uint64_t pointers and cast them here, in one place.
 */
#ifndef FASTLIMIT_ATOMICS_H
#define FASTLIMIT_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2,
               "fastlimit needs lock-free 64-bit atomics to share memory "
               "between processes");
_Static_assert(sizeof(atomic_uint_least64_t) == sizeof(uint64_t),
               "atomic 64-bit words must have the size of plain ones");

#define FL_ATOMIC(p) ((_Atomic uint64_t *)(p))

/* Read a word that other processes update.  Acquire pairs with the release
 * of a successful compare-and-swap, so what was written before it is
 * visible too. */
static inline uint64_t fl_load(const uint64_t *p)
{
    return atomic_load_explicit(FL_ATOMIC(p), memory_order_acquire);
}

static inline void fl_store(uint64_t *p, uint64_t value)
{
    atomic_store_explicit(FL_ATOMIC(p), value, memory_order_release);
}

/* Replace *p by desired if it still contains *expected.  On failure *expected
 * receives the current value, so a retry loop need not reload it. */
static inline int fl_cas(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return atomic_compare_exchange_strong_explicit(
        FL_ATOMIC(p), expected, desired, memory_order_acq_rel,
        memory_order_acquire);
}

/* Statistics counters: only the total matters, not the order against
 * other memory, so relaxed ordering is enough. */
static inline void fl_add_relaxed(uint64_t *p, uint64_t delta)
{
    atomic_fetch_add_explicit(FL_ATOMIC(p), delta, memory_order_relaxed);
}

static inline uint64_t fl_load_relaxed(const uint64_t *p)
{
    return atomic_load_explicit(FL_ATOMIC(p), memory_order_relaxed);
}

#endif /* FASTLIMIT_ATOMICS_H */
