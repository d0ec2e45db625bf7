#include "families/idefics/sequence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/idefics/image_encoder.h"
#include "runtime/device_tensor.h"
#include "runtime/half.h"

EgSequence *eg_sequence_new(EgModel *m, uint32_t capacity, EgError *err) {
    EgSequence *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    s->m = m;
    s->capacity = capacity;
    s->last_image = -1;
    uint32_t L = (uint32_t)m->cfg.num_hidden_layers;
    /* One block sized for the whole KV cache (with room for each buffer's alignment), so a
     * sequence holds what it needs and no more: kept sequences are counted by it. */
    eg_arena_init(&s->arena, &m->vk, EG_MEM_DEVICE, eg_sequence_kv_bytes(m, capacity));
    eg_arena_init(&s->image_arena, &m->vk, EG_MEM_DEVICE, 1u << 20);
    s->k_cache = calloc(L, sizeof *s->k_cache);
    s->v_cache = calloc(L, sizeof *s->v_cache);
    if (!s->k_cache || !s->v_cache) {
        eg_fail(err, "out of host memory");
        eg_sequence_free(s);
        return NULL;
    }
    for (uint32_t i = 0; i < L; i++) {
        if (eg_tensor_buffer(&m->ops, &s->arena, (size_t)capacity * m->H, &s->k_cache[i], err) ||
            eg_tensor_buffer(&m->ops, &s->arena, (size_t)capacity * m->H, &s->v_cache[i], err)) {
            eg_fail_prefix(err, "KV cache for %u tokens", capacity);
            eg_sequence_free(s);
            return NULL;
        }
    }
    if (eg_model_ensure_rope(m, capacity, err)) {
        eg_sequence_free(s);
        return NULL;
    }
    return s;
}

uint64_t eg_sequence_kv_bytes(const EgModel *m, uint32_t capacity) {
    uint64_t per_buffer = (uint64_t)capacity * m->H * (m->ops.f16 ? 2 : 4);
    return 2 * (uint64_t)m->cfg.num_hidden_layers * (per_buffer + (64u << 10));
}

EgSequence *eg_sequence_copy_prefix(const EgSequence *src, uint32_t n, uint32_t capacity,
                                    EgError *err) {
    if (n > src->n_past || n > capacity) {
        eg_fail(err, "cannot copy %u tokens of a sequence holding %u into %u", n, src->n_past,
                capacity);
        return NULL;
    }
    EgModel *m = src->m;
    EgSequence *s = eg_sequence_new(m, capacity, err);
    if (!s || n == 0) return s;
    EgCmd cmd;
    if (eg_cmd_begin(&m->vk, &cmd, err)) {
        eg_sequence_free(s);
        return NULL;
    }
    VkDeviceSize bytes = (VkDeviceSize)n * m->H * (m->ops.f16 ? 2 : 4);
    for (int i = 0; i < m->cfg.num_hidden_layers; i++) {
        eg_cmd_copy(&cmd, &src->k_cache[i], 0, &s->k_cache[i], 0, bytes);
        eg_cmd_copy(&cmd, &src->v_cache[i], 0, &s->v_cache[i], 0, bytes);
    }
    if (eg_cmd_submit_wait(&cmd, err)) {
        eg_sequence_free(s);
        return NULL;
    }
    s->n_past = n;
    s->last_image = src->last_image;
    return s;
}

void eg_sequence_free(EgSequence *s) {
    if (!s) return;
    eg_arena_reset(&s->image_arena);
    eg_arena_reset(&s->arena);
    free(s->k_cache);
    free(s->v_cache);
    free(s->cross_kv);
    free(s);
}

static uint32_t n_cross_layers(const EgModel *m) {
    return (uint32_t)(m->cfg.num_hidden_layers / m->cfg.cross_layer_interval);
}

int eg_sequence_set_images(EgSequence *s, const float *pixels, uint32_t n, EgError *err) {
    return eg_sequence_set_images_cached(s, n, NULL, pixels, NULL, err);
}

/* Records the cross-attention keys/values of the n_enc encoded images (features f) into kv[j]
 * for every cross layer j, rows [n_enc·S][2H]. */
static void record_cross_kv(EgCmd *cmd, EgModel *m, const EgImageFeatures *f, uint32_t n_enc,
                            const EgBuffer *kv) {
    uint32_t nx = n_cross_layers(m), S = m->image_tokens, H = m->H;
    for (uint32_t j = 0; j < nx; j++) {
        const EgCrossLayer *x = &m->cross[j];
        eg_op_linear(cmd, &m->ops,
                     &(EgLinear){.x = &f->features, .w = &x->kv, .y = &kv[j], .rows = n_enc * S});
        if (m->cfg.qk_layer_norms) /* RMSNorm of each key head, in place */
            eg_op_norm(cmd, &m->ops,
                       &(EgNorm){.x = &kv[j],
                                 .x_stride = m->head_dim,
                                 .x_batch = 2 * H,
                                 .weight = &x->k_norm,
                                 .y = &kv[j],
                                 .y_stride = m->head_dim,
                                 .y_batch = 2 * H,
                                 .rows = m->heads,
                                 .batches = n_enc * S,
                                 .dim = m->head_dim,
                                 .eps = m->cfg.rms_norm_eps,
                                 .rms = 1});
    }
}

int eg_sequence_set_images_cached(EgSequence *s, uint32_t n, const EgBuffer *const *cached,
                                  const float *pixels, const EgBuffer *const *store,
                                  EgError *err) {
    EgModel *m = s->m;
    eg_arena_reset(&s->image_arena);
    free(s->cross_kv);
    s->cross_kv = NULL;
    s->n_images = 0;
    if (n == 0) return 0;
    uint32_t nx = n_cross_layers(m), S = m->image_tokens, H = m->H;
    VkDeviceSize elem = m->ops.f16 ? 2 : 4, per_image = (VkDeviceSize)S * 2 * H * elem;
    eg_arena_init(&s->image_arena, &m->vk, EG_MEM_DEVICE, nx * (n * per_image + (64u << 10)));
    s->cross_kv = calloc(nx, sizeof *s->cross_kv);
    if (!s->cross_kv) return eg_fail(err, "out of host memory");
    for (uint32_t j = 0; j < nx; j++)
        if (eg_tensor_buffer(&m->ops, &s->image_arena, (size_t)n * S * 2 * H, &s->cross_kv[j], err))
            return eg_fail_prefix(err, "image keys/values for %u images", n);
    uint32_t n_enc = 0;
    for (uint32_t i = 0; i < n; i++)
        n_enc += !(cached && cached[i]);

    EgArena scratch;
    eg_arena_init(&scratch, &m->vk, EG_MEM_DEVICE, 64u << 20);
    EgCmd cmd;
    EgImageFeatures f;
    int rc = n_enc ? eg_image_encoder_begin(m, &scratch, pixels, n_enc, &cmd, &f, err)
                   : eg_cmd_begin(&m->vk, &cmd, err);
    /* With every image encoded, in order, the keys/values go straight into place; otherwise
     * they are computed apart and copied to their images' rows. */
    EgBuffer *target = s->cross_kv;
    EgBuffer *apart = NULL;
    if (rc == 0 && n_enc && n_enc < n) {
        apart = calloc(nx, sizeof *apart);
        for (uint32_t j = 0; apart && j < nx && rc == 0; j++)
            rc = eg_tensor_buffer(&m->ops, &scratch, (size_t)n_enc * S * 2 * H, &apart[j], err);
        if (!apart) rc = eg_fail(err, "out of host memory");
        if (rc) eg_cmd_abandon(&cmd);
        target = apart;
    }
    if (rc == 0) {
        if (n_enc) record_cross_kv(&cmd, m, &f, n_enc, target);
        for (uint32_t i = 0, k = 0; i < n; i++) {
            int is_cached = cached && cached[i];
            for (uint32_t j = 0; j < nx; j++) {
                if (is_cached)
                    eg_cmd_copy(&cmd, cached[i], j * per_image, &s->cross_kv[j], i * per_image,
                                per_image);
                else if (target != s->cross_kv)
                    eg_cmd_copy(&cmd, &target[j], k * per_image, &s->cross_kv[j], i * per_image,
                                per_image);
                if (!is_cached && store && store[i])
                    eg_cmd_copy(&cmd, &target[j], k * per_image, store[i], j * per_image,
                                per_image);
            }
            k += !is_cached;
        }
        rc = eg_cmd_submit_wait(&cmd, err);
    }
    free(apart);
    eg_arena_reset(&scratch);
    if (rc == 0) s->n_images = n;
    return rc;
}

/* a[0 .. rows) = RMSNorm(h[first .. first + rows)) · weight: the pre-norm every block and the
 * final norm apply to the hidden state. */
static void record_hidden_norm(EgCmd *cmd, EgModel *m, const EgBuffer *weight, uint32_t first,
                               uint32_t rows) {
    eg_op_norm(cmd, &m->ops,
               &(EgNorm){.x = &m->s.h,
                         .x_off = first * m->H,
                         .weight = weight,
                         .y = &m->s.a,
                         .rows = rows,
                         .dim = m->H,
                         .eps = m->cfg.rms_norm_eps,
                         .rms = 1});
}

/* The products p[0 .. n) of a = RMSNorm(h[first .. first + rows)) · weight (their x is set
 * here): with the norm folded into each product where its kernel can (eg_linear_fuses_rms: CPU
 * devices, one dispatch and one pass over h fewer), else normalized into m->s.a first. */
static void record_normed_products(EgCmd *cmd, EgModel *m, const EgBuffer *weight, uint32_t first,
                                   uint32_t rows, EgLinear *p, int n) {
    int fuse = 1;
    for (int i = 0; i < n; i++)
        fuse &= eg_linear_fuses_rms(&m->ops, &p[i]);
    if (!fuse) record_hidden_norm(cmd, m, weight, first, rows);
    for (int i = 0; i < n; i++) {
        if (fuse) {
            p[i].x = &m->s.h;
            p[i].x_off = first * m->H;
            p[i].rms_weight = weight;
            p[i].rms_eps = m->cfg.rms_norm_eps;
        } else {
            p[i].x = &m->s.a;
        }
        eg_op_linear(cmd, &m->ops, &p[i]);
    }
}

/* h += g · down(silu(gate(a)) ⊙ up(a)) with a = RMSNorm(h): the SwiGLU MLP of a decoder layer
 * (g = 1) and the dense branch of a gated cross-attention block (g = tanh(alpha_dense)). */
static void record_mlp(EgCmd *cmd, EgModel *m, const EgBuffer *norm, const EgMatrix *gate,
                       const EgMatrix *up, const EgMatrix *down, const EgBuffer *alpha,
                       uint32_t t) {
    const EgOps *ops = &m->ops;
    EgLinear gate_up[2] = {{.w = gate, .y = &m->s.g, .rows = t, .act = EG_OP_ACT_SILU},
                           {.w = up, .y = &m->s.g, .rows = t, .mul = 1}};
    if (m->mlp_fused) /* gate holds [gate; up]: one product */
        gate_up[0] = (EgLinear){.w = gate, .y = &m->s.g, .rows = t, .swiglu = 1};
    record_normed_products(cmd, m, norm, 0, t, gate_up, m->mlp_fused ? 1 : 2);
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &m->s.g,
                             .w = down,
                             .alpha = alpha,
                             .alpha_vector = m->cfg.alpha_vector,
                             .y = &m->s.h,
                             .rows = t,
                             .accum = 1});
}

/* The queries of cross block x for rows 0..t of m->s.h, into m->s.q: pre-norm, projection and
 * the optional per-head RMSNorm. */
static void record_cross_query(EgCmd *cmd, EgModel *m, const EgCrossLayer *x, uint32_t t) {
    record_normed_products(cmd, m, &x->in_norm, 0, t,
                           &(EgLinear){.w = &x->q, .y = &m->s.q, .rows = t}, 1);
    if (m->cfg.qk_layer_norms)
        eg_op_norm(cmd, &m->ops,
                   &(EgNorm){.x = &m->s.q,
                             .weight = &x->q_norm,
                             .y = &m->s.q,
                             .rows = t * m->heads,
                             .dim = m->head_dim,
                             .eps = m->cfg.rms_norm_eps,
                             .rms = 1});
}

/* h += tanh(alpha_attn) · o(attn) for rows 0..t: the gated attention branch of cross block x. */
static void record_cross_output(EgCmd *cmd, EgModel *m, const EgCrossLayer *x, uint32_t t) {
    eg_op_linear(cmd, &m->ops,
                 &(EgLinear){.x = &m->s.attn,
                             .w = &x->o,
                             .alpha = &x->alpha_attn,
                             .alpha_vector = m->cfg.alpha_vector,
                             .y = &m->s.h,
                             .rows = t,
                             .accum = 1});
}

/* Records the gated cross-attention block j for t tokens in m->s.h. */
static void record_cross_block(EgCmd *cmd, EgSequence *s, uint32_t j, uint32_t t) {
    EgModel *m = s->m;
    const EgOps *ops = &m->ops;
    const EgCrossLayer *x = &m->cross[j];
    uint32_t H = m->H;
    if (s->n_images > 0) {
        record_cross_query(cmd, m, x, t);
        eg_op_attention(cmd, ops,
                        &(EgAttention){.q = &m->s.q,
                                       .k = &s->cross_kv[j],
                                       .v = &s->cross_kv[j],
                                       .o = &m->s.attn,
                                       .k_stride = 2 * H,
                                       .v_off = H,
                                       .v_stride = 2 * H,
                                       .n_queries = t,
                                       .n_keys = s->n_images * m->image_tokens,
                                       .heads = m->heads,
                                       .head_dim = m->head_dim,
                                       .mode = EG_ATTN_RANGES,
                                       .ranges = &m->s.ranges,
                                       .scale = 1.0f / sqrtf((float)m->head_dim)});
        record_cross_output(cmd, m, x, t);
    }
    /* With no image at all every token's gate is 0: the attention branch adds exactly zero, but
     * the dense branch still applies (as in the reference). */
    record_mlp(cmd, m, &x->post_norm, &x->gate, &x->up, &x->down, &x->alpha_dense, t);
}

/* Records decoder layer i for t tokens at positions n_past … n_past + t − 1. */
static void record_decoder_layer(EgCmd *cmd, EgSequence *s, uint32_t i, uint32_t t) {
    EgModel *m = s->m;
    const EgOps *ops = &m->ops;
    const EgDecoderLayer *x = &m->layers[i];
    uint32_t H = m->H;
    uint32_t cache_off = s->n_past * H;
    VkDeviceSize elem = ops->elem, row = (VkDeviceSize)H * elem;
    /* q, k, v in one product: rows of [q | k | v] in m->s.u; keys and values are copied into
     * the caches, the queries stay there */
    record_normed_products(cmd, m, &x->in_norm, 0, t,
                           &(EgLinear){.w = &x->qkv, .y = &m->s.u, .rows = t}, 1);
    eg_cmd_copy_rows(cmd, &m->s.u, row, 3 * row, &s->k_cache[i], cache_off * elem, row, row, t);
    eg_cmd_copy_rows(cmd, &m->s.u, 2 * row, 3 * row, &s->v_cache[i], cache_off * elem, row, row, t);
    EgRope rope = {.rows = t,
                   .heads = m->heads,
                   .head_dim = m->head_dim,
                   .pos0 = s->n_past,
                   .table = &m->rope_table,
                   .table_positions = m->rope_positions};
    rope.x = &m->s.u;
    rope.stride = 3 * H;
    eg_op_rope(cmd, ops, &rope);
    rope.stride = 0;
    rope.x = &s->k_cache[i];
    rope.x_off = cache_off;
    eg_op_rope(cmd, ops, &rope);
    eg_op_attention(cmd, ops,
                    &(EgAttention){.q = &m->s.u,
                                   .q_stride = 3 * H,
                                   .k = &s->k_cache[i],
                                   .v = &s->v_cache[i],
                                   .o = &m->s.attn,
                                   .n_queries = t,
                                   .n_keys = s->n_past + t,
                                   .heads = m->heads,
                                   .head_dim = m->head_dim,
                                   .mode = EG_ATTN_CAUSAL,
                                   .q_pos0 = s->n_past,
                                   .scale = 1.0f / sqrtf((float)m->head_dim)});
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &m->s.attn, .w = &x->o, .y = &m->s.h, .rows = t, .accum = 1});
    record_mlp(cmd, m, &x->post_norm, &x->gate, &x->up, &x->down, NULL, t);
}

/* Records the embedding of t tokens (ids already in m->s.ids) into m->s.h. */
static void record_embedding(EgCmd *cmd, EgModel *m, uint32_t t) {
    for (uint32_t c = 0; c < m->embed.n_chunks; c++)
        eg_op_embed(cmd, &m->ops,
                    &(EgEmbed){.ids = &m->s.ids,
                               .table = &m->embed.chunks[c],
                               .row0 = c * m->embed.chunk_rows,
                               .n_rows = eg_matrix_chunk_len(&m->embed, c),
                               .out = &m->s.h,
                               .tokens = t,
                               .dim = m->H});
}

/* Records final norm + LM head for `rows` rows starting at row `first` of m->s.h. */
static void record_logits(EgCmd *cmd, EgModel *m, uint32_t first, uint32_t rows) {
    record_normed_products(cmd, m, &m->final_norm, first, rows,
                           &(EgLinear){.w = &m->lm_head, .y = &m->s.logits, .rows = rows}, 1);
}

static void read_logits(const EgModel *m, uint32_t rows, float *out) {
    size_t n = (size_t)rows * m->vocab;
    if (m->ops.f16) {
        const uint16_t *src = m->s.logits.mapped;
        for (size_t i = 0; i < n; i++)
            out[i] = eg_f16_to_f32(src[i]);
    } else {
        memcpy(out, m->s.logits.mapped, n * sizeof(float));
    }
}

/* One chunk of at most max_chunk tokens. */
static int forward_chunk(EgSequence *s, const int32_t *ids, const int32_t *image_of_token,
                         uint32_t t, float *logits, int all_logits, int want_logits, EgError *err) {
    EgModel *m = s->m;
    uint32_t *id_slots = m->s.ids.mapped, *ranges = m->s.ranges.mapped;
    for (uint32_t i = 0; i < t; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= m->vocab)
            return eg_fail(err, "token id %d is outside the vocabulary (0..%u)", ids[i],
                           m->vocab - 1);
        int32_t img = image_of_token ? image_of_token[i] : s->last_image;
        if (img >= (int32_t)s->n_images)
            return eg_fail(err, "token %u refers to image %d but the sequence has %u images",
                           s->n_past + i, img, s->n_images);
        id_slots[i] = (uint32_t)ids[i];
        ranges[2 * i] = img < 0 ? 0 : (uint32_t)img * m->image_tokens;
        ranges[2 * i + 1] = img < 0 ? 0 : ((uint32_t)img + 1) * m->image_tokens;
    }
    EgCmd cmd;
    if (eg_cmd_begin(&m->vk, &cmd, err)) return -1;
    cmd.latency_bound = t <= EG_MATVEC_MAX_ROWS; /* decode-sized: see EgCmd */
    record_embedding(&cmd, m, t);
    uint32_t K = (uint32_t)m->cfg.cross_layer_interval;
    for (uint32_t i = 0; i < (uint32_t)m->cfg.num_hidden_layers; i++) {
        if (i % K == 0) record_cross_block(&cmd, s, i / K, t);
        record_decoder_layer(&cmd, s, i, t);
    }
    uint32_t rows = all_logits ? t : 1;
    if (want_logits) record_logits(&cmd, m, t - rows, rows);
    if (eg_cmd_submit_wait(&cmd, err)) return -1;
    if (want_logits) read_logits(m, rows, logits);
    s->n_past += t;
    if (t > 0) s->last_image = image_of_token ? image_of_token[t - 1] : s->last_image;
    return 0;
}

int eg_sequence_forward(EgSequence *s, const int32_t *ids, const int32_t *image_of_token,
                        uint32_t n, float *logits, int all_logits, EgError *err) {
    if (n == 0) return eg_fail(err, "no tokens to process");
    if (s->n_past + n > s->capacity)
        return eg_fail(err, "%u tokens exceed the sequence's context of %u (%u already used)", n,
                       s->capacity, s->n_past);
    /* One decode token attending to the last image: the batched step of one sequence, whose
     * RoPE, cache append and attention take 2 dispatches per layer instead of 5 (the same
     * kernels otherwise, so the same result: tests/test_batch.c) */
    if (n == 1 && !image_of_token && logits && s->m->batch_ops.available)
        return eg_sequence_forward_batch(&s, 1, ids, logits, err);
    uint32_t chunk = s->m->max_chunk;
    for (uint32_t done = 0; done < n;) {
        uint32_t t = n - done < chunk ? n - done : chunk;
        int last = done + t == n;
        float *out = NULL;
        if (logits && all_logits)
            out = logits + (size_t)done * s->m->vocab;
        else if (logits && last)
            out = logits;
        if (forward_chunk(s, ids + done, image_of_token ? image_of_token + done : NULL, t, out,
                          all_logits, out != NULL, err))
            return -1;
        done += t;
    }
    return 0;
}

/* ---- batched decode: one token for each of k sequences in one command buffer ----
 *
 * The linear layers (where the weights are read) run once over the k rows; what is per
 * sequence — writing its new key/value into its own cache, RoPE at its own position, attention
 * over its own cache and its own image — reaches each sequence's buffers through the batch
 * table (runtime/ops_batch.h), or runs per row where the device cannot. On CPU devices
 * attention reads each sequence's keys and values through the texel views bound at its slot
 * instead of by address (batch_ops.use_slots). New queries, keys and values are computed
 * into the scratch buffer m->s.u (a [q | k | v] row per sequence). */

/* Attention of the k queries in q (rows q_stride apart; 0: H) to the keys and values the batch
 * table's entries [entry0, entry0 + k) address; kv lists those buffers (barrier tracking). */
static void record_batch_attention(EgCmd *cmd, EgModel *m, const EgBuffer *q, uint32_t q_stride,
                                   uint32_t entry0, uint32_t k, const EgBuffer *const *kv) {
    eg_op_batch_attention(cmd, &m->ops, &m->batch_ops,
                          &(EgBatchAttention){.q = q,
                                              .q_stride = q_stride,
                                              .o = &m->s.attn,
                                              .entries = &m->s.batch_table,
                                              .entry0 = entry0,
                                              .batch = k,
                                              .heads = m->heads,
                                              .head_dim = m->head_dim,
                                              .scale = 1.0f / sqrtf((float)m->head_dim),
                                              .keys_values = kv});
}

/* Whether sequence s's next token attends to an image (its last one). */
static int sees_image(const EgSequence *s) {
    return s->n_images > 0 && s->last_image >= 0;
}

/* Sequence s's new token's attention over its keys and values of decoder layer i (its new key
 * already in place): the query at q_off in m->s.u, the output to row `row` of m->s.attn. */
static void record_self_attention(EgCmd *cmd, const EgSequence *s, uint32_t i, uint32_t q_off,
                                  uint32_t row) {
    const EgModel *m = s->m;
    uint32_t pos = s->n_past;
    eg_op_attention(cmd, &m->ops,
                    &(EgAttention){.q = &m->s.u,
                                   .q_off = q_off,
                                   .k = &s->k_cache[i],
                                   .v = &s->v_cache[i],
                                   .o = &m->s.attn,
                                   .o_off = row * m->H,
                                   .n_queries = 1,
                                   .n_keys = pos + 1,
                                   .heads = m->heads,
                                   .head_dim = m->head_dim,
                                   .mode = EG_ATTN_CAUSAL,
                                   .q_pos0 = pos,
                                   .scale = 1.0f / sqrtf((float)m->head_dim)});
}

/* The new keys and values of decoder layer i, rotated and appended to each sequence's cache
 * through the batch table in one dispatch, and each query's attention over its own cache:
 * through the table too (one dispatch), or over bound buffers (one per sequence). */
static void record_self_attention_addressed(EgCmd *cmd, EgSequence *const *seqs, uint32_t k,
                                            uint32_t i) {
    EgModel *m = seqs[0]->m;
    uint32_t entry0 = i * EG_BATCH_MAX;
    EgBatchEntry *entries = (EgBatchEntry *)m->s.batch_table.mapped + entry0;
    const EgBuffer *caches[2 * EG_BATCH_MAX];
    for (uint32_t b = 0; b < k; b++) {
        eg_batch_entry_set(&entries[b], &seqs[b]->k_cache[i], 0, &seqs[b]->v_cache[i], 0, m->H,
                           seqs[b]->n_past + 1);
        caches[2 * b] = &seqs[b]->k_cache[i];
        caches[2 * b + 1] = &seqs[b]->v_cache[i];
    }
    eg_op_kv_append(cmd, &m->batch_ops,
                    &(EgKvAppend){.qkv = &m->s.u,
                                  .table = &m->rope_table,
                                  .table_positions = m->rope_positions,
                                  .entries = &m->s.batch_table,
                                  .entry0 = entry0,
                                  .batch = k,
                                  .heads = m->heads,
                                  .head_dim = m->head_dim,
                                  .caches = caches});
    /* the rotated queries, over the caches kv_append filled */
    record_batch_attention(cmd, m, &m->s.u, 3 * m->H, entry0, k, caches);
}

/* The same one sequence at a time (devices without buffer device addresses). */
static void record_self_attention_per_sequence(EgCmd *cmd, EgSequence *const *seqs, uint32_t k,
                                               uint32_t i) {
    EgModel *m = seqs[0]->m;
    const EgOps *ops = &m->ops;
    uint32_t H = m->H;
    VkDeviceSize row = (VkDeviceSize)H * ops->elem;
    for (uint32_t b = 0; b < k; b++) {
        EgSequence *s = seqs[b];
        uint32_t pos = s->n_past;
        eg_cmd_copy(cmd, &m->s.u, (3 * b + 1) * row, &s->k_cache[i], pos * row, row);
        eg_cmd_copy(cmd, &m->s.u, (3 * b + 2) * row, &s->v_cache[i], pos * row, row);
        EgRope rope = {.rows = 1,
                       .heads = m->heads,
                       .head_dim = m->head_dim,
                       .pos0 = pos,
                       .table = &m->rope_table,
                       .table_positions = m->rope_positions};
        rope.x = &m->s.u;
        rope.x_off = 3 * b * H;
        eg_op_rope(cmd, ops, &rope);
        rope.x = &s->k_cache[i];
        rope.x_off = pos * H;
        eg_op_rope(cmd, ops, &rope);
        record_self_attention(cmd, s, i, 3 * b * H, b);
    }
}

static void record_decoder_layer_batch(EgCmd *cmd, EgSequence *const *seqs, uint32_t k,
                                       uint32_t i) {
    EgModel *m = seqs[0]->m;
    const EgOps *ops = &m->ops;
    const EgDecoderLayer *x = &m->layers[i];
    /* rows of [q | k | v] in m->s.u, one per sequence */
    record_normed_products(cmd, m, &x->in_norm, 0, k,
                           &(EgLinear){.w = &x->qkv, .y = &m->s.u, .rows = k}, 1);
    if (m->batch_ops.available)
        record_self_attention_addressed(cmd, seqs, k, i);
    else
        record_self_attention_per_sequence(cmd, seqs, k, i);
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &m->s.attn, .w = &x->o, .y = &m->s.h, .rows = k, .accum = 1});
    record_mlp(cmd, m, &x->post_norm, &x->gate, &x->up, &x->down, NULL, k);
}

/* Each query of cross-attention layer j over its sequence's last image's S keys, through the
 * batch table in one dispatch; a sequence that sees no image has no keys and gets exactly
 * zero, as its gate would make it. */
static void record_cross_attention_addressed(EgCmd *cmd, EgSequence *const *seqs, uint32_t k,
                                             uint32_t j) {
    EgModel *m = seqs[0]->m;
    uint32_t H = m->H, S = m->image_tokens;
    uint32_t entry0 = ((uint32_t)m->cfg.num_hidden_layers + j) * EG_BATCH_MAX;
    EgBatchEntry *entries = (EgBatchEntry *)m->s.batch_table.mapped + entry0;
    const EgBuffer *kv[2 * EG_BATCH_MAX];
    for (uint32_t b = 0; b < k; b++) {
        const EgSequence *s = seqs[b];
        int sees = sees_image(s);
        uint32_t first = sees ? (uint32_t)s->last_image * S * 2 * H : 0;
        /* no keys: the entry's buffer is never read, any valid one does */
        const EgBuffer *buf = sees ? &s->cross_kv[j] : &m->s.q;
        kv[2 * b] = kv[2 * b + 1] = buf;
        eg_batch_entry_set(&entries[b], buf, first, buf, first + H, 2 * H, sees ? S : 0);
    }
    record_batch_attention(cmd, m, &m->s.q, 0, entry0, k, kv);
}

/* The same one sequence at a time; the rows that see no image are zeroed first. */
static void record_cross_attention_per_sequence(EgCmd *cmd, EgSequence *const *seqs, uint32_t k,
                                                uint32_t j) {
    EgModel *m = seqs[0]->m;
    uint32_t H = m->H, S = m->image_tokens;
    for (uint32_t b = 0; b < k; b++)
        if (!sees_image(seqs[b])) {
            eg_cmd_fill(cmd, &m->s.attn, 0);
            break;
        }
    for (uint32_t b = 0; b < k; b++) {
        const EgSequence *s = seqs[b];
        if (!sees_image(s)) continue;
        uint32_t first = (uint32_t)s->last_image * S * 2 * H; /* that image's S rows */
        eg_op_attention(cmd, &m->ops,
                        &(EgAttention){.q = &m->s.q,
                                       .q_off = b * H,
                                       .k = &s->cross_kv[j],
                                       .k_off = first,
                                       .k_stride = 2 * H,
                                       .v = &s->cross_kv[j],
                                       .v_off = first + H,
                                       .v_stride = 2 * H,
                                       .o = &m->s.attn,
                                       .o_off = b * H,
                                       .n_queries = 1,
                                       .n_keys = S,
                                       .heads = m->heads,
                                       .head_dim = m->head_dim,
                                       .mode = EG_ATTN_FULL,
                                       .scale = 1.0f / sqrtf((float)m->head_dim)});
    }
}

static void record_cross_block_batch(EgCmd *cmd, EgSequence *const *seqs, uint32_t k, uint32_t j) {
    EgModel *m = seqs[0]->m;
    const EgCrossLayer *x = &m->cross[j];
    int any = 0;
    for (uint32_t b = 0; b < k; b++)
        any |= sees_image(seqs[b]);
    if (any) { /* else the attention branch is zero for every row: skipped */
        record_cross_query(cmd, m, x, k);
        if (m->batch_ops.available)
            record_cross_attention_addressed(cmd, seqs, k, j);
        else
            record_cross_attention_per_sequence(cmd, seqs, k, j);
        record_cross_output(cmd, m, x, k);
    }
    record_mlp(cmd, m, &x->post_norm, &x->gate, &x->up, &x->down, &x->alpha_dense, k);
}

uint32_t eg_sequence_max_batch(const EgModel *m) {
    uint32_t k = m->max_chunk; /* m->s.u holds a fused q, k, v row for each of max_chunk */
    return k < EG_SEQUENCE_MAX_BATCH ? k : EG_SEQUENCE_MAX_BATCH;
}

int eg_sequence_forward_batch(EgSequence *const *seqs, uint32_t k, const int32_t *ids,
                              float *logits, EgError *err) {
    if (k == 0) return eg_fail(err, "no sequences to advance");
    EgModel *m = seqs[0]->m;
    if (k > eg_sequence_max_batch(m))
        return eg_fail(err, "%u sequences in one step; at most %u", k, eg_sequence_max_batch(m));
    uint32_t *id_slots = m->s.ids.mapped;
    for (uint32_t b = 0; b < k; b++) {
        if (seqs[b]->m != m) return eg_fail(err, "sequences of different models in one step");
        if (seqs[b]->n_past + 1 > seqs[b]->capacity)
            return eg_fail(err, "sequence %u is full (%u tokens)", b, seqs[b]->capacity);
        for (uint32_t c = 0; c < b; c++)
            if (seqs[c] == seqs[b]) return eg_fail(err, "sequence %u appears twice", b);
        if (ids[b] < 0 || (uint32_t)ids[b] >= m->vocab)
            return eg_fail(err, "token id %d is outside the vocabulary (0..%u)", ids[b],
                           m->vocab - 1);
        id_slots[b] = (uint32_t)ids[b];
    }
    EgCmd cmd;
    if (eg_cmd_begin(&m->vk, &cmd, err)) return -1;
    cmd.latency_bound = 1;
    record_embedding(&cmd, m, k);
    uint32_t K = (uint32_t)m->cfg.cross_layer_interval;
    for (uint32_t i = 0; i < (uint32_t)m->cfg.num_hidden_layers; i++) {
        if (i % K == 0) record_cross_block_batch(&cmd, seqs, k, i / K);
        record_decoder_layer_batch(&cmd, seqs, k, i);
    }
    record_logits(&cmd, m, 0, k);
    if (eg_cmd_submit_wait(&cmd, err)) return -1;
    read_logits(m, k, logits);
    for (uint32_t b = 0; b < k; b++)
        seqs[b]->n_past++;
    return 0;
}
