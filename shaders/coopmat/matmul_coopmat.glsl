// Body of the cooperative-matrix (tensor core) matmul: Y = epilogue(X · Wᵀ), as matmul.comp
// (same bindings, push constants and epilogue: ../matmul_epilogue.glsl), for fp16 storage. The
// including file defines the extension's types and calls (KHR or NV):
//   CM_A, CM_B, CM_C: the A (CM×CK), B (CK×CN) and accumulator (CM×CN, float) matrix types;
//   CM_ZERO: an accumulator of zeros; CM_LOAD_A(m, array, index, stride) row-major,
//   CM_LOAD_B(m, array, index, stride) column-major (W's rows are B's columns),
//   CM_MULADD(a, b, c), CM_STORE_C(c, array, index, stride) row-major.
//
// A workgroup of 4 subgroups computes a BM×BN block of Y, BM = 2·RM·CM and BN = 2·RN·CN:
// subgroup s owns the RM×RN matrix tiles at block row s / 2, column s % 2. It steps through K in
// slices of BK = CK·KS: the whole workgroup copies the slice of X (BM×BK) and of W (BN×BK) into
// shared memory as float16 (zeros past M, N and K: any size works), then each subgroup loads its
// A and B tiles from there and multiply-adds. At the end the accumulators go through shared
// memory to the scalar epilogue, which stores only outputs inside M×N.
//
// CM, CN, CK are specialization constants: runtime/coopmat.c picks a shape the device reports.
layout(local_size_x_id = 0) in; // WG: 4 subgroups (runtime/coopmat.c: 4 × the subgroup size)
layout(constant_id = 1) const uint CM = 16u;
layout(constant_id = 2) const uint CN = 16u;
layout(constant_id = 3) const uint CK = 16u;
layout(constant_id = 4) const uint RM = 2u; // matrix tiles per subgroup, down and across
layout(constant_id = 5) const uint RN = 2u;
layout(constant_id = 6) const uint KS = 2u; // K slice: KS·CK

const uint BM = 2u * RM * CM, BN = 2u * RN * CN, BK = KS * CK;
shared float16_t xs[BM * BK]; // [BM][BK]
shared float16_t ws[BN * BK]; // [BN][BK]
shared float cs[BM * BN];     // [BM][BN]

void main() {
    uint t = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint s = gl_SubgroupID;
    uint sm = (s / 2u) * RM * CM, sn = (s % 2u) * RN * CN; // this subgroup's corner in the block
    CM_C acc[RM][RN];
    for (uint i = 0u; i < RM; i++)
        for (uint j = 0u; j < RN; j++) acc[i][j] = CM_ZERO;
    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        for (uint e = t; e < BM * BK; e += wg) {
            uint m = m0 + e / BK, k = k0 + e % BK;
            xs[e] = float16_t(m < p.M && k < p.K ? float(x[p.x_off + m * p.ldx + k]) : 0.0);
        }
        for (uint e = t; e < BN * BK; e += wg) {
            uint n = n0 + e / BK, k = k0 + e % BK;
            ws[e] = float16_t(n < p.N && k < p.K ? float(w[n * p.K + k]) : 0.0);
        }
        barrier();
        if (s < 4u) {
            for (uint kk = 0u; kk < BK; kk += CK) {
                CM_A a[RM];
                CM_B b[RN];
                for (uint i = 0u; i < RM; i++) CM_LOAD_A(a[i], xs, (sm + i * CM) * BK + kk, BK);
                for (uint j = 0u; j < RN; j++) CM_LOAD_B(b[j], ws, (sn + j * CN) * BK + kk, BK);
                for (uint i = 0u; i < RM; i++)
                    for (uint j = 0u; j < RN; j++) acc[i][j] = CM_MULADD(a[i], b[j], acc[i][j]);
            }
        }
        barrier();
    }
    if (s < 4u)
        for (uint i = 0u; i < RM; i++)
            for (uint j = 0u; j < RN; j++)
                CM_STORE_C(acc[i][j], cs, (sm + i * CM) * BN + sn + j * CN, BN);
    barrier();
    for (uint e = t; e < BM * BN; e += wg) {
        uint m = m0 + e / BN, n = n0 + e % BN;
        if (m < p.M && n < p.N) store_output(m, n, cs[e]);
    }
}
