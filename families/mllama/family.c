/* mllama (Llama 3.2 Vision) behind the family interface (families/family.h): the vision tower
 * and projector (vision_encoder.c) make each image's cross-attention states, the text decoder
 * (text_decoder.c) reads them, and the processor's rules (prompt.c) say which tokens see which
 * images.
 *
 * A preprocessed image (the family's float layout): its J = max_num_tiles tiles [J][3][S][S] as
 * MllamaImageProcessor makes them, then its aspect-ratio id and its tile count, as floats.
 *
 * The image cache keeps, per image, the projector's output [J][P][H] and then the tile count:
 * a hit skips decoding, tiling and the whole vision tower; the cross-attention keys and values
 * are then computed from the states (the text decoder takes host states). */
#include <stdlib.h>
#include <string.h>

#include "families/family.h"
#include "families/mllama/model.h"
#include "families/mllama/prompt.h"
#include "families/mllama/text_decoder.h"
#include "families/mllama/vision_encoder.h"
#include "families/mllama/vision_load.h"
#include "runtime/device_tensor.h"
#include "runtime/json_get.h"

typedef struct Served {
    EgMllamaModel *m; /* config, vision tower, projector; the device, ops and staging */
    EgMllamaText text;
    int text_loaded;
    uint32_t J, S, P, H, max_images;
    int32_t image_token;
    int32_t eos[EG_FAMILY_MAX_EOS];
    uint32_t n_eos;
} Served;

typedef struct Seq {
    Served *sv;
    EgMllamaTextSequence *ts;
    uint32_t n_images;
    uint8_t *tiles_of;        /* [max_images]: the real tiles of each image set */
    EgMllamaImageRun *run_at; /* [capacity]: the image run after each token in the cache */
} Seq;

static size_t pixel_floats(const Served *sv) {
    return (size_t)sv->J * 3 * sv->S * sv->S;
}
static size_t states_floats(const Served *sv) {
    return (size_t)sv->J * sv->P * sv->H;
}

static void add_eos(Served *sv, int32_t id) {
    for (uint32_t i = 0; i < sv->n_eos; i++)
        if (sv->eos[i] == id) return;
    if (id >= 0 && sv->n_eos < EG_FAMILY_MAX_EOS) sv->eos[sv->n_eos++] = id;
}

/* generation_config.json's eos_token_id (a number or a list): the Instruct checkpoints list
 * <|eot_id|> and <|eom_id|> there besides the config's <|end_of_text|>. */
static void read_generation_eos(Served *sv, const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    EgError ignored = {0};
    size_t len = 0;
    char *text = eg_json_read_file(path, &len, &ignored);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *eos = root ? eg_json_item(root, "eos_token_id") : NULL;
    if (cJSON_IsNumber(eos)) add_eos(sv, eos->valueint);
    for (const cJSON *e = cJSON_IsArray(eos) ? eos->child : NULL; e; e = e->next)
        if (cJSON_IsNumber(e)) add_eos(sv, e->valueint);
    cJSON_Delete(root);
}

static void model_free(void *model) {
    Served *sv = model;
    if (!sv) return;
    if (sv->text_loaded) eg_mllama_text_free(&sv->text);
    eg_mllama_model_free(sv->m);
    free(sv);
}

static int visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                         void *ctx, EgError *err) {
    return eg_mllama_visit_tensors(dir, opt->quant, visit, ctx, err);
}

static void *load(const char *dir, const EgModelOptions *opt, EgFamilyInfo *info, EgError *err) {
    Served *sv = calloc(1, sizeof *sv);
    if (!sv) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    EgMllamaOptions mo = {.fp32 = opt->fp32,
                          .device = opt->device,
                          .progress = opt->progress,
                          .quant = opt->quant,
                          .pipeline_cache_dir = opt->pipeline_cache_dir,
                          .random_weights = opt->random_weights};
    sv->m = eg_mllama_model_load(dir, &mo, err);
    if (!sv->m) {
        model_free(sv);
        return NULL;
    }
    const EgMllamaConfig *cfg = &sv->m->cfg;
    sv->J = (uint32_t)cfg->vision.max_num_tiles;
    sv->S = (uint32_t)cfg->vision.image_size;
    sv->P = (uint32_t)eg_mllama_vision_patches(&cfg->vision);
    sv->H = (uint32_t)cfg->text.hidden_size;
    sv->max_images = opt->max_images ? opt->max_images : 16;
    sv->image_token = cfg->image_token_index;
    const EgMllamaTextConfig *tcfg = &cfg->text;
    EgTensorFile *tf = NULL;
    EgMllamaTextOptions to = {.max_chunk = opt->max_chunk,
                              .max_tiles = sv->max_images * sv->J,
                              .quant = sv->m->quant, /* --quant, or the folder's own */
                              .report = &sv->m->weight_report};
    tf = opt->random_weights ? eg_mllama_random_weights(err) : eg_tensors_open_dir(dir, err);
    if (!tf || eg_mllama_text_load(&sv->text, tcfg, &sv->m->ops, &sv->m->staging, tf, &to, err)) {
        eg_tensors_close(tf);
        eg_fail_prefix(err, "loading model %s", dir);
        model_free(sv);
        return NULL;
    }
    eg_tensors_close(tf);
    sv->text_loaded = 1;
    for (int i = 0; i < tcfg->n_eos; i++)
        add_eos(sv, tcfg->eos_token_id[i]);
    read_generation_eos(sv, dir);
    *info = (EgFamilyInfo){
        .family = "mllama",
        .architecture = "MllamaForConditionalGeneration",
        .dir = sv->m->dir,
        .vocab = sv->text.vocab,
        .image_size = sv->S,
        .image_floats = pixel_floats(sv) + 2,
        .image_cache_elems = states_floats(sv) + 1,
        .max_position_embeddings = (uint32_t)tcfg->max_position_embeddings,
        .max_batch =
            sv->text.max_chunk < EG_FAMILY_MAX_BATCH ? sv->text.max_chunk : EG_FAMILY_MAX_BATCH,
        .max_images = sv->max_images,
        .text_before_image_sees_images = 1,
        .n_eos = sv->n_eos,
        .weights = &sv->m->weight_report,
        .vk = &sv->m->vk,
        .ops = &sv->m->ops,
    };
    memcpy(info->eos, sv->eos, sizeof info->eos);
    return sv;
}

static int prompt(void *model, const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                  EgPrompt *out, EgError *err) {
    (void)model;
    return eg_mllama_prompt_build(tok, parts, n_parts, out, err);
}

static void image_index(void *model, const int32_t *ids, size_t n, int n_images, int32_t *out) {
    eg_mllama_image_index(ids, n, ((Served *)model)->image_token, n_images, out);
}

static int preprocess(void *model, const EgImage *img, float *out, int (*stop)(void *user),
                      void *stop_user, EgError *err) {
    Served *sv = model;
    EgMllamaPreprocessConfig cfg = sv->m->preprocess;
    cfg.stop = stop;
    cfg.stop_user = stop_user;
    EgMllamaTiling tiling;
    if (eg_mllama_preprocess_image(img, &cfg, out, &tiling, err)) return -1;
    out[pixel_floats(sv)] = (float)tiling.aspect_ratio_id;
    out[pixel_floats(sv) + 1] = (float)(tiling.rows * tiling.cols);
    return 0;
}

static void seq_free(void *seq) {
    Seq *s = seq;
    if (!s) return;
    eg_mllama_text_sequence_free(s->ts);
    free(s->tiles_of);
    free(s->run_at);
    free(s);
}

static void *seq_new(void *model, uint32_t capacity, EgError *err) {
    Served *sv = model;
    Seq *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    s->sv = sv;
    s->tiles_of = calloc(sv->max_images + 1, 1);
    s->run_at = calloc((size_t)capacity + 1, sizeof *s->run_at);
    if (!s->tiles_of || !s->run_at) {
        eg_fail(err, "out of host memory");
        seq_free(s);
        return NULL;
    }
    s->ts = eg_mllama_text_sequence_new(&sv->text, capacity, err);
    if (!s->ts) {
        seq_free(s);
        return NULL;
    }
    return s;
}

static uint32_t seq_n_past(const void *seq) {
    return ((const Seq *)seq)->ts->n_past;
}
static void seq_rewind(void *seq, uint32_t n) {
    ((Seq *)seq)->ts->n_past = n;
}
static uint32_t seq_capacity(const void *seq) {
    return ((const Seq *)seq)->ts->capacity;
}

static uint64_t seq_kv_bytes(const void *model, uint32_t capacity) {
    const EgMllamaText *t = &((const Served *)model)->text;
    uint64_t n_self = (uint64_t)(t->cfg.num_hidden_layers - t->cfg.n_cross);
    uint64_t per_buffer = (uint64_t)capacity * t->kv_width * t->ops->elem;
    return 2 * n_self * (per_buffer + (64u << 10));
}

static uint64_t seq_device_bytes(const void *seq) {
    const EgMllamaTextSequence *ts = ((const Seq *)seq)->ts;
    return eg_arena_block_bytes(&ts->arena) + eg_arena_block_bytes(&ts->cross_arena);
}

static void *seq_copy_prefix(const void *seq, uint32_t n, uint32_t capacity, EgError *err) {
    const Seq *src = seq;
    if (n > src->ts->n_past || n > capacity) {
        eg_fail(err, "cannot copy %u tokens of a sequence holding %u into %u", n, src->ts->n_past,
                capacity);
        return NULL;
    }
    Seq *s = seq_new(src->sv, capacity, err);
    if (!s || n == 0) return s;
    const EgMllamaText *t = &src->sv->text;
    EgCmd cmd;
    if (eg_cmd_begin(t->ops->vk, &cmd, err)) {
        seq_free(s);
        return NULL;
    }
    VkDeviceSize bytes = (VkDeviceSize)n * t->kv_width * t->ops->elem;
    for (int i = 0; i < t->cfg.num_hidden_layers; i++) {
        if (eg_mllama_cross_index(&t->cfg, i) >= 0) continue;
        eg_cmd_copy(&cmd, &src->ts->k_cache[i], 0, &s->ts->k_cache[i], 0, bytes);
        eg_cmd_copy(&cmd, &src->ts->v_cache[i], 0, &s->ts->v_cache[i], 0, bytes);
    }
    if (eg_cmd_submit_wait(&cmd, err)) {
        seq_free(s);
        return NULL;
    }
    s->ts->n_past = n;
    memcpy(s->run_at, src->run_at, n * sizeof *s->run_at);
    return s;
}

/* The uncached images' pixels -> their projector outputs, in order: out [k][J][P][H], and each
 * one's tile count. */
static int encode(Served *sv, const float *images, uint32_t k, float *out, uint8_t *tiles,
                  EgError *err) {
    size_t px = pixel_floats(sv), per = px + 2;
    float *pixels = malloc((size_t)k * px * sizeof *pixels);
    int32_t *ratio = malloc(k * sizeof *ratio), *mask = malloc((size_t)k * sv->J * sizeof *mask);
    int rc = pixels && ratio && mask ? 0 : eg_fail(err, "out of host memory");
    for (uint32_t u = 0; rc == 0 && u < k; u++) {
        const float *img = images + u * per;
        memcpy(pixels + u * px, img, px * sizeof *pixels);
        ratio[u] = (int32_t)img[px];
        int32_t n_tiles = (int32_t)img[px + 1];
        if (n_tiles < 1 || n_tiles > (int32_t)sv->J)
            rc = eg_fail(err, "image %u: %d tiles; the model takes 1 to %u", u, n_tiles, sv->J);
        tiles[u] = (uint8_t)n_tiles;
        for (uint32_t j = 0; j < sv->J; j++)
            mask[u * sv->J + j] = (int32_t)j < n_tiles;
    }
    EgMllamaImages in = {pixels, ratio, mask, k};
    if (rc == 0) rc = eg_mllama_vision_run(sv->m, &in, NULL, out, err);
    free(pixels);
    free(ratio);
    free(mask);
    return rc;
}

static int set_images(void *seq, uint32_t n, const EgBuffer *const *cached, const float *pixels,
                      const EgBuffer *const *store, EgError *err) {
    Seq *s = seq;
    Served *sv = s->sv;
    if (n > sv->max_images)
        return eg_fail(err, "%u images; the model is set up for at most %u", n, sv->max_images);
    size_t entry = states_floats(sv);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        k += !(cached && cached[i]);
    float *states = malloc(((size_t)n * entry + 1) * sizeof *states);
    float *enc = malloc(((size_t)k * entry + 1) * sizeof *enc);
    uint8_t *enc_tiles = malloc(k + 1);
    int rc = states && enc && enc_tiles ? 0 : eg_fail(err, "out of host memory");
    if (rc == 0 && k) rc = encode(sv, pixels, k, enc, enc_tiles, err);
    const EgOps *ops = &sv->m->ops;
    EgStaging *st = &sv->m->staging;
    for (uint32_t i = 0, u = 0; rc == 0 && i < n; i++) {
        float *dst = states + i * entry;
        if (cached && cached[i]) {
            /* the entry's last element (the tile count) lands on the next image's first float,
             * which that image then overwrites; states has one float of room after the last */
            rc = eg_download_f32(ops, st, cached[i], 0, dst, entry + 1, err);
            float tiles = dst[entry];
            if (rc == 0 && !(tiles >= 1 && tiles <= (float)sv->J))
                rc = eg_fail(err, "image %u: the cached entry holds no tile count", i);
            if (rc == 0) s->tiles_of[i] = (uint8_t)tiles;
            continue;
        }
        memcpy(dst, enc + u * entry, entry * sizeof *dst);
        s->tiles_of[i] = enc_tiles[u];
        if (store && store[i]) {
            float tiles = enc_tiles[u];
            rc = eg_upload_f32(ops, st, store[i], 0, dst, entry, err) ||
                 eg_upload_f32(ops, st, store[i], entry, &tiles, 1, err);
        }
        u++;
    }
    if (rc == 0)
        rc = eg_mllama_text_set_cross_states(s->ts, n ? states : NULL, n * sv->J, sv->P, err);
    s->n_images = rc == 0 ? n : 0;
    free(states);
    free(enc);
    free(enc_tiles);
    return rc ? -1 : 0;
}

/* The run before the sequence's next token. */
static EgMllamaImageRun run_before(const Seq *s) {
    uint32_t at = s->ts->n_past;
    return at ? s->run_at[at - 1] : (EgMllamaImageRun){.first = -1, .last = -1};
}

static int forward(void *seq, const int32_t *ids, const int32_t *image_of_token, uint32_t n,
                   float *logits, int all_logits, EgError *err) {
    Seq *s = seq;
    Served *sv = s->sv;
    uint32_t at = s->ts->n_past, n_tiles = s->n_images * sv->J;
    if (n == 0 || at + n > s->ts->capacity)
        return eg_fail(err, "%u tokens do not fit the sequence (%u of %u held)", n, at,
                       s->ts->capacity);
    /* Rows are only needed where the prompt says which image each token sees; decoding repeats
     * the last row (the text decoder keeps it). */
    uint8_t *rows = image_of_token && n_tiles ? calloc((size_t)n * n_tiles, 1) : NULL;
    if (image_of_token && n_tiles && !rows) return eg_fail(err, "out of host memory");
    EgMllamaImageRun r = run_before(s);
    for (uint32_t t = 0; t < n; t++) {
        int32_t img = image_of_token ? image_of_token[t] : r.last;
        if (img >= (int32_t)s->n_images) {
            free(rows);
            return eg_fail(err, "token %u sees image %d; the sequence has %u", at + t, img,
                           s->n_images);
        }
        eg_mllama_image_run_step(&r, ids[t], img, sv->image_token);
        for (int32_t j = r.first; rows && j >= 0 && j <= r.last; j++)
            memset(rows + (size_t)t * n_tiles + (size_t)j * sv->J, 1, s->tiles_of[j]);
        s->run_at[at + t] = r;
    }
    int rc = eg_mllama_text_forward(s->ts, ids, rows, n, logits, all_logits, err);
    free(rows);
    return rc;
}

static int forward_batch(void *const *seqs, uint32_t k, const int32_t *ids, float *logits,
                         EgError *err) {
    EgMllamaTextSequence *ts[EG_FAMILY_MAX_BATCH] = {0};
    if (k > EG_FAMILY_MAX_BATCH)
        return eg_fail(err, "%u sequences in one batch; at most %d", k, EG_FAMILY_MAX_BATCH);
    for (uint32_t b = 0; b < k; b++) {
        Seq *s = seqs[b];
        if (s->ts->n_past >= s->ts->capacity)
            return eg_fail(err, "sequence %u is full (%u tokens)", b, s->ts->capacity);
        ts[b] = s->ts;
    }
    if (eg_mllama_text_forward_batch(ts, k, ids, logits, err)) return -1;
    for (uint32_t b = 0; b < k; b++) { /* each token repeats its sequence's last row */
        Seq *s = seqs[b];
        uint32_t at = s->ts->n_past - 1;
        EgMllamaImageRun r = at ? s->run_at[at - 1] : (EgMllamaImageRun){.first = -1, .last = -1};
        eg_mllama_image_run_step(&r, ids[b], r.last, s->sv->image_token);
        s->run_at[at] = r;
    }
    return 0;
}

/* [<|begin_of_text|>, <|image|>, text...], the image a wide one that fills all J tiles in a row. */
static void bench_inputs(void *model, int32_t *ids, uint32_t n, float *image) {
    Served *sv = model;
    if (n < 2) return;
    ids[0] = sv->text.cfg.bos_token_id;
    ids[1] = sv->image_token;
    EgMllamaTiling tiling = {.rows = 1, .cols = 1, .aspect_ratio_id = 1};
    EgError ignored = {0}; /* the config was checked at load: a 1 x J canvas exists */
    (void)eg_mllama_tiling(sv->J * sv->S, sv->S, (int)sv->S, (int)sv->J, &tiling, &ignored);
    image[pixel_floats(sv)] = (float)tiling.aspect_ratio_id;
    image[pixel_floats(sv) + 1] = (float)(tiling.rows * tiling.cols);
}

static int bench_encode(void *model, const float *images, uint32_t n, EgError *err) {
    Served *sv = model;
    float *out = malloc(((size_t)n * states_floats(sv) + 1) * sizeof *out);
    uint8_t *tiles = malloc(n + 1);
    int rc =
        out && tiles ? encode(sv, images, n, out, tiles, err) : eg_fail(err, "out of host memory");
    free(out);
    free(tiles);
    return rc;
}

static const char *const architectures[] = {"MllamaForConditionalGeneration", NULL};

const EgFamily eg_family_mllama = {
    .name = "mllama",
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
    .encode = bench_encode,
};
