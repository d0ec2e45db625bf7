#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// matvec_shared.comp with 64-bit loads (shaderInt64); see matvec64.comp and matvec.glsl.
#define MV_SUBGROUP 0
#define MV_LOAD64 1
#include "matvec.glsl"
