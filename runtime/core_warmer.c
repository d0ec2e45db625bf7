#include "runtime/core_warmer.h"

#include "runtime/clock.h"
#include "runtime/parallel.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct EgCoreWarmer {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int busy;            /* submissions in flight */
    atomic_uint_fast64_t until; /* spin until this CLOCK_MONOTONIC time (ns) at least */
    atomic_int stop;
    uint64_t linger_ns;
    unsigned n_threads;
    pthread_t threads[];
};

static int wanted(EgCoreWarmer *w) {
    return atomic_load_explicit(&w->busy, memory_order_acquire) > 0 ||
           eg_now_ns() < atomic_load_explicit(&w->until, memory_order_relaxed);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Spinning only with pauses would hold a core whenever the scheduler picks the spinner over a
 * runnable thread (rarely, at its tiny weight, but then for a whole time slice): prefill and
 * encode, long submissions, measured up to 40% slower. Yielding every ~0.25 ms bounds that
 * delay and keeps decode's gain; yielding every few microseconds lost a third of it. */
#define YIELD_EVERY_NS 250000u

static void *spin(void *arg) {
    EgCoreWarmer *w = arg;
    /* Lowest priority: any other runnable thread preempts this one. If the policy cannot be
     * set, spinning would steal time from the device's own workers: do nothing instead. */
    struct sched_param none = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &none) != 0) return NULL;
    pthread_mutex_lock(&w->lock);
    while (!atomic_load(&w->stop)) {
        if (!wanted(w)) {
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        uint64_t last_yield = eg_now_ns();
        while (!atomic_load_explicit(&w->stop, memory_order_relaxed) && wanted(w)) {
            for (int i = 0; i < 64; i++)
                cpu_relax();
            uint64_t t = eg_now_ns();
            if (t - last_yield >= YIELD_EVERY_NS) {
                sched_yield();
                last_yield = t;
            }
        }
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

EgCoreWarmer *eg_core_warmer_start(unsigned threads, unsigned linger_us) {
    if (threads == 0) return NULL;
    EgCoreWarmer *w = calloc(1, sizeof *w + threads * sizeof(pthread_t));
    if (!w) return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->linger_ns = (uint64_t)linger_us * 1000u;
    for (; w->n_threads < threads; w->n_threads++)
        if (pthread_create(&w->threads[w->n_threads], NULL, spin, w) != 0) break;
    if (w->n_threads == 0) {
        eg_core_warmer_stop(w);
        return NULL;
    }
    return w;
}

void eg_core_warmer_busy(EgCoreWarmer *w) {
    if (!w) return;
    if (atomic_fetch_add(&w->busy, 1) == 0) {
        /* Under the lock, so a spinner between its check and its wait cannot miss it. */
        pthread_mutex_lock(&w->lock);
        pthread_cond_broadcast(&w->wake);
        pthread_mutex_unlock(&w->lock);
    }
}

void eg_core_warmer_idle(EgCoreWarmer *w) {
    if (!w) return;
    atomic_store_explicit(&w->until, eg_now_ns() + w->linger_ns, memory_order_relaxed);
    atomic_fetch_sub(&w->busy, 1);
}

void eg_core_warmer_stop(EgCoreWarmer *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->stop, 1);
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

EgCoreWarmer *eg_core_warmer_start_default(void) {
    int cores = eg_online_cores(INT_MAX);
    unsigned threads = cores > 1 ? (unsigned)cores / 2 : 1, linger_us = 1000;
    const char *env = getenv("EGRET_CPU_SPIN");
    if (env && *env) {
        if (strcmp(env, "off") == 0) return NULL;
        char *end;
        threads = (unsigned)strtoul(env, &end, 10);
        if (*end == ':') linger_us = (unsigned)strtoul(end + 1, NULL, 10);
    }
    return eg_core_warmer_start(threads, linger_us);
}
