#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#include "common.glsl"

// attention.comp with q, k and v read through texel views (CPU devices: runtime/ops.c); see
// attention.glsl.
#define ATTN_TABLE 0
#define EG_TEXEL 1
#include "attention.glsl"
