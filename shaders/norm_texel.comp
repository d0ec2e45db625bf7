#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

// norm.comp with x, the weight and the bias read through texel views (CPU devices:
// runtime/ops.c); see norm.glsl.
#define NORM_SUBGROUP 1
#define EG_TEXEL 1
#include "norm.glsl"
