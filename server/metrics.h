/* What the server counts per request for Prometheus (server/metrics_text.c renders it with the
 * counters that already exist: GetStats', the engine's, the scheduler's and the listener's).
 * Everything is a relaxed atomic, written where a request's log line is written
 * (eg_server_log) and read by the metrics endpoint's thread without any lock. */
#ifndef EGRET_METRICS_H
#define EGRET_METRICS_H

#include <grpc/status.h>
#include <stdatomic.h>
#include <stdint.h>

#define EG_METRICS_METHODS 13/* Method's M_COUNT (server/grpc_server_internal.h) */
#define EG_METRICS_CODES 17  /* grpc_status_code OK..UNAUTHENTICATED */

/* Bucket upper bounds (the +Inf bucket is implicit). */
#define EG_METRICS_SECONDS_BUCKETS 14
#define EG_METRICS_TOKENS_BUCKETS 9
extern const double eg_metrics_seconds_bounds[EG_METRICS_SECONDS_BUCKETS];
extern const double eg_metrics_tokens_bounds[EG_METRICS_TOKENS_BUCKETS];

/* A histogram's counts per bucket (not cumulative; [n_bounds] is +Inf; sized for the longest
 * bounds list) and its sum (a double's bits, added with compare-and-swap). */
typedef struct EgHistogram {
    _Atomic unsigned long long bucket[EG_METRICS_SECONDS_BUCKETS + 1];
    _Atomic unsigned long long sum_bits;
} EgHistogram;

/* Generation calls (Generate = 0, GenerateStream = 1) are the ones with latencies and tokens. */
typedef struct EgMetrics {
    _Atomic unsigned long long requests[EG_METRICS_METHODS][EG_METRICS_CODES];
    EgHistogram total[2], ttft[2], queue[2]; /* seconds */
    EgHistogram prompt_tokens[2], generated_tokens[2];
} EgMetrics;

void eg_histogram_observe(EgHistogram *h, const double *bounds, int n_bounds, double v);
double eg_histogram_sum(const EgHistogram *h);

/* One finished call: method index (Method), its status, and for generation calls (generation
 * 0 for Generate, 1 for GenerateStream, else -1) what it took: the total latency of every
 * generation call is observed; queue wait, prompt and generated tokens only for calls answered
 * OK, and time to first token only for those with a token. */
void eg_metrics_observe(EgMetrics *m, int method, grpc_status_code code, int generation,
                        double total_s, double ttft_s, double queue_s, uint32_t prompt_tokens,
                        uint32_t generated_tokens);

#endif
