#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

// LayerNorm / RMSNorm reducing with subgroupAdd; see norm.glsl.
#define NORM_SUBGROUP 1
#include "norm.glsl"
