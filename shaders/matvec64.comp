#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// matvec.comp with its vectors loaded as 64-bit components, for devices with shaderInt64 where
// that is faster (CPU implementations); a separate module because the Int64 capability it
// declares is invalid on devices without the feature. See matvec.glsl.
#define MV_SUBGROUP 1
#define MV_LOAD64 1
#include "matvec.glsl"
