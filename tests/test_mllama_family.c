/* mllama through the family interface (families/family.h), the calls the engine makes, against
 * HF's outputs for the tiny checkpoints (tests/data/mllama/tiny-mllama-{a,b,c}/golden.safetensors):
 *  - the folder is recognised as mllama from config.json's architectures;
 *  - the cross-attention rule (which images each token sees, eg_mllama_image_run_step) gives HF's
 *    cross_attention_mask for every sample of every golden batch;
 *  - the first sample of each batch (the one with no padding image: a single request) from HF's
 *    input ids and pixel values in the family's image layout: logits at every position within
 *    1e-4 (max|a−b| / max|b|), then greedy decoding equal to HF's generated_ids, in fp32; again
 *    with the images' entries taken from copies kept as the image cache keeps them; and the
 *    text-only prompt decoded in one batch with the image prompt (forward_batch) giving HF's ids;
 *    a copy of a prompt's first tokens (copy_prefix), continued, gives the same logits;
 *  - the same first samples in fp16 (the default): logits within 1e-2, HF's greedy ids; these
 *    opens share a pipeline cache folder, written at the first and reused at the others;
 *  - the processor's prompt rules (families/mllama/prompt.h) with the Llama 3 test tokenizer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/family.h"
#include "families/mllama/prompt.h"
#include "runtime/device_tensor.h"
#include "runtime/safetensors.h"
#include "runtime/vk_context.h"
#include "test_util.h"

#define NEW_TOKENS 10

typedef struct Golden {
    EgTensorFile *g;
    int64_t *ids, *mask, *ratio, *num_tiles, *generated, *cross_mask, *text_ids, *text_generated;
    float *pixels, *logits;
    uint32_t B, T, N, J, S, V, text_T;
} Golden;

static int golden_load(const char *name, Golden *gd) {
    memset(gd, 0, sizeof *gd);
    char rel[256];
    snprintf(rel, sizeof rel, "mllama/%s/golden.safetensors", name);
    EgError err;
    gd->g = eg_tensors_open_file(test_data_path(rel), &err);
    if (!gd->g) return 0;
    const EgTensorView *ids_v = NULL, *px_v = NULL, *logits_v = NULL, *text_v = NULL;
    gd->ids = test_tensor_i64(gd->g, "input_ids", NULL, &ids_v);
    gd->mask = test_tensor_i64(gd->g, "attention_mask", NULL, NULL);
    gd->ratio = test_tensor_i64(gd->g, "aspect_ratio_ids", NULL, NULL);
    gd->num_tiles = test_tensor_i64(gd->g, "num_tiles", NULL, NULL);
    gd->generated = test_tensor_i64(gd->g, "generated_ids", NULL, NULL);
    gd->cross_mask = test_tensor_i64(gd->g, "cross_attention_mask", NULL, NULL);
    gd->text_ids = test_tensor_i64(gd->g, "textonly_input_ids", NULL, &text_v);
    gd->text_generated = test_tensor_i64(gd->g, "textonly_generated_ids", NULL, NULL);
    gd->pixels = test_tensor_f32(gd->g, "pixel_values", NULL, &px_v);
    gd->logits = test_tensor_f32(gd->g, "logits", NULL, &logits_v);
    if (!gd->ids || !gd->mask || !gd->ratio || !gd->num_tiles || !gd->generated ||
        !gd->cross_mask || !gd->text_ids || !gd->text_generated || !gd->pixels || !gd->logits)
        return 0;
    gd->B = (uint32_t)ids_v->shape[0];
    gd->T = (uint32_t)ids_v->shape[1];
    gd->N = (uint32_t)px_v->shape[1];
    gd->J = (uint32_t)px_v->shape[2];
    gd->S = (uint32_t)px_v->shape[4];
    gd->V = (uint32_t)logits_v->shape[2];
    gd->text_T = (uint32_t)text_v->shape[1];
    return 1;
}

static void golden_free(Golden *gd) {
    free(gd->ids);
    free(gd->mask);
    free(gd->ratio);
    free(gd->num_tiles);
    free(gd->generated);
    free(gd->cross_mask);
    free(gd->text_ids);
    free(gd->text_generated);
    free(gd->pixels);
    free(gd->logits);
    eg_tensors_close(gd->g);
}

/* Sample b's real tokens (left padding dropped) and each one's image index, as the prompt
 * builder gives it. Returns the count. */
static uint32_t sample_tokens(const Golden *gd, uint32_t b, int32_t image_token, int32_t *ids,
                              int32_t *image) {
    uint32_t n = 0;
    int32_t seen = 0;
    for (uint32_t t = 0; t < gd->T; t++) {
        if (!gd->mask[b * gd->T + t]) continue;
        ids[n] = (int32_t)gd->ids[b * gd->T + t];
        seen += ids[n] == image_token;
        image[n++] = seen - 1;
    }
    return n;
}

/* HF's cross_attention_mask from the run rule, every sample, every real token. */
static void check_run_rule(const char *name, const Golden *gd, int32_t image_token) {
    int32_t ids[256], image[256];
    for (uint32_t b = 0; b < gd->B; b++) {
        uint32_t n = sample_tokens(gd, b, image_token, ids, image);
        EgMllamaImageRun r = {.first = -1, .last = -1};
        int same = 1;
        for (uint32_t t = 0, row = 0; t < gd->T; t++) {
            if (!gd->mask[b * gd->T + t]) continue;
            eg_mllama_image_run_step(&r, ids[row], image[row], image_token);
            for (uint32_t i = 0; i < gd->N; i++)
                for (uint32_t j = 0; j < gd->J; j++) {
                    int want = gd->cross_mask[((b * gd->T + t) * gd->N + i) * gd->J + j] != 0;
                    int got = r.last >= 0 && (int32_t)i >= r.first && (int32_t)i <= r.last &&
                              j < (uint32_t)gd->num_tiles[b * gd->N + i];
                    same &= want == got;
                }
            row++;
        }
        CHECK(same && n > 0, "%s sample %u: the run rule differs from HF's cross_attention_mask",
              name, b);
    }
}

/* Sample b's images in the family's layout: tiles, aspect-ratio id, tile count. */
static float *family_images(const Golden *gd, uint32_t b, size_t image_floats, uint32_t *n) {
    size_t px = (size_t)gd->J * 3 * gd->S * gd->S;
    CHECK(image_floats == px + 2, "image_floats %zu, expected %zu", image_floats, px + 2);
    float *out = calloc(gd->N * image_floats + 1, sizeof *out);
    *n = 0;
    for (uint32_t i = 0; i < gd->N; i++) {
        if (gd->ratio[b * gd->N + i] == 0) continue; /* a padding image */
        float *dst = out + *n * image_floats;
        memcpy(dst, gd->pixels + ((size_t)b * gd->N + i) * px, px * sizeof *dst);
        dst[px] = (float)gd->ratio[b * gd->N + i];
        dst[px + 1] = (float)gd->num_tiles[b * gd->N + i];
        (*n)++;
    }
    return out;
}

/* max|a − b| / max|b|, for comparisons between Egret's own runs (goldens: test_check_close). */
static double rel_error(const float *out, const float *ref, size_t n) {
    double dmax = 0, rmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)out[i] - ref[i]);
        if (!(d <= dmax)) dmax = d;
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
    }
    return dmax / rmax;
}

/* Greedy decoding of `steps` tokens from the logits of the last token fed. */
static int greedy(EgFamilySeq *s, float *logits, uint32_t V, int32_t *out, int steps,
                  EgError *err) {
    for (int k = 0; k < steps; k++) {
        out[k] = test_argmax(logits, V);
        if (k + 1 < steps && eg_fseq_forward(s, &out[k], NULL, 1, logits, 0, err)) return -1;
    }
    return 0;
}

static int same_ids(const int32_t *a, const int64_t *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* The fp16 runs open their models with a pipeline cache folder: the first open writes the
 * device's cache file once its pipelines are built; the next ones read it back and, their
 * pipelines all found there, leave the file as it is (a save rewrites it through a new file
 * renamed over the old: a new inode). */
static struct {
    char dir[128];
    char path[4200];
    struct stat first;
    int opens;
} g_cache;

static void check_pipeline_cache(const EgVk *vk) {
    const char *at = vk->pipeline_cache_path;
    struct stat st;
    if (g_cache.opens++ == 0) {
        CHECK(at && strncmp(at, g_cache.dir, strlen(g_cache.dir)) == 0,
              "the cache file is not in %s: %s", g_cache.dir, at ? at : "(none)");
        if (at) snprintf(g_cache.path, sizeof g_cache.path, "%s", at);
        CHECK(stat(g_cache.path, &g_cache.first) == 0 && g_cache.first.st_size > 0,
              "no cache written at %s", g_cache.path);
    } else {
        CHECK(stat(g_cache.path, &st) == 0 && st.st_ino == g_cache.first.st_ino &&
                  st.st_size == g_cache.first.st_size,
              "open %d rewrote %s rather than reusing it", g_cache.opens, g_cache.path);
    }
}

/* fp16 (the default precision): the first sample's logits at every position within 1e-2 of
 * HF's fp32 ones (test_check_close), and the greedy ids HF's. */
static void run_checkpoint_fp16(const char *name) {
    Golden gd;
    char rel[256];
    snprintf(rel, sizeof rel, "mllama/%s", name);
    if (!golden_load(name, &gd)) {
        CHECK(0, "%s: cannot read the golden tensors", name);
        golden_free(&gd);
        return;
    }
    EgError err = {0};
    EgModelOptions opt = {.fp32 = 0, .pipeline_cache_dir = g_cache.dir};
    EgFamilyModel *m = eg_family_open(test_data_path(rel), &opt, &err);
    CHECK(m != NULL, "%s fp16: %s", name, err.msg);
    if (!m) {
        golden_free(&gd);
        return;
    }
    CHECK(m->info.ops->f16, "%s: opened in fp32, not fp16", name);
    check_pipeline_cache(m->info.vk);
    int32_t ids[256], image[256], got[NEW_TOKENS];
    uint32_t n = sample_tokens(&gd, 0, 512, ids, image), n_images;
    float *pixels = family_images(&gd, 0, m->info.image_floats, &n_images);
    float *logits = malloc((size_t)n * gd.V * sizeof *logits);
    EgFamilySeq *s = eg_fseq_new(m, n + NEW_TOKENS, &err);
    int rc = !s || !logits || eg_fseq_set_images_cached(s, n_images, NULL, pixels, NULL, &err) ||
             eg_fseq_forward(s, ids, image, n, logits, 1, &err);
    CHECK(rc == 0, "%s fp16: %s", name, err.msg);
    if (rc == 0) {
        char what[64];
        snprintf(what, sizeof what, "%s logits", name);
        test_check_close(what, 0, logits, gd.logits + (size_t)(gd.T - n) * gd.V, (size_t)n * gd.V);
        memmove(logits, logits + (size_t)(n - 1) * gd.V, gd.V * sizeof *logits);
        CHECK(greedy(s, logits, gd.V, got, NEW_TOKENS, &err) == 0, "%s: %s", name, err.msg);
        CHECK(same_ids(got, gd.generated, NEW_TOKENS), "%s fp16: greedy ids differ from HF's",
              name);
    }
    eg_fseq_free(s);
    free(pixels);
    free(logits);
    eg_family_close(m);
    golden_free(&gd);
}

static void run_checkpoint(const char *name) {
    Golden gd;
    char rel[256];
    snprintf(rel, sizeof rel, "mllama/%s", name);
    if (!golden_load(name, &gd)) {
        CHECK(0, "%s: cannot read the golden tensors", name);
        golden_free(&gd);
        return;
    }
    EgError err = {0};
    EgModelOptions opt = {.fp32 = 1};
    EgFamilyModel *m = eg_family_open(test_data_path(rel), &opt, &err);
    CHECK(m != NULL, "%s: %s", name, err.msg);
    if (!m) {
        golden_free(&gd);
        return;
    }
    const EgFamilyInfo *info = &m->info;
    CHECK(strcmp(info->family, "mllama") == 0, "%s: family %s", name, info->family);
    CHECK(info->vocab == gd.V, "%s: vocab %u, logits have %u", name, info->vocab, gd.V);
    CHECK(info->n_eos >= 1 && info->eos[0] == 501, "%s: eos %d", name, info->eos[0]);
    int32_t image_token = 512;
    check_run_rule(name, &gd, image_token);

    int32_t ids[256], image[256], got[NEW_TOKENS];
    uint32_t n = sample_tokens(&gd, 0, image_token, ids, image), n_images;
    float *pixels = family_images(&gd, 0, info->image_floats, &n_images);
    float *logits = malloc((size_t)n * gd.V * sizeof *logits);
    float *batch_logits = malloc(2 * (size_t)gd.V * sizeof *batch_logits);
    uint32_t cap = n + NEW_TOKENS + gd.text_T + 2;

    /* fresh images, keeping copies of their entries as the image cache would */
    EgArena arena;
    eg_arena_init(&arena, info->vk, EG_MEM_DEVICE, 1u << 20);
    EgBuffer kept[8];
    const EgBuffer *store[8] = {0};
    for (uint32_t i = 0; i < n_images; i++) {
        CHECK(eg_tensor_buffer(info->ops, &arena, info->image_cache_elems, &kept[i], &err) == 0,
              "%s", err.msg);
        store[i] = &kept[i];
    }
    EgFamilySeq *s = eg_fseq_new(m, cap, &err);
    int rc = !s || eg_fseq_set_images_cached(s, n_images, NULL, pixels, store, &err) ||
             eg_fseq_forward(s, ids, image, n, logits, 1, &err);
    CHECK(rc == 0, "%s: %s", name, err.msg);
    if (rc == 0) {
        char what[64];
        snprintf(what, sizeof what, "%s logits", name);
        test_check_close(what, 1, logits, gd.logits + (size_t)(gd.T - n) * gd.V, (size_t)n * gd.V);
        /* the first token (before any image) reads the images all the same (HF's unmasked
         * rows): with only the last image set its logits differ. This is why the engine's prefix
         * cache keys such tokens by all the request's images
         * (EgFamilyInfo.text_before_image_sees_images). */
        EgFamilySeq *o = eg_fseq_new(m, cap, &err);
        float *first = malloc(gd.V * sizeof *first);
        const EgBuffer *one[1] = {&kept[n_images - 1]};
        int orc = !o || !first || eg_fseq_set_images_cached(o, 1, one, NULL, NULL, &err) ||
                  eg_fseq_forward(o, ids, image, 1, first, 0, &err);
        CHECK(orc == 0, "%s: one image: %s", name, err.msg);
        if (orc == 0 && n_images > 1) {
            double eo = rel_error(first, logits, gd.V);
            CHECK(eo > 1e-3, "%s: the first token's logits do not depend on the images (%.3g)",
                  name, eo);
        }
        free(first);
        eg_fseq_free(o);
        /* a copy of the first n − 3 tokens (what the prefix cache lends), its images from the
         * kept entries, continued with the last 3: the same last logits */
        uint32_t keep = n - 3;
        EgFamilySeq *c = eg_fseq_copy_prefix(s, keep, cap, &err);
        float *last = malloc(gd.V * sizeof *last);
        const EgBuffer *kept_entries[8] = {0};
        for (uint32_t i = 0; i < n_images; i++)
            kept_entries[i] = &kept[i];
        int crc = !c || !last ||
                  eg_fseq_set_images_cached(c, n_images, kept_entries, NULL, NULL, &err) ||
                  eg_fseq_forward(c, ids + keep, image + keep, 3, last, 0, &err);
        CHECK(crc == 0, "%s: copy: %s", name, err.msg);
        if (crc == 0) {
            double ec = rel_error(last, logits + (size_t)(n - 1) * gd.V, gd.V);
            CHECK(ec <= 1e-5, "%s: continued copy's logits differ (%.3g)", name, ec);
        }
        free(last);
        eg_fseq_free(c);
        memmove(logits, logits + (size_t)(n - 1) * gd.V, gd.V * sizeof *logits);
        CHECK(greedy(s, logits, gd.V, got, NEW_TOKENS, &err) == 0, "%s: %s", name, err.msg);
        CHECK(same_ids(got, gd.generated, NEW_TOKENS), "%s: greedy ids differ from HF's", name);
    }
    eg_fseq_free(s);

    /* the same from the kept entries (no pixels), decoded in one batch with the text-only
     * prompt */
    const EgBuffer *cached[8] = {0};
    for (uint32_t i = 0; i < n_images; i++)
        cached[i] = &kept[i];
    int32_t text_ids[64], got_text[NEW_TOKENS];
    for (uint32_t t = 0; t < gd.text_T; t++)
        text_ids[t] = (int32_t)gd.text_ids[t];
    EgFamilySeq *seqs[2] = {eg_fseq_new(m, cap, &err), eg_fseq_new(m, cap, &err)};
    float *text_logits = malloc(gd.V * sizeof *text_logits);
    rc = !seqs[0] || !seqs[1] ||
         eg_fseq_set_images_cached(seqs[0], n_images, cached, NULL, NULL, &err) ||
         eg_fseq_forward(seqs[0], ids, image, n, logits, 0, &err) ||
         eg_fseq_forward(seqs[1], text_ids, NULL, gd.text_T, text_logits, 0, &err);
    CHECK(rc == 0, "%s (cached, batch): %s", name, err.msg);
    for (int k = 0; rc == 0 && k < NEW_TOKENS; k++) {
        got[k] = test_argmax(k ? batch_logits : logits, gd.V);
        got_text[k] = test_argmax(k ? batch_logits + gd.V : text_logits, gd.V);
        int32_t next[2] = {got[k], got_text[k]};
        if (k + 1 < NEW_TOKENS) rc = eg_fseq_forward_batch(seqs, 2, next, batch_logits, &err);
        CHECK(rc == 0, "%s: batch: %s", name, err.msg);
    }
    if (rc == 0) {
        CHECK(same_ids(got, gd.generated, NEW_TOKENS),
              "%s: greedy ids from cached entries, batched, differ from HF's", name);
        CHECK(same_ids(got_text, gd.text_generated, NEW_TOKENS),
              "%s: text-only greedy ids, batched, differ from HF's", name);
    }
    eg_fseq_free(seqs[0]);
    eg_fseq_free(seqs[1]);
    eg_arena_reset(&arena);
    free(text_logits);
    free(pixels);
    free(logits);
    free(batch_logits);
    eg_family_close(m);
    golden_free(&gd);
}

static void expect_ids(const EgTokenizer *tok, const EgPromptPart *parts, size_t n,
                       const int32_t *want, size_t n_want, const char *what) {
    EgPrompt p;
    EgError err = {0};
    int rc = eg_mllama_prompt_build(tok, parts, n, &p, &err);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    if (rc) return;
    int same = p.n_tokens >= n_want;
    for (size_t i = 0; same && i < n_want; i++)
        same = p.ids[i] == want[i];
    CHECK(same, "%s: ids start %d %d %d (%zu tokens)", what, p.ids[0],
          p.n_tokens > 1 ? p.ids[1] : -1, p.n_tokens > 2 ? p.ids[2] : -1, p.n_tokens);
    eg_prompt_free(&p);
}

/* The processor's BOS rules (../shared/docs/mllama.md §7.1) and plain user text. */
static void check_prompt_rules(void) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load(test_data_path("mllama/tokenizer/tokenizer.json"), &err);
    CHECK(tok != NULL, "tokenizer: %s", err.msg);
    if (!tok) return;
    int32_t bos = eg_tokenizer_find(tok, "<|begin_of_text|>");
    int32_t img = eg_tokenizer_find(tok, "<|image|>");
    CHECK(eg_tokenizer_template_bos(tok) == bos, "the post-processor's BOS is %d, not %d",
          eg_tokenizer_template_bos(tok), bos);
    const char *text = "If I had";
    EgPromptPart image_then_text[] = {{.kind = EG_PART_IMAGE},
                                      {.kind = EG_PART_TEXT, .text = text, .len = strlen(text)}};
    /* processor(text="<|image|>If I had") → [BOS, IMG, BOS, ...] */
    expect_ids(tok, image_then_text, 2, (int32_t[]){bos, img, bos}, 3, "image then text");
    /* processor(text="If I had") → [BOS, BOS, ...] */
    expect_ids(tok, image_then_text + 1, 1, (int32_t[]){bos, bos}, 2, "text only");
    /* a template that writes its own BOS: one BOS, as apply_chat_template(tokenize=True) */
    const char *chat = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n";
    EgPromptPart templated[] = {
        {.kind = EG_PART_TEXT, .text = chat, .len = strlen(chat), .markup = 1},
        {.kind = EG_PART_IMAGE}};
    expect_ids(tok, templated, 2, (int32_t[]){bos, eg_tokenizer_find(tok, "<|start_header_id|>")},
               2, "template with its BOS");
    /* a user typing "<|image|>" adds no image */
    const char *typed = "look: <|image|>";
    EgPromptPart sneaky[] = {{.kind = EG_PART_TEXT, .text = typed, .len = strlen(typed)}};
    EgPrompt p;
    CHECK(eg_mllama_prompt_build(tok, sneaky, 1, &p, &err) == 0, "%s", err.msg);
    for (size_t t = 0; t < p.n_tokens; t++)
        CHECK(p.ids[t] != img && p.image_index[t] == -1, "typed <|image|> became an image");
    eg_prompt_free(&p);
    /* two images then text: the text sees both (HF's consecutive-image rule) */
    EgPromptPart two[] = {{.kind = EG_PART_IMAGE},
                          {.kind = EG_PART_IMAGE},
                          {.kind = EG_PART_TEXT, .text = text, .len = strlen(text)}};
    CHECK(eg_mllama_prompt_build(tok, two, 3, &p, &err) == 0, "%s", err.msg);
    CHECK(p.n_tokens > 4 && p.ids[0] == bos && p.ids[1] == img && p.ids[2] == img &&
              p.ids[3] == bos && p.image_index[1] == 0 && p.image_index[2] == 1 &&
              p.image_index[p.n_tokens - 1] == 1,
          "two images: ids %d %d %d %d", p.ids[0], p.ids[1], p.ids[2], p.ids[3]);
    EgMllamaImageRun r = {.first = -1, .last = -1};
    for (size_t t = 0; t < p.n_tokens; t++)
        eg_mllama_image_run_step(&r, p.ids[t], p.image_index[t], img);
    CHECK(r.first == 0 && r.last == 1, "two images: the text sees images %d..%d", r.first, r.last);
    eg_prompt_free(&p);
    eg_tokenizer_free(tok);
}

int main(void) {
    check_prompt_rules();
    run_checkpoint("tiny-mllama-a");
    run_checkpoint("tiny-mllama-b");
    run_checkpoint("tiny-mllama-c");
    snprintf(g_cache.dir, sizeof g_cache.dir, "/tmp/egret-test-mllama-pipelines-%ld",
             (long)getpid());
    run_checkpoint_fp16("tiny-mllama-a");
    run_checkpoint_fp16("tiny-mllama-b");
    run_checkpoint_fp16("tiny-mllama-c");
    if (g_cache.path[0]) unlink(g_cache.path);
    rmdir(g_cache.dir);
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    return test_finish();
}
