#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// Matrix-vector product for decode, reducing with subgroupAdd; see matvec.glsl.
#define MV_SUBGROUP 1
#define MV_LOAD64 0
#include "matvec.glsl"
