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

// Invocation (e, tok, img) of the grid: element e of token tok of image img, so no index is
// divided (integer division by a run-time value loops over the lanes on CPU implementations).
void main() {
    uint e = gl_GlobalInvocationID.x, tok = gl_WorkGroupID.y, img = gl_WorkGroupID.z;
    if (e >= p.dim) return;
    uint r = tok * p.dim + e;
    float v = tok == 0 ? float(cls[e]) : float(patches[(img * p.n_patches + tok - 1) * p.dim + e]);
    out_rows[(img * (p.n_patches + 1)) * p.dim + r] = ACT(v + float(pos[r]));
}
