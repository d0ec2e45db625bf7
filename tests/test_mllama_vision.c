/* mllama's vision encoder and projector against HuggingFace's outputs for the tiny random models
 * (tests/data/mllama/tiny-mllama-{a,b,c}: 1 to 4 tiles of every aspect ratio, padding images,
 * 5, 10 and 17 patches per tile): vision_model last_hidden_state (global output + interleaved
 * intermediate layers) and multi_modal_projector output, in fp32 (<= 1e-4) and fp16 (<= 1e-2).
 * The error of a tensor is max|out − ref| / max|ref| (and the L2 ratio ||out − ref|| / ||ref||
 * is held to the same limit). Then: a folder broken in each way the loader must refuse (made
 * from tiny-mllama-a in a temporary directory) fails to load with a message naming what is
 * wrong, and bad image inputs are refused. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/mllama/vision_encoder.h"
#include "runtime/safetensors.h"
#include "test_util.h"

/* An integer tensor (int64 in the golden files) as int32, as the preprocessing writes ids. */
static int32_t *read_i32(EgTensorFile *g, const char *name, const EgTensorView **view) {
    size_t n = 0;
    int64_t *wide = test_tensor_i64(g, name, &n, view);
    int32_t *out = wide ? malloc(n * sizeof *out) : NULL;
    for (size_t k = 0; out && k < n; k++)
        out[k] = (int32_t)wide[k];
    free(wide);
    return out;
}

static void check_golden(const char *model, const char *tensor, int fp32, const float *out,
                         const float *ref, size_t n) {
    char what[160];
    snprintf(what, sizeof what, "%s %s", model, tensor);
    test_check_close(what, fp32, out, ref, n);
}

/* The model in `dir` (NULL: tests/data/NAME) against NAME's golden outputs. */
static void run_model(const char *name, const char *model_dir, int fp32) {
    char dir[512], gpath[600];
    snprintf(dir, sizeof dir, "%s", model_dir ? model_dir : test_data_path(name));
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", test_data_path(name));
    EgError err = {0};
    EgMllamaOptions opt = {.fp32 = fp32};
    EgMllamaModel *m = eg_mllama_model_load(dir, &opt, &err);
    CHECK(m != NULL, "load %s: %s", name, err.msg);
    EgTensorFile *g = eg_tensors_open_file(gpath, &err);
    CHECK(g != NULL, "%s", err.msg);
    const EgTensorView *ids_view = NULL;
    size_t n_vis = 0, n_cross = 0;
    float *pixels = g ? test_tensor_f32(g, "pixel_values", NULL, NULL) : NULL;
    int32_t *ids = g ? read_i32(g, "aspect_ratio_ids", &ids_view) : NULL;
    int32_t *mask = g ? read_i32(g, "aspect_ratio_mask", NULL) : NULL;
    float *ref_vis = g ? test_tensor_f32(g, "vision_output", &n_vis, NULL) : NULL;
    float *ref_cross = g ? test_tensor_f32(g, "cross_attention_states", &n_cross, NULL) : NULL;
    CHECK(pixels && ids && mask && ref_vis && ref_cross, "%s: golden tensors missing", name);
    if (m && pixels && ids && mask && ref_vis && ref_cross) {
        uint32_t n = (uint32_t)ids_view->numel; /* [B, N]: every image slot */
        float *vis = malloc(n_vis * sizeof *vis), *cross = malloc(n_cross * sizeof *cross);
        /* poison: every output element must be written */
        for (size_t i = 0; i < n_vis; i++)
            vis[i] = NAN;
        for (size_t i = 0; i < n_cross; i++)
            cross[i] = NAN;
        EgMllamaImages in = {pixels, ids, mask, n};
        int rc = eg_mllama_vision_run(m, &in, vis, cross, &err);
        CHECK(rc == 0, "%s: vision run: %s", name, err.msg);
        if (rc == 0) {
            check_golden(name, "vision_output", fp32, vis, ref_vis, n_vis);
            check_golden(name, "cross_attention_states", fp32, cross, ref_cross, n_cross);
        }
        free(vis);
        free(cross);
    }
    free(pixels);
    free(ids);
    free(mask);
    free(ref_vis);
    free(ref_cross);
    eg_tensors_close(g);
    eg_mllama_model_free(m);
}

/* ---- folders the loader must refuse ---- */

static char tmp[256];

static void put_file(const char *name, const void *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, len, f) == len, "cannot write %s", path);
    if (f) fclose(f);
}

static void expect_load_fails(const char *what, const char *needle) {
    EgError err = {0};
    EgMllamaOptions opt = {.fp32 = 1};
    EgMllamaModel *m = eg_mllama_model_load(tmp, &opt, &err);
    CHECK(m == NULL, "%s: the model loaded", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' should mention '%s'", what, err.msg,
          needle);
    if (!m) printf("  refused (%s): %s\n", what, err.msg);
    eg_mllama_model_free(m);
}

/* The checkpoint's config with one edit: `key` of the object at `section` ("" for the top
 * level) set to the JSON `value`. */
static void put_config(const char *config, const char *section, const char *key,
                       const char *value) {
    cJSON *root = cJSON_Parse(config);
    cJSON *obj = section[0] ? cJSON_GetObjectItem(root, section) : root;
    cJSON *v = cJSON_Parse(value);
    CHECK(root && obj && v, "cannot edit %s.%s", section, key);
    if (!root || !obj || !v) {
        cJSON_Delete(root);
        cJSON_Delete(v);
        return;
    }
    cJSON_DeleteItemFromObject(obj, key);
    cJSON_AddItemToObject(obj, key, v);
    char *text = cJSON_Print(root);
    put_file("config.json", text, strlen(text));
    free(text);
    cJSON_Delete(root);
}

/* The weights with the header edited in place (same length): `find` after `anchor` replaced by
 * `repl`. */
static void put_weights(const unsigned char *w, size_t len, const char *anchor, const char *find,
                        const char *repl) {
    unsigned char *bad = malloc(len);
    memcpy(bad, w, len);
    size_t header = 8 + (size_t)(w[0] | w[1] << 8 | w[2] << 16);
    char *at = memmem(bad, header, anchor, strlen(anchor));
    char *hit =
        at ? memmem(at, header - (size_t)((unsigned char *)at - bad), find, strlen(find)) : NULL;
    CHECK(hit && strlen(find) == strlen(repl), "no '%s' after '%s' in the header", find, anchor);
    if (hit) memcpy(hit, repl, strlen(repl));
    put_file("model.safetensors", bad, len);
    free(bad);
}

/* The weights with every tensor renamed from the file names to the in-memory names of
 * transformers 4.52+ (the header rewritten, the data unchanged). */
static void put_renamed_weights(const unsigned char *w, size_t len) {
    static const char *const from[] = {"vision_model.", "multi_modal_projector.",
                                       "language_model.model.", "language_model.lm_head."};
    static const char *const to[] = {"model.vision_model.", "model.multi_modal_projector.",
                                     "model.language_model.", "lm_head."};
    size_t header = (size_t)(w[0] | w[1] << 8 | w[2] << 16);
    cJSON *root = cJSON_ParseWithLength((const char *)w + 8, header);
    cJSON *out = cJSON_CreateObject();
    for (cJSON *t = root ? root->child : NULL; t; t = t->next) {
        char name[256];
        snprintf(name, sizeof name, "%s", t->string);
        for (int i = 0; i < 4; i++)
            if (strncmp(t->string, from[i], strlen(from[i])) == 0)
                snprintf(name, sizeof name, "%s%s", to[i], t->string + strlen(from[i]));
        cJSON_AddItemToObject(out, name, cJSON_Duplicate(t, 1));
    }
    char *text = cJSON_PrintUnformatted(out);
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    unsigned char *file = malloc(8 + padded + len - 8 - header);
    for (int i = 0; i < 8; i++)
        file[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(file + 8, text, n);
    memset(file + 8 + n, ' ', padded - n);
    memcpy(file + 8 + padded, w + 8 + header, len - 8 - header);
    put_file("model.safetensors", file, 8 + padded + len - 8 - header);
    free(file);
    free(text);
    cJSON_Delete(out);
    cJSON_Delete(root);
}

static void test_refusals(void) {
    snprintf(tmp, sizeof tmp, "/tmp/egret-mllama-vision-%d", (int)getpid());
    mkdir(tmp, 0755);
    size_t clen = 0, wlen = 0;
    char *config =
        (char *)test_read_file(test_data_path("mllama/tiny-mllama-a/config.json"), &clen);
    unsigned char *w =
        test_read_file(test_data_path("mllama/tiny-mllama-a/model.safetensors"), &wlen);
    CHECK(config && w, "tiny-mllama-a unreadable");
    if (!config || !w) goto done;
    config = realloc(config, clen + 1);
    config[clen] = '\0';
    put_file("model.safetensors", w, wlen);

    /* a has 5 text layers, 4 local vision layers, 3 intermediate indices, 4 tiles, vocab 512 */
    put_config(config, "text_config", "cross_attention_layers", "[1, 5]");
    expect_load_fails("cross layer past the stack", "cross_attention_layers");
    put_config(config, "vision_config", "supported_aspect_ratios", "[[1, 1], [1, 2], [2, 3]]");
    expect_load_fails("aspect ratio over max_num_tiles", "supported_aspect_ratios");
    put_config(config, "vision_config", "max_num_tiles", "2");
    expect_load_fails("aspect ratios of 4 tiles with max_num_tiles 2", "supported_aspect_ratios");
    put_config(config, "vision_config", "intermediate_layers_indices", "[0, 2, 4]");
    expect_load_fails("intermediate layer past the local encoder", "intermediate_layers_indices");
    put_config(config, "vision_config", "vision_output_dim", "96");
    expect_load_fails("vision_output_dim not hidden x (1 + intermediate)", "vision_output_dim");
    put_config(config, "vision_config", "image_size", "30");
    expect_load_fails("tile size not a multiple of the patch", "patch_size");
    put_config(config, "", "image_token_index", "520");
    expect_load_fails("image token without an embedding row", "image_token_index");
    put_config(config, "vision_config", "hidden_size", "\"32\"");
    expect_load_fails("a string where a number goes", "vision_config.hidden_size");
    put_config(config, "", "model_type", "\"llava\"");
    expect_load_fails("another family's config", "llava");

    /* the weights against the intact config */
    put_file("config.json", config, clen);
    put_weights(w, wlen, "\"vision_model.layernorm_post.bias\"", "layernorm_post.bias",
                "layernorm_post.bia_");
    expect_load_fails("missing vision tensor", "vision_model.layernorm_post.bias");
    put_weights(w, wlen, "\"vision_model.gated_positional_embedding.embedding\"", "[5,32]",
                "[32,5]");
    expect_load_fails("vision tensor of the wrong shape",
                      "vision_model.gated_positional_embedding.embedding");
    put_weights(w, wlen, "\"multi_modal_projector.bias\"", "projector.bias", "projector.bia_");
    expect_load_fails("missing projector", "multi_modal_projector.bias");
    put_weights(w, wlen, "\"language_model.model.layers.4.cross_attn.k_norm.weight\"",
                "k_norm.weight", "k_norm.weigh_");
    expect_load_fails("missing text tensor", "language_model.model.layers.4.cross_attn.k_norm");
    put_weights(w, wlen, "\"vision_model.patch_embedding.weight\"", "patch_embedding",
                "patch_embeddinG");
    expect_load_fails("no vision tower", "patch_embedding");
    /* a text config that does not match the weights: 4 key/value heads where they have 2 */
    put_file("model.safetensors", w, wlen);
    put_config(config, "text_config", "num_key_value_heads", "4");
    expect_load_fails("text config that does not match the weights", "k_proj");

    /* preprocessor_config.json, checked against the vision config (a: 28-pixel tiles, 4 of
     * them) */
    put_file("config.json", config, clen);
    static const char *const pre_ok =
        "{\"image_processor_type\": \"MllamaImageProcessor\", \"do_convert_rgb\": true, "
        "\"do_normalize\": true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, "
        "\"image_mean\": [0.5, 0.25, 0.125], \"image_std\": [0.5, 0.5, 0.25], "
        "\"max_image_tiles\": 4, \"resample\": 2, \"rescale_factor\": 0.00392156862745098, "
        "\"size\": {\"height\": 28, \"width\": 28}}";
    static const struct {
        const char *what, *find, *repl, *needle;
    } pre_bad[] = {
        {"processor tiles of another size", "\"height\": 28, \"width\": 28",
         "\"height\": 56, \"width\": 56", "image_size"},
        {"a non-square processor size", "\"width\": 28", "\"width\": 42", "square"},
        {"processor tile count unlike the encoder's", "\"max_image_tiles\": 4",
         "\"max_image_tiles\": 2", "max_num_tiles"},
        {"bicubic resampling", "\"resample\": 2", "\"resample\": 3", "resample"},
        {"normalization off", "\"do_normalize\": true", "\"do_normalize\": false", "do_normalize"},
        {"a zero standard deviation", "[0.5, 0.5, 0.25]", "[0.5, 0.0, 0.25]", "image_std"},
        {"a string where a number goes", "0.00392156862745098", "\"1/255\"", "rescale_factor"},
    };
    for (size_t i = 0; i < sizeof pre_bad / sizeof pre_bad[0]; i++) {
        char text[1024];
        const char *at = strstr(pre_ok, pre_bad[i].find);
        CHECK(at != NULL, "no '%s' in the processor config", pre_bad[i].find);
        if (!at) continue;
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - pre_ok), pre_ok, pre_bad[i].repl,
                 at + strlen(pre_bad[i].find));
        put_file("preprocessor_config.json", text, strlen(text));
        expect_load_fails(pre_bad[i].what, pre_bad[i].needle);
    }
    put_file("preprocessor_config.json", pre_ok, strlen(pre_ok));
    {
        EgError err = {0};
        EgMllamaOptions opt = {.fp32 = 1};
        EgMllamaModel *m = eg_mllama_model_load(tmp, &opt, &err);
        CHECK(m != NULL, "a matching preprocessor_config.json refused: %s", err.msg);
        if (m)
            CHECK(m->preprocess.tile_size == 28 && m->preprocess.max_tiles == 4 &&
                      m->preprocess.norm.mean[2] == 0.125f && m->preprocess.norm.std[2] == 0.25f &&
                      m->preprocess.rescale_factor == 0.00392156862745098,
                  "preprocessor_config.json read wrongly");
        eg_mllama_model_free(m);
    }
    char pre_path[512];
    snprintf(pre_path, sizeof pre_path, "%s/preprocessor_config.json", tmp);
    unlink(pre_path);

    /* the v4.52+ module paths (model.vision_model.*, ...) instead of the legacy names */
    put_file("config.json", config, clen);
    put_renamed_weights(w, wlen);
    run_model("mllama/tiny-mllama-a", tmp, 1);

    /* the intact copy loads */
    put_file("model.safetensors", w, wlen);
    put_file("config.json", config, clen);
    EgError err = {0};
    EgMllamaOptions opt = {.fp32 = 1};
    EgMllamaModel *m = eg_mllama_model_load(tmp, &opt, &err);
    CHECK(m != NULL, "the intact copy should load: %s", err.msg);

    /* bad image inputs are refused, not run */
    if (m) {
        float *pix = calloc(4 * 3 * 28 * 28, sizeof *pix);
        int32_t ids[1] = {9}, mask[4] = {1, 0, 0, 0};
        EgMllamaImages in = {pix, ids, mask, 1};
        CHECK(eg_mllama_vision_run(m, &in, NULL, NULL, &err) != 0 &&
                  strstr(err.msg, "aspect_ratio_id"),
              "aspect_ratio_id 9 of 9 rows accepted (%s)", err.msg);
        ids[0] = 1;
        mask[0] = 0;
        CHECK(eg_mllama_vision_run(m, &in, NULL, NULL, &err) != 0 &&
                  strstr(err.msg, "aspect_ratio_mask"),
              "a mask with no tile accepted (%s)", err.msg);
        mask[0] = 2;
        CHECK(eg_mllama_vision_run(m, &in, NULL, NULL, &err) != 0 &&
                  strstr(err.msg, "aspect_ratio_mask"),
              "a mask value of 2 accepted (%s)", err.msg);
        in.n = 1u << 21; /* checked before any image is read */
        CHECK(eg_mllama_vision_run(m, &in, NULL, NULL, &err) != 0 && err.kind == EG_ERROR_LIMIT,
              "2M image slots accepted (%s)", err.msg);
        free(pix);
    }
    eg_mllama_model_free(m);
done:
    free(config);
    free(w);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", tmp);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    unlink(path);
    rmdir(tmp);
}

int main(void) {
    static const char *const models[] = {"mllama/tiny-mllama-a", "mllama/tiny-mllama-b",
                                         "mllama/tiny-mllama-c"};
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
            run_model(models[i], NULL, fp32);
    test_refusals();
    return test_finish();
}
