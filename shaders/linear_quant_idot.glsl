// Y = epilogue(X · Wᵀ) with W quantized (runtime/quant.h) and X quantized to int8 blocks by
// quantize_act.comp (act_quant_layout.glsl): the body of matmul_q8_idot.comp and
// matmul_q4_idot.comp (Q_FORMAT 1 and 2). Per block of 32, the 32 products of 8-bit integers
// are summed exactly by 8 packed dot products (int_dot.glsl), then scaled in float:
//   q8: d_w · d_x · Σ q_w q_x
//   q4: d_w · d_x · Σ q_w q_x + m_w · d_x · Σ q_x      (a weight is d_w · q_w + m_w)
// and the blocks accumulate in float. q4's nibbles, split into their low and high halves of
// each byte, are bytes 0..15: signed bytes as they are, so one signed dot serves both formats;
// X was quantized in the order those bytes come in (ACT_QUANT_ORDER 1).
//
// Work split as linear_quant.glsl: workgroup (x, y) covers WG·TN rows of W and TM rows of X,
// each invocation TM × TN sums in registers. Every block is whole here: the values of X past
// K are 0 and q4's Σ q_x counts only real ones, so a partial last block needs no special case.
// p.x_off and p.ldx are unused: X's rows are the quantized buffer's, xq_row_vecs(K) apart.
layout(local_size_x_id = 0) in;            // WG
layout(constant_id = 1) const uint TM = 1; // rows of X per invocation
layout(constant_id = 2) const uint TN = 4; // rows of W per invocation

#include "act_quant_layout.glsl"
#include "int_dot.glsl"

layout(std430, binding = 0) readonly buffer XQ { uvec4 xq4[]; };
layout(std430, binding = 1) readonly buffer WQ { uvec4 wq4[]; };
uvec4 wv(uint i) { return wq4[i]; }

#include "quant_layout.glsl"

void main() {
    uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
    uint m0 = gl_WorkGroupID.y * TM;
    if (n0 >= p.N || m0 >= p.M) return;
    uint vecs = row_vecs(p.K), xvecs = xq_row_vecs(p.K);
    uint xrow[TM], wrow[TN];
    for (uint i = 0; i < TM; i++) xrow[i] = min(m0 + i, p.M - 1u) * xvecs;
    for (uint j = 0; j < TN; j++) wrow[j] = min(n0 + j, p.N - 1u) * vecs;
    float acc[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    uint blocks = (p.K + 31u) / 32u;
    for (uint b = 0; b < blocks; b++) {
        float dx[TM];
        int sx[TM];
        uvec4 xa[TM], xb[TM];
        for (uint i = 0; i < TM; i++) {
            uvec4 h = xq4[xrow[i] + xq_header(b)];
            uint c = 2u * (b % 2u);
            dx[i] = uintBitsToFloat(h[c]);
            sx[i] = int(h[c + 1u]);
            uint v = xrow[i] + xq_values(b);
            xa[i] = xq4[v];
            xb[i] = xq4[v + 1u];
        }
        for (uint j = 0; j < TN; j++) {
            vec2 sm = block_scale(wrow[j], b);
            uint v = block_values(wrow[j], b);
            uvec4 wa = wv(v);
#if Q_FORMAT == 1
            uvec4 wb = wv(v + 1u);
            for (uint i = 0; i < TM; i++) {
                int s = eg_sdot4(wa.x, xa[i].x) + eg_sdot4(wa.y, xa[i].y) +
                        eg_sdot4(wa.z, xa[i].z) + eg_sdot4(wa.w, xa[i].w) +
                        eg_sdot4(wb.x, xb[i].x) + eg_sdot4(wb.y, xb[i].y) +
                        eg_sdot4(wb.z, xb[i].z) + eg_sdot4(wb.w, xb[i].w);
                acc[i][j] += sm.x * dx[i] * float(s);
            }
#else
            // word s of the block: 8 nibbles, values 8s..8s+7; its low nibbles are the even
            // values, its high nibbles the odd ones
            uvec4 lo = wa & 0x0F0F0F0Fu, hi = (wa >> 4u) & 0x0F0F0F0Fu;
            for (uint i = 0; i < TM; i++) {
                int s = eg_sdot4(lo.x, xa[i].x) + eg_sdot4(hi.x, xa[i].y) +
                        eg_sdot4(lo.y, xa[i].z) + eg_sdot4(hi.y, xa[i].w) +
                        eg_sdot4(lo.z, xb[i].x) + eg_sdot4(hi.z, xb[i].y) +
                        eg_sdot4(lo.w, xb[i].z) + eg_sdot4(hi.w, xb[i].w);
                acc[i][j] += dx[i] * (sm.x * float(s) + sm.y * float(sx[i]));
            }
#endif
        }
    }
    // Copied out with constant indices, one call site of the epilogue (as linear_quant.glsl).
    float out_v[TM * TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) out_v[i * TN + j] = acc[i][j];
    [[dont_unroll]] for (uint e = 0; e < TM * TN; e++) {
        uint m = m0 + e / TN, n = n0 + e % TN;
        if (m < p.M && n < p.N) store_output(m, n, out_v[e]);
    }
}
