/* A bounded load test of a running Egret server: N client threads, each with
 * its own channel, send a seeded random mix of valid streaming and unary requests, bad requests,
 * client cancellations and short deadlines for a time cap and/or a request cap, and check that
 * every call ends the way its kind allows:
 *
 *   valid                 OK with a complete answer (finish_reason set once, on the last message;
 *                         as many ids as usage.generated_tokens, at most max_new_tokens, exactly
 *                         max_new_tokens when the reason is LENGTH; valid UTF-8; one message for
 *                         Generate), and the same answer as any earlier identical request
 *   bad                   the status its defect calls for (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED
 *                         for max_new_tokens over the limit) with a message naming the defect
 *   cancelled by us       CANCELLED (or a complete answer when the stream ended first)
 *   short deadline        DEADLINE_EXCEEDED or a complete answer
 *   any                   RESOURCE_EXHAUSTED "queue is full" (overload)
 *
 * Anything else is a failure: another status, a reply that does not parse, a message after the
 * final one, and a call that does not end in time. Calls without a deadline of their own get
 * call_timeout_s as a safety deadline, so nothing can hang the tool; running into it counts as a
 * hang. Every call must also return within its deadline plus a margin.
 *
 * Around the load, GetStats: the baseline is taken after warm-up requests (the largest kind of
 * request of the mix, so the engine has allocated what it keeps); after the load the server gets
 * up to settle_s to show in_flight = queued = running = 0 and device memory outside the image and
 * prefix caches equal to the baseline (the caches are bounded and keep what traffic put in them),
 * and its resident set must be within host_memory_slack_bytes of the baseline.
 *
 * Images: a pool of 12 shapes-world scenes, drawn again and again (so identical requests recur
 * and the server's caches get hits), and for 30% of the valid requests a scene drawn for that
 * request alone (so the vision encoder keeps working and the image cache keeps evicting). */
#ifndef EGRET_GRPC_LOADTEST_H
#define EGRET_GRPC_LOADTEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/grpc_client.h"

typedef enum EgLoadKind {
    EG_LOAD_CAPTION,         /* GenerateStream: zero-shot caption with the template */
    EG_LOAD_FEW_SHOT,        /* GenerateStream: 1-2 examples and a query image */
    EG_LOAD_RAW,             /* GenerateStream: raw interleaved parts */
    EG_LOAD_UNARY,           /* Generate: one of the three above */
    EG_LOAD_CANCEL,          /* GenerateStream cancelled by the client after 1-3 messages */
    EG_LOAD_DEADLINE,        /* a valid request with a 0.05-0.5 s deadline */
    EG_LOAD_BAD_IMAGE,       /* undecodable image bytes: INVALID_ARGUMENT */
    EG_LOAD_BAD_UTF8,        /* invalid UTF-8 text: INVALID_ARGUMENT */
    EG_LOAD_BAD_TEMPERATURE, /* NaN, infinite or negative temperature: INVALID_ARGUMENT */
    EG_LOAD_BAD_MAX_NEW,     /* max_new_tokens over the server's limit: RESOURCE_EXHAUSTED */
    EG_LOAD_BAD_EMPTY,       /* no parts, or one empty text: INVALID_ARGUMENT */
    EG_LOAD_GARBAGE,         /* bytes that are no GenerateRequest: INVALID_ARGUMENT */
    EG_LOAD_N_KINDS
} EgLoadKind;

typedef enum EgLoadOutcome {
    EG_LOAD_OK,         /* a complete answer */
    EG_LOAD_CANCELLED,  /* CANCELLED, the client having cancelled */
    EG_LOAD_EXPIRED,    /* DEADLINE_EXCEEDED, the call having asked for a short deadline */
    EG_LOAD_REJECTED,   /* the status and message a bad request calls for */
    EG_LOAD_QUEUE_FULL, /* RESOURCE_EXHAUSTED "queue is full" */
    EG_LOAD_FAILED,     /* anything else (see the report's failure details) */
    EG_LOAD_N_OUTCOMES
} EgLoadOutcome;

const char *eg_loadtest_kind_name(EgLoadKind k);
const char *eg_loadtest_outcome_name(EgLoadOutcome o);

typedef struct EgLoadtestOptions {
    const char *target;     /* "host:port" or "unix:/path" */
    EgClientOptions client; /* TLS, API key */
    uint32_t clients;       /* concurrent client threads; 0: 32 */
    double duration_s;      /* time cap for starting requests: 0: 60 s; < 0: none (then
                               max_requests must be set). Calls started before it finish. */
    uint64_t max_requests;  /* request cap; 0: none */
    uint64_t seed;          /* the mix: request i is drawn from (seed, i) alone */
    double call_timeout_s;  /* safety deadline of calls that ask for none; 0: 120 s */
    double margin_s;        /* a call may end this long after its deadline; 0: 10 s */
    double settle_s;        /* how long the server may take to come back to its baseline; 0: 10 */
    uint64_t host_memory_slack_bytes; /* 0: 64 MiB (see grpc_loadtest.c) */
    FILE *progress;                   /* a line every 10 s while the load runs; NULL: quiet */
} EgLoadtestOptions;

/* A GetStats answer. */
typedef struct EgLoadtestServerStats {
    uint64_t requests_total, requests_ok, requests_cancelled, requests_rejected, requests_failed;
    uint32_t in_flight, queued, running;
    uint64_t generated_tokens, device_memory_bytes, host_memory_bytes;
    int device_memory_is_host; /* CPU devices: device memory is in host_memory_bytes too */
    double uptime_s;
    /* The caches' device memory is part of device_memory_bytes and varies with traffic (within
     * the caches' bounds): what must come back to the baseline is the memory outside them. */
    uint64_t image_cache_hits, image_cache_misses, image_cache_bytes;
    uint64_t prefix_cache_hits, prefix_cache_misses, prefix_cache_bytes;
} EgLoadtestServerStats;

/* device_memory_bytes less what the image and prefix caches hold. */
uint64_t eg_loadtest_device_memory_held(const EgLoadtestServerStats *s);

/* How much the resident set grew from `before` to `after`, less what the caches' growth
 * explains where device memory is host memory (CPU devices): the caches are bounded and keep
 * what traffic put in them, on the device as in the counts above. 0 if it shrank. */
uint64_t eg_loadtest_host_memory_growth(const EgLoadtestServerStats *before,
                                        const EgLoadtestServerStats *after);

typedef struct EgLoadtestPercentiles {
    uint64_t n;
    double p50, p99, max; /* seconds */
} EgLoadtestPercentiles;

enum { EG_LOADTEST_MAX_DETAILS = 40 };

typedef struct EgLoadtestReport {
    uint32_t clients;
    uint64_t seed;
    double elapsed_s; /* first call to the end of the last */
    uint64_t requests;
    uint64_t outcomes[EG_LOAD_N_KINDS][EG_LOAD_N_OUTCOMES];
    uint64_t by_outcome[EG_LOAD_N_OUTCOMES];
    uint64_t generated_tokens; /* in complete answers */
    double requests_per_s, answers_per_s, tokens_per_s;
    /* Complete answers: time to first token as the client saw it (streams; queueing included),
     * as the server reports it (usage.time_to_first_token_s, queueing excluded), the server's
     * usage.queue_s, and the client-side latency of the whole call. */
    EgLoadtestPercentiles ttft_client, ttft_server, queue_server, latency;
    uint64_t consistency_checks; /* answers compared with an earlier identical request's */
    EgLoadtestServerStats before, after;
    double settle_s; /* how long the server took to come back to its baseline */
    uint64_t failures;
    size_t n_details; /* the first EG_LOADTEST_MAX_DETAILS failures, described */
    char details[EG_LOADTEST_MAX_DETAILS][640];
} EgLoadtestReport;

/* Runs the load test. Returns 0 when it ran (failures, if any, are in out->failures and
 * out->details), -1 with err when it could not (no server, bad options, out of memory). */
int eg_loadtest_run(const EgLoadtestOptions *opt, EgLoadtestReport *out, EgError *err);

/* The report as text, and as one JSON object. */
void eg_loadtest_print(const EgLoadtestReport *r, FILE *f);
int eg_loadtest_print_json(const EgLoadtestReport *r, FILE *f);

#endif
