#include "runtime/quant_file.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eg_quant_file_describe(EgWeightFormat f, int64_t rows, int64_t cols, char *out, size_t cap) {
    snprintf(out, cap, "%s [%" PRId64 ", %" PRId64 "]", eg_weight_format_name(f), rows, cols);
}

/* "1", "2", ...: a positive whole number written as digits only. */
static int parse_version(const char *s, long *out) {
    char *end;
    if (*s < '1' || *s > '9') return -1;
    *out = strtol(s, &end, 10);
    return *end ? -1 : 0;
}

static EgTensorView *find_view(EgTensorView *views, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(views[i].name, name)) return &views[i];
    return NULL;
}

/* One "egret.quant.<name>" entry: its value parsed and its tensor checked and marked. */
static int mark_one(const cJSON *e, const char *path, EgTensorView *views, int n, EgError *err) {
    const char *name = e->string + strlen(EG_QUANT_FILE_TENSOR_PREFIX);
    if (!cJSON_IsString(e))
        return eg_fail(err, "%s: metadata '%s' is not a string", path, e->string);
    char fmt[16];
    long long rows, cols;
    char tail;
    if (sscanf(e->valuestring, "%15s [%lld, %lld%c", fmt, &rows, &cols, &tail) != 4 ||
        tail != ']' || rows < 0 || cols <= 0 || cols > UINT32_MAX)
        return eg_fail(err, "%s: tensor '%s': quantization '%s' is not \"FORMAT [rows, cols]\"",
                       path, name, e->valuestring);
    EgWeightFormat f;
    if (strcmp(fmt, "q8") == 0)
        f = EG_WEIGHTS_Q8;
    else if (strcmp(fmt, "q4") == 0)
        f = EG_WEIGHTS_Q4;
    else
        return eg_fail(err,
                       "%s: tensor '%s': unknown quantized format '%s' (this build reads q8, q4)",
                       path, name, fmt);
    EgTensorView *t = find_view(views, n, name);
    if (!t)
        return eg_fail(err, "%s: metadata names quantized tensor '%s', which the file lacks", path,
                       name);
    int64_t row_bytes = 4 * (int64_t)eg_quant_row_words(f, (uint32_t)cols);
    if (t->dtype != EG_DT_U8 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != row_bytes)
        return eg_fail(err,
                       "%s: tensor '%s': %s [%lld, %lld] must be stored as U8 [%lld, %lld], not "
                       "%s [%lld, %lld%s] (%zu bytes)",
                       path, name, fmt, rows, cols, rows, (long long)row_bytes,
                       eg_dtype_name(t->dtype), (long long)t->shape[0], (long long)t->shape[1],
                       t->ndim > 2 ? ", ..." : "", t->nbytes);
    t->quant = f;
    t->quant_cols = cols;
    return 0;
}

int eg_quant_file_mark(const cJSON *meta, const char *path, EgTensorView *views, int n,
                       EgError *err) {
    if (!cJSON_IsObject(meta)) return 0;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(meta, EG_QUANT_FILE_VERSION_KEY);
    long v = 0;
    if (version && (!cJSON_IsString(version) || parse_version(version->valuestring, &v)))
        return eg_fail(err, "%s: metadata '%s' is not a version number", path,
                       EG_QUANT_FILE_VERSION_KEY);
    if (v > EG_QUANT_FILE_VERSION)
        return eg_fail(err,
                       "%s: written by a newer Egret (quantized format version %ld; this build "
                       "reads version %d): update Egret or quantize the original checkpoint again",
                       path, v, EG_QUANT_FILE_VERSION);
    const size_t plen = strlen(EG_QUANT_FILE_TENSOR_PREFIX);
    for (const cJSON *e = meta->child; e; e = e->next) {
        if (strncmp(e->string, EG_QUANT_FILE_TENSOR_PREFIX, plen) != 0) continue;
        if (!version)
            return eg_fail(err, "%s: quantized tensors without a '%s' in the metadata", path,
                           EG_QUANT_FILE_VERSION_KEY);
        if (mark_one(e, path, views, n, err)) return -1;
    }
    return 0;
}

int eg_quant_file_check_scales(const EgTensorView *t, EgError *err) {
    if (t->quant != EG_WEIGHTS_Q8 && t->quant != EG_WEIGHTS_Q4) return 0;
    const unsigned char *data = t->data;
    size_t row_bytes = (size_t)t->shape[1];
    for (int64_t r = 0; r < t->shape[0]; r++) {
        long b =
            eg_quant_row_bad_scale(t->quant, data + (size_t)r * row_bytes, (uint32_t)t->quant_cols);
        if (b >= 0)
            return eg_fail(err,
                           "tensor '%s' in %s: row %lld, block %ld (weights %ld..): its %s scale "
                           "is not finite (NaN or infinite)",
                           t->name, t->file, (long long)r, b, b * EG_QUANT_BLOCK,
                           eg_weight_format_name(t->quant));
    }
    return 0;
}
