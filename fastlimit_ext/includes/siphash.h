/*
 * SipHash (Aumasson and Bernstein, 2012) with a 128-bit key and a 64-bit
 * result, with the number of compression and finalisation rounds as
 * parameters.  The table hashes keys with SipHash-1-3, the variant CPython
 * uses for str hashing, keyed by a random seed stored in the table header:
 * every process that maps the table computes the same hash, and a client
 * that cannot read the file cannot choose keys that collide.
 */
#ifndef FASTLIMIT_SIPHASH_H
#define FASTLIMIT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t fl_rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t fl_read_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define FL_SIPROUND(v0, v1, v2, v3)                                         \
    do {                                                                    \
        v0 += v1; v1 = fl_rotl64(v1, 13); v1 ^= v0; v0 = fl_rotl64(v0, 32); \
        v2 += v3; v3 = fl_rotl64(v3, 16); v3 ^= v2;                         \
        v0 += v3; v3 = fl_rotl64(v3, 21); v3 ^= v0;                         \
        v2 += v1; v1 = fl_rotl64(v1, 17); v1 ^= v2; v2 = fl_rotl64(v2, 32); \
    } while (0)

static inline uint64_t fl_siphash(uint64_t k0, uint64_t k1,
                                  const void *data, size_t len,
                                  int c_rounds, int d_rounds)
{
    const unsigned char *in = (const unsigned char *)data;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
    uint64_t v3 = k1 ^ 0x7465646279746573ULL;
    size_t whole = len - (len % 8);
    uint64_t last = (uint64_t)len << 56;
    size_t i;
    int r;

    for (i = 0; i < whole; i += 8) {
        uint64_t m = fl_read_le64(in + i);
        v3 ^= m;
        for (r = 0; r < c_rounds; r++)
            FL_SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }

    /* The tail bytes fill the low end of the last word, little-endian. */
    for (i = 0; i < len % 8; i++)
        last |= (uint64_t)in[whole + i] << (8 * i);

    v3 ^= last;
    for (r = 0; r < c_rounds; r++)
        FL_SIPROUND(v0, v1, v2, v3);
    v0 ^= last;

    v2 ^= 0xff;
    for (r = 0; r < d_rounds; r++)
        FL_SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

static inline uint64_t fl_siphash13(uint64_t k0, uint64_t k1,
                                    const void *data, size_t len)
{
    return fl_siphash(k0, k1, data, len, 1, 3);
}

#endif /* FASTLIMIT_SIPHASH_H */
