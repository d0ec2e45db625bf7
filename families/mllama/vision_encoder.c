/* mllama's vision encoder and projector on the device (families/mllama/vision_encoder.h).
 *
 * Token order. HF runs each image as one sequence of J tiles × Pp tokens (P real, Pp − P zero
 * pads) and masks attention with an outer product: a query is "invalid" when it is a pad or in a
 * tile the aspect-ratio mask leaves out, and only invalid→invalid pairs are blocked. So valid
 * queries see every key and invalid queries see exactly the valid keys. Attention does not care
 * in which order the keys are stored, so the encoder keeps each image's tokens as
 *     [the real tokens of the valid tiles | those of the other tiles | every pad],
 * which makes the valid keys the prefix [0, nv·P): one [lo, hi) range per query (the attention
 * op's ranges mode) is then the whole mask. Every other op works token by token; the tables
 * below map tokens to tiles for the embeddings and back to HF's order for the outputs. */
#include "families/mllama/vision_encoder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"

typedef struct Shape {
    uint32_t n, J, C, S, p, g2, P, Pp, L, D, Dout, H, I, heads, R;
} Shape;

/* Host-visible tables of one run: row index tables for eg_op_rows_combine ([rows][4]) and the
 * attention ranges for each count of valid tiles. */
typedef struct Tables {
    EgBuffer embed, pre_tile, post_tile, gather;
    EgBuffer *tile;      /* [R]: rows of the per-tile position table of ratio id r, where used */
    EgBuffer ranges[65]; /* by valid-tile count 1..J */
    uint32_t *valid;     /* [n]: valid tiles per image (host memory) */
} Tables;

static Shape shape_of(const EgMllamaModel *m, uint32_t n) {
    const EgMllamaVisionConfig *v = &m->cfg.vision;
    Shape s = {.n = n,
               .J = (uint32_t)v->max_num_tiles,
               .C = (uint32_t)v->num_channels,
               .S = (uint32_t)v->image_size,
               .p = (uint32_t)v->patch_size,
               .P = (uint32_t)eg_mllama_vision_patches(v),
               .Pp = (uint32_t)eg_mllama_vision_padded(v),
               .D = (uint32_t)v->hidden_size,
               .Dout = (uint32_t)v->vision_output_dim,
               .H = (uint32_t)m->cfg.text.hidden_size,
               .I = (uint32_t)v->intermediate_size,
               .heads = (uint32_t)v->attention_heads,
               .R = (uint32_t)v->n_aspect_ratios + 1};
    s.g2 = s.P - 1;
    s.L = s.J * s.Pp;
    return s;
}

static int check_images(const Shape *s, const EgMllamaImages *in, EgError *err) {
    if (in->n == 0) return eg_fail(err, "no images to encode");
    if (!in->pixels || !in->aspect_ratio_ids || !in->aspect_ratio_mask)
        return eg_fail(err, "images without pixels, aspect_ratio_ids or aspect_ratio_mask");
    /* element offsets reach the shaders as 32-bit values: the widest scratch row (q, k, v or
     * the MLP) over every token, and the outputs, must stay below 2^32 elements */
    uint64_t wide = 3ull * s->D > s->I ? 3ull * s->D : s->I;
    uint64_t out_wide = s->Dout > s->H ? s->Dout : s->H;
    if ((uint64_t)in->n * s->L * wide >= (1ull << 32) ||
        (uint64_t)in->n * s->J * s->P * out_wide >= (1ull << 32))
        return eg_fail_kind(err, EG_ERROR_LIMIT, "%u images are too many for one vision pass",
                            in->n);
    for (uint32_t i = 0; i < in->n; i++) {
        int32_t id = in->aspect_ratio_ids[i];
        if (id < 0 || (uint32_t)id >= s->R)
            return eg_fail(err, "image %u: aspect_ratio_id %d is outside 0..%u", i, id, s->R - 1);
        uint32_t valid = 0;
        for (uint32_t t = 0; t < s->J; t++) {
            int32_t v = in->aspect_ratio_mask[(size_t)i * s->J + t];
            if (v != 0 && v != 1)
                return eg_fail(err, "image %u: aspect_ratio_mask[%u] is %d, not 0 or 1", i, t, v);
            valid += (uint32_t)v;
        }
        /* HF sets tile 0 for every slot; with none, every query would be masked everywhere */
        if (!valid) return eg_fail(err, "image %u: aspect_ratio_mask selects no tile", i);
    }
    return 0;
}

static int table(EgArena *host, size_t rows, EgBuffer *b, uint32_t **rowp, EgError *err) {
    if (eg_buffer_create(host, rows * 4 * sizeof(uint32_t), b, err)) return -1;
    *rowp = b->mapped;
    for (size_t i = 0; i < rows * 4; i++)
        (*rowp)[i] = EG_ROWS_NONE;
    return 0;
}

/* slot[t]: where tile t's real tokens sit among the image's tiles (valid tiles first). */
static uint32_t tile_slots(const Shape *s, const int32_t *mask, uint32_t *slot) {
    uint32_t next = 0, valid = 0;
    for (uint32_t t = 0; t < s->J; t++)
        if (mask[t]) slot[t] = next++;
    valid = next;
    for (uint32_t t = 0; t < s->J; t++)
        if (!mask[t]) slot[t] = next++;
    return valid;
}

static int build_tables(const Shape *s, const EgMllamaImages *in, EgArena *host, Tables *T,
                        EgError *err) {
    uint32_t *emb, *pre, *post, *gat, npad = s->Pp - s->P;
    size_t rows = (size_t)s->n * s->L;
    T->valid = calloc(s->n, sizeof *T->valid);
    T->tile = calloc(s->R, sizeof *T->tile);
    uint32_t **tile = calloc(s->R, sizeof *tile);
    if (!T->valid || !T->tile || !tile) {
        free(tile);
        return eg_fail(err, "out of host memory");
    }
    if (table(host, rows, &T->embed, &emb, err) || table(host, rows, &T->pre_tile, &pre, err) ||
        table(host, rows, &T->post_tile, &post, err) ||
        table(host, (size_t)s->n * s->J * s->P, &T->gather, &gat, err)) {
        free(tile);
        return -1;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        const int32_t *mask = in->aspect_ratio_mask + (size_t)i * s->J;
        uint32_t ar = (uint32_t)in->aspect_ratio_ids[i], slot[64];
        T->valid[i] = tile_slots(s, mask, slot);
        if (!tile[ar] && table(host, rows, &T->tile[ar], &tile[ar], err)) {
            free(tile);
            return -1;
        }
        for (uint32_t t = 0; t < s->J; t++) {
            uint32_t tile_row = ar * s->J + t; /* row of the [R·J][D] per-tile tables */
            for (uint32_t q = 0; q < s->P; q++) {
                size_t r = (size_t)i * s->L + slot[t] * s->P + q;
                uint32_t *e = emb + 4 * r;
                e[0] = q ? (i * s->J + t) * s->g2 + q - 1 : EG_ROWS_NONE; /* patch embedding */
                e[1] = q ? EG_ROWS_NONE : 0;                              /* class token */
                e[2] = q;                                 /* shared position table */
                tile[ar][4 * r] = t * s->P + q;           /* its ratio's per-tile table */
                pre[4 * r] = q ? tile_row : EG_ROWS_NONE; /* the class token gets none */
                post[4 * r] = tile_row;
                gat[4 * (((size_t)i * s->J + t) * s->P + q)] = (uint32_t)r;
            }
            for (uint32_t k = 0; k < npad; k++) /* pads get the post-tile embedding too */
                post[4 * ((size_t)i * s->L + s->J * s->P + t * npad + k)] = tile_row;
        }
    }
    free(tile);
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t nv = T->valid[i];
        if (T->ranges[nv].buf) continue;
        if (eg_buffer_create(host, (size_t)s->L * 2 * sizeof(uint32_t), &T->ranges[nv], err))
            return -1;
        uint32_t *rg = T->ranges[nv].mapped, keys = nv * s->P;
        for (uint32_t q = 0; q < s->L; q++) {
            rg[2 * q] = 0;
            rg[2 * q + 1] = q < keys ? s->L : keys;
        }
    }
    return 0;
}

typedef struct Scratch {
    EgBuffer pix, patches, emb, h0, h, a, qkv, attn, mlp;
} Scratch;

static void record_layer(EgCmd *cmd, const EgMllamaModel *m, const Shape *s, const Tables *T,
                         Scratch *b, const EgMllamaVisionLayer *x, int gated) {
    const EgOps *ops = &m->ops;
    uint32_t rows = s->n * s->L, D = s->D, hd = D / s->heads;
    float eps = m->cfg.vision.norm_eps;
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &b->h,
                         .weight = &x->ln1_w,
                         .bias = &x->ln1_b,
                         .y = &b->a,
                         .rows = rows,
                         .dim = D,
                         .eps = eps});
    eg_op_linear(cmd, ops, &(EgLinear){.x = &b->a, .w = &x->qkv, .y = &b->qkv, .rows = rows});
    for (uint32_t i = 0; i < s->n; i++) /* each image its own sequence and key ranges */
        eg_op_attention(cmd, ops,
                        &(EgAttention){.q = &b->qkv,
                                       .k = &b->qkv,
                                       .v = &b->qkv,
                                       .o = &b->attn,
                                       .q_off = i * s->L * 3 * D,
                                       .k_off = i * s->L * 3 * D + D,
                                       .v_off = i * s->L * 3 * D + 2 * D,
                                       .q_stride = 3 * D,
                                       .k_stride = 3 * D,
                                       .v_stride = 3 * D,
                                       .o_off = i * s->L * D,
                                       .n_queries = s->L,
                                       .n_keys = s->L,
                                       .heads = s->heads,
                                       .head_dim = hd,
                                       .batches = 1,
                                       .mode = EG_ATTN_RANGES,
                                       .ranges = &T->ranges[T->valid[i]],
                                       .scale = 1.0f / sqrtf((float)hd)});
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &b->attn,
                             .w = &x->o,
                             .y = &b->h,
                             .rows = rows,
                             .accum = 1,
                             .alpha = gated ? &x->gate_attn : NULL});
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &b->h,
                         .weight = &x->ln2_w,
                         .bias = &x->ln2_b,
                         .y = &b->a,
                         .rows = rows,
                         .dim = D,
                         .eps = eps});
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &b->a,
                             .w = &x->fc1,
                             .bias = &x->fc1_b,
                             .y = &b->mlp,
                             .rows = rows,
                             .act = m->cfg.vision.hidden_act});
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &b->mlp,
                             .w = &x->fc2,
                             .bias = &x->fc2_b,
                             .y = &b->h,
                             .rows = rows,
                             .accum = 1,
                             .alpha = gated ? &x->gate_ffn : NULL});
}

/* h's real tokens, in HF's [image][tile][patch] order, written into `out` rows of `o_row`
 * elements at column o_off with element stride o_elem. */
static void record_gather(EgCmd *cmd, const EgMllamaModel *m, const Shape *s, const Tables *T,
                          const EgBuffer *h, const EgBuffer *out, uint32_t o_off, uint32_t o_elem) {
    eg_op_rows_combine(cmd, &m->ops,
                       &(EgRowsCombine){.out = out,
                                        .o_off = o_off,
                                        .o_row = s->Dout,
                                        .o_elem = o_elem,
                                        .rows = s->n * s->J * s->P,
                                        .dim = s->D,
                                        .idx = &T->gather,
                                        .s = {{.src = h, .coef = 1.0f}}});
}

static int record(EgCmd *cmd, EgMllamaModel *m, const Shape *s, const Tables *T, Scratch *b,
                  EgMllamaVisionOut *out) {
    const EgOps *ops = &m->ops;
    const EgMllamaVision *w = &m->vision;
    const EgMllamaVisionConfig *v = &m->cfg.vision;
    uint32_t rows = s->n * s->L, D = s->D, k = (uint32_t)v->n_intermediate;

    /* embeddings, in the encoder's token order (pads zero) */
    eg_op_patchify(cmd, ops, &b->pix, &b->patches, s->n * s->J, s->C, s->S, s->p);
    eg_op_linear(
        cmd, ops,
        &(EgLinear){.x = &b->patches, .w = &w->patch, .y = &b->emb, .rows = s->n * s->J * s->g2});
    eg_op_rows_combine(cmd, ops,
                       &(EgRowsCombine){.out = &b->h0,
                                        .rows = rows,
                                        .dim = D,
                                        .idx = &T->embed,
                                        .s = {{.src = &b->emb, .coef = 1.0f},
                                              {.src = &w->cls, .coef = 1.0f},
                                              {.src = &w->pos, .coef = 1.0f - w->pos_gate}}});
    for (uint32_t ar = 0; ar < s->R; ar++) /* each ratio id the images use */
        if (T->tile[ar].size)
            eg_op_rows_combine(
                cmd, ops,
                &(EgRowsCombine){.out = &b->h0,
                                 .accum = 1,
                                 .rows = rows,
                                 .dim = D,
                                 .idx = &T->tile[ar],
                                 .s = {{.src = &w->tile_pos[ar], .coef = w->pos_gate}}});
    eg_op_rows_combine(cmd, ops,
                       &(EgRowsCombine){.out = &b->h0,
                                        .accum = 1,
                                        .rows = rows,
                                        .dim = D,
                                        .idx = &T->pre_tile,
                                        .s = {{.src = &w->pre_tile, .coef = w->pre_tile_gate}}});
    /* layernorm_pre on the real tokens; the pads stay zero (HF pads after this norm) */
    eg_cmd_fill(cmd, &b->h, 0);
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &b->h0,
                         .x_batch = s->L * D,
                         .weight = &w->ln_pre_w,
                         .bias = &w->ln_pre_b,
                         .y = &b->h,
                         .y_batch = s->L * D,
                         .rows = s->J * s->P,
                         .batches = s->n,
                         .dim = D,
                         .eps = EG_MLLAMA_VISION_OUTER_EPS});

    for (int l = 0; l < v->num_hidden_layers; l++) {
        record_layer(cmd, m, s, T, b, &w->local[l], 0);
        /* HF 5.x keeps layer l's output for each listed l; the j-th listed goes to channels
         * D + d·k + j */
        for (uint32_t j = 0; j < k; j++)
            if (v->intermediate_layers_indices[j] == l)
                record_gather(cmd, m, s, T, &b->h, &out->vision, D + j, k);
    }
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &b->h,
                         .weight = &w->ln_post_w,
                         .bias = &w->ln_post_b,
                         .y = &b->a,
                         .rows = rows,
                         .dim = D,
                         .eps = EG_MLLAMA_VISION_OUTER_EPS});
    eg_op_rows_combine(cmd, ops,
                       &(EgRowsCombine){.out = &b->a,
                                        .accum = 1,
                                        .rows = rows,
                                        .dim = D,
                                        .idx = &T->post_tile,
                                        .s = {{.src = &w->post_tile, .coef = w->post_tile_gate}}});
    EgBuffer t = b->h; /* the global encoder continues from the post-tile sum */
    b->h = b->a;
    b->a = t;
    for (int l = 0; l < v->num_global_layers; l++)
        record_layer(cmd, m, s, T, b, &w->global[l], 1);
    record_gather(cmd, m, s, T, &b->h, &out->vision, 0, 1);
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &out->vision,
                             .w = &w->proj,
                             .bias = &w->proj_b,
                             .y = &out->cross,
                             .rows = s->n * s->J * s->P});
    return 0;
}

int eg_mllama_vision_begin(EgMllamaModel *m, EgArena *scratch, EgArena *host,
                           const EgMllamaImages *in, EgCmd *cmd, EgMllamaVisionOut *out,
                           EgError *err) {
    Shape s = shape_of(m, in->n);
    if (check_images(&s, in, err)) return -1;
    const EgOps *ops = &m->ops;
    Tables T = {0};
    Scratch b;
    size_t rows = (size_t)s.n * s.L, tokens = (size_t)s.n * s.J * s.P;
    size_t n_pix = (size_t)s.n * s.J * s.C * s.S * s.S;
    int rc = build_tables(&s, in, host, &T, err) ||
             eg_tensor_buffer(ops, scratch, n_pix, &b.pix, err) ||
             eg_tensor_buffer(ops, scratch, (size_t)s.n * s.J * s.g2 * s.C * s.p * s.p, &b.patches,
                              err) ||
             eg_tensor_buffer(ops, scratch, (size_t)s.n * s.J * s.g2 * s.D, &b.emb, err) ||
             eg_tensor_buffer(ops, scratch, rows * s.D, &b.h0, err) ||
             eg_tensor_buffer(ops, scratch, rows * s.D, &b.h, err) ||
             eg_tensor_buffer(ops, scratch, rows * s.D, &b.a, err) ||
             eg_tensor_buffer(ops, scratch, rows * 3 * s.D, &b.qkv, err) ||
             eg_tensor_buffer(ops, scratch, rows * s.D, &b.attn, err) ||
             eg_tensor_buffer(ops, scratch, rows * s.I, &b.mlp, err) ||
             eg_tensor_buffer(ops, scratch, tokens * s.Dout, &out->vision, err) ||
             eg_tensor_buffer(ops, scratch, tokens * s.H, &out->cross, err) ||
             eg_upload_f32(ops, &m->staging, &b.pix, 0, in->pixels, n_pix, err) ||
             eg_cmd_begin(&m->vk, cmd, err);
    if (rc == 0) rc = record(cmd, m, &s, &T, &b, out);
    free(T.valid);
    free(T.tile);
    return rc ? -1 : 0;
}

int eg_mllama_vision_run(EgMllamaModel *m, const EgMllamaImages *in, float *vision_out,
                         float *cross_out, EgError *err) {
    EgArena dev, host;
    eg_arena_init(&dev, &m->vk, EG_MEM_DEVICE, 64u << 20);
    eg_arena_init(&host, &m->vk, EG_MEM_HOST, 4u << 20);
    EgCmd cmd;
    EgMllamaVisionOut out;
    Shape s = shape_of(m, in->n);
    size_t tokens = (size_t)s.n * s.J * s.P;
    int rc = eg_mllama_vision_begin(m, &dev, &host, in, &cmd, &out, err) ||
             eg_cmd_submit_wait(&cmd, err);
    if (rc == 0 && vision_out)
        rc =
            eg_download_f32(&m->ops, &m->staging, &out.vision, 0, vision_out, tokens * s.Dout, err);
    if (rc == 0 && cross_out)
        rc = eg_download_f32(&m->ops, &m->staging, &out.cross, 0, cross_out, tokens * s.H, err);
    eg_arena_reset(&host);
    eg_arena_reset(&dev);
    return rc ? -1 : 0;
}
