/* Monotonic time in seconds: what every duration in Egret is measured with (model load, time to
 * first token, queue time, drain deadlines, benchmarks). */
#ifndef EGRET_CLOCK_H
#define EGRET_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The same clock in nanoseconds, where a time must fit an integer atomic. */
static inline uint64_t eg_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double eg_now_s(void) {
    return (double)eg_now_ns() * 1e-9;
}

#endif
