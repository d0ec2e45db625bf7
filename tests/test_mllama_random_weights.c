/* `egret bench --random-weights` for mllama: a model built from config.json alone (generated
 * weights) loads, encodes an image, prefills and decodes to finite, varied logits, and is the
 * same model on every load (the values come from the seed and the tensor names), in both
 * precisions. */
#include <math.h>
#include <string.h>

#include "family_run.h"
#include "test_util.h"

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
        REQUIRE(family_run(dir, fp32, EG_WEIGHTS_DENSE, 0, &u, a, &V, &err) == 0, "%s: %s", what,
                err.msg);
        REQUIRE(family_run(dir, fp32, EG_WEIGHTS_DENSE, 0, &u, b, &V, &err) == 0, "%s again: %s",
                what, err.msg);
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

int main(void) {
    (void)mllama_random_weights();
    return test_finish();
}
