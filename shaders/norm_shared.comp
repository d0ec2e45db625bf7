#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// LayerNorm / RMSNorm on devices without subgroup arithmetic: the same as norm.comp, reducing
// through shared memory; see norm.glsl.
#define NORM_SUBGROUP 0
#include "norm.glsl"
