/* preprocessor_config.json of an mllama folder (HF MllamaImageProcessor), read into the settings
 * of vision/tile_preprocess.c and checked against the vision config: the processor's tiles must be
 * the encoder's tiles, and every aspect-ratio id it can produce must have a table row. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "families/mllama/model.h"
#include "runtime/json_get.h"

static int get_triple(const EgJsonCtx *c, const cJSON *o, const char *key, float out[3],
                      int positive) {
    const cJSON *it = eg_json_item(o, key);
    if (!it) return 0;
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 3)
        return eg_json_bad(c, key, "an array of 3 numbers");
    int i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || (positive && !(e->valuedouble > 0)))
            return eg_json_bad(
                c, key, positive ? "an array of 3 positive numbers" : "an array of 3 numbers");
        out[i] = (float)e->valuedouble;
    }
    return 0;
}

/* A flag the processor (or this implementation) needs true: absent counts as true. */
static int need_true(const EgJsonCtx *c, const cJSON *o, const char *key, const char *why) {
    int v = 1;
    if (eg_json_bool(c, o, key, &v)) return -1;
    if (!v) return eg_fail(c->err, "%s: key '%s' is false: %s", c->src, key, why);
    return 0;
}

/* size: {height, width}, square (the processor requires it). */
static int get_size(const EgJsonCtx *c, const cJSON *root, int *tile) {
    const cJSON *size = NULL;
    if (eg_json_object(c, root, "size", &size)) return -1;
    if (!size) return 0;
    EgJsonCtx sc = {c->src, "size.", c->err};
    int h = -1, w = -1;
    if (eg_json_int(&sc, size, "height", &h) || eg_json_int(&sc, size, "width", &w)) return -1;
    if (h <= 0 || h != w)
        return eg_fail(c->err,
                       "%s: key 'size' must be a square {height, width} (the mllama processor "
                       "requires it)",
                       c->src);
    *tile = h;
    return 0;
}

static int parse(const char *json, size_t len, const char *src, EgMllamaPreprocessConfig *p,
                 EgError *err) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return eg_fail(err, "%s: not valid JSON", src);
    EgJsonCtx c = {src, "", err};
    int resample = 2, rc = -1;
    const cJSON *rf = eg_json_item(root, "rescale_factor");
    if (!cJSON_IsObject(root))
        eg_fail(err, "%s: not a JSON object", src);
    else if (rf && (!cJSON_IsNumber(rf) || !(rf->valuedouble > 0)))
        eg_json_bad(&c, "rescale_factor", "a positive number");
    else if (get_size(&c, root, &p->tile_size) == 0 &&
             eg_json_int(&c, root, "max_image_tiles", &p->max_tiles) == 0 &&
             get_triple(&c, root, "image_mean", p->norm.mean, 0) == 0 &&
             get_triple(&c, root, "image_std", p->norm.std, 1) == 0 &&
             eg_json_int(&c, root, "resample", &resample) == 0 &&
             need_true(&c, root, "do_resize", "the mllama processor requires it") == 0 &&
             need_true(&c, root, "do_pad", "the mllama processor requires it") == 0 &&
             need_true(&c, root, "do_rescale", "not supported (published configs say true)") == 0 &&
             need_true(&c, root, "do_normalize", "not supported (published configs say true)") ==
                 0) {
        if (resample != 2)
            eg_fail(err, "%s: key 'resample' = %d: only 2 (bilinear) is supported", src, resample);
        else
            rc = 0;
    }
    /* HF multiplies by the value as Python parsed it: so does vision/tile_preprocess.c */
    if (rc == 0 && rf) p->rescale_factor = rf->valuedouble;
    cJSON_Delete(root);
    return rc;
}

int eg_mllama_preprocess_config_load(const char *dir, const EgMllamaConfig *cfg,
                                     EgMllamaPreprocessConfig *p, EgError *err) {
    const EgMllamaVisionConfig *v = &cfg->vision;
    eg_mllama_preprocess_config_default(p, v->image_size, v->max_num_tiles);
    char path[1200];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        size_t len = 0;
        char *json = eg_json_read_file(path, &len, err);
        if (!json) return -1;
        int rc = parse(json, len, path, p, err);
        free(json);
        if (rc) return -1;
    } else if (errno != ENOENT) {
        return eg_fail(err, "%s: cannot read: %s", path, strerror(errno));
    }
    if (p->tile_size != v->image_size)
        return eg_fail(err, "%s: tile size %d differs from vision_config.image_size %d", path,
                       p->tile_size, v->image_size);
    if (p->max_tiles != v->max_num_tiles)
        return eg_fail(err, "%s: max_image_tiles %d differs from vision_config.max_num_tiles %d",
                       path, p->max_tiles, v->max_num_tiles);
    int ids = eg_mllama_num_aspect_ratios(p->max_tiles);
    if (ids < 1 || ids > v->n_aspect_ratios)
        return eg_fail(err,
                       "%s: max_image_tiles %d gives %d aspect-ratio ids, more than the %d rows of "
                       "supported_aspect_ratios",
                       path, p->max_tiles, ids, v->n_aspect_ratios);
    if (v->num_channels != 3)
        return eg_fail(err, "%s: the processor makes RGB tiles; vision_config.num_channels is %d",
                       path, v->num_channels);
    return 0;
}
