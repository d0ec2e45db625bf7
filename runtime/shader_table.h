/* The SPIR-V of every compute shader, compiled by glslc at build time (shaders/embed.cmake). */
#ifndef EGRET_SHADER_TABLE_H
#define EGRET_SHADER_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct EgShaderBlob {
    const char *name; /* file name without .comp */
    int f16;          /* 1: compiled with EG_F16=1 (half-precision storage) */
    const uint32_t *code;
    size_t size; /* bytes */
} EgShaderBlob;

extern const EgShaderBlob eg_shader_table[];
extern const int eg_shader_table_count;

#endif
