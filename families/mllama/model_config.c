/* mllama config.json reader (families/mllama/model.h): the top level, vision_config
 * (families/mllama/vision_config.c) and text_config (families/mllama/text_config.c). Defaults
 * are transformers' MllamaConfig ones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/mllama/model.h"
#include "runtime/json_get.h"

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
               eg_mllama_text_config_parse(text, src, &cfg->text, err) == 0) {
        const EgMllamaTextConfig *t = &cfg->text;
        /* the image token's row must exist: the embedding has vocab_size + 8 rows */
        if (cfg->image_token_index < 0 ||
            cfg->image_token_index >= t->vocab_size + EG_MLLAMA_EXTRA_EMBEDDINGS)
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
