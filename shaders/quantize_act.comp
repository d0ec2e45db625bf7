#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "act_quant_layout.glsl"

// Rows of X (M × K, row stride ldx, from x_off) to int8 blocks of 32 with their scales and
// sums (act_quant_layout.glsl), for the integer-dot-product kernels (linear_quant_idot.glsl).
// One invocation per block: gl_GlobalInvocationID.x is the block, .y the row.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer XQ { uint xq[]; };

layout(push_constant) uniform Push {
    uint M, K, ldx, x_off;
    uint order; // ACT_QUANT_ORDER: 0 natural, 1 q4's (act_quant_layout.glsl)
} p;

void main() {
    uint b = gl_GlobalInvocationID.x, m = gl_GlobalInvocationID.y;
    uint blocks2 = (p.K + 63u) / 64u * 2u; // the row's blocks, padding block included
    if (b >= blocks2 || m >= p.M) return;
    uint base = p.x_off + m * p.ldx, k0 = 32u * b;
    uint n = k0 < p.K ? min(32u, p.K - k0) : 0u;
    float v[32];
    float amax = 0.0;
    for (uint i = 0; i < 32u; i++) {
        v[i] = i < n ? float(x[base + k0 + i]) : 0.0;
        amax = max(amax, abs(v[i]));
    }
    // d rounds; q = round(x / d) with that d, so d · q is within d / 2 of x (the reference in
    // tests/test_ops_int_dot.c reads d and q back and multiplies them exactly).
    float d = amax / 127.0;
    float inv = d > 0.0 ? 1.0 / d : 0.0;
    uint words[8];
    int sum = 0;
    for (uint w = 0; w < 8u; w++) {
        uint packed = 0u;
        for (uint j = 0; j < 4u; j++) {
            // element of the 8-value run (w / 2) that goes in byte j of word w
            uint e = p.order == 0u ? 4u * w + j : 8u * (w / 2u) + 2u * j + (w % 2u);
            int q = clamp(int(round(v[e] * inv)), -127, 127);
            sum += q;
            packed |= (uint(q) & 255u) << (8u * j);
        }
        words[w] = packed;
    }
    uint row = m * xq_row_vecs(p.K);
    uint vals = 4u * (row + xq_values(b));
    for (uint w = 0; w < 8u; w++) xq[vals + w] = words[w];
    uint head = 4u * (row + xq_header(b)) + 2u * (b % 2u);
    xq[head] = floatBitsToUint(d);
    xq[head + 1u] = uint(sum);
}
