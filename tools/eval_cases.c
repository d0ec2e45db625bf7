/* Loading the prompts of `egret eval` (tools/eval_cases.h). */
#include "tools/eval_cases.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/json_get.h"
#include "runtime/safetensors.h"
#include "runtime/text.h"
#include "vision/image_decode.h"

#define DEFAULT_MAX_NEW_TOKENS 24

/* Ids the model has embeddings for: anything else would read outside its table. */
static int check_ids(const EgFamilyModel *m, const EgEvalCase *c, const char *src, EgError *err) {
    if (c->n == 0) return eg_fail(err, "%s: case %s has an empty prompt", src, c->label);
    for (uint32_t t = 0; t < c->n; t++)
        if (c->ids[t] < 0 || (uint32_t)c->ids[t] >= m->info.vocab)
            return eg_fail(err, "%s: case %s: token %u is id %d, outside the vocabulary of %u", src,
                           c->label, t, c->ids[t], m->info.vocab);
    if (c->n_images > m->info.max_images)
        return eg_fail(err, "%s: case %s has %u images, the model takes at most %u", src, c->label,
                       c->n_images, m->info.max_images);
    return 0;
}

/* ---- cases JSON */

/* The case's images, decoded and preprocessed by the family, in the order of its parts. */
static int load_images(EgFamilyModel *m, const cJSON *parts, const char *dir, EgEvalCase *c,
                       const char *src, EgError *err) {
    const cJSON *part;
    uint32_t n = 0;
    cJSON_ArrayForEach(part, parts) n += cJSON_GetObjectItem(part, "image") != NULL;
    if (n == 0) return 0;
    size_t per = m->info.image_floats;
    c->pixels = malloc((size_t)n * per * sizeof *c->pixels);
    if (!c->pixels) return eg_fail(err, "out of host memory");
    cJSON_ArrayForEach(part, parts) {
        const cJSON *img = cJSON_GetObjectItem(part, "image");
        if (!img) continue;
        if (!cJSON_IsString(img))
            return eg_fail(err, "%s: case %s: an image part must be a file name", src, c->label);
        char path[2048];
        if (img->valuestring[0] == '/')
            snprintf(path, sizeof path, "%s", img->valuestring);
        else
            snprintf(path, sizeof path, "%s/%s", dir, img->valuestring);
        size_t len;
        char *bytes = eg_json_read_file(path, &len, err);
        if (!bytes) return eg_fail_prefix(err, "%s: case %s", src, c->label);
        EgImage im = {0};
        int rc = eg_image_decode(bytes, len, NULL, &im, err) ||
                 eg_family_preprocess(m, &im, c->pixels + c->n_images * per, NULL, NULL, err);
        eg_image_free(&im);
        free(bytes);
        if (rc) return eg_fail_prefix(err, "%s: case %s: %s", src, c->label, path);
        c->n_images++;
    }
    return 0;
}

/* The ids of the case: the reference's prompt_ids with the family's image rule, or the family's
 * prompt built from the parts. */
static int case_prompt(EgFamilyModel *m, const EgTokenizer *tok, const cJSON *obj,
                       const cJSON *parts, EgEvalCase *c, const char *src, EgError *err) {
    const cJSON *given = cJSON_GetObjectItem(obj, "prompt_ids");
    if (given) {
        int n = cJSON_IsArray(given) ? cJSON_GetArraySize(given) : -1;
        if (n <= 0)
            return eg_fail(err, "%s: case %s: prompt_ids must be a non-empty array of ids", src,
                           c->label);
        c->n = (uint32_t)n;
        c->ids = malloc((size_t)n * sizeof *c->ids);
        c->image_of = malloc((size_t)n * sizeof *c->image_of);
        if (!c->ids || !c->image_of) return eg_fail(err, "out of host memory");
        for (int t = 0; t < n; t++) {
            const cJSON *id = cJSON_GetArrayItem(given, t);
            if (!cJSON_IsNumber(id) || id->valuedouble != (double)(int32_t)id->valuedouble)
                return eg_fail(err, "%s: case %s: prompt_ids[%d] is not an integer", src, c->label,
                               t);
            c->ids[t] = (int32_t)id->valuedouble;
        }
        eg_family_image_index(m, c->ids, c->n, (int)c->n_images, c->image_of);
        return 0;
    }
    int n_parts = cJSON_GetArraySize(parts);
    EgPromptPart *pp = calloc((size_t)(n_parts ? n_parts : 1), sizeof *pp);
    if (!pp) return eg_fail(err, "out of host memory");
    int i = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, parts) {
        const cJSON *text = cJSON_GetObjectItem(part, "text");
        if (cJSON_GetObjectItem(part, "image")) {
            pp[i].kind = EG_PART_IMAGE;
        } else if (cJSON_IsString(text)) {
            pp[i].kind = EG_PART_TEXT;
            pp[i].text = text->valuestring;
            pp[i].len = strlen(text->valuestring);
        } else {
            free(pp);
            return eg_fail(err, "%s: case %s: part %d is neither {\"image\"} nor {\"text\"}", src,
                           c->label, i);
        }
        i++;
    }
    EgPrompt p = {0};
    int rc = eg_family_prompt(m, tok, pp, (size_t)n_parts, &p, err);
    free(pp);
    if (rc) return eg_fail_prefix(err, "%s: case %s", src, c->label);
    c->ids = p.ids, c->image_of = p.image_index, c->n = (uint32_t)p.n_tokens;
    return 0;
}

static int load_json(const char *path, EgFamilyModel *m, const EgTokenizer *tok, EgEvalCases *out,
                     EgError *err) {
    size_t len;
    char *text = eg_json_read_file(path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) == 0) {
        cJSON_Delete(root);
        return eg_fail(err, "%s: not a JSON array of cases", path);
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int rc = 0;
    out->cases = calloc((size_t)cJSON_GetArraySize(root), sizeof *out->cases);
    if (!out->cases) rc = eg_fail(err, "out of host memory");
    const cJSON *obj;
    cJSON_ArrayForEach(obj, root) {
        if (rc) break;
        EgEvalCase *c = &out->cases[out->n++];
        const cJSON *task = cJSON_GetObjectItem(obj, "task");
        if (cJSON_IsString(task))
            snprintf(c->label, sizeof c->label, "%zu (%.40s)", out->n - 1, task->valuestring);
        else
            snprintf(c->label, sizeof c->label, "%zu", out->n - 1);
        const cJSON *parts = cJSON_GetObjectItem(obj, "parts");
        const cJSON *expected = cJSON_GetObjectItem(obj, "expected_answer");
        const cJSON *max_new = cJSON_GetObjectItem(obj, "max_new_tokens");
        const cJSON *greedy = cJSON_GetObjectItem(obj, "greedy_ids");
        c->answer_line = 1;
        c->max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
        if (cJSON_IsArray(greedy) && cJSON_GetArraySize(greedy) > 0)
            c->max_new_tokens = (uint32_t)cJSON_GetArraySize(greedy);
        if (!cJSON_IsArray(parts)) {
            rc = eg_fail(err, "%s: case %s has no \"parts\" array", path, c->label);
        } else if (max_new && (!cJSON_IsNumber(max_new) || max_new->valuedouble < 1 ||
                               max_new->valuedouble > 4096)) {
            rc = eg_fail(err, "%s: case %s: max_new_tokens must be 1..4096", path, c->label);
        } else if (expected && !cJSON_IsString(expected)) {
            rc = eg_fail(err, "%s: case %s: expected_answer must be a string", path, c->label);
        } else {
            if (max_new) c->max_new_tokens = (uint32_t)max_new->valuedouble;
            if (expected) {
                /* the answer line: what precedes a newline, if the file wrote one */
                size_t line = strcspn(expected->valuestring, "\n");
                c->expected = strndup(expected->valuestring, line);
                if (!c->expected) rc = eg_fail(err, "out of host memory");
            }
            rc = rc || load_images(m, parts, dir, c, path, err) ||
                 case_prompt(m, tok, obj, parts, c, path, err) || check_ids(m, c, path, err);
        }
        out->positions += c->n;
    }
    cJSON_Delete(root);
    return rc ? -1 : 0;
}

/* ---- tiny-model goldens */

static int64_t *read_i64(EgTensorFile *g, const char *name, int ndim, const EgTensorView **view,
                         EgError *err) {
    const EgTensorView *t = eg_tensors_find(g, name);
    if (!t || t->ndim != ndim) {
        eg_fail(err, "%s: no %d-dimensional tensor '%s'", eg_tensors_source(g), ndim, name);
        return NULL;
    }
    int64_t *v = malloc((size_t)t->numel * sizeof *v);
    if (!v || eg_tensor_to_i64(t, v, err)) {
        free(v);
        return NULL;
    }
    *view = t;
    return v;
}

static int load_golden(const char *path, EgFamilyModel *m, EgEvalCases *out, EgError *err) {
    EgTensorFile *g = eg_tensors_open_file(path, err);
    if (!g) return -1;
    const EgTensorView *ids_v, *mask_v, *img_v, *gen_v, *text_v;
    const EgTensorView *pix_v = eg_tensors_find(g, "pixel_values");
    int64_t *ids = read_i64(g, "input_ids", 2, &ids_v, err);
    int64_t *mask = ids ? read_i64(g, "attention_mask", 2, &mask_v, err) : NULL;
    int64_t *img = mask ? read_i64(g, "image_attention_mask", 3, &img_v, err) : NULL;
    int64_t *gen = img ? read_i64(g, "generated_ids", 2, &gen_v, err) : NULL;
    int64_t *text = gen ? read_i64(g, "textonly_input_ids", 2, &text_v, err) : NULL;
    float *pix = NULL;
    int rc = text ? 0 : -1;
    int64_t B = 0, T = 0, N = 0;
    if (!rc) {
        B = ids_v->shape[0], T = ids_v->shape[1], N = img_v->shape[2];
        /* IDEFICS' layout: [B][N][3][S][S], one preprocessed image per slot */
        if (B < 1 || T < 1 || N < 1 || !pix_v || pix_v->ndim != 5 || pix_v->shape[0] != B ||
            pix_v->shape[1] != N || (size_t)(pix_v->numel / (B * N)) != m->info.image_floats ||
            mask_v->shape[0] != B || mask_v->shape[1] != T || img_v->shape[0] != B ||
            img_v->shape[1] != T || gen_v->shape[0] != B || gen_v->shape[1] < 1 ||
            gen_v->shape[1] > 4096 || text_v->shape[0] != 1 || text_v->shape[1] < 1)
            rc =
                eg_fail(err,
                        "%s: the tensors' shapes are not a golden of this model (pixel_values "
                        "[B][N][3][S][S] of %zu floats an image, masks [B][T](/[N]), generated_ids "
                        "[B][1..4096])",
                        path, m->info.image_floats);
    }
    if (!rc) {
        pix = malloc((size_t)pix_v->numel * sizeof *pix);
        if (!pix || eg_tensor_to_f32(pix_v, pix, err)) rc = -1;
    }
    if (!rc) {
        out->cases = calloc((size_t)B + 1, sizeof *out->cases);
        if (!out->cases) rc = eg_fail(err, "out of host memory");
    }
    for (int64_t b = 0; !rc && b <= B; b++) {
        EgEvalCase *c = &out->cases[out->n++];
        int64_t start = 0, n = b < B ? T : text_v->shape[1];
        while (b < B && start < T && mask[b * T + start] == 0)
            start++;
        n -= start;
        c->n = (uint32_t)n;
        c->ids = malloc((size_t)(n ? n : 1) * sizeof *c->ids);
        c->image_of = malloc((size_t)(n ? n : 1) * sizeof *c->image_of);
        c->max_new_tokens = (uint32_t)gen_v->shape[1];
        if (b < B) {
            snprintf(c->label, sizeof c->label, "row %lld", (long long)b);
            c->n_images = (uint32_t)N;
            c->pixels = malloc((size_t)N * m->info.image_floats * sizeof *c->pixels);
        } else {
            snprintf(c->label, sizeof c->label, "text-only");
        }
        if (!c->ids || !c->image_of || (b < B && !c->pixels)) {
            rc = eg_fail(err, "out of host memory");
            break;
        }
        for (int64_t t = 0; t < n; t++) {
            c->ids[t] = (int32_t)(b < B ? ids[b * T + start + t] : text[t]);
            c->image_of[t] = -1;
            for (int64_t k = 0; b < B && k < N; k++)
                if (img[(b * T + start + t) * N + k]) c->image_of[t] = (int32_t)k;
        }
        if (b < B)
            memcpy(c->pixels, pix + (size_t)b * N * m->info.image_floats,
                   (size_t)N * m->info.image_floats * sizeof *pix);
        out->positions += c->n;
        rc = check_ids(m, c, path, err);
    }
    free(ids), free(mask), free(img), free(gen), free(text), free(pix);
    eg_tensors_close(g);
    return rc;
}

int eg_eval_cases_load(const char *path, EgFamilyModel *m, const EgTokenizer *tok, EgEvalCases *out,
                       EgError *err) {
    memset(out, 0, sizeof *out);
    int rc = eg_ends_with(path, ".safetensors") ? load_golden(path, m, out, err)
                                                : load_json(path, m, tok, out, err);
    if (rc) eg_eval_cases_free(out);
    return rc;
}

void eg_eval_cases_free(EgEvalCases *c) {
    for (size_t i = 0; c->cases && i < c->n; i++) {
        free(c->cases[i].ids);
        free(c->cases[i].image_of);
        free(c->cases[i].pixels);
        free(c->cases[i].expected);
    }
    free(c->cases);
    memset(c, 0, sizeof *c);
}
