/* PNG encoding through libpng's classic write API with a memory sink.
 *
 * libpng reports errors by longjmp, so everything that must survive the jump (the growing output
 * buffer, the row pointers, the reason for failing) lives in a PngSink owned by the caller of the
 * function that calls setjmp; no automatic variable is modified between setjmp and longjmp. */
#include "tools/png_encode.h"
#include "runtime/buf.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct PngSink {
    EgBuf out;
    int out_of_memory;
    char libpng_msg[200];
    png_structp png;
    png_infop info;
    png_bytep *rows;
} PngSink;

static void on_error(png_structp png, png_const_charp msg) {
    PngSink *s = png_get_error_ptr(png);
    snprintf(s->libpng_msg, sizeof s->libpng_msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Writing from our own validated parameters, libpng has nothing to warn about that would make
 * the output wrong; stay quiet rather than print to the service's stderr. */
static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_write(png_structp png, png_bytep src, size_t n) {
    PngSink *s = png_get_io_ptr(png);
    if (eg_buf_append(&s->out, src, n)) {
        s->out_of_memory = 1;
        png_error(png, "out of memory");
    }
}

static void on_flush(png_structp png) {
    (void)png;
}

/* Everything that can longjmp. Returns 0, or -1 with s's flags / libpng_msg saying why. */
static int write_png(PngSink *s, const uint8_t *rgb, int w, int h) {
    if (setjmp(png_jmpbuf(s->png))) return -1;
    png_set_write_fn(s->png, s, on_write, on_flush);
    png_set_IHDR(s->png, s->info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(s->png, s->info);
    for (int y = 0; y < h; y++) /* libpng wants non-const rows but only reads them */
        s->rows[y] = (png_bytep)(uintptr_t)(rgb + (size_t)y * (size_t)w * 3);
    png_write_image(s->png, s->rows);
    png_write_end(s->png, NULL);
    return 0;
}

int eg_png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len,
                      EgError *err) {
    *out = NULL;
    *out_len = 0;
    if (!rgb) return eg_fail(err, "PNG encode: no pixels");
    /* PNG stores sizes as 31-bit values; also keep w * h * 3 and the row table within size_t. */
    if (w < 1 || h < 1 || (uint64_t)w > PNG_UINT_31_MAX || (uint64_t)h > PNG_UINT_31_MAX ||
        (size_t)w > SIZE_MAX / 3 / (size_t)h || (size_t)h > SIZE_MAX / sizeof(png_bytep))
        return eg_fail(err, "PNG encode: invalid image size %dx%d", w, h);

    PngSink s;
    memset(&s, 0, sizeof s);
    s.rows = malloc((size_t)h * sizeof *s.rows);
    s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning);
    if (s.png) s.info = png_create_info_struct(s.png);
    int rc = -1;
    if (!s.rows || !s.png || !s.info)
        eg_fail(err, "PNG encode: out of memory");
    else if (write_png(&s, rgb, w, h) != 0)
        eg_fail(err, "PNG encode: %s (%dx%d image)",
                s.out_of_memory ? "out of memory" : s.libpng_msg, w, h);
    else
        rc = 0;
    png_destroy_write_struct(s.png ? &s.png : NULL, s.info ? &s.info : NULL);
    free(s.rows);
    if (rc == 0) {
        *out_len = s.out.len;
        *out = (uint8_t *)eg_buf_take(&s.out);
    } else {
        eg_buf_free(&s.out);
    }
    return rc;
}
