#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// The streaming-read bandwidth test (bench/bandwidth.c): every invocation sums every
// (gl_NumWorkGroups.x · WG)-th 16-byte vector of the buffer (grid-stride: consecutive
// invocations read consecutive vectors, coalesced) and writes its sum, so that no load is dead.
// What the weights of a batch-1 decode step are read at, at best.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
layout(push_constant) uniform Push { uint n_vec4; } p;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uvec4 acc = uvec4(0u);
    for (uint i = gl_GlobalInvocationID.x; i < p.n_vec4; i += stride) acc += src[i];
    dst[gl_GlobalInvocationID.x] = acc.x + acc.y + acc.z + acc.w;
}
