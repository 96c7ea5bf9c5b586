/*
 * Stress the slot protocol of table.h with threads on one small table.
 *
 * Threads stand in for processes: they share the table memory exactly as
 * processes share the mapping.  The table is tiny, so lines overflow and
 * expired entries are evicted all the time.  Every window, the threads
 * wait at a barrier and then hit keys from a subset that changes with the
 * window.  Afterwards each (window, key) must have exactly
 * min(limit, attempts) hits allowed unless its line was full, and never
 * more than the limit.
 *
 * Build: cc -O2 -std=c11 -pthread -I fastlimit_ext/includes
 *        -DLINE_COUNT=2 -DKEY_COUNT=12 stress_table.c
 * Output: one line of totals; the exit status is 1 on any wrong count.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "table.h"

#ifndef LINE_COUNT
#define LINE_COUNT 2
#endif
#ifndef KEY_COUNT
#define KEY_COUNT 12
#endif
#define THREAD_COUNT 4
#define WINDOW_COUNT 3000
#define HITS_PER_WINDOW 40
#define LIMIT 3
#define NS 1000000000ULL

static unsigned char memory[FL_HEADER_SIZE + LINE_COUNT * FL_LINE_SIZE]
    __attribute__((aligned(64)));
static fl_header *header;
static fl_line *lines;
static pthread_barrier_t barrier;
static fl_stats stats[THREAD_COUNT];
static unsigned allowed[WINDOW_COUNT][KEY_COUNT];
static unsigned attempts[WINDOW_COUNT][KEY_COUNT];
static unsigned full[WINDOW_COUNT][KEY_COUNT];

/* Odd keys use a policy of 2-second windows, even keys 1-second windows,
 * so that evictions cross policy layouts. */
static uint64_t window_seconds(int key)
{
    return (key & 1) ? 2 : 1;
}

static void entry_key(int key, fl_entry_key *entry, int *line)
{
    uint64_t hash = (uint64_t)(key + 1) * 0x9e3779b97f4a7c15ULL;

    entry->tag = (hash >> 8) & FL_TAG_MASK;
    if (entry->tag == 0)
        entry->tag = 1;
    entry->cls = 1 + (key & 1);
    entry->count_bits = 2;
    entry->limit = LIMIT;
    *line = key % LINE_COUNT;
}

/* Whether key is hit in window: a subset that every thread agrees on. */
static int active(int key, int window)
{
    unsigned mix = (unsigned)(key * 2654435761u) ^ (unsigned)(window / 2) * 40503u;
    return mix % 3 == 0 || (key + window / 2) % 4 == 0;
}

static void *hammer(void *argument)
{
    int thread = (int)(long)argument;
    unsigned seed = 12345u + (unsigned)thread;
    int window;

    for (window = 0; window < WINDOW_COUNT; window++) {
        int hit;
        pthread_barrier_wait(&barrier);
        for (hit = 0; hit < HITS_PER_WINDOW; hit++) {
            fl_entry_key entry;
            fl_result result;
            int key, line, second;
            uint64_t now_ns, index;

            do
                key = rand_r(&seed) % KEY_COUNT;
            while (!active(key, window));
            entry_key(key, &entry, &line);
            now_ns = (uint64_t)window * NS + 1;
            index = now_ns / (window_seconds(key) * NS);
            fl_hit(&lines[line], header, &entry, index, now_ns, 1, 0,
                   &stats[thread], &result);

            second = (int)(index * window_seconds(key));
            __atomic_add_fetch(&attempts[second][key], 1, __ATOMIC_RELAXED);
            if (result.status == FL_ALLOWED)
                __atomic_add_fetch(&allowed[second][key], 1, __ATOMIC_RELAXED);
            if (result.status == FL_FULL)
                __atomic_add_fetch(&full[second][key], 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

int main(void)
{
    pthread_t threads[THREAD_COUNT];
    long exact = 0, wrong = 0, over = 0, with_full = 0;
    uint64_t evictions = 0, retries = 0;
    int thread, window, key;

    header = (fl_header *)memory;
    lines = (fl_line *)(memory + FL_HEADER_SIZE);
    header->classes[1] = (1ULL << 8) | 2;
    header->classes[2] = (2ULL << 8) | 2;
    pthread_barrier_init(&barrier, NULL, THREAD_COUNT);

    for (thread = 0; thread < THREAD_COUNT; thread++)
        pthread_create(&threads[thread], NULL, hammer, (void *)(long)thread);
    for (thread = 0; thread < THREAD_COUNT; thread++)
        pthread_join(threads[thread], NULL);

    for (window = 0; window < WINDOW_COUNT; window++) {
        for (key = 0; key < KEY_COUNT; key++) {
            unsigned expected = attempts[window][key] < LIMIT
                                    ? attempts[window][key]
                                    : LIMIT;
            if (attempts[window][key] == 0)
                continue;
            if (allowed[window][key] > LIMIT)
                over++;
            if (full[window][key]) {
                with_full++;
                continue;
            }
            if (allowed[window][key] == expected)
                exact++;
            else
                wrong++;
        }
    }
    for (thread = 0; thread < THREAD_COUNT; thread++) {
        evictions += stats[thread].evictions;
        retries += stats[thread].retries;
    }
    printf("exact %ld wrong %ld over %ld full %ld evictions %llu retries %llu\n",
           exact, wrong, over, with_full, (unsigned long long)evictions,
           (unsigned long long)retries);
    return wrong || over ? 1 : 0;
}
