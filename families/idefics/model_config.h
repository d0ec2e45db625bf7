/* The IDEFICS (v1) config.json: top-level decoder fields plus the nested vision_config and
 * perceiver_config. Missing keys take the transformers defaults (docs: idefics.md §1.1–1.3),
 * unknown keys are ignored, wrong types and inconsistent sizes are errors naming key and file. */
#ifndef EGRET_MODEL_CONFIG_H
#define EGRET_MODEL_CONFIG_H

#include <stddef.h>

#include "runtime/error.h"

typedef enum EgActivation {
    EG_ACT_GELU,
    EG_ACT_QUICK_GELU,
    EG_ACT_SILU,
    EG_ACT_RELU,
    EG_ACT_GELU_TANH
} EgActivation;

/* Canonical name ("gelu", "quick_gelu", "silu", "relu", "gelu_pytorch_tanh"). */
const char *eg_activation_name(EgActivation act);

typedef struct EgVisionConfig {
    int embed_dim, image_size, patch_size, intermediate_size, num_hidden_layers,
        num_attention_heads, num_channels;
    EgActivation hidden_act;
    float layer_norm_eps;
} EgVisionConfig;

typedef struct EgPerceiverConfig {
    int n_latents, depth, n_heads, head_dim;
    int qk_layer_norms;
} EgPerceiverConfig;

typedef struct EgModelConfig {
    int vocab_size, additional_vocab_size, hidden_size, intermediate_size, num_hidden_layers,
        num_attention_heads;
    EgActivation hidden_act;
    float rms_norm_eps;
    int pad_token_id, bos_token_id, eos_token_id;
    int tie_word_embeddings, cross_layer_interval, qk_layer_norms, use_resampler;
    int alpha_vector;            /* alpha_type "vector" (else "float") */
    float rope_theta;            /* rope_parameters.rope_theta, else 10000 */
    int max_position_embeddings; /* default 2048 (only informative: IDEFICS extends RoPE on demand)
                                  */
    char architecture[32];       /* the IDEFICS class named in "architectures" (informative) */
    char dtype[16];              /* "float32", "bfloat16", ... as written (informative) */
    EgVisionConfig vision;
    EgPerceiverConfig perceiver;
} EgModelConfig;

void eg_model_config_defaults(EgModelConfig *cfg); /* the documented defaults */
/* json need not be NUL-terminated; source_name is used in error messages. */
int eg_model_config_parse(const char *json, size_t len, const char *source_name, EgModelConfig *cfg,
                          EgError *err);
int eg_model_config_load(const char *config_json_path, EgModelConfig *cfg, EgError *err);

#endif
