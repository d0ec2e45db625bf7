#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// Y = epilogue(X · Wᵀ) for an M×K activation X and an N×K weight W (PyTorch Linear layout):
// prefill, the ViT and the perceiver. matvec.comp handles few rows of X.
//
// Tiling: a workgroup computes a BM×BN block of Y, stepping through K in slices of BK. Each
// slice of X (BM×BK) and of W (BN×BK) is staged in shared memory, transposed to k-major
// [BK][BM] so an invocation reads its TM (resp. TN) consecutive values of one k as vec4s.
// Invocation (tx, ty) of the (BN/TN)×(BM/TM) grid owns rows ty·TM + [0, TM) and columns
// tx·TN + [0, TN) of the block and accumulates those TM·TN outputs in registers (register
// blocking: TM + TN shared reads per TM·TN multiply-adds). Neighbouring invocations own
// neighbouring columns, so their W reads from shared memory are consecutive vec4s (no bank
// conflicts) and their X reads are the same address (a broadcast).
//
// Global loads: rows of X and W are contiguous along k, so the slices are read as vec4s
// (16 bytes fp32, 8 bytes fp16) when every row starts on a 4-element boundary (K, ldx, x_off
// multiples of 4, true of the models' shapes), else element by element. The next slice is
// loaded into registers while the current one is multiplied, hiding memory latency on GPUs.
// Rows of X past M, of W past N and columns past K read as zero; only outputs inside M×N are
// stored, so any size works.
//
// Specialization constants, chosen by runtime/ops.c from the device limits (shared memory
// BK·(BM + BN)·4 bytes; invocations (BM/TM)·(BN/TN)):
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4; // multiple of 4
layout(constant_id = 5) const uint TN = 4; // multiple of 4

layout(std430, binding = 0) readonly buffer X4 { ACT4 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { WT4 w4[]; };

shared vec4 xs[BK][BM / 4];
shared vec4 ws[BK][BN / 4];

const uint WG = (BM / TM) * (BN / TN);
// vec4s of one slice of X (resp. W), and how many each invocation loads.
const uint XV = BM * BK / 4, WV = BN * BK / 4;
const uint XL = (XV + WG - 1) / WG, WL = (WV + WG - 1) / WG;

vec4 xr[XL], wr[WL]; // the next slice, in registers

// Element (row, k) of X or W, zero outside the matrix.
float x_at(uint m, uint k) {
    return (m < p.M && k < p.K) ? float(x[p.x_off + m * p.ldx + k]) : 0.0;
}
float w_at(uint n, uint k) {
    return (n < p.N && k < p.K) ? float(w[n * p.K + k]) : 0.0;
}

// Loads slice k0 of X and W into xr, wr. Vector e of a slice is row e / (BK/4), k-vector
// e % (BK/4): consecutive invocations read consecutive 16-byte pieces of a row.
void load_slice(uint m0, uint n0, uint k0, bool wide) {
    for (uint l = 0; l < XL; l++) {
        uint e = gl_LocalInvocationID.x + l * WG;
        uint r = e / (BK / 4), k = k0 + (e % (BK / 4)) * 4;
        uint m = m0 + r;
        xr[l] = vec4(0.0);
        if (wide) {
            if (e < XV && m < p.M && k < p.K) xr[l] = vec4(x4[(p.x_off + m * p.ldx + k) / 4]);
        } else
            xr[l] = vec4(x_at(m, k), x_at(m, k + 1), x_at(m, k + 2), x_at(m, k + 3));
    }
    for (uint l = 0; l < WL; l++) {
        uint e = gl_LocalInvocationID.x + l * WG;
        uint r = e / (BK / 4), k = k0 + (e % (BK / 4)) * 4;
        uint n = n0 + r;
        wr[l] = vec4(0.0);
        if (wide) {
            if (e < WV && n < p.N && k < p.K) wr[l] = vec4(w4[(n * p.K + k) / 4]);
        } else
            wr[l] = vec4(w_at(n, k), w_at(n, k + 1), w_at(n, k + 2), w_at(n, k + 3));
    }
}

// Writes the registers to shared memory, transposed: xs[k][m/4][m%4].
void store_slice() {
    for (uint l = 0; l < XL; l++) {
        uint e = gl_LocalInvocationID.x + l * WG;
        if (e >= XV) break;
        uint r = e / (BK / 4), k = (e % (BK / 4)) * 4;
        for (uint j = 0; j < 4; j++) xs[k + j][r / 4][r % 4] = xr[l][j];
    }
    for (uint l = 0; l < WL; l++) {
        uint e = gl_LocalInvocationID.x + l * WG;
        if (e >= WV) break;
        uint r = e / (BK / 4), k = (e % (BK / 4)) * 4;
        for (uint j = 0; j < 4; j++) ws[k + j][r / 4][r % 4] = wr[l][j];
    }
}

void main() {
    uint tx = gl_LocalInvocationID.x % (BN / TN), ty = gl_LocalInvocationID.x / (BN / TN);
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    bool wide = (p.K % 4u) == 0u && (p.ldx % 4u) == 0u && (p.x_off % 4u) == 0u;
    float acc[TM][TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;

    load_slice(m0, n0, 0, wide);
    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        store_slice();
        barrier();
        if (k0 + BK < p.K) load_slice(m0, n0, k0 + BK, wide);
        for (uint k = 0; k < BK; k++) {
            vec4 a[TM / 4], b[TN / 4];
            for (uint i = 0; i < TM / 4; i++) a[i] = xs[k][ty * (TM / 4) + i];
            for (uint j = 0; j < TN / 4; j++) b[j] = ws[k][tx * (TN / 4) + j];
            for (uint i = 0; i < TM; i++)
                for (uint j = 0; j < TN; j++) acc[i][j] += a[i / 4][i % 4] * b[j / 4][j % 4];
        }
        barrier();
    }
    // One epilogue call site, in a loop that is not unrolled: unrolled, the epilogue (with its
    // activations) is compiled TM·TN times, which made pipeline creation on lavapipe ten times
    // slower (0.25 s a pipeline). The accumulators are copied out with constant indices first,
    // so the main loop keeps them in registers.
    float out_v[TM * TN];
    for (uint i = 0; i < TM; i++)
        for (uint j = 0; j < TN; j++) out_v[i * TN + j] = acc[i][j];
    [[dont_unroll]] for (uint e = 0; e < TM * TN; e++) {
        uint m = m0 + ty * TM + e / TN, n = n0 + tx * TN + e % TN;
        if (m < p.M && n < p.N) store_output(m, n, out_v[e]);
    }
}
