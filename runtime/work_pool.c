#include "runtime/work_pool.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_THREADS 64

struct EgWorkPool {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    EgWork *head, *tail;
    size_t queued, running;
    int stopping;
    int n;
    pthread_t threads[MAX_THREADS];
};

static void *pool_main(void *arg) {
    EgWorkPool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->wake, &p->mu);
        if (!p->head) break; /* stopping, and nothing is left to run */
        EgWork *w = p->head;
        p->head = w->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        w->run(w);
        pthread_mutex_lock(&p->mu);
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

EgWorkPool *eg_work_pool_start(int n, EgError *err) {
    EgWorkPool *p = calloc(1, sizeof *p);
    if (!p) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->threads[p->n], NULL, pool_main, p) != 0) break;
        p->n++;
    }
    if (p->n == 0) {
        eg_fail(err, "cannot start a worker thread");
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

void eg_work_pool_submit(EgWorkPool *p, EgWork *work) {
    work->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = work;
    else
        p->head = work;
    p->tail = work;
    p->queued++;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

int eg_work_pool_threads(const EgWorkPool *p) {
    return p->n;
}

void eg_work_pool_counts(EgWorkPool *p, size_t *queued, size_t *running) {
    pthread_mutex_lock(&p->mu);
    *queued = p->queued;
    *running = p->running;
    pthread_mutex_unlock(&p->mu);
}

void eg_work_pool_stop(EgWorkPool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
