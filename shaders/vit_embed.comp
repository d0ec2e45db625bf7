#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// ViT input: [class embedding; patch embeddings] + position embeddings, per image.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Patches { ACT patches[]; };  // [n][Np][E]
layout(std430, binding = 1) readonly buffer Cls { WT cls[]; };          // [E]
layout(std430, binding = 2) readonly buffer Pos { WT pos[]; };          // [Np+1][E]
layout(std430, binding = 3) writeonly buffer Out { ACT out_rows[]; };   // [n][Np+1][E]

layout(push_constant) uniform Push {
    uint images, n_patches, dim;
} p;

void main() {
    uint tokens = p.n_patches + 1;
    uint i = eg_flat_index();
    if (i >= p.images * tokens * p.dim) return;
    uint img = i / (tokens * p.dim), r = i % (tokens * p.dim);
    uint tok = r / p.dim, e = r % p.dim;
    float v = tok == 0 ? float(cls[e]) : float(patches[(img * p.n_patches + tok - 1) * p.dim + e]);
    out_rows[i] = ACT(v + float(pos[r]));
}
