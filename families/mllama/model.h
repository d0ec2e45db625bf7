/* An mllama (Llama 3.2 Vision) model: its config.json (top level + vision_config + the
 * text_config fields the folder checks need) and, on the device, the vision tower and the
 * multi-modal projector (families/mllama/vision_*.c). The text decoder's weights and forward
 * are families/mllama/text_*.c.
 *
 * Loading reads an HF checkpoint folder (config.json + model.safetensors, or shards with
 * model.safetensors.index.json) and refuses, naming what is wrong, a config that contradicts
 * itself and a folder whose tensors are missing or of the wrong shape, text tensors included. */
#ifndef EGRET_MLLAMA_MODEL_H
#define EGRET_MLLAMA_MODEL_H

#include <stdio.h>

#include "families/mllama/text_config.h"
#include "families/mllama/vision_config.h"
#include "runtime/ops.h"
#include "runtime/vk_staging.h"
#include "runtime/weight_loader.h"
#include "vision/tile_preprocess.h"

typedef struct EgMllamaConfig {
    EgMllamaVisionConfig vision;
    EgMllamaTextConfig text; /* text_config whole: shapes, RoPE, ids, eos */
    int image_token_index;   /* <|image|>; an embedding row past vocab_size */
    char dtype[16];          /* as written ("bfloat16", ...), informative */
} EgMllamaConfig;

/* json need not be NUL-terminated; source_name names the file in messages. */
int eg_mllama_config_parse(const char *json, size_t len, const char *source_name,
                           EgMllamaConfig *cfg, EgError *err);
int eg_mllama_config_load(const char *config_json_path, EgMllamaConfig *cfg, EgError *err);

/* The folder's preprocessor_config.json (HF MllamaImageProcessor) as vision/tile_preprocess.c
 * takes it, checked against cfg: its tile size and tile count must be the encoder's, and every
 * aspect-ratio id it makes must have a table row. Without the file: cfg's tile size and count with
 * 1/255 and CLIP's mean and std (what every published checkpoint's file says). Refuses what
 * tile_preprocess.c does not implement (resample other than bilinear, rescale or normalize off). */
int eg_mllama_preprocess_config_load(const char *dir, const EgMllamaConfig *cfg,
                                     EgMllamaPreprocessConfig *out, EgError *err);

/* One local or global vision encoder layer (pre-norm ViT block). */
typedef struct EgMllamaVisionLayer {
    EgBuffer ln1_w, ln1_b, ln2_w, ln2_b;
    EgMatrix qkv; /* [3D, D]: q, k, v stacked (no biases) */
    EgMatrix o;   /* [D, D], no bias */
    EgMatrix fc1, fc2;
    EgBuffer fc1_b, fc2_b;
    EgBuffer gate_attn, gate_ffn; /* [1] raw gates (tanh taken in the product); global only */
} EgMllamaVisionLayer;

typedef struct EgMllamaVision {
    EgMatrix patch; /* [D, C·p·p]: the patch convolution (no bias) */
    EgBuffer cls;   /* [D] */
    EgBuffer pos;   /* [P, D]: gated_positional_embedding.embedding */
    /* gated_positional_embedding.tile_embedding [R, J·P·D], one buffer [J·P, D] per ratio id:
     * whole, 11B's passes the 128 MiB a CPU device lets a shader bind (147 MB in fp16) */
    EgBuffer *tile_pos;
    EgBuffer pre_tile, post_tile; /* [R, J·D] */
    /* tanh of the three embedding gates, read at load: they scale whole tables */
    float pos_gate, pre_tile_gate, post_tile_gate;
    EgBuffer ln_pre_w, ln_pre_b, ln_post_w, ln_post_b;
    EgMllamaVisionLayer *local, *global;
    EgMatrix proj; /* [H, vision_output_dim]: multi_modal_projector */
    EgBuffer proj_b;
} EgMllamaVision;

typedef struct EgMllamaOptions {
    int fp32;           /* 1: fp32 weights and activations (exact mode); 0: fp16 (fast) */
    const char *device; /* Vulkan device choice, see runtime/vk_context.h */
    FILE *progress;     /* where to print what is loaded; NULL: quiet */
    /* the projections' format (docs/quantization.md); the patch embedding, position tables,
     * norms, biases and gates stay in the storage precision */
    EgWeightFormat quant;
    const char *pipeline_cache_dir; /* runtime/vk_pipeline_cache.h; NULL: none */
    int random_weights; /* 1: only config.json is read, weights are generated (benchmarks) */
} EgMllamaOptions;

typedef struct EgMllamaModel {
    EgMllamaConfig cfg;
    EgMllamaPreprocessConfig preprocess; /* preprocessor_config.json */
    char dir[1024];
    EgVk vk;
    EgOps ops;
    EgArena weights;
    EgStaging staging;
    EgMllamaVision vision;
    EgWeightFormat quant; /* the projections' format, vision and text */
    /* the weights' bytes and formats by group: the vision tower's here at load, the text
     * decoder's added by its load (EgMllamaTextOptions.report) */
    EgWeightReport weight_report;
} EgMllamaModel;

/* Loads config.json and preprocessor_config.json, checks every tensor of the folder (names,
 * shapes) and uploads the vision tower and the projector. */
EgMllamaModel *eg_mllama_model_load(const char *dir, const EgMllamaOptions *opt, EgError *err);
void eg_mllama_model_free(EgMllamaModel *m);
/* Every tensor eg_mllama_model_load and the text loader read from dir with the projections in
 * `quant` (or the folder's pre-quantized format), checked without a device and passed to visit
 * with the format it goes into. */
int eg_mllama_visit_tensors(const char *dir, EgWeightFormat quant, EgTensorVisitor visit,
                            void *visit_ctx, EgError *err);

#endif
