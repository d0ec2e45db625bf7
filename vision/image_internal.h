/* Internals shared by the image decoders (image_decode.c dispatches, image_png.c decodes PNG
 * through libpng, image_headers.c validates the other formats' structure, image_stb.c decodes
 * them through stb_image). Not part of the public API. */
#ifndef EGRET_IMAGE_INTERNAL_H
#define EGRET_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"
#include "vision/image_decode.h"

typedef enum EgImageFormat {
    EG_IMAGE_PNG,
    EG_IMAGE_JPEG,
    EG_IMAGE_GIF,
    EG_IMAGE_BMP,
    EG_IMAGE_TGA,
} EgImageFormat;

const char *eg_image_format_name(EgImageFormat format);

/* Fails (naming the format, the size and the limit that is exceeded) unless a width x height
 * image fits in *limits. */
int eg_image_check_limits(EgImageFormat format, uint64_t width, uint64_t height,
                          const EgImageLimits *limits, EgError *err);

/* Converts n pixels of 8-bit gray (1), gray+alpha (2), RGB (3) or RGBA (4) samples to RGB with
 * alpha composited over white. src and rgb may be the same buffer (the conversion never writes
 * ahead of what it reads). */
void eg_image_to_rgb(const uint8_t *src, int channels, size_t n, uint8_t *rgb);

/* What a header scan learned: the size stb_image will allocate for, and how many channels to
 * ask stb for (0 = the file's own). */
typedef struct EgImageHeader {
    uint32_t width, height;
    int stb_channels;
} EgImageHeader;

/* Structural checks for the stb formats, run before stb sees the data: they read the dimensions
 * from the header and check them against *limits as soon as they are known, then make sure the
 * data is complete, because stb_image reads zeros past the end of its input instead of failing on
 * truncated files. */
int eg_image_scan_jpeg(const uint8_t *data, size_t len, const EgImageLimits *limits,
                       EgImageHeader *hdr, EgError *err);
int eg_image_scan_gif(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err);
int eg_image_scan_bmp(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err);
int eg_image_scan_tga(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err);
/* PNG's size, from its IHDR (libpng checks the rest while it decodes). */
int eg_image_scan_png(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err);

/* True when the bytes look enough like a TGA header to try decoding them (TGA has no magic). */
int eg_image_looks_like_tga(const uint8_t *data, size_t len);

int eg_image_decode_png(const uint8_t *data, size_t len, const EgImageLimits *limits, EgImage *out,
                        EgError *err);

/* Decodes an already scanned (and limit-checked) JPEG/GIF/BMP/TGA through stb_image. */
int eg_image_decode_stb(EgImageFormat format, const uint8_t *data, size_t len,
                        const EgImageHeader *hdr, EgImage *out, EgError *err);

#endif
