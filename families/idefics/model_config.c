/* IDEFICS config.json reader. The defaults are those of transformers' IdeficsConfig,
 * IdeficsVisionConfig and IdeficsPerceiverConfig (docs: idefics.md §1.1–1.3); a key that is
 * missing or null keeps its default. Values are type-checked strictly so a hand-edited config
 * fails here, naming the key, rather than producing a silently different model. */
#include "families/idefics/model_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE_LIMIT (1 << 20) /* far above any real width/depth; catches garbage and overflow */

static const struct {
    const char *name;
    EgActivation act;
} activations[] = {
    /* ACT2FN spellings; the tanh approximations are one formula written three ways. */
    {"gelu", EG_ACT_GELU},
    {"gelu_python", EG_ACT_GELU},
    {"quick_gelu", EG_ACT_QUICK_GELU},
    {"silu", EG_ACT_SILU},
    {"swish", EG_ACT_SILU},
    {"relu", EG_ACT_RELU},
    {"gelu_pytorch_tanh", EG_ACT_GELU_TANH},
    {"gelu_new", EG_ACT_GELU_TANH},
    {"gelu_fast", EG_ACT_GELU_TANH},
};

const char *eg_activation_name(EgActivation act) {
    switch (act) {
    case EG_ACT_GELU:
        return "gelu";
    case EG_ACT_QUICK_GELU:
        return "quick_gelu";
    case EG_ACT_SILU:
        return "silu";
    case EG_ACT_RELU:
        return "relu";
    case EG_ACT_GELU_TANH:
        return "gelu_pytorch_tanh";
    }
    return "?";
}

void eg_model_config_defaults(EgModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = 32000;
    cfg->additional_vocab_size = 0;
    cfg->hidden_size = 4096;
    cfg->intermediate_size = 11008;
    cfg->num_hidden_layers = 32;
    cfg->num_attention_heads = 32;
    cfg->hidden_act = EG_ACT_SILU;
    cfg->rms_norm_eps = 1e-6f;
    cfg->pad_token_id = 0;
    cfg->bos_token_id = 1;
    cfg->eos_token_id = 2;
    cfg->tie_word_embeddings = 0;
    cfg->cross_layer_interval = 1;
    cfg->qk_layer_norms = 0;
    cfg->use_resampler = 0;
    cfg->alpha_vector = 0;
    cfg->rope_theta = 10000.0f;
    cfg->max_position_embeddings = 2048;
    cfg->dtype[0] = '\0';
    snprintf(cfg->architecture, sizeof cfg->architecture, "IdeficsForVisionText2Text");

    EgVisionConfig *v = &cfg->vision;
    v->embed_dim = 768;
    v->image_size = 224;
    v->patch_size = 14;
    v->intermediate_size = 5120;
    v->num_hidden_layers = 32;
    v->num_attention_heads = 16;
    v->num_channels = 3;
    v->hidden_act = EG_ACT_GELU;
    v->layer_norm_eps = 1e-5f;

    EgPerceiverConfig *p = &cfg->perceiver;
    p->n_latents = 64;
    p->depth = 6;
    p->n_heads = 16;
    p->head_dim = 96;
    p->qk_layer_norms = 0;
}

/* ---- typed getters: absent or null keeps *out; wrong type is an error naming the key ---- */

typedef struct Ctx {
    const char *src;    /* file name for messages */
    const char *prefix; /* "" or "vision_config." / "perceiver_config." */
    EgError *err;
} Ctx;

static const char *type_name(const cJSON *it) {
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "something else";
}

static const cJSON *item(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

static int bad_type(const Ctx *c, const char *key, const char *want, const cJSON *it) {
    return eg_fail(c->err, "%s: key '%s%s' must be %s, not %s", c->src, c->prefix, key, want,
                   type_name(it));
}

static int get_int(const Ctx *c, const cJSON *obj, const char *key, int *out) {
    const cJSON *it = item(obj, key);
    if (!it) return 0;
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(d == floor(d)) || d < -2147483648.0 || d > 2147483647.0)
        return bad_type(c, key, "an integer", it);
    *out = (int)d;
    return 0;
}

static int get_float(const Ctx *c, const cJSON *obj, const char *key, float *out) {
    const cJSON *it = item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) return bad_type(c, key, "a number", it);
    *out = (float)it->valuedouble;
    return 0;
}

static int get_bool(const Ctx *c, const cJSON *obj, const char *key, int *out) {
    const cJSON *it = item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return bad_type(c, key, "true or false", it);
    *out = cJSON_IsTrue(it);
    return 0;
}

/* *out is left alone when the key is absent. */
static int get_string(const Ctx *c, const cJSON *obj, const char *key, const char **out) {
    const cJSON *it = item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsString(it)) return bad_type(c, key, "a string", it);
    *out = it->valuestring;
    return 0;
}

static int get_act(const Ctx *c, const cJSON *obj, const char *key, EgActivation *out) {
    const char *s = NULL;
    if (get_string(c, obj, key, &s) != 0) return -1;
    if (!s) return 0;
    for (size_t i = 0; i < sizeof activations / sizeof activations[0]; i++) {
        if (strcmp(s, activations[i].name) == 0) {
            *out = activations[i].act;
            return 0;
        }
    }
    return eg_fail(c->err, "%s: key '%s%s': unsupported activation '%s'", c->src, c->prefix, key,
                   s);
}

/* A sub-config: absent/null → defaults, otherwise it must be an object. */
static int get_object(const Ctx *c, const cJSON *obj, const char *key, const cJSON **out) {
    const cJSON *it = item(obj, key);
    *out = NULL;
    if (!it) return 0;
    if (!cJSON_IsObject(it)) return bad_type(c, key, "an object", it);
    *out = it;
    return 0;
}

/* ---- sections ---- */

/* model_type, when written, must be "idefics"; architectures, when a non-empty list, must
 * name an IDEFICS class; at least one of the two must be there. */
static int check_architecture(const Ctx *c, const cJSON *root, EgModelConfig *cfg) {
    const char *model_type = NULL;
    if (get_string(c, root, "model_type", &model_type) != 0) return -1;
    if (model_type && strcmp(model_type, "idefics") != 0)
        return eg_fail(c->err, "unsupported architecture '%s' in %s (model_type)", model_type,
                       c->src);
    const cJSON *archs = item(root, "architectures");
    if (archs && !cJSON_IsArray(archs)) return bad_type(c, "architectures", "an array", archs);
    const char *other = NULL;
    for (const cJSON *a = archs ? archs->child : NULL; a; a = a->next) {
        if (!cJSON_IsString(a)) return bad_type(c, "architectures", "an array of strings", archs);
        if (strcmp(a->valuestring, "IdeficsForVisionText2Text") == 0 ||
            strcmp(a->valuestring, "IdeficsModel") == 0) {
            snprintf(cfg->architecture, sizeof cfg->architecture, "%s", a->valuestring);
            return 0;
        }
        if (!other) other = a->valuestring;
    }
    if (other)
        return eg_fail(c->err, "unsupported architecture '%s' in %s (architectures)", other,
                       c->src);
    if (!model_type)
        return eg_fail(c->err,
                       "%s: no \"model_type\": \"idefics\" and no IDEFICS \"architectures\"; not "
                       "an IDEFICS config",
                       c->src);
    return 0;
}

static int parse_text(const Ctx *c, const cJSON *r, EgModelConfig *m) {
    const char *alpha = NULL, *dtype = NULL;
    if (get_int(c, r, "vocab_size", &m->vocab_size) ||
        get_int(c, r, "additional_vocab_size", &m->additional_vocab_size) ||
        get_int(c, r, "hidden_size", &m->hidden_size) ||
        get_int(c, r, "intermediate_size", &m->intermediate_size) ||
        get_int(c, r, "num_hidden_layers", &m->num_hidden_layers) ||
        get_int(c, r, "num_attention_heads", &m->num_attention_heads) ||
        get_act(c, r, "hidden_act", &m->hidden_act) ||
        get_float(c, r, "rms_norm_eps", &m->rms_norm_eps) ||
        get_int(c, r, "pad_token_id", &m->pad_token_id) ||
        get_int(c, r, "bos_token_id", &m->bos_token_id) ||
        get_int(c, r, "eos_token_id", &m->eos_token_id) ||
        get_bool(c, r, "tie_word_embeddings", &m->tie_word_embeddings) ||
        get_int(c, r, "cross_layer_interval", &m->cross_layer_interval) ||
        get_bool(c, r, "qk_layer_norms", &m->qk_layer_norms) ||
        get_bool(c, r, "use_resampler", &m->use_resampler) ||
        get_string(c, r, "alpha_type", &alpha) ||
        get_int(c, r, "max_position_embeddings", &m->max_position_embeddings) ||
        get_string(c, r, "dtype", &dtype))
        return -1;
    if (!dtype && get_string(c, r, "torch_dtype", &dtype) != 0) return -1; /* 4.x spelling */
    if (dtype) snprintf(m->dtype, sizeof m->dtype, "%s", dtype);
    if (alpha) {
        if (strcmp(alpha, "vector") == 0)
            m->alpha_vector = 1;
        else if (strcmp(alpha, "float") == 0)
            m->alpha_vector = 0;
        else
            return eg_fail(c->err, "%s: key 'alpha_type': '%s' is not \"float\" or \"vector\"",
                           c->src, alpha);
    }
    const cJSON *rope = NULL;
    if (get_object(c, r, "rope_parameters", &rope) != 0) return -1;
    if (rope) {
        Ctx rc = {c->src, "rope_parameters.", c->err};
        const char *type = NULL;
        if (get_float(&rc, rope, "rope_theta", &m->rope_theta) ||
            get_string(&rc, rope, "rope_type", &type))
            return -1;
        /* IDEFICS only has plain RoPE; a scaled variant would need code we do not have. */
        if (type && strcmp(type, "default") != 0)
            return eg_fail(c->err, "%s: key 'rope_parameters.rope_type': unsupported '%s'", c->src,
                           type);
    }
    return 0;
}

static int parse_vision(const Ctx *c, const cJSON *root, EgVisionConfig *v) {
    const cJSON *o;
    if (get_object(c, root, "vision_config", &o) != 0) return -1;
    if (!o) return 0;
    Ctx vc = {c->src, "vision_config.", c->err};
    /* hidden_size is an alias of embed_dim; embed_dim wins when both are written. */
    return get_int(&vc, o, "hidden_size", &v->embed_dim) ||
                   get_int(&vc, o, "embed_dim", &v->embed_dim) ||
                   get_int(&vc, o, "image_size", &v->image_size) ||
                   get_int(&vc, o, "patch_size", &v->patch_size) ||
                   get_int(&vc, o, "intermediate_size", &v->intermediate_size) ||
                   get_int(&vc, o, "num_hidden_layers", &v->num_hidden_layers) ||
                   get_int(&vc, o, "num_attention_heads", &v->num_attention_heads) ||
                   get_int(&vc, o, "num_channels", &v->num_channels) ||
                   get_act(&vc, o, "hidden_act", &v->hidden_act) ||
                   get_float(&vc, o, "layer_norm_eps", &v->layer_norm_eps)
               ? -1
               : 0;
}

static int parse_perceiver(const Ctx *c, const cJSON *root, EgPerceiverConfig *p) {
    const cJSON *o;
    if (get_object(c, root, "perceiver_config", &o) != 0) return -1;
    if (!o) return 0;
    Ctx pc = {c->src, "perceiver_config.", c->err};
    /* perceiver_config.use_resampler is ignored by the model: the top-level key decides. */
    return get_int(&pc, o, "resampler_n_latents", &p->n_latents) ||
                   get_int(&pc, o, "resampler_depth", &p->depth) ||
                   get_int(&pc, o, "resampler_n_heads", &p->n_heads) ||
                   get_int(&pc, o, "resampler_head_dim", &p->head_dim) ||
                   get_bool(&pc, o, "qk_layer_norms_perceiver", &p->qk_layer_norms)
               ? -1
               : 0;
}

/* ---- consistency ---- */

static int check_size(const char *src, const char *key, int v, int min, EgError *err) {
    if (v < min || v >= SIZE_LIMIT)
        return eg_fail(err, "%s: key '%s' = %d is out of range [%d, %d)", src, key, v, min,
                       SIZE_LIMIT);
    return 0;
}

static int check_eps(const char *src, const char *key, float v, EgError *err) {
    if (!(v > 0.0f) || !isfinite(v))
        return eg_fail(err, "%s: key '%s' = %g must be positive", src, key, (double)v);
    return 0;
}

static int validate(const char *src, const EgModelConfig *m, EgError *err) {
    const EgVisionConfig *v = &m->vision;
    const EgPerceiverConfig *p = &m->perceiver;
    if (check_size(src, "vocab_size", m->vocab_size, 1, err) ||
        check_size(src, "additional_vocab_size", m->additional_vocab_size, 0, err) ||
        check_size(src, "hidden_size", m->hidden_size, 1, err) ||
        check_size(src, "intermediate_size", m->intermediate_size, 1, err) ||
        check_size(src, "num_hidden_layers", m->num_hidden_layers, 1, err) ||
        check_size(src, "num_attention_heads", m->num_attention_heads, 1, err) ||
        check_size(src, "cross_layer_interval", m->cross_layer_interval, 1, err) ||
        check_size(src, "max_position_embeddings", m->max_position_embeddings, 1, err) ||
        check_size(src, "vision_config.embed_dim", v->embed_dim, 1, err) ||
        check_size(src, "vision_config.image_size", v->image_size, 1, err) ||
        check_size(src, "vision_config.patch_size", v->patch_size, 1, err) ||
        check_size(src, "vision_config.intermediate_size", v->intermediate_size, 1, err) ||
        check_size(src, "vision_config.num_hidden_layers", v->num_hidden_layers, 1, err) ||
        check_size(src, "vision_config.num_attention_heads", v->num_attention_heads, 1, err) ||
        check_size(src, "vision_config.num_channels", v->num_channels, 1, err) ||
        check_size(src, "perceiver_config.resampler_n_latents", p->n_latents, 1, err) ||
        check_size(src, "perceiver_config.resampler_depth", p->depth, 1, err) ||
        check_size(src, "perceiver_config.resampler_n_heads", p->n_heads, 1, err) ||
        check_size(src, "perceiver_config.resampler_head_dim", p->head_dim, 1, err) ||
        check_eps(src, "rms_norm_eps", m->rms_norm_eps, err) ||
        check_eps(src, "vision_config.layer_norm_eps", v->layer_norm_eps, err) ||
        check_eps(src, "rope_parameters.rope_theta", m->rope_theta, err))
        return -1;
    if ((int64_t)m->vocab_size + m->additional_vocab_size >= SIZE_LIMIT)
        return eg_fail(err, "%s: vocab_size + additional_vocab_size is too large", src);
    if (m->hidden_size % m->num_attention_heads != 0)
        return eg_fail(err, "%s: hidden_size %d is not divisible by num_attention_heads %d", src,
                       m->hidden_size, m->num_attention_heads);
    if ((m->hidden_size / m->num_attention_heads) % 2 != 0)
        return eg_fail(err,
                       "%s: head dim %d (hidden_size / num_attention_heads) must be even for "
                       "RoPE",
                       src, m->hidden_size / m->num_attention_heads);
    if (v->embed_dim % v->num_attention_heads != 0)
        return eg_fail(err,
                       "%s: vision_config.embed_dim %d is not divisible by "
                       "vision_config.num_attention_heads %d",
                       src, v->embed_dim, v->num_attention_heads);
    /* The reference builds L // K cross blocks and indexes block i // K for i % K == 0, so a
     * remainder makes it index past the end. */
    if (m->num_hidden_layers % m->cross_layer_interval != 0)
        return eg_fail(err, "%s: num_hidden_layers %d is not a multiple of cross_layer_interval %d",
                       src, m->num_hidden_layers, m->cross_layer_interval);
    if (v->image_size % v->patch_size != 0)
        return eg_fail(err,
                       "%s: vision_config.image_size %d is not a multiple of "
                       "vision_config.patch_size %d",
                       src, v->image_size, v->patch_size);
    const int ids[3] = {m->pad_token_id, m->bos_token_id, m->eos_token_id};
    const char *id_keys[3] = {"pad_token_id", "bos_token_id", "eos_token_id"};
    for (int i = 0; i < 3; i++) {
        if (ids[i] < 0 || ids[i] >= m->vocab_size + m->additional_vocab_size)
            return eg_fail(err, "%s: key '%s' = %d is outside the vocabulary (%d)", src, id_keys[i],
                           ids[i], m->vocab_size + m->additional_vocab_size);
    }
    return 0;
}

int eg_model_config_parse(const char *json, size_t len, const char *source_name, EgModelConfig *cfg,
                          EgError *err) {
    const char *src = source_name ? source_name : "config.json";
    eg_model_config_defaults(cfg);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return eg_fail(err, "%s: not valid JSON", src);
    int rc = -1;
    Ctx c = {src, "", err};
    if (!cJSON_IsObject(root))
        eg_fail(err, "%s: not a JSON object", src);
    else if (check_architecture(&c, root, cfg) == 0 && parse_text(&c, root, cfg) == 0 &&
             parse_vision(&c, root, &cfg->vision) == 0 &&
             parse_perceiver(&c, root, &cfg->perceiver) == 0 && validate(src, cfg, err) == 0)
        rc = 0;
    cJSON_Delete(root);
    return rc;
}

int eg_model_config_load(const char *path, EgModelConfig *cfg, EgError *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return eg_fail(err, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int bad = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            char *nb = cap <= (64u << 20) ? realloc(buf, cap) : NULL; /* configs are ~KB */
            if (!nb) {
                bad = 1;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) break;
    }
    bad = bad || ferror(fp);
    fclose(fp);
    int rc = bad ? eg_fail(err, "%s: cannot read (or too large)", path)
                 : eg_model_config_parse(buf, len, path, cfg, err);
    free(buf);
    return rc;
}
