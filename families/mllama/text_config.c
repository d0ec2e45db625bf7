/* mllama text_config reader. Defaults are those of transformers' MllamaTextConfig; both RoPE
 * spellings are accepted: v5's "rope_parameters" (with rope_theta inside) and v4's top-level
 * "rope_theta" + "rope_scaling" (whose type key may be "rope_type" or "type"). */
#include "families/mllama/text_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/json_get.h"

#define SIZE_LIMIT (1 << 20) /* far above any real width/depth; catches garbage and overflow */

void eg_mllama_text_config_defaults(EgMllamaTextConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = 128256;
    cfg->hidden_size = 4096;
    cfg->intermediate_size = 14336;
    cfg->num_hidden_layers = 40;
    cfg->num_attention_heads = 32;
    cfg->num_key_value_heads = 8;
    cfg->rms_norm_eps = 1e-5f;
    /* v5 with no RoPE dict at all: plain RoPE at theta 500000 (mllama.md §1.4) */
    cfg->rope_theta = 500000.0f;
    cfg->max_position_embeddings = 131072;
    static const int cross[] = {3, 8, 13, 18, 23, 28, 33, 38};
    cfg->n_cross = 8;
    memcpy(cfg->cross_attention_layers, cross, sizeof cross);
    cfg->bos_token_id = 128000;
    cfg->pad_token_id = 128004;
    cfg->n_eos = 1;
    cfg->eos_token_id[0] = 128001;
}

/* eos_token_id: one integer or a list of at most max. */
static int get_int_or_list(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out, int max,
                           int *n) {
    const cJSON *it = eg_json_item(obj, key);
    if (it && cJSON_IsNumber(it)) {
        *n = 1;
        return eg_json_int(c, obj, key, out);
    }
    return eg_json_int_list(c, obj, key, out, max, n);
}

/* The RoPE dict: v5 "rope_parameters" or v4 "rope_scaling"; rope_theta may sit inside (v5) or
 * beside it (v4). original_max_position_embeddings falls back to max_position_embeddings. */
static int parse_rope(const EgJsonCtx *c, const cJSON *t, EgMllamaTextConfig *cfg) {
    if (eg_json_float(c, t, "rope_theta", &cfg->rope_theta)) return -1;
    const char *key = eg_json_item(t, "rope_parameters") ? "rope_parameters" : "rope_scaling";
    const cJSON *r = eg_json_item(t, key);
    if (!r) return 0;
    if (!cJSON_IsObject(r)) return eg_json_bad(c, key, "an object");
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s%s.", c->prefix, key);
    EgJsonCtx rc = {c->src, prefix, c->err};
    const cJSON *type = eg_json_item(r, "rope_type");
    if (!type) type = eg_json_item(r, "type");
    if (type && !cJSON_IsString(type)) return eg_json_bad(&rc, "rope_type", "a string");
    const char *name = type ? type->valuestring : "default";
    float orig = (float)cfg->max_position_embeddings;
    EgRopeLlama3 *l = &cfg->llama3;
    if (eg_json_float(&rc, r, "rope_theta", &cfg->rope_theta)) return -1;
    if (strcmp(name, "default") == 0) return 0;
    if (strcmp(name, "llama3") != 0)
        return eg_fail(c->err, "%s: key '%srope_type': unsupported '%s' (default or llama3)",
                       c->src, prefix, name);
    *l = (EgRopeLlama3){.original_max_position_embeddings = orig};
    if (!eg_json_item(r, "factor") || !eg_json_item(r, "low_freq_factor") ||
        !eg_json_item(r, "high_freq_factor"))
        return eg_fail(c->err,
                       "%s: key '%s': llama3 RoPE needs factor, low_freq_factor and "
                       "high_freq_factor",
                       c->src, key);
    if (eg_json_float(&rc, r, "factor", &l->factor) ||
        eg_json_float(&rc, r, "low_freq_factor", &l->low_freq_factor) ||
        eg_json_float(&rc, r, "high_freq_factor", &l->high_freq_factor) ||
        eg_json_float(&rc, r, "original_max_position_embeddings",
                      &l->original_max_position_embeddings))
        return -1;
    if (!(l->factor > 0) || !(l->low_freq_factor > 0) ||
        !(l->high_freq_factor > l->low_freq_factor) || !(l->original_max_position_embeddings > 0))
        return eg_fail(c->err,
                       "%s: key '%s': llama3 RoPE needs factor > 0, 0 < low_freq_factor < "
                       "high_freq_factor and original_max_position_embeddings > 0",
                       c->src, key);
    cfg->rope_llama3 = 1;
    return 0;
}

static int validate(const EgJsonCtx *c, EgMllamaTextConfig *cfg) {
    const struct {
        const char *key;
        int value;
    } sizes[] = {{"vocab_size", cfg->vocab_size},
                 {"hidden_size", cfg->hidden_size},
                 {"intermediate_size", cfg->intermediate_size},
                 {"num_hidden_layers", cfg->num_hidden_layers},
                 {"num_attention_heads", cfg->num_attention_heads},
                 {"num_key_value_heads", cfg->num_key_value_heads},
                 {"max_position_embeddings", cfg->max_position_embeddings}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value < 1 || (sizes[i].value > SIZE_LIMIT && i != 0))
            return eg_fail(c->err, "%s: key '%s%s' = %d is out of range", c->src, c->prefix,
                           sizes[i].key, sizes[i].value);
    if (cfg->vocab_size > (1 << 24))
        return eg_fail(c->err, "%s: key '%svocab_size' = %d is out of range", c->src, c->prefix,
                       cfg->vocab_size);
    if (cfg->hidden_size % cfg->num_attention_heads)
        return eg_fail(c->err, "%s: %shidden_size %d is not a multiple of num_attention_heads %d",
                       c->src, c->prefix, cfg->hidden_size, cfg->num_attention_heads);
    int head_dim = cfg->hidden_size / cfg->num_attention_heads;
    if (head_dim % 2 || head_dim > 512)
        return eg_fail(c->err, "%s: %shead dimension %d must be even and at most 512", c->src,
                       c->prefix, head_dim);
    if (cfg->num_attention_heads % cfg->num_key_value_heads)
        return eg_fail(c->err,
                       "%s: %snum_attention_heads %d is not a multiple of num_key_value_heads %d",
                       c->src, c->prefix, cfg->num_attention_heads, cfg->num_key_value_heads);
    if (!(cfg->rms_norm_eps > 0) || !(cfg->rope_theta > 0))
        return eg_fail(c->err, "%s: %srms_norm_eps and rope_theta must be positive", c->src,
                       c->prefix);
    for (int i = 0; i < cfg->n_cross; i++) {
        int l = cfg->cross_attention_layers[i];
        if (l < 0 || l >= cfg->num_hidden_layers)
            return eg_fail(c->err, "%s: %scross_attention_layers[%d] = %d is outside the %d layers",
                           c->src, c->prefix, i, l, cfg->num_hidden_layers);
        if (i > 0 && l <= cfg->cross_attention_layers[i - 1])
            return eg_fail(c->err, "%s: %scross_attention_layers must be increasing (%d after %d)",
                           c->src, c->prefix, l, cfg->cross_attention_layers[i - 1]);
    }
    return 0;
}

int eg_mllama_text_config_parse(const struct cJSON *t, const char *src, EgMllamaTextConfig *cfg,
                                EgError *err) {
    eg_mllama_text_config_defaults(cfg);
    EgJsonCtx c = {src, "text_config.", err};
    if (!t) return validate(&c, cfg);
    if (!cJSON_IsObject(t)) return eg_fail(err, "%s: key 'text_config' must be an object", src);
    const char *act = NULL;
    const cJSON *a = eg_json_item(t, "hidden_act");
    if (a && !cJSON_IsString(a)) return eg_json_bad(&c, "hidden_act", "a string");
    act = a ? a->valuestring : "silu";
    if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
        return eg_fail(err, "%s: key 'text_config.hidden_act': unsupported '%s' (silu)", src, act);
    if (eg_json_int(&c, t, "vocab_size", &cfg->vocab_size) ||
        eg_json_int(&c, t, "hidden_size", &cfg->hidden_size) ||
        eg_json_int(&c, t, "intermediate_size", &cfg->intermediate_size) ||
        eg_json_int(&c, t, "num_hidden_layers", &cfg->num_hidden_layers) ||
        eg_json_int(&c, t, "num_attention_heads", &cfg->num_attention_heads) ||
        eg_json_int(&c, t, "num_key_value_heads", &cfg->num_key_value_heads) ||
        eg_json_float(&c, t, "rms_norm_eps", &cfg->rms_norm_eps) ||
        eg_json_int(&c, t, "max_position_embeddings", &cfg->max_position_embeddings) ||
        eg_json_bool(&c, t, "tie_word_embeddings", &cfg->tie_word_embeddings) ||
        eg_json_int_list(&c, t, "cross_attention_layers", cfg->cross_attention_layers,
                         EG_MLLAMA_MAX_CROSS_LAYERS, &cfg->n_cross) ||
        eg_json_int(&c, t, "bos_token_id", &cfg->bos_token_id) ||
        eg_json_int(&c, t, "pad_token_id", &cfg->pad_token_id) ||
        get_int_or_list(&c, t, "eos_token_id", cfg->eos_token_id, EG_MLLAMA_MAX_EOS, &cfg->n_eos) ||
        parse_rope(&c, t, cfg))
        return -1;
    return validate(&c, cfg);
}

int eg_mllama_text_config_load(const char *path, EgMllamaTextConfig *cfg, EgError *err) {
    size_t len = 0;
    char *buf = eg_json_read_file(path, &len, err);
    if (!buf) return -1;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!root) return eg_fail(err, "%s: not valid JSON", path);
    int rc;
    if (!cJSON_IsObject(root))
        rc = eg_fail(err, "%s: not a JSON object", path);
    else
        rc = eg_mllama_text_config_parse(cJSON_GetObjectItemCaseSensitive(root, "text_config"),
                                         path, cfg, err);
    cJSON_Delete(root);
    return rc;
}

int eg_mllama_cross_index(const EgMllamaTextConfig *cfg, int layer) {
    for (int i = 0; i < cfg->n_cross; i++)
        if (cfg->cross_attention_layers[i] == layer) return i;
    return -1;
}
