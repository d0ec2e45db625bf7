/* Loading mllama's vision tower and projector (families/mllama/vision_load.h); tensor names and
 * shapes as in ../shared/docs/mllama.md §2. */
#include "families/mllama/vision_load.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"

typedef struct Loader {
    EgMllamaModel *m;
    const EgTensorFile *tf;
    EgError *err;
    int check_only; /* names and shapes only: nothing is created or uploaded */
} Loader;

static void fmt_name(char *buf, size_t len, const char *fmt, va_list ap) {
    vsnprintf(buf, len, fmt, ap);
}

/* A tensor of exactly `shape` (ndim dims), uploaded whole into a fresh buffer. */
static int load_buffer(Loader *L, EgBuffer *out, int ndim, const int64_t *shape, const char *fmt,
                       ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    fmt_name(name, sizeof name, fmt, ap);
    va_end(ap);
    const EgTensorView *t;
    if (eg_tensors_expect(L->tf, name, ndim, shape, &t, L->err)) return -1;
    if (L->check_only) return 0;
    if (eg_tensor_buffer(&L->m->ops, &L->m->weights, (size_t)t->numel, out, L->err) ||
        eg_upload_view(&L->m->ops, &L->m->staging, out, 0, t, 0, t->numel, L->err))
        return eg_fail_prefix(L->err, "%s", name);
    return 0;
}

static int load_vector(Loader *L, EgBuffer *out, int64_t n, const char *prefix, const char *what) {
    return load_buffer(L, out, 1, &n, "%s%s", prefix, what);
}

/* Tensors prefix + suffixes[i], each [rows_each, cols], stacked by rows into one matrix. */
static int load_stacked(Loader *L, EgMatrix *m, uint32_t rows_each, uint32_t cols, int n,
                        const char *const *suffixes, const char *prefix) {
    if (!L->check_only &&
        eg_matrix_create(&L->m->ops, &L->m->weights, rows_each * (uint32_t)n, cols, 0, m, L->err))
        return eg_fail_prefix(L->err, "%s%s", prefix, suffixes[0]);
    for (int i = 0; i < n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, suffixes[i]);
        int64_t shape[2] = {rows_each, cols};
        const EgTensorView *t;
        if (eg_tensors_expect(L->tf, name, 2, shape, &t, L->err) ||
            (!L->check_only && eg_matrix_upload_view(&L->m->ops, &L->m->staging, m,
                                                     rows_each * (uint32_t)i, t, L->err)))
            return -1;
    }
    return 0;
}

static int load_matrix(Loader *L, EgMatrix *m, uint32_t rows, uint32_t cols, const char *prefix,
                       const char *what) {
    const char *one[1] = {what};
    return load_stacked(L, m, rows, cols, 1, one, prefix);
}

/* A [1] gate, read on the host as tanh(gate) (it scales a whole embedding table). */
static int read_gate(Loader *L, float *out, const char *prefix, const char *what) {
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, what);
    int64_t one = 1;
    const EgTensorView *t;
    float g;
    if (eg_tensors_expect(L->tf, name, 1, &one, &t, L->err) || eg_tensor_to_f32(t, &g, L->err))
        return -1;
    *out = tanhf(g);
    return 0;
}

static int load_layer(Loader *L, EgMllamaVisionLayer *x, const char *pre, int gated) {
    const EgMllamaVisionConfig *v = &L->m->cfg.vision;
    uint32_t D = (uint32_t)v->hidden_size, I = (uint32_t)v->intermediate_size;
    static const char *const qkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight"};
    int64_t one = 1;
    return load_stacked(L, &x->qkv, D, D, 3, qkv, pre) ||
                   load_matrix(L, &x->o, D, D, pre, "self_attn.o_proj.weight") ||
                   load_vector(L, &x->ln1_w, D, pre, "input_layernorm.weight") ||
                   load_vector(L, &x->ln1_b, D, pre, "input_layernorm.bias") ||
                   load_vector(L, &x->ln2_w, D, pre, "post_attention_layernorm.weight") ||
                   load_vector(L, &x->ln2_b, D, pre, "post_attention_layernorm.bias") ||
                   load_matrix(L, &x->fc1, I, D, pre, "mlp.fc1.weight") ||
                   load_vector(L, &x->fc1_b, I, pre, "mlp.fc1.bias") ||
                   load_matrix(L, &x->fc2, D, I, pre, "mlp.fc2.weight") ||
                   load_vector(L, &x->fc2_b, D, pre, "mlp.fc2.bias") ||
                   (gated && (load_buffer(L, &x->gate_attn, 1, &one, "%sgate_attn", pre) ||
                              load_buffer(L, &x->gate_ffn, 1, &one, "%sgate_ffn", pre)))
               ? -1
               : 0;
}

int eg_mllama_names(const EgTensorFile *tf, EgMllamaNames *names, EgError *err) {
    static const EgMllamaNames layouts[2] = {
        {"vision_model.", "multi_modal_projector.", "language_model.model.",
         "language_model.lm_head."},
        {"model.vision_model.", "model.multi_modal_projector.", "model.language_model.",
         "lm_head."},
    };
    for (int i = 0; i < 2; i++) {
        char name[128];
        snprintf(name, sizeof name, "%spatch_embedding.weight", layouts[i].vision);
        if (eg_tensors_find(tf, name)) {
            *names = layouts[i];
            return 0;
        }
    }
    return eg_fail(err,
                   "%s: no vision_model.patch_embedding.weight (nor model.vision_model.*): not an "
                   "mllama checkpoint, or its vision tower is missing",
                   eg_tensors_source(tf));
}

/* Uploads the vision tower and projector into m->vision, or (check_only) only checks their
 * tensors' names and shapes, which needs no device. */
static int vision_tensors(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                          int check_only, EgError *err) {
    const EgMllamaVisionConfig *v = &m->cfg.vision;
    EgMllamaVision *w = &m->vision;
    Loader L = {m, tf, err, check_only};
    const char *pre = names->vision;
    int64_t D = v->hidden_size, C = v->num_channels, p = v->patch_size;
    int64_t P = eg_mllama_vision_patches(v), J = v->max_num_tiles, R = v->n_aspect_ratios + 1;
    char name[256];
    snprintf(name, sizeof name, "%spatch_embedding.weight", pre);
    int64_t patch_shape[4] = {D, C, p, p};
    const EgTensorView *t;
    if (eg_tensors_expect(tf, name, 4, patch_shape, &t, err)) return -1;
    if (!check_only && (eg_matrix_create(&m->ops, &m->weights, (uint32_t)D, (uint32_t)(C * p * p),
                                         0, &w->patch, err) ||
                        eg_matrix_upload_view(&m->ops, &m->staging, &w->patch, 0, t, err)))
        return -1;
    int64_t pos_shape[2] = {P, D}, tile_shape[2] = {R, J * P * D}, pre_shape[2] = {R, J * D};
    if (load_vector(&L, &w->cls, D, pre, "class_embedding") ||
        load_buffer(&L, &w->pos, 2, pos_shape, "%sgated_positional_embedding.embedding", pre) ||
        load_buffer(&L, &w->tile_pos, 2, tile_shape,
                    "%sgated_positional_embedding.tile_embedding.weight", pre) ||
        load_buffer(&L, &w->pre_tile, 2, pre_shape,
                    "%spre_tile_positional_embedding.embedding.weight", pre) ||
        load_buffer(&L, &w->post_tile, 2, pre_shape,
                    "%spost_tile_positional_embedding.embedding.weight", pre) ||
        read_gate(&L, &w->pos_gate, pre, "gated_positional_embedding.gate") ||
        read_gate(&L, &w->pre_tile_gate, pre, "pre_tile_positional_embedding.gate") ||
        read_gate(&L, &w->post_tile_gate, pre, "post_tile_positional_embedding.gate") ||
        load_vector(&L, &w->ln_pre_w, D, pre, "layernorm_pre.weight") ||
        load_vector(&L, &w->ln_pre_b, D, pre, "layernorm_pre.bias") ||
        load_vector(&L, &w->ln_post_w, D, pre, "layernorm_post.weight") ||
        load_vector(&L, &w->ln_post_b, D, pre, "layernorm_post.bias"))
        return -1;
    EgMllamaVisionLayer scratch = {0}; /* what a check fills in: nothing */
    if (!check_only) {
        w->local = calloc((size_t)v->num_hidden_layers, sizeof *w->local);
        w->global = calloc((size_t)v->num_global_layers + 1, sizeof *w->global);
        if (!w->local || !w->global) return eg_fail(err, "out of host memory");
    }
    for (int l = 0; l < v->num_hidden_layers; l++) {
        char lp[128];
        snprintf(lp, sizeof lp, "%stransformer.layers.%d.", pre, l);
        if (load_layer(&L, check_only ? &scratch : &w->local[l], lp, 0)) return -1;
    }
    for (int l = 0; l < v->num_global_layers; l++) {
        char lp[128];
        snprintf(lp, sizeof lp, "%sglobal_transformer.layers.%d.", pre, l);
        if (load_layer(&L, check_only ? &scratch : &w->global[l], lp, 1)) return -1;
    }
    uint32_t H = (uint32_t)m->cfg.text.hidden_size, Dout = (uint32_t)v->vision_output_dim;
    return load_matrix(&L, &w->proj, H, Dout, names->projector, "weight") ||
                   load_vector(&L, &w->proj_b, H, names->projector, "bias")
               ? -1
               : 0;
}

int eg_mllama_vision_check(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                           EgError *err) {
    return vision_tensors(m, tf, names, 1, err);
}

int eg_mllama_vision_load(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                          EgError *err) {
    return vision_tensors(m, tf, names, 0, err);
}

static void release_layer(EgMllamaVisionLayer *x) {
    eg_matrix_release(&x->qkv);
    eg_matrix_release(&x->o);
    eg_matrix_release(&x->fc1);
    eg_matrix_release(&x->fc2);
}

void eg_mllama_vision_release(EgMllamaModel *m) {
    EgMllamaVision *w = &m->vision;
    const EgMllamaVisionConfig *v = &m->cfg.vision;
    for (int l = 0; w->local && l < v->num_hidden_layers; l++)
        release_layer(&w->local[l]);
    for (int l = 0; w->global && l < v->num_global_layers; l++)
        release_layer(&w->global[l]);
    eg_matrix_release(&w->patch);
    eg_matrix_release(&w->proj);
    free(w->local);
    free(w->global);
    w->local = w->global = NULL;
}

static int expect(const EgTensorFile *tf, EgError *err, int ndim, int64_t d0, int64_t d1,
                  const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    fmt_name(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {d0, d1};
    return eg_tensors_expect(tf, name, ndim, shape, NULL, err);
}

int eg_mllama_text_check(const EgMllamaConfig *cfg, const EgTensorFile *tf,
                         const EgMllamaNames *names, EgError *err) {
    const EgMllamaTextShape *t = &cfg->text;
    int64_t H = t->hidden_size, I = t->intermediate_size, hd = H / t->num_attention_heads;
    int64_t KV = hd * t->num_key_value_heads;
    const char *pre = names->text;
    if (expect(tf, err, 2, t->vocab_size + 8, H, "%sembed_tokens.weight", pre) ||
        expect(tf, err, 1, H, 0, "%snorm.weight", pre) ||
        expect(tf, err, 2, t->vocab_size, H, "%sweight", names->lm_head))
        return -1;
    for (int l = 0; l < t->num_hidden_layers; l++) {
        int cross = 0;
        for (int i = 0; i < t->n_cross; i++)
            cross |= t->cross_attention_layers[i] == l;
        char lp[128];
        snprintf(lp, sizeof lp, "%slayers.%d.", pre, l);
        const char *attn = cross ? "cross_attn" : "self_attn";
        if (expect(tf, err, 1, H, 0, "%sinput_layernorm.weight", lp) ||
            expect(tf, err, 1, H, 0, "%spost_attention_layernorm.weight", lp) ||
            expect(tf, err, 2, H, H, "%s%s.q_proj.weight", lp, attn) ||
            expect(tf, err, 2, KV, H, "%s%s.k_proj.weight", lp, attn) ||
            expect(tf, err, 2, KV, H, "%s%s.v_proj.weight", lp, attn) ||
            expect(tf, err, 2, H, H, "%s%s.o_proj.weight", lp, attn) ||
            expect(tf, err, 2, I, H, "%smlp.gate_proj.weight", lp) ||
            expect(tf, err, 2, I, H, "%smlp.up_proj.weight", lp) ||
            expect(tf, err, 2, H, I, "%smlp.down_proj.weight", lp))
            return -1;
        if (cross && (expect(tf, err, 1, hd, 0, "%scross_attn.q_norm.weight", lp) ||
                      expect(tf, err, 1, hd, 0, "%scross_attn.k_norm.weight", lp) ||
                      expect(tf, err, 1, 1, 0, "%scross_attn_attn_gate", lp) ||
                      expect(tf, err, 1, 1, 0, "%scross_attn_mlp_gate", lp)))
            return -1;
    }
    return 0;
}
