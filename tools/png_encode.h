/* PNG encoding of 8-bit RGB pixels to memory, with libpng: for writing drawn scenes to files and
 * for sending images in requests, where the bytes go over the network rather than to a file. */
#ifndef EGRET_PNG_ENCODE_H
#define EGRET_PNG_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

/* Encodes w x h pixels (rgb: row-major, 3 bytes per pixel, no row padding) as an 8-bit RGB,
 * non-interlaced PNG. On success *out is a malloc'd buffer of *out_len bytes (the caller frees
 * it) and the result is 0; on failure *out is NULL, *out_len 0, err says why and the result is
 * -1. Sizes outside 1..PNG's 2^31-1 limit (and overflowing w * h * 3) are refused. Thread-safe. */
int eg_png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len,
                      EgError *err);

#endif
