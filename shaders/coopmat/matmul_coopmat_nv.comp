#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// The cooperative-matrix matmul with VK_NV_cooperative_matrix (NVIDIA drivers that lack the KHR
// extension; Debian's glslc compiles it). See matmul_coopmat.glsl.
#define CM_A fcoopmatNV<16, gl_ScopeSubgroup, CM, CK>
#define CM_B fcoopmatNV<16, gl_ScopeSubgroup, CK, CN>
#define CM_C fcoopmatNV<32, gl_ScopeSubgroup, CM, CN>
#define CM_ZERO CM_C(0.0)
#define CM_LOAD_A(m, arr, i, stride) coopMatLoadNV(m, arr, i, stride, false)
#define CM_LOAD_B(m, arr, i, stride) coopMatLoadNV(m, arr, i, stride, true)
#define CM_MULADD(a, b, c) coopMatMulAddNV(a, b, c)
#define CM_STORE_C(m, arr, i, stride) coopMatStoreNV(m, arr, i, stride, false)
#include "matmul_coopmat.glsl"
