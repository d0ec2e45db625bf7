/* Loading the mllama text decoder's weights (see families/mllama/text_model.h). */
#include <stdlib.h>
#include <string.h>

#include "families/mllama/text_model.h"
#include "runtime/weight_loader.h"

typedef struct Loader {
    EgWeightLoader w;
    EgMllamaText *t;
    const char
        *model; /* prefix of the decoder: "language_model.model." or "model.language_model." */
    const char *lm_head; /* "language_model.lm_head.weight" or "lm_head.weight" */
} Loader;

static int load_vector(Loader *L, EgBuffer *out, int64_t n, const char *pre, const char *what) {
    return eg_load_vector(&L->w, out, n, "%s%s%s", L->model, pre, what);
}

/* Tensors model prefix + pre + suffixes[i] (rows[i] rows of cols each), stacked by rows. */
static int load_named(Loader *L, EgMatrix *m, uint32_t cols, int n, const uint32_t *rows,
                      const char *pre, const char *const *suffixes) {
    char names[4][256];
    const char *ptrs[4];
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s%s%s", L->model, pre, suffixes[i]);
        ptrs[i] = names[i];
    }
    return eg_load_rows(&L->w, m, L->w.quant, cols, n, rows, ptrs);
}

static int load_matrix(Loader *L, EgMatrix *m, uint32_t rows, uint32_t cols, const char *pre,
                       const char *what) {
    return load_named(L, m, cols, 1, &rows, pre, &what);
}

/* A SwiGLU MLP under pre: gate and up stacked where the device fuses the SwiGLU. */
static int load_mlp(Loader *L, EgMatrix *gate, EgMatrix *up, EgMatrix *down, const char *pre) {
    EgMllamaText *t = L->t;
    static const char *const gate_up[] = {"mlp.gate_proj.weight", "mlp.up_proj.weight"};
    const uint32_t rows[2] = {t->I, t->I};
    if (t->mlp_fused ? load_named(L, gate, t->H, 2, rows, pre, gate_up)
                     : load_matrix(L, gate, t->I, t->H, pre, gate_up[0]) ||
                           load_matrix(L, up, t->I, t->H, pre, gate_up[1]))
        return -1;
    return load_matrix(L, down, t->H, t->I, pre, "mlp.down_proj.weight");
}

static int load_self_layer(Loader *L, EgMllamaSelfLayer *x, const char *pre) {
    EgMllamaText *t = L->t;
    static const char *const qkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight"};
    const uint32_t rows[3] = {t->H, t->kv_width, t->kv_width};
    return load_vector(L, &x->in_norm, t->H, pre, "input_layernorm.weight") ||
           load_vector(L, &x->post_norm, t->H, pre, "post_attention_layernorm.weight") ||
           load_named(L, &x->qkv, t->H, 3, rows, pre, qkv) ||
           load_matrix(L, &x->o, t->H, t->H, pre, "self_attn.o_proj.weight") ||
           load_mlp(L, &x->gate, &x->up, &x->down, pre);
}

static int load_cross_layer(Loader *L, EgMllamaCrossLayer *x, const char *pre) {
    EgMllamaText *t = L->t;
    static const char *const kv[] = {"cross_attn.k_proj.weight", "cross_attn.v_proj.weight"};
    const uint32_t rows[2] = {t->kv_width, t->kv_width};
    return load_vector(L, &x->in_norm, t->H, pre, "input_layernorm.weight") ||
           load_vector(L, &x->post_norm, t->H, pre, "post_attention_layernorm.weight") ||
           load_vector(L, &x->q_norm, t->head_dim, pre, "cross_attn.q_norm.weight") ||
           load_vector(L, &x->k_norm, t->head_dim, pre, "cross_attn.k_norm.weight") ||
           load_vector(L, &x->attn_gate, 1, pre, "cross_attn_attn_gate") ||
           load_vector(L, &x->mlp_gate, 1, pre, "cross_attn_mlp_gate") ||
           load_matrix(L, &x->q, t->H, t->H, pre, "cross_attn.q_proj.weight") ||
           load_named(L, &x->kv, t->H, 2, rows, pre, kv) ||
           load_matrix(L, &x->o, t->H, t->H, pre, "cross_attn.o_proj.weight") ||
           load_mlp(L, &x->gate, &x->up, &x->down, pre);
}

/* The layout the checkpoint uses (../shared/docs/mllama.md §2.2): files carry the legacy
 * names; state dicts of transformers 4.52+ the new ones. Random weights take the legacy. */
static void pick_names(Loader *L) {
    L->model = "language_model.model.";
    L->lm_head = "language_model.lm_head.weight";
    if (!eg_tensors_find(L->w.tf, "language_model.model.embed_tokens.weight") &&
        eg_tensors_find(L->w.tf, "model.language_model.embed_tokens.weight")) {
        L->model = "model.language_model.";
        L->lm_head = "lm_head.weight";
    }
}

static int load_weights(Loader *L) {
    EgMllamaText *t = L->t;
    const EgMllamaTextConfig *c = &t->cfg;
    pick_names(L);
    char embed_name[256];
    snprintf(embed_name, sizeof embed_name, "%sembed_tokens.weight", L->model);
    const char *embed_ptr = embed_name;
    /* the embedding table is read by row lookups and the LM head makes the logits, the most
     * sensitive product: both stay dense (docs/quantization.md) */
    L->w.group = EG_WEIGHT_GROUP_EMBEDDINGS;
    if (eg_load_rows(&L->w, &t->embed, EG_WEIGHTS_DENSE, t->H, 1, &t->embed_rows, &embed_ptr))
        return -1;
    L->w.group = EG_WEIGHT_GROUP_LM_HEAD;
    /* transformers ties nothing for mllama (whatever tie_word_embeddings says, lm_head is read
     * from the checkpoint); only a checkpoint without lm_head that asks for tying reuses the
     * embedding's first vocab rows (the chunks past them are never reached) */
    if (c->tie_word_embeddings && !eg_tensors_find(L->w.tf, L->lm_head)) {
        t->lm_head = t->embed;
        t->lm_head.rows = t->vocab;
        t->lm_head.n_chunks = (t->vocab + t->embed.chunk_rows - 1) / t->embed.chunk_rows;
        t->lm_head_tied = 1;
    } else if (eg_load_rows(&L->w, &t->lm_head, EG_WEIGHTS_DENSE, t->H, 1, &t->vocab,
                            &L->lm_head)) {
        return -1;
    }
    L->w.group = EG_WEIGHT_GROUP_TEXT;
    if (load_vector(L, &t->final_norm, t->H, "", "norm.weight")) return -1;
    t->self = calloc((size_t)c->num_hidden_layers, sizeof *t->self);
    t->cross = calloc((size_t)(c->n_cross ? c->n_cross : 1), sizeof *t->cross);
    if (!t->self || !t->cross) return eg_fail(L->w.err, "out of host memory");
    for (int i = 0; i < c->num_hidden_layers; i++) {
        char pre[64];
        snprintf(pre, sizeof pre, "layers.%d.", i);
        int j = eg_mllama_cross_index(c, i);
        if (j >= 0 ? load_cross_layer(L, &t->cross[j], pre) : load_self_layer(L, &t->self[i], pre))
            return -1;
    }
    return 0;
}

static int create_scratch(EgMllamaText *t, EgError *err) {
    EgOps *ops = t->ops;
    size_t T = t->max_chunk;
    eg_arena_init(&t->scratch_arena, ops->vk, EG_MEM_DEVICE, 64u << 20);
    eg_arena_init(&t->s.host, ops->vk, EG_MEM_HOST, 16u << 20);
    /* s.g and s.u hold a row of the MLP's intermediate size (twice with the fused SwiGLU's
     * [gate; up]), s.u also the q, k, v of a self-attention layer */
    size_t wide = 2 * (size_t)t->I > t->qkv_width ? 2 * (size_t)t->I : t->qkv_width;
    if (eg_tensor_buffer(ops, &t->scratch_arena, T * t->H, &t->s.h, err) ||
        eg_tensor_buffer(ops, &t->scratch_arena, T * t->H, &t->s.a, err) ||
        eg_tensor_buffer(ops, &t->scratch_arena, T * t->H, &t->s.q, err) ||
        eg_tensor_buffer(ops, &t->scratch_arena, T * t->H, &t->s.attn, err) ||
        eg_tensor_buffer(ops, &t->scratch_arena, T * wide, &t->s.g, err) ||
        eg_tensor_buffer(ops, &t->scratch_arena, T * wide, &t->s.u, err) ||
        eg_buffer_create(&t->s.host, T * 4, &t->s.ids, err) ||
        eg_buffer_create(&t->s.host, T * t->mask_words * 4, &t->s.mask, err) ||
        eg_buffer_create(&t->s.host, T * t->vocab * ops->elem, &t->s.logits, err))
        return eg_fail_prefix(err, "allocating scratch for %zu tokens", T);
    return 0;
}

int eg_mllama_text_ensure_rope(EgMllamaText *t, uint32_t positions, EgError *err) {
    if (positions <= t->rope_positions) return 0;
    uint32_t n = t->rope_positions ? t->rope_positions : 2048;
    while (n < positions)
        n *= 2;
    size_t count = (size_t)n * t->head_dim; /* cos and sin halves */
    float *table = malloc(count * sizeof *table);
    if (!table) return eg_fail(err, "out of host memory");
    eg_rope_table_freqs(table, n, t->head_dim, t->inv_freq);
    /* float in both precisions (the shader reads it as float); the old table stays in the
     * arena until the model is freed, as IDEFICS' does */
    int rc = eg_buffer_create(&t->weights, count * sizeof(float), &t->rope_table, err);
    if (rc == 0) rc = eg_upload(t->staging, &t->rope_table, 0, table, count * sizeof(float), err);
    free(table);
    if (rc == 0) t->rope_positions = n;
    return rc;
}

/* The sizes load_weights and the forward pass use, from the config and the options. */
static void set_dims(EgMllamaText *t, const EgMllamaTextConfig *cfg,
                     const EgMllamaTextOptions *opt) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->H = (uint32_t)cfg->hidden_size;
    t->I = (uint32_t)cfg->intermediate_size;
    t->heads = (uint32_t)cfg->num_attention_heads;
    t->kv_heads = (uint32_t)cfg->num_key_value_heads;
    t->head_dim = t->H / t->heads;
    t->kv_width = t->kv_heads * t->head_dim;
    t->qkv_width = t->H + 2 * t->kv_width;
    t->vocab = (uint32_t)cfg->vocab_size;
    t->embed_rows = t->vocab + EG_MLLAMA_EXTRA_EMBEDDINGS;
    t->max_chunk = opt && opt->max_chunk ? opt->max_chunk : 256;
    t->max_tiles = opt && opt->max_tiles ? opt->max_tiles : 64;
    t->mask_words = (t->max_tiles + 31) / 32;
}

int eg_mllama_text_check(const EgMllamaTextConfig *cfg, const EgTensorFile *tf,
                         EgWeightFormat quant, EgTensorVisitor visit, void *visit_ctx,
                         EgError *err) {
    EgMllamaText t;
    set_dims(&t, cfg, NULL);
    Loader L = {.w = {.tf = tf,
                      .err = err,
                      .quant = quant,
                      .check_only = 1,
                      .visit = visit,
                      .visit_ctx = visit_ctx},
                .t = &t};
    int rc = load_weights(&L);
    free(t.self);
    free(t.cross);
    return rc ? eg_fail_prefix(err, "checking the mllama text model's tensors") : 0;
}

int eg_mllama_text_load(EgMllamaText *t, const EgMllamaTextConfig *cfg, EgOps *ops,
                        EgStaging *staging, EgTensorFile *tf, const EgMllamaTextOptions *opt,
                        EgError *err) {
    set_dims(t, cfg, opt);
    t->ops = ops;
    t->staging = staging;
    /* no kernel of quantized weights fuses the SwiGLU */
    t->mlp_fused = (!opt || opt->quant == EG_WEIGHTS_DENSE) && eg_ops_fuses_swiglu(ops, t->I, t->H);
    eg_arena_init(&t->weights, ops->vk, EG_MEM_DEVICE, 64u << 20);
    t->inv_freq = malloc((t->head_dim / 2) * sizeof *t->inv_freq);
    t->row_runs = malloc(2 * (size_t)t->max_chunk * sizeof *t->row_runs);
    if (!t->inv_freq || !t->row_runs) {
        eg_fail(err, "out of host memory");
        goto fail;
    }
    eg_rope_inv_freq(t->inv_freq, t->head_dim, cfg->rope_theta,
                     cfg->rope_llama3 ? &cfg->llama3 : NULL);
    Loader L = {.w = {.ops = ops,
                      .arena = &t->weights,
                      .staging = staging,
                      .tf = tf,
                      .err = err,
                      .quant = opt ? opt->quant : EG_WEIGHTS_DENSE,
                      .report = opt ? opt->report : NULL},
                .t = t};
    if (load_weights(&L) || eg_mllama_text_ensure_rope(t, 2048, err) || create_scratch(t, err))
        goto fail;
    return 0;
fail:
    eg_fail_prefix(err, "loading the mllama text model");
    eg_mllama_text_free(t);
    return -1;
}

static void release_matrices(EgMatrix *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        eg_matrix_release(list[i]);
}

void eg_mllama_text_free(EgMllamaText *t) {
    if (!t || !t->ops) return;
    const EgMllamaTextConfig *c = &t->cfg;
    for (int i = 0; t->self && i < c->num_hidden_layers; i++) {
        EgMllamaSelfLayer *x = &t->self[i];
        EgMatrix *list[] = {&x->qkv, &x->o, &x->gate, &x->up, &x->down};
        release_matrices(list, sizeof list / sizeof list[0]);
    }
    for (int j = 0; t->cross && j < c->n_cross; j++) {
        EgMllamaCrossLayer *x = &t->cross[j];
        EgMatrix *list[] = {&x->q, &x->kv, &x->o, &x->gate, &x->up, &x->down};
        release_matrices(list, sizeof list / sizeof list[0]);
    }
    if (!t->lm_head_tied) eg_matrix_release(&t->lm_head);
    eg_matrix_release(&t->embed);
    free(t->self);
    free(t->cross);
    free(t->inv_freq);
    free(t->row_runs);
    eg_arena_reset(&t->s.host);
    eg_arena_reset(&t->scratch_arena);
    eg_arena_reset(&t->weights);
    memset(t, 0, sizeof *t);
}
