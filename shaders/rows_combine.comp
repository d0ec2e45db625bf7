#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Rows built from gathered, scaled rows of up to four sources:
//   out[o_off + r·o_row + e·o_elem] = (accum ? that element : 0)
//                                     + Σ_s coef[s] · src_s[s_off[s] + idx[4r + s]·s_row[s] + e]
// for rows r < rows and elements e < dim; an index of 0xFFFFFFFF leaves its source out (a row
// with none is zero, or unchanged with accum). With o_elem > 1 the row is written strided, which
// interleaves several sources' rows channel by channel (mllama's vision output concatenation).
// mllama's tiled vision embeddings (patch or class row + gated position and tile tables), its
// per-tile additions and its reordering of tokens are each one dispatch of this.
// Invocation (e, row) of the grid: x covers the elements, y and z the rows (65535 per z step),
// so nothing is divided by a value known only at run time.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Idx { uint idx[]; };
layout(std430, binding = 1) readonly buffer S0 { ACT s0[]; };
layout(std430, binding = 2) readonly buffer S1 { ACT s1[]; };
layout(std430, binding = 3) readonly buffer S2 { ACT s2[]; };
layout(std430, binding = 4) readonly buffer S3 { ACT s3[]; };
layout(std430, binding = 5) buffer Out { ACT out_rows[]; };

layout(push_constant) uniform Push {
    uint rows, dim, o_off, o_row, o_elem, accum;
    uint s_off0, s_off1, s_off2, s_off3;
    uint s_row0, s_row1, s_row2, s_row3;
    float coef0, coef1, coef2, coef3;
} p;

const uint NONE = 0xFFFFFFFFu;

void main() {
    uint e = gl_GlobalInvocationID.x;
    uint r = gl_WorkGroupID.z * 65535u + gl_WorkGroupID.y;
    if (e >= p.dim || r >= p.rows) return;
    uint o = p.o_off + r * p.o_row + e * p.o_elem;
    float v = p.accum != 0u ? float(out_rows[o]) : 0.0;
    uint i0 = idx[4u * r], i1 = idx[4u * r + 1u], i2 = idx[4u * r + 2u], i3 = idx[4u * r + 3u];
    if (i0 != NONE) v += p.coef0 * float(s0[p.s_off0 + i0 * p.s_row0 + e]);
    if (i1 != NONE) v += p.coef1 * float(s1[p.s_off1 + i1 * p.s_row1 + e]);
    if (i2 != NONE) v += p.coef2 * float(s2[p.s_off2 + i2 * p.s_row2 + e]);
    if (i3 != NONE) v += p.coef3 * float(s3[p.s_off3 + i3 * p.s_row3 + e]);
    out_rows[o] = ACT(v);
}
