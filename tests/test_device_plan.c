/* What `egret bench --random-weights` and `--plan` rest on:
 * - an mllama model built from config.json alone (generated weights) loads, encodes an image,
 *   prefills and decodes to finite, varied logits, and is the same model on every load;
 * - the dry-run device (EGRET_DEVICE_PLAN, runtime/vk_context.h) counts exactly the device
 *   bytes a real run allocates, after the load and at the peak of a prefill and a batched
 *   decode step (so figures computed with --plan for models too large here can be trusted),
 *   while nothing runs on it (its logits read back as zeros). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/family.h"
#include "test_util.h"

enum { T = 9, CAPACITY = 40, MAX_VOCAB = 4096 };

typedef struct Usage {
    unsigned long long load, peak;
} Usage;

/* Loads dir with generated weights, on the dry-run device when plan, and runs a T-token prompt
 * with one image in two sequences, then one batched decode step. logits: 2 × vocab. */
static int run(const char *dir, int fp32, EgWeightFormat quant, int plan, Usage *u, float *logits,
               uint32_t *vocab, EgError *err) {
    if (plan)
        setenv("EGRET_DEVICE_PLAN", "1", 1);
    else
        unsetenv("EGRET_DEVICE_PLAN");
    EgModelOptions mo = {.fp32 = fp32, .random_weights = 1, .quant = quant, .max_images = 2};
    EgFamilyModel *m = eg_family_open(dir, &mo, err);
    unsetenv("EGRET_DEVICE_PLAN");
    if (!m) return -1;
    const EgFamilyInfo *info = &m->info;
    u->load = atomic_load(&info->vk->device_bytes);
    *vocab = info->vocab;
    int32_t ids[T], img[T], next[2] = {7, 11};
    float *pixels = malloc(info->image_floats * sizeof *pixels);
    int rc = pixels && info->vocab <= MAX_VOCAB ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < info->image_floats; i++)
        pixels[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
    for (int t = 0; t < T; t++)
        ids[t] = 3 + (t * 37) % (int32_t)(info->vocab - 3);
    if (rc == 0) {
        eg_family_bench_inputs(m, ids, T, pixels);
        eg_family_image_index(m, ids, T, 1, img);
        rc = eg_family_encode(m, pixels, 1, err);
    }
    EgFamilySeq *s[2] = {0};
    for (int k = 0; k < 2 && rc == 0; k++) {
        s[k] = eg_fseq_new(m, CAPACITY, err);
        rc = !s[k] || eg_fseq_set_images(s[k], pixels, 1, err) ||
             eg_fseq_forward(s[k], ids, img, T, logits, 0, err);
    }
    if (rc == 0) rc = eg_fseq_forward_batch(s, 2, next, logits, err);
    u->peak = atomic_load(&info->vk->device_bytes_peak);
    eg_fseq_free(s[0]);
    eg_fseq_free(s[1]);
    free(pixels);
    eg_family_close(m);
    return rc ? -1 : 0;
}

static int mllama_random_weights(void) {
    const char *dir = test_data_path("mllama/tiny-mllama-a");
    static float a[2 * MAX_VOCAB], b[2 * MAX_VOCAB];
    for (int fp32 = 0; fp32 < 2; fp32++) {
        const char *what = fp32 ? "fp32" : "fp16";
        EgError err = {0};
        Usage u;
        uint32_t V = 0;
        for (size_t i = 0; i < 2 * MAX_VOCAB; i++)
            a[i] = b[i] = NAN; /* poison */
        REQUIRE(run(dir, fp32, EG_WEIGHTS_DENSE, 0, &u, a, &V, &err) == 0, "%s: %s", what, err.msg);
        REQUIRE(run(dir, fp32, EG_WEIGHTS_DENSE, 0, &u, b, &V, &err) == 0, "%s again: %s", what,
                err.msg);
        int finite = 1, varied = 0;
        for (uint32_t i = 0; i < 2 * V; i++) {
            finite &= isfinite(a[i]);
            varied |= a[i] != a[0];
        }
        CHECK(finite && varied, "%s: logits not finite or all equal", what);
        CHECK(memcmp(a, b, 2 * V * sizeof *a) == 0, "%s: two loads gave different models", what);
    }
    return 0;
}

static int plan_matches_real(const char *dir, int fp32, EgWeightFormat quant) {
    static float logits[2 * MAX_VOCAB];
    EgError err = {0};
    Usage real, plan;
    uint32_t V = 0;
    REQUIRE(run(dir, fp32, quant, 0, &real, logits, &V, &err) == 0, "%s real: %s", dir, err.msg);
    for (size_t i = 0; i < 2 * MAX_VOCAB; i++)
        logits[i] = NAN;
    REQUIRE(run(dir, fp32, quant, 1, &plan, logits, &V, &err) == 0, "%s plan: %s", dir, err.msg);
    CHECK(plan.load == real.load, "%s %s: the plan's load holds %llu bytes, the real one %llu", dir,
          eg_weight_format_name(quant), plan.load, real.load);
    CHECK(plan.peak == real.peak, "%s %s: planned peak %llu bytes, real peak %llu", dir,
          eg_weight_format_name(quant), plan.peak, real.peak);
    CHECK(real.peak > real.load && real.load > 0, "%s: peak %llu, load %llu", dir, real.peak,
          real.load);
    int zeros = 1;
    for (uint32_t i = 0; i < 2 * V; i++)
        zeros &= logits[i] == 0.0f;
    CHECK(zeros, "%s: the dry run's logits are not the zeros of a device that ran nothing", dir);
    return 0;
}

int main(void) {
    /* a REQUIRE that fails ends the case, the others still run */
    (void)mllama_random_weights();
    (void)plan_matches_real(test_data_path("mllama/tiny-mllama-a"), 0, EG_WEIGHTS_DENSE);
    (void)plan_matches_real(test_data_path("mllama/tiny-mllama-b"), 1, EG_WEIGHTS_DENSE);
    (void)plan_matches_real(test_model_path("shapes-idefics"), 0, EG_WEIGHTS_Q4);
    return test_finish();
}
