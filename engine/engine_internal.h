/* Shared by the engine's files: engine.c (opening, request checks and assembly) and
 * engine_job.c (running requests, alone or batched). Not a public interface. */
#ifndef EGRET_ENGINE_INTERNAL_H
#define EGRET_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "language/prompt.h"

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
