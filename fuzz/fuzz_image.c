/* Fuzz target: request image bytes -> eg_image_decode (default limits) -> 64x64 preprocessing.
 * Beyond "no crash": a decoded image respects the limits, and preprocessing of any decoded image
 * succeeds with finite values (a failure there would be an error the request cannot explain). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vision/image_decode.h"
#include "vision/preprocess.h"

#define SIDE 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgImageLimits limits;
    eg_image_limits_default(&limits);
    EgImage img;
    EgError err;
    if (eg_image_decode(data, size, &limits, &img, &err) != 0) return 0;
    if (img.width == 0 || img.height == 0 || img.width > limits.max_width ||
        img.height > limits.max_height || (uint64_t)img.width * img.height > limits.max_pixels) {
        fprintf(stderr, "decoded %ux%u, outside the limits\n", img.width, img.height);
        abort();
    }
    static float out[3 * SIDE * SIDE];
    EgPreprocessConfig cfg;
    eg_preprocess_config_default(&cfg, SIDE);
    /* Both reference arithmetics, picked by the image so every input stays deterministic. */
    cfg.arith = (img.width ^ img.height) & 1 ? EG_RESAMPLE_TORCH : EG_RESAMPLE_PIL;
    if (eg_preprocess_image_cfg(&img, &cfg, out, &err) != 0) {
        fprintf(stderr, "preprocess of a decoded %ux%u image failed: %s\n", img.width, img.height,
                err.msg);
        abort();
    }
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
        if (!isfinite(out[i])) {
            fprintf(stderr, "preprocess output %zu is not finite\n", i);
            abort();
        }
    }
    eg_image_free(&img);
    return 0;
}
