/* The image stage of IDEFICS on the device: the CLIP ViT (last layer, class token included,
 * no post-layernorm) and, when the config says use_resampler, the perceiver resampler. */
#ifndef EGRET_IMAGE_ENCODER_H
#define EGRET_IMAGE_ENCODER_H

#include "families/idefics/model.h"

typedef struct EgImageFeatures {
    EgBuffer vit;      /* [n][Np+1][E]: ViT last_hidden_state */
    EgBuffer features; /* [n][S][E]: what cross-attention reads (perceiver output or vit) */
} EgImageFeatures;

/* Uploads n images of normalized pixels [n][C][size][size] (host float32) into `scratch`,
 * begins *cmd and records the image stage into it; the caller may record more work that reads
 * out->features, then submits. Scratch and outputs live in `scratch`, which must outlive the
 * submission. On failure nothing is left recorded (the command buffer is freed). */
int eg_image_encoder_begin(EgModel *m, EgArena *scratch, const float *pixels, uint32_t n,
                           EgCmd *cmd, EgImageFeatures *out, EgError *err);

/* Runs the image stage and reads results back (for tests and tools): vit_out [n][Np+1][E] and
 * features_out [n][S][E], either may be NULL. */
int eg_image_encoder_run(EgModel *m, const float *pixels, uint32_t n, float *vit_out,
                         float *features_out, EgError *err);

#endif
