#include "server/metrics.h"

#include <string.h>

/* Latencies from a cached caption on a GPU (milliseconds) to long answers on a CPU (minutes). */
const double eg_metrics_seconds_bounds[EG_METRICS_SECONDS_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
/* Prompt and answer lengths, up to long contexts. */
const double eg_metrics_tokens_bounds[EG_METRICS_TOKENS_BUCKETS] = {1,    4,    16,    64,   256,
                                                                    1024, 4096, 16384, 65536};

static double from_bits(unsigned long long b) {
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static unsigned long long to_bits(double v) {
    unsigned long long b;
    memcpy(&b, &v, sizeof b);
    return b;
}

void eg_histogram_observe(EgHistogram *h, const double *bounds, int n_bounds, double v) {
    if (!(v >= 0)) v = 0; /* NaN or negative: a clock step; counted in the first bucket */
    int i = 0;
    while (i < n_bounds && v > bounds[i])
        i++;
    unsigned long long old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
}

double eg_histogram_sum(const EgHistogram *h) {
    return from_bits(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

void eg_metrics_observe(EgMetrics *m, int method, grpc_status_code code, int generation,
                        double total_s, double ttft_s, double queue_s, uint32_t prompt_tokens,
                        uint32_t generated_tokens) {
    if (method < 0 || method >= EG_METRICS_METHODS) return;
    int c = code >= 0 && code < EG_METRICS_CODES ? (int)code : 2 /* UNKNOWN */;
    atomic_fetch_add_explicit(&m->requests[method][c], 1, memory_order_relaxed);
    if (generation < 0 || generation > 1) return;
    const double *sb = eg_metrics_seconds_bounds, *tb = eg_metrics_tokens_bounds;
    enum { NS = EG_METRICS_SECONDS_BUCKETS, NT = EG_METRICS_TOKENS_BUCKETS };
    eg_histogram_observe(&m->total[generation], sb, NS, total_s);
    if (code != GRPC_STATUS_OK) return;
    if (generated_tokens) eg_histogram_observe(&m->ttft[generation], sb, NS, ttft_s);
    eg_histogram_observe(&m->queue[generation], sb, NS, queue_s);
    eg_histogram_observe(&m->prompt_tokens[generation], tb, NT, prompt_tokens);
    eg_histogram_observe(&m->generated_tokens[generation], tb, NT, generated_tokens);
}
