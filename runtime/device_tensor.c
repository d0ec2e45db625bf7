#include "runtime/device_tensor.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/half.h"
#include "runtime/quant.h"

/* Elements converted per staging round trip. */
#define CONVERT_CHUNK (1u << 20)

int eg_tensor_buffer(const EgOps *ops, EgArena *arena, size_t n, EgBuffer *out, EgError *err) {
    return eg_buffer_create(arena, (VkDeviceSize)n * ops->elem, out, err);
}

int eg_upload_f32(const EgOps *ops, EgStaging *st, const EgBuffer *dst, size_t dst_off,
                  const float *src, size_t n, EgError *err) {
    if (!ops->f16)
        return eg_upload(st, dst, (VkDeviceSize)dst_off * 4, src, (VkDeviceSize)n * 4, err);
    uint16_t *tmp = malloc((n < CONVERT_CHUNK ? n : CONVERT_CHUNK) * sizeof *tmp + 2);
    if (!tmp) return eg_fail(err, "out of host memory");
    int rc = 0;
    for (size_t done = 0; done < n && rc == 0;) {
        size_t k = n - done < CONVERT_CHUNK ? n - done : CONVERT_CHUNK;
        for (size_t i = 0; i < k; i++)
            tmp[i] = eg_f32_to_f16(src[done + i]);
        rc = eg_upload(st, dst, (VkDeviceSize)(dst_off + done) * 2, tmp, (VkDeviceSize)k * 2, err);
        done += k;
    }
    free(tmp);
    return rc;
}

int eg_download_f32(const EgOps *ops, EgStaging *st, const EgBuffer *src, size_t src_off,
                    float *dst, size_t n, EgError *err) {
    if (!ops->f16)
        return eg_download(st, src, (VkDeviceSize)src_off * 4, dst, (VkDeviceSize)n * 4, err);
    uint16_t *tmp = malloc((n < CONVERT_CHUNK ? n : CONVERT_CHUNK) * sizeof *tmp + 2);
    if (!tmp) return eg_fail(err, "out of host memory");
    int rc = 0;
    for (size_t done = 0; done < n && rc == 0;) {
        size_t k = n - done < CONVERT_CHUNK ? n - done : CONVERT_CHUNK;
        rc =
            eg_download(st, src, (VkDeviceSize)(src_off + done) * 2, tmp, (VkDeviceSize)k * 2, err);
        for (size_t i = 0; i < k && rc == 0; i++)
            dst[done + i] = eg_f16_to_f32(tmp[i]);
        done += k;
    }
    free(tmp);
    return rc;
}

int eg_upload_view(const EgOps *ops, EgStaging *st, const EgBuffer *dst, size_t dst_off,
                   const EgTensorView *t, int64_t first, int64_t n, EgError *err) {
    if (st->arena.vk->plan_only) return 0; /* a dry run: generating or converting is wasted */
    size_t cap = (size_t)(n < CONVERT_CHUNK ? n : CONVERT_CHUNK);
    void *tmp = malloc(cap * ops->elem + 4);
    if (!tmp) return eg_fail(err, "out of host memory");
    int rc = 0;
    for (int64_t done = 0; done < n && rc == 0;) {
        int64_t k = n - done < (int64_t)cap ? n - done : (int64_t)cap;
        rc = ops->f16 ? eg_tensor_range_to_f16(t, first + done, k, tmp, err)
                      : eg_tensor_range_to_f32(t, first + done, k, tmp, err);
        if (rc == 0)
            rc = eg_upload(st, dst, (VkDeviceSize)(dst_off + (size_t)done) * ops->elem, tmp,
                           (VkDeviceSize)k * ops->elem, err);
        done += k;
    }
    free(tmp);
    return rc;
}

int eg_matrix_create(const EgOps *ops, EgArena *arena, uint32_t rows, uint32_t cols,
                     uint32_t chunk_rows, EgMatrix *m, EgError *err) {
    return eg_matrix_create_format(ops, arena, rows, cols, chunk_rows, EG_WEIGHTS_DENSE, m, err);
}

int eg_matrix_create_format(const EgOps *ops, EgArena *arena, uint32_t rows, uint32_t cols,
                            uint32_t chunk_rows, EgWeightFormat format, EgMatrix *m, EgError *err) {
    memset(m, 0, sizeof *m);
    if (format != EG_WEIGHTS_DENSE && format != EG_WEIGHTS_Q8 && format != EG_WEIGHTS_Q4)
        return eg_fail(err, "unknown weight format %d", (int)format);
    if (format != EG_WEIGHTS_DENSE && !ops->matmul_q[format - 1][0].pipeline)
        return eg_fail(err, "no %s kernels were built for this model (EgOpsConfig.quant_kernels)",
                       eg_weight_format_name(format));
    uint32_t limit = eg_matrix_chunk_rows_format(ops, cols, format);
    if (limit == 0)
        return eg_fail(err, "a row of %u elements exceeds the device's maxStorageBufferRange",
                       cols);
    if (chunk_rows == 0 || chunk_rows > limit) chunk_rows = limit;
    if (chunk_rows > rows) chunk_rows = rows;
    m->rows = rows;
    m->cols = cols;
    m->format = format;
    m->chunk_rows = chunk_rows;
    m->n_chunks = (rows + chunk_rows - 1) / chunk_rows;
    m->chunks = calloc(m->n_chunks, sizeof *m->chunks);
    if (!m->chunks) return eg_fail(err, "out of host memory");
    for (uint32_t c = 0; c < m->n_chunks; c++) {
        VkDeviceSize bytes = eg_matrix_row_bytes(ops, cols, format) * eg_matrix_chunk_len(m, c);
        if (eg_buffer_create(arena, bytes, &m->chunks[c], err)) {
            eg_matrix_release(m);
            return -1;
        }
    }
    return 0;
}

void eg_matrix_release(EgMatrix *m) {
    free(m->chunks);
    memset(m, 0, sizeof *m);
}

/* Quantizes rows × m->cols floats and uploads them as rows [row, row + rows) of chunk c. */
static int upload_quantized(EgStaging *st, const EgMatrix *m, uint32_t c, uint32_t row,
                            const float *src, uint32_t rows, EgError *err) {
    size_t words = eg_quant_row_words(m->format, m->cols);
    uint32_t *q = malloc((size_t)rows * words * 4 + 4);
    if (!q) return eg_fail(err, "out of host memory");
    int rc = eg_quantize_rows(m->format, src, rows, m->cols, q, err);
    if (rc == 0)
        rc = eg_upload(st, &m->chunks[c], (VkDeviceSize)row * words * 4, q,
                       (VkDeviceSize)rows * words * 4, err);
    free(q);
    return rc;
}

/* Rows per quantization round trip: about CONVERT_CHUNK weights, at least one row. */
static uint32_t quant_batch_rows(const EgMatrix *m) {
    uint32_t r = CONVERT_CHUNK / (m->cols ? m->cols : 1);
    return r ? r : 1;
}

int eg_matrix_upload_f32(const EgOps *ops, EgStaging *st, const EgMatrix *m, const float *src,
                         EgError *err) {
    if (st->arena.vk->plan_only) return 0;
    if (m->format != EG_WEIGHTS_DENSE) {
        for (uint32_t c = 0; c < m->n_chunks; c++)
            for (uint32_t r = 0, len = eg_matrix_chunk_len(m, c); r < len;) {
                uint32_t k = len - r < quant_batch_rows(m) ? len - r : quant_batch_rows(m);
                size_t first = ((size_t)c * m->chunk_rows + r) * m->cols;
                if (upload_quantized(st, m, c, r, src + first, k, err)) return -1;
                r += k;
            }
        return 0;
    }
    for (uint32_t c = 0; c < m->n_chunks; c++) {
        size_t first = (size_t)c * m->chunk_rows * m->cols;
        size_t n = (size_t)m->cols * eg_matrix_chunk_len(m, c);
        if (eg_upload_f32(ops, st, &m->chunks[c], 0, src + first, n, err)) return -1;
    }
    return 0;
}

/* Rows [t_row, t_row + rows) of tensor t, converted to float, quantized and uploaded from row
 * `row` of chunk c on, in batches of quant_batch_rows. */
static int upload_view_quantized(EgStaging *st, const EgMatrix *m, uint32_t c, uint32_t row,
                                 const EgTensorView *t, int64_t t_row, uint32_t rows,
                                 EgError *err) {
    uint32_t batch = quant_batch_rows(m);
    float *tmp = malloc((size_t)(rows < batch ? rows : batch) * m->cols * sizeof *tmp + 4);
    if (!tmp) return eg_fail(err, "out of host memory");
    int rc = 0;
    for (uint32_t r = 0; r < rows && rc == 0;) {
        uint32_t k = rows - r < batch ? rows - r : batch;
        rc = eg_tensor_range_to_f32(t, (t_row + r) * m->cols, (int64_t)k * m->cols, tmp, err);
        if (rc == 0) rc = upload_quantized(st, m, c, row + r, tmp, k, err);
        /* eg_quantize_rows names the row within this batch */
        if (rc)
            eg_fail_prefix(err, "tensor '%s' in %s, from its row %lld", t->name, t->file,
                           (long long)(t_row + r));
        r += k;
    }
    free(tmp);
    return rc;
}

/* A pre-quantized tensor (runtime/quant_file.h) into rows [row0, ..) of a matrix of its
 * format: its rows are the device layout already, copied as they are. */
static int upload_prequantized(EgStaging *st, const EgMatrix *m, uint32_t row0,
                               const EgTensorView *t, EgError *err) {
    if (t->quant != m->format || t->quant_cols != m->cols || row0 + t->shape[0] > m->rows)
        return eg_fail(err,
                       "tensor '%s' in %s (%s, %lld x %lld) does not fit rows %u.. of a %s %u x %u "
                       "matrix",
                       t->name, t->file, eg_weight_format_name(t->quant), (long long)t->shape[0],
                       (long long)t->quant_cols, row0, eg_weight_format_name(m->format), m->rows,
                       m->cols);
    size_t row_bytes = (size_t)t->shape[1];
    uint32_t end = row0 + (uint32_t)t->shape[0];
    for (uint32_t c = 0; c < m->n_chunks; c++) {
        uint32_t c0 = c * m->chunk_rows, c1 = c0 + eg_matrix_chunk_len(m, c);
        uint32_t lo = row0 > c0 ? row0 : c0, hi = end < c1 ? end : c1;
        if (lo < hi && eg_upload(st, &m->chunks[c], (VkDeviceSize)(lo - c0) * row_bytes,
                                 (const unsigned char *)t->data + (size_t)(lo - row0) * row_bytes,
                                 (VkDeviceSize)(hi - lo) * row_bytes, err))
            return -1;
    }
    return 0;
}

int eg_matrix_upload_view(const EgOps *ops, EgStaging *st, const EgMatrix *m, uint32_t row0,
                          const EgTensorView *t, EgError *err) {
    if (t->quant != EG_WEIGHTS_DENSE) return upload_prequantized(st, m, row0, t, err);
    if (t->numel % m->cols != 0 || row0 + t->numel / m->cols > m->rows)
        return eg_fail(
            err, "tensor '%s' in %s (%lld elements) does not fit rows %u.. of a %u x %u matrix",
            t->name, t->file, (long long)t->numel, row0, m->rows, m->cols);
    if (st->arena.vk->plan_only) return 0;
    uint32_t end = row0 + (uint32_t)(t->numel / m->cols);
    for (uint32_t c = 0; c < m->n_chunks; c++) {
        uint32_t c0 = c * m->chunk_rows, c1 = c0 + eg_matrix_chunk_len(m, c);
        uint32_t lo = row0 > c0 ? row0 : c0, hi = end < c1 ? end : c1;
        if (lo >= hi) continue;
        if (m->format != EG_WEIGHTS_DENSE) {
            if (upload_view_quantized(st, m, c, lo - c0, t, (int64_t)(lo - row0), hi - lo, err))
                return -1;
            continue;
        }
        if (eg_upload_view(ops, st, &m->chunks[c], (size_t)(lo - c0) * m->cols, t,
                           (int64_t)(lo - row0) * m->cols, (int64_t)(hi - lo) * m->cols, err))
            return -1;
    }
    return 0;
}
