#include "language/sampling.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Reproducibility across machines needs every rounding to be the same everywhere, so a*b+c must
 * not be fused into an FMA on targets that have one (the fused result rounds once, not twice:
 * measured to change det_exp's bits under GCC -std=gnu11 -march=native). GCC already keeps them
 * apart in ISO mode (-std=c11), but not in GNU mode or under an explicit -ffp-contract=fast;
 * Clang fuses within expressions by default. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* One surviving token: its processed logit (after temperature), id, and softmax weight
 * exp(v - max) once known. Kept together so that selection and sorting move all three at once. */
typedef struct Cand {
    double w;
    double v;
    int32_t id;
} Cand;

struct EgSampler {
    EgSamplingParams p;
    int vocab;
    uint64_t rng[4];
    /* Repetition penalty: mark[id] == epoch means id is in this call's context. Bumping the
     * epoch clears all marks in O(1), so a call costs O(vocab + context), not O(vocab*context),
     * and duplicates in the context are penalised once. NULL when the penalty is off. */
    uint32_t *mark;
    uint32_t epoch;
    Cand *cand;   /* vocab entries; NULL for greedy samplers, which never need it */
    double *heap; /* min(top_k, vocab) entries for top-k; NULL when top-k is off */
    Cand *work;   /* vocab entries for top-p; NULL when top-p is off */
};

/* ---- Random numbers: xoshiro256** seeded by splitmix64 (Blackman & Vigna), integer-only so
 * the stream is identical on every platform. */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro256ss(uint64_t s[4]) {
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits: exact in double, no rounding involved. */
static double uniform01(uint64_t s[4]) {
    return (double)(xoshiro256ss(s) >> 11) * 0x1.0p-53;
}

/* ---- exp for softmax weights. libm's exp is not required to be correctly rounded and differs
 * in the last bit between glibc, musl, macOS and Windows, which would make the same seed pick a
 * different token on another machine when the draw falls near a boundary. This one uses only
 * IEEE-754 basic operations (each correctly rounded, so the same everywhere) and integer bit
 * assembly. Relative error is < 5e-16 (measured against glibc over (-708, 0]), far below anything
 * sampling can notice; what matters is that it is the same number on every machine. */
static double det_exp(double x) {
    /* Only called with x <= 0 (logit minus the maximum). Below -708, exp(x) < 1e-307: such a
     * token is negligible next to the maximum's weight 1, and returning 0 keeps the result of the
     * scaling below a normal number, where multiplying by a power of two is exact. Also catches
     * x = -inf. */
    if (!(x > -708.0)) return 0.0;
    /* x = k*ln2 + r with |r| <= ln2/2 (round to nearest k by hand: floor() is a libm call that
     * the compiler cannot overlap with the next token's work). ln2 is split in two (Cody-Waite,
     * fdlibm's constants) so that k*LN2_HI is exact and r keeps full precision. */
    const double LN2_HI = 6.93147180369123816490e-01;
    const double LN2_LO = 1.90821492927058770002e-10;
    const double t = x * 1.44269504088896338700e+00 + 0.5; /* in (-1021.5, 0.5] */
    int ki = (int)t;                                       /* truncates toward zero ... */
    if ((double)ki > t) ki--;                              /* ... so step down to floor(t) */
    const double k = (double)ki;
    const double r = (x - k * LN2_HI) - k * LN2_LO;
    /* Taylor series to r^12/12!: the next term is < 5e-16 relative for |r| <= 0.347. Estrin's
     * scheme (pairs, then r^2, r^4, r^8) keeps the dependency chain short; its order of
     * operations is fixed by the parentheses, so it is as reproducible as Horner's. */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double p01 = 1.0 + r, p23 = 1.0 / 2.0 + r * (1.0 / 6.0);
    const double p45 = 1.0 / 24.0 + r * (1.0 / 120.0), p67 = 1.0 / 720.0 + r * (1.0 / 5040.0);
    const double p89 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const double p1011 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    const double p03 = p01 + r2 * p23, p47 = p45 + r2 * p67;
    const double p811 = p89 + r2 * p1011;
    const double p811_12 = p811 + r4 * (1.0 / 479001600.0);
    const double p = (p03 + r4 * p47) + r8 * p811_12;
    /* 2^k built from its bits: k in [-1021, 0], so 2^k and p * 2^k (p in [0.7, 1.42]) are
     * normal numbers and the product is exact. */
    const uint64_t bits = (uint64_t)(ki + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* ---- Candidate ordering. A strict total order (logit descending, then id ascending) means every
 * selection and sort has exactly one correct result, whatever algorithm or libc qsort produces
 * it: that is what makes ties deterministic. */

static inline bool better(const Cand *a, const Cand *b) {
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    if (better(a, b)) return -1;
    if (better(b, a)) return 1;
    return 0;
}

static inline void cand_swap(Cand *a, Cand *b) {
    Cand t = *a;
    *a = *b;
    *b = t;
}

/* Top-k with HF's rule: remove the logits strictly below the k-th largest value, so everything
 * tied with it stays. That rule only needs the k-th largest VALUE (counting repeats), found with a
 * min-heap of the k largest seen so far: most logits lose a single comparison against the heap's
 * minimum, so a 32k vocabulary with k = 50 costs about one pass, and the worst case (ascending
 * input) is O(n log k), with no pivot choice to go wrong. heap: k entries of scratch. Returns the
 * new count; survivors are in a[0..count), in their previous relative order. */
static size_t keep_top_k(Cand *a, size_t n, size_t k, double *heap) {
    if (k == 0 || k >= n) return n;
    for (size_t i = 0; i < k; i++) { /* heapify the first k (sift up) */
        size_t c = i;
        heap[c] = a[i].v;
        while (c > 0 && heap[(c - 1) / 2] > heap[c]) {
            const double t = heap[c];
            heap[c] = heap[(c - 1) / 2];
            heap[(c - 1) / 2] = t;
            c = (c - 1) / 2;
        }
    }
    for (size_t i = k; i < n; i++) {
        const double v = a[i].v;
        if (!(v > heap[0])) continue;
        size_t c = 0; /* replace the minimum, sift down */
        for (;;) {
            size_t l = 2 * c + 1, m = c;
            double mv = v;
            if (l < k && heap[l] < mv) m = l, mv = heap[l];
            if (l + 1 < k && heap[l + 1] < mv) m = l + 1, mv = heap[l + 1];
            if (m == c) break;
            heap[c] = mv;
            c = m;
        }
        heap[c] = v;
    }
    const double kth = heap[0];
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i].v >= kth) a[out++] = a[i];
    return out;
}

/* Top-p with HF's rule: in ascending order, a token is removed when the cumulative probability
 * up to and including it is <= 1 - top_p; the most likely token always stays. The removed tokens
 * are a tail of the order, so what is needed is the boundary, not a sorted list:
 *   1. Tokens lighter than (1 - top_p) * total / n are removed unseen: even all of them together
 *      stay under the limit, and every token ranked below one of them is lighter still. On
 *      peaked LM distributions this leaves a head of a few dozen tokens, copied to `work`.
 *   2. In the head, a quickselect on the boundary: partition around a pivot; the pivot's
 *      cumulative probability is the mass of everything ranked below it, known from the tokens
 *      already ruled out below plus the partition's lower side. Keep it -> the boundary is above;
 *      remove it -> below. O(n) expected even on flat distributions where most tokens survive,
 *      where a sort would be O(n log n).
 *   3. The least likely survivor found, one pass keeps it and everything ranked above it, in a's
 *      order. Partitioning a copy is what lets the survivors come out in their original (id)
 *      order, so the token a given random draw maps to does not depend on pivot choices.
 * The sums are grouped differently from torch's sequential cumsum (and done in double), so a
 * boundary that falls within rounding error of a cumulative probability can move by one token;
 * the test checks exact boundaries. work: n entries of scratch. Returns the survivor count. */
static size_t keep_top_p(Cand *a, size_t n, double top_p, Cand *work) {
    const double limit = 1.0 - top_p;
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += a[i].w;

    /* 1. The light tail. The maximum (weight 1, total <= n) is never in it, so head >= 1. */
    const double light = limit * total / (double)n;
    size_t head = 0;
    double below = 0.0; /* mass of everything ranked below work[lo..hi) */
    for (size_t i = 0; i < n; i++) {
        if (a[i].w >= light)
            work[head++] = a[i];
        else
            below += a[i].w;
    }

    /* 2. Invariant: work[0..lo) are kept, work[hi..head) removed, every token in a range outranks
     * every token in the ranges after it, and the boundary lies in [lo, hi]. */
    size_t lo = 0, hi = head;
    int budget = 8;
    for (size_t m = head; m > 1; m >>= 1)
        budget += 2;
    while (lo < hi) {
        if (budget-- == 0) {
            /* Adversarial pivots: finish with a sort and a walk up from the bottom. */
            qsort(work + lo, hi - lo, sizeof *work, cand_cmp);
            size_t i = hi;
            for (; i > lo; i--) {
                below += work[i - 1].w;
                if (below / total > limit) break;
            }
            lo = i;
            break;
        }
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (better(&work[mid], &work[lo])) cand_swap(&work[mid], &work[lo]);
        if (better(&work[last], &work[lo])) cand_swap(&work[last], &work[lo]);
        if (better(&work[mid], &work[last]))
            cand_swap(&work[mid], &work[last]); /* median now at last */
        const Cand pivot = work[last];
        size_t store = lo;
        double worse = 0.0; /* mass ranked below the pivot within the range */
        for (size_t i = lo; i < last; i++) {
            if (better(&work[i], &pivot))
                cand_swap(&work[i], &work[store++]);
            else
                worse += work[i].w;
        }
        cand_swap(&work[store], &work[last]);
        const double cum = below + worse + pivot.w; /* HF's cumsum at the pivot */
        if (cum / total <= limit) {
            hi = store; /* pivot removed, and everything below it */
            below = cum;
        } else {
            lo = store + 1; /* pivot kept, and everything above it */
        }
    }

    /* 3. The least likely survivor; if rounding removed everything (top_p ~ 0), HF's
     * min_tokens_to_keep = 1 keeps the most likely token instead. */
    Cand last_kept = work[0];
    if (lo > 0) {
        for (size_t i = 1; i < lo; i++)
            if (better(&last_kept, &work[i])) last_kept = work[i];
    } else {
        for (size_t i = 1; i < head; i++)
            if (better(&work[i], &last_kept)) last_kept = work[i];
    }
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        if (!better(&last_kept, &a[i])) a[out++] = a[i];
    return out;
}

/* ---- Public API */

void eg_sampling_params_default(EgSamplingParams *p) {
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 0;
}

int eg_sampling_params_validate(const EgSamplingParams *p, EgError *err) {
    if (!p) return eg_fail(err, "sampling parameters missing");
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return eg_fail(err, "temperature must be finite and >= 0, got %g", (double)p->temperature);
    /* Written so that NaN fails too. */
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return eg_fail(err, "top_p must be in (0, 1], got %g", (double)p->top_p);
    if (!isfinite(p->repetition_penalty) || !(p->repetition_penalty > 0.0f))
        return eg_fail(err, "repetition_penalty must be finite and > 0, got %g",
                       (double)p->repetition_penalty);
    return 0;
}

EgSampler *eg_sampler_new(const EgSamplingParams *p, int vocab_size) {
    if (!p || vocab_size <= 0 || eg_sampling_params_validate(p, NULL) != 0) return NULL;
    EgSampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    if (p->repetition_penalty != 1.0f) {
        s->mark = calloc((size_t)vocab_size, sizeof *s->mark);
        if (!s->mark) goto fail;
    }
    if (p->temperature > 0.0f) {
        s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
        if (!s->cand) goto fail;
        if (p->top_k > 0 && p->top_k < (uint32_t)vocab_size) {
            s->heap = malloc((size_t)p->top_k * sizeof *s->heap);
            if (!s->heap) goto fail;
        }
        if (p->top_p < 1.0f) {
            s->work = malloc((size_t)vocab_size * sizeof *s->work);
            if (!s->work) goto fail;
        }
    }
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x); /* four distinct outputs: never the forbidden all-zero state */
    return s;
fail:
    eg_sampler_free(s);
    return NULL;
}

void eg_sampler_free(EgSampler *s) {
    if (!s) return;
    free(s->mark);
    free(s->cand);
    free(s->heap);
    free(s->work);
    free(s);
}

/* Step 1 (the repetition penalty, in float32 like HF) and the NaN rule, for one token. */
static inline float penalised_logit(const EgSampler *s, const float *logits, int32_t id,
                                    bool penalise) {
    float v = logits[id];
    if (isnan(v)) return -INFINITY;
    if (penalise && s->mark[id] == s->epoch) {
        const float pen = s->p.repetition_penalty;
        v = v < 0.0f ? v * pen : v / pen;
    }
    return v;
}

static int32_t next_greedy(EgSampler *s, const float *logits, bool penalise, EgError *err) {
    int32_t best = -1;
    float best_v = -INFINITY;
    for (int32_t i = 0; i < s->vocab; i++) {
        const float v = penalised_logit(s, logits, i, penalise);
        if (v > best_v) { /* strict: the first (lowest) id wins ties; -inf never wins */
            best_v = v;
            best = i;
        }
    }
    if (best < 0) eg_fail(err, "sampling: all %d logits are NaN or -inf", s->vocab);
    return best;
}

static int32_t next_sampled(EgSampler *s, const float *logits, bool penalise, EgError *err) {
    const double temperature = s->p.temperature;
    Cand *a = s->cand;
    size_t n = 0;
    double vmax = -INFINITY;
    for (int32_t i = 0; i < s->vocab; i++) {
        /* In double, unlike HF's float32: any float logit over any positive float temperature
         * (down to 1e-45) stays finite, where float32 overflows to inf for tiny temperatures
         * and makes every overflowing token equally likely instead of the argmax near-certain.
         * Equal logits still give equal results, so top-k's ties are the same. */
        const double v = (double)penalised_logit(s, logits, i, penalise) / temperature;
        if (v == -INFINITY) continue; /* probability 0 in every later step */
        a[n].v = v;
        a[n].id = i;
        n++;
        if (v > vmax) vmax = v;
    }
    if (n == 0) {
        eg_fail(err, "sampling: all %d logits are NaN or -inf", s->vocab);
        return -1;
    }

    if (s->heap) n = keep_top_k(a, n, s->p.top_k, s->heap);

    /* Weights relative to the maximum (which every filter keeps), so the largest is exactly 1.
     * Comparing with vmax first makes +inf logits weigh 1 (inf - inf would be NaN) and every
     * finite one 0 when the maximum is +inf. */
    for (size_t i = 0; i < n; i++)
        a[i].w = a[i].v == vmax ? 1.0 : det_exp(a[i].v - vmax);

    if (s->work) n = keep_top_p(a, n, (double)s->p.top_p, s->work);

    /* The filters keep the survivors in id order, so the draw is walked in id order: a given
     * random number maps to the same token however the filters found their survivors. */
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += a[i].w;
    const double target = uniform01(s->rng) * total;
    double acc = 0.0;
    size_t pick = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i].w <= 0.0) continue; /* underflowed: never chosen, not even by rounding */
        pick = i;
        acc += a[i].w;
        if (target < acc) break;
    }
    return a[pick].id;
}

int32_t eg_sampler_next(EgSampler *s, const float *logits, const int32_t *context, size_t n_context,
                        EgError *err) {
    if (!s || !logits) {
        eg_fail(err, "sampling: %s is NULL", !s ? "sampler" : "logits");
        return -1;
    }
    if (n_context > 0 && !context) {
        eg_fail(err, "sampling: context is NULL with %zu tokens", n_context);
        return -1;
    }
    const bool penalise = s->mark != NULL && n_context > 0;
    if (penalise && ++s->epoch == 0) {
        /* After 2^32 calls the epoch wraps; stale marks could then alias, so clear them once. */
        memset(s->mark, 0, (size_t)s->vocab * sizeof *s->mark);
        s->epoch = 1;
    }
    /* Range-checked even when the penalty is off, so a bad id is reported whatever the params. */
    for (size_t i = 0; i < n_context; i++) {
        const int32_t id = context[i];
        if (id < 0 || id >= s->vocab) {
            eg_fail(err, "sampling: context token %zu has id %d, outside the vocabulary [0, %d)", i,
                    (int)id, s->vocab);
            return -1;
        }
        if (penalise) s->mark[id] = s->epoch;
    }
    if (s->p.temperature == 0.0f) return next_greedy(s, logits, penalise, err);
    return next_sampled(s, logits, penalise, err);
}
