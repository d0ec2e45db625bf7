/* Running one function on several threads at once (load-time work that the cores share:
 * generated weights, pipeline compilation). */
#ifndef EGRET_PARALLEL_H
#define EGRET_PARALLEL_H

#include <stddef.h>

/* The online cores, clamped to [1, max] and to eg_parallel_limit's limit. */
int eg_online_cores(int max);
/* At most n threads for the load-time work from now on (0: as many as there are cores): a
 * process-wide setting for tools (`egret quantize --threads`). */
void eg_parallel_limit(int n);

/* Calls fn(args + i·stride) for every part i < n, parts 1 .. EG_PARALLEL_MAX - 1 on threads of
 * their own and the rest (part 0, any part whose thread could not start, any past the maximum)
 * on the calling thread; returns when all are done. stride 0 hands every thread the same
 * argument (workers that take items from a shared counter). */
#define EG_PARALLEL_MAX 64
void eg_parallel_run(void *(*fn)(void *), void *args, size_t stride, int n);

#endif
