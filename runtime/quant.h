/* Quantized weight formats (docs/quantization.md): rows of a weight matrix stored as blocks of
 * 32 weights with fp16 scales, read and dequantized in registers by the linear kernels
 * (shaders/linear_quant.glsl). Quantizing happens on the host, on every core, while loading.
 *
 * Both formats lay out each row on its own as 16-byte vectors (uvec4: one texel of an rgba32ui
 * view), in groups of blocks that start with a header vector of the group's fp16 scales, each
 * block's values following in one (q4) or two (q8) vectors:
 *   q8 (llama.cpp's Q8_0 values, 8.5 bits a weight): groups of 8 blocks, 17 vectors; header
 *      word j holds blocks 2j (low half) and 2j+1 (high half)'s scales d; a block's 32 int8 values
 *      q, weight i in byte i % 4 of its word i / 4; w = d·q.
 *   q4 (as llama.cpp's Q4_1, 5 bits a weight): groups of 4 blocks, 5 vectors; header word j holds
 *      block j's scale d (low half) and minimum m (high half); a block's 32 4-bit values q, weight
 *      i in bits 4·(i % 8) of its word i / 8; w = d·q + m.
 * A row of K weights has ceil(K / 32) blocks; a partial last group is the prefix of a whole one
 * (header and the blocks it has). The weights past K are stored as zero and the kernels never
 * read them as weights. */
#ifndef EGRET_QUANT_H
#define EGRET_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

typedef enum EgWeightFormat {
    EG_WEIGHTS_DENSE = 0, /* the ops' storage precision: fp32 or fp16 */
    EG_WEIGHTS_Q8 = 1,
    EG_WEIGHTS_Q4 = 2
} EgWeightFormat;

#define EG_QUANT_BLOCK 32 /* weights per scale */

/* "dense", "q8", "q4". */
const char *eg_weight_format_name(EgWeightFormat f);
/* Parses "q8", "q4" (and "none" / "fp16" as EG_WEIGHTS_DENSE); -1 with a message naming the
 * accepted values otherwise. */
int eg_weight_format_parse(const char *s, EgWeightFormat *out, EgError *err);

/* 32-bit words of one quantized row of `cols` weights (q8, q4 only; a multiple of 4). */
size_t eg_quant_row_words(EgWeightFormat f, uint32_t cols);

/* Quantizes rows × cols float weights (row-major) into rows · eg_quant_row_words words, the
 * rows shared among the cores. Refuses (naming the row and column) a weight that is NaN or
 * infinite, or a block whose scale overflows fp16. */
int eg_quantize_rows(EgWeightFormat f, const float *src, uint32_t rows, uint32_t cols,
                     uint32_t *dst, EgError *err);
/* Writes block b of a q4 row (eg_quant_row_words words, its other blocks left alone): scale d
 * and minimum m (fp16 bits) and its 32 values q (0..15; those past the row's end 0). The one
 * place that knows where a q4 block's bytes go: quantizing and AWQ's conversion (runtime/awq.h)
 * both write through it. */
void eg_q4_pack_block(uint32_t *row, uint32_t b, uint16_t d, uint16_t m,
                      const uint8_t q[EG_QUANT_BLOCK]);
/* The weights a quantized row stands for, as the kernels compute them (float). */
void eg_dequantize_row(EgWeightFormat f, const uint32_t *row, uint32_t cols, float *out);
/* The first block of a quantized row (bytes at any alignment) whose scale, or q4 minimum, is NaN
 * or infinite; -1 when all are finite. */
long eg_quant_row_bad_scale(EgWeightFormat f, const void *row, uint32_t cols);

#endif
