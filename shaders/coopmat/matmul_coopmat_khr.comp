#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_cooperative_matrix : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// The cooperative-matrix matmul with VK_KHR_cooperative_matrix (glslang 13 or newer: built only
// with -DEGRET_GLSLANG=...). See matmul_coopmat.glsl.
#define CM_A coopmat<float16_t, gl_ScopeSubgroup, CM, CK, gl_MatrixUseA>
#define CM_B coopmat<float16_t, gl_ScopeSubgroup, CK, CN, gl_MatrixUseB>
#define CM_C coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator>
#define CM_ZERO CM_C(0.0)
#define CM_LOAD_A(m, arr, i, stride) coopMatLoad(m, arr, i, stride, gl_CooperativeMatrixLayoutRowMajor)
#define CM_LOAD_B(m, arr, i, stride) coopMatLoad(m, arr, i, stride, gl_CooperativeMatrixLayoutColumnMajor)
#define CM_MULADD(a, b, c) coopMatMulAdd(a, b, c)
#define CM_STORE_C(m, arr, i, stride) coopMatStore(m, arr, i, stride, gl_CooperativeMatrixLayoutRowMajor)
#include "matmul_coopmat.glsl"
