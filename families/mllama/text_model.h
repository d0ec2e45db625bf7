/* The mllama text decoder on the device (HF MllamaTextModel + lm_head): its config, its weights
 * in the chosen precision, the RoPE table and the scratch one forward call uses. The Vulkan
 * device, the ops and the staging belong to the caller (the whole mllama model), so the vision
 * encoder and the text decoder share them.
 *
 * Weights are read from an open checkpoint under either naming (../shared/docs/mllama.md §2):
 * the files' "language_model.model.*" + "language_model.lm_head.weight", or transformers 4.52+'s
 * in-memory "model.language_model.*" + "lm_head.weight". Projections that read the same input
 * are stacked into one matrix: self-attention q, k, v; cross-attention k, v. */
#ifndef EGRET_MLLAMA_TEXT_MODEL_H
#define EGRET_MLLAMA_TEXT_MODEL_H

#include "families/mllama/text_config.h"
#include "runtime/ops.h"
#include "runtime/safetensors.h"
#include "runtime/vk_staging.h"
#include "runtime/weight_loader.h"

typedef struct EgMllamaSelfLayer {
    EgBuffer in_norm, post_norm;
    EgMatrix qkv; /* [(heads + 2·kv_heads)·head_dim, H]: q_proj, k_proj, v_proj */
    EgMatrix o;
    /* gate [I, H], up [I, H], down [H, I]; where the device fuses the SwiGLU (mlp_fused) gate
     * holds [gate; up] and up is empty */
    EgMatrix gate, up, down;
} EgMllamaSelfLayer;

typedef struct EgMllamaCrossLayer {
    EgBuffer in_norm, post_norm;
    EgBuffer q_norm, k_norm;      /* [head_dim] */
    EgBuffer attn_gate, mlp_gate; /* [1]: tanh of each scales its branch */
    EgMatrix q;                   /* [H, H] */
    EgMatrix kv;                  /* [2·kv_heads·head_dim, H]: k_proj, v_proj */
    EgMatrix o;
    EgMatrix gate, up, down; /* as in EgMllamaSelfLayer */
} EgMllamaCrossLayer;

typedef struct EgMllamaTextOptions {
    uint32_t max_chunk; /* tokens per forward call (longer inputs run in chunks); 0: 256 */
    uint32_t max_tiles; /* image tiles (images × max_num_tiles) a sequence may attend to; 0: 64 */
    /* the projections' format (docs/quantization.md); the embeddings, the LM head, norms and
     * gates stay in the storage precision */
    EgWeightFormat quant;
    EgWeightReport *report; /* where the weights' bytes are added by group; NULL: nowhere */
} EgMllamaTextOptions;

typedef struct EgMllamaText {
    EgMllamaTextConfig cfg;
    EgOps *ops;         /* borrowed */
    EgStaging *staging; /* borrowed */
    EgArena weights;
    EgArena scratch_arena;
    uint32_t max_chunk, max_tiles, mask_words;

    EgMatrix embed;   /* [vocab + 8, H] */
    EgMatrix lm_head; /* [vocab, H]; tied: the embedding's first vocab rows */
    int lm_head_tied;
    int mlp_fused;
    EgBuffer final_norm;
    /* per layer of the stack: self[i] for self-attention layers, cross[cross_index] for the
     * others (eg_mllama_cross_index) */
    EgMllamaSelfLayer *self;
    EgMllamaCrossLayer *cross;
    float *inv_freq;     /* [head_dim/2], RoPE frequencies after the llama3 scaling */
    EgBuffer rope_table; /* cos/sin, eg_rope_table_freqs */
    uint32_t rope_positions;

    uint32_t *row_runs; /* host [2][max_chunk]: the runs of rows a cross layer's MLP adds to */
    struct {
        EgBuffer h, a, q, attn, g, u;
        EgBuffer ids;    /* host-visible uint32 [max_chunk] */
        EgBuffer mask;   /* host-visible uint32 [max_chunk][mask_words]: cross-attention tiles */
        EgBuffer logits; /* host-visible [max_chunk][vocab] */
        EgArena host;
    } s;

    /* derived sizes */
    uint32_t H, I, heads, kv_heads, head_dim, kv_width, qkv_width, vocab, embed_rows;
} EgMllamaText;

/* Loads the text weights from tf (a checkpoint, or eg_tensors_random) onto ops' device. On
 * failure everything allocated is released. */
int eg_mllama_text_load(EgMllamaText *t, const EgMllamaTextConfig *cfg, EgOps *ops,
                        EgStaging *staging, EgTensorFile *tf, const EgMllamaTextOptions *opt,
                        EgError *err);
void eg_mllama_text_free(EgMllamaText *t);
/* Checks that every tensor eg_mllama_text_load reads is in tf with its shape; nothing is
 * created or uploaded, so a folder is checked whole before anything reaches the device. The
 * projections are checked as `quant`; each tensor is passed to visit (may be NULL). */
int eg_mllama_text_check(const EgMllamaTextConfig *cfg, const EgTensorFile *tf,
                         EgWeightFormat quant, EgTensorVisitor visit, void *visit_ctx,
                         EgError *err);

/* Makes the RoPE table cover `positions` positions (rebuilt larger on demand). */
int eg_mllama_text_ensure_rope(EgMllamaText *t, uint32_t positions, EgError *err);

#endif
