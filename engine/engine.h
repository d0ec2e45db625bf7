/* The engine behind the CLI and the gRPC service: a loaded model with its tokenizer and prompt
 * template, turning a request (interleaved text and image bytes, or few-shot examples plus a
 * query) into generated text. Every way a request can be wrong is answered with a status and a
 * message naming the part at fault; the engine stays usable after any of them. */
#ifndef EGRET_ENGINE_H
#define EGRET_ENGINE_H

#include "engine/generate.h"
#include "families/idefics/model.h"
#include "language/template.h"
#include "runtime/weight_loader.h"
#include "vision/image_decode.h"

typedef enum EgStatus {
    EG_STATUS_OK = 0,
    EG_STATUS_INVALID_ARGUMENT = 1,   /* the request is malformed: bad image, UTF-8, parameter */
    EG_STATUS_RESOURCE_EXHAUSTED = 2, /* over a configured limit */
    EG_STATUS_INTERNAL = 3,           /* the engine failed (device error, out of memory) */
    EG_STATUS_CANCELLED = 4,          /* the caller went away: a request dropped unrun
                                         (engine/scheduler.h), or whose image work it stopped
                                         (eg_engine_decode) */
    EG_STATUS_NOT_FOUND = 5           /* an example set the engine does not hold */
} EgStatus;

typedef struct EgEngineLimits {
    uint32_t max_images;     /* images per request (examples included); default 16 */
    uint32_t context_length; /* prompt + new tokens; default max_position_embeddings (2048) */
    uint32_t max_new_tokens; /* default 1024 */
    EgImageLimits image;     /* decoding limits, see vision/image_decode.h */
    /* The pixels one request's images may declare in all (width x height from their headers,
     * checked before anything is decoded); default EG_ENGINE_REQUEST_PIXELS_FACTOR x
     * image.max_pixels (200 M with the default per-image limit). */
    uint64_t max_request_pixels;
} EgEngineLimits;

#define EG_ENGINE_REQUEST_PIXELS_FACTOR 4

/* Reuse across requests (engine/image_cache.h, engine/prefix_cache.h). 0 takes the
 * default, a negative value turns the cache off. */
typedef struct EgEngineCaches {
    long image_cache_mb;       /* images' cross-attention keys/values; default 256 MiB */
    long prefix_cache_entries; /* sequences kept for prompts that start the same; default 4 */
    long prefix_cache_mb;      /* their KV caches' device memory; default 1024 MiB */
    /* Example sets (below): the memory they hold together, pinned image features and prefixes
     * and the pairs themselves (default 512 MiB), and how many may be held (default 64). */
    long example_sets_mb;
    long max_example_sets;
} EgEngineCaches;

typedef struct EgEngineOptions {
    EgModelOptions model;
    EgEngineLimits limits; /* zero fields take the defaults */
    EgEngineCaches caches;
    /* Prompt tokens fed per eg_engine_step (chunked prefill): a long prompt is split so that
     * the requests already decoding keep getting tokens. 0: the default, 256. */
    uint32_t prefill_chunk;
    /* A template file (--template) over the folder's egret_template.json and the built-ins
     * (language/template.h eg_template_choose). NULL: none. */
    const char *template_path;
} EgEngineOptions;

/* A loaded model with its tokenizer, template, limits and caches. Opaque: callers see it through
 * the functions below. */
typedef struct EgEngine EgEngine;

EgEngine *eg_engine_open(const char *model_dir, const EgEngineOptions *opt, EgError *err);
void eg_engine_close(EgEngine *e);

/* What the engine serves, fixed once it is open (GetModelInfo). Strings live as long as the
 * engine. */
typedef struct EgEngineInfo {
    const char *model_dir;
    const char *architecture; /* the config's "architectures" class */
    uint32_t image_size;      /* pixels per side the vision encoder takes */
    uint32_t vocab_size;      /* the language model's output width */
    const char *device;       /* the Vulkan device's name */
    const char *precision;    /* "fp16" or "fp32" */
    EgEngineLimits limits;    /* with the defaults filled in */
    uint32_t prefill_chunk;
    uint32_t max_batch;        /* the most sequences one eg_engine_step advances */
    const EgTemplate *prompt_template;
    const EgWeightReport *weights; /* the weights' format and device bytes by group */
} EgEngineInfo;
void eg_engine_describe(const EgEngine *e, EgEngineInfo *out);

/* Replaces the limits (zero fields keep the current ones; max_images stays within what the model
 * was opened for): for a server whose operator changes them, and for tests. Not while requests
 * are being checked on another thread. */
void eg_engine_set_limits(EgEngine *e, const EgEngineLimits *limits);

/* Empties the image and prefix caches and zeroes the counters of work done (images decoded,
 * cache hits and misses), keeping the pipelines warm: after a warm-up, whose requests are not
 * traffic. Only while no job exists, no example set is registered (refused: their pins live
 * in these caches) and no other thread reads the stats. -1 on failure; when out of memory the
 * engine must then be closed. */
int eg_engine_forget(EgEngine *e, EgError *err);

/* Counters, read at any time from any thread (GetStats). */
typedef struct EgEngineStats {
    uint64_t device_memory_bytes;
    int device_memory_is_host; /* a CPU device: its memory is the process's own */
    uint64_t images_decoded;   /* decoded and normalized since the start (cache misses) */
    uint64_t image_cache_hits, image_cache_misses, image_cache_entries, image_cache_bytes;
    uint64_t prefix_cache_hits, prefix_cache_misses, prefix_cache_tokens_reused,
        prefix_cache_entries, prefix_cache_bytes;
    uint64_t example_sets, example_set_bytes, example_sets_budget, max_example_sets;
    uint64_t example_set_device_bytes; /* pinned in the image and prefix caches */
    /* pipelines dispatched for the first time (a compile on CPU drivers); constant once the
     * server is warm (tools/serve_warmup.h) */
    uint64_t pipelines_first_used;
} EgEngineStats;
void eg_engine_stats(const EgEngine *e, EgEngineStats *out);

typedef struct EgRequestPart {
    int is_image;
    const char *text; /* UTF-8, not NUL-terminated */
    size_t text_len;
    const void *image; /* encoded PNG/JPEG/... bytes */
    size_t image_len;
} EgRequestPart;

typedef struct EgRequestExample {
    const void *image;
    size_t image_len;
    const char *text;
    size_t text_len;
} EgRequestExample;

typedef struct EgRequest {
    const EgRequestPart *parts; /* the prompt, or with examples the query (one image + text) */
    size_t n_parts;
    const EgRequestExample *examples;
    size_t n_examples;
    int use_template;     /* build the prompt from the model's template even with no examples
                             (zero-shot captioning); implied when there are examples */
    EgGenerateParams gen; /* with examples and no stop strings, the template's stops apply */
    /* An example set's id (NUL-terminated), in place of examples: the request is the set's
     * pairs followed by parts, as if they had been sent inline. NULL or "": none. */
    const char *example_set;
    /* With example_set: prepares the set (its images encoded, its prefix prefilled and kept)
     * with the set's first image as the query; parts are ignored and the request does not
     * count as a use of the set. */
    int example_set_warmup;
} EgRequest;

typedef struct EgRequestStats {
    uint32_t prompt_tokens, images;
} EgRequestStats;

EgStatus eg_engine_generate(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                            EgGenerateResult *out, EgRequestStats *stats, EgError *err);

/* The same in steps, so that one thread can run several requests together (continuous
 * batching, engine/scheduler.c):
 *   eg_engine_begin    checks and prepares a request (images, prompt, prefix reuse);
 *                      on OK *job is ready (it is eg_engine_admit, eg_engine_decode and
 *                      eg_engine_start below, in a row)
 *   eg_engine_step     advances up to EgFamilyInfo.max_batch jobs: first feeds prompts (at
 *                      most prefill_chunk tokens in all, in the order given), then moves every
 *                      job whose prompt is in by one token, in one batched forward; tokens
 *                      reach each job's callback; finished jobs are skipped. Returns -1 only
 *                      when the step itself could not run.
 *   eg_engine_end      the answer (or the job's failure) of a finished job; frees it
 * A job whose caller went away is ended with eg_engine_cancel, then eg_engine_end. */
typedef struct EgEngineJob EgEngineJob;
EgStatus eg_engine_begin(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                         EgEngineJob **job, EgRequestStats *stats, EgError *err);
int eg_engine_step(EgEngine *e, EgEngineJob *const *jobs, uint32_t k, EgError *err);
int eg_engine_job_finished(const EgEngineJob *job);
void eg_engine_cancel(EgEngineJob *job);
EgStatus eg_engine_end(EgEngineJob *job, EgGenerateResult *out, EgError *err);

/* eg_engine_begin in three steps, for a caller that keeps the CPU-heavy image work (decoding,
 * resizing, normalizing) off the thread that runs eg_engine_step:
 *   eg_engine_admit    on the engine's thread: everything but the pixels. The checks, every
 *                      image's header against the per-image limits and the request's pixel
 *                      budget, the image cache lookups, the prompt. On OK *job exists.
 *   eg_engine_decode   on any one thread, while no other touches the job: decodes and
 *                      normalizes the images the cache does not hold. stop(stop_user) (may be
 *                      NULL) is polled before each image and between rows of each resize; once
 *                      it returns non-zero the work ends and the job fails with
 *                      EG_STATUS_CANCELLED. Another failure names the image at fault.
 *   eg_engine_start    on the engine's thread: encodes the images (the device work) and starts
 *                      the generation; the job then goes to eg_engine_step. An image the cache
 *                      held at admission may have been evicted since: the job then needs pixels
 *                      again and goes back to eg_engine_decode.
 * A job that failed on the way is finished (eg_engine_job_finished); eg_engine_end says why. */
EgStatus eg_engine_admit(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                         EgEngineJob **job, EgRequestStats *stats, EgError *err);
int eg_engine_job_needs_pixels(const EgEngineJob *job);
void eg_engine_decode(EgEngineJob *job, int (*stop)(void *user), void *stop_user);
void eg_engine_start(EgEngineJob *job);

/* Example sets (engine/example_sets.c): few-shot pairs registered once under a content id, then
 * named by requests (EgRequest.example_set). A set's images are pinned in the image cache and its
 * templated prefix (every prompt token before the query) in the prefix cache, both outside those
 * caches' bounds and within the sets' own budget, so ordinary traffic never evicts them. They are
 * made by the first request using the set (eg_engine_example_set warm-up requests do it ahead).
 * Creating, reading and deleting sets may happen on any thread; requests naming a set hold it
 * (reference counted) from admission to their end, so a deleted set's requests finish with it
 * while later ones are NOT_FOUND. Device state is released on the engine's thread. */
#define EG_EXAMPLE_SET_ID_LEN 64 /* hex SHA-256 */

typedef struct EgExampleSetInfo {
    char id[EG_EXAMPLE_SET_ID_LEN + 1];
    char template_name[16];
    uint32_t n_pairs;
    uint32_t prefix_tokens;
    uint64_t bytes; /* charged against the budget: the pairs, pinned images and prefix */
    int ready;      /* images and prefix kept */
    uint64_t uses, hits;
    double created_unix_s, last_used_unix_s;
} EgExampleSetInfo;

/* Registers pairs laid out with template_name ("" or "model": the model's template). The id is
 * a hex SHA-256 of the template, the model's identity (config.json and template) and the pairs;
 * a set already held is not stored again (*created 0). expect_id (may be NULL): fail with
 * INVALID_ARGUMENT unless the id comes out as this (a set persisted for another model). The
 * pairs are checked as a request's examples are (UTF-8, no NUL, image headers and limits, room
 * for the query image within max_images and for a token within the context); over the budget or
 * the count limit is RESOURCE_EXHAUSTED with the figures. */
EgStatus eg_engine_example_set_create(EgEngine *e, const EgRequestExample *pairs, size_t n,
                                      const char *template_name, const char *expect_id,
                                      EgExampleSetInfo *info, int *created, EgError *err);
/* A set's description; with pairs (may be NULL), a malloc'd copy of its pairs (texts and
 * images, each pair's image and text in one block freed with the array: eg_example_pairs_free)
 * and *n_pairs. NOT_FOUND for an id not held. */
EgStatus eg_engine_example_set_get(EgEngine *e, const char *id, EgExampleSetInfo *info,
                                   EgRequestExample **pairs, size_t *n_pairs, EgError *err);
void eg_example_pairs_free(EgRequestExample *pairs, size_t n);
/* Every set held, in creation order (malloc'd *out, *n), and the bytes they hold. */
int eg_engine_example_sets_list(EgEngine *e, EgExampleSetInfo **out, size_t *n, EgError *err);
/* Forgets a set: NOT_FOUND when not held. */
EgStatus eg_engine_example_set_delete(EgEngine *e, const char *id, EgError *err);
/* On the engine's thread between requests: releases the device state of deleted sets no request
 * holds any more (eg_engine_admit and eg_engine_end do it too). */
void eg_engine_tidy(EgEngine *e);

#endif
