/* mllama config.json reader (families/mllama/model.h): the top level, vision_config
 * (families/mllama/vision_config.c) and the text_config fields that fix tensor shapes. Defaults
 * are transformers' MllamaConfig / MllamaTextConfig ones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/mllama/model.h"
#include "runtime/json_get.h"

#define SIZE_LIMIT (1 << 20) /* far above any real width/depth; catches garbage and overflow */

static void text_defaults(EgMllamaTextShape *t) {
    memset(t, 0, sizeof *t);
    t->vocab_size = 128256;
    t->hidden_size = 4096;
    t->intermediate_size = 14336;
    t->num_hidden_layers = 40;
    t->num_attention_heads = 32;
    t->num_key_value_heads = 8;
    static const int cross[8] = {3, 8, 13, 18, 23, 28, 33, 38};
    t->n_cross = 8;
    memcpy(t->cross_attention_layers, cross, sizeof cross);
}

/* model_type, when written, must be "mllama"; architectures, when written, must name an mllama
 * class; at least one of the two must be there. */
static int check_architecture(const EgJsonCtx *c, const cJSON *root) {
    const char *model_type = NULL;
    if (eg_json_string(c, root, "model_type", &model_type)) return -1;
    if (model_type && strcmp(model_type, "mllama") != 0)
        return eg_fail(c->err, "unsupported architecture '%s' in %s (model_type)", model_type,
                       c->src);
    const cJSON *archs = eg_json_item(root, "architectures");
    if (archs && !cJSON_IsArray(archs)) return eg_json_bad(c, "architectures", "an array");
    const char *other = NULL;
    for (const cJSON *a = archs ? archs->child : NULL; a; a = a->next) {
        if (!cJSON_IsString(a)) return eg_json_bad(c, "architectures", "an array of strings");
        if (strcmp(a->valuestring, "MllamaForConditionalGeneration") == 0 ||
            strcmp(a->valuestring, "MllamaModel") == 0)
            return 0;
        if (!other) other = a->valuestring;
    }
    if (other)
        return eg_fail(c->err, "unsupported architecture '%s' in %s (architectures)", other,
                       c->src);
    if (!model_type)
        return eg_fail(c->err, "%s: no \"model_type\": \"mllama\" and no mllama \"architectures\"",
                       c->src);
    return 0;
}

static int check_size(const char *src, const char *key, int v, int min, EgError *err) {
    if (v < min || v >= SIZE_LIMIT)
        return eg_fail(err, "%s: key 'text_config.%s' = %d is out of range [%d, %d)", src, key, v,
                       min, SIZE_LIMIT);
    return 0;
}

static int parse_text(const EgJsonCtx *top, const cJSON *o, EgMllamaTextShape *t) {
    text_defaults(t);
    if (o) {
        EgJsonCtx c = {top->src, "text_config.", top->err};
        if (eg_json_int(&c, o, "vocab_size", &t->vocab_size) ||
            eg_json_int(&c, o, "hidden_size", &t->hidden_size) ||
            eg_json_int(&c, o, "intermediate_size", &t->intermediate_size) ||
            eg_json_int(&c, o, "num_hidden_layers", &t->num_hidden_layers) ||
            eg_json_int(&c, o, "num_attention_heads", &t->num_attention_heads) ||
            eg_json_int(&c, o, "num_key_value_heads", &t->num_key_value_heads) ||
            eg_json_int_list(&c, o, "cross_attention_layers", t->cross_attention_layers,
                             EG_MLLAMA_MAX_CROSS, &t->n_cross))
            return -1;
    }
    const char *src = top->src;
    EgError *err = top->err;
    if (check_size(src, "vocab_size", t->vocab_size, 1, err) ||
        check_size(src, "hidden_size", t->hidden_size, 1, err) ||
        check_size(src, "intermediate_size", t->intermediate_size, 1, err) ||
        check_size(src, "num_hidden_layers", t->num_hidden_layers, 1, err) ||
        check_size(src, "num_attention_heads", t->num_attention_heads, 1, err) ||
        check_size(src, "num_key_value_heads", t->num_key_value_heads, 1, err))
        return -1;
    if (t->hidden_size % t->num_attention_heads != 0 ||
        t->num_attention_heads % t->num_key_value_heads != 0)
        return eg_fail(err,
                       "%s: text_config.hidden_size %d, num_attention_heads %d and "
                       "num_key_value_heads %d do not divide evenly",
                       src, t->hidden_size, t->num_attention_heads, t->num_key_value_heads);
    for (int i = 0; i < t->n_cross; i++) {
        int l = t->cross_attention_layers[i];
        if (l < 0 || l >= t->num_hidden_layers)
            return eg_fail(err,
                           "%s: text_config.cross_attention_layers[%d] = %d is past the %d layers "
                           "of num_hidden_layers",
                           src, i, l, t->num_hidden_layers);
        for (int j = 0; j < i; j++)
            if (t->cross_attention_layers[j] == l)
                return eg_fail(err, "%s: text_config.cross_attention_layers lists layer %d twice",
                               src, l);
    }
    return 0;
}

int eg_mllama_config_parse(const char *json, size_t len, const char *source_name,
                           EgMllamaConfig *cfg, EgError *err) {
    const char *src = source_name ? source_name : "config.json";
    memset(cfg, 0, sizeof *cfg);
    cfg->image_token_index = 128256;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return eg_fail(err, "%s: not valid JSON", src);
    EgJsonCtx c = {src, "", err};
    const cJSON *vision = NULL, *text = NULL;
    const char *dtype = NULL;
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        eg_fail(err, "%s: not a JSON object", src);
    } else if (check_architecture(&c, root) == 0 &&
               eg_json_object(&c, root, "vision_config", &vision) == 0 &&
               eg_json_object(&c, root, "text_config", &text) == 0 &&
               /* image_token_id is HF's alias; the written image_token_index wins */
               eg_json_int(&c, root, "image_token_id", &cfg->image_token_index) == 0 &&
               eg_json_int(&c, root, "image_token_index", &cfg->image_token_index) == 0 &&
               eg_json_string(&c, root, "dtype", &dtype) == 0 &&
               (dtype || eg_json_string(&c, root, "torch_dtype", &dtype) == 0) &&
               eg_mllama_vision_config_parse(vision, src, &cfg->vision, err) == 0 &&
               parse_text(&c, text, &cfg->text) == 0) {
        const EgMllamaTextShape *t = &cfg->text;
        /* the image token's row must exist: the embedding has vocab_size + 8 rows */
        if (cfg->image_token_index < 0 || cfg->image_token_index >= t->vocab_size + 8)
            eg_fail(err,
                    "%s: image_token_index %d is outside the %d embedding rows (vocab_size + 8)",
                    src, cfg->image_token_index, t->vocab_size + 8);
        else
            rc = 0;
    }
    if (rc == 0 && dtype) snprintf(cfg->dtype, sizeof cfg->dtype, "%s", dtype);
    cJSON_Delete(root);
    return rc;
}

int eg_mllama_config_load(const char *path, EgMllamaConfig *cfg, EgError *err) {
    size_t len = 0;
    char *buf = eg_json_read_file(path, &len, err);
    if (!buf) return -1;
    int rc = eg_mllama_config_parse(buf, len, path, cfg, err);
    free(buf);
    return rc;
}
