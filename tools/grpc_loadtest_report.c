/* The load test's report (grpc_loadtest.h): a table for people and one JSON object for tools. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "tools/grpc_loadtest.h"

static double mib(uint64_t b) {
    return (double)b / (1 << 20);
}

void eg_loadtest_print(const EgLoadtestReport *r, FILE *f) {
    fprintf(f, "load test: %u clients, seed %llu, %.1f s\n", r->clients,
            (unsigned long long)r->seed, r->elapsed_s);
    fprintf(f, "calls: %llu (%.2f/s); complete answers: %llu (%.2f/s), %llu tokens (%.1f/s)\n",
            (unsigned long long)r->requests, r->requests_per_s,
            (unsigned long long)r->by_outcome[EG_LOAD_OK], r->answers_per_s,
            (unsigned long long)r->generated_tokens, r->tokens_per_s);
    fprintf(f, "%-19s", "kind");
    for (int o = 0; o < EG_LOAD_N_OUTCOMES; o++)
        fprintf(f, " %17s", eg_loadtest_outcome_name((EgLoadOutcome)o));
    fputc('\n', f);
    for (int k = 0; k <= EG_LOAD_N_KINDS; k++) {
        fprintf(f, "%-19s", k < EG_LOAD_N_KINDS ? eg_loadtest_kind_name((EgLoadKind)k) : "all");
        for (int o = 0; o < EG_LOAD_N_OUTCOMES; o++)
            fprintf(
                f, " %17llu",
                (unsigned long long)(k < EG_LOAD_N_KINDS ? r->outcomes[k][o] : r->by_outcome[o]));
        fputc('\n', f);
    }
    const struct {
        const char *name;
        const EgLoadtestPercentiles *p;
    } rows[4] = {{"time to first token, client (streams, queueing included)", &r->ttft_client},
                 {"time to first token, server (usage, queueing excluded)", &r->ttft_server},
                 {"queue wait, server (usage.queue_s)", &r->queue_server},
                 {"latency, client (whole call)", &r->latency}};
    fprintf(f, "complete answers:\n");
    for (int i = 0; i < 4; i++)
        fprintf(f, "  %-58s p50 %7.3f s  p99 %7.3f s  max %7.3f s  (n=%llu)\n", rows[i].name,
                rows[i].p->p50, rows[i].p->p99, rows[i].p->max, (unsigned long long)rows[i].p->n);
    fprintf(f, "identical requests compared: %llu\n", (unsigned long long)r->consistency_checks);
    fprintf(f,
            "server after the load (%.1f s to settle): %u in flight, %u queued, %u running\n"
            "  device memory outside the caches %.3f MiB (baseline %.3f MiB); caches %.3f MiB "
            "(baseline %.3f MiB)\n"
            "  host memory %.1f MiB (baseline %.1f MiB, %+.1f MiB)\n",
            r->settle_s, r->after.in_flight, r->after.queued, r->after.running,
            mib(eg_loadtest_device_memory_held(&r->after)),
            mib(eg_loadtest_device_memory_held(&r->before)),
            mib(r->after.image_cache_bytes + r->after.prefix_cache_bytes),
            mib(r->before.image_cache_bytes + r->before.prefix_cache_bytes),
            mib(r->after.host_memory_bytes), mib(r->before.host_memory_bytes),
            mib(r->after.host_memory_bytes) - mib(r->before.host_memory_bytes));
    fprintf(f,
            "server counters during the load: %llu calls, %llu ok, %llu cancelled, %llu rejected, "
            "%llu failed, %llu tokens\n",
            (unsigned long long)(r->after.requests_total - r->before.requests_total),
            (unsigned long long)(r->after.requests_ok - r->before.requests_ok),
            (unsigned long long)(r->after.requests_cancelled - r->before.requests_cancelled),
            (unsigned long long)(r->after.requests_rejected - r->before.requests_rejected),
            (unsigned long long)(r->after.requests_failed - r->before.requests_failed),
            (unsigned long long)(r->after.generated_tokens - r->before.generated_tokens));
    fprintf(f,
            "server caches during the load: images %llu hits, %llu misses; prefixes %llu hits, "
            "%llu misses\n",
            (unsigned long long)(r->after.image_cache_hits - r->before.image_cache_hits),
            (unsigned long long)(r->after.image_cache_misses - r->before.image_cache_misses),
            (unsigned long long)(r->after.prefix_cache_hits - r->before.prefix_cache_hits),
            (unsigned long long)(r->after.prefix_cache_misses - r->before.prefix_cache_misses));
    fprintf(f, "failures: %llu\n", (unsigned long long)r->failures);
    for (size_t i = 0; i < r->n_details; i++)
        fprintf(f, "  %s\n", r->details[i]);
    if (r->failures > r->n_details)
        fprintf(f, "  (and %llu more)\n", (unsigned long long)(r->failures - r->n_details));
}

static cJSON *json_percentiles(const EgLoadtestPercentiles *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)p->n);
    cJSON_AddNumberToObject(o, "p50", p->p50);
    cJSON_AddNumberToObject(o, "p99", p->p99);
    cJSON_AddNumberToObject(o, "max", p->max);
    return o;
}

static cJSON *json_stats(const EgLoadtestServerStats *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "requests_total", (double)s->requests_total);
    cJSON_AddNumberToObject(o, "requests_ok", (double)s->requests_ok);
    cJSON_AddNumberToObject(o, "requests_cancelled", (double)s->requests_cancelled);
    cJSON_AddNumberToObject(o, "requests_rejected", (double)s->requests_rejected);
    cJSON_AddNumberToObject(o, "requests_failed", (double)s->requests_failed);
    cJSON_AddNumberToObject(o, "in_flight", s->in_flight);
    cJSON_AddNumberToObject(o, "queued", s->queued);
    cJSON_AddNumberToObject(o, "running", s->running);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)s->generated_tokens);
    cJSON_AddNumberToObject(o, "device_memory_bytes", (double)s->device_memory_bytes);
    cJSON_AddNumberToObject(o, "host_memory_bytes", (double)s->host_memory_bytes);
    cJSON_AddBoolToObject(o, "device_memory_is_host", s->device_memory_is_host);
    cJSON_AddNumberToObject(o, "uptime_s", s->uptime_s);
    cJSON_AddNumberToObject(o, "image_cache_hits", (double)s->image_cache_hits);
    cJSON_AddNumberToObject(o, "image_cache_misses", (double)s->image_cache_misses);
    cJSON_AddNumberToObject(o, "image_cache_bytes", (double)s->image_cache_bytes);
    cJSON_AddNumberToObject(o, "prefix_cache_hits", (double)s->prefix_cache_hits);
    cJSON_AddNumberToObject(o, "prefix_cache_misses", (double)s->prefix_cache_misses);
    cJSON_AddNumberToObject(o, "prefix_cache_bytes", (double)s->prefix_cache_bytes);
    cJSON_AddNumberToObject(o, "device_memory_held_bytes",
                            (double)eg_loadtest_device_memory_held(s));
    return o;
}

int eg_loadtest_print_json(const EgLoadtestReport *r, FILE *f) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return -1;
    cJSON_AddNumberToObject(o, "clients", r->clients);
    char seed[24]; /* a string: JSON numbers are doubles, seeds have 64 bits */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
    cJSON_AddStringToObject(o, "seed", seed);
    cJSON_AddNumberToObject(o, "elapsed_s", r->elapsed_s);
    cJSON_AddNumberToObject(o, "requests", (double)r->requests);
    cJSON_AddNumberToObject(o, "requests_per_s", r->requests_per_s);
    cJSON_AddNumberToObject(o, "answers_per_s", r->answers_per_s);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)r->generated_tokens);
    cJSON_AddNumberToObject(o, "tokens_per_s", r->tokens_per_s);
    cJSON *outcomes = cJSON_AddObjectToObject(o, "outcomes");
    for (int i = 0; i < EG_LOAD_N_OUTCOMES; i++)
        cJSON_AddNumberToObject(outcomes, eg_loadtest_outcome_name((EgLoadOutcome)i),
                                (double)r->by_outcome[i]);
    cJSON *kinds = cJSON_AddObjectToObject(o, "kinds");
    for (int k = 0; k < EG_LOAD_N_KINDS; k++) {
        cJSON *kk = cJSON_AddObjectToObject(kinds, eg_loadtest_kind_name((EgLoadKind)k));
        for (int i = 0; i < EG_LOAD_N_OUTCOMES; i++)
            cJSON_AddNumberToObject(kk, eg_loadtest_outcome_name((EgLoadOutcome)i),
                                    (double)r->outcomes[k][i]);
    }
    cJSON_AddItemToObject(o, "ttft_client_s", json_percentiles(&r->ttft_client));
    cJSON_AddItemToObject(o, "ttft_server_s", json_percentiles(&r->ttft_server));
    cJSON_AddItemToObject(o, "queue_server_s", json_percentiles(&r->queue_server));
    cJSON_AddItemToObject(o, "latency_s", json_percentiles(&r->latency));
    cJSON_AddNumberToObject(o, "consistency_checks", (double)r->consistency_checks);
    cJSON_AddItemToObject(o, "server_before", json_stats(&r->before));
    cJSON_AddItemToObject(o, "server_after", json_stats(&r->after));
    cJSON_AddNumberToObject(o, "settle_s", r->settle_s);
    cJSON_AddNumberToObject(o, "failures", (double)r->failures);
    cJSON *details = cJSON_AddArrayToObject(o, "failure_details");
    for (size_t i = 0; i < r->n_details; i++)
        cJSON_AddItemToArray(details, cJSON_CreateString(r->details[i]));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return -1;
    fprintf(f, "%s\n", text);
    free(text);
    return 0;
}
