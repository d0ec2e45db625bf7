#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// Y = epilogue(X · Wᵀ) like matmul.comp, for CPU implementations (lavapipe): no shared memory
// and no barriers. There, shared memory is ordinary memory behind the same per-lane load loop
// as a storage buffer (every lane's load is a scalar access with a bounds check per 32-bit
// component), and every barrier() suspends and resumes each subgroup of the workgroup, so
// staging tiles in shared memory only adds work. Instead each invocation reads its TM rows of
// X and TN rows of W straight from the buffers, 8 elements per load, and accumulates the
// TM·TN outputs in registers: (TM + TN) loads per TM·TN·8 multiply-adds.
//
// Grid: workgroup (x, y) covers columns [x·WG·TN, (x+1)·WG·TN) of rows [y·TM, (y+1)·TM);
// invocation i takes columns x·WG·TN + i·TN + [0, TN). The lanes of a subgroup share their
// rows of X (the same addresses) and read neighbouring rows of W.
//
// Rows past M or N read the last valid row (never stored): no branch in the inner loop.
// Reading 8 elements at once needs K, ldx and x_off to be multiples of 8 (4 for the middle
// path); otherwise the scalar loop runs.
layout(local_size_x_id = 0) in;            // WG
layout(constant_id = 1) const uint TM = 4; // rows of X per invocation
layout(constant_id = 2) const uint TN = 4; // rows of W per invocation

#if EG_F16
layout(std430, binding = 0) readonly buffer X8 { uvec4 x8[]; };
layout(std430, binding = 1) readonly buffer W8 { uvec4 w8[]; };
layout(std430, binding = 0) readonly buffer X4 { uvec2 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec2 w4[]; };
void load8x(uint i, out vec4 a, out vec4 b) {
    uvec4 u = x8[i];
    a = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    b = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}
void load8w(uint i, out vec4 a, out vec4 b) {
    uvec4 u = w8[i];
    a = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    b = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}
vec4 load4x(uint i) { return vec4(unpackHalf2x16(x4[i].x), unpackHalf2x16(x4[i].y)); }
vec4 load4w(uint i) { return vec4(unpackHalf2x16(w4[i].x), unpackHalf2x16(w4[i].y)); }
#else
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { vec4 w4[]; };
void load8x(uint i, out vec4 a, out vec4 b) {
    a = x4[2u * i];
    b = x4[2u * i + 1u];
}
void load8w(uint i, out vec4 a, out vec4 b) {
    a = w4[2u * i];
    b = w4[2u * i + 1u];
}
vec4 load4x(uint i) { return x4[i]; }
vec4 load4w(uint i) { return w4[i]; }
#endif

void main() {
    uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * TN;
    uint m0 = gl_WorkGroupID.y * TM;
    if (n0 >= p.N || m0 >= p.M) return;
    uint xrow[TM], wrow[TN];
    for (uint i = 0; i < TM; i++) xrow[i] = p.x_off + min(m0 + i, p.M - 1u) * p.ldx;
    for (uint j = 0; j < TN; j++) wrow[j] = min(n0 + j, p.N - 1u) * p.K;
    float acc[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    uint align = p.K | p.ldx | p.x_off;
    if ((align & 7u) == 0u) {
        for (uint k = 0; k < p.K; k += 8u) {
            vec4 xa[TM], xb[TM];
            for (uint i = 0; i < TM; i++) load8x((xrow[i] + k) / 8u, xa[i], xb[i]);
            for (uint j = 0; j < TN; j++) {
                vec4 wa, wb;
                load8w((wrow[j] + k) / 8u, wa, wb);
                for (uint i = 0; i < TM; i++) acc[i][j] += dot(xa[i], wa) + dot(xb[i], wb);
            }
        }
    } else if ((align & 3u) == 0u) {
        for (uint k = 0; k < p.K; k += 4u) {
            vec4 xv[TM];
            for (uint i = 0; i < TM; i++) xv[i] = load4x((xrow[i] + k) / 4u);
            for (uint j = 0; j < TN; j++) {
                vec4 wv = load4w((wrow[j] + k) / 4u);
                for (uint i = 0; i < TM; i++) acc[i][j] += dot(xv[i], wv);
            }
        }
    } else {
        for (uint k = 0; k < p.K; k++) {
            float xv[TM];
            for (uint i = 0; i < TM; i++) xv[i] = float(x[xrow[i] + k]);
            for (uint j = 0; j < TN; j++) {
                float wv = float(w[wrow[j] + k]);
                for (uint i = 0; i < TM; i++) acc[i][j] += xv[i] * wv;
            }
        }
    }
    // One epilogue call site in a loop that is not unrolled (see matmul.comp).
    float out_v[TM * TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) out_v[i * TN + j] = acc[i][j];
    [[dont_unroll]] for (uint e = 0; e < TM * TN; e++) {
        uint m = m0 + e / TN, n = n0 + e % TN;
        if (m < p.M && n < p.N) store_output(m, n, out_v[e]);
    }
}
