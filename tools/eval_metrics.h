/* The arithmetic of `egret eval` (tools/cli_eval.c): how far one model's next-token
 * distributions are from a reference's (llama.cpp's perplexity --kl-divergence figures), per
 * position and summed over many. */
#ifndef EGRET_EVAL_METRICS_H
#define EGRET_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* KL(p || q) in nats, p = softmax(ref) and q = softmax(out) over n logits, computed in double
 * with the maximum subtracted (logits of any size, no overflow); 0 exactly when ref and out are
 * equal bit for bit. A logit that is NaN or infinite gives NaN. */
double eg_eval_kl(const float *ref, const float *out, uint32_t n);

/* The greedy choice: the highest logit, the lowest id on ties (as the samplers take it). */
uint32_t eg_eval_argmax(const float *logits, uint32_t n);

/* A format's figures over positions, accumulated one position at a time. */
typedef struct EgEvalStats {
    double *kl; /* every position's KL, in order (grown as needed) */
    size_t n, cap;
    size_t top1_same; /* positions where the argmax equals the reference's */
    int failed;       /* out of host memory while adding */
} EgEvalStats;

/* Adds one position: the KL of out from ref and whether their argmaxes agree. */
void eg_eval_stats_add(EgEvalStats *s, const float *ref, const float *out, uint32_t vocab);
/* Mean, maximum and the q-quantile (0 <= q <= 1, nearest rank on the sorted values) of the KLs;
 * 0 when there are none. */
double eg_eval_stats_mean(const EgEvalStats *s);
double eg_eval_stats_max(const EgEvalStats *s);
double eg_eval_stats_quantile(const EgEvalStats *s, double q);
void eg_eval_stats_free(EgEvalStats *s);

#endif
