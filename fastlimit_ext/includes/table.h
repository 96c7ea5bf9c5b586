/*
 * The layout of a table file and the lock-free protocol on its slots.
 *
 * Written in C because each step is a compare-and-swap loop on _Atomic
 * words, which Cython cannot express; _table.pyx calls these functions.
 *
 * File: an 8 KiB header (fl_header, then one fl_stats block per process
 * group) followed by line_count lines of 32 bytes.  A line is a control
 * word and three data words:
 *
 *   control   bits 0-59   three 20-bit tags, one per data word (0 = free)
 *             bits 60-63  a version, bumped by every change (ABA guard)
 *   entry     bits 58-63  class: index of the policy layout in the header,
 *                         never 0, so an entry is never the empty word 0
 *             bit  57     0
 *             bits 0-56   window index modulo 2^(57 - count_bits), then
 *                         the count in the low count_bits bits
 *   frozen    bit  57     1: the entry was evicted or is being evicted
 *             bits 0-19   the tag that owned it
 *
 * A (policy, key) pair hashes to one line and one tag.  The control word is
 * the only place that decides which data word belongs to which tag.  A tag
 * enters it only by a compare-and-swap from a value that did not contain
 * it, so a tag owns at most one data word per line, whatever the
 * interleaving.  Counting is a compare-and-swap on the data word alone,
 * after checking that the control word still gives the word to the tag.
 *
 * Evicting an expired entry takes two steps: freeze the data word (a CAS
 * that succeeds only if the entry is still expired), then hand its control
 * tag to the new key.  A frozen word can no longer be counted on, so a hit
 * on the old key cannot slip in between the two steps.  Any process that
 * meets a frozen word can finish the eviction, so a process killed between
 * the steps blocks no other process.  The data word a new owner finds is therefore
 * always empty or frozen, and it starts its count at zero.
 */
#ifndef FASTLIMIT_TABLE_H
#define FASTLIMIT_TABLE_H

#include <stdint.h>
#include <string.h>

#include "atomics.h"

#define FL_MAGIC 0x3142544c54534146ULL /* "FASTLTB1" read little-endian */
#define FL_FORMAT_VERSION 1
#define FL_HEADER_SIZE 8192
#define FL_LINE_SIZE 32
#define FL_SLOTS_PER_LINE 3
#define FL_CLASSES 64
#define FL_STAT_BLOCKS 64

#define FL_TAG_BITS 20
#define FL_TAG_MASK ((1ULL << FL_TAG_BITS) - 1)
#define FL_VERSION_SHIFT 60
#define FL_PAYLOAD_BITS 57
#define FL_PAYLOAD_MASK ((1ULL << FL_PAYLOAD_BITS) - 1)
#define FL_FROZEN (1ULL << 57)
#define FL_CLASS_SHIFT 58
#define FL_CLASS_MASK 0x3fULL
#define FL_MAX_COUNT_BITS 24

enum { FL_ALLOWED = 0, FL_REJECTED = 1, FL_FULL = 2 };

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t file_size;
    uint64_t line_count;
    uint32_t slots_per_line;
    uint32_t line_size;
    uint64_t seed[2];
    uint64_t created_ns;
    uint64_t reserved[56];
    /* classes[c] = window_seconds << 8 | count_bits; 0 = unused, and
     * class 0 is never handed out so that a data word of 0 is empty. */
    uint64_t classes[FL_CLASSES];
} fl_header;

/* Cumulative event counts of the processes whose pid maps to this block.
 * Blocks are cache-line sized so that processes do not share a line. */
typedef struct {
    uint64_t allowed;
    uint64_t rejected;
    uint64_t inserts;
    uint64_t evictions;
    uint64_t full;
    uint64_t retries;
    uint64_t refunds;
    uint64_t probes;
} fl_stats;

typedef struct {
    uint64_t ctl;
    uint64_t slot[FL_SLOTS_PER_LINE];
} fl_line;

_Static_assert(sizeof(fl_header) == 1024, "header layout changed");
_Static_assert(sizeof(fl_stats) == 64, "stats block must fill a cache line");
_Static_assert(sizeof(fl_line) == FL_LINE_SIZE, "line layout changed");
_Static_assert(1024 + FL_STAT_BLOCKS * sizeof(fl_stats) <= FL_HEADER_SIZE,
               "statistics do not fit the header");

/* What a policy needs to find and update its entry for one key. */
typedef struct {
    uint64_t tag;
    uint64_t cls;
    uint64_t count_bits;
    uint64_t limit;
} fl_entry_key;

typedef struct {
    int status;
    uint64_t count;  /* count of the window after the operation */
    uint64_t window; /* window index the count belongs to */
} fl_result;

static inline uint64_t fl_ctl_tag(uint64_t ctl, int i)
{
    return (ctl >> (i * FL_TAG_BITS)) & FL_TAG_MASK;
}

static inline uint64_t fl_ctl_with(uint64_t ctl, int i, uint64_t tag)
{
    uint64_t version = ((ctl >> FL_VERSION_SHIFT) + 1) & 0xf;
    ctl &= ~(FL_TAG_MASK << (i * FL_TAG_BITS));
    ctl |= tag << (i * FL_TAG_BITS);
    ctl &= ~(0xfULL << FL_VERSION_SHIFT);
    return ctl | (version << FL_VERSION_SHIFT);
}

static inline int fl_ctl_find(uint64_t ctl, uint64_t tag)
{
    int i;
    for (i = 0; i < FL_SLOTS_PER_LINE; i++)
        if (fl_ctl_tag(ctl, i) == tag)
            return i;
    return -1;
}

static inline uint64_t fl_frozen_tag(uint64_t w)
{
    return w & FL_TAG_MASK;
}

static inline uint64_t fl_frozen_word(uint64_t tag)
{
    return FL_FROZEN | tag;
}

static inline uint64_t fl_word_class(uint64_t w)
{
    return (w >> FL_CLASS_SHIFT) & FL_CLASS_MASK;
}

/* Return nonzero for a word that contains a count: neither empty nor frozen. */
static inline int fl_is_entry(uint64_t w)
{
    return w != 0 && !(w & FL_FROZEN);
}

static inline uint64_t fl_make_word(const fl_entry_key *k, uint64_t window,
                                    uint64_t count)
{
    uint64_t window_bits = FL_PAYLOAD_BITS - k->count_bits;
    uint64_t window_tag = window & ((1ULL << window_bits) - 1);
    return (k->cls << FL_CLASS_SHIFT) | (window_tag << k->count_bits) | count;
}

/* How the window stored in a word relates to the window of now. */
enum { FL_SAME = 0, FL_OLDER = 1, FL_AHEAD = 2 };

/* Compare a stored window, kept modulo 2^window_bits, with the full index
 * of the current window.  A stored window up to 1/16 of that range ahead is
 * a clock that stepped backwards: the entry keeps its count until its own
 * window ends, so a step back gives no budget back.  *ahead receives how
 * many windows ahead it is.  window_bits is at least 57 - 24 = 33, so the
 * range is 2^33 windows, 272 years of one-second windows: an entry idle for
 * that long would read as current. */
static inline int fl_compare_window(uint64_t payload, uint64_t count_bits,
                                    uint64_t window, uint64_t *ahead)
{
    uint64_t window_bits = FL_PAYLOAD_BITS - count_bits;
    uint64_t mask = (1ULL << window_bits) - 1;
    uint64_t stored = (payload >> count_bits) & mask;
    uint64_t behind = (window - stored) & mask;

    *ahead = 0;
    if (behind == 0)
        return FL_SAME;
    if (behind > mask - (mask >> 4)) {
        *ahead = (stored - window) & mask;
        return FL_AHEAD;
    }
    return FL_OLDER;
}

/* Return nonzero when an entry of any class can be evicted at now_ns: its
 * window has ended.  Entries of an unknown class are treated as expired. */
static inline int fl_expired(const fl_header *h, uint64_t word, uint64_t now_ns)
{
    uint64_t layout = fl_load_relaxed(&h->classes[fl_word_class(word)]);
    uint64_t window_ns = (layout >> 8) * 1000000000ULL;
    uint64_t count_bits = layout & 0xff;
    uint64_t ahead;

    if (layout == 0 || window_ns == 0 || count_bits > FL_MAX_COUNT_BITS)
        return 1;
    return fl_compare_window(word & FL_PAYLOAD_MASK, count_bits,
                             now_ns / window_ns, &ahead) == FL_OLDER;
}

/* Remove tag from data word i of the line unless the control word moved on,
 * then empty the frozen word it left, so that the same tag claiming the
 * word again does not take it for an eviction in progress.  Used when the
 * entry there is frozen: the first process to get here finishes the
 * eviction. */
static inline void fl_release(fl_line *line, int i, uint64_t tag)
{
    uint64_t ctl = fl_load(&line->ctl);
    uint64_t frozen = fl_frozen_word(tag);

    while (fl_ctl_tag(ctl, i) == tag) {
        if (fl_cas(&line->ctl, &ctl, fl_ctl_with(ctl, i, 0))) {
            fl_cas(&line->slot[i], &frozen, 0);
            return;
        }
    }
}

/* Return the data word that could be freed for a new tag, or -1 when every
 * data word holds an entry whose window has not ended.  *word receives the
 * word as read and *frozen the frozen word to put in its place. */
static inline int fl_find_victim(fl_line *line, const fl_header *h,
                                 uint64_t ctl, uint64_t now_ns,
                                 uint64_t *word, uint64_t *frozen)
{
    int i;

    for (i = 0; i < FL_SLOTS_PER_LINE; i++) {
        uint64_t owner = fl_ctl_tag(ctl, i);
        uint64_t seen = fl_load(&line->slot[i]);

        *word = seen;
        *frozen = fl_frozen_word(owner);
        if (seen == *frozen)
            return i; /* an eviction that its process did not finish */
        if (!fl_is_entry(seen))
            return i; /* the owner claimed the tag but has not counted yet */
        if (fl_expired(h, seen, now_ns))
            return i;
    }
    return -1;
}

/* Give tag a data word of the line, whose control word was seen as ctl
 * without it.  Returns the index, -1 when every data word contains an entry
 * whose window has not ended, or -2 when another process changed the line
 * first and the caller must look again. */
static inline int fl_claim(fl_line *line, const fl_header *h, uint64_t ctl,
                           uint64_t tag, uint64_t now_ns, fl_stats *st)
{
    uint64_t word, frozen;
    int i;

    for (i = 0; i < FL_SLOTS_PER_LINE; i++) {
        if (fl_ctl_tag(ctl, i) == 0) {
            if (!fl_cas(&line->ctl, &ctl, fl_ctl_with(ctl, i, tag)))
                return -2;
            fl_add_relaxed(&st->inserts, 1);
            return i;
        }
    }

    i = fl_find_victim(line, h, ctl, now_ns, &word, &frozen);
    if (i < 0)
        return -1;
    /* The words were read after ctl: if the control word changed since,
     * a word may belong to an owner that ctl does not show. */
    if (fl_load(&line->ctl) != ctl)
        return -2;
    if (word != frozen && !fl_cas(&line->slot[i], &word, frozen))
        return -2;
    if (!fl_cas(&line->ctl, &ctl, fl_ctl_with(ctl, i, tag)))
        return -2;
    fl_add_relaxed(&st->evictions, 1);
    return i;
}

/* Count cost against the entry of k in line for the window `window`
 * (the index of now for the policy), unless that would exceed the limit.
 * With dry_run nothing is written (peek).  Lock-free: every retry follows a
 * compare-and-swap that another process won. */
static inline void fl_hit(fl_line *line, const fl_header *h,
                          const fl_entry_key *k, uint64_t window,
                          uint64_t now_ns, uint64_t cost, int dry_run,
                          fl_stats *st, fl_result *out)
{
    out->window = window;
    out->count = 0;
    for (;;) {
        uint64_t ctl = fl_load(&line->ctl);
        int i = fl_ctl_find(ctl, k->tag);
        uint64_t word;

        if (i < 0) {
            if (dry_run) {
                uint64_t seen, frozen;
                int room = fl_ctl_find(ctl, 0) >= 0 ||
                           fl_find_victim(line, h, ctl, now_ns, &seen,
                                          &frozen) >= 0;
                out->status = !room              ? FL_FULL
                              : cost <= k->limit ? FL_ALLOWED
                                                 : FL_REJECTED;
                return;
            }
            i = fl_claim(line, h, ctl, k->tag, now_ns, st);
            if (i == -2) {
                fl_add_relaxed(&st->retries, 1);
                continue;
            }
            if (i == -1) {
                fl_add_relaxed(&st->full, 1);
                out->status = FL_FULL;
                return;
            }
        }

        word = fl_load(&line->slot[i]);
        for (;;) {
            uint64_t count = 0;
            uint64_t current = window;
            uint64_t ahead = 0;

            /* Reading the control word after the data word proves the word
             * is ours: handing it to another tag changes the control word
             * first, and an eviction after this check must freeze the
             * word, which fails our CAS. */
            if (fl_ctl_tag(fl_load(&line->ctl), i) != k->tag)
                break;
            if (word == fl_frozen_word(k->tag)) {
                /* Our entry expired and is being evicted: finish that and
                 * start again with a new entry. */
                fl_release(line, i, k->tag);
                break;
            }
            if (fl_is_entry(word)) {
                if (fl_word_class(word) != k->cls) {
                    /* Another policy's key with the same line and tag: the
                     * counter cannot serve both. */
                    if (!dry_run)
                        fl_add_relaxed(&st->full, 1);
                    out->status = FL_FULL;
                    return;
                }
                if (fl_compare_window(word & FL_PAYLOAD_MASK, k->count_bits,
                                      window, &ahead) != FL_OLDER)
                    count = word & ((1ULL << k->count_bits) - 1);
                current = window + ahead;
            }
            /* Otherwise the word is empty or frozen by a previous owner,
             * and our entry starts at zero. */

            out->window = current;
            out->count = count;
            if (count + cost > k->limit) {
                out->status = FL_REJECTED;
                return;
            }
            out->status = FL_ALLOWED;
            if (dry_run)
                return;
            if (fl_cas(&line->slot[i], &word,
                       fl_make_word(k, current, count + cost))) {
                out->count = count + cost;
                return;
            }
            fl_add_relaxed(&st->retries, 1);
        }
    }
}

/* Find the data word of k in line and read it with the control word
 * checked after it, as fl_hit does.  Returns the index or -1. */
static inline int fl_find_entry(fl_line *line, const fl_entry_key *k,
                                uint64_t *word)
{
    int i = fl_ctl_find(fl_load(&line->ctl), k->tag);

    if (i < 0)
        return -1;
    *word = fl_load(&line->slot[i]);
    if (fl_ctl_tag(fl_load(&line->ctl), i) != k->tag)
        return -1;
    if (!fl_is_entry(*word) || fl_word_class(*word) != k->cls)
        return -1;
    return i;
}

/* Give back cost counted in `window` by an earlier fl_hit, when a later
 * policy rejected the same request, down to zero at most.  Nothing happens
 * when the window has moved on or the entry was evicted: the count is gone
 * anyway.  Each retry
 * finds the entry again, because a failed CAS may mean it changed owner. */
static inline int fl_refund(fl_line *line, const fl_entry_key *k,
                            uint64_t window, uint64_t cost)
{
    for (;;) {
        uint64_t word, ahead, count;
        int i = fl_find_entry(line, k, &word);

        if (i < 0)
            return 0;
        count = word & ((1ULL << k->count_bits) - 1);
        if (count == 0)
            return 0;
        if (fl_compare_window(word & FL_PAYLOAD_MASK, k->count_bits, window,
                              &ahead) != FL_SAME)
            return 0;
        if (fl_cas(&line->slot[i], &word,
                   fl_make_word(k, window, count > cost ? count - cost : 0)))
            return 1;
    }
}

/* Set the count of the entry of k to zero, keeping its window. */
static inline void fl_clear(fl_line *line, const fl_entry_key *k)
{
    uint64_t count_mask = (1ULL << k->count_bits) - 1;

    for (;;) {
        uint64_t word;
        int i = fl_find_entry(line, k, &word);

        if (i < 0 || (word & count_mask) == 0)
            return;
        if (fl_cas(&line->slot[i], &word, word & ~count_mask))
            return;
    }
}

/* Count the data words that belong to a tag and those that hold an entry
 * whose window has not ended at now_ns, for the statistics. */
static inline void fl_census(const fl_header *h, const fl_line *lines,
                             uint64_t line_count, uint64_t now_ns,
                             uint64_t *used, uint64_t *live)
{
    uint64_t n, u = 0, l = 0;
    int i;

    for (n = 0; n < line_count; n++) {
        uint64_t ctl = fl_load_relaxed(&lines[n].ctl);
        for (i = 0; i < FL_SLOTS_PER_LINE; i++) {
            uint64_t word;
            if (fl_ctl_tag(ctl, i) == 0)
                continue;
            u++;
            word = fl_load_relaxed(&lines[n].slot[i]);
            if (fl_is_entry(word) && !fl_expired(h, word, now_ns))
                l++;
        }
    }
    *used = u;
    *live = l;
}

#endif /* FASTLIMIT_TABLE_H */
