/* Shared by the engine's files: engine.c (opening, request checks and assembly) and
 * engine_job.c (running requests, alone or batched), the scheduler, and white-box tests. Not a
 * public interface: the server and the tools use engine/engine.h. */
#ifndef EGRET_ENGINE_INTERNAL_H
#define EGRET_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "engine/image_cache.h"
#include "engine/prefix_cache.h"
#include "language/prompt.h"

struct EgEngine {
    EgModel *model;
    EgTokenizer *tok;
    EgTemplate *tmpl;
    EgEngineLimits limits;
    EgImageCache *image_cache;
    EgPrefixCache *prefix_cache;
    float *step_logits; /* eg_engine_step's batched logits: [max batch][vocab], made once */
    uint32_t prefill_chunk;
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
/* Decodes and normalizes the images that are not cached (cached[i] NULL) into one
 * [n_missing][3][S][S] array, in order. */
EgStatus eg_engine_load_pixels(EgEngine *e, const Assembled *a, const EgBuffer *const *cached,
                               float **out, EgError *err);
/* Per token, the key of the image it attends to (NULL: none): the prompt's tokens, then n_extra
 * generated ones, which attend to the image the prompt's last token saw. */
const EgImageKey **eg_engine_token_image_keys(const EgPrompt *prompt, const EgImageKey *keys,
                                              size_t n_extra);

#endif
