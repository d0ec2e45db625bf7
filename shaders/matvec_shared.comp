#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// Matrix-vector product for decode on devices without subgroup arithmetic: the same as
// matvec.comp, reducing through shared memory; see matvec.glsl.
#define MV_SUBGROUP 0
#define MV_LOAD64 0
#include "matvec.glsl"
