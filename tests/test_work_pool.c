/* runtime/work_pool.h: every item runs exactly once, on the pool's threads, several at once;
 * stopping runs what is still queued; an item may resubmit itself from its run function. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#include "runtime/work_pool.h"
#include "test_util.h"

typedef struct Item {
    EgWork work;
    atomic_int runs;
    pthread_t ran_on;
} Item;

static pthread_t main_thread;

static void count_run(EgWork *w) {
    Item *it = (Item *)(void *)((char *)w - offsetof(Item, work));
    it->ran_on = pthread_self();
    atomic_fetch_add(&it->runs, 1);
}

/* Waits (bounded) until its partner has started too: finishes only when two items run at
 * once, which one thread alone could never do. */
typedef struct Meet {
    EgWork work;
    atomic_int *arrived;
    atomic_int met;
} Meet;

static void meet_run(EgWork *w) {
    Meet *m = (Meet *)(void *)((char *)w - offsetof(Meet, work));
    atomic_fetch_add(m->arrived, 1);
    for (int i = 0; i < 20000 && atomic_load(m->arrived) < 2; i++) /* at most 20 s */
        usleep(1000);
    atomic_store(&m->met, atomic_load(m->arrived) >= 2);
}

typedef struct Again {
    EgWork work;
    EgWorkPool *pool;
    atomic_int left;
} Again;

static void again_run(EgWork *w) {
    Again *a = (Again *)(void *)((char *)w - offsetof(Again, work));
    if (atomic_fetch_sub(&a->left, 1) > 1) eg_work_pool_submit(a->pool, &a->work);
}

int main(void) {
    main_thread = pthread_self();
    EgError err = {0};
    EgWorkPool *pool = eg_work_pool_start(2, &err);
    REQUIRE(pool != NULL, "start: %s", err.msg);
    CHECK(eg_work_pool_threads(pool) == 2, "%d threads", eg_work_pool_threads(pool));

    /* Two items that can only finish together: they run at the same time. */
    atomic_int arrived = 0;
    Meet meet[2];
    for (int i = 0; i < 2; i++) {
        meet[i] = (Meet){.work = {.run = meet_run}, .arrived = &arrived};
        eg_work_pool_submit(pool, &meet[i].work);
    }

    /* Many items, each run once, never on the submitting thread. */
    enum { N = 200 };
    static Item items[N];
    for (int i = 0; i < N; i++) {
        items[i] = (Item){.work = {.run = count_run}};
        eg_work_pool_submit(pool, &items[i].work);
    }
    Again again = {.work = {.run = again_run}, .pool = pool, .left = 5};
    eg_work_pool_submit(pool, &again.work);
    size_t queued = 0, running = 0;
    eg_work_pool_counts(pool, &queued, &running);
    CHECK(queued + running <= N + 3, "counts: %zu queued, %zu running", queued, running);
    eg_work_pool_stop(pool); /* runs what is queued, then joins */

    for (int i = 0; i < 2; i++)
        CHECK(atomic_load(&meet[i].met), "item %d never ran beside the other", i);
    int once = 0, elsewhere = 0;
    for (int i = 0; i < N; i++) {
        once += atomic_load(&items[i].runs) == 1;
        elsewhere += !pthread_equal(items[i].ran_on, main_thread);
    }
    CHECK(once == N, "%d of %d items ran exactly once", once, N);
    CHECK(elsewhere == N, "%d of %d items ran on a pool thread", elsewhere, N);
    CHECK(atomic_load(&again.left) == 0, "a resubmitting item has %d runs left",
          atomic_load(&again.left));

    /* Stopping an idle pool at once; a pool of one thread still runs everything in order. */
    pool = eg_work_pool_start(1, &err);
    REQUIRE(pool != NULL, "start: %s", err.msg);
    for (int i = 0; i < 10; i++) {
        items[i] = (Item){.work = {.run = count_run}};
        eg_work_pool_submit(pool, &items[i].work);
    }
    eg_work_pool_stop(pool);
    once = 0;
    for (int i = 0; i < 10; i++)
        once += atomic_load(&items[i].runs) == 1;
    CHECK(once == 10, "one thread: %d of 10 ran", once);
    eg_work_pool_stop(eg_work_pool_start(3, &err));
    return test_finish();
}
