#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Rearranges channels-first images [n][C][S][S] into patch rows [n][Np][C·p·p] so the ViT's
// patch convolution (kernel = stride = p, no padding) becomes one matmul with the conv weight
// viewed as [E][C·p·p]. Patches are numbered row-major over the (S/p)×(S/p) grid.
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Pix { ACT pix[]; };
layout(std430, binding = 1) writeonly buffer Patches { ACT patches[]; };

layout(push_constant) uniform Push {
    uint images, channels, size, patch_size;
} p;

void main() {
    uint grid = p.size / p.patch_size;
    uint pp = p.patch_size * p.patch_size;
    uint row_len = p.channels * pp;
    uint per_image = grid * grid * row_len;
    uint i = eg_flat_index();
    if (i >= p.images * per_image) return;
    uint img = i / per_image, r = i % per_image;
    uint patch_idx = r / row_len, e = r % row_len;
    uint c = e / pp, py = (e / p.patch_size) % p.patch_size, px = e % p.patch_size;
    uint gy = patch_idx / grid, gx = patch_idx % grid;
    uint src = ((img * p.channels + c) * p.size + gy * p.patch_size + py) * p.size +
               gx * p.patch_size + px;
    patches[i] = pix[src];
}
