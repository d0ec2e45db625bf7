/* An IDEFICS model on the device: its config, every weight uploaded in the chosen precision,
 * the compute pipelines, and the scratch buffers one forward call uses.
 *
 * Loading reads an HF checkpoint folder (config.json + model.safetensors or sharded
 * model-*.safetensors with model.safetensors.index.json). Q/K/V-style projections that read
 * the same input are stored stacked in one matrix so one matmul computes them. */
#ifndef EGRET_MODEL_H
#define EGRET_MODEL_H

#include <stdio.h>

#include "families/idefics/model_config.h"
#include "families/model_options.h"
#include "runtime/ops.h"
#include "runtime/ops_batch.h"
#include "runtime/vk_staging.h"
#include "runtime/weight_loader.h"

/* Sequences one batched decode step can advance (families/idefics/sequence.h). */
#define EG_BATCH_MAX 16

typedef struct EgVitLayer {
    EgBuffer ln1_w, ln1_b, ln2_w, ln2_b;
    EgMatrix qkv; /* [3E, E]: q, k, v stacked */
    EgBuffer qkv_b;
    EgMatrix out;
    EgBuffer out_b;
    EgMatrix fc1, fc2;
    EgBuffer fc1_b, fc2_b;
} EgVitLayer;

typedef struct EgPerceiverBlock {
    EgBuffer ctx_ln_w, ctx_ln_b, lat_ln_w, lat_ln_b;
    EgBuffer q_ln_w, q_ln_b, k_ln_w, k_ln_b; /* only with qk_layer_norms_perceiver */
    EgMatrix q;                              /* [inner, E] */
    EgMatrix kv;                             /* [2·inner, E]: k, v stacked */
    EgMatrix out;                            /* [E, inner] */
    EgBuffer mlp_ln_w, mlp_ln_b;
    EgMatrix fc, c_proj; /* [4E, E], [E, 4E] */
} EgPerceiverBlock;

typedef struct EgDecoderLayer {
    EgBuffer in_norm, post_norm;
    EgMatrix qkv; /* [3H, H]: q_proj, k_proj, v_proj stacked (one product for the three) */
    EgMatrix o;
    /* gate [I, H], up [I, H], down [H, I]; where the device fuses the SwiGLU
     * (EgModel.mlp_fused) gate holds [gate; up] ([2I, H]) and up is empty */
    EgMatrix gate, up, down;
} EgDecoderLayer;

typedef struct EgCrossLayer {
    EgBuffer alpha_attn, alpha_dense; /* [1] or [H] */
    EgBuffer in_norm, post_norm;
    EgBuffer q_norm, k_norm; /* [head_dim], only with qk_layer_norms */
    EgMatrix q;              /* [H, H] */
    EgMatrix kv;             /* [2H, E]: k, v stacked (read the image features) */
    EgMatrix o;
    EgMatrix gate, up, down; /* as in EgDecoderLayer */
} EgCrossLayer;

typedef struct EgModel {
    EgModelConfig cfg;
    char dir[1024];
    EgVk vk;
    EgOps ops;
    EgBatchOps batch_ops; /* batched decode through device addresses, where available */
    EgArena weights;
    EgWeightReport weight_report; /* the weights' format and device bytes by group */
    EgArena scratch_arena;
    EgStaging staging;
    uint32_t max_chunk, max_images;

    /* vision */
    EgMatrix patch; /* [E, C·p·p] */
    EgBuffer cls, pos, pre_ln_w, pre_ln_b;
    EgVitLayer *vit;
    /* perceiver */
    EgBuffer latents, perceiver_ln_w, perceiver_ln_b;
    EgPerceiverBlock *perceiver;
    /* text */
    EgMatrix embed;   /* [V + A, H]: the base vocabulary's rows, then the additional ones */
    EgMatrix lm_head; /* [V + A, H] likewise; may share buffers with embed (tied) */
    int lm_head_tied;
    int mlp_fused; /* the MLPs' gate and up are one matrix, one product (eg_ops_fuses_swiglu) */
    EgBuffer final_norm;
    EgDecoderLayer *layers;
    EgCrossLayer *cross;
    EgBuffer rope_table; /* cos/sin, see eg_rope_table */
    uint32_t rope_positions;

    /* scratch for one forward call of up to max_chunk tokens */
    struct {
        EgBuffer h, a, q, attn, g, u;
        EgBuffer ids;    /* host-visible uint32 [max_chunk] */
        EgBuffer ranges; /* host-visible uint32 [max_chunk][2] */
        EgBuffer logits; /* host-visible [max_chunk][V + A] */
        /* host-visible batch tables of a batched decode step: EG_BATCH_MAX entries for each
         * decoder layer, then for each cross-attention layer (runtime/ops_batch.h) */
        EgBuffer batch_table;
        EgArena host;
    } s;

    /* derived sizes */
    uint32_t H, I, heads, head_dim, vocab; /* vocab = V + A */
    uint32_t E, image_tokens;              /* image_tokens: S per image after the image stage */
    uint32_t vit_tokens;                   /* Np + 1 */
} EgModel;

EgModel *eg_model_load(const char *dir, const EgModelOptions *opt, EgError *err);
void eg_model_free(EgModel *m);
/* Every tensor eg_model_load would read from dir, with the format it would go into (opt->quant
 * and the folder's own, as eg_model_load resolves them), checked and passed to visit without a
 * device. */
int eg_model_visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                           void *ctx, EgError *err);

/* Makes the RoPE table cover `positions` positions (rebuilt larger on demand). */
int eg_model_ensure_rope(EgModel *m, uint32_t positions, EgError *err);

#endif
