// Y = epilogue(X · Wᵀ) with W quantized (runtime/quant.h, docs/quantization.md): the body of
// matmul_q8.comp and matmul_q4.comp (Q_FORMAT 1 and 2), for every number of rows of X. The
// weights are dequantized in registers, 8 at a time, and the products accumulate in float.
//
// Work split as matmul_direct.glsl (no shared memory, no barriers): workgroup (x, y) covers
// columns [x·WG·TN, (x+1)·WG·TN) of rows [y·TM, (y+1)·TM); each invocation TM rows of X by TN
// rows of W, their TM·TN sums in registers. Decode runs it with TM = 1, 2, 4, 8 (one workgroup
// row). Per block of 32 weights an invocation reads each of its TN rows' scale word once, then
// per 8 weights one word (q4) or two (q8) of values and 8 elements of each row of X: every
// loaded x feeds TN rows and every dequantized weight TM rows.
//
// Rows past M or N read the last valid row (never stored). X is read 8 elements per load where
// every row starts on a multiple of 8 (ldx, x_off), else element by element. A row's last,
// partial block (K not a multiple of 32) goes through a loop of single weights: the values
// stored past K are never multiplied with anything.
layout(local_size_x_id = 0) in;            // WG
layout(constant_id = 1) const uint TM = 1; // rows of X per invocation
layout(constant_id = 2) const uint TN = 4; // rows of W per invocation

#define EG_LOAD64 0
#include "vector_loads.glsl"

// W as 16-byte vectors: its texel view (EG_TEXEL: CPU devices, one gather per load on lavapipe)
// or the storage buffer (binding 1, as matmul_epilogue.glsl's w[] is bound).
#if EG_TEXEL
uvec4 wv(uint i) { return imageLoad(w_texels, int(i)); }
#else
layout(std430, binding = 1) readonly buffer WQ { uvec4 wq4[]; };
uvec4 wv(uint i) { return wq4[i]; }
#endif

#include "quant_layout.glsl"

#if Q_FORMAT == 1
// 8 weights from two words of int8 (sign-extended: shifted to the top, arithmetically down).
void dequant8(uint u0, uint u1, vec2 sm, out vec4 a, out vec4 c) {
    a = sm.x * vec4(ivec4(uvec4(u0) << uvec4(24, 16, 8, 0)) >> 24);
    c = sm.x * vec4(ivec4(uvec4(u1) << uvec4(24, 16, 8, 0)) >> 24);
}
float dequant1(uint row, uint b, uint i, vec2 sm) {
    uint u = wv(block_values(row, b) + i / 16u)[(i / 4u) % 4u];
    return sm.x * float(int(u << (24u - 8u * (i % 4u))) >> 24);
}
#else
// 8 weights from one word of 4-bit values.
void dequant8(uint u, vec2 sm, out vec4 a, out vec4 c) {
    a = sm.x * vec4((uvec4(u) >> uvec4(0, 4, 8, 12)) & 15u) + sm.y;
    c = sm.x * vec4((uvec4(u) >> uvec4(16, 20, 24, 28)) & 15u) + sm.y;
}
float dequant1(uint row, uint b, uint i, vec2 sm) {
    uint u = wv(block_values(row, b))[i / 8u];
    return sm.x * float((u >> (4u * (i % 8u))) & 15u) + sm.y;
}
#endif

// Elements e..e+7 of X: one 8-element load where aligned, else eight.
void load_x8_at(uint e, bool aligned, out vec4 a, out vec4 b) {
    if (aligned) {
        load_x8(e / 8u, a, b);
    } else {
        a = vec4(x_at(e), x_at(e + 1u), x_at(e + 2u), x_at(e + 3u));
        b = vec4(x_at(e + 4u), x_at(e + 5u), x_at(e + 6u), x_at(e + 7u));
    }
}

void main() {
    uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
    uint m0 = gl_WorkGroupID.y * TM;
    if (n0 >= p.N || m0 >= p.M) return;
    uint vecs = row_vecs(p.K);
    uint xrow[TM], wrow[TN];
    for (uint i = 0; i < TM; i++) xrow[i] = p.x_off + min(m0 + i, p.M - 1u) * p.ldx;
    for (uint j = 0; j < TN; j++) wrow[j] = min(n0 + j, p.N - 1u) * vecs;
    float acc[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    bool aligned = ((p.ldx | p.x_off) & 7u) == 0u;
    uint full = p.K / 32u; // whole blocks
    for (uint b = 0; b < full; b++) {
        vec2 sm[TN];
        uvec4 va[TN];
#if Q_FORMAT == 1
        uvec4 vb[TN];
#endif
        for (uint j = 0; j < TN; j++) {
            sm[j] = block_scale(wrow[j], b);
            uint v = block_values(wrow[j], b);
            va[j] = wv(v);
#if Q_FORMAT == 1
            vb[j] = wv(v + 1u);
#endif
        }
        for (uint s = 0; s < 4u; s++) {
            vec4 xa[TM], xb[TM];
            for (uint i = 0; i < TM; i++) load_x8_at(xrow[i] + 32u * b + 8u * s, aligned, xa[i], xb[i]);
            for (uint j = 0; j < TN; j++) {
                vec4 wa, wb;
#if Q_FORMAT == 1
                uvec4 v = s < 2u ? va[j] : vb[j];
                dequant8(v[(2u * s) % 4u], v[(2u * s + 1u) % 4u], sm[j], wa, wb);
#else
                dequant8(va[j][s], sm[j], wa, wb);
#endif
                for (uint i = 0; i < TM; i++) acc[i][j] += dot(xa[i], wa) + dot(xb[i], wb);
            }
        }
    }
    if (full * 32u < p.K) {
        vec2 sm[TN];
        for (uint j = 0; j < TN; j++) sm[j] = block_scale(wrow[j], full);
        for (uint k = full * 32u; k < p.K; k++) {
            float xv[TM];
            for (uint i = 0; i < TM; i++) xv[i] = x_at(xrow[i] + k);
            for (uint j = 0; j < TN; j++) {
                float wv = dequant1(wrow[j], full, k % 32u, sm[j]);
                for (uint i = 0; i < TM; i++) acc[i][j] += xv[i] * wv;
            }
        }
    }
    // Copied out with constant indices: the loop below indexes with a variable, and a variable
    // index into acc itself would keep it in memory for the whole kernel.
    float out_v[TM * TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) out_v[i * TN + j] = acc[i][j];
    // One call site of the epilogue, in a loop that is not unrolled (see matmul.comp).
    [[dont_unroll]] for (uint e = 0; e < TM * TN; e++) {
        uint m = m0 + e / TN, n = n0 + e % TN;
        if (m < p.M && n < p.N) store_output(m, n, out_v[e]);
    }
}
