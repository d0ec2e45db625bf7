// The packed 8-bit integer dot product of VK_KHR_shader_integer_dot_product (SPIR-V
// OpSDotKHR), declared through GL_EXT_spirv_intrinsics: Debian's glslc (glslang 11.13) does
// not know GL_EXT_integer_dot_product. Only for pipelines built where the device enabled the
// shaderIntegerDotProduct feature (runtime/vk_context.c, EgVk.int_dot).
#extension GL_EXT_spirv_intrinsics : require

// OpSDotKHR (4450) with capabilities DotProductKHR (6019) and DotProductInput4x8BitPackedKHR
// (6018); fmt is the Packed Vector Format, 0 = PackedVectorFormat4x8Bit.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450)
int eg_sdot_packed(uint a, uint b, spirv_literal int fmt);

// Sum of the products of the four signed bytes of a with those of b, exact in int32.
int eg_sdot4(uint a, uint b) { return eg_sdot_packed(a, b, 0); }
