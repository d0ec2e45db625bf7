/* Decoding of request images (PNG, JPEG, BMP, GIF, TGA) from bytes in memory into 8-bit RGB.
 *
 * The service receives image bytes over the network, so everything here assumes hostile input:
 * the format is detected from magic bytes (never from a name), the dimensions are read from the
 * header and checked against EgImageLimits before any pixel buffer is allocated, and truncated or
 * corrupt data is an error that names the format and the problem.
 *
 * The result mirrors what the reference pipeline (HF IdeficsImageProcessor on PIL) feeds the
 * resize: RGB, with any alpha composited over white. Where PIL's behaviour is defined we match it
 * bit for bit; the few places where we deliberately differ are listed in image_decode.c. */
#ifndef EGRET_IMAGE_DECODE_H
#define EGRET_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

/* Decompression-bomb guards, checked against the header before decoding. An image is refused
 * when any one of them is exceeded. */
typedef struct EgImageLimits {
    uint32_t max_width;  /* pixels */
    uint32_t max_height; /* pixels */
    uint64_t max_pixels; /* width * height */
    /* Pixel memory the decode may hold at once, counted as EG_IMAGE_BYTES_PER_PIXEL per pixel
     * (up to 4 bytes of decoder output plus the 3-byte RGB result). */
    uint64_t max_bytes;
} EgImageLimits;

#define EG_IMAGE_BYTES_PER_PIXEL 7u

/* Defaults: 16384 pixels per side, 50 Mpixel (a 48/50 MP phone photo still decodes), and
 * 400 MB of pixel memory (so max_pixels is the limit that binds first). */
#define EG_IMAGE_DEFAULT_MAX_SIDE 16384u
#define EG_IMAGE_DEFAULT_MAX_PIXELS 50000000ull
#define EG_IMAGE_DEFAULT_MAX_BYTES 400000000ull

void eg_image_limits_default(EgImageLimits *limits);

typedef struct EgImage {
    uint32_t width, height;
    uint8_t *rgb; /* width * height * 3 bytes, row-major, alpha composited over white */
} EgImage;

/* Decodes one image. limits may be NULL (defaults). On success fills *out (free it with
 * eg_image_free) and returns 0; on failure leaves *out zeroed, fills err and returns -1.
 * Unknown formats (and empty input) fail with "unrecognized image format". Thread-safe. */
int eg_image_decode(const void *data, size_t len, const EgImageLimits *limits, EgImage *out,
                    EgError *err);

/* What eg_image_decode checks before it decodes, without decoding: the format, the header's
 * size against limits (the same messages), and for JPEG, GIF, BMP and TGA that the file's
 * structure is complete. Fills the declared size and returns 0, or fails like eg_image_decode.
 * Linear in len, and cheap next to decoding. Thread-safe. */
int eg_image_probe(const void *data, size_t len, const EgImageLimits *limits, uint32_t *width,
                   uint32_t *height, EgError *err);

/* Frees the pixels and zeroes the struct; safe on a zeroed struct and on NULL. */
void eg_image_free(EgImage *img);

#endif
