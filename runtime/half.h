/* Conversions between IEEE half (fp16), bfloat16 and float, done on the host when weights are
 * uploaded and when results are read back. Round-to-nearest-even, NaN and Inf preserved. */
#ifndef EGRET_HALF_H
#define EGRET_HALF_H

#include <stdint.h>

float eg_f16_to_f32(uint16_t h);
uint16_t eg_f32_to_f16(float f);
float eg_bf16_to_f32(uint16_t b);

#endif
