/* Format detection, limits and the conversion to RGB shared by every decoder.
 *
 * Reference behaviour: HF IdeficsImageProcessor returns RGB-mode PIL images unchanged and turns
 * every other mode into RGBA, composites it over opaque white (Image.alpha_composite) and drops
 * the alpha. We follow that, with these deliberate differences from PIL 9.4:
 * - 16-bit gray PNGs: PIL opens them as mode "I" and its I->RGB conversion clips every value above
 *   255 to white, which is useless; we keep the high byte, as PIL itself does for 16-bit RGB, RGBA
 *   and gray+alpha PNGs (so every 16-bit PNG is reduced the same way).
 * - 2- and 4-bit gray PNGs with a non-zero tRNS colour key: PIL compares the raw key with the
 *   already scaled 8-bit values, so the key never matches; we apply it as the PNG spec says.
 * - JPEG goes through stb_image, not libjpeg: IDCT and chroma upsampling differ slightly, so
 *   pixels differ by up to a few levels (on the reference JPEG 0.1 level on average).
 * - Corrupt files PIL would still open (a palette index past a BMP's palette, a GIF without its
 *   trailer, a JPEG without its end marker) are refused.
 * Like PIL (and the reference), an RGB PNG's tRNS colour key is ignored: RGB images are not
 * composited. */
#include "vision/image_decode.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vision/image_internal.h"

void eg_image_limits_default(EgImageLimits *limits) {
    limits->max_width = EG_IMAGE_DEFAULT_MAX_SIDE;
    limits->max_height = EG_IMAGE_DEFAULT_MAX_SIDE;
    limits->max_pixels = EG_IMAGE_DEFAULT_MAX_PIXELS;
    limits->max_bytes = EG_IMAGE_DEFAULT_MAX_BYTES;
}

const char *eg_image_format_name(EgImageFormat format) {
    switch (format) {
    case EG_IMAGE_PNG:
        return "PNG";
    case EG_IMAGE_JPEG:
        return "JPEG";
    case EG_IMAGE_GIF:
        return "GIF";
    case EG_IMAGE_BMP:
        return "BMP";
    case EG_IMAGE_TGA:
        return "TGA";
    }
    return "image";
}

int eg_image_check_limits(EgImageFormat format, uint64_t width, uint64_t height,
                          const EgImageLimits *limits, EgError *err) {
    const char *name = eg_image_format_name(format);
    if (width == 0 || height == 0)
        return eg_fail(err, "%s: invalid image size %" PRIu64 "x%" PRIu64, name, width, height);
    if (width > limits->max_width)
        return eg_fail_kind(err, EG_ERROR_LIMIT,
                       "%s: image is %" PRIu64 "x%" PRIu64 ", wider than the limit of %" PRIu32
                       " pixels (max_width)",
                       name, width, height, limits->max_width);
    if (height > limits->max_height)
        return eg_fail_kind(err, EG_ERROR_LIMIT,
                       "%s: image is %" PRIu64 "x%" PRIu64 ", taller than the limit of %" PRIu32
                       " pixels (max_height)",
                       name, width, height, limits->max_height);
    /* Both sides are below 2^32, so the products cannot overflow 64 bits. */
    uint64_t pixels = width * height;
    if (pixels > limits->max_pixels)
        return eg_fail_kind(err, EG_ERROR_LIMIT,
                       "%s: image is %" PRIu64 "x%" PRIu64 " = %" PRIu64
                       " pixels, over the limit of %" PRIu64 " (max_pixels)",
                       name, width, height, pixels, limits->max_pixels);
    uint64_t bytes = pixels * EG_IMAGE_BYTES_PER_PIXEL;
    if (bytes / EG_IMAGE_BYTES_PER_PIXEL != pixels || bytes > limits->max_bytes)
        return eg_fail_kind(err, EG_ERROR_LIMIT,
                       "%s: image is %" PRIu64 "x%" PRIu64 ", needing %" PRIu64
                       " bytes to decode, over the limit of %" PRIu64 " (max_bytes)",
                       name, width, height, bytes, limits->max_bytes);
    if (pixels * 4 > SIZE_MAX)
        return eg_fail(err, "%s: image is %" PRIu64 "x%" PRIu64 ", too large for this machine",
                       name, width, height);
    return 0;
}

/* out = c*a/255 + 255*(255-a)/255, rounded to nearest. PIL's alpha_composite over an opaque
 * white background computes the same thing with 7-bit fixed point (coef1 = a*128,
 * SHIFTFORDIV255); the two agree on all 65536 (c, a) pairs. */
static inline uint8_t over_white(uint32_t c, uint32_t a) {
    return (uint8_t)((c * a + 255u * (255u - a) + 127u) / 255u);
}

void eg_image_to_rgb(const uint8_t *src, int channels, size_t n, uint8_t *rgb) {
    switch (channels) {
    case 1:
        /* In place the output is 3x the input: go backwards so nothing unread is overwritten. */
        for (size_t i = n; i-- > 0;) {
            uint8_t g = src[i];
            rgb[3 * i + 0] = g;
            rgb[3 * i + 1] = g;
            rgb[3 * i + 2] = g;
        }
        break;
    case 2:
        for (size_t i = n; i-- > 0;) {
            uint8_t g = over_white(src[2 * i], src[2 * i + 1]);
            rgb[3 * i + 0] = g;
            rgb[3 * i + 1] = g;
            rgb[3 * i + 2] = g;
        }
        break;
    case 3:
        if (rgb != src) memcpy(rgb, src, n * 3);
        break;
    case 4:
        /* Output is smaller than input: forwards is safe in place. */
        for (size_t i = 0; i < n; i++) {
            uint32_t a = src[4 * i + 3];
            uint8_t r = over_white(src[4 * i + 0], a);
            uint8_t g = over_white(src[4 * i + 1], a);
            uint8_t b = over_white(src[4 * i + 2], a);
            rgb[3 * i + 0] = r;
            rgb[3 * i + 1] = g;
            rgb[3 * i + 2] = b;
        }
        break;
    }
}

static int starts_with(const uint8_t *data, size_t len, const char *magic, size_t n) {
    return len >= n && memcmp(data, magic, n) == 0;
}

/* Magic bytes first; TGA has none, so it is tried last and only when its header is plausible
 * (see eg_image_looks_like_tga), which keeps random bytes "unrecognized". */
static int detect(const uint8_t *data, size_t len, EgImageFormat *format) {
    if (starts_with(data, len, "\x89PNG\r\n\x1a\n", 8))
        *format = EG_IMAGE_PNG;
    else if (starts_with(data, len, "\xff\xd8\xff", 3))
        *format = EG_IMAGE_JPEG;
    else if (starts_with(data, len, "GIF87a", 6) || starts_with(data, len, "GIF89a", 6))
        *format = EG_IMAGE_GIF;
    else if (starts_with(data, len, "BM", 2))
        *format = EG_IMAGE_BMP;
    else if (eg_image_looks_like_tga(data, len))
        *format = EG_IMAGE_TGA;
    else
        return -1;
    return 0;
}

/* Detects the format and checks the header (and, for the stb formats, the file's structure)
 * against the limits. */
static int scan(const uint8_t *bytes, size_t len, const EgImageLimits *limits,
                EgImageFormat *format, EgImageHeader *hdr, EgError *err) {
    if (!bytes || len == 0) return eg_fail(err, "unrecognized image format (empty input)");
    if (detect(bytes, len, format) != 0) {
        char head[3 * 8] = "";
        for (size_t i = 0, at = 0; i < len && i < 8; i++)
            at += (size_t)snprintf(head + at, sizeof head - at, "%s%02x", i ? " " : "", bytes[i]);
        return eg_fail(err,
                       "unrecognized image format (%zu bytes starting %s; supported: PNG, JPEG, "
                       "GIF, BMP, TGA)",
                       len, head);
    }
    switch (*format) {
    case EG_IMAGE_PNG:
        return eg_image_scan_png(bytes, len, limits, hdr, err);
    case EG_IMAGE_JPEG:
        return eg_image_scan_jpeg(bytes, len, limits, hdr, err);
    case EG_IMAGE_GIF:
        return eg_image_scan_gif(bytes, len, limits, hdr, err);
    case EG_IMAGE_BMP:
        return eg_image_scan_bmp(bytes, len, limits, hdr, err);
    case EG_IMAGE_TGA:
        break;
    }
    return eg_image_scan_tga(bytes, len, limits, hdr, err);
}

int eg_image_probe(const void *data, size_t len, const EgImageLimits *limits, uint32_t *width,
                   uint32_t *height, EgError *err) {
    EgImageLimits defaults;
    if (!limits) {
        eg_image_limits_default(&defaults);
        limits = &defaults;
    }
    EgImageFormat format;
    EgImageHeader hdr;
    if (scan(data, len, limits, &format, &hdr, err) != 0) return -1;
    *width = hdr.width;
    *height = hdr.height;
    return 0;
}

int eg_image_decode(const void *data, size_t len, const EgImageLimits *limits, EgImage *out,
                    EgError *err) {
    const uint8_t *bytes = data;
    EgImageLimits defaults;
    if (!out) return eg_fail(err, "image decode: no output image");
    memset(out, 0, sizeof *out);
    if (!limits) {
        eg_image_limits_default(&defaults);
        limits = &defaults;
    }
    EgImageFormat format;
    EgImageHeader hdr;
    if (scan(bytes, len, limits, &format, &hdr, err) != 0) return -1;
    if (format == EG_IMAGE_PNG) return eg_image_decode_png(bytes, len, limits, out, err);
    return eg_image_decode_stb(format, bytes, len, &hdr, out, err);
}

void eg_image_free(EgImage *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}
