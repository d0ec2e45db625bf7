#include "runtime/weight_loader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "runtime/awq.h"
#include "runtime/quant_file.h"

enum { NAME_MAX_LEN = 256 };

/* Declares char name[] holding the variadic function's printf-style tensor name. */
#define FORMAT_NAME(name, fmt)                                                                     \
    char name[NAME_MAX_LEN];                                                                       \
    do {                                                                                           \
        va_list ap_;                                                                               \
        va_start(ap_, fmt);                                                                        \
        vsnprintf(name, sizeof name, fmt, ap_);                                                    \
        va_end(ap_);                                                                               \
    } while (0)

const char *eg_weight_group_name(EgWeightGroup g) {
    static const char *const names[EG_WEIGHT_GROUP_COUNT] = {
        "vision projections", "text projections", "embeddings", "lm_head", "norms/biases/gates"};
    return g >= 0 && g < EG_WEIGHT_GROUP_COUNT ? names[g] : "?";
}

void eg_weight_group_format(const EgWeightReport *r, EgWeightGroup g, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int f = EG_WEIGHTS_DENSE; f <= EG_WEIGHTS_Q4 && len < cap; f++) {
        if (!(r->group[g].formats >> f & 1)) continue;
        const char *name = f == EG_WEIGHTS_DENSE ? (r->fp32 ? "fp32" : "fp16")
                                                 : eg_weight_format_name((EgWeightFormat)f);
        int n = snprintf(out + len, cap - len, "%s%s", len ? "+" : "", name);
        len += n > 0 ? (size_t)n : 0;
    }
}

uint64_t eg_weight_report_bytes(const EgWeightReport *r) {
    uint64_t total = 0;
    for (int g = 0; g < EG_WEIGHT_GROUP_COUNT; g++)
        total += r->group[g].bytes;
    return total;
}

/* Adds what the arena grew by since `before` (the allocation's real size, rounding included)
 * and `tensors` tensors in format f to group g. */
static void count(EgWeightLoader *L, EgWeightGroup g, EgWeightFormat f, VkDeviceSize before,
                  int tensors) {
    if (!L->report || L->check_only) return;
    L->report->group[g].bytes += L->arena->bytes_used - before;
    L->report->group[g].tensors += (uint32_t)tensors;
    L->report->group[g].formats |= 1u << f;
    L->report->fp32 = L->ops->elem == 4;
}

static EgWeightGroup buffer_group(const EgWeightLoader *L) {
    return L->group == EG_WEIGHT_GROUP_EMBEDDINGS ? L->group : EG_WEIGHT_GROUP_OTHER;
}

static VkDeviceSize arena_bytes(const EgWeightLoader *L) {
    return L->check_only ? 0 : L->arena->bytes_used;
}

/* The tensor `name` of `shape`, which goes into the device as `format`. */
static int expect_named(EgWeightLoader *L, const char *name, int ndim, const int64_t *shape,
                        EgWeightFormat format, const EgTensorView **t) {
    if (eg_tensors_expect(L->tf, name, ndim, shape, t, L->err)) return -1;
    const EgTensorView *v = *t;
    if (v->quant != EG_WEIGHTS_DENSE && v->quant != format) {
        if (format == EG_WEIGHTS_DENSE)
            return eg_fail(L->err,
                           "tensor '%s' in %s is stored quantized (%s), but this model keeps it "
                           "in fp16/fp32 (docs/quantization.md)",
                           name, v->file, eg_weight_format_name(v->quant));
        return eg_fail(L->err, "tensor '%s' in %s is stored as %s, the model loads %s", name,
                       v->file, eg_weight_format_name(v->quant), eg_weight_format_name(format));
    }
    if (eg_quant_file_check_scales(v, L->err)) return -1;
    if (L->visit && L->visit(L->visit_ctx, v, format, L->err)) return -1;
    L->n_tensors++;
    return 0;
}

/* The AWQ quantization_config of the folder tf was opened from (none for a single file or
 * random weights: no config.json beside them), and every AWQ tensor checked against it. */
static int awq_folder(const EgTensorFile *tf, EgAwqConfig *awq, EgError *err) {
    const char *dir = eg_tensors_source(tf);
    struct stat st;
    char path[1200];
    awq->present = 0;
    if (!eg_tensors_is_random(tf) && dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (stat(path, &st) == 0 && eg_awq_config_read(path, awq, err)) return -1;
    }
    return eg_awq_folder_check(tf, awq, err);
}

int eg_weight_loader_quant(const EgTensorFile *tf, EgWeightFormat requested, EgWeightFormat *out,
                           EgError *err) {
    EgAwqConfig awq;
    if (awq_folder(tf, &awq, err)) return -1;
    const EgTensorView *first = NULL;
    for (int i = 0; i < eg_tensors_count(tf); i++) {
        const EgTensorView *t = eg_tensors_at(tf, i);
        if (t->quant == EG_WEIGHTS_DENSE) continue;
        if (first && t->quant != first->quant)
            return eg_fail(err, "%s: tensors quantized in two formats ('%s' %s, '%s' %s)",
                           eg_tensors_source(tf), first->name, eg_weight_format_name(first->quant),
                           t->name, eg_weight_format_name(t->quant));
        if (!first) first = t;
    }
    *out = requested;
    if (awq.present) {
        if (first)
            return eg_fail(err, "%s: AWQ tensors and tensors quantized by Egret ('%s') together",
                           eg_tensors_source(tf), first->name);
        /* AWQ's 4 bits load as q4 as they are; q8 would need dequantizing and requantizing */
        if (requested != EG_WEIGHTS_DENSE && requested != EG_WEIGHTS_Q4)
            return eg_fail(err,
                           "%s holds AWQ int4 weights (config.json's quantization_config), which "
                           "load as q4; --quant %s asks for another format (leave --quant out)",
                           eg_tensors_source(tf), eg_weight_format_name(requested));
        *out = EG_WEIGHTS_Q4;
        return 0;
    }
    if (!first) return 0;
    /* requantizing would compound two roundings, dequantizing would not restore the weights */
    if (requested != EG_WEIGHTS_DENSE && requested != first->quant)
        return eg_fail(err,
                       "%s holds weights quantized as %s; --quant %s asks for another format "
                       "(leave --quant out, or quantize the original checkpoint as %s)",
                       eg_tensors_source(tf), eg_weight_format_name(first->quant),
                       eg_weight_format_name(requested), eg_weight_format_name(requested));
    *out = first->quant;
    return 0;
}

int eg_load_expect(EgWeightLoader *L, const EgTensorView **t, int ndim, const int64_t *shape,
                   const char *fmt, ...) {
    FORMAT_NAME(name, fmt);
    return expect_named(L, name, ndim, shape, EG_WEIGHTS_DENSE, t);
}

static int buffer_named(EgWeightLoader *L, EgBuffer *out, int ndim, const int64_t *shape,
                        const char *name) {
    const EgTensorView *t;
    if (expect_named(L, name, ndim, shape, EG_WEIGHTS_DENSE, &t)) return -1;
    if (L->check_only) return 0;
    VkDeviceSize before = arena_bytes(L);
    if (eg_tensor_buffer(L->ops, L->arena, (size_t)t->numel, out, L->err) ||
        eg_upload_view(L->ops, L->staging, out, 0, t, 0, t->numel, L->err))
        return eg_fail_prefix(L->err, "%s", name);
    count(L, buffer_group(L), EG_WEIGHTS_DENSE, before, 1);
    return 0;
}

int eg_load_buffer(EgWeightLoader *L, EgBuffer *out, int ndim, const int64_t *shape,
                   const char *fmt, ...) {
    FORMAT_NAME(name, fmt);
    return buffer_named(L, out, ndim, shape, name);
}

int eg_load_vector(EgWeightLoader *L, EgBuffer *out, int64_t n, const char *fmt, ...) {
    FORMAT_NAME(name, fmt);
    return buffer_named(L, out, 1, &n, name);
}

int eg_load_row_buffers(EgWeightLoader *L, EgBuffer *rows, const int64_t *shape, const char *fmt,
                        ...) {
    FORMAT_NAME(name, fmt);
    const EgTensorView *t;
    if (expect_named(L, name, 2, shape, EG_WEIGHTS_DENSE, &t)) return -1;
    if (L->check_only) return 0;
    VkDeviceSize before = arena_bytes(L);
    for (int64_t r = 0; r < shape[0]; r++)
        if (eg_tensor_buffer(L->ops, L->arena, (size_t)shape[1], &rows[r], L->err) ||
            eg_upload_view(L->ops, L->staging, &rows[r], 0, t, r * shape[1], shape[1], L->err))
            return eg_fail_prefix(L->err, "%s", name);
    count(L, buffer_group(L), EG_WEIGHTS_DENSE, before, 1);
    return 0;
}

int eg_load_vectors(EgWeightLoader *L, EgBuffer *out, int64_t n_each, int n,
                    const char *const *suffixes, const char *prefix) {
    VkDeviceSize before = arena_bytes(L);
    if (!L->check_only && eg_tensor_buffer(L->ops, L->arena, (size_t)(n_each * n), out, L->err))
        return eg_fail_prefix(L->err, "%s%s", prefix, suffixes[0]);
    for (int i = 0; i < n; i++) {
        const EgTensorView *t;
        if (eg_load_expect(L, &t, 1, &n_each, "%s%s", prefix, suffixes[i])) return -1;
        if (!L->check_only &&
            eg_upload_view(L->ops, L->staging, out, (size_t)(i * n_each), t, 0, n_each, L->err))
            return eg_fail_prefix(L->err, "%s%s", prefix, suffixes[i]);
    }
    count(L, buffer_group(L), EG_WEIGHTS_DENSE, before, n);
    return 0;
}

int eg_load_scalar(EgWeightLoader *L, float *out, const char *fmt, ...) {
    FORMAT_NAME(name, fmt);
    int64_t one = 1;
    const EgTensorView *t;
    return expect_named(L, name, 1, &one, EG_WEIGHTS_DENSE, &t) || eg_tensor_to_f32(t, out, L->err)
               ? -1
               : 0;
}

/* Part i of a matrix stored as AWQ (runtime/awq.h), going into rows row0.. of m: checked,
 * converted to q4 rows on the host and uploaded as a pre-quantized tensor would be. */
static int load_awq(EgWeightLoader *L, EgMatrix *m, uint32_t row0, uint32_t rows, uint32_t cols,
                    const char *name, const EgAwqLinear *a) {
    if (eg_awq_check(a, rows, cols, 0, L->err)) return eg_fail_prefix(L->err, "%s", name);
    /* egret quantize keeps pointers to the checkpoint's own tensors: AWQ's are not q4 rows */
    if (L->visit)
        return eg_fail(L->err,
                       "%s: '%s' is stored as AWQ int4: such a folder loads as q4 as it is "
                       "(serve it; egret quantize does not rewrite it)",
                       eg_tensors_source(L->tf), name);
    L->n_tensors += 3;
    /* a plan (runtime/vk_context.h) allocates but uploads nothing: no rows to convert */
    if (L->check_only || L->staging->arena.vk->plan_only) return 0;
    size_t row_bytes = 4 * eg_quant_row_words(EG_WEIGHTS_Q4, cols);
    uint32_t *q4 = malloc(rows * row_bytes + 4);
    if (!q4) return eg_fail(L->err, "%s: out of host memory", name);
    if (eg_awq_to_q4(a, rows, cols, q4, L->err)) {
        free(q4);
        return eg_fail_prefix(L->err, "%s", name);
    }
    EgTensorView v = {.name = name,
                      .dtype = EG_DT_U8,
                      .ndim = 2,
                      .shape = {rows, (int64_t)row_bytes},
                      .numel = (int64_t)(rows * row_bytes),
                      .data = q4,
                      .nbytes = rows * row_bytes,
                      .file = a->qweight->file,
                      .quant = EG_WEIGHTS_Q4,
                      .quant_cols = cols};
    int rc = eg_matrix_upload_view(L->ops, L->staging, m, row0, &v, L->err);
    free(q4);
    return rc;
}

/* Which of the n parts are stored as AWQ (awq[i]); the matrix's format is q4 when they are,
 * and `format` otherwise, except that in an AWQ folder the projections it keeps dense
 * (modules_to_not_convert) stay dense. Parts of one matrix stored both ways are refused. */
static int awq_parts(EgWeightLoader *L, EgWeightFormat *format, int n, const uint32_t *rows,
                     const char *const *names, EgAwqLinear *awq) {
    int found = -1, dense = -1;
    for (int i = 0; i < n; i++) {
        if (!rows[i]) continue;
        if (eg_awq_find(L->tf, names[i], &awq[i]))
            found = found < 0 ? i : found;
        else
            dense = dense < 0 ? i : dense;
    }
    if (found < 0) {
        if (*format == EG_WEIGHTS_Q4 && eg_awq_any(L->tf)) *format = EG_WEIGHTS_DENSE;
        return 0;
    }
    if (dense >= 0)
        return eg_fail(L->err, "%s: '%s' is stored as AWQ and '%s' is not, in one matrix",
                       eg_tensors_source(L->tf), names[found], names[dense]);
    if (*format != EG_WEIGHTS_Q4)
        return eg_fail(L->err,
                       "tensor '%s' in %s is stored as AWQ int4, but this model loads it %s "
                       "(docs/quantization.md)",
                       awq[found].qweight->name, awq[found].qweight->file,
                       *format == EG_WEIGHTS_DENSE ? "in fp16/fp32" : "as q8");
    return 0;
}

int eg_load_rows(EgWeightLoader *L, EgMatrix *m, EgWeightFormat format, uint32_t cols, int n,
                 const uint32_t *rows, const char *const *names) {
    enum { MAX_PARTS = 8 };
    EgAwqLinear awq[MAX_PARTS] = {0};
    if (n > MAX_PARTS) return eg_fail(L->err, "%s: %d tensors in one matrix", names[0], n);
    if (awq_parts(L, &format, n, rows, names, awq)) return -1;
    uint32_t total = 0;
    for (int i = 0; i < n; i++)
        total += rows[i];
    VkDeviceSize before = arena_bytes(L);
    if (!L->check_only &&
        eg_matrix_create_format(L->ops, L->arena, total, cols, 0, format, m, L->err))
        return eg_fail_prefix(L->err, "%s", names[0]);
    for (int i = 0, row0 = 0; i < n; row0 += (int)rows[i++]) {
        if (!rows[i]) continue;
        if (awq[i].qweight) {
            if (load_awq(L, m, (uint32_t)row0, rows[i], cols, names[i], &awq[i])) return -1;
            continue;
        }
        int64_t shape[2] = {rows[i], cols};
        const EgTensorView *t;
        if (expect_named(L, names[i], 2, shape, format, &t) ||
            (!L->check_only &&
             eg_matrix_upload_view(L->ops, L->staging, m, (uint32_t)row0, t, L->err)))
            return -1;
    }
    int tensors = 0;
    for (int i = 0; i < n; i++)
        tensors += rows[i] != 0;
    count(L, L->group, format, before, tensors);
    return 0;
}

int eg_load_stacked(EgWeightLoader *L, EgMatrix *m, uint32_t rows_each, uint32_t cols, int n,
                    const char *const *suffixes, const char *prefix) {
    enum { MAX_STACKED = 4 };
    char names[MAX_STACKED][NAME_MAX_LEN];
    const char *ptrs[MAX_STACKED];
    uint32_t rows[MAX_STACKED];
    if (n > MAX_STACKED) return eg_fail(L->err, "%s: %d tensors stacked", prefix, n);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s%s", prefix, suffixes[i]);
        ptrs[i] = names[i];
        rows[i] = rows_each;
    }
    return eg_load_rows(L, m, L->quant, cols, n, rows, ptrs);
}

int eg_load_matrix(EgWeightLoader *L, EgMatrix *m, uint32_t rows, uint32_t cols, const char *fmt,
                   ...) {
    FORMAT_NAME(name, fmt);
    const char *one = name;
    return eg_load_rows(L, m, L->quant, cols, 1, &rows, &one);
}

int eg_load_matrix_shaped(EgWeightLoader *L, EgMatrix *m, uint32_t rows, uint32_t cols, int ndim,
                          const int64_t *shape, const char *fmt, ...) {
    FORMAT_NAME(name, fmt);
    const EgTensorView *t;
    if (expect_named(L, name, ndim, shape, EG_WEIGHTS_DENSE, &t)) return -1;
    if (L->check_only) return 0;
    VkDeviceSize before = arena_bytes(L);
    if (eg_matrix_create(L->ops, L->arena, rows, cols, 0, m, L->err) ||
        eg_matrix_upload_view(L->ops, L->staging, m, 0, t, L->err))
        return eg_fail_prefix(L->err, "%s", name);
    count(L, L->group, EG_WEIGHTS_DENSE, before, 1);
    return 0;
}
