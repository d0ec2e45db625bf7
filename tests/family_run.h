/* One bench-like step for tests through the family interface (families/family.h): a model
 * with generated weights (on the dry-run device when plan) runs a T-token prompt with one image
 * in two sequences, then one batched decode step (test_device_plan, test_mllama_random_weights). */
#ifndef EGRET_TEST_FAMILY_RUN_H
#define EGRET_TEST_FAMILY_RUN_H

#include <stdlib.h>

#include "families/family.h"

enum { T = 9, CAPACITY = 40, MAX_VOCAB = 4096 };

typedef struct Usage {
    unsigned long long load, peak;
} Usage;

/* logits: 2 × vocab, at most MAX_VOCAB. */
static inline int family_run(const char *dir, int fp32, EgWeightFormat quant, int plan, Usage *u,
                             float *logits, uint32_t *vocab, EgError *err) {
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
    int rc = !pixels                   ? eg_fail(err, "out of host memory")
             : info->vocab > MAX_VOCAB ? eg_fail(err, "vocabulary %u > %d", info->vocab, MAX_VOCAB)
                                       : 0;
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

#endif
