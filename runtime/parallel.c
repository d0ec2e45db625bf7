#include "runtime/parallel.h"

#include <pthread.h>
#include <unistd.h>

static int thread_limit; /* 0: none */

void eg_parallel_limit(int n) {
    thread_limit = n > 0 ? n : 0;
}

int eg_online_cores(int max) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (thread_limit && cores > thread_limit) cores = thread_limit;
    return cores < 1 ? 1 : cores > max ? max : (int)cores;
}

void eg_parallel_run(void *(*fn)(void *), void *args, size_t stride, int n) {
    pthread_t threads[EG_PARALLEL_MAX];
    int started[EG_PARALLEL_MAX] = {0};
    char *base = args;
    for (int i = 1; i < n && i < EG_PARALLEL_MAX; i++)
        started[i] = pthread_create(&threads[i], NULL, fn, base + (size_t)i * stride) == 0;
    for (int i = 0; i < n; i++)
        if (i >= EG_PARALLEL_MAX || !started[i]) fn(base + (size_t)i * stride);
    for (int i = 1; i < n && i < EG_PARALLEL_MAX; i++)
        if (started[i]) pthread_join(threads[i], NULL);
}
