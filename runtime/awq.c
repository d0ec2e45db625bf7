#include "runtime/awq.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/half.h"
#include "runtime/json_get.h"
#include "runtime/parallel.h"
#include "runtime/quant.h"
#include "runtime/text.h"

/* Output c of a packed word sits in nibble AWQ_NIBBLE[c % 8]: the inverse of AutoAWQ's
 * AWQ_ORDER [0, 2, 4, 6, 1, 3, 5, 7] (its AWQ_REVERSE_ORDER, awq/utils/packing_utils.py). */
static const uint32_t AWQ_NIBBLE[8] = {0, 4, 1, 5, 2, 6, 3, 7};

static uint32_t awq_nibble(const int32_t *words, size_t word, uint32_t c) {
    uint32_t w;
    memcpy(&w, words + word, 4); /* the mapping guarantees no alignment */
    return (w >> (4 * AWQ_NIBBLE[c % 8])) & 15u;
}

static uint16_t awq_scale(const EgTensorView *scales, size_t i) {
    uint16_t s;
    memcpy(&s, (const unsigned char *)scales->data + 2 * i, 2);
    return s;
}

/* m = −z · s rounded to fp16: z · s is exact in fp32 (an 11-bit significand times 4 bits). */
static uint16_t awq_min(uint32_t z, uint16_t s) {
    return eg_f32_to_f16(-(float)z * eg_f16_to_f32(s));
}

int eg_awq_config_read(const char *config_path, EgAwqConfig *out, EgError *err) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = eg_json_read_file(config_path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return eg_fail(err, "%s: not valid JSON", config_path);
    EgJsonCtx c = {.src = config_path, .prefix = "quantization_config.", .err = err};
    EgJsonCtx top = {.src = config_path, .prefix = "", .err = err};
    const cJSON *q = NULL;
    const char *method = NULL, *version = "gemm";
    int bits = 4, group = 128, zero_point = 1, rc = -1;
    if (eg_json_object(&top, root, "quantization_config", &q)) goto done;
    if (!q) {
        rc = 0;
        goto done;
    }
    if (eg_json_string(&c, q, "quant_method", &method)) goto done;
    if (!method) {
        eg_fail(err, "%s: quantization_config has no quant_method (this build reads \"awq\")",
                config_path);
        goto done;
    }
    if (strcasecmp(method, "awq") != 0) {
        eg_fail(err,
                "%s: quantization_config.quant_method '%s' is not one this build reads (awq; "
                "or a folder written by `egret quantize`)",
                config_path, method);
        goto done;
    }
    if (eg_json_int(&c, q, "bits", &bits) || eg_json_int(&c, q, "group_size", &group) ||
        eg_json_bool(&c, q, "zero_point", &zero_point) ||
        eg_json_string(&c, q, "version", &version))
        goto done;
    if (bits != 4)
        eg_fail(err, "%s: AWQ with %d bits: this build reads 4-bit AWQ only", config_path, bits);
    else if (strcasecmp(version, "gemm") != 0)
        eg_fail(err,
                "%s: AWQ version '%s': this build reads AutoAWQ's \"gemm\" packing only (gemv, "
                "gemv_fast, marlin and exllama pack the values differently)",
                config_path, version);
    /* AutoAWQ's WQLinear_GEMM.from_linear asserts zero points: a "gemm" checkpoint without them
     * would be some other tool's, whose layout nothing documents */
    else if (!zero_point)
        eg_fail(err,
                "%s: AWQ with zero_point false: AutoAWQ's gemm packing always has zero points; "
                "this build reads those only",
                config_path);
    else if (group != -1 && (group <= 0 || group % EG_QUANT_BLOCK != 0))
        eg_fail(err,
                "%s: AWQ group_size %d: this build reads groups of a multiple of %d inputs (or -1, "
                "whole rows)",
                config_path, group, EG_QUANT_BLOCK);
    else {
        out->present = 1;
        out->group_size = group;
        rc = 0;
    }
done:
    cJSON_Delete(root);
    return rc;
}

/* "<prefix><suffix>" looked up in tf. */
static const EgTensorView *find_part(const EgTensorFile *tf, const char *prefix, size_t plen,
                                     const char *suffix) {
    char name[512];
    size_t slen = strlen(suffix);
    if (plen + slen >= sizeof name) return NULL;
    memcpy(name, prefix, plen);
    memcpy(name + plen, suffix, slen + 1);
    return eg_tensors_find(tf, name);
}

int eg_awq_find(const EgTensorFile *tf, const char *weight_name, EgAwqLinear *out) {
    memset(out, 0, sizeof *out);
    if (!eg_ends_with(weight_name, ".weight")) return 0;
    size_t plen = strlen(weight_name) - strlen("weight");
    out->qweight = find_part(tf, weight_name, plen, "qweight");
    if (!out->qweight) return 0;
    out->qzeros = find_part(tf, weight_name, plen, "qzeros");
    out->scales = find_part(tf, weight_name, plen, "scales");
    return 1;
}

int eg_awq_any(const EgTensorFile *tf) {
    for (int i = 0; i < eg_tensors_count(tf); i++)
        if (eg_ends_with(eg_tensors_at(tf, i)->name, ".qweight")) return 1;
    return 0;
}

static int shape_is(const EgTensorView *t, EgDType dt, int64_t d0, int64_t d1) {
    return t->dtype == dt && t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1 &&
           t->quant == EG_WEIGHTS_DENSE;
}

static int bad_shape(const EgTensorView *t, EgDType dt, int64_t d0, int64_t d1, const char *what,
                     EgError *err) {
    return eg_fail(err, "AWQ tensor '%s' in %s must be %s [%lld, %lld] (%s), not %s [%lld%s%lld]",
                   t->name, t->file, eg_dtype_name(dt), (long long)d0, (long long)d1, what,
                   eg_dtype_name(t->dtype), t->ndim > 0 ? (long long)t->shape[0] : 0LL,
                   t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL);
}

/* The three tensors' presence, dtypes and shapes for rows × cols, with group size g
 * (0: implied by the scales' shape). */
static int check_shapes(const EgAwqLinear *a, uint32_t rows, uint32_t cols, int g, EgError *err) {
    const char *missing = !a->qzeros ? "qzeros" : !a->scales ? "scales" : NULL;
    if (missing)
        return eg_fail(err, "AWQ tensor '%s' in %s has no '%s' beside it", a->qweight->name,
                       a->qweight->file, missing);
    if (rows % 8 != 0)
        return eg_fail(err, "AWQ tensor '%s' in %s: %u outputs is not a multiple of 8",
                       a->qweight->name, a->qweight->file, rows);
    if (!shape_is(a->qweight, EG_DT_I32, cols, rows / 8))
        return bad_shape(a->qweight, EG_DT_I32, cols, rows / 8, "[in, out/8]", err);
    if (g == 0 && a->scales->ndim == 2 && a->scales->shape[0] > 0 &&
        cols % a->scales->shape[0] == 0)
        g = (int)(cols / a->scales->shape[0]);
    if (g == -1) g = (int)cols;
    if (g <= 0 || g % EG_QUANT_BLOCK != 0 || cols % (uint32_t)g != 0)
        return eg_fail(err,
                       "AWQ tensor '%s' in %s: group size %d does not divide its %u inputs in "
                       "groups of a multiple of %d",
                       a->scales->name, a->scales->file, g, cols, EG_QUANT_BLOCK);
    if (!shape_is(a->scales, EG_DT_F16, cols / g, rows))
        return bad_shape(a->scales, EG_DT_F16, cols / g, rows, "[in/group, out]", err);
    if (!shape_is(a->qzeros, EG_DT_I32, cols / g, rows / 8))
        return bad_shape(a->qzeros, EG_DT_I32, cols / g, rows / 8, "[in/group, out/8]", err);
    return 0;
}

int eg_awq_check(const EgAwqLinear *a, uint32_t rows, uint32_t cols, int group_size, EgError *err) {
    if (check_shapes(a, rows, cols, group_size, err)) return -1;
    int64_t groups = a->scales->shape[0];
    const int32_t *zeros = a->qzeros->data;
    for (int64_t g = 0; g < groups; g++)
        for (uint32_t o = 0; o < rows; o++) {
            uint16_t s = awq_scale(a->scales, (size_t)g * rows + o);
            uint32_t z = awq_nibble(zeros, (size_t)g * (rows / 8) + o / 8, o);
            const char *bad = !isfinite(eg_f16_to_f32(s))               ? "is not finite"
                              : !isfinite(eg_f16_to_f32(awq_min(z, s))) ? "times its zero point "
                                                                          "overflows fp16"
                                                                        : NULL;
            if (bad)
                return eg_fail(err,
                               "AWQ tensor '%s' in %s: output row %u, group %lld (inputs "
                               "%lld..): its scale %g %s",
                               a->scales->name, a->scales->file, o, (long long)g,
                               (long long)(g * (cols / groups)), (double)eg_f16_to_f32(s), bad);
        }
    return 0;
}

int eg_awq_folder_check(const EgTensorFile *tf, const EgAwqConfig *cfg, EgError *err) {
    int seen = 0;
    for (int i = 0; i < eg_tensors_count(tf); i++) {
        const EgTensorView *t = eg_tensors_at(tf, i);
        if (!eg_ends_with(t->name, ".qweight")) continue;
        if (!cfg->present)
            return eg_fail(err,
                           "%s: tensor '%s' looks like an AWQ checkpoint's, but config.json has "
                           "no AWQ quantization_config",
                           eg_tensors_source(tf), t->name);
        EgAwqLinear a = {.qweight = t};
        size_t plen = strlen(t->name) - strlen("qweight");
        a.qzeros = find_part(tf, t->name, plen, "qzeros");
        a.scales = find_part(tf, t->name, plen, "scales");
        /* the logical shape comes from the tensors themselves here; the model's loader checks
         * it against what it expects */
        int64_t cols = t->ndim == 2 ? t->shape[0] : 0, rows = t->ndim == 2 ? 8 * t->shape[1] : 0;
        if (cols <= 0 || rows <= 0 || cols > UINT32_MAX || rows > UINT32_MAX)
            return bad_shape(t, EG_DT_I32, cols, rows / 8, "[in, out/8]", err);
        if (check_shapes(&a, (uint32_t)rows, (uint32_t)cols, cfg->group_size, err)) return -1;
        seen++;
    }
    if (cfg->present && !seen)
        return eg_fail(err,
                       "%s: config.json's quantization_config says AWQ, but no tensor is an AWQ "
                       "qweight",
                       eg_tensors_source(tf));
    return 0;
}

/* Outputs [8·j0, 8·j1) of an AWQ Linear: one packed word column (8 outputs) at a time, each
 * word of qweight read once and its nibbles spread over the 8 outputs' values (reading output
 * rows one by one would read every word 8 times, at a stride of a qweight row). */
typedef struct ConvertPart {
    const EgAwqLinear *a;
    uint32_t rows, cols, j0, j1;
    uint32_t *dst;
    uint8_t *q; /* 8 · cols bytes: the 8 outputs' values, output by output */
} ConvertPart;

static void *convert_part(void *arg) {
    const ConvertPart *p = arg;
    const int32_t *qweight = p->a->qweight->data, *zeros = p->a->qzeros->data;
    uint32_t rows = p->rows, cols = p->cols, words = rows / 8;
    uint32_t group = cols / (uint32_t)p->a->scales->shape[0];
    size_t row_words = eg_quant_row_words(EG_WEIGHTS_Q4, cols);
    uint8_t *q = p->q;
    for (uint32_t j = p->j0; j < p->j1; j++) {
        for (uint32_t k = 0; k < cols; k++) {
            uint32_t w;
            memcpy(&w, qweight + (size_t)k * words + j, 4);
            for (uint32_t c = 0; c < 8; c++)
                q[(size_t)c * cols + k] = (uint8_t)((w >> (4 * AWQ_NIBBLE[c])) & 15u);
        }
        for (uint32_t c = 0; c < 8; c++) {
            uint32_t o = 8 * j + c, *row = p->dst + (size_t)o * row_words;
            memset(row, 0, row_words * 4);
            for (uint32_t b = 0; b < cols / EG_QUANT_BLOCK; b++) {
                uint32_t g = b * EG_QUANT_BLOCK / group;
                uint16_t s = awq_scale(p->a->scales, (size_t)g * rows + o);
                uint32_t z = awq_nibble(zeros, (size_t)g * words + j, c);
                eg_q4_pack_block(row, b, s, awq_min(z, s),
                                 q + (size_t)c * cols + (size_t)b * EG_QUANT_BLOCK);
            }
        }
    }
    return NULL;
}

int eg_awq_to_q4(const EgAwqLinear *a, uint32_t rows, uint32_t cols, uint32_t *dst, EgError *err) {
    uint32_t words = rows / 8;
    /* parts of at least 16 word columns (128 outputs) */
    int n = eg_online_cores(EG_PARALLEL_MAX);
    if ((uint32_t)n > (words + 15) / 16) n = (int)((words + 15) / 16);
    if (n < 1) n = 1;
    uint8_t *q = malloc((size_t)8 * cols * (size_t)n);
    if (!q) return eg_fail(err, "out of host memory");
    ConvertPart parts[EG_PARALLEL_MAX];
    for (int i = 0; i < n; i++)
        parts[i] =
            (ConvertPart){.a = a,
                          .rows = rows,
                          .cols = cols,
                          .j0 = (uint32_t)((uint64_t)words * (uint64_t)i / (uint64_t)n),
                          .j1 = (uint32_t)((uint64_t)words * (uint64_t)(i + 1) / (uint64_t)n),
                          .dst = dst,
                          .q = q + (size_t)8 * cols * (size_t)i};
    eg_parallel_run(convert_part, parts, sizeof parts[0], n);
    free(q);
    return 0;
}

void eg_awq_memory(EgAwqMemory *m, const int32_t *qweight, const int32_t *qzeros,
                   const uint16_t *scales, uint32_t rows, uint32_t cols, uint32_t group) {
    m->qweight = (EgTensorView){.name = "w.qweight",
                                .dtype = EG_DT_I32,
                                .ndim = 2,
                                .shape = {cols, rows / 8},
                                .data = qweight,
                                .file = "memory"};
    m->qzeros = (EgTensorView){.name = "w.qzeros",
                               .dtype = EG_DT_I32,
                               .ndim = 2,
                               .shape = {cols / group, rows / 8},
                               .data = qzeros,
                               .file = "memory"};
    m->scales = (EgTensorView){.name = "w.scales",
                               .dtype = EG_DT_F16,
                               .ndim = 2,
                               .shape = {cols / group, rows},
                               .data = scales,
                               .file = "memory"};
    m->linear = (EgAwqLinear){&m->qweight, &m->qzeros, &m->scales};
}
