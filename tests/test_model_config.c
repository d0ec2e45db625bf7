/* IDEFICS config.json: the repo's real configs (checked against their full dumps and against
 * the JSON read independently here), the documented defaults, a 4.x-era config, and one
 * failure per validation rule, each naming the key and the file. */
#include "families/idefics/model_config.h"
#include "tests/test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Every int field with the JSON key that sets it ("sub.key" for nested objects). */
static const struct {
    const char *key;
    size_t offset;
} int_fields[] = {
    {"vocab_size", offsetof(EgModelConfig, vocab_size)},
    {"additional_vocab_size", offsetof(EgModelConfig, additional_vocab_size)},
    {"hidden_size", offsetof(EgModelConfig, hidden_size)},
    {"intermediate_size", offsetof(EgModelConfig, intermediate_size)},
    {"num_hidden_layers", offsetof(EgModelConfig, num_hidden_layers)},
    {"num_attention_heads", offsetof(EgModelConfig, num_attention_heads)},
    {"pad_token_id", offsetof(EgModelConfig, pad_token_id)},
    {"bos_token_id", offsetof(EgModelConfig, bos_token_id)},
    {"eos_token_id", offsetof(EgModelConfig, eos_token_id)},
    {"cross_layer_interval", offsetof(EgModelConfig, cross_layer_interval)},
    {"max_position_embeddings", offsetof(EgModelConfig, max_position_embeddings)},
    {"vision_config.embed_dim", offsetof(EgModelConfig, vision.embed_dim)},
    {"vision_config.image_size", offsetof(EgModelConfig, vision.image_size)},
    {"vision_config.patch_size", offsetof(EgModelConfig, vision.patch_size)},
    {"vision_config.intermediate_size", offsetof(EgModelConfig, vision.intermediate_size)},
    {"vision_config.num_hidden_layers", offsetof(EgModelConfig, vision.num_hidden_layers)},
    {"vision_config.num_attention_heads", offsetof(EgModelConfig, vision.num_attention_heads)},
    {"vision_config.num_channels", offsetof(EgModelConfig, vision.num_channels)},
    {"perceiver_config.resampler_n_latents", offsetof(EgModelConfig, perceiver.n_latents)},
    {"perceiver_config.resampler_depth", offsetof(EgModelConfig, perceiver.depth)},
    {"perceiver_config.resampler_n_heads", offsetof(EgModelConfig, perceiver.n_heads)},
    {"perceiver_config.resampler_head_dim", offsetof(EgModelConfig, perceiver.head_dim)},
};

static const struct {
    const char *key;
    size_t offset;
} bool_fields[] = {
    {"tie_word_embeddings", offsetof(EgModelConfig, tie_word_embeddings)},
    {"qk_layer_norms", offsetof(EgModelConfig, qk_layer_norms)},
    {"use_resampler", offsetof(EgModelConfig, use_resampler)},
    {"perceiver_config.qk_layer_norms_perceiver",
     offsetof(EgModelConfig, perceiver.qk_layer_norms)},
};

static int field(const EgModelConfig *c, size_t offset) {
    int v;
    memcpy(&v, (const char *)c + offset, sizeof v);
    return v;
}

static const cJSON *lookup(const cJSON *root, const char *key) {
    const char *dot = strchr(key, '.');
    if (!dot) return cJSON_GetObjectItemCaseSensitive(root, key);
    char sub[64];
    snprintf(sub, sizeof sub, "%.*s", (int)(dot - key), key);
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, sub), dot + 1);
}

/* Compares the parsed config with the JSON read here key by key (every key in the tables must
 * be present in these files). */
static void check_against_json(const char *path, const EgModelConfig *c) {
    size_t len;
    char *text = (char *)test_read_file(path, &len);
    CHECK(text != NULL, "read %s", path);
    if (!text) return;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(root != NULL, "%s: python-written JSON must parse", path);
    if (!root) return;
    for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++) {
        const cJSON *it = lookup(root, int_fields[i].key);
        CHECK(cJSON_IsNumber(it) && it->valueint == field(c, int_fields[i].offset), "%s: %s = %d",
              path, int_fields[i].key, field(c, int_fields[i].offset));
    }
    for (size_t i = 0; i < sizeof bool_fields / sizeof bool_fields[0]; i++) {
        const cJSON *it = lookup(root, bool_fields[i].key);
        CHECK(cJSON_IsBool(it) && cJSON_IsTrue(it) == field(c, bool_fields[i].offset), "%s: %s",
              path, bool_fields[i].key);
    }
    const cJSON *eps = lookup(root, "rms_norm_eps"),
                *veps = lookup(root, "vision_config.layer_norm_eps");
    CHECK(eps && c->rms_norm_eps == (float)eps->valuedouble, "%s: rms_norm_eps", path);
    CHECK(veps && c->vision.layer_norm_eps == (float)veps->valuedouble, "%s: layer_norm_eps", path);
    const cJSON *alpha = lookup(root, "alpha_type"), *dtype = lookup(root, "dtype");
    CHECK(alpha && c->alpha_vector == (strcmp(alpha->valuestring, "vector") == 0), "%s: alpha",
          path);
    CHECK(dtype && strcmp(c->dtype, dtype->valuestring) == 0, "%s: dtype '%s'", path, c->dtype);
    const cJSON *act = lookup(root, "hidden_act"), *vact = lookup(root, "vision_config.hidden_act");
    CHECK(act && strcmp(eg_activation_name(c->hidden_act), act->valuestring) == 0, "%s: act", path);
    CHECK(vact && strcmp(eg_activation_name(c->vision.hidden_act), vact->valuestring) == 0,
          "%s: vision act", path);
    CHECK(c->rope_theta == 10000.0f, "%s: rope_theta %g", path, (double)c->rope_theta);
    cJSON_Delete(root);
}

static int same_config(const EgModelConfig *a, const EgModelConfig *b) {
    for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++)
        if (field(a, int_fields[i].offset) != field(b, int_fields[i].offset)) return 0;
    for (size_t i = 0; i < sizeof bool_fields / sizeof bool_fields[0]; i++)
        if (field(a, bool_fields[i].offset) != field(b, bool_fields[i].offset)) return 0;
    return a->hidden_act == b->hidden_act && a->vision.hidden_act == b->vision.hidden_act &&
           a->rms_norm_eps == b->rms_norm_eps &&
           a->vision.layer_norm_eps == b->vision.layer_norm_eps &&
           a->alpha_vector == b->alpha_vector && a->rope_theta == b->rope_theta &&
           strcmp(a->dtype, b->dtype) == 0;
}

static void test_real_configs(void) {
    const char *tiny[3] = {"tiny-idefics-a", "tiny-idefics-b", "tiny-idefics-c"};
    EgModelConfig cfg[3], full;
    EgError err = {0};
    char path[512];
    for (int m = 0; m < 3; m++) {
        snprintf(path, sizeof path, "%s/config.json", test_data_path(tiny[m]));
        CHECK(eg_model_config_load(path, &cfg[m], &err) == 0, "%s", err.msg);
        check_against_json(path, &cfg[m]);
        snprintf(path, sizeof path, "%s/config_full.json", test_data_path(tiny[m]));
        CHECK(eg_model_config_load(path, &full, &err) == 0, "%s", err.msg);
        CHECK(same_config(&cfg[m], &full), "%s: config.json and config_full.json differ", tiny[m]);
    }
    /* A few values written out, so a table mistake above cannot hide a wrong parse. */
    CHECK(cfg[0].hidden_size == 64 && cfg[0].num_hidden_layers == 3 &&
              cfg[0].cross_layer_interval == 1 && cfg[0].vocab_size == 475 &&
              cfg[0].additional_vocab_size == 2 && cfg[0].use_resampler == 1 &&
              cfg[0].vision.patch_size == 16 && cfg[0].vision.hidden_act == EG_ACT_GELU &&
              cfg[0].perceiver.n_latents == 4 && cfg[0].alpha_vector == 0 &&
              cfg[0].hidden_act == EG_ACT_SILU && strcmp(cfg[0].dtype, "float32") == 0,
          "tiny-a values");
    CHECK(cfg[1].alpha_vector == 1 && cfg[1].qk_layer_norms == 1 &&
              cfg[1].perceiver.qk_layer_norms == 1 && cfg[1].cross_layer_interval == 2 &&
              cfg[1].num_hidden_layers == 4 && cfg[1].vision.hidden_act == EG_ACT_QUICK_GELU &&
              cfg[1].vision.embed_dim == 32 && cfg[1].perceiver.head_dim == 8,
          "tiny-b values");
    CHECK(cfg[2].use_resampler == 0 && cfg[2].hidden_size == 32 &&
              cfg[2].vision.num_hidden_layers == 1,
          "tiny-c values");

    EgModelConfig s;
    CHECK(eg_model_config_load(test_model_path("shapes-idefics/config.json"), &s, &err) == 0, "%s",
          err.msg);
    check_against_json(test_model_path("shapes-idefics/config.json"), &s);
    CHECK(s.hidden_size == 256 && s.num_hidden_layers == 4 && s.cross_layer_interval == 2 &&
              s.vision.embed_dim == 160 && s.vision.patch_size == 8 &&
              s.perceiver.n_latents == 16 && s.perceiver.head_dim == 40 &&
              strcmp(s.dtype, "bfloat16") == 0 && s.rms_norm_eps == 1e-6f,
          "shapes-idefics values");
}

static void test_defaults(void) {
    EgModelConfig c, d;
    EgError err = {0};
    const char *min = "{\"model_type\":\"idefics\"}";
    CHECK(eg_model_config_parse(min, strlen(min), "min.json", &c, &err) == 0, "%s", err.msg);
    eg_model_config_defaults(&d);
    CHECK(same_config(&c, &d), "minimal config != defaults");
    /* idefics.md §1.1–1.3. */
    CHECK(c.vocab_size == 32000 && c.additional_vocab_size == 0 && c.hidden_size == 4096 &&
              c.intermediate_size == 11008 && c.num_hidden_layers == 32 &&
              c.num_attention_heads == 32 && c.hidden_act == EG_ACT_SILU &&
              c.rms_norm_eps == 1e-6f && c.pad_token_id == 0 && c.bos_token_id == 1 &&
              c.eos_token_id == 2 && !c.tie_word_embeddings && c.cross_layer_interval == 1 &&
              !c.qk_layer_norms && !c.use_resampler && !c.alpha_vector &&
              c.rope_theta == 10000.0f && c.max_position_embeddings == 2048 && c.dtype[0] == 0,
          "text defaults");
    CHECK(c.vision.embed_dim == 768 && c.vision.image_size == 224 && c.vision.patch_size == 14 &&
              c.vision.intermediate_size == 5120 && c.vision.num_hidden_layers == 32 &&
              c.vision.num_attention_heads == 16 && c.vision.num_channels == 3 &&
              c.vision.hidden_act == EG_ACT_GELU && c.vision.layer_norm_eps == 1e-5f,
          "vision defaults");
    CHECK(c.perceiver.n_latents == 64 && c.perceiver.depth == 6 && c.perceiver.n_heads == 16 &&
              c.perceiver.head_dim == 96 && !c.perceiver.qk_layer_norms,
          "perceiver defaults");

    /* Architectures alone identify the model; unknown keys and nulls are ignored; the
     * perceiver's own use_resampler does not count; a partial vision_config keeps defaults. */
    const char *j = "{\"architectures\":[\"IdeficsForVisionText2Text\"],\"hidden_size\":128,"
                    "\"num_attention_heads\":4,\"some_future_key\":{\"x\":[1,2,{}]},"
                    "\"pad_token_id\":null,\"vision_config\":{\"hidden_size\":64,\"foo\":\"bar\"},"
                    "\"perceiver_config\":{\"use_resampler\":true,\"resampler_depth\":2},"
                    "\"rope_parameters\":{\"rope_theta\":500000.0,\"rope_type\":\"default\"},"
                    "\"hidden_act\":\"gelu_new\"}";
    CHECK(eg_model_config_parse(j, strlen(j), "j.json", &c, &err) == 0, "%s", err.msg);
    CHECK(c.hidden_size == 128 && c.num_attention_heads == 4 && c.pad_token_id == 0 &&
              c.vision.embed_dim == 64 && c.vision.patch_size == 14 && c.perceiver.depth == 2 &&
              c.perceiver.n_latents == 64 && c.use_resampler == 0 && c.rope_theta == 500000.0f &&
              c.hidden_act == EG_ACT_GELU_TANH,
          "partial config");
    const char *k = "{\"architectures\":[\"IdeficsModel\"]}";
    CHECK(eg_model_config_parse(k, strlen(k), "k.json", &c, &err) == 0, "IdeficsModel: %s",
          err.msg);
}

/* A 4.x-era hub config (idefics-9b style): torch_dtype, "model_type": "idefics" in the
 * sub-objects, legacy keys, no rope_parameters. */
static void test_legacy(void) {
    const char *j =
        "{\"additional_vocab_size\": 2, \"alpha_initializer\": \"zeros\", \"alpha_type\": "
        "\"float\", \"alphas_initializer_range\": 0.0, \"architectures\": "
        "[\"IdeficsForVisionText2Text\"], \"bos_token_id\": 1, "
        "\"cross_layer_activation_function\": \"swiglu\", \"cross_layer_interval\": 4, "
        "\"dropout\": 0.0, \"eos_token_id\": 2, \"ffn_dim\": 2048, \"freeze_lm_head\": false, "
        "\"freeze_text_layers\": false, \"freeze_text_module_exceptions\": [], "
        "\"freeze_vision_layers\": false, \"freeze_vision_module_exceptions\": [], "
        "\"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, "
        "\"intermediate_size\": 11008, \"max_position_embeddings\": 2048, "
        "\"max_sequence_length\": 2048, \"model_type\": \"idefics\", \"num_attention_heads\": 32, "
        "\"num_hidden_layers\": 32, \"pad_token_id\": 0, \"perceiver_config\": {\"model_type\": "
        "\"idefics\", \"qk_layer_norms_perceiver\": false, \"resampler_depth\": 6, "
        "\"resampler_head_dim\": 96, \"resampler_n_heads\": 16, \"resampler_n_latents\": 64, "
        "\"use_resampler\": false}, \"qk_layer_norms\": false, \"rms_norm_eps\": 1e-06, "
        "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
        "\"transformers_version\": \"4.28.0.dev0\", \"use_cache\": true, \"use_resampler\": "
        "true, \"vision_config\": {\"embed_dim\": 1280, \"image_size\": 224, "
        "\"intermediate_size\": 5120, \"model_type\": \"idefics\", \"num_attention_heads\": 16, "
        "\"num_hidden_layers\": 32, \"vision_model_name\": "
        "\"laion/CLIP-ViT-H-14-laion2B-s32B-b79K\"}, \"vocab_size\": 32000, "
        "\"word_embed_proj_dim\": 4096}";
    EgModelConfig c;
    EgError err = {0};
    CHECK(eg_model_config_parse(j, strlen(j), "idefics-9b.json", &c, &err) == 0, "%s", err.msg);
    CHECK(c.cross_layer_interval == 4 && c.use_resampler == 1 && c.vision.embed_dim == 1280 &&
              c.vision.patch_size == 14 && c.additional_vocab_size == 2 &&
              strcmp(c.dtype, "bfloat16") == 0 && c.rope_theta == 10000.0f,
          "legacy values");
}

/* Parses `json` expecting failure with a message holding "bad.json" and each needle. */
static void expect_fail(const char *json, const char *needle1, const char *needle2) {
    EgModelConfig c;
    EgError err = {0};
    int rc = eg_model_config_parse(json, strlen(json), "bad.json", &c, &err);
    CHECK(rc != 0, "accepted: %s", json);
    CHECK(strstr(err.msg, "bad.json") != NULL, "no file name in '%s'", err.msg);
    if (needle1) CHECK(strstr(err.msg, needle1) != NULL, "no '%s' in '%s'", needle1, err.msg);
    if (needle2) CHECK(strstr(err.msg, needle2) != NULL, "no '%s' in '%s'", needle2, err.msg);
}

#define IDF "{\"model_type\":\"idefics\","

static void test_failures(void) {
    expect_fail("{\"model_type\":\"llama\",\"hidden_size\":64}", "unsupported architecture 'llama'",
                NULL);
    expect_fail("{\"model_type\":\"idefics2\"}", "unsupported architecture 'idefics2'", NULL);
    expect_fail(IDF "\"architectures\":[\"LlamaForCausalLM\"]}",
                "unsupported architecture 'LlamaForCausalLM'", NULL);
    expect_fail("{\"hidden_size\":64}", "IDEFICS", NULL);
    expect_fail("{\"model_type\":7}", "model_type", NULL);

    expect_fail(IDF "\"hidden_size\":\"64\"}", "'hidden_size'", "string");
    expect_fail(IDF "\"hidden_size\":64.5}", "'hidden_size'", "integer");
    expect_fail(IDF "\"vision_config\":{\"patch_size\":\"8\"}}", "vision_config.patch_size", NULL);
    expect_fail(IDF "\"perceiver_config\":{\"resampler_depth\":[2]}}",
                "perceiver_config.resampler_depth", NULL);
    expect_fail(IDF "\"use_resampler\":1}", "use_resampler", NULL);
    expect_fail(IDF "\"rms_norm_eps\":\"1e-6\"}", "rms_norm_eps", NULL);
    expect_fail(IDF "\"vision_config\":[]}", "vision_config", NULL);
    expect_fail(IDF "\"dtype\":16}", "dtype", NULL);

    expect_fail(IDF "\"num_hidden_layers\":3,\"cross_layer_interval\":2}", "num_hidden_layers",
                "cross_layer_interval");
    expect_fail(IDF "\"hidden_size\":64,\"num_attention_heads\":3}", "hidden_size",
                "num_attention_heads");
    expect_fail(IDF "\"hidden_size\":60,\"num_attention_heads\":4}", "head dim", NULL);
    expect_fail(IDF "\"vision_config\":{\"embed_dim\":50}}", "vision_config.embed_dim",
                "num_attention_heads");
    expect_fail(IDF "\"vision_config\":{\"image_size\":100}}", "image_size", "patch_size");
    expect_fail(IDF "\"hidden_act\":\"mish\"}", "'mish'", "hidden_act");
    expect_fail(IDF "\"vision_config\":{\"hidden_act\":\"tanh\"}}", "'tanh'",
                "vision_config.hidden_act");
    expect_fail(IDF "\"alpha_type\":\"matrix\"}", "alpha_type", "matrix");
    expect_fail(IDF "\"intermediate_size\":0}", "intermediate_size", NULL);
    expect_fail(IDF "\"vocab_size\":-5}", "vocab_size", NULL);
    expect_fail(IDF "\"num_hidden_layers\":2000000}", "num_hidden_layers", NULL);
    expect_fail(IDF "\"perceiver_config\":{\"resampler_n_latents\":0}}", "resampler_n_latents",
                NULL);
    expect_fail(IDF "\"eos_token_id\":40000}", "eos_token_id", NULL);
    expect_fail(IDF "\"rms_norm_eps\":0}", "rms_norm_eps", NULL);
    expect_fail(IDF "\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":2.0}}", "rope_type",
                "linear");
    expect_fail(IDF "\"hidden_size\":64", "JSON", NULL);
    expect_fail("[1,2,3]", "object", NULL);

    EgModelConfig c;
    EgError err = {0};
    CHECK(eg_model_config_load("/nonexistent/dir/config.json", &c, &err) != 0 &&
              strstr(err.msg, "/nonexistent/dir/config.json"),
          "missing file: %s", err.msg);
}

int main(void) {
    test_real_configs();
    test_defaults();
    test_legacy();
    test_failures();
    return test_finish();
}
