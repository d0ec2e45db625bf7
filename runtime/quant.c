#include "runtime/quant.h"

#include <math.h>
#include <string.h>

#include "runtime/half.h"
#include "runtime/parallel.h"

const char *eg_weight_format_name(EgWeightFormat f) {
    switch (f) {
    case EG_WEIGHTS_Q8:
        return "q8";
    case EG_WEIGHTS_Q4:
        return "q4";
    default:
        return "dense";
    }
}

int eg_weight_format_parse(const char *s, EgWeightFormat *out, EgError *err) {
    if (!strcmp(s, "q8"))
        *out = EG_WEIGHTS_Q8;
    else if (!strcmp(s, "q4"))
        *out = EG_WEIGHTS_Q4;
    else if (!strcmp(s, "none") || !strcmp(s, "fp16"))
        *out = EG_WEIGHTS_DENSE;
    else
        return eg_fail(err, "unknown quantization '%s' (known: q8, q4, none)", s);
    return 0;
}

/* A group: blocks per group, and the 16-byte vectors of one block's values. */
static uint32_t group_blocks(EgWeightFormat f) {
    return f == EG_WEIGHTS_Q8 ? 8 : 4;
}
static uint32_t block_vectors(EgWeightFormat f) {
    return f == EG_WEIGHTS_Q8 ? 2 : 1;
}

static uint32_t blocks_of(uint32_t cols) {
    return (cols + EG_QUANT_BLOCK - 1) / EG_QUANT_BLOCK;
}

/* Word of the row where block b's group starts; its header is the group's first vector, its
 * values follow block by block (a partial last group is a prefix of a whole one). */
static size_t group_word(EgWeightFormat f, uint32_t b) {
    uint32_t g = group_blocks(f);
    return (size_t)(b / g) * 4 * (1 + g * block_vectors(f));
}

size_t eg_quant_row_words(EgWeightFormat f, uint32_t cols) {
    if (f != EG_WEIGHTS_Q8 && f != EG_WEIGHTS_Q4) return 0;
    uint32_t blocks = blocks_of(cols), g = group_blocks(f), rest = blocks % g;
    return group_word(f, blocks - rest) + (rest ? 4 * (1 + (size_t)rest * block_vectors(f)) : 0);
}

/* One block of n (≤ 32) weights: its fp16 scale in *d, its values in q (q[i] for i ≥ n: 0).
 * The values are rounded against the fp16 scale the kernels will read, not the exact one. */
static int q8_block(const float *w, uint32_t n, uint16_t *d, int8_t *q) {
    float amax = 0;
    for (uint32_t i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    *d = eg_f32_to_f16(amax / 127.0f);
    float dr = eg_f16_to_f32(*d);
    if (!isfinite(dr)) return -1;
    memset(q, 0, EG_QUANT_BLOCK);
    for (uint32_t i = 0; i < n && dr > 0; i++) {
        float v = roundf(w[i] / dr);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return 0;
}

static int q4_block(const float *w, uint32_t n, uint16_t *d, uint16_t *m, uint8_t *q) {
    float lo = w[0], hi = w[0];
    for (uint32_t i = 1; i < n; i++) {
        lo = fminf(lo, w[i]);
        hi = fmaxf(hi, w[i]);
    }
    *m = eg_f32_to_f16(lo);
    *d = eg_f32_to_f16((hi - lo) / 15.0f);
    float mr = eg_f16_to_f32(*m), dr = eg_f16_to_f32(*d);
    if (!isfinite(mr) || !isfinite(dr)) return -1;
    memset(q, 0, EG_QUANT_BLOCK);
    for (uint32_t i = 0; i < n && dr > 0; i++) {
        float v = roundf((w[i] - mr) / dr);
        q[i] = (uint8_t)(v > 15 ? 15 : v < 0 ? 0 : v);
    }
    return 0;
}

void eg_q4_pack_block(uint32_t *row, uint32_t b, uint16_t d, uint16_t m,
                      const uint8_t q[EG_QUANT_BLOCK]) {
    uint32_t *group = row + group_word(EG_WEIGHTS_Q4, b), j = b % group_blocks(EG_WEIGHTS_Q4);
    uint32_t *values = group + 4 + 4 * j * block_vectors(EG_WEIGHTS_Q4);
    group[j] = d | (uint32_t)m << 16;
    for (uint32_t v = 0; v < EG_QUANT_BLOCK / 8; v++)
        values[v] = 0;
    for (uint32_t i = 0; i < EG_QUANT_BLOCK; i++)
        values[i / 8] |= (uint32_t)(q[i] & 15u) << (4 * (i % 8));
}

/* Quantizes one row; on failure the column of the offending block's first weight in *bad. */
static int quantize_row(EgWeightFormat f, const float *w, uint32_t cols, uint32_t *out,
                        uint32_t *bad) {
    uint32_t blocks = blocks_of(cols);
    memset(out, 0, eg_quant_row_words(f, cols) * 4);
    for (uint32_t b = 0; b < blocks; b++) {
        uint32_t k0 = b * EG_QUANT_BLOCK;
        uint32_t n = cols - k0 < EG_QUANT_BLOCK ? cols - k0 : EG_QUANT_BLOCK;
        for (uint32_t i = 0; i < n; i++)
            if (!isfinite(w[k0 + i])) {
                *bad = k0 + i;
                return -1;
            }
        *bad = k0;
        uint32_t *group = out + group_word(f, b), j = b % group_blocks(f);
        uint32_t *values = group + 4 + 4 * j * block_vectors(f);
        if (f == EG_WEIGHTS_Q8) {
            uint16_t d;
            int8_t q[EG_QUANT_BLOCK];
            if (q8_block(w + k0, n, &d, q)) return -1;
            group[j / 2] |= (uint32_t)d << (16 * (j % 2));
            for (uint32_t i = 0; i < EG_QUANT_BLOCK; i++)
                values[i / 4] |= (uint32_t)(uint8_t)q[i] << (8 * (i % 4));
        } else {
            uint16_t d, m;
            uint8_t q[EG_QUANT_BLOCK];
            if (q4_block(w + k0, n, &d, &m, q)) return -1;
            eg_q4_pack_block(out, b, d, m, q);
        }
    }
    return 0;
}

void eg_dequantize_row(EgWeightFormat f, const uint32_t *row, uint32_t cols, float *out) {
    for (uint32_t k = 0; k < cols; k++) {
        uint32_t b = k / EG_QUANT_BLOCK, i = k % EG_QUANT_BLOCK, j = b % group_blocks(f);
        const uint32_t *group = row + group_word(f, b);
        const uint32_t *values = group + 4 + 4 * j * block_vectors(f);
        if (f == EG_WEIGHTS_Q8) {
            float d = eg_f16_to_f32((uint16_t)(group[j / 2] >> (16 * (j % 2))));
            int8_t q = (int8_t)(uint8_t)(values[i / 4] >> (8 * (i % 4)));
            out[k] = d * (float)q;
        } else {
            float d = eg_f16_to_f32((uint16_t)group[j]),
                  m = eg_f16_to_f32((uint16_t)(group[j] >> 16));
            uint32_t q = (values[i / 8] >> (4 * (i % 8))) & 15u;
            out[k] = d * (float)q + m;
        }
    }
}

long eg_quant_row_bad_scale(EgWeightFormat f, const void *row, uint32_t cols) {
    const unsigned char *bytes = row;
    for (uint32_t b = 0; b < blocks_of(cols); b++) {
        uint32_t j = b % group_blocks(f), word;
        /* q8: two blocks' scales a header word; q4: a block's scale and minimum */
        memcpy(&word, bytes + 4 * (group_word(f, b) + (f == EG_WEIGHTS_Q8 ? j / 2 : j)), 4);
        uint16_t d = (uint16_t)(f == EG_WEIGHTS_Q8 ? word >> (16 * (j % 2)) : word);
        if (!isfinite(eg_f16_to_f32(d)) ||
            (f == EG_WEIGHTS_Q4 && !isfinite(eg_f16_to_f32((uint16_t)(word >> 16)))))
            return (long)b;
    }
    return -1;
}

/* A contiguous range of rows for one thread; the first failing row and column, if any. */
typedef struct {
    EgWeightFormat f;
    const float *src;
    uint32_t *dst;
    uint32_t cols, row0, row1;
    int failed;
    uint32_t bad_row, bad_col;
} QuantPart;

static void *quantize_part(void *arg) {
    QuantPart *p = arg;
    size_t words = eg_quant_row_words(p->f, p->cols);
    for (uint32_t r = p->row0; r < p->row1 && !p->failed; r++)
        if (quantize_row(p->f, p->src + (size_t)r * p->cols, p->cols, p->dst + r * words,
                         &p->bad_col)) {
            p->failed = 1;
            p->bad_row = r;
        }
    return NULL;
}

int eg_quantize_rows(EgWeightFormat f, const float *src, uint32_t rows, uint32_t cols,
                     uint32_t *dst, EgError *err) {
    if (f != EG_WEIGHTS_Q8 && f != EG_WEIGHTS_Q4)
        return eg_fail(err, "eg_quantize_rows: format %d is not a quantized one", (int)f);
    /* parts of at least 64 rows: a thread per few rows costs more than it saves */
    int n = eg_online_cores(EG_PARALLEL_MAX);
    if ((uint32_t)n > (rows + 63) / 64) n = (int)((rows + 63) / 64);
    if (n < 1) n = 1;
    QuantPart parts[EG_PARALLEL_MAX];
    for (int i = 0; i < n; i++)
        parts[i] =
            (QuantPart){.f = f,
                        .src = src,
                        .dst = dst,
                        .cols = cols,
                        .row0 = (uint32_t)((uint64_t)rows * (uint64_t)i / (uint64_t)n),
                        .row1 = (uint32_t)((uint64_t)rows * (uint64_t)(i + 1) / (uint64_t)n)};
    eg_parallel_run(quantize_part, parts, sizeof parts[0], n);
    for (int i = 0; i < n; i++)
        if (parts[i].failed) {
            const float *w = src + (size_t)parts[i].bad_row * cols + parts[i].bad_col;
            return eg_fail(err, "%s quantization: weight [%u][%u] = %g: %s",
                           eg_weight_format_name(f), parts[i].bad_row, parts[i].bad_col, (double)*w,
                           isfinite(*w) ? "its block's scale overflows fp16" : "not finite");
        }
    return 0;
}
