/* mllama's image stage on the device: the tiled vision encoder (patch embedding, class token,
 * gated tile and position embeddings, local encoder keeping its intermediate outputs, gated
 * global encoder, channel-interleaved concatenation) and the multi-modal projector into the text
 * width, as HF's MllamaVisionModel + multi_modal_projector compute them (docs/mllama.md "Vision
 * encoder"). */
#ifndef EGRET_MLLAMA_VISION_ENCODER_H
#define EGRET_MLLAMA_VISION_ENCODER_H

#include <stdint.h>

#include "families/mllama/model.h"

/* n image slots (B·N: every sample's images, padding images included), each of J =
 * max_num_tiles tiles, as the image processor packs them. */
typedef struct EgMllamaImages {
    const float *pixels; /* [n][J][C][S][S], normalized */
    /* as eg_mllama_preprocess_images (vision/tile_preprocess.h) writes them: */
    const int32_t *aspect_ratio_ids;  /* [n]: 0 (padding image) .. len(supported_aspect_ratios) */
    const int32_t *aspect_ratio_mask; /* [n][J]: 1 for the image's tiles (at least one), else 0 */
    uint32_t n;
} EgMllamaImages;

typedef struct EgMllamaVisionOut {
    EgBuffer vision; /* [n][J][P][vision_output_dim]: the vision model's last_hidden_state */
    EgBuffer cross; /* [n][J][P][text hidden]: the projector's output, what cross-attention reads */
} EgMllamaVisionOut;

/* Checks the images (ids in range, masks 0/1 with a tile), uploads them, begins *cmd and records
 * the image stage into it; the caller may record more work reading out->cross, then submits.
 * Device buffers live in `scratch` and host-visible tables in `host`, both of which must
 * outlive the submission. On failure nothing is left recorded. */
int eg_mllama_vision_begin(EgMllamaModel *m, EgArena *scratch, EgArena *host,
                           const EgMllamaImages *in, EgCmd *cmd, EgMllamaVisionOut *out,
                           EgError *err);

/* Runs the image stage and reads the results back as float (for tests and tools); either output
 * may be NULL. */
int eg_mllama_vision_run(EgMllamaModel *m, const EgMllamaImages *in, float *vision_out,
                         float *cross_out, EgError *err);

#endif
