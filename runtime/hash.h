/* Small non-cryptographic hashes shared across the project: the splitmix64 mix (seeding and
 * expanding random streams, generated weights, test data) and FNV-1a over bytes (hash tables,
 * comparing answers and images). For content keys that must not collide, see
 * engine/image_cache.c (SHA-256). */
#ifndef EGRET_HASH_H
#define EGRET_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The splitmix64 increment (2^64 / golden ratio): a stream's state advances by it. */
#define EG_SPLITMIX64_GAMMA 0x9e3779b97f4a7c15ull

/* splitmix64's output function: a bijective mix of z (Steele, Lea and Flood). */
static inline uint64_t eg_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* splitmix64 of x: the value a stream at state x gives (mix of x + gamma). */
static inline uint64_t eg_splitmix64(uint64_t x) {
    return eg_mix64(x + EG_SPLITMIX64_GAMMA);
}

/* The next value of a splitmix64 stream, advancing its state. */
static inline uint64_t eg_splitmix64_next(uint64_t *state) {
    return eg_mix64(*state += EG_SPLITMIX64_GAMMA);
}

/* FNV-1a over len bytes, continuing from h (EG_FNV1A_INIT to start). */
#define EG_FNV1A_INIT 0xcbf29ce484222325ull
static inline uint64_t eg_fnv1a(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#endif
