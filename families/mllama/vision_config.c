/* mllama vision_config reader (families/mllama/vision_config.h). Defaults are those of
 * transformers' MllamaVisionConfig (note image_size 448 there; the hub checkpoints say 560). */
#include "families/mllama/vision_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/json_get.h"

#define SIZE_LIMIT (1 << 20) /* far above any real width/depth; catches garbage and overflow */

static const int default_ratios[8][2] = {{1, 1}, {1, 2}, {1, 3}, {1, 4},
                                         {2, 1}, {2, 2}, {3, 1}, {4, 1}};

void eg_mllama_vision_config_defaults(EgMllamaVisionConfig *c) {
    memset(c, 0, sizeof *c);
    c->hidden_size = 1280;
    c->hidden_act = EG_OP_ACT_GELU;
    c->num_hidden_layers = 32;
    c->num_global_layers = 8;
    c->attention_heads = 16;
    c->num_channels = 3;
    c->intermediate_size = 5120;
    c->vision_output_dim = 7680;
    c->image_size = 448;
    c->patch_size = 14;
    c->norm_eps = 1e-5f;
    c->max_num_tiles = 4;
    static const int inter[5] = {3, 7, 15, 23, 30};
    c->n_intermediate = 5;
    memcpy(c->intermediate_layers_indices, inter, sizeof inter);
    c->n_aspect_ratios = 8;
    memcpy(c->supported_aspect_ratios, default_ratios, sizeof default_ratios);
}

static const struct {
    const char *name;
    EgOpAct act;
} activations[] = {
    /* ACT2FN spellings; the tanh approximations are one formula written three ways */
    {"gelu", EG_OP_ACT_GELU},
    {"gelu_python", EG_OP_ACT_GELU},
    {"quick_gelu", EG_OP_ACT_QUICK_GELU},
    {"silu", EG_OP_ACT_SILU},
    {"swish", EG_OP_ACT_SILU},
    {"relu", EG_OP_ACT_RELU},
    {"gelu_pytorch_tanh", EG_OP_ACT_GELU_TANH},
    {"gelu_new", EG_OP_ACT_GELU_TANH},
    {"gelu_fast", EG_OP_ACT_GELU_TANH},
};

static int get_act(const EgJsonCtx *c, const cJSON *o, const char *key, EgOpAct *out) {
    const char *s = NULL;
    if (eg_json_string(c, o, key, &s)) return -1;
    if (!s) return 0;
    for (size_t i = 0; i < sizeof activations / sizeof activations[0]; i++)
        if (strcmp(s, activations[i].name) == 0) {
            *out = activations[i].act;
            return 0;
        }
    return eg_fail(c->err, "%s: key '%s%s': unsupported activation '%s'", c->src, c->prefix, key,
                   s);
}

/* image_size and patch_size: an integer, or (v5) a [height, width] pair that must be square. */
static int get_square(const EgJsonCtx *c, const cJSON *o, const char *key, int *out) {
    const cJSON *it = eg_json_item(o, key);
    if (!it || !cJSON_IsArray(it)) return eg_json_int(c, o, key, out);
    int hw[2], n = 0;
    if (eg_json_int_list(c, o, key, hw, 2, &n)) return -1;
    if (n != 2 || hw[0] != hw[1])
        return eg_fail(c->err, "%s: key '%s%s' must be an integer or a square [h, w] pair", c->src,
                       c->prefix, key);
    *out = hw[0];
    return 0;
}

static int get_ratios(const EgJsonCtx *c, const cJSON *o, EgMllamaVisionConfig *v, int *written) {
    const cJSON *it = eg_json_item(o, "supported_aspect_ratios");
    *written = it != NULL;
    if (!it) return 0;
    if (!cJSON_IsArray(it)) return eg_json_bad(c, "supported_aspect_ratios", "an array of pairs");
    int n = cJSON_GetArraySize(it);
    if (n < 1 || n > EG_MLLAMA_MAX_ASPECT_RATIOS)
        return eg_fail(c->err, "%s: key '%ssupported_aspect_ratios' has %d entries (1 to %d)",
                       c->src, c->prefix, n, EG_MLLAMA_MAX_ASPECT_RATIOS);
    int i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++) {
        const cJSON *a = cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 ? e->child : NULL;
        if (!a || !cJSON_IsNumber(a) || !cJSON_IsNumber(a->next) ||
            a->valuedouble != floor(a->valuedouble) ||
            a->next->valuedouble != floor(a->next->valuedouble) || a->valuedouble < 1 ||
            a->next->valuedouble < 1 || a->valuedouble > SIZE_LIMIT ||
            a->next->valuedouble > SIZE_LIMIT)
            return eg_fail(c->err,
                           "%s: key '%ssupported_aspect_ratios' entry %d must be a pair of "
                           "positive integers",
                           c->src, c->prefix, i);
        v->supported_aspect_ratios[i][0] = (int)a->valuedouble;
        v->supported_aspect_ratios[i][1] = (int)a->next->valuedouble;
    }
    v->n_aspect_ratios = n;
    return 0;
}

static int check_size(const char *src, const char *key, int v, int min, EgError *err) {
    if (v < min || v >= SIZE_LIMIT)
        return eg_fail(err, "%s: key 'vision_config.%s' = %d is out of range [%d, %d)", src, key, v,
                       min, SIZE_LIMIT);
    return 0;
}

static int validate(const char *src, const EgMllamaVisionConfig *v, int ratios_written,
                    EgError *err) {
    if (check_size(src, "hidden_size", v->hidden_size, 1, err) ||
        check_size(src, "num_hidden_layers", v->num_hidden_layers, 1, err) ||
        check_size(src, "num_global_layers", v->num_global_layers, 0, err) ||
        check_size(src, "attention_heads", v->attention_heads, 1, err) ||
        check_size(src, "num_channels", v->num_channels, 1, err) ||
        check_size(src, "intermediate_size", v->intermediate_size, 1, err) ||
        check_size(src, "vision_output_dim", v->vision_output_dim, 1, err) ||
        check_size(src, "image_size", v->image_size, 1, err) ||
        check_size(src, "patch_size", v->patch_size, 1, err) ||
        check_size(src, "max_num_tiles", v->max_num_tiles, 1, err))
        return -1;
    if (v->max_num_tiles > 64) /* far above any released model (4); bounds per-image tables */
        return eg_fail(err, "%s: key 'vision_config.max_num_tiles' = %d exceeds 64", src,
                       v->max_num_tiles);
    if (!(v->norm_eps > 0.0f) || !isfinite(v->norm_eps))
        return eg_fail(err, "%s: key 'vision_config.norm_eps' = %g must be positive", src,
                       (double)v->norm_eps);
    if (v->hidden_size % v->attention_heads != 0)
        return eg_fail(err,
                       "%s: vision_config.hidden_size %d is not divisible by "
                       "vision_config.attention_heads %d",
                       src, v->hidden_size, v->attention_heads);
    /* shaders/attention.glsl keeps a query head in registers: at most 512 dimensions */
    if (v->hidden_size / v->attention_heads > 512)
        return eg_fail(err, "%s: vision head dimension %d exceeds the supported 512", src,
                       v->hidden_size / v->attention_heads);
    if (v->image_size % v->patch_size != 0)
        return eg_fail(err,
                       "%s: vision_config.image_size %d is not a multiple of "
                       "vision_config.patch_size %d",
                       src, v->image_size, v->patch_size);
    if ((long long)v->vision_output_dim != (long long)v->hidden_size * (v->n_intermediate + 1))
        return eg_fail(err,
                       "%s: vision_config.vision_output_dim %d must be hidden_size %d x (1 + %d "
                       "intermediate layers) = %lld",
                       src, v->vision_output_dim, v->hidden_size, v->n_intermediate,
                       (long long)v->hidden_size * (v->n_intermediate + 1));
    for (int i = 0; i < v->n_intermediate; i++)
        if (v->intermediate_layers_indices[i] < 0 ||
            v->intermediate_layers_indices[i] >= v->num_hidden_layers)
            return eg_fail(err,
                           "%s: vision_config.intermediate_layers_indices[%d] = %d is not a layer "
                           "of the %d-layer local encoder",
                           src, i, v->intermediate_layers_indices[i], v->num_hidden_layers);
    /* HF refuses its 4-tile default list with another tile count (validate_architecture) */
    if (!ratios_written && v->max_num_tiles != 4)
        return eg_fail(err,
                       "%s: vision_config.max_num_tiles %d needs supported_aspect_ratios (the "
                       "default list is for 4 tiles)",
                       src, v->max_num_tiles);
    for (int i = 0; i < v->n_aspect_ratios; i++) {
        const int *r = v->supported_aspect_ratios[i];
        if ((long long)r[0] * r[1] > v->max_num_tiles)
            return eg_fail(err,
                           "%s: vision_config.supported_aspect_ratios[%d] = [%d, %d] needs %lld "
                           "tiles, more than max_num_tiles %d",
                           src, i, r[0], r[1], (long long)r[0] * r[1], v->max_num_tiles);
    }
    return 0;
}

int eg_mllama_vision_config_parse(const cJSON *o, const char *src, EgMllamaVisionConfig *v,
                                  EgError *err) {
    eg_mllama_vision_config_defaults(v);
    int ratios_written = 0;
    if (o) {
        EgJsonCtx c = {src, "vision_config.", err};
        /* HF's attribute_map: num_attention_heads is an alias of attention_heads (which v5
         * writes); the written attention_heads wins */
        if (eg_json_int(&c, o, "num_attention_heads", &v->attention_heads) ||
            eg_json_int(&c, o, "attention_heads", &v->attention_heads) ||
            eg_json_int(&c, o, "hidden_size", &v->hidden_size) ||
            get_act(&c, o, "hidden_act", &v->hidden_act) ||
            eg_json_int(&c, o, "num_hidden_layers", &v->num_hidden_layers) ||
            eg_json_int(&c, o, "num_global_layers", &v->num_global_layers) ||
            eg_json_int(&c, o, "num_channels", &v->num_channels) ||
            eg_json_int(&c, o, "intermediate_size", &v->intermediate_size) ||
            eg_json_int(&c, o, "vision_output_dim", &v->vision_output_dim) ||
            get_square(&c, o, "image_size", &v->image_size) ||
            get_square(&c, o, "patch_size", &v->patch_size) ||
            eg_json_float(&c, o, "norm_eps", &v->norm_eps) ||
            eg_json_int(&c, o, "max_num_tiles", &v->max_num_tiles) ||
            eg_json_int_list(&c, o, "intermediate_layers_indices", v->intermediate_layers_indices,
                             EG_MLLAMA_MAX_INTERMEDIATE, &v->n_intermediate) ||
            get_ratios(&c, o, v, &ratios_written))
            return -1;
    }
    return validate(src, v, ratios_written, err);
}
