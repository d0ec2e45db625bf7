/* The vision half of an mllama config.json ("vision_config", HF MllamaVisionConfig): the tiled
 * ViT with its local and gated global encoders (docs/mllama.md "Vision encoder",
 * ../shared/docs/mllama.md §1.1). Missing keys take HF's defaults; wrong types and inconsistent
 * sizes are errors naming the key. */
#ifndef EGRET_MLLAMA_VISION_CONFIG_H
#define EGRET_MLLAMA_VISION_CONFIG_H

#include <cjson/cJSON.h>

#include "runtime/error.h"
#include "runtime/ops.h"

#define EG_MLLAMA_MAX_INTERMEDIATE 32  /* intermediate_layers_indices entries (hub: 5) */
#define EG_MLLAMA_MAX_ASPECT_RATIOS 64 /* supported_aspect_ratios entries (hub: 8) */

typedef struct EgMllamaVisionConfig {
    int hidden_size, num_hidden_layers, num_global_layers, attention_heads, num_channels,
        intermediate_size, vision_output_dim, image_size, patch_size, max_num_tiles;
    EgOpAct hidden_act;
    float norm_eps; /* the encoder layers' LayerNorms; layernorm_pre/post always use 1e-5 */
    /* local-encoder layers whose outputs (HF 5.x: the output of layer i, not its input) are
     * concatenated, channel-interleaved, after the global encoder's output */
    int n_intermediate;
    int intermediate_layers_indices[EG_MLLAMA_MAX_INTERMEDIATE];
    /* (rows, columns) of tiles; only the count reaches the model: the aspect-ratio embedding
     * tables have n_aspect_ratios + 1 rows (row 0 for padding images) */
    int n_aspect_ratios;
    int supported_aspect_ratios[EG_MLLAMA_MAX_ASPECT_RATIOS][2];
} EgMllamaVisionConfig;

/* Layers' LayerNorm epsilon outside the encoder layers (nn.LayerNorm's default). */
#define EG_MLLAMA_VISION_OUTER_EPS 1e-5f

void eg_mllama_vision_config_defaults(EgMllamaVisionConfig *cfg);
/* Parses the "vision_config" object (NULL: all defaults) and validates it; src names the file. */
int eg_mllama_vision_config_parse(const cJSON *vision_config, const char *src,
                                  EgMllamaVisionConfig *cfg, EgError *err);

/* Derived sizes: patches per tile side, patches per tile with the class token (P), and that
 * rounded up to a multiple of 8 (the padded tile length the encoders run on). */
static inline int eg_mllama_vision_grid(const EgMllamaVisionConfig *c) {
    return c->image_size / c->patch_size;
}
static inline int eg_mllama_vision_patches(const EgMllamaVisionConfig *c) {
    return eg_mllama_vision_grid(c) * eg_mllama_vision_grid(c) + 1;
}
static inline int eg_mllama_vision_padded(const EgMllamaVisionConfig *c) {
    return (eg_mllama_vision_patches(c) + 7) / 8 * 8;
}

#endif
