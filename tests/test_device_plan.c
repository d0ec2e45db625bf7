/* What `egret bench --plan` rests on: the dry-run device (EGRET_DEVICE_PLAN, runtime/vk_context.h)
 * counts exactly the device bytes a real run allocates, after the load and at the peak of a prefill
 * and a batched decode step (so figures computed with --plan for models too large here can be
 * trusted), while nothing runs on it (its logits read back as zeros). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "family_run.h"
#include "test_util.h"

static int plan_matches_real(const char *dir, int fp32, EgWeightFormat quant) {
    static float logits[2 * MAX_VOCAB];
    EgError err = {0};
    Usage real, plan;
    uint32_t V = 0;
    REQUIRE(family_run(dir, fp32, quant, 0, &real, logits, &V, &err) == 0, "%s real: %s", dir,
            err.msg);
    for (size_t i = 0; i < 2 * MAX_VOCAB; i++)
        logits[i] = NAN;
    REQUIRE(family_run(dir, fp32, quant, 1, &plan, logits, &V, &err) == 0, "%s plan: %s", dir,
            err.msg);
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

/* The published 11B config, planned: it must load here (whole, its vision tile position table
 * passed a CPU device's 128 MiB binding limit) and count its 10.6 billion fp16 weights. */
static int plan_llama_11b(void) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/../../bench/configs/llama-3.2-11b-vision", test_data_path(""));
    EgError err = {0};
    setenv("EGRET_DEVICE_PLAN", "1", 1);
    EgModelOptions mo = {.random_weights = 1, .max_images = 1};
    EgFamilyModel *m = eg_family_open(dir, &mo, &err);
    unsetenv("EGRET_DEVICE_PLAN");
    REQUIRE(m != NULL, "planning %s: %s", dir, err.msg);
    unsigned long long load = atomic_load(&m->info.vk->device_bytes);
    CHECK(load > 21300000000ull && load < 22500000000ull,
          "11B planned at %llu bytes, not its ~21.3 GB of fp16 weights and some scratch", load);
    eg_family_close(m);
    return 0;
}

int main(void) {
    /* a REQUIRE that fails ends the case, the others still run */
    (void)plan_matches_real(test_data_path("mllama/tiny-mllama-a"), 0, EG_WEIGHTS_DENSE);
    (void)plan_matches_real(test_data_path("mllama/tiny-mllama-b"), 1, EG_WEIGHTS_DENSE);
    (void)plan_matches_real(test_data_path("mllama/tiny-mllama-a"), 0, EG_WEIGHTS_Q4);
    (void)plan_matches_real(test_model_path("shapes-idefics"), 0, EG_WEIGHTS_Q4);
    /* an AWQ folder: its q4 matrices allocated, its rows not converted for a plan */
    (void)plan_matches_real(test_data_path("awq/tiny-mllama-awq"), 0, EG_WEIGHTS_DENSE);
    (void)plan_llama_11b();
    return test_finish();
}
