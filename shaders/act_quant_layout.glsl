// Quantized activations (written by quantize_act.comp, read by linear_quant_idot.glsl;
// docs/quantization.md "Integer dot products"): each row of K elements is quantized in blocks
// of 32 to int8 with one float scale d = max|x| / 127 and the block's sum of its int8 values.
// A row is a run of 16-byte vectors in groups of 2 blocks:
//   vector 0 (header): uint(float bits of d), sum (int32), the same for the second block;
//   vectors 1, 2: the first block's 32 int8 values; 3, 4: the second's.
// Every row has ceil(blocks / 2) whole groups; values past K are 0 (and counted in no sum).
// Within each 8 values, ORDER 0 packs x0..x3 in one word and x4..x7 in the next (q8's weight
// order); ORDER 1 packs x0, x2, x4, x6 then x1, x3, x5, x7: the bytes q4's weights give when
// a word of 8 nibbles is split into its low and high nibbles.
#define XQ_GROUP_VECS 5u

uint xq_row_vecs(uint K) { return (K + 63u) / 64u * XQ_GROUP_VECS; }
// Vector indices, within a row, of block b's header and of its first value vector; the header
// component of block b is 2 * (b % 2) (scale) and 2 * (b % 2) + 1 (sum).
uint xq_header(uint b) { return b / 2u * XQ_GROUP_VECS; }
uint xq_values(uint b) { return b / 2u * XQ_GROUP_VECS + 1u + (b % 2u) * 2u; }
