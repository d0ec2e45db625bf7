#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Rearranges channels-first images [n][C][S][S] into patch rows [n][Np][C·p·p] so the ViT's
// patch convolution (kernel = stride = p, no padding) becomes one matmul with the conv weight
// viewed as [E][C·p·p]. Patches are numbered row-major over the (S/p)×(S/p) grid.
// Invocation (x, c, img) of the grid copies one row of one patch: x = y·grid + gx, the p pixels
// of image row y in patch column gx, channel c. Integer division by a value known only at run
// time is a loop over the lanes on CPU implementations: this way there are two per p pixels
// instead of eight per pixel (lavapipe, EGRET_PROFILE, 16 images of 64x64, p = 8: 1.9 -> 0.5
// ms).
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Pix { ACT pix[]; };
layout(std430, binding = 1) writeonly buffer Patches { ACT patches[]; };

layout(push_constant) uniform Push {
    uint images, channels, size, patch_size;
} p;

void main() {
    uint ps = p.patch_size, grid = p.size / ps;
    uint x = gl_GlobalInvocationID.x;
    if (x >= p.size * grid) return;
    uint c = gl_WorkGroupID.y, img = gl_WorkGroupID.z;
    uint y = x / grid, gx = x % grid;
    uint gy = y / ps, py = y % ps;
    uint src = ((img * p.channels + c) * p.size + y) * p.size + gx * ps;
    uint dst = ((img * grid + gy) * grid + gx) * (p.channels * ps * ps) + (c * ps + py) * ps;
    for (uint px = 0; px < ps; px++) patches[dst + px] = pix[src + px];
}
