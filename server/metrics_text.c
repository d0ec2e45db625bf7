/* The Prometheus text exposition (format 0.0.4) of a server's metrics; docs/metrics.md lists
 * them. Counters that GetStats reports are read from the same atomics GetStats reads: there is
 * one count of everything. Nothing here takes a lock the engine's thread holds while it works
 * (the scheduler's counts take its queue lock, which the engine's thread drops before a step). */
#include "server/metrics_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/grpc_server_internal.h"

#ifndef EGRET_BUILD_VERSION
#define EGRET_BUILD_VERSION "unknown"
#endif

typedef struct Out {
    EgBuf *b;
    int failed;
} Out;

static void put(Out *o, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || eg_buf_append(o->b, line, (size_t)n)) o->failed = 1;
}

/* A label value: \, " and newlines escaped (the text format's rules), at most 200 bytes. */
static void label_value(char *out, size_t cap, const char *v) {
    size_t n = 0;
    for (; v && *v && n + 3 < cap && n < 200; v++) {
        if (*v == '\\' || *v == '"') {
            out[n++] = '\\';
            out[n++] = *v;
        } else if (*v == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *v;
        }
    }
    out[n] = '\0';
}

static void header(Out *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(Out *o, const char *name, const char *type, const char *help, double v) {
    header(o, name, type, help);
    put(o, "%s %.17g\n", name, v);
}

/* One histogram's series for one label set (labels: "" or `key="value"`). */
static void histogram(Out *o, const char *name, const char *labels, const EgHistogram *h,
                      const double *bounds, int n_bounds) {
    const char *sep = *labels ? "," : "";
    unsigned long long cum = 0;
    for (int i = 0; i <= n_bounds; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < n_bounds)
            put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i], cum);
        else
            put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, cum);
    }
    /* the count is the +Inf bucket as read here, so the two always agree */
    put(o, "%s_sum%s%s%s %.17g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
        eg_histogram_sum(h));
    put(o, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", cum);
}

static void generation_histograms(Out *o, const char *name, const char *help,
                                  const EgHistogram h[2], const double *bounds, int n_bounds) {
    header(o, name, "histogram", help);
    histogram(o, name, "method=\"Generate\"", &h[0], bounds, n_bounds);
    histogram(o, name, "method=\"GenerateStream\"", &h[1], bounds, n_bounds);
}

/* The process's start in seconds since the epoch, from /proc (stable across scrapes), else
 * the server's start. */
static double process_start_time(const EgServer *s) {
    double boot = 0, ticks = 0;
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lf", &boot) == 1) break;
    if (f) fclose(f);
    f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    /* field 22 (starttime), counted after the command's closing parenthesis */
    char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    long hz = sysconf(_SC_CLK_TCK);
    if (boot > 0 && p && sscanf(p, " %lf", &ticks) == 1 && hz > 0) return boot + ticks / hz;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9 - (eg_now_s() - s->started_at);
}

static uint64_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages_total = 0, pages_resident = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &pages_total, &pages_resident) != 2) pages_resident = 0;
        fclose(f);
    }
    return (uint64_t)pages_resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

int eg_server_metrics_text(EgServer *s, EgBuf *out) {
    Out o = {.b = out};
    const EgMetrics *m = &s->metrics;
    char a[256], b[256], c[256], d[256];

    header(&o, "egret_requests_total", "counter",
           "Calls answered, by method and gRPC status code (health checks not counted).");
    for (int i = 0; i < EG_METRICS_METHODS; i++)
        for (int k = 0; k < EG_METRICS_CODES; k++) {
            unsigned long long v = atomic_load_explicit(&m->requests[i][k], memory_order_relaxed);
            if (v)
                put(&o, "egret_requests_total{method=\"%s\",code=\"%s\"} %llu\n",
                    eg_server_method_name((Method)i), eg_grpc_status_name((grpc_status_code)k), v);
        }
    header(&o, "egret_generation_requests_total", "counter",
           "Generation calls by outcome, as GetStats counts them (ok; cancelled: cancelled, "
           "deadline exceeded or cut by draining; rejected: bad input or over a limit; failed: "
           "engine errors).");
    put(&o, "egret_generation_requests_total{outcome=\"ok\"} %llu\n", atomic_load(&s->n_ok));
    put(&o, "egret_generation_requests_total{outcome=\"cancelled\"} %llu\n",
        atomic_load(&s->n_cancelled));
    put(&o, "egret_generation_requests_total{outcome=\"rejected\"} %llu\n",
        atomic_load(&s->n_rejected));
    put(&o, "egret_generation_requests_total{outcome=\"failed\"} %llu\n",
        atomic_load(&s->n_failed));

    const double *sb = eg_metrics_seconds_bounds, *tb = eg_metrics_tokens_bounds;
    enum { NS = EG_METRICS_SECONDS_BUCKETS, NT = EG_METRICS_TOKENS_BUCKETS };
    generation_histograms(&o, "egret_request_duration_seconds",
                          "Generation calls from accepted to answered, any outcome.", m->total, sb,
                          NS);
    generation_histograms(&o, "egret_time_to_first_token_seconds",
                          "Generation calls answered OK with at least one token: accepted to "
                          "first token.",
                          m->ttft, sb, NS);
    generation_histograms(&o, "egret_queue_wait_seconds",
                          "Generation calls answered OK: time queued before the engine took them.",
                          m->queue, sb, NS);
    generation_histograms(&o, "egret_request_prompt_tokens",
                          "Generation calls answered OK: prompt tokens.", m->prompt_tokens, tb, NT);
    generation_histograms(&o, "egret_request_generated_tokens",
                          "Generation calls answered OK: generated tokens.", m->generated_tokens,
                          tb, NT);
    scalar(&o, "egret_generated_tokens_total", "counter",
           "Tokens generated, by calls of any outcome.", (double)atomic_load(&s->n_tokens));

    /* batch occupancy: engine steps by the number of requests they advanced */
    uint64_t steps[EG_BATCH_MAX + 1];
    eg_scheduler_steps_by_batch(s->sched, steps);
    uint32_t max_batch = eg_scheduler_max_batch(s->sched);
    header(&o, "egret_batch_occupancy", "histogram",
           "Engine steps by the number of requests each advanced together (at most max_batch).");
    unsigned long long cum = 0, weighted = 0;
    for (uint32_t k = 1; k <= EG_BATCH_MAX; k++) {
        cum += steps[k];
        weighted += (unsigned long long)k * steps[k];
        if (k <= max_batch) put(&o, "egret_batch_occupancy_bucket{le=\"%u\"} %llu\n", k, cum);
    }
    put(&o, "egret_batch_occupancy_bucket{le=\"+Inf\"} %llu\n", cum);
    put(&o, "egret_batch_occupancy_sum %llu\negret_batch_occupancy_count %llu\n", weighted, cum);
    scalar(&o, "egret_max_batch", "gauge", "Requests the engine decodes together at most.",
           max_batch);

    size_t queued = 0, running = 0, preparing = 0;
    eg_scheduler_counts(s->sched, &queued, &running, &preparing);
    scalar(&o, "egret_queue_depth", "gauge", "Generation requests waiting for the engine.",
           (double)queued);
    scalar(&o, "egret_queue_capacity", "gauge", "Requests that may wait (max_queue).",
           s->opt.max_queue);
    scalar(&o, "egret_running_requests", "gauge",
           "Requests on the engine, those whose images are being prepared included.",
           (double)running);
    scalar(&o, "egret_preparing_requests", "gauge",
           "Requests on the engine whose images the decode workers are preparing.",
           (double)preparing);
    scalar(&o, "egret_in_flight_requests", "gauge", "Generation calls not answered yet.",
           (double)atomic_load(&s->generate_calls));

    EgEngineStats es;
    eg_engine_stats(s->engine, &es);
    scalar(&o, "egret_images_decoded_total", "counter",
           "Request images decoded and normalized (cache hits are not).",
           (double)es.images_decoded);
    scalar(&o, "egret_image_cache_hits_total", "counter",
           "Images whose encoding came from the image cache.", (double)es.image_cache_hits);
    scalar(&o, "egret_image_cache_misses_total", "counter", "Images the image cache did not hold.",
           (double)es.image_cache_misses);
    scalar(&o, "egret_image_cache_entries", "gauge", "Images in the image cache.",
           (double)es.image_cache_entries);
    scalar(&o, "egret_image_cache_bytes", "gauge", "Device memory the image cache holds.",
           (double)es.image_cache_bytes);
    scalar(&o, "egret_prefix_cache_hits_total", "counter",
           "Prompts that reused a cached sequence's KV cache.", (double)es.prefix_cache_hits);
    scalar(&o, "egret_prefix_cache_misses_total", "counter", "Prompts that found no cached prefix.",
           (double)es.prefix_cache_misses);
    scalar(&o, "egret_prefix_cache_reused_tokens_total", "counter",
           "Prompt tokens not recomputed thanks to the prefix cache.",
           (double)es.prefix_cache_tokens_reused);
    scalar(&o, "egret_prefix_cache_entries", "gauge", "Sequences in the prefix cache.",
           (double)es.prefix_cache_entries);
    scalar(&o, "egret_prefix_cache_bytes", "gauge", "Device memory the prefix cache holds.",
           (double)es.prefix_cache_bytes);
    scalar(&o, "egret_example_sets", "gauge", "Example sets registered (CreateExampleSet).",
           (double)es.example_sets);
    scalar(&o, "egret_example_sets_limit", "gauge", "Example sets that may be registered at once.",
           (double)es.max_example_sets);
    scalar(&o, "egret_example_set_bytes", "gauge",
           "Memory the registered example sets are charged (their budget's unit).",
           (double)es.example_set_bytes);
    scalar(&o, "egret_example_set_budget_bytes", "gauge",
           "The example sets' memory budget (example_sets_mb).", (double)es.example_sets_budget);
    scalar(&o, "egret_device_memory_bytes", "gauge",
           "Device memory held (on CPU devices, part of the resident memory).",
           (double)es.device_memory_bytes);
    scalar(&o, "egret_pipelines_first_dispatched_total", "counter",
           "Pipelines run for the first time (CPU drivers compile then); constant after the "
           "warm-up.",
           (double)es.pipelines_first_used);
    scalar(&o, "egret_request_memory_bytes", "gauge",
           "Bytes held by decoded requests, queued or running.",
           (double)atomic_load(&s->request_bytes_held));
    scalar(&o, "egret_request_memory_budget_bytes", "gauge",
           "The request memory budget (request_memory_bytes).",
           (double)s->opt.request_memory_bytes);

    EgListenerStats ls;
    eg_listener_stats(s->listener, &ls);
    scalar(&o, "egret_connections", "gauge", "Connections Egret's listener holds (0 with TLS).",
           ls.live);
    scalar(&o, "egret_connections_closed_at_limit_total", "counter",
           "Connections refused or closed at max_connections.", (double)ls.closed_at_limit);
    scalar(&o, "egret_connections_timed_out_total", "counter",
           "Connections closed silent past the handshake timeout.", (double)ls.timed_out);
    scalar(&o, "egret_connection_accept_errors_total", "counter",
           "Failed accepts (out of descriptors); accepting paused and resumed.",
           (double)ls.accept_errors);

    scalar(&o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           (double)resident_bytes());
    scalar(&o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.", process_start_time(s));

    EgEngineInfo info;
    eg_engine_describe(s->engine, &info);
    header(&o, "egret_build_info", "gauge", "Egret's build: always 1, the labels say which.");
    label_value(a, sizeof a, EGRET_BUILD_VERSION);
    put(&o, "egret_build_info{version=\"%s\"} 1\n", a);
    header(&o, "egret_model_info", "gauge", "The model served: always 1, the labels say which.");
    label_value(a, sizeof a, s->model_name);
    label_value(b, sizeof b, info.architecture);
    label_value(c, sizeof c, info.device);
    label_value(d, sizeof d, info.precision);
    put(&o, "egret_model_info{model=\"%s\",architecture=\"%s\",device=\"%s\",precision=\"%s\"} 1\n",
        a, b, c, d);
    return o.failed ? -1 : 0;
}
