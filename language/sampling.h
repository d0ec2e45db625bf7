/* Token sampling on the host: the last position's logits are read back from the GPU as float32
 * and one token id is chosen here, per step.
 *
 * The processing order and rules follow HuggingFace transformers' generate() so that a request
 * tuned against transformers behaves the same under Egret:
 *   1. repetition penalty (RepetitionPenaltyLogitsProcessor): for every DISTINCT token id in the
 *      context (prompt + generated so far), logit < 0 -> logit * penalty, else logit / penalty.
 *      A token repeated in the context is penalised once, as with torch.gather/scatter.
 *   2. temperature == 0: greedy argmax of the penalised logits, ties -> lowest id (torch.argmax).
 *      top_k/top_p are ignored, as with do_sample=False.
 *   3. temperature (TemperatureLogitsWarper): logits / temperature.
 *   4. top-k (TopKLogitsWarper): HF removes only the logits STRICTLY below the k-th largest value
 *      (`scores < topk(scores, k)[..., -1]`), so every token tied with the k-th value is kept and
 *      more than k tokens can survive. Egret does the same (it is what HF users get), rather than
 *      cutting the tie arbitrarily the way torch.topk alone would.
 *   5. top-p (TopPLogitsWarper): sort ascending, softmax, cumulative sum, remove every token whose
 *      cumulative probability is <= 1 - top_p, always keeping the most likely one. Equivalently:
 *      keep the smallest most-likely-first prefix whose probability reaches top_p (>=), the `<=`
 *      deciding exact boundaries as in HF. Equal logits are ordered by id (lower id counts as
 *      more likely), because torch.sort gives no defined order for ties.
 *   6. sampling from the softmax of what is left (renormalised).
 *
 * Deliberate differences from transformers:
 *   - NaN logits are treated as -inf (never chosen); torch would propagate them. If nothing finite
 *     or +inf is left, eg_sampler_next fails instead of returning garbage. +inf logits share all of
 *     the probability equally (torch's softmax would give NaN and multinomial would raise).
 *   - Context ids outside [0, vocab_size) are an error (torch.gather would raise too).
 *   - logits / temperature is computed in double, so a tiny temperature cannot overflow to inf
 *     (in float32 it would, for temperatures below ~1e-37, and torch would then fail).
 *   - Softmax and cumulative sums are done in double and grouped differently from torch's
 *     sequential float32 cumsum (top-p finds its boundary by selection, not a full sort), so a
 *     top-p boundary within rounding error of a cumulative probability may land one token off.
 *   - The random numbers come from xoshiro256** seeded through splitmix64, not torch's generator:
 *     the same seed, parameters and logits give the same tokens on every run and every machine
 *     running the same Egret version (the arithmetic is IEEE-754 basic operations plus an exp of
 *     our own, so no libm rounding differences; FMA contraction is switched off in the source;
 *     this assumes no excess precision, FLT_EVAL_METHOD 0, as on x86-64 and AArch64), but NOT
 *     the tokens torch would pick. Each sampled step draws one 64-bit number; greedy draws none.
 *
 * A sampler holds per-request state (the random generator) and scratch buffers sized once for the
 * vocabulary; it is not thread-safe, use one per request. */
#ifndef EGRET_SAMPLING_H
#define EGRET_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

typedef struct EgSamplingParams {
    float temperature;        /* 0 = greedy; otherwise finite and > 0 */
    uint32_t top_k;           /* 0 = off */
    float top_p;              /* in (0, 1]; 1 = off */
    float repetition_penalty; /* finite, > 0; 1 = off */
    uint64_t seed;            /* seeds the sampler's random generator */
} EgSamplingParams;

/* Greedy decoding: temperature 0, top_k 0, top_p 1, repetition_penalty 1, seed 0. */
void eg_sampling_params_default(EgSamplingParams *p);

/* Returns 0 if the parameters are usable, else -1 with err naming the field and the bad value
 * (the service answers INVALID_ARGUMENT with that message). top_k is unsigned, so any value is
 * accepted; one at or above the vocabulary size simply keeps everything. */
int eg_sampling_params_validate(const EgSamplingParams *p, EgError *err);

typedef struct EgSampler EgSampler;

/* Copies p and seeds the generator from p->seed. Returns NULL if p is invalid (validate first to
 * get a message), vocab_size <= 0, or memory runs out. */
EgSampler *eg_sampler_new(const EgSamplingParams *p, int vocab_size);
void eg_sampler_free(EgSampler *s);

/* Chooses the next token. logits: vocab_size floats, not modified. context: the token ids seen so
 * far (prompt + generated), used only by the repetition penalty but always range-checked. Returns
 * the chosen id, or -1 with err set (bad arguments, out-of-range context id, or no finite logit).
 * Allocates nothing. */
int32_t eg_sampler_next(EgSampler *s, const float *logits, const int32_t *context, size_t n_context,
                        EgError *err);

#endif
