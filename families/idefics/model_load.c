/* Loading an IDEFICS checkpoint folder onto the device (see families/idefics/model.h). */
#include <stdlib.h>
#include <string.h>

#include "families/idefics/model.h"
#include "runtime/clock.h"
#include "runtime/device_tensor.h"
#include "runtime/safetensors.h"
#include "runtime/vk_pipeline_cache.h"
#include "runtime/weight_loader.h"

static int load_vision(EgModel *m, EgWeightLoader *L) {
    const EgVisionConfig *v = &m->cfg.vision;
    uint32_t E = (uint32_t)v->embed_dim, C = (uint32_t)v->num_channels, p = (uint32_t)v->patch_size;
    int64_t patch_shape[4] = {E, C, p, p};
    L->group = EG_WEIGHT_GROUP_EMBEDDINGS; /* the patch, class and position embeddings */
    if (eg_load_matrix_shaped(L, &m->patch, E, C * p * p, 4, patch_shape,
                              "model.vision_model.embeddings.patch_embedding.weight"))
        return -1;
    int64_t pos_shape[2] = {m->vit_tokens, E};
    if (eg_load_vector(L, &m->cls, E, "model.vision_model.embeddings.class_embedding") ||
        eg_load_buffer(L, &m->pos, 2, pos_shape,
                       "model.vision_model.embeddings.position_embedding.weight"))
        return -1;
    L->group = EG_WEIGHT_GROUP_VISION;
    if (eg_load_vector(L, &m->pre_ln_w, E, "model.vision_model.pre_layrnorm.weight") ||
        eg_load_vector(L, &m->pre_ln_b, E, "model.vision_model.pre_layrnorm.bias"))
        return -1;
    m->vit = calloc((size_t)v->num_hidden_layers, sizeof *m->vit);
    if (!m->vit) return eg_fail(L->err, "out of host memory");
    uint32_t I = (uint32_t)v->intermediate_size;
    for (int l = 0; l < v->num_hidden_layers; l++) {
        EgVitLayer *x = &m->vit[l];
        char pre[128];
        snprintf(pre, sizeof pre, "model.vision_model.encoder.layers.%d.", l);
        static const char *const qkv_w[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                            "self_attn.v_proj.weight"};
        static const char *const qkv_b[] = {"self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                            "self_attn.v_proj.bias"};
        if (eg_load_stacked(L, &x->qkv, E, E, 3, qkv_w, pre) ||
            eg_load_vectors(L, &x->qkv_b, E, 3, qkv_b, pre))
            return -1;
        if (eg_load_matrix(L, &x->out, E, E, "%sself_attn.out_proj.weight", pre) ||
            eg_load_vector(L, &x->out_b, E, "%sself_attn.out_proj.bias", pre) ||
            eg_load_vector(L, &x->ln1_w, E, "%slayer_norm1.weight", pre) ||
            eg_load_vector(L, &x->ln1_b, E, "%slayer_norm1.bias", pre) ||
            eg_load_vector(L, &x->ln2_w, E, "%slayer_norm2.weight", pre) ||
            eg_load_vector(L, &x->ln2_b, E, "%slayer_norm2.bias", pre) ||
            eg_load_matrix(L, &x->fc1, I, E, "%smlp.fc1.weight", pre) ||
            eg_load_vector(L, &x->fc1_b, I, "%smlp.fc1.bias", pre) ||
            eg_load_matrix(L, &x->fc2, E, I, "%smlp.fc2.weight", pre) ||
            eg_load_vector(L, &x->fc2_b, E, "%smlp.fc2.bias", pre))
            return -1;
    }
    return 0;
}

static int load_perceiver(EgModel *m, EgWeightLoader *L) {
    const EgPerceiverConfig *pc = &m->cfg.perceiver;
    uint32_t E = m->E, inner = (uint32_t)(pc->n_heads * pc->head_dim), dh = (uint32_t)pc->head_dim;
    int64_t lat_shape[2] = {pc->n_latents, E};
    L->group = EG_WEIGHT_GROUP_EMBEDDINGS; /* the latents: learned inputs */
    if (eg_load_buffer(L, &m->latents, 2, lat_shape, "model.perceiver_resampler.latents"))
        return -1;
    L->group = EG_WEIGHT_GROUP_VISION;
    if (eg_load_vector(L, &m->perceiver_ln_w, E, "model.perceiver_resampler.layer_norm.weight") ||
        eg_load_vector(L, &m->perceiver_ln_b, E, "model.perceiver_resampler.layer_norm.bias"))
        return -1;
    m->perceiver = calloc((size_t)pc->depth, sizeof *m->perceiver);
    if (!m->perceiver) return eg_fail(L->err, "out of host memory");
    for (int d = 0; d < pc->depth; d++) {
        EgPerceiverBlock *b = &m->perceiver[d];
        char pre[128];
        snprintf(pre, sizeof pre, "model.perceiver_resampler.blocks.%d.", d);
        static const char *const kv[] = {"0.k_proj.weight", "0.v_proj.weight"};
        if (eg_load_vector(L, &b->ctx_ln_w, E, "%s0.context_layer_norm.weight", pre) ||
            eg_load_vector(L, &b->ctx_ln_b, E, "%s0.context_layer_norm.bias", pre) ||
            eg_load_vector(L, &b->lat_ln_w, E, "%s0.latents_layer_norm.weight", pre) ||
            eg_load_vector(L, &b->lat_ln_b, E, "%s0.latents_layer_norm.bias", pre) ||
            eg_load_matrix(L, &b->q, inner, E, "%s0.q_proj.weight", pre) ||
            eg_load_stacked(L, &b->kv, inner, E, 2, kv, pre) ||
            eg_load_matrix(L, &b->out, E, inner, "%s0.output_proj.weight", pre) ||
            eg_load_vector(L, &b->mlp_ln_w, E, "%s1.ln.weight", pre) ||
            eg_load_vector(L, &b->mlp_ln_b, E, "%s1.ln.bias", pre) ||
            eg_load_matrix(L, &b->fc, 4 * E, E, "%s1.fc.weight", pre) ||
            eg_load_matrix(L, &b->c_proj, E, 4 * E, "%s1.c_proj.weight", pre))
            return -1;
        if (pc->qk_layer_norms &&
            (eg_load_vector(L, &b->q_ln_w, dh, "%s0.q_layer_norm.weight", pre) ||
             eg_load_vector(L, &b->q_ln_b, dh, "%s0.q_layer_norm.bias", pre) ||
             eg_load_vector(L, &b->k_ln_w, dh, "%s0.k_layer_norm.weight", pre) ||
             eg_load_vector(L, &b->k_ln_b, dh, "%s0.k_layer_norm.bias", pre)))
            return -1;
    }
    return 0;
}

static int load_alpha(const EgModel *m, EgWeightLoader *L, EgBuffer *out, const char *pre,
                      const char *what) {
    if (m->cfg.alpha_vector) {
        int64_t shape[3] = {1, 1, m->H};
        return eg_load_buffer(L, out, 3, shape, "%s%s", pre, what);
    }
    int64_t one = 1;
    return eg_load_buffer(L, out, 1, &one, "%s%s", pre, what);
}

/* A SwiGLU MLP's weights under prefix pre: gate and up stacked in gate where the device fuses
 * the SwiGLU (m->mlp_fused), else apart. */
static int load_mlp(const EgModel *m, EgWeightLoader *L, EgMatrix *gate, EgMatrix *up,
                    EgMatrix *down, const char *pre) {
    uint32_t H = m->H, I = m->I;
    static const char *const gate_up[] = {"mlp.gate_proj.weight", "mlp.up_proj.weight"};
    if (m->mlp_fused ? eg_load_stacked(L, gate, I, H, 2, gate_up, pre)
                     : eg_load_matrix(L, gate, I, H, "%s%s", pre, gate_up[0]) ||
                           eg_load_matrix(L, up, I, H, "%s%s", pre, gate_up[1]))
        return -1;
    return eg_load_matrix(L, down, H, I, "%smlp.down_proj.weight", pre);
}

static int load_text(EgModel *m, EgWeightLoader *L) {
    const EgModelConfig *c = &m->cfg;
    uint32_t H = m->H, I = m->I, V = (uint32_t)c->vocab_size,
             A = (uint32_t)c->additional_vocab_size;
    /* The additional vocabulary's rows after the base vocabulary's, in one table each: ids
     * index it directly, and the logits come from one product */
    const uint32_t rows[2] = {V, A};
    static const char *const embed_names[2] = {"model.embed_tokens.weight",
                                               "model.embed_tokens.additional_embedding.weight"};
    static const char *const head_names[2] = {"lm_head.weight", "lm_head.additional_fc.weight"};
    /* no kernel of quantized weights fuses the SwiGLU */
    m->mlp_fused =
        !L->check_only && L->quant == EG_WEIGHTS_DENSE && eg_ops_fuses_swiglu(&m->ops, I, H);
    L->group = EG_WEIGHT_GROUP_EMBEDDINGS;
    if (eg_load_rows(L, &m->embed, EG_WEIGHTS_DENSE, H, 2, rows, embed_names)) return -1;
    L->group = EG_WEIGHT_GROUP_LM_HEAD;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        m->lm_head_tied = 1;
    } else if (eg_load_rows(L, &m->lm_head, EG_WEIGHTS_DENSE, H, 2, rows, head_names)) {
        return -1;
    }
    L->group = EG_WEIGHT_GROUP_TEXT;
    if (eg_load_vector(L, &m->final_norm, H, "model.norm.weight")) return -1;
    int L_layers = c->num_hidden_layers, n_cross = L_layers / c->cross_layer_interval;
    m->layers = calloc((size_t)L_layers, sizeof *m->layers);
    m->cross = calloc((size_t)n_cross, sizeof *m->cross);
    if (!m->layers || !m->cross) return eg_fail(L->err, "out of host memory");
    for (int i = 0; i < L_layers; i++) {
        EgDecoderLayer *x = &m->layers[i];
        char pre[96], self_attn[128];
        snprintf(pre, sizeof pre, "model.layers.%d.", i);
        snprintf(self_attn, sizeof self_attn, "%sself_attn.", pre);
        static const char *const qkv_names[] = {"q_proj.weight", "k_proj.weight", "v_proj.weight"};
        if (eg_load_vector(L, &x->in_norm, H, "%sinput_layernorm.weight", pre) ||
            eg_load_vector(L, &x->post_norm, H, "%spost_attention_layernorm.weight", pre) ||
            eg_load_stacked(L, &x->qkv, H, H, 3, qkv_names, self_attn) ||
            eg_load_matrix(L, &x->o, H, H, "%sself_attn.o_proj.weight", pre) ||
            load_mlp(m, L, &x->gate, &x->up, &x->down, pre))
            return -1;
    }
    for (int j = 0; j < n_cross; j++) {
        EgCrossLayer *x = &m->cross[j];
        char pre[96];
        snprintf(pre, sizeof pre, "model.gated_cross_attn_layers.%d.", j);
        static const char *const kv[] = {"cross_attn.k_proj.weight", "cross_attn.v_proj.weight"};
        if (load_alpha(m, L, &x->alpha_attn, pre, "alpha_cross_attn") ||
            load_alpha(m, L, &x->alpha_dense, pre, "alpha_dense") ||
            eg_load_vector(L, &x->in_norm, H, "%sinput_layernorm.weight", pre) ||
            eg_load_vector(L, &x->post_norm, H, "%spost_attention_layernorm.weight", pre) ||
            eg_load_matrix(L, &x->q, H, H, "%scross_attn.q_proj.weight", pre) ||
            eg_load_stacked(L, &x->kv, H, m->E, 2, kv, pre) ||
            eg_load_matrix(L, &x->o, H, H, "%scross_attn.o_proj.weight", pre) ||
            load_mlp(m, L, &x->gate, &x->up, &x->down, pre))
            return -1;
        if (c->qk_layer_norms &&
            (eg_load_vector(L, &x->q_norm, m->head_dim, "%scross_attn.q_layer_norm.weight", pre) ||
             eg_load_vector(L, &x->k_norm, m->head_dim, "%scross_attn.k_layer_norm.weight", pre)))
            return -1;
    }
    return 0;
}

/* Every tensor of the model through L, in the same order for a check and a load. */
static int load_tensors(EgModel *m, EgWeightLoader *L) {
    return load_vision(m, L) || (m->cfg.use_resampler && load_perceiver(m, L)) || load_text(m, L)
               ? -1
               : 0;
}

/* The names, shapes and (pre-quantized) scales of every tensor, without a device: the folder is
 * checked whole before anything reaches one. The layer tables a check fills are dropped. */
static int check_tensors(EgModel *m, const EgTensorFile *tf, EgWeightFormat quant,
                         EgTensorVisitor visit, void *visit_ctx, EgError *err) {
    EgWeightLoader L = {.tf = tf,
                        .err = err,
                        .quant = quant,
                        .check_only = 1,
                        .visit = visit,
                        .visit_ctx = visit_ctx};
    int rc = load_tensors(m, &L);
    free(m->vit), free(m->perceiver), free(m->layers), free(m->cross);
    m->vit = NULL, m->perceiver = NULL, m->layers = NULL, m->cross = NULL;
    return rc;
}

/* What eg_model_load and eg_model_visit_tensors read before the weights: config.json and the
 * sizes it gives. */
static int read_config(EgModel *m, const char *dir, EgError *err) {
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (eg_model_config_load(path, &m->cfg, err)) return -1;
    const EgModelConfig *c = &m->cfg;
    m->H = (uint32_t)c->hidden_size;
    m->I = (uint32_t)c->intermediate_size;
    m->heads = (uint32_t)c->num_attention_heads;
    m->head_dim = m->H / m->heads;
    m->vocab = (uint32_t)(c->vocab_size + c->additional_vocab_size);
    m->E = (uint32_t)c->vision.embed_dim;
    uint32_t grid = (uint32_t)(c->vision.image_size / c->vision.patch_size);
    m->vit_tokens = grid * grid + 1;
    m->image_tokens = c->use_resampler ? (uint32_t)c->perceiver.n_latents : m->vit_tokens;
    return 0;
}

int eg_model_visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                           void *ctx, EgError *err) {
    EgModel *m = calloc(1, sizeof *m);
    if (!m) return eg_fail(err, "out of host memory");
    EgTensorFile *tf = NULL;
    EgWeightFormat quant;
    int rc = read_config(m, dir, err) || !(tf = eg_tensors_open_dir(dir, err)) ||
                     eg_weight_loader_quant(tf, opt->quant, &quant, err) ||
                     check_tensors(m, tf, quant, visit, ctx, err)
                 ? -1
                 : 0;
    eg_tensors_close(tf);
    free(m);
    return rc ? eg_fail_prefix(err, "reading model %s", dir) : 0;
}

static int create_scratch(EgModel *m, EgError *err) {
    EgOps *ops = &m->ops;
    size_t T = m->max_chunk;
    eg_arena_init(&m->scratch_arena, &m->vk, EG_MEM_DEVICE, 64u << 20);
    eg_arena_init(&m->s.host, &m->vk, EG_MEM_HOST, 16u << 20);
    /* s.g and s.u hold a row of the MLP's intermediate size, and s.u the fused q, k, v */
    size_t wide = m->I > 3 * m->H ? m->I : 3 * m->H;
    if (eg_tensor_buffer(ops, &m->scratch_arena, T * m->H, &m->s.h, err) ||
        eg_tensor_buffer(ops, &m->scratch_arena, T * m->H, &m->s.a, err) ||
        eg_tensor_buffer(ops, &m->scratch_arena, T * m->H, &m->s.q, err) ||
        eg_tensor_buffer(ops, &m->scratch_arena, T * m->H, &m->s.attn, err) ||
        eg_tensor_buffer(ops, &m->scratch_arena, T * wide, &m->s.g, err) ||
        eg_tensor_buffer(ops, &m->scratch_arena, T * wide, &m->s.u, err) ||
        eg_buffer_create(&m->s.host, T * 4, &m->s.ids, err) ||
        eg_buffer_create(&m->s.host, T * 8, &m->s.ranges, err) ||
        eg_buffer_create(&m->s.host, T * m->vocab * ops->elem, &m->s.logits, err) ||
        eg_buffer_create(&m->s.host,
                         (size_t)EG_BATCH_MAX *
                             (m->cfg.num_hidden_layers +
                              m->cfg.num_hidden_layers / m->cfg.cross_layer_interval) *
                             sizeof(EgBatchEntry),
                         &m->s.batch_table, err))
        return eg_fail_prefix(err, "allocating scratch for %zu tokens", T);
    return 0;
}

int eg_model_ensure_rope(EgModel *m, uint32_t positions, EgError *err) {
    if (positions <= m->rope_positions) return 0;
    uint32_t n = m->rope_positions ? m->rope_positions : 2048;
    while (n < positions)
        n *= 2;
    size_t count = (size_t)n * m->head_dim; /* cos and sin halves */
    float *table = malloc(count * sizeof *table);
    if (!table) return eg_fail(err, "out of host memory");
    eg_rope_table(table, n, m->head_dim, m->cfg.rope_theta);
    /* The table stays float in both precisions (the shader reads it as float). */
    int rc = eg_buffer_create(&m->weights, count * sizeof(float), &m->rope_table, err);
    if (rc == 0) rc = eg_upload(&m->staging, &m->rope_table, 0, table, count * sizeof(float), err);
    free(table);
    if (rc == 0) m->rope_positions = n;
    return rc;
}

EgModel *eg_model_load(const char *dir, const EgModelOptions *opt, EgError *err) {
    EgModelOptions defaults = {0};
    if (!opt) opt = &defaults;
    double t0 = eg_now_s();
    EgModel *m = calloc(1, sizeof *m);
    if (!m) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (read_config(m, dir, err)) {
        free(m);
        return NULL;
    }
    const EgModelConfig *c = &m->cfg;
    m->max_chunk = opt->max_chunk ? opt->max_chunk : 256;
    m->max_images = opt->max_images ? opt->max_images : 16;

    EgVkOptions vo = {.device = opt->device,
                      .verbose = opt->progress != NULL,
                      .pipeline_cache_dir = opt->pipeline_cache_dir};
    EgTensorFile *tf = NULL;
    EgWeightLoader L = {.ops = &m->ops,
                        .arena = &m->weights,
                        .staging = &m->staging,
                        .err = err,
                        .quant = opt->quant,
                        .report = &m->weight_report};
    tf = opt->random_weights ? eg_tensors_random(0x5EED, err) : eg_tensors_open_dir(dir, err);
    if (!tf || eg_weight_loader_quant(tf, opt->quant, &L.quant, err) ||
        check_tensors(m, tf, L.quant, NULL, NULL, err))
        goto fail;
    L.tf = tf;
    if (eg_vk_create(&m->vk, &vo, err)) goto fail;
    /* attention.comp keeps one query head in shared memory: at most 512 dims. */
    uint32_t vit_hd = m->E / (uint32_t)c->vision.num_attention_heads;
    uint32_t perc_hd = c->use_resampler ? (uint32_t)c->perceiver.head_dim : 0;
    if (m->head_dim > 512 || vit_hd > 512 || perc_hd > 512) {
        eg_fail(err,
                "%s: an attention head dimension (text %u, vision %u, perceiver %u) exceeds "
                "the supported 512",
                path, m->head_dim, vit_hd, perc_hd);
        goto fail;
    }
    if (eg_ops_init_config(&m->ops, &m->vk, !opt->fp32,
                           &(EgOpsConfig){.quant_kernels = eg_ops_quant_kernels_for(L.quant)},
                           err) ||
        eg_batch_ops_init(&m->batch_ops, &m->ops, err))
        goto fail;
    /* every pipeline is built: what the driver compiled is kept for the next start */
    if (m->vk.pipeline_cache_path) eg_pipeline_cache_save(&m->vk, stderr);
    /* weights of 32 MiB or more get blocks of their own (eg_buffer_create), the rest share */
    eg_arena_init(&m->weights, &m->vk, EG_MEM_DEVICE, 64u << 20);
    if (eg_staging_init(&m->staging, &m->vk, 16u << 20, err)) goto fail;
    const char *as = opt->fp32 ? "fp32" : "fp16";
    const char *projections = L.quant ? eg_weight_format_name(L.quant) : as;
    if (opt->progress && opt->random_weights)
        fprintf(opt->progress,
                "egret: generating random weights for %s/config.json as %s, projections %s\n", dir,
                as, projections);
    else if (opt->progress)
        fprintf(opt->progress, "egret: loading %s (%d tensors, %s weights as %s, projections %s)\n",
                dir, eg_tensors_count(tf), c->dtype[0] ? c->dtype : "?", as, projections);
    double t_weights = eg_now_s();
    if (load_tensors(m, &L)) goto fail;
    t_weights = eg_now_s() - t_weights;
    if (eg_model_ensure_rope(
            m, (uint32_t)(c->max_position_embeddings > 0 ? c->max_position_embeddings : 2048),
            err) ||
        create_scratch(m, err))
        goto fail;
    eg_tensors_close(tf);
    if (opt->progress)
        fprintf(opt->progress,
                "egret: loaded %d tensors (%.1f MiB on %s) in %.2f s, of which the weights %.2f "
                "s\n",
                L.n_tensors, (double)m->weights.bytes_used / (1 << 20), m->vk.props.deviceName,
                eg_now_s() - t0, t_weights);
    return m;
fail:
    eg_fail_prefix(err, "loading model %s", dir);
    eg_tensors_close(tf);
    eg_model_free(m);
    return NULL;
}

static void release_matrices(EgMatrix *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        eg_matrix_release(list[i]);
}

void eg_model_free(EgModel *m) {
    if (!m) return;
    const EgModelConfig *c = &m->cfg;
    if (m->vit)
        for (int l = 0; l < c->vision.num_hidden_layers; l++) {
            EgVitLayer *x = &m->vit[l];
            EgMatrix *list[] = {&x->qkv, &x->out, &x->fc1, &x->fc2};
            release_matrices(list, sizeof list / sizeof list[0]);
        }
    if (m->perceiver)
        for (int d = 0; d < c->perceiver.depth; d++) {
            EgPerceiverBlock *b = &m->perceiver[d];
            EgMatrix *list[] = {&b->q, &b->kv, &b->out, &b->fc, &b->c_proj};
            release_matrices(list, sizeof list / sizeof list[0]);
        }
    if (m->layers)
        for (int i = 0; i < c->num_hidden_layers; i++) {
            EgDecoderLayer *x = &m->layers[i];
            EgMatrix *list[] = {&x->qkv, &x->o, &x->gate, &x->up, &x->down};
            release_matrices(list, sizeof list / sizeof list[0]);
        }
    if (m->cross && c->cross_layer_interval > 0)
        for (int j = 0; j < c->num_hidden_layers / c->cross_layer_interval; j++) {
            EgCrossLayer *x = &m->cross[j];
            EgMatrix *list[] = {&x->q, &x->kv, &x->o, &x->gate, &x->up, &x->down};
            release_matrices(list, sizeof list / sizeof list[0]);
        }
    if (!m->lm_head_tied) eg_matrix_release(&m->lm_head);
    EgMatrix *rest[] = {&m->patch, &m->embed};
    release_matrices(rest, sizeof rest / sizeof rest[0]);
    free(m->vit);
    free(m->perceiver);
    free(m->layers);
    free(m->cross);
    if (m->vk.device) {
        eg_arena_reset(&m->s.host);
        eg_arena_reset(&m->scratch_arena);
        eg_staging_destroy(&m->staging);
        eg_arena_reset(&m->weights);
        eg_batch_ops_destroy(&m->batch_ops, &m->ops);
        eg_ops_destroy(&m->ops);
        eg_vk_destroy(&m->vk);
    }
    free(m);
}
