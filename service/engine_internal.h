/* Shared by the engine's files: engine.c (opening, request checks and assembly) and
 * engine_job.c (running requests, alone or batched). Not a public interface. */
#ifndef EGRET_ENGINE_INTERNAL_H
#define EGRET_ENGINE_INTERNAL_H

#include "language/prompt.h"
#include "service/engine.h"

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
/* Per token, the key of the image it attends to (NULL: none): the prompt's tokens, then n_extra
 * generated ones, which attend to the image the prompt's last token saw. */
const EgImageKey **eg_engine_token_image_keys(const EgPrompt *prompt, const EgImageKey *keys,
                                              size_t n_extra);

/* Where each of a job's images stands before the job starts. */
enum { IMAGE_MISSING = 0, IMAGE_CACHED = 1, IMAGE_DECODED = 2 };

struct EgEngineJob {
    EgEngine *e;
    EgGenerateParams gen; /* the request's, with the template's stops when it has none */
    const char **stops;
    EgPrompt prompt;
    EgImageKey *keys;
    const EgImageKey **token_keys;
    EgSequence *seq;
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
};

#endif
