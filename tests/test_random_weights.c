/* Random weights (egret bench --random-weights): a model built from config.json alone loads,
 * runs a prompt with an image to finite logits, and is the same model on every load (the values
 * come from the seed and the tensor names), in both precisions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/idefics/sequence.h"
#include "test_util.h"

static int logits_of(int fp32, float *out, EgError *err) {
    EgModelOptions mo = {.fp32 = fp32, .random_weights = 1};
    EgModel *m = eg_model_load(test_model_path("shapes-idefics"), &mo, err);
    if (!m) return -1;
    size_t per = 3 * (size_t)m->cfg.vision.image_size * m->cfg.vision.image_size;
    float *pixels = malloc(per * sizeof *pixels);
    for (size_t i = 0; i < per; i++)
        pixels[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
    int32_t ids[6] = {1, m->cfg.vocab_size, m->cfg.vocab_size + 1, m->cfg.vocab_size, 40, 41};
    int32_t img[6] = {-1, -1, 0, 0, 0, 0};
    EgSequence *s = eg_sequence_new(m, 8, err);
    int rc = !s || eg_sequence_set_images(s, pixels, 1, err) ||
             eg_sequence_forward(s, ids, img, 6, out, 0, err);
    eg_sequence_free(s);
    free(pixels);
    eg_model_free(m);
    return rc ? -1 : 0;
}

int main(void) {
    EgError err = {0};
    enum { V = 477 };
    float a[V], b[V];
    for (int fp32 = 0; fp32 < 2; fp32++) {
        for (int i = 0; i < V; i++)
            a[i] = b[i] = NAN; /* poison */
        REQUIRE(logits_of(fp32, a, &err) == 0, "random model: %s", err.msg);
        REQUIRE(logits_of(fp32, b, &err) == 0, "random model again: %s", err.msg);
        int finite = 1, varied = 0;
        for (int i = 0; i < V; i++) {
            finite &= isfinite(a[i]);
            varied |= a[i] != a[0];
        }
        CHECK(finite && varied, "%s: logits not finite or all equal", fp32 ? "fp32" : "fp16");
        CHECK(memcmp(a, b, sizeof a) == 0, "%s: two loads gave different models",
              fp32 ? "fp32" : "fp16");
    }
    return test_finish();
}
