/* IDEFICS behind the family interface (families/family.h): each entry is one of the existing
 * IDEFICS functions. */
#include <stdlib.h>

#include "families/family.h"
#include "families/idefics/image_encoder.h"
#include "families/idefics/sequence.h"
#include "vision/preprocess.h"

static void *load(const char *dir, const EgModelOptions *opt, EgFamilyInfo *info, EgError *err) {
    EgModel *m = eg_model_load(dir, opt, err);
    if (!m) return NULL;
    const EgModelConfig *cfg = &m->cfg;
    size_t n_cross = (size_t)(cfg->num_hidden_layers / cfg->cross_layer_interval);
    uint32_t size = (uint32_t)cfg->vision.image_size;
    *info = (EgFamilyInfo){
        .family = "idefics",
        .architecture = cfg->architecture,
        .dir = m->dir,
        .vocab = m->vocab,
        .image_size = size,
        .image_floats = 3 * (size_t)size * size,
        /* per cross layer, the image's S rows of keys then values (families/idefics/sequence.h) */
        .image_cache_elems = n_cross * m->image_tokens * 2 * m->H,
        .max_position_embeddings = (uint32_t)cfg->max_position_embeddings,
        .max_batch = eg_sequence_max_batch(m),
        .max_images = m->max_images,
        .eos = {(int32_t)cfg->eos_token_id},
        .n_eos = 1,
        .weights = &m->weight_report,
        .vk = &m->vk,
        .ops = &m->ops,
    };
    return m;
}

static int visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                         void *ctx, EgError *err) {
    return eg_model_visit_tensors(dir, opt, visit, ctx, err);
}

static void model_free(void *m) {
    eg_model_free(m);
}

static int prompt(void *model, const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                  EgPrompt *out, EgError *err) {
    (void)model;
    EgPromptOptions po = eg_prompt_default_options();
    return eg_prompt_build(tok, parts, n_parts, &po, out, err);
}

/* IDEFICS checkpoints put <image> right after <fake_token_around_image>, the first additional
 * token. */
static void image_index(void *model, const int32_t *ids, size_t n, int n_images, int32_t *out) {
    EgModel *m = model;
    eg_prompt_image_index(ids, n, m->cfg.vocab_size + 1, m->cfg.eos_token_id, n_images, out);
}

static int preprocess(void *model, const EgImage *img, float *out, int (*stop)(void *user),
                      void *stop_user, EgError *err) {
    EgModel *m = model;
    EgPreprocessConfig cfg;
    eg_preprocess_config_default(&cfg, m->cfg.vision.image_size);
    cfg.stop = stop;
    cfg.stop_user = stop_user;
    return eg_preprocess_image_cfg(img, &cfg, out, err);
}

static void *seq_new(void *model, uint32_t capacity, EgError *err) {
    return eg_sequence_new(model, capacity, err);
}
static void seq_free(void *s) {
    eg_sequence_free(s);
}
static uint32_t seq_n_past(const void *s) {
    return ((const EgSequence *)s)->n_past;
}
static void seq_rewind(void *s, uint32_t n) {
    ((EgSequence *)s)->n_past = n;
}
static uint32_t seq_capacity(const void *s) {
    return ((const EgSequence *)s)->capacity;
}
static uint64_t seq_kv_bytes(const void *model, uint32_t capacity) {
    return eg_sequence_kv_bytes(model, capacity);
}
static uint64_t seq_device_bytes(const void *seq) {
    const EgSequence *s = seq;
    return eg_arena_block_bytes(&s->arena) + eg_arena_block_bytes(&s->image_arena);
}
static void *seq_copy_prefix(const void *s, uint32_t n, uint32_t capacity, EgError *err) {
    return eg_sequence_copy_prefix(s, n, capacity, err);
}

static int set_images(void *s, uint32_t n, const EgBuffer *const *cached, const float *pixels,
                      const EgBuffer *const *store, EgError *err) {
    return eg_sequence_set_images_cached(s, n, cached, pixels, store, err);
}

static int forward(void *s, const int32_t *ids, const int32_t *image_of_token, uint32_t n,
                   float *logits, int all_logits, EgError *err) {
    return eg_sequence_forward(s, ids, image_of_token, n, logits, all_logits, err);
}

static int forward_batch(void *const *seqs, uint32_t k, const int32_t *ids, float *logits,
                         EgError *err) {
    return eg_sequence_forward_batch((EgSequence *const *)seqs, k, ids, logits, err);
}

/* [BOS, <fake_token_around_image>, <image>, <fake_token_around_image>, text...]: the prompt of
 * bench/torch_ref.py's bench_prompt. */
static void bench_inputs(void *model, int32_t *ids, uint32_t n, float *image) {
    const EgModel *m = model;
    (void)image; /* the layout is the pixels alone */
    if (n < 4) return;
    ids[0] = (int32_t)m->cfg.bos_token_id;
    ids[1] = ids[3] = (int32_t)m->cfg.vocab_size; /* the first additional token */
    ids[2] = (int32_t)m->cfg.vocab_size + 1;      /* <image> */
}

static int encode(void *model, const float *images, uint32_t n, EgError *err) {
    return eg_image_encoder_run(model, images, n, NULL, NULL, err);
}

static const char *const architectures[] = {"IdeficsForVisionText2Text", "IdeficsModel", NULL};

const EgFamily eg_family_idefics = {
    .name = "idefics",
    .architectures = architectures,
    .load = load,
    .free = model_free,
    .visit_tensors = visit_tensors,
    .prompt = prompt,
    .image_index = image_index,
    .preprocess = preprocess,
    .seq_new = seq_new,
    .seq_free = seq_free,
    .seq_n_past = seq_n_past,
    .seq_rewind = seq_rewind,
    .seq_capacity = seq_capacity,
    .seq_kv_bytes = seq_kv_bytes,
    .seq_device_bytes = seq_device_bytes,
    .seq_copy_prefix = seq_copy_prefix,
    .set_images = set_images,
    .forward = forward,
    .forward_batch = forward_batch,
    .bench_inputs = bench_inputs,
    .encode = encode,
};
