#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Embedding lookup from one table that holds rows [row0, row0 + n_rows) of the vocabulary
// (IDEFICS' decoupled embedding is two such tables; a table too large for one binding is
// split into several). Tokens whose id is outside this table are left untouched.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Ids { uint ids[]; };
layout(std430, binding = 1) readonly buffer Table { WT table[]; };
layout(std430, binding = 2) buffer Out { ACT out_rows[]; };

layout(push_constant) uniform Push {
    uint tokens, dim, row0, n_rows, out_off;
} p;

void main() {
    uint i = eg_flat_index();
    if (i >= p.tokens * p.dim) return;
    uint t = i / p.dim, c = i % p.dim;
    uint id = ids[t];
    if (id < p.row0 || id >= p.row0 + p.n_rows) return;
    out_rows[p.out_off + i] = ACT(float(table[(id - p.row0) * p.dim + c]));
}
