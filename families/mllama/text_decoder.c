/* The mllama text decoder's forward pass (HF MllamaTextModel.forward + lm_head), recorded into
 * one command buffer per chunk of tokens. Reads top to bottom: embedding, then each layer of the
 * stack (self-attention with GQA and RoPE, or gated cross-attention), then the final norm and
 * the head. See families/mllama/text_decoder.h. */
#include "families/mllama/text_decoder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"

EgMllamaTextSequence *eg_mllama_text_sequence_new(EgMllamaText *t, uint32_t capacity,
                                                  EgError *err) {
    EgMllamaTextSequence *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    s->t = t;
    s->capacity = capacity;
    uint32_t L = (uint32_t)t->cfg.num_hidden_layers;
    uint32_t n_self = L - (uint32_t)t->cfg.n_cross;
    /* one block for the whole cache (room for each buffer's alignment): a sequence holds what
     * it needs and no more */
    VkDeviceSize per_buffer = (VkDeviceSize)capacity * t->kv_width * t->ops->elem;
    eg_arena_init(&s->arena, t->ops->vk, EG_MEM_DEVICE, 2 * n_self * (per_buffer + (64u << 10)));
    eg_arena_init(&s->cross_arena, t->ops->vk, EG_MEM_DEVICE, 1u << 20);
    s->k_cache = calloc(L, sizeof *s->k_cache);
    s->v_cache = calloc(L, sizeof *s->v_cache);
    if (!s->k_cache || !s->v_cache) {
        eg_fail(err, "out of host memory");
        eg_mllama_text_sequence_free(s);
        return NULL;
    }
    for (uint32_t i = 0; i < L; i++) {
        if (eg_mllama_cross_index(&t->cfg, (int)i) >= 0) continue;
        size_t n = (size_t)capacity * t->kv_width;
        if (eg_tensor_buffer(t->ops, &s->arena, n, &s->k_cache[i], err) ||
            eg_tensor_buffer(t->ops, &s->arena, n, &s->v_cache[i], err)) {
            eg_fail_prefix(err, "KV cache for %u tokens", capacity);
            eg_mllama_text_sequence_free(s);
            return NULL;
        }
    }
    if (eg_mllama_text_ensure_rope(t, capacity, err)) {
        eg_mllama_text_sequence_free(s);
        return NULL;
    }
    return s;
}

void eg_mllama_text_sequence_free(EgMllamaTextSequence *s) {
    if (!s) return;
    eg_arena_reset(&s->cross_arena);
    eg_arena_reset(&s->arena);
    free(s->k_cache);
    free(s->v_cache);
    free(s->cross_kv);
    free(s->last_tiles);
    free(s);
}

/* ---- cross-attention keys and values, once per image set ---- */

int eg_mllama_text_set_cross_states(EgMllamaTextSequence *s, const float *states, uint32_t n_tiles,
                                    uint32_t tile_tokens, EgError *err) {
    EgMllamaText *t = s->t;
    eg_arena_reset(&s->cross_arena);
    free(s->cross_kv);
    free(s->last_tiles);
    s->cross_kv = NULL;
    s->last_tiles = NULL;
    s->n_tiles = s->tile_tokens = 0;
    if (n_tiles == 0) return 0;
    if (n_tiles > t->max_tiles)
        return eg_fail(err, "%u image tiles; the model was loaded for at most %u", n_tiles,
                       t->max_tiles);
    if (tile_tokens == 0) return eg_fail(err, "image tiles of 0 tokens");
    uint32_t nx = (uint32_t)t->cfg.n_cross, V = n_tiles * tile_tokens, kvw = t->kv_width;
    size_t kv_elems = (size_t)V * 2 * kvw;
    eg_arena_init(&s->cross_arena, t->ops->vk, EG_MEM_DEVICE,
                  nx * (kv_elems * t->ops->elem + (64u << 10)));
    s->cross_kv = calloc(nx ? nx : 1, sizeof *s->cross_kv);
    s->last_tiles = calloc(n_tiles, 1);
    if (!s->cross_kv || !s->last_tiles) return eg_fail(err, "out of host memory");
    for (uint32_t j = 0; j < nx; j++)
        if (eg_tensor_buffer(t->ops, &s->cross_arena, kv_elems, &s->cross_kv[j], err))
            return eg_fail_prefix(err, "image keys/values for %u tiles", n_tiles);

    EgArena scratch;
    eg_arena_init(&scratch, t->ops->vk, EG_MEM_DEVICE, 16u << 20);
    EgBuffer c;
    int rc = eg_tensor_buffer(t->ops, &scratch, (size_t)V * t->H, &c, err);
    if (rc == 0) rc = eg_upload_f32(t->ops, t->staging, &c, 0, states, (size_t)V * t->H, err);
    EgCmd cmd;
    if (rc == 0) rc = eg_cmd_begin(t->ops->vk, &cmd, err);
    if (rc == 0) {
        for (uint32_t j = 0; j < nx; j++) {
            const EgMllamaCrossLayer *x = &t->cross[j];
            eg_op_linear(&cmd, t->ops,
                         &(EgLinear){.x = &c, .w = &x->kv, .y = &s->cross_kv[j], .rows = V});
            /* k_norm: RMSNorm of each key head (the values are not normalized) */
            eg_op_norm(&cmd, t->ops,
                       &(EgNorm){.x = &s->cross_kv[j],
                                 .x_stride = t->head_dim,
                                 .x_batch = 2 * kvw,
                                 .weight = &x->k_norm,
                                 .y = &s->cross_kv[j],
                                 .y_stride = t->head_dim,
                                 .y_batch = 2 * kvw,
                                 .rows = t->kv_heads,
                                 .batches = V,
                                 .dim = t->head_dim,
                                 .eps = t->cfg.rms_norm_eps,
                                 .rms = 1});
        }
        rc = eg_cmd_submit_wait(&cmd, err);
    }
    eg_arena_reset(&scratch);
    if (rc) return eg_fail_prefix(err, "image keys/values");
    s->n_tiles = n_tiles;
    s->tile_tokens = tile_tokens;
    s->cross_kv_computed++;
    return 0;
}

/* ---- recording the layers ---- */

/* The rows of a chunk whose MLP branch of a cross layer counts (HF's full_text_row_masked_out_mask
 * = 1: the token sees at least one tile), as runs [first, first + count). */
typedef struct RowRuns {
    uint32_t n;
    uint32_t *first, *count; /* EgMllamaText.row_runs: room for max_chunk runs each */
} RowRuns;

/* The products p[0 .. n) of a = RMSNorm(h[first .. first + rows)) · weight: the norm folded into
 * each product where its kernel can (eg_linear_fuses_rms), else normalized into s.a first. */
static void record_normed_products(EgCmd *cmd, EgMllamaText *t, const EgBuffer *weight,
                                   uint32_t first, uint32_t rows, EgLinear *p, int n) {
    int fuse = 1;
    for (int i = 0; i < n; i++)
        fuse &= eg_linear_fuses_rms(t->ops, &p[i]);
    if (!fuse)
        eg_op_norm(cmd, t->ops,
                   &(EgNorm){.x = &t->s.h,
                             .x_off = first * t->H,
                             .weight = weight,
                             .y = &t->s.a,
                             .rows = rows,
                             .dim = t->H,
                             .eps = t->cfg.rms_norm_eps,
                             .rms = 1});
    for (int i = 0; i < n; i++) {
        if (fuse) {
            p[i].x = &t->s.h;
            p[i].x_off = first * t->H;
            p[i].rms_weight = weight;
            p[i].rms_eps = t->cfg.rms_norm_eps;
        } else {
            p[i].x = &t->s.a;
        }
        eg_op_linear(cmd, t->ops, &p[i]);
    }
}

/* s.g = silu(gate(a)) ⊙ up(a) with a = RMSNorm(h) for rows 0..rows. */
static void record_swiglu(EgCmd *cmd, EgMllamaText *t, const EgBuffer *norm, const EgMatrix *gate,
                          const EgMatrix *up, uint32_t rows) {
    EgLinear gate_up[2] = {{.w = gate, .y = &t->s.g, .rows = rows, .act = EG_OP_ACT_SILU},
                           {.w = up, .y = &t->s.g, .rows = rows, .mul = 1}};
    if (t->mlp_fused) /* gate holds [gate; up]: one product */
        gate_up[0] = (EgLinear){.w = gate, .y = &t->s.g, .rows = rows, .swiglu = 1};
    record_normed_products(cmd, t, norm, 0, rows, gate_up, t->mlp_fused ? 1 : 2);
}

/* h[first ..] += g · down(s.g[first ..]) for `rows` rows (g = tanh(gate[0]), or 1 without). */
static void record_down(EgCmd *cmd, EgMllamaText *t, const EgMatrix *down, const EgBuffer *gate,
                        uint32_t first, uint32_t rows) {
    eg_op_linear(cmd, t->ops,
                 &(EgLinear){.x = &t->s.g,
                             .x_off = first * t->I,
                             .w = down,
                             .alpha = gate,
                             .y = &t->s.h,
                             .y_off = first * t->H,
                             .rows = rows,
                             .accum = 1});
}

/* Self-attention layer i for n tokens at positions n_past … n_past + n − 1. */
static void record_self_layer(EgCmd *cmd, EgMllamaTextSequence *s, uint32_t i, uint32_t n) {
    EgMllamaText *t = s->t;
    const EgMllamaSelfLayer *x = &t->self[i];
    uint32_t W = t->qkv_width, kvw = t->kv_width;
    VkDeviceSize elem = t->ops->elem;
    /* rows of [q | k | v] in s.u */
    record_normed_products(cmd, t, &x->in_norm, 0, n,
                           &(EgLinear){.w = &x->qkv, .y = &t->s.u, .rows = n}, 1);
    /* q's and k's heads are adjacent in each row: one RoPE dispatch rotates both */
    eg_op_rope(cmd, t->ops,
               &(EgRope){.x = &t->s.u,
                         .stride = W,
                         .rows = n,
                         .heads = t->heads + t->kv_heads,
                         .head_dim = t->head_dim,
                         .pos0 = s->n_past,
                         .table = &t->rope_table,
                         .table_positions = t->rope_positions});
    VkDeviceSize cache_off = (VkDeviceSize)s->n_past * kvw * elem;
    eg_cmd_copy_rows(cmd, &t->s.u, t->H * elem, W * elem, &s->k_cache[i], cache_off, kvw * elem,
                     kvw * elem, n);
    eg_cmd_copy_rows(cmd, &t->s.u, (t->H + kvw) * elem, W * elem, &s->v_cache[i], cache_off,
                     kvw * elem, kvw * elem, n);
    eg_op_attention(cmd, t->ops,
                    &(EgAttention){.q = &t->s.u,
                                   .q_stride = W,
                                   .k = &s->k_cache[i],
                                   .v = &s->v_cache[i],
                                   .o = &t->s.attn,
                                   .n_queries = n,
                                   .n_keys = s->n_past + n,
                                   .heads = t->heads,
                                   .kv_heads = t->kv_heads,
                                   .head_dim = t->head_dim,
                                   .mode = EG_ATTN_CAUSAL,
                                   .q_pos0 = s->n_past,
                                   .scale = 1.0f / sqrtf((float)t->head_dim)});
    eg_op_linear(cmd, t->ops,
                 &(EgLinear){.x = &t->s.attn, .w = &x->o, .y = &t->s.h, .rows = n, .accum = 1});
    record_swiglu(cmd, t, &x->post_norm, &x->gate, &x->up, n);
    record_down(cmd, t, &x->down, NULL, 0, n);
}

/* A cross-attention layer's queries for rows tokens: q(in_norm(h)), then q_norm over each head. */
static void record_cross_queries(EgCmd *cmd, EgMllamaText *t, const EgMllamaCrossLayer *x,
                                 uint32_t rows) {
    record_normed_products(cmd, t, &x->in_norm, 0, rows,
                           &(EgLinear){.w = &x->q, .y = &t->s.q, .rows = rows}, 1);
    eg_op_norm(cmd, t->ops,
               &(EgNorm){.x = &t->s.q,
                         .weight = &x->q_norm,
                         .y = &t->s.q,
                         .rows = rows * t->heads,
                         .dim = t->head_dim,
                         .eps = t->cfg.rms_norm_eps,
                         .rms = 1});
}

/* Sequence s's n queries, from row `row` of s.q (and of s.mask) on, over its cached cross keys
 * and values of layer j, into the same rows of s.attn. */
static void record_cross_attention(EgCmd *cmd, const EgMllamaTextSequence *s, uint32_t j,
                                   uint32_t row, uint32_t n) {
    EgMllamaText *t = s->t;
    uint32_t kvw = t->kv_width;
    eg_op_attention(cmd, t->ops,
                    &(EgAttention){.q = &t->s.q,
                                   .q_off = row * t->H,
                                   .k = &s->cross_kv[j],
                                   .k_stride = 2 * kvw,
                                   .v = &s->cross_kv[j],
                                   .v_off = kvw,
                                   .v_stride = 2 * kvw,
                                   .o = &t->s.attn,
                                   .o_off = row * t->H,
                                   .n_queries = n,
                                   .n_keys = s->n_tiles * s->tile_tokens,
                                   .heads = t->heads,
                                   .kv_heads = t->kv_heads,
                                   .head_dim = t->head_dim,
                                   .mode = EG_ATTN_BLOCK_MASK,
                                   .q_pos0 = row, /* its first mask row */
                                   .ranges = &t->s.mask,
                                   .mask_block = s->tile_tokens,
                                   .mask_words = t->mask_words,
                                   .scale = 1.0f / sqrtf((float)t->head_dim)});
}

/* The layer's output for rows tokens: h += tanh(attn_gate) · o(attn) on every row, the unmasked
 * ones included (HF), then h += tanh(mlp_gate) · R ⊙ MLP only on the rows that see a tile
 * (runs). */
static void record_cross_output(EgCmd *cmd, EgMllamaText *t, const EgMllamaCrossLayer *x,
                                uint32_t rows, const RowRuns *runs) {
    eg_op_linear(cmd, t->ops,
                 &(EgLinear){.x = &t->s.attn,
                             .w = &x->o,
                             .alpha = &x->attn_gate,
                             .y = &t->s.h,
                             .rows = rows,
                             .accum = 1});
    if (runs->n == 0) return;
    record_swiglu(cmd, t, &x->post_norm, &x->gate, &x->up, rows);
    for (uint32_t r = 0; r < runs->n; r++)
        record_down(cmd, t, &x->down, &x->mlp_gate, runs->first[r], runs->count[r]);
}

/* Cross-attention layer j for n tokens (their tile masks already in s.mask; runs: the rows
 * whose MLP branch counts). */
static void record_cross_layer(EgCmd *cmd, EgMllamaTextSequence *s, uint32_t j, uint32_t n,
                               const RowRuns *runs) {
    const EgMllamaCrossLayer *x = &s->t->cross[j];
    record_cross_queries(cmd, s->t, x, n);
    record_cross_attention(cmd, s, j, 0, n);
    record_cross_output(cmd, s->t, x, n, runs);
}

static void record_embedding(EgCmd *cmd, EgMllamaText *t, uint32_t n) {
    for (uint32_t c = 0; c < t->embed.n_chunks; c++)
        eg_op_embed(cmd, t->ops,
                    &(EgEmbed){.ids = &t->s.ids,
                               .table = &t->embed.chunks[c],
                               .row0 = c * t->embed.chunk_rows,
                               .n_rows = eg_matrix_chunk_len(&t->embed, c),
                               .out = &t->s.h,
                               .tokens = n,
                               .dim = t->H});
}

static void record_logits(EgCmd *cmd, EgMllamaText *t, uint32_t first, uint32_t rows) {
    record_normed_products(cmd, t, &t->final_norm, first, rows,
                           &(EgLinear){.w = &t->lm_head, .y = &t->s.logits, .rows = rows}, 1);
}

static void read_logits(const EgMllamaText *t, uint32_t rows, float *out) {
    size_t n = (size_t)rows * t->vocab;
    if (t->ops->f16) {
        const uint16_t *src = t->s.logits.mapped;
        for (size_t i = 0; i < n; i++)
            out[i] = eg_f16_to_f32(src[i]);
    } else {
        memcpy(out, t->s.logits.mapped, n * sizeof(float));
    }
}

/* Writes each token's mask bits into s.mask and finds the rows whose MLP branch counts. A row
 * with no tile gets every tile (HF: its additive mask row becomes all zeros). */
static int prepare_cross_rows(EgMllamaTextSequence *s, const uint8_t *tiles, uint32_t n,
                              RowRuns *runs, EgError *err) {
    EgMllamaText *t = s->t;
    uint32_t *words = t->s.mask.mapped;
    runs->n = 0;
    runs->first = t->row_runs;
    runs->count = t->row_runs + t->max_chunk;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *row = tiles ? tiles + (size_t)i * s->n_tiles : s->last_tiles;
        uint32_t *w = words + (size_t)i * t->mask_words;
        memset(w, 0, t->mask_words * sizeof *w);
        int any = 0;
        for (uint32_t k = 0; k < s->n_tiles; k++) {
            if (row[k] > 1)
                return eg_fail(err, "cross-attention mask of token %u, tile %u is %u (0 or 1)",
                               s->n_past + i, k, row[k]);
            if (row[k]) w[k / 32] |= 1u << (k % 32), any = 1;
        }
        if (!any)
            for (uint32_t k = 0; k < s->n_tiles; k++)
                w[k / 32] |= 1u << (k % 32);
        if (any && runs->n > 0 && runs->first[runs->n - 1] + runs->count[runs->n - 1] == i) {
            runs->count[runs->n - 1]++;
        } else if (any) {
            runs->first[runs->n] = i;
            runs->count[runs->n++] = 1;
        }
    }
    return 0;
}

/* One chunk of at most max_chunk tokens. */
static int forward_chunk(EgMllamaTextSequence *s, const int32_t *ids, const uint8_t *tiles,
                         uint32_t n, float *logits, int all_logits, EgError *err) {
    EgMllamaText *t = s->t;
    uint32_t *id_slots = t->s.ids.mapped;
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->embed_rows)
            return eg_fail(err, "token id %d is outside the embedding (0..%u)", ids[i],
                           t->embed_rows - 1);
        id_slots[i] = (uint32_t)ids[i];
    }
    RowRuns runs = {0};
    int cross = s->n_tiles > 0;
    if (cross && prepare_cross_rows(s, tiles, n, &runs, err)) return -1;
    EgCmd cmd;
    if (eg_cmd_begin(t->ops->vk, &cmd, err)) return -1;
    cmd.latency_bound = n <= EG_MATVEC_MAX_ROWS; /* decode-sized: see EgCmd */
    record_embedding(&cmd, t, n);
    for (uint32_t i = 0; i < (uint32_t)t->cfg.num_hidden_layers; i++) {
        int j = eg_mllama_cross_index(&t->cfg, (int)i);
        if (j < 0)
            record_self_layer(&cmd, s, i, n);
        else if (cross) /* no images: HF skips the layer */
            record_cross_layer(&cmd, s, (uint32_t)j, n, &runs);
    }
    uint32_t rows = all_logits ? n : 1;
    if (logits) record_logits(&cmd, t, n - rows, rows);
    if (eg_cmd_submit_wait(&cmd, err)) return -1;
    if (logits) read_logits(t, rows, logits);
    if (cross && tiles) memcpy(s->last_tiles, tiles + (size_t)(n - 1) * s->n_tiles, s->n_tiles);
    s->n_past += n;
    return 0;
}

int eg_mllama_text_forward(EgMllamaTextSequence *s, const int32_t *ids, const uint8_t *tiles,
                           uint32_t n, float *logits, int all_logits, EgError *err) {
    if (n == 0) return eg_fail(err, "no tokens to process");
    if (s->n_past + n > s->capacity)
        return eg_fail(err, "%u tokens exceed the sequence's context of %u (%u already used)", n,
                       s->capacity, s->n_past);
    uint32_t chunk = s->t->max_chunk;
    for (uint32_t done = 0; done < n;) {
        uint32_t c = n - done < chunk ? n - done : chunk;
        float *out = NULL;
        if (logits && all_logits)
            out = logits + (size_t)done * s->t->vocab;
        else if (logits && done + c == n)
            out = logits;
        if (forward_chunk(s, ids + done, tiles ? tiles + (size_t)done * s->n_tiles : NULL, c, out,
                          all_logits, err))
            return -1;
        done += c;
    }
    return 0;
}

/* ---- batched decode: one token for each of k sequences ----
 *
 * The products (where the weights are read) run once over the k rows; what is per sequence —
 * RoPE at its own position, its new key and value into its own cache, attention over its own
 * cache and its own images — is recorded per row. */

static void record_self_layer_batch(EgCmd *cmd, EgMllamaTextSequence *const *seqs, uint32_t k,
                                    uint32_t i) {
    EgMllamaText *t = seqs[0]->t;
    const EgMllamaSelfLayer *x = &t->self[i];
    uint32_t W = t->qkv_width, kvw = t->kv_width;
    VkDeviceSize elem = t->ops->elem;
    record_normed_products(cmd, t, &x->in_norm, 0, k,
                           &(EgLinear){.w = &x->qkv, .y = &t->s.u, .rows = k}, 1);
    for (uint32_t b = 0; b < k; b++) {
        EgMllamaTextSequence *s = seqs[b];
        eg_op_rope(cmd, t->ops,
                   &(EgRope){.x = &t->s.u,
                             .x_off = b * W,
                             .stride = W,
                             .rows = 1,
                             .heads = t->heads + t->kv_heads,
                             .head_dim = t->head_dim,
                             .pos0 = s->n_past,
                             .table = &t->rope_table,
                             .table_positions = t->rope_positions});
        VkDeviceSize cache_off = (VkDeviceSize)s->n_past * kvw * elem;
        eg_cmd_copy(cmd, &t->s.u, ((VkDeviceSize)b * W + t->H) * elem, &s->k_cache[i], cache_off,
                    kvw * elem);
        eg_cmd_copy(cmd, &t->s.u, ((VkDeviceSize)b * W + t->H + kvw) * elem, &s->v_cache[i],
                    cache_off, kvw * elem);
        eg_op_attention(cmd, t->ops,
                        &(EgAttention){.q = &t->s.u,
                                       .q_off = b * W,
                                       .q_stride = W,
                                       .k = &s->k_cache[i],
                                       .v = &s->v_cache[i],
                                       .o = &t->s.attn,
                                       .o_off = b * t->H,
                                       .n_queries = 1,
                                       .n_keys = s->n_past + 1,
                                       .heads = t->heads,
                                       .kv_heads = t->kv_heads,
                                       .head_dim = t->head_dim,
                                       .mode = EG_ATTN_CAUSAL,
                                       .q_pos0 = s->n_past,
                                       .scale = 1.0f / sqrtf((float)t->head_dim)});
    }
    eg_op_linear(cmd, t->ops,
                 &(EgLinear){.x = &t->s.attn, .w = &x->o, .y = &t->s.h, .rows = k, .accum = 1});
    record_swiglu(cmd, t, &x->post_norm, &x->gate, &x->up, k);
    record_down(cmd, t, &x->down, NULL, 0, k);
}

/* Cross layer j for k sequences, row b's mask at row b of s.mask. A sequence without images
 * gets exactly zero from its attention (and so from o, which has no bias) and is left out of
 * the MLP's runs: the layer leaves its row unchanged, as HF's skip does. */
static void record_cross_layer_batch(EgCmd *cmd, EgMllamaTextSequence *const *seqs, uint32_t k,
                                     uint32_t j, const RowRuns *runs) {
    EgMllamaText *t = seqs[0]->t;
    const EgMllamaCrossLayer *x = &t->cross[j];
    record_cross_queries(cmd, t, x, k);
    int any_without = 0;
    for (uint32_t b = 0; b < k; b++)
        any_without |= seqs[b]->n_tiles == 0;
    if (any_without) eg_cmd_fill(cmd, &t->s.attn, 0);
    for (uint32_t b = 0; b < k; b++)
        if (seqs[b]->n_tiles) record_cross_attention(cmd, seqs[b], j, b, 1);
    record_cross_output(cmd, t, x, k, runs);
}

/* Mask rows of a batched step: sequence b's last row at row b; runs over the rows whose MLP
 * counts (a sequence with images whose last token sees a tile). */
static void prepare_batch_rows(EgMllamaTextSequence *const *seqs, uint32_t k, RowRuns *runs) {
    EgMllamaText *t = seqs[0]->t;
    uint32_t *words = t->s.mask.mapped;
    runs->n = 0;
    runs->first = t->row_runs;
    runs->count = t->row_runs + t->max_chunk;
    for (uint32_t b = 0; b < k; b++) {
        const EgMllamaTextSequence *s = seqs[b];
        uint32_t *w = words + (size_t)b * t->mask_words;
        memset(w, 0, t->mask_words * sizeof *w);
        int any = 0;
        for (uint32_t c = 0; c < s->n_tiles; c++)
            if (s->last_tiles[c]) w[c / 32] |= 1u << (c % 32), any = 1;
        if (!any) /* no tile seen: every tile (HF); none for a sequence without images */
            for (uint32_t c = 0; c < s->n_tiles; c++)
                w[c / 32] |= 1u << (c % 32);
        if (!any) continue;
        if (runs->n > 0 && runs->first[runs->n - 1] + runs->count[runs->n - 1] == b) {
            runs->count[runs->n - 1]++;
        } else {
            runs->first[runs->n] = b;
            runs->count[runs->n++] = 1;
        }
    }
}

int eg_mllama_text_forward_batch(EgMllamaTextSequence *const *seqs, uint32_t k, const int32_t *ids,
                                 float *logits, EgError *err) {
    if (k == 0) return eg_fail(err, "no sequences to advance");
    EgMllamaText *t = seqs[0]->t;
    if (k > t->max_chunk)
        return eg_fail(err, "%u sequences in one step; at most %u", k, t->max_chunk);
    uint32_t *id_slots = t->s.ids.mapped;
    int any_images = 0;
    for (uint32_t b = 0; b < k; b++) {
        if (seqs[b]->t != t) return eg_fail(err, "sequences of different models in one step");
        if (seqs[b]->n_past + 1 > seqs[b]->capacity)
            return eg_fail(err, "sequence %u is full (%u tokens)", b, seqs[b]->capacity);
        for (uint32_t c = 0; c < b; c++)
            if (seqs[c] == seqs[b]) return eg_fail(err, "sequence %u appears twice", b);
        if (ids[b] < 0 || (uint32_t)ids[b] >= t->embed_rows)
            return eg_fail(err, "token id %d is outside the embedding (0..%u)", ids[b],
                           t->embed_rows - 1);
        id_slots[b] = (uint32_t)ids[b];
        any_images |= seqs[b]->n_tiles > 0;
    }
    RowRuns runs = {0};
    if (any_images) prepare_batch_rows(seqs, k, &runs);
    EgCmd cmd;
    if (eg_cmd_begin(t->ops->vk, &cmd, err)) return -1;
    cmd.latency_bound = k <= EG_MATVEC_MAX_ROWS;
    record_embedding(&cmd, t, k);
    for (uint32_t i = 0; i < (uint32_t)t->cfg.num_hidden_layers; i++) {
        int j = eg_mllama_cross_index(&t->cfg, (int)i);
        if (j < 0)
            record_self_layer_batch(&cmd, seqs, k, i);
        else if (any_images)
            record_cross_layer_batch(&cmd, seqs, k, (uint32_t)j, &runs);
    }
    record_logits(&cmd, t, 0, k);
    if (eg_cmd_submit_wait(&cmd, err)) return -1;
    read_logits(t, k, logits);
    for (uint32_t b = 0; b < k; b++)
        seqs[b]->n_past++;
    return 0;
}
