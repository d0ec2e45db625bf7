/* Text generation for one request: encode the images once, prefill the prompt, then decode one
 * token per step with the KV cache, sampling each token (language/sampling.h) and stopping at
 * end of sequence, a stop string, max_new_tokens, or when the caller cancels.
 *
 * Streaming: after each step the callback gets the token id and the text that is now final.
 * Text that might still turn into a stop string is held back until it cannot, so the streamed
 * pieces always concatenate to exactly the final text. The stop string itself is not part of
 * the text, but the ids include the token that completed it; the end-of-sequence token is in
 * neither. */
#ifndef EGRET_GENERATE_H
#define EGRET_GENERATE_H

#include "families/family.h"
#include "language/sampling.h"
#include "language/tokenizer.h"

typedef enum EgFinishReason {
    EG_FINISH_LENGTH = 0,   /* max_new_tokens reached */
    EG_FINISH_STOP = 1,     /* a stop string appeared */
    EG_FINISH_EOS = 2,      /* the model produced the end-of-sequence token */
    EG_FINISH_CANCELLED = 3 /* the callback asked to stop */
} EgFinishReason;

/* "length", "stop", "end_of_sequence", "cancelled": the names egret.v1.FinishReason uses. */
const char *eg_finish_reason_name(EgFinishReason r);

typedef struct EgGenerateParams {
    EgSamplingParams sampling;
    uint32_t max_new_tokens;
    const char *const *stop; /* stop strings (UTF-8, non-empty) */
    size_t n_stop;
    int ignore_eos; /* 1: keep going past the end-of-sequence token (tests, benchmarks) */
} EgGenerateParams;

/* Called once per generated token: its id (-1 on the final call that flushes held-back text)
 * and the newly final text (may be empty). Return non-zero to cancel. */
typedef int (*EgTokenCallback)(void *user, int32_t id, const char *text, size_t len);

typedef struct EgGenerateResult {
    char *text;   /* malloc'd, NUL-terminated */
    int32_t *ids; /* malloc'd generated ids (without a final end-of-sequence token) */
    size_t n_ids;
    EgFinishReason finish;
    double prefill_s; /* image encoding + prompt prefill + first token: time to first token */
    double total_s;
} EgGenerateResult;

void eg_generate_result_free(EgGenerateResult *r);

/* prompt_ids / image_of_token: n_prompt entries (see families/family.h); pixels: n_images
 * preprocessed images (eg_family_preprocess). On error nothing is allocated in *out. */
int eg_generate(EgFamilyModel *m, const EgTokenizer *tok, const int32_t *prompt_ids,
                const int32_t *image_of_token, uint32_t n_prompt, const float *pixels,
                uint32_t n_images, const EgGenerateParams *params, EgTokenCallback cb, void *user,
                EgGenerateResult *out, EgError *err);

/* Generation on a prepared sequence (families/family.h) whose images are set and whose KV
 * cache already holds the first n_cached prompt tokens (a shared prefix kept from an earlier
 * request; 0 for none). Only the rest of the prompt is computed. The sequence's capacity must
 * cover n_prompt + max_new_tokens; afterwards it holds the prompt and the generated tokens (all
 * but the last one, which was sampled and never fed back). Times exclude the image stage. */
int eg_generate_on(EgFamilySeq *seq, const EgTokenizer *tok, const int32_t *prompt_ids,
                   const int32_t *image_of_token, uint32_t n_prompt, uint32_t n_cached,
                   const EgGenerateParams *params, EgTokenCallback cb, void *user,
                   EgGenerateResult *out, EgError *err);

/* The same loop one step at a time, so that a scheduler can advance several generations
 * together (one batched forward per step, families/family.h eg_fseq_forward_batch):
 *
 *   g = eg_generation_begin(...)              validates and prepares; computes nothing yet
 *   while (eg_generation_prefill(g, C) == 0)  the prompt, C tokens at a time (0: all at once);
 *       (other generations may step here)     1 once the last prompt token's logits are in
 *   while (eg_generation_advance(g) == 0)     samples, streams, decides whether it is done
 *       forward eg_generation_next_input(g) into eg_generation_logits(g)
 *   eg_generation_end(g, &result); eg_generation_free(g)
 *
 * advance returns 0 when another token is wanted, 1 when finished, -1 on error. */
typedef struct EgGeneration EgGeneration;
EgGeneration *eg_generation_begin(EgFamilySeq *seq, const EgTokenizer *tok,
                                  const int32_t *prompt_ids, const int32_t *image_of_token,
                                  uint32_t n_prompt, uint32_t n_cached,
                                  const EgGenerateParams *params, EgTokenCallback cb, void *user,
                                  EgError *err);
/* Feeds the next at most max_tokens prompt tokens (0: all that are left) into the KV cache.
 * Returns 1 when the whole prompt is in (the logits are its last token's), 0 when some is left,
 * -1 on error. A prompt fed in chunks gives the same keys and values as one fed at once: each
 * chunk attends to everything before it (chunked prefill, so a scheduler can keep other
 * sequences decoding between chunks of a long prompt). */
int eg_generation_prefill(EgGeneration *g, uint32_t max_tokens, EgError *err);
uint32_t eg_generation_prefill_left(const EgGeneration *g);
int eg_generation_advance(EgGeneration *g, EgError *err);
int32_t eg_generation_next_input(const EgGeneration *g);
float *eg_generation_logits(EgGeneration *g);
EgFamilySeq *eg_generation_sequence(const EgGeneration *g);
int eg_generation_finished(const EgGeneration *g);
/* Stops a generation from outside (its caller went away): it ends as cancelled. */
void eg_generation_cancel(EgGeneration *g);
/* The result (flushing held-back text through the callback); the generation stays allocated. */
int eg_generation_end(EgGeneration *g, EgGenerateResult *out, EgError *err);
void eg_generation_free(EgGeneration *g);

#endif
