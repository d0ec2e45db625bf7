/* Loading mllama's vision tower and projector (families/mllama/vision_load.h); tensor names and
 * shapes as in ../shared/docs/mllama.md §2. */
#include "families/mllama/vision_load.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/weight_loader.h"

/* A [1] gate, kept on the host as tanh(gate): it scales a whole embedding table. */
static int read_gate(EgWeightLoader *L, float *out, const char *pre, const char *what) {
    float g;
    if (eg_load_scalar(L, &g, "%s%s", pre, what)) return -1;
    *out = tanhf(g);
    return 0;
}

static int load_layer(const EgMllamaVisionConfig *v, EgWeightLoader *L, EgMllamaVisionLayer *x,
                      const char *pre, int gated) {
    uint32_t D = (uint32_t)v->hidden_size, I = (uint32_t)v->intermediate_size;
    static const char *const qkv[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight"};
    int64_t one = 1;
    return eg_load_stacked(L, &x->qkv, D, D, 3, qkv, pre) ||
                   eg_load_matrix(L, &x->o, D, D, "%sself_attn.o_proj.weight", pre) ||
                   eg_load_vector(L, &x->ln1_w, D, "%sinput_layernorm.weight", pre) ||
                   eg_load_vector(L, &x->ln1_b, D, "%sinput_layernorm.bias", pre) ||
                   eg_load_vector(L, &x->ln2_w, D, "%spost_attention_layernorm.weight", pre) ||
                   eg_load_vector(L, &x->ln2_b, D, "%spost_attention_layernorm.bias", pre) ||
                   eg_load_matrix(L, &x->fc1, I, D, "%smlp.fc1.weight", pre) ||
                   eg_load_vector(L, &x->fc1_b, I, "%smlp.fc1.bias", pre) ||
                   eg_load_matrix(L, &x->fc2, D, I, "%smlp.fc2.weight", pre) ||
                   eg_load_vector(L, &x->fc2_b, D, "%smlp.fc2.bias", pre) ||
                   (gated && (eg_load_buffer(L, &x->gate_attn, 1, &one, "%sgate_attn", pre) ||
                              eg_load_buffer(L, &x->gate_ffn, 1, &one, "%sgate_ffn", pre)))
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
    if (eg_tensors_is_random(tf)) { /* generated weights answer to any name: the legacy ones */
        *names = layouts[0];
        return 0;
    }
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

/* The [R, J·P·D] tile position table, one buffer per ratio id (model.h says why). */
static int load_tile_pos(EgWeightLoader *L, EgMllamaVision *w, const int64_t *shape,
                         const char *pre) {
    if (!L->check_only && !(w->tile_pos = calloc((size_t)shape[0], sizeof *w->tile_pos)))
        return eg_fail(L->err, "out of host memory");
    return eg_load_row_buffers(L, w->tile_pos, shape,
                               "%sgated_positional_embedding.tile_embedding.weight", pre);
}

EgTensorFile *eg_mllama_random_weights(EgError *err) {
    return eg_tensors_random(0x5EED, err);
}

/* Uploads the vision tower and projector into m->vision, or (check_only) only checks their
 * tensors' names and shapes, which needs no device. */
static int vision_tensors(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                          int check_only, EgTensorVisitor visit, void *visit_ctx, EgError *err) {
    const EgMllamaVisionConfig *v = &m->cfg.vision;
    EgMllamaVision *w = &m->vision;
    EgWeightLoader L = {.ops = &m->ops,
                        .arena = &m->weights,
                        .staging = &m->staging,
                        .tf = tf,
                        .err = err,
                        .quant = m->quant,
                        .check_only = check_only,
                        .report = &m->weight_report,
                        .group = EG_WEIGHT_GROUP_EMBEDDINGS,
                        .visit = visit,
                        .visit_ctx = visit_ctx};
    const char *pre = names->vision;
    int64_t D = v->hidden_size, C = v->num_channels, p = v->patch_size;
    int64_t P = eg_mllama_vision_patches(v), J = v->max_num_tiles, R = v->n_aspect_ratios + 1;
    int64_t patch_shape[4] = {D, C, p, p};
    /* the patch convolution and the class and position embeddings stay dense */
    if (eg_load_matrix_shaped(&L, &w->patch, (uint32_t)D, (uint32_t)(C * p * p), 4, patch_shape,
                              "%spatch_embedding.weight", pre))
        return -1;
    int64_t pos_shape[2] = {P, D}, tile_shape[2] = {R, J * P * D}, pre_shape[2] = {R, J * D};
    if (eg_load_vector(&L, &w->cls, D, "%sclass_embedding", pre) ||
        eg_load_buffer(&L, &w->pos, 2, pos_shape, "%sgated_positional_embedding.embedding", pre) ||
        load_tile_pos(&L, w, tile_shape, pre) ||
        eg_load_buffer(&L, &w->pre_tile, 2, pre_shape,
                       "%spre_tile_positional_embedding.embedding.weight", pre) ||
        eg_load_buffer(&L, &w->post_tile, 2, pre_shape,
                       "%spost_tile_positional_embedding.embedding.weight", pre) ||
        read_gate(&L, &w->pos_gate, pre, "gated_positional_embedding.gate") ||
        read_gate(&L, &w->pre_tile_gate, pre, "pre_tile_positional_embedding.gate") ||
        read_gate(&L, &w->post_tile_gate, pre, "post_tile_positional_embedding.gate"))
        return -1;
    L.group = EG_WEIGHT_GROUP_VISION; /* the layers' and the projector's projections */
    if (eg_load_vector(&L, &w->ln_pre_w, D, "%slayernorm_pre.weight", pre) ||
        eg_load_vector(&L, &w->ln_pre_b, D, "%slayernorm_pre.bias", pre) ||
        eg_load_vector(&L, &w->ln_post_w, D, "%slayernorm_post.weight", pre) ||
        eg_load_vector(&L, &w->ln_post_b, D, "%slayernorm_post.bias", pre))
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
        if (load_layer(v, &L, check_only ? &scratch : &w->local[l], lp, 0)) return -1;
    }
    for (int l = 0; l < v->num_global_layers; l++) {
        char lp[128];
        snprintf(lp, sizeof lp, "%sglobal_transformer.layers.%d.", pre, l);
        if (load_layer(v, &L, check_only ? &scratch : &w->global[l], lp, 1)) return -1;
    }
    uint32_t H = (uint32_t)m->cfg.text.hidden_size, Dout = (uint32_t)v->vision_output_dim;
    return eg_load_matrix(&L, &w->proj, H, Dout, "%sweight", names->projector) ||
                   eg_load_vector(&L, &w->proj_b, H, "%sbias", names->projector)
               ? -1
               : 0;
}

int eg_mllama_vision_check(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                           EgTensorVisitor visit, void *visit_ctx, EgError *err) {
    return vision_tensors(m, tf, names, 1, visit, visit_ctx, err);
}

int eg_mllama_vision_load(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                          EgError *err) {
    return vision_tensors(m, tf, names, 0, NULL, NULL, err);
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
    free(w->tile_pos);
    w->local = w->global = NULL;
    w->tile_pos = NULL;
}
