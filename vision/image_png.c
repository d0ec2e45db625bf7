/* PNG through libpng's classic API.
 *
 * Not the simplified png_image API: it treats 16-bit data as linear light and applies gAMA/sRGB
 * gamma when reducing to 8 bits, while PIL (our reference) ignores colour management and keeps
 * the high byte. With the classic API we choose every transform ourselves:
 * palette -> RGB, gray 1/2/4 -> 8 bit, tRNS -> alpha (except for RGB, see image_decode.c),
 * 16 -> 8 bit by keeping the high byte (png_set_strip_16, what PIL does). Gamma, ICC profiles and
 * text chunks are skipped unread (their CRC is still checked).
 *
 * libpng reports errors by longjmp. All state that must survive the jump lives in a PngState
 * owned by the caller of the function that calls setjmp, so nothing depends on the value of an
 * automatic variable modified between setjmp and longjmp. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vision/image_internal.h"

/* Cap on what libpng may allocate for one ancillary chunk (iCCP, zTXt, ...): we skip those chunks,
 * so this only bounds work on hostile input. */
#define PNG_CHUNK_MALLOC_MAX (8u << 20)

typedef struct PngState {
    const uint8_t *data;
    size_t len, pos;
    int truncated;     /* the read callback ran out of data */
    int out_of_memory; /* our own allocation failed */
    char libpng_msg[200];
    png_structp png;
    png_infop info;
    const EgImageLimits *limits;
    uint8_t *pixels; /* decoder output, later converted in place to RGB */
    png_bytep *rows;
    uint32_t width, height;
    int channels;
} PngState;

static void on_error(png_structp png, png_const_charp msg) {
    PngState *st = png_get_error_ptr(png);
    snprintf(st->libpng_msg, sizeof st->libpng_msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings are about things libpng recovered from (bad CRC in an ancillary chunk, ...): the
 * image is still decodable, so they are not worth failing a request over. */
static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep dst, size_t n) {
    PngState *st = png_get_io_ptr(png);
    if (n > st->len - st->pos) {
        st->truncated = 1;
        png_error(png, "read past the end of the data");
    }
    memcpy(dst, st->data + st->pos, n);
    st->pos += n;
}

static png_uint_32 clamp_png_limit(uint32_t v) {
    return v > PNG_UINT_31_MAX ? PNG_UINT_31_MAX : v;
}

/* Everything that can longjmp. Returns 0, or -1 with st's flags / libpng_msg saying why. */
static int read_png(PngState *st) {
    if (setjmp(png_jmpbuf(st->png))) return -1;

    png_set_read_fn(st->png, st, on_read);
    /* Backstop only: the caller checked IHDR's size against the limits already. */
    png_set_user_limits(st->png, clamp_png_limit(st->limits->max_width),
                        clamp_png_limit(st->limits->max_height));
    png_set_chunk_malloc_max(st->png, PNG_CHUNK_MALLOC_MAX);
    png_set_keep_unknown_chunks(st->png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(st->png, st->info);

    png_uint_32 width, height;
    int depth, color, interlace;
    png_get_IHDR(st->png, st->info, &width, &height, &depth, &color, &interlace, NULL, NULL);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(st->png); /* + tRNS alpha */
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(st->png);
    if (png_get_valid(st->png, st->info, PNG_INFO_tRNS) && color != PNG_COLOR_TYPE_RGB)
        png_set_tRNS_to_alpha(st->png);
    if (depth == 16) png_set_strip_16(st->png);
    png_set_interlace_handling(st->png);
    png_read_update_info(st->png, st->info);

    st->width = width;
    st->height = height;
    st->channels = png_get_channels(st->png, st->info);
    size_t rowbytes = png_get_rowbytes(st->png, st->info);
    if (st->channels < 1 || st->channels > 4 || rowbytes != (size_t)width * st->channels)
        png_error(st->png, "unexpected row layout after transforms");

    /* One buffer big enough for the decoder's rows and for the RGB result, converted in place. */
    size_t per_pixel = st->channels > 3 ? (size_t)st->channels : 3;
    st->pixels = malloc((size_t)width * height * per_pixel);
    st->rows = malloc((size_t)height * sizeof *st->rows);
    if (!st->pixels || !st->rows) {
        st->out_of_memory = 1;
        return -1;
    }
    for (png_uint_32 y = 0; y < height; y++)
        st->rows[y] = st->pixels + (size_t)y * rowbytes;
    png_read_image(st->png, st->rows);
    /* Reads up to IEND, so a file cut after the last IDAT is still reported as truncated. */
    png_read_end(st->png, NULL);
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int eg_image_scan_png(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err) {
    /* IHDR must come first (signature 8, length 4, type 4, then width and height): read the
     * size ourselves so a bomb is refused with our message before libpng is even set up. */
    if (len < 8 + 8 + 13 + 4) return eg_fail(err, "PNG: truncated data (%zu bytes)", len);
    if (be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return eg_fail(err, "PNG: corrupt data (first chunk is not IHDR)");
    if (eg_image_check_limits(EG_IMAGE_PNG, be32(data + 16), be32(data + 20), limits, err) != 0)
        return -1;
    hdr->width = be32(data + 16);
    hdr->height = be32(data + 20);
    hdr->stb_channels = 0;
    return 0;
}

int eg_image_decode_png(const uint8_t *data, size_t len, const EgImageLimits *limits, EgImage *out,
                        EgError *err) {
    EgImageHeader hdr;
    if (eg_image_scan_png(data, len, limits, &hdr, err) != 0) return -1;

    PngState st;
    memset(&st, 0, sizeof st);
    st.data = data;
    st.len = len;
    st.limits = limits;
    st.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, on_error, on_warning);
    if (st.png) st.info = png_create_info_struct(st.png);
    int rc = -1;
    if (!st.png || !st.info)
        eg_fail(err, "PNG: out of memory");
    else if (read_png(&st) != 0) {
        if (st.out_of_memory)
            eg_fail(err, "PNG: out of memory for a %ux%u image", (unsigned)st.width,
                    (unsigned)st.height);
        else if (st.truncated)
            eg_fail(err, "PNG: truncated data (%zu bytes; libpng: %s)", len, st.libpng_msg);
        else
            eg_fail(err, "PNG: corrupt data (libpng: %s)", st.libpng_msg);
    } else {
        size_t n = (size_t)st.width * st.height;
        eg_image_to_rgb(st.pixels, st.channels, n, st.pixels);
        if (st.channels == 4) {
            uint8_t *shrunk = realloc(st.pixels, n * 3);
            if (shrunk) st.pixels = shrunk;
        }
        out->width = st.width;
        out->height = st.height;
        out->rgb = st.pixels;
        st.pixels = NULL;
        rc = 0;
    }
    png_destroy_read_struct(&st.png, &st.info, NULL);
    free(st.rows);
    free(st.pixels);
    return rc;
}
