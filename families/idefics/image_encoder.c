#include "families/idefics/image_encoder.h"

#include <math.h>

#include "runtime/device_tensor.h"

/* Buffers the ViT needs for n images. */
typedef struct VitScratch {
    EgBuffer patches, emb, h, a, qkv, attn, mlp;
} VitScratch;

static int record_vit(EgCmd *cmd, EgModel *m, EgArena *ar, const EgBuffer *pixels, uint32_t n,
                      EgBuffer *result, EgError *err) {
    const EgVisionConfig *vc = &m->cfg.vision;
    const EgOps *ops = &m->ops;
    uint32_t E = m->E, C = (uint32_t)vc->num_channels, p = (uint32_t)vc->patch_size;
    uint32_t size = (uint32_t)vc->image_size, grid = size / p, Np = grid * grid;
    uint32_t T = m->vit_tokens, rows = n * T, heads = (uint32_t)vc->num_attention_heads;
    uint32_t Iv = (uint32_t)vc->intermediate_size;
    VitScratch scratch, *s = &scratch;
    int rc = eg_tensor_buffer(ops, ar, (size_t)n * Np * C * p * p, &s->patches, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * Np * E, &s->emb, err) ||
             eg_tensor_buffer(ops, ar, (size_t)rows * E, &s->h, err) ||
             eg_tensor_buffer(ops, ar, (size_t)rows * E, &s->a, err) ||
             eg_tensor_buffer(ops, ar, (size_t)rows * 3 * E, &s->qkv, err) ||
             eg_tensor_buffer(ops, ar, (size_t)rows * E, &s->attn, err) ||
             eg_tensor_buffer(ops, ar, (size_t)rows * Iv, &s->mlp, err);
    if (rc) return -1;
    EgOpAct act = vc->hidden_act == EG_ACT_QUICK_GELU  ? EG_OP_ACT_QUICK_GELU
                  : vc->hidden_act == EG_ACT_GELU_TANH ? EG_OP_ACT_GELU_TANH
                  : vc->hidden_act == EG_ACT_RELU      ? EG_OP_ACT_RELU
                  : vc->hidden_act == EG_ACT_SILU      ? EG_OP_ACT_SILU
                                                       : EG_OP_ACT_GELU;
    float eps = vc->layer_norm_eps;

    eg_op_patchify(cmd, ops, pixels, &s->patches, n, C, size, p);
    eg_op_linear(cmd, ops,
                 &(EgLinear){.x = &s->patches, .w = &m->patch, .y = &s->emb, .rows = n * Np});
    eg_op_vit_embed(cmd, ops, &s->emb, &m->cls, &m->pos, &s->a, n, Np, E);
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &s->a,
                         .weight = &m->pre_ln_w,
                         .bias = &m->pre_ln_b,
                         .y = &s->h,
                         .rows = rows,
                         .dim = E,
                         .eps = eps});
    for (int l = 0; l < vc->num_hidden_layers; l++) {
        const EgVitLayer *x = &m->vit[l];
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = &s->h,
                             .weight = &x->ln1_w,
                             .bias = &x->ln1_b,
                             .y = &s->a,
                             .rows = rows,
                             .dim = E,
                             .eps = eps});
        eg_op_linear(
            cmd, ops,
            &(EgLinear){.x = &s->a, .w = &x->qkv, .bias = &x->qkv_b, .y = &s->qkv, .rows = rows});
        uint32_t hd = E / heads;
        eg_op_attention(cmd, ops,
                        &(EgAttention){.q = &s->qkv,
                                       .k = &s->qkv,
                                       .v = &s->qkv,
                                       .o = &s->attn,
                                       .q_off = 0,
                                       .k_off = E,
                                       .v_off = 2 * E,
                                       .q_stride = 3 * E,
                                       .k_stride = 3 * E,
                                       .v_stride = 3 * E,
                                       .q_batch = T * 3 * E,
                                       .k_batch = T * 3 * E,
                                       .v_batch = T * 3 * E,
                                       .o_batch = T * E,
                                       .n_queries = T,
                                       .n_keys = T,
                                       .heads = heads,
                                       .head_dim = hd,
                                       .batches = n,
                                       .mode = EG_ATTN_FULL,
                                       .scale = 1.0f / sqrtf((float)hd)});
        eg_op_linear(cmd, ops,
                     &(EgLinear){.x = &s->attn,
                                 .w = &x->out,
                                 .bias = &x->out_b,
                                 .y = &s->h,
                                 .rows = rows,
                                 .accum = 1});
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = &s->h,
                             .weight = &x->ln2_w,
                             .bias = &x->ln2_b,
                             .y = &s->a,
                             .rows = rows,
                             .dim = E,
                             .eps = eps});
        eg_op_linear(cmd, ops,
                     &(EgLinear){.x = &s->a,
                                 .w = &x->fc1,
                                 .bias = &x->fc1_b,
                                 .y = &s->mlp,
                                 .rows = rows,
                                 .act = act});
        eg_op_linear(cmd, ops,
                     &(EgLinear){.x = &s->mlp,
                                 .w = &x->fc2,
                                 .bias = &x->fc2_b,
                                 .y = &s->h,
                                 .rows = rows,
                                 .accum = 1});
    }
    *result = s->h; /* the buffer lives in the arena; this copies its handle */
    return 0;
}

typedef struct PerceiverScratch {
    EgBuffer kvin, zn, z, q, kv, qn, kn, attn, mlp, out;
} PerceiverScratch;

static int record_perceiver(EgCmd *cmd, EgModel *m, EgArena *ar, const EgBuffer *ctx, uint32_t n,
                            EgBuffer *result, EgError *err) {
    const EgPerceiverConfig *pc = &m->cfg.perceiver;
    const EgOps *ops = &m->ops;
    uint32_t E = m->E, T0 = m->vit_tokens, nL = (uint32_t)pc->n_latents;
    uint32_t nh = (uint32_t)pc->n_heads, dh = (uint32_t)pc->head_dim, inner = nh * dh;
    uint32_t Tk = T0 + nL;
    const float eps = 1e-5f; /* hard-coded in the reference perceiver */
    PerceiverScratch s;
    int rc = eg_tensor_buffer(ops, ar, (size_t)n * Tk * E, &s.kvin, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * E, &s.zn, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * E, &s.z, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * inner, &s.q, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * Tk * 2 * inner, &s.kv, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * inner, &s.qn, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * Tk * inner, &s.kn, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * inner, &s.attn, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * 4 * E, &s.mlp, err) ||
             eg_tensor_buffer(ops, ar, (size_t)n * nL * E, &s.out, err);
    if (rc) return -1;
    VkDeviceSize lat_bytes = (VkDeviceSize)nL * E * ops->elem;
    for (uint32_t b = 0; b < n; b++)
        eg_cmd_copy(cmd, &m->latents, 0, &s.z, b * lat_bytes, lat_bytes);
    for (int d = 0; d < pc->depth; d++) {
        const EgPerceiverBlock *x = &m->perceiver[d];
        /* keys/values read [LN_ctx(context); LN_lat(latents)], per image */
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = ctx,
                             .weight = &x->ctx_ln_w,
                             .bias = &x->ctx_ln_b,
                             .y = &s.kvin,
                             .y_batch = Tk * E,
                             .rows = T0,
                             .batches = n,
                             .dim = E,
                             .eps = eps});
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = &s.z,
                             .weight = &x->lat_ln_w,
                             .bias = &x->lat_ln_b,
                             .y = &s.kvin,
                             .y_off = T0 * E,
                             .y_batch = Tk * E,
                             .rows = nL,
                             .batches = n,
                             .dim = E,
                             .eps = eps});
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = &s.z,
                             .weight = &x->lat_ln_w,
                             .bias = &x->lat_ln_b,
                             .y = &s.zn,
                             .rows = n * nL,
                             .dim = E,
                             .eps = eps});
        eg_op_linear(cmd, ops, &(EgLinear){.x = &s.zn, .w = &x->q, .y = &s.q, .rows = n * nL});
        eg_op_linear(cmd, ops, &(EgLinear){.x = &s.kvin, .w = &x->kv, .y = &s.kv, .rows = n * Tk});
        const EgBuffer *q = &s.q, *k = &s.kv;
        uint32_t k_stride = 2 * inner;
        if (pc->qk_layer_norms) {
            eg_op_norm(cmd, ops,
                       &(EgNorm){.x = &s.q,
                                 .weight = &x->q_ln_w,
                                 .bias = &x->q_ln_b,
                                 .y = &s.qn,
                                 .rows = n * nL * nh,
                                 .dim = dh,
                                 .eps = eps});
            eg_op_norm(cmd, ops,
                       &(EgNorm){.x = &s.kv,
                                 .x_stride = dh,
                                 .x_batch = 2 * inner,
                                 .weight = &x->k_ln_w,
                                 .bias = &x->k_ln_b,
                                 .y = &s.kn,
                                 .rows = nh,
                                 .batches = n * Tk,
                                 .dim = dh,
                                 .eps = eps});
            q = &s.qn;
            k = &s.kn;
            k_stride = inner;
        }
        eg_op_attention(cmd, ops,
                        &(EgAttention){.q = q,
                                       .k = k,
                                       .v = &s.kv,
                                       .o = &s.attn,
                                       .q_batch = nL * inner,
                                       .k_stride = k_stride,
                                       .k_batch = Tk * k_stride,
                                       .v_off = inner,
                                       .v_stride = 2 * inner,
                                       .v_batch = Tk * 2 * inner,
                                       .o_batch = nL * inner,
                                       .n_queries = nL,
                                       .n_keys = Tk,
                                       .heads = nh,
                                       .head_dim = dh,
                                       .batches = n,
                                       .mode = EG_ATTN_FULL,
                                       .scale = 1.0f / sqrtf((float)dh)});
        eg_op_linear(
            cmd, ops,
            &(EgLinear){.x = &s.attn, .w = &x->out, .y = &s.z, .rows = n * nL, .accum = 1});
        eg_op_norm(cmd, ops,
                   &(EgNorm){.x = &s.z,
                             .weight = &x->mlp_ln_w,
                             .bias = &x->mlp_ln_b,
                             .y = &s.zn,
                             .rows = n * nL,
                             .dim = E,
                             .eps = eps});
        eg_op_linear(
            cmd, ops,
            &(EgLinear){
                .x = &s.zn, .w = &x->fc, .y = &s.mlp, .rows = n * nL, .act = EG_OP_ACT_RELU});
        eg_op_linear(
            cmd, ops,
            &(EgLinear){.x = &s.mlp, .w = &x->c_proj, .y = &s.z, .rows = n * nL, .accum = 1});
    }
    eg_op_norm(cmd, ops,
               &(EgNorm){.x = &s.z,
                         .weight = &m->perceiver_ln_w,
                         .bias = &m->perceiver_ln_b,
                         .y = &s.out,
                         .rows = n * nL,
                         .dim = E,
                         .eps = eps});
    *result = s.out;
    return 0;
}

int eg_image_encoder_begin(EgModel *m, EgArena *scratch, const float *pixels, uint32_t n,
                           EgCmd *cmd, EgImageFeatures *out, EgError *err) {
    const EgVisionConfig *vc = &m->cfg.vision;
    size_t n_pix = (size_t)n * vc->num_channels * vc->image_size * vc->image_size;
    EgBuffer pix;
    if (eg_tensor_buffer(&m->ops, scratch, n_pix, &pix, err) ||
        eg_upload_f32(&m->ops, &m->staging, &pix, 0, pixels, n_pix, err) ||
        eg_cmd_begin(&m->vk, cmd, err))
        return -1;
    if (record_vit(cmd, m, scratch, &pix, n, &out->vit, err)) goto fail;
    out->features = out->vit;
    if (m->cfg.use_resampler &&
        record_perceiver(cmd, m, scratch, &out->vit, n, &out->features, err))
        goto fail;
    return 0;
fail:
    eg_cmd_abandon(cmd);
    return -1;
}

int eg_image_encoder_run(EgModel *m, const float *pixels, uint32_t n, float *vit_out,
                         float *features_out, EgError *err) {
    EgArena ar;
    eg_arena_init(&ar, &m->vk, EG_MEM_DEVICE, 64u << 20);
    EgCmd cmd;
    EgImageFeatures f;
    int rc =
        eg_image_encoder_begin(m, &ar, pixels, n, &cmd, &f, err) || eg_cmd_submit_wait(&cmd, err);
    if (rc == 0 && vit_out)
        rc = eg_download_f32(&m->ops, &m->staging, &f.vit, 0, vit_out,
                             (size_t)n * m->vit_tokens * m->E, err);
    if (rc == 0 && features_out)
        rc = eg_download_f32(&m->ops, &m->staging, &f.features, 0, features_out,
                             (size_t)n * m->image_tokens * m->E, err);
    eg_arena_reset(&ar);
    return rc;
}
