/* Image preprocessing for the vision encoder, as HF IdeficsImageProcessor does it: bicubic resize
 * of the RGB image to SxS (aspect ratio not kept) with the reference's exact integer arithmetic,
 * rescale by 1/255, then per-channel normalization (x - mean) / std, written channels-first as
 * float32 [3, S, S]. CPU code: it runs once per request image. */
#ifndef EGRET_PREPROCESS_H
#define EGRET_PREPROCESS_H

#include <stdint.h>

#include "runtime/error.h"
#include "vision/image_decode.h"

typedef struct EgPixelNorm {
    float mean[3];
    float std[3];
} EgPixelNorm;

/* OpenAI CLIP's statistics, IDEFICS' defaults (image_mean / image_std). */
extern const EgPixelNorm eg_clip_norm;

/* Which reference's integer arithmetic the bicubic resize reproduces. Both use the same filter
 * (Keys cubic, a = -0.5, support widened by the scale when downscaling = antialiased), the same
 * per-output-pixel normalized double weights, horizontal pass first into a rounded and clipped
 * uint8 intermediate, then the vertical pass; they differ in the weights' fixed-point precision,
 * which moves about 0.5% of the output values by one level (rarely two). */
typedef enum EgResampleArith {
    /* Pillow 9.4 Image.resize(BICUBIC) on RGB: 22 fractional bits (32 - 8 - 2). Reproduces
     * tests/data/preprocess/preprocess_golden exactly; PIL is what IdeficsImageProcessor
     * resizes with in transformers 4.x. The default. */
    EG_RESAMPLE_PIL = 0,
    /* torch's uint8 antialiased bicubic (interpolate(..., antialias=True) on uint8, as
     * torchvision's resize does): int16 weights with as many fractional bits as keep the largest
     * below 2^15. Reproduces processor_golden (HF IdeficsProcessor, transformers 5.17) exactly. */
    EG_RESAMPLE_TORCH = 1,
    /* Pillow 13 (what HF MllamaImageProcessor resizes with in the reference environment):
     * Pillow's arithmetic, but the vertical pass runs first when the height shrinks by more than
     * twice as many pixels as the width (Resample.c's ImagingResampleInner in Pillow 13.0), so
     * the uint8 intermediate, and with it about 10% of the output values, differ by one level. */
    EG_RESAMPLE_PIL13 = 2,
} EgResampleArith;

/* PIL's resample filters that the families use (PIL numbers: BILINEAR 2, BICUBIC 3). */
typedef enum EgResampleFilter {
    EG_FILTER_BICUBIC = 0,  /* IDEFICS */
    EG_FILTER_BILINEAR = 1, /* triangle filter, support 1 (widened when shrinking): mllama */
} EgResampleFilter;

/* Resizes packed 8-bit RGB src (src_w x src_h) to dst (dst_w x dst_h), bit for bit like the
 * reference named by arith. A pass whose size does not change is skipped, so an image already at
 * the target size is copied unchanged. */
int eg_image_resize_bicubic(const uint8_t *src, uint32_t src_w, uint32_t src_h, uint8_t *dst,
                            uint32_t dst_w, uint32_t dst_h, EgResampleArith arith, EgError *err);
/* The same with any filter, polling stop_fn (NULL: never) between rows like
 * EgPreprocessConfig.stop: when it returns non-zero the call fails with "resize: stopped". */
int eg_image_resize(const uint8_t *src, uint32_t src_w, uint32_t src_h, uint8_t *dst,
                    uint32_t dst_w, uint32_t dst_h, EgResampleFilter filter, EgResampleArith arith,
                    int (*stop_fn)(void *user), void *stop_user, EgError *err);

typedef struct EgPreprocessConfig {
    int size;         /* output side S (the vision encoder's image_size) */
    EgPixelNorm norm; /* image_mean / image_std */
    EgResampleArith arith;
    /* Polled between rows of the resize (NULL: never): when it returns non-zero the call gives
     * up and fails ("resize: stopped"), so a caller gone away stops a large image's work. */
    int (*stop)(void *user);
    void *stop_user;
} EgPreprocessConfig;

/* size, CLIP normalization, Pillow arithmetic, no stop function. */
void eg_preprocess_config_default(EgPreprocessConfig *cfg, int size);

/* img -> float32 [3, S, S] channels-first in out (3 * S * S floats): resize to SxS, then
 * (v / 255 - mean[c]) / std[c]. */
int eg_preprocess_image_cfg(const EgImage *img, const EgPreprocessConfig *cfg, float *out,
                            EgError *err);

/* The same with eg_preprocess_config_default(size): what the IDEFICS vision encoder expects. */
int eg_preprocess_image(const EgImage *img, int size, float *out, EgError *err);

#endif
