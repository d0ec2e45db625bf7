/* Shared by the engine's files: engine.c (opening, request checks and assembly) and
 * engine_job.c (running requests, alone or batched), the scheduler, and white-box tests. Not a
 * public interface: the server and the tools use engine/engine.h. */
#ifndef EGRET_ENGINE_INTERNAL_H
#define EGRET_ENGINE_INTERNAL_H

#include <stdatomic.h>

#include "engine/engine.h"
#include "engine/example_sets.h"
#include "engine/image_cache.h"
#include "engine/prefix_cache.h"
#include "language/prompt.h"

struct EgEngine {
    EgFamilyModel *model;
    EgTokenizer *tok;
    EgTemplate *tmpl;
    EgEngineLimits limits;
    EgImageCache *image_cache;
    EgPrefixCache *prefix_cache;
    EgExampleSets *example_sets;
    size_t image_cache_max_bytes, prefix_cache_max_entries, prefix_cache_max_bytes;
    float *step_logits; /* eg_engine_step's batched logits: [max batch][vocab], made once */
    uint32_t prefill_chunk;
    atomic_ullong images_decoded; /* images decoded and normalized (cache misses), any thread */
};

/* The one mapping from a failure's kind (runtime/error.h) to a status: over a limit or out of
 * device memory is RESOURCE_EXHAUSTED (the caller can ask for less); any other failure gets
 * `plain`, the status of where it happened (INVALID_ARGUMENT while a request's input is read,
 * INTERNAL while it runs). */
EgStatus eg_engine_status(const EgError *err, EgStatus plain);

/* Fills err and evaluates to the status, for `return INVALID(err, "...", ...)`. */
#define INVALID(err, ...) (eg_fail((err), __VA_ARGS__), EG_STATUS_INVALID_ARGUMENT)
#define NO_MEMORY(err) (eg_fail((err), "out of host memory"), EG_STATUS_INTERNAL)

/* The prompt parts in order, and the encoded images they refer to. */
typedef struct Assembled {
    EgPartList list;
    const void **images;
    size_t *image_lens;
    uint32_t n_images;
} Assembled;

/* Checks the request's parts (UTF-8, images, sizes, limits) and lays out the prompt, with the
 * template when there are examples. */
EgStatus eg_engine_assemble(EgEngine *e, const EgRequest *req, Assembled *a, EgError *err);
/* Reads every image's header: per-image limits and format errors name the image; the sizes
 * declared in all must fit limits.max_request_pixels. Nothing is decoded. */
EgStatus eg_engine_check_images(EgEngine *e, const Assembled *a, EgError *err);
/* Per token, the key of the image it attends to: the prompt's tokens, then n_extra generated
 * ones, which attend to the image the prompt's last token saw. A token before any image gets
 * `unimaged` (NULL: none; a key standing for all the request's images where the family says
 * such tokens read them all). */
const EgImageKey **eg_engine_token_image_keys(const EgPrompt *prompt, const EgImageKey *keys,
                                              const EgImageKey *unimaged, size_t n_extra);

/* Where each of a job's images stands before the job starts. */
enum { IMAGE_MISSING = 0, IMAGE_CACHED = 1, IMAGE_DECODED = 2 };

struct EgEngineJob {
    EgEngine *e;
    EgGenerateParams gen; /* the request's, with the template's stops when it has none */
    const char **stops;
    EgPrompt prompt;
    EgImageKey *keys;
    const EgImageKey **token_keys;
    EgFamilySeq *seq;
    EgGeneration *g; /* NULL until eg_engine_start */
    EgTokenCallback cb;
    void *user;
    /* Until the job starts: the request's images, where each stands (IMAGE_*: the cache's
     * answer at the last look, or decoded), and the decoded ones' pixels, image i at
     * [i][3][S][S]. */
    Assembled a;
    uint8_t *image_state;
    float *pixels;
    double t0;        /* eg_now_s() when the request arrived */
    double prepare_s; /* decoding and images: part of the time to first token */
    EgError err;      /* why the job failed */
    int failed;
    EgStatus fail_status;
    EgExampleSet *set; /* the example set the request names (held until the job is freed) */
    int set_warmup;
};

/* Ends a job that has not finished: eg_engine_end answers st, with j->err saying why. */
static inline void eg_engine_job_fail(EgEngineJob *j, EgStatus st) {
    j->failed = 1;
    j->fail_status = st;
}

#endif
