/* KL divergence and top-1 agreement of next-token distributions (tools/eval_metrics.h). */
#include "tools/eval_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* log Σ exp(x_i) with the maximum taken out first, and that maximum. */
static double log_sum_exp(const float *x, uint32_t n, double *max_out) {
    double max = -INFINITY;
    for (uint32_t i = 0; i < n; i++)
        if (x[i] > max || isnan(x[i])) max = x[i];
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp((double)x[i] - max);
    *max_out = max;
    return log(sum);
}

double eg_eval_kl(const float *ref, const float *out, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(ref[i]) || !isfinite(out[i])) return NAN;
    double ref_max, out_max;
    double ref_lse = log_sum_exp(ref, n, &ref_max), out_lse = log_sum_exp(out, n, &out_max);
    /* log p_i = ref_i − ref_max − ref_lse, log q_i likewise: KL = Σ p_i (log p_i − log q_i) */
    double kl = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double log_p = (double)ref[i] - ref_max - ref_lse;
        double log_q = (double)out[i] - out_max - out_lse;
        kl += exp(log_p) * (log_p - log_q);
    }
    /* Rounding can leave a tiny negative sum for nearly equal distributions; KL is never
     * negative. Bit-equal inputs give log_p == log_q term by term, so exactly 0. */
    return kl > 0.0 ? kl : 0.0;
}

uint32_t eg_eval_argmax(const float *logits, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t v = 1; v < n; v++)
        if (logits[v] > logits[best]) best = v;
    return best;
}

void eg_eval_stats_add(EgEvalStats *s, const float *ref, const float *out, uint32_t vocab) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *kl = realloc(s->kl, cap * sizeof *kl);
        if (!kl) {
            s->failed = 1;
            return;
        }
        s->kl = kl, s->cap = cap;
    }
    s->kl[s->n++] = eg_eval_kl(ref, out, vocab);
    s->top1_same += eg_eval_argmax(ref, vocab) == eg_eval_argmax(out, vocab);
}

double eg_eval_stats_mean(const EgEvalStats *s) {
    double sum = 0.0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->kl[i];
    return s->n ? sum / (double)s->n : 0.0;
}

double eg_eval_stats_max(const EgEvalStats *s) {
    double max = 0.0;
    for (size_t i = 0; i < s->n; i++)
        if (s->kl[i] > max || isnan(s->kl[i])) max = s->kl[i];
    return max;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double eg_eval_stats_quantile(const EgEvalStats *s, double q) {
    if (!s->n) return 0.0;
    double *sorted = malloc(s->n * sizeof *sorted);
    if (!sorted) return NAN;
    memcpy(sorted, s->kl, s->n * sizeof *sorted);
    qsort(sorted, s->n, sizeof *sorted, cmp_double);
    /* nearest rank: the smallest value with at least q of the values at or below it */
    size_t rank = (size_t)ceil(q * (double)s->n);
    double v = sorted[rank ? rank - 1 : 0];
    free(sorted);
    return v;
}

void eg_eval_stats_free(EgEvalStats *s) {
    free(s->kl);
    memset(s, 0, sizeof *s);
}
