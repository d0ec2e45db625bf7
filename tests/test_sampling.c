/* Token sampling: HF generate() semantics (repetition penalty, greedy, temperature, top-k, top-p),
 * reproducibility of the seeded generator, the sampled frequencies against an independent
 * reference implementation of the HF rules, parameter validation and NaN handling. */
#include "language/sampling.h"
#include "test_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- Helpers */

static EgSampler *make(float temperature, uint32_t top_k, float top_p, float penalty, uint64_t seed,
                       int vocab) {
    EgSamplingParams p;
    eg_sampling_params_default(&p);
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.repetition_penalty = penalty;
    p.seed = seed;
    return eg_sampler_new(&p, vocab);
}

/* One step; a failure is reported as a failed check and gives -2 so callers' checks fail too. */
static int32_t step(EgSampler *s, const float *logits, const int32_t *ctx, size_t n_ctx) {
    EgError err = {0};
    int32_t id = eg_sampler_next(s, logits, ctx, n_ctx, &err);
    CHECK(id >= 0, "eg_sampler_next failed: %s", err.msg);
    return id >= 0 ? id : -2;
}

static int32_t argmax_lowest(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Independent reference for HF's warpers (temperature, top-k, top-p, softmax), written the way
 * transformers writes them: full sorts, masks, a softmax over everything. Equal logits are ordered
 * by id (lower id = more likely), Egret's documented tie order. Fills prob[n]. */
typedef struct RefItem {
    float v;
    int id;
} RefItem;

static int ref_desc(const void *pa, const void *pb) {
    const RefItem *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->id < b->id ? -1 : (a->id > b->id);
}

static void reference_probs(const float *logits, int n, float temperature, uint32_t top_k,
                            float top_p, double *prob) {
    float *v = malloc((size_t)n * sizeof *v);
    RefItem *it = malloc((size_t)n * sizeof *it);
    for (int i = 0; i < n; i++) {
        v[i] = isnan(logits[i]) ? -INFINITY : logits[i] / temperature;
        it[i] = (RefItem){v[i], i};
    }
    qsort(it, (size_t)n, sizeof *it, ref_desc);
    if (top_k > 0 && top_k < (uint32_t)n) {
        const float kth = it[top_k - 1].v;
        for (int i = 0; i < n; i++)
            if (v[i] < kth) v[i] = -INFINITY; /* HF: scores < topk(...)[..., -1] removed */
        for (int i = 0; i < n; i++)
            it[i].v = v[it[i].id];
    }
    double max = it[0].v, total = 0.0;
    for (int i = 0; i < n; i++)
        total += exp((double)v[i] - max);
    if (top_p < 1.0f) {
        double cum = 0.0; /* ascending = the descending order walked backwards */
        for (int i = n - 1; i >= 1; i--) {
            cum += exp((double)it[i].v - max) / total;
            if (cum <= 1.0 - (double)top_p) v[it[i].id] = -INFINITY;
        }
    }
    total = 0.0;
    for (int i = 0; i < n; i++)
        total += exp((double)v[i] - max);
    for (int i = 0; i < n; i++)
        prob[i] = exp((double)v[i] - max) / total;
    free(v);
    free(it);
}

/* Samples `draws` times and checks every token: probability 0 -> never drawn, otherwise within 5
 * standard deviations of the expected count (a false alarm every ~10^6 runs per token). */
static void check_frequencies(const char *what, EgSampler *s, const float *logits, int n,
                              const double *prob, int draws) {
    int *count = calloc((size_t)n, sizeof *count);
    for (int d = 0; d < draws; d++) {
        int32_t id = step(s, logits, NULL, 0);
        if (id >= 0 && id < n) count[id]++;
    }
    for (int i = 0; i < n; i++) {
        const double expect = draws * prob[i];
        if (prob[i] == 0.0) {
            CHECK(count[i] == 0, "%s: excluded token %d drawn %d times", what, i, count[i]);
        } else {
            const double sd = sqrt(draws * prob[i] * (1.0 - prob[i]));
            CHECK(fabs(count[i] - expect) <= 5.0 * sd + 1.0,
                  "%s: token %d drawn %d times, expected %.1f +- %.1f", what, i, count[i], expect,
                  sd);
        }
    }
    free(count);
}

static void random_logits(float *x, int n, float scale) {
    for (int i = 0; i < n; i++)
        x[i] = scale * test_rng_normal();
}

/* ---- Tests */

static void test_defaults_and_validation(void) {
    EgSamplingParams p;
    memset(&p, 0xAB, sizeof p);
    eg_sampling_params_default(&p);
    CHECK(p.temperature == 0.0f && p.top_k == 0 && p.top_p == 1.0f &&
              p.repetition_penalty == 1.0f && p.seed == 0,
          "defaults are not greedy");
    EgError err = {0};
    CHECK(eg_sampling_params_validate(&p, &err) == 0, "defaults rejected: %s", err.msg);

    struct {
        const char *field;
        float temperature, top_p, penalty;
    } bad[] = {
        {"temperature", NAN, 1.0f, 1.0f},
        {"temperature", -0.5f, 1.0f, 1.0f},
        {"temperature", INFINITY, 1.0f, 1.0f},
        {"top_p", 0.7f, 0.0f, 1.0f},
        {"top_p", 0.7f, 1.5f, 1.0f},
        {"top_p", 0.7f, NAN, 1.0f},
        {"top_p", 0.7f, -0.1f, 1.0f},
        {"repetition_penalty", 0.7f, 0.9f, 0.0f},
        {"repetition_penalty", 0.7f, 0.9f, -1},
        {"repetition_penalty", 0.7f, 0.9f, NAN},
        {"repetition_penalty", 0.7f, 0.9f, INFINITY},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        eg_sampling_params_default(&p);
        p.temperature = bad[i].temperature;
        p.top_p = bad[i].top_p;
        p.repetition_penalty = bad[i].penalty;
        err.msg[0] = 0;
        CHECK(eg_sampling_params_validate(&p, &err) == -1, "case %zu (%s) accepted", i,
              bad[i].field);
        CHECK(strstr(err.msg, bad[i].field) != NULL, "case %zu: message '%s' does not name %s", i,
              err.msg, bad[i].field);
        CHECK(eg_sampler_new(&p, 10) == NULL, "case %zu: sampler built from invalid params", i);
    }
    /* The message carries the value too, for the client. */
    eg_sampling_params_default(&p);
    p.top_p = 1.5f;
    eg_sampling_params_validate(&p, &err);
    CHECK(strstr(err.msg, "1.5") != NULL, "value missing from '%s'", err.msg);

    /* Boundaries that are valid. */
    eg_sampling_params_default(&p);
    p.top_p = 1.0f;
    p.temperature = 1e-3f;
    p.repetition_penalty = 1e-3f;
    p.top_k = UINT32_MAX;
    CHECK(eg_sampling_params_validate(&p, &err) == 0, "valid boundary rejected: %s", err.msg);
    eg_sampling_params_default(&p);
    CHECK(eg_sampler_new(&p, 0) == NULL, "vocab 0 accepted");
}

static void test_greedy(void) {
    EgSampler *s = make(0.0f, 0, 1.0f, 1.0f, 0, 6);
    const float a[6] = {0.5f, 3.0f, -1.0f, 2.5f, 3.0f, 1.0f}; /* tie at 1 and 4 -> 1 */
    CHECK(step(s, a, NULL, 0) == 1, "greedy tie should pick the lowest id");
    const float b[6] = {-5.0f, -4.0f, -3.0f, -2.0f, -1.0f, -1.5f};
    CHECK(step(s, b, NULL, 0) == 4, "greedy on negative logits");
    const float c[6] = {7.0f, 7.0f, 7.0f, 7.0f, 7.0f, 7.0f};
    CHECK(step(s, c, NULL, 0) == 0, "greedy on all-equal logits should pick id 0");

    /* top_k/top_p are ignored at temperature 0, as with do_sample=False. */
    EgSampler *s2 = make(0.0f, 3, 0.1f, 1.0f, 99, 6);
    CHECK(step(s2, a, NULL, 0) == 1, "greedy with top_k/top_p set");
    eg_sampler_free(s2);

    /* Larger random vocabularies against a plain argmax. */
    enum { V = 32000 };
    float *x = malloc(V * sizeof *x);
    EgSampler *big = make(0.0f, 0, 1.0f, 1.0f, 0, V);
    for (int t = 0; t < 20; t++) {
        random_logits(x, V, 4.0f);
        CHECK(step(big, x, NULL, 0) == argmax_lowest(x, V), "greedy on random logits, trial %d", t);
    }
    eg_sampler_free(big);
    free(x);
    eg_sampler_free(s);
}

/* Greedy choices around the penalised value pin it exactly: with the penalised token at id 0 and
 * a rival at id 1, id 0 wins iff penalised >= rival (ties -> lowest id). Rivals one ulp either
 * side of the hand-computed value therefore prove the value is exactly that. */
static void check_penalised_value(float logit, float penalty, float expect, const char *what) {
    EgSampler *s = make(0.0f, 0, 1.0f, penalty, 0, 3);
    const int32_t ctx[] = {0};
    float x[3] = {logit, nextafterf(expect, -INFINITY), -100.0f};
    CHECK(step(s, x, ctx, 1) == 0, "%s: penalised value below %g", what, (double)expect);
    x[1] = expect;
    CHECK(step(s, x, ctx, 1) == 0, "%s: penalised value below %g (tie)", what, (double)expect);
    x[1] = nextafterf(expect, INFINITY);
    CHECK(step(s, x, ctx, 1) == 1, "%s: penalised value above %g", what, (double)expect);
    eg_sampler_free(s);
}

static void test_repetition_penalty(void) {
    /* Hand-computed: positive logits are divided, negative multiplied (both move down). */
    check_penalised_value(3.0f, 2.0f, 1.5f, "positive, penalty 2");
    check_penalised_value(-1.0f, 2.0f, -2.0f, "negative, penalty 2");
    check_penalised_value(2.5f, 1.25f, 2.0f, "positive, penalty 1.25");
    check_penalised_value(-0.75f, 1.5f, -1.125f, "negative, penalty 1.5");
    check_penalised_value(0.0f, 3.0f, 0.0f, "zero stays zero");
    /* penalty < 1 rewards repetition: 2 / 0.5 = 4, -2 * 0.5 = -1. */
    check_penalised_value(2.0f, 0.5f, 4.0f, "positive, penalty 0.5");
    check_penalised_value(-2.0f, 0.5f, -1.0f, "negative, penalty 0.5");

    /* The penalty changes the greedy choice: 5 -> 5/1.5 = 3.33 < 4. */
    const float x[4] = {5.0f, 4.0f, 1.0f, -2.0f};
    const int32_t ctx[] = {0, 2, 0, 0, 3};
    EgSampler *off = make(0.0f, 0, 1.0f, 1.0f, 0, 4);
    EgSampler *on = make(0.0f, 0, 1.0f, 1.5f, 0, 4);
    CHECK(step(off, x, ctx, 5) == 0, "without penalty, argmax is 0");
    CHECK(step(on, x, ctx, 5) == 1, "with penalty 1.5 on token 0, argmax moves to 1");
    CHECK(step(on, x, NULL, 0) == 0, "no context, no penalty");

    /* Repeated ids are penalised once (HF gathers then scatters): 3.0 seen 4 times with penalty
     * 2 is 1.5, not 3/16, so it still beats 1.4. */
    EgSampler *twice = make(0.0f, 0, 1.0f, 2.0f, 0, 2);
    const float y[2] = {3.0f, 1.4f};
    const int32_t rep[] = {0, 0, 0, 0};
    CHECK(step(twice, y, rep, 4) == 0, "a repeated context id must be penalised only once");
    /* Marks do not leak between calls: the next call's context has only token 1. */
    const float z[2] = {1.0f, 1.9f};
    const int32_t only1[] = {1};
    CHECK(step(twice, z, only1, 1) == 0, "token 1 penalised (0.95 < 1.0), token 0 not");
    CHECK(step(twice, z, NULL, 0) == 1, "no penalty without context");

    /* The caller's logits are left alone. */
    float w[4] = {5.0f, 4.0f, 1.0f, -2.0f};
    step(on, w, ctx, 5);
    CHECK(memcmp(w, x, sizeof w) == 0, "logits were modified");

    /* The penalty applies before sampling too: token 0 penalised from 10 to 10/100 = 0.1 next to
     * token 1's 5, at temperature 1 it has probability e^0.1/(e^0.1+e^5) ~ 0.7%. */
    EgSampler *samp = make(1.0f, 0, 1.0f, 100.0f, 7, 2);
    const float u[2] = {10.0f, 5.0f};
    const int32_t c0[] = {0};
    int zeros = 0;
    for (int i = 0; i < 2000; i++)
        zeros += step(samp, u, c0, 1) == 0;
    CHECK(zeros < 45, "penalised token sampled %d/2000 times, expected ~15", zeros);

    /* Out-of-range context ids are errors whatever the penalty. */
    EgError err = {0};
    const int32_t bad[] = {1, 4};
    CHECK(eg_sampler_next(on, x, bad, 2, &err) == -1 && strstr(err.msg, "id 4"),
          "context id 4 of 4 accepted (%s)", err.msg);
    const int32_t neg[] = {-1};
    CHECK(eg_sampler_next(off, x, neg, 1, &err) == -1, "negative context id accepted");
    CHECK(eg_sampler_next(off, x, NULL, 3, &err) == -1, "NULL context with n_context > 0");
    CHECK(eg_sampler_next(off, NULL, NULL, 0, &err) == -1, "NULL logits accepted");

    eg_sampler_free(off);
    eg_sampler_free(on);
    eg_sampler_free(twice);
    eg_sampler_free(samp);
}

/* top_k = 1 and a tiny top_p both leave only the argmax, whatever the temperature. */
static void test_filters_reduce_to_greedy(void) {
    enum { V = 1000 };
    float x[V];
    const float temps[] = {0.05f, 0.7f, 1.0f, 3.0f, 100.0f};
    for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
        EgSampler *k1 = make(temps[t], 1, 1.0f, 1.0f, test_rng_u64(), V);
        EgSampler *p0 = make(temps[t], 0, 1e-6f, 1.0f, test_rng_u64(), V);
        EgSampler *both = make(temps[t], 1, 1e-6f, 1.0f, test_rng_u64(), V);
        int bad_k = 0, bad_p = 0, bad_b = 0;
        for (int trial = 0; trial < 200; trial++) {
            random_logits(x, V, 2.0f);
            const int32_t want = argmax_lowest(x, V);
            bad_k += step(k1, x, NULL, 0) != want;
            bad_p += step(p0, x, NULL, 0) != want;
            bad_b += step(both, x, NULL, 0) != want;
        }
        CHECK(bad_k == 0, "top_k=1 at T=%g differed from argmax %d times", (double)temps[t], bad_k);
        CHECK(bad_p == 0, "top_p=1e-6 at T=%g differed from argmax %d times", (double)temps[t],
              bad_p);
        CHECK(bad_b == 0, "top_k=1+top_p at T=%g differed %d times", (double)temps[t], bad_b);
        eg_sampler_free(k1);
        eg_sampler_free(p0);
        eg_sampler_free(both);
    }
}

/* HF keeps everything tied with the k-th value: top_k=1 over a tie samples both tokens, top_k=2
 * over four equal logits samples all four. */
static void test_top_k_keeps_ties(void) {
    const float x[5] = {1.0f, 4.0f, 2.0f, 4.0f, 0.0f};
    EgSampler *s = make(1.0f, 1, 1.0f, 1.0f, 11, 5);
    const double half[5] = {0, 0.5, 0, 0.5, 0};
    check_frequencies("top_k=1 with a tie", s, x, 5, half, 4000);
    eg_sampler_free(s);

    const float flat[6] = {3.0f, 3.0f, 3.0f, 3.0f, 1.0f, 1.0f};
    EgSampler *s2 = make(0.8f, 2, 1.0f, 1.0f, 12, 6);
    const double quarter[6] = {0.25, 0.25, 0.25, 0.25, 0, 0};
    check_frequencies("top_k=2 over a 4-way tie", s2, flat, 6, quarter, 4000);
    eg_sampler_free(s2);
}

/* The `<=` of HF's rule at exact boundaries: four equal logits have probability exactly 1/4
 * each and cumulative sums 1/4, 1/2, 3/4, 1 in ascending order. top_p = 0.5 removes the two with
 * cumsum <= 0.5 (a `<` rule would keep three); top_p = 0.75 removes one. Equal logits rank by
 * id, so the survivors are the lowest ids. */
static void test_top_p_boundary(void) {
    const float x[4] = {2.0f, 2.0f, 2.0f, 2.0f};
    EgSampler *half = make(1.0f, 0, 0.5f, 1.0f, 5, 4);
    const double p_half[4] = {0.5, 0.5, 0, 0};
    check_frequencies("top_p=0.5 on 4 equal", half, x, 4, p_half, 4000);
    EgSampler *three = make(1.0f, 0, 0.75f, 1.0f, 6, 4);
    const double p_three[4] = {1.0 / 3, 1.0 / 3, 1.0 / 3, 0};
    check_frequencies("top_p=0.75 on 4 equal", three, x, 4, p_three, 6000);
    eg_sampler_free(half);
    eg_sampler_free(three);
}

static void test_reproducible(void) {
    enum { V = 101, N = 300 };
    float x[V];
    for (int i = 0; i < V; i++)
        x[i] = (float)((i * 37) % 101) / 25.0f; /* exactly computed, the same everywhere */
    int32_t a[N], b[N], c[N];
    EgSampler *sa = make(0.9f, 0, 1.0f, 1.0f, 42, V);
    EgSampler *sb = make(0.9f, 0, 1.0f, 1.0f, 42, V);
    EgSampler *sc = make(0.9f, 0, 1.0f, 1.0f, 43, V);
    for (int i = 0; i < N; i++) {
        a[i] = step(sa, x, NULL, 0);
        b[i] = step(sb, x, NULL, 0);
        c[i] = step(sc, x, NULL, 0);
    }
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, different sequences");
    int differ = 0;
    for (int i = 0; i < N; i++)
        differ += a[i] != c[i];
    CHECK(differ > N / 2, "seeds 42 and 43 agree on %d of %d draws", N - differ, N);

    /* Pinned values: the generator, the exp and the walk are all platform-independent, so these
     * must come out the same on every machine and compiler. A change here changes what every
     * seeded request in production returns; update it only on purpose. */
    EgSampler *pin = make(0.8f, 40, 0.95f, 1.3f, 12345, V);
    const int32_t ctx[] = {3, 14, 15, 92, 65};
    const int32_t expect[16] = {76, 16, 98, 8, 54, 2, 19, 30, 38, 90, 79, 51, 84, 95, 16, 87};
    int32_t got[16];
    for (int i = 0; i < 16; i++)
        got[i] = step(pin, x, ctx, 5);
    CHECK(memcmp(got, expect, sizeof got) == 0,
          "pinned sequence changed: %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", got[0],
          got[1], got[2], got[3], got[4], got[5], got[6], got[7], got[8], got[9], got[10], got[11],
          got[12], got[13], got[14], got[15]);
    eg_sampler_free(pin);

    /* The same on a larger vocabulary through top-p alone, where the light-tail cut and the
     * boundary quickselect do the work. */
    enum { V2 = 4096 };
    float *y = malloc(V2 * sizeof *y);
    for (uint32_t i = 0; i < V2; i++)
        y[i] = (float)((i * 2654435761u) % 4099u) / 500.0f;
    EgSampler *pin2 = make(1.1f, 0, 0.9f, 1.0f, 7, V2);
    const int32_t expect2[8] = {2868, 1139, 3431, 4018, 4062, 3584, 235, 417};
    int32_t got2[8];
    for (int i = 0; i < 8; i++)
        got2[i] = step(pin2, y, NULL, 0);
    CHECK(memcmp(got2, expect2, sizeof got2) == 0,
          "pinned top-p sequence changed: %d %d %d %d %d %d %d %d", got2[0], got2[1], got2[2],
          got2[3], got2[4], got2[5], got2[6], got2[7]);
    eg_sampler_free(pin2);
    free(y);
    eg_sampler_free(sa);
    eg_sampler_free(sb);
    eg_sampler_free(sc);
}

/* 20000 draws from a small known distribution against the reference HF rules, for plain
 * temperature sampling, top-k, top-p and both (the survivors renormalise, the rest never
 * appear). */
static void test_distributions(void) {
    enum { V = 5, DRAWS = 20000 };
    const float x[V] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f};
    struct {
        const char *what;
        float temperature;
        uint32_t top_k;
        float top_p;
        int kept;
    } cases[] = {
        {"T=1", 1.0f, 0, 1.0f, 5},
        {"T=0.5", 0.5f, 0, 1.0f, 5},
        {"T=2", 2.0f, 0, 1.0f, 5},
        {"top_k=2", 1.0f, 2, 1.0f, 2},
        {"top_k=3", 1.0f, 3, 1.0f, 3},
        {"top_p=0.8", 1.0f, 0, 0.8f, 2},         /* ascending cumsum .011 .063 .147 .376 1 */
        {"top_p=0.9", 1.0f, 0, 0.9f, 3},         /* .147 > .1 stays */
        {"top_k=3,top_p=0.9", 1.0f, 3, 0.9f, 2}, /* renormalised over 3 first: .090 <= .1 */
        {"T=0.5,top_p=0.95", 0.5f, 0, 0.95f, 2},
    };
    double p_t1[V] = {0}, p_t05[V] = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double prob[V];
        reference_probs(x, V, cases[c].temperature, cases[c].top_k, cases[c].top_p, prob);
        int kept = 0;
        for (int i = 0; i < V; i++)
            kept += prob[i] > 0.0;
        /* Guards the reference itself against the hand-worked numbers above. */
        CHECK(kept == cases[c].kept, "%s: reference keeps %d, expected %d", cases[c].what, kept,
              cases[c].kept);
        EgSampler *s =
            make(cases[c].temperature, cases[c].top_k, cases[c].top_p, 1.0f, test_rng_u64(), V);
        check_frequencies(cases[c].what, s, x, V, prob, DRAWS);
        eg_sampler_free(s);
        if (c == 0) memcpy(p_t1, prob, sizeof prob);
        if (c == 1) memcpy(p_t05, prob, sizeof prob);
    }
    /* Hand-computed softmax at T=1, so the reference is not only checked against itself. */
    const double e[V] = {exp(1.0), exp(2.0), exp(0.5), exp(-1.0), exp(3.0)};
    const double z = e[0] + e[1] + e[2] + e[3] + e[4];
    for (int i = 0; i < V; i++)
        CHECK(fabs(p_t1[i] - e[i] / z) < 1e-12, "reference softmax token %d", i);
    /* T=0.5 sharpens: the top token gains (0.62 -> 0.87), every other token loses. */
    CHECK(p_t05[4] > p_t1[4] + 0.2, "T=0.5 should sharpen the top token");
    for (int i = 0; i < 4; i++)
        CHECK(p_t05[i] < p_t1[i], "T=0.5 should lower token %d", i);
}

/* Vocabulary-sized inputs, where the partial selection paths matter: every sampled token must be
 * one HF's rules keep, and the kept mass must match. Logit patterns include sorted and all-equal
 * inputs, which defeat naive quickselect pivots. */
static void test_large_vocab(void) {
    enum { V = 32000, DRAWS = 3000 };
    float *x = malloc(V * sizeof *x);
    double *prob = malloc(V * sizeof *prob);
    struct {
        const char *what;
        int pattern; /* 0 random normal, 1 ascending, 2 descending, 3 all equal, 4 few levels */
        float temperature;
        uint32_t top_k;
        float top_p;
    } cases[] = {
        {"random top_p=0.9", 0, 0.7f, 0, 0.9f},
        {"random top_k=50", 0, 1.0f, 50, 1.0f},
        {"random top_k=50 top_p=0.8", 0, 1.0f, 50, 0.8f},
        {"random flat top_p=0.95", 0, 20.0f, 0, 0.95f},
        {"ascending top_k=40", 1, 1.0f, 40, 1.0f},
        {"ascending top_p=0.5", 1, 0.01f, 0, 0.5f},
        {"descending top_k=1000", 2, 0.5f, 1000, 1.0f},
        {"equal top_k=10 (all tie)", 3, 1.0f, 10, 1.0f},
        {"equal top_p=0.001", 3, 1.0f, 0, 0.001f},
        {"levels top_k=100", 4, 1.0f, 100, 1.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int i = 0; i < V; i++) {
            switch (cases[c].pattern) {
            case 0:
                x[i] = 3.0f * test_rng_normal();
                break;
            case 1:
                x[i] = (float)i / 1000.0f;
                break;
            case 2:
                x[i] = -(float)i / 1000.0f;
                break;
            case 3:
                x[i] = 1.0f;
                break;
            default:
                x[i] = (float)(i % 7);
                break;
            }
        }
        reference_probs(x, V, cases[c].temperature, cases[c].top_k, cases[c].top_p, prob);
        int kept = 0;
        for (int i = 0; i < V; i++)
            kept += prob[i] > 0.0;
        EgSampler *s =
            make(cases[c].temperature, cases[c].top_k, cases[c].top_p, 1.0f, test_rng_u64(), V);
        int outside = 0, top_hits = 0;
        /* The 10 most likely kept tokens' combined mass, compared with their drawn share. */
        double top_mass = 0.0;
        bool *is_top = calloc(V, sizeof *is_top);
        for (int t = 0; t < 10; t++) {
            int best = -1;
            for (int i = 0; i < V; i++)
                if (!is_top[i] && prob[i] > 0 && (best < 0 || prob[i] > prob[best])) best = i;
            if (best < 0) break;
            is_top[best] = true;
            top_mass += prob[best];
        }
        int distinct = 0;
        bool *seen = calloc(V, sizeof *seen);
        for (int d = 0; d < DRAWS; d++) {
            const int32_t id = step(s, x, NULL, 0);
            if (id < 0 || id >= V) continue;
            outside += prob[id] == 0.0;
            top_hits += is_top[id];
            distinct += !seen[id];
            seen[id] = true;
        }
        /* top_mass can round to just over 1 when the top 10 are all the kept tokens */
        const double sd = sqrt(DRAWS * top_mass * fmax(0.0, 1.0 - top_mass));
        CHECK(outside == 0, "%s: %d draws outside the %d tokens HF keeps", cases[c].what, outside,
              kept);
        CHECK(fabs(top_hits - DRAWS * top_mass) <= 5.0 * sd + 1.0,
              "%s: top-10 drawn %d times, expected %.1f +- %.1f", cases[c].what, top_hits,
              DRAWS * top_mass, sd);
        if (cases[c].pattern == 3 && cases[c].top_k)
            CHECK(distinct > 1000, "%s: only %d distinct tokens, ties were cut", cases[c].what,
                  distinct);
        if (cases[c].pattern == 3 && cases[c].top_p < 1.0f)
            /* 1 - 0.001f is a hair under 0.999: 33 of 32000 equal tokens survive, not 32. */
            CHECK(kept >= 32 && kept <= 34 && distinct <= kept, "%s: kept %d, drew %d distinct",
                  cases[c].what, kept, distinct);
        free(is_top);
        free(seen);
        eg_sampler_free(s);
    }
    free(x);
    free(prob);
}

static void test_nan_and_inf(void) {
    EgError err = {0};
    float x[6] = {NAN, 1.0f, NAN, 2.0f, -INFINITY, 0.5f};
    EgSampler *g = make(0.0f, 0, 1.0f, 1.0f, 0, 6);
    CHECK(step(g, x, NULL, 0) == 3, "greedy must skip NaN");
    x[0] = NAN;
    x[3] = NAN;
    CHECK(step(g, x, NULL, 0) == 1, "greedy must skip NaN at the old argmax");

    /* Sampling never draws NaN or -inf tokens, with and without the filters. */
    const float y[6] = {NAN, 1.0f, NAN, 2.0f, -INFINITY, 0.5f};
    double prob[6];
    reference_probs(y, 6, 1.0f, 0, 1.0f, prob);
    EgSampler *s = make(1.0f, 0, 1.0f, 1.5f, 3, 6);
    check_frequencies("NaN logits", s, y, 6, prob, 6000);
    EgSampler *sk = make(1.0f, 5, 0.99f, 1.0f, 4, 6);
    reference_probs(y, 6, 1.0f, 5, 0.99f, prob);
    check_frequencies("NaN logits, top_k=5 top_p=0.99", sk, y, 6, prob, 6000);

    /* Nothing usable: an error, not a crash or a made-up id. */
    const float none[6] = {NAN, -INFINITY, NAN, NAN, -INFINITY, NAN};
    err.msg[0] = 0;
    CHECK(eg_sampler_next(g, none, NULL, 0, &err) == -1 && err.msg[0], "greedy: all NaN/-inf");
    err.msg[0] = 0;
    CHECK(eg_sampler_next(s, none, NULL, 0, &err) == -1 && err.msg[0], "sampled: all NaN/-inf");
    CHECK(eg_sampler_next(sk, none, NULL, 0, &err) == -1, "filtered: all NaN/-inf");

    /* +inf takes all the mass, shared equally among the +inf tokens. */
    const float inf[6] = {1.0f, INFINITY, 3.0f, INFINITY, NAN, 100.0f};
    const double p_inf[6] = {0, 0.5, 0, 0.5, 0, 0};
    check_frequencies("+inf logits", s, inf, 6, p_inf, 4000);
    CHECK(step(g, inf, NULL, 0) == 1, "greedy on +inf");
    eg_sampler_free(g);
    eg_sampler_free(s);
    eg_sampler_free(sk);
}

/* A tiny (even subnormal) temperature is near-greedy, not a coin flip between the logits that
 * overflow float32 when divided by it. */
static void test_tiny_temperature(void) {
    const float x[4] = {1.0f, 3.0f, 2.9f, -5.0f};
    EgSampler *s = make(1e-40f, 0, 1.0f, 1.0f, 21, 4);
    EgSampler *k = make(1e-40f, 3, 0.9f, 1.0f, 22, 4);
    int wrong = 0;
    for (int i = 0; i < 500; i++) {
        wrong += step(s, x, NULL, 0) != 1;
        wrong += step(k, x, NULL, 0) != 1;
    }
    CHECK(wrong == 0, "temperature 1e-40 strayed from the argmax %d times", wrong);
    eg_sampler_free(s);
    eg_sampler_free(k);
}

/* Not a pass/fail check: the per-token cost at a 32k vocabulary, for the record. */
static void report_speed(void) {
    enum { V = 32000, STEPS = 200 };
    float *x = malloc(V * sizeof *x);
    random_logits(x, V, 3.0f);
    int32_t ctx[512];
    for (int i = 0; i < 512; i++)
        ctx[i] = (int32_t)(test_rng_u64() % V);
    struct {
        const char *what;
        float t, p, pen;
        uint32_t k;
    } cfg[] = {
        {"greedy", 0.0f, 1.0f, 1.0f, 0},
        {"T=0.7", 0.7f, 1.0f, 1.0f, 0},
        {"T=0.7 top_k=50", 0.7f, 1.0f, 1.0f, 50},
        {"T=0.7 top_p=0.9", 0.7f, 0.9f, 1.0f, 0},
        {"T=0.7 top_k=50 top_p=0.9 pen=1.2 ctx=512", 0.7f, 0.9f, 1.2f, 50},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        EgSampler *s = make(cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].pen, 1, V);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < STEPS; i++)
            step(s, x, ctx, 512);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3;
        printf("  %-42s %7.1f us/token (vocab %d)\n", cfg[c].what, us / STEPS, V);
        eg_sampler_free(s);
    }
    free(x);
}

int main(void) {
    test_rng_init();
    test_defaults_and_validation();
    test_greedy();
    test_repetition_penalty();
    test_filters_reduce_to_greedy();
    test_top_k_keeps_ties();
    test_top_p_boundary();
    test_reproducible();
    test_distributions();
    test_large_vocab();
    test_nan_and_inf();
    test_tiny_temperature();
    report_speed();
    return test_finish();
}
