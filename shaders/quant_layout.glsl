// The weight layouts of runtime/quant.h (docs/quantization.md) as a shader reads them: the
// quantized kernels' (linear_quant.glsl, linear_quant_idot.glsl) shared part. Q_FORMAT 1 (q8)
// or 2 (q4); wv(i) loads vector i of W, defined by the includer.
#if Q_FORMAT == 1
// q8: groups of 8 blocks: a header vector of 8 fp16 scales, then two vectors of int8 per block.
#define GROUP 8u
#define BLOCK_VECS 2u
#else
// q4: groups of 4 blocks: a header vector of 4 (fp16 scale, fp16 minimum), then one vector of
// 32 4-bit values per block.
#define GROUP 4u
#define BLOCK_VECS 1u
#endif
#define GROUP_VECS (1u + GROUP * BLOCK_VECS)

// Vectors of a row of K weights (a partial last group: its header and its blocks).
uint row_vecs(uint K) {
    uint blocks = (K + 31u) / 32u, rest = blocks % GROUP;
    return blocks / GROUP * GROUP_VECS + (rest != 0u ? 1u + rest * BLOCK_VECS : 0u);
}
// Block b of the row starting at vector `row`: its scale and minimum (q8: 0), and the vector of
// its values v (q8: v and v + 1).
vec2 block_scale(uint row, uint b) {
    uvec4 h = wv(row + b / GROUP * GROUP_VECS);
    uint j = b % GROUP;
#if Q_FORMAT == 1
    vec2 d = unpackHalf2x16(h[j / 2u]);
    return vec2((j & 1u) != 0u ? d.y : d.x, 0.0);
#else
    return unpackHalf2x16(h[j]);
#endif
}
uint block_values(uint row, uint b) { return row + b / GROUP * GROUP_VECS + 1u + (b % GROUP) * BLOCK_VECS; }
