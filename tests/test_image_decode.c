/* Image decoding: every PNG variant (written here with libpng's own writer, random pixels) must
 * decode to exactly the RGB the reference pipeline produces (alpha composited over white);
 * JPEG/GIF/BMP/TGA decode; truncated, corrupt, oversized and unrecognizable input is refused with
 * a message that says why, and never crashes. */
#include <dirent.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/hash.h"
#include "test_util.h"
#include "vision/image_decode.h"

static uint32_t rnd(uint32_t n) {
    return (uint32_t)(test_rng_u64() % n);
}

/* Composite over white with exact rounding, computed independently of the decoder. */
static uint8_t over_white(int c, int a) {
    double v = (c * a + 255.0 * (255 - a)) / 255.0;
    return (uint8_t)(v + 0.5);
}

/* ---- PNG writer (libpng) ---- */

typedef struct Buf {
    unsigned char *data;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_u8(Buf *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    buf_put(b, &c, 1);
}

static void buf_le16(Buf *b, unsigned v) {
    buf_u8(b, v & 0xff);
    buf_u8(b, (v >> 8) & 0xff);
}

static void buf_le32(Buf *b, uint32_t v) {
    buf_le16(b, v & 0xffff);
    buf_le16(b, v >> 16);
}

static void png_mem_write(png_structp png, png_bytep data, size_t n) {
    buf_put(png_get_io_ptr(png), data, n);
}

static void png_mem_flush(png_structp png) {
    (void)png;
}

typedef struct PngCase {
    int width, height, color, depth, interlace;
    int trans;     /* write a tRNS chunk */
    int ancillary; /* add gAMA and tEXt chunks, which must not change the pixels */
    int num_palette;
    png_color palette[256];
    int num_trans;
    png_byte trans_alpha[256];
    png_color_16 trans_color;
    uint16_t *samples; /* width * height * channels raw sample values */
} PngCase;

static int png_channels(int color) {
    switch (color) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
        return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        return 2;
    case PNG_COLOR_TYPE_RGB:
        return 3;
    default:
        return 4;
    }
}

/* Packs one row of samples at the case's bit depth (MSB first below 8 bits, big-endian at 16). */
static void pack_row(const PngCase *pc, int y, unsigned char *row) {
    int ch = png_channels(pc->color), n = pc->width * ch;
    const uint16_t *s = pc->samples + (size_t)y * n;
    if (pc->depth == 16) {
        for (int i = 0; i < n; i++) {
            row[2 * i] = (unsigned char)(s[i] >> 8);
            row[2 * i + 1] = (unsigned char)s[i];
        }
    } else if (pc->depth == 8) {
        for (int i = 0; i < n; i++)
            row[i] = (unsigned char)s[i];
    } else {
        memset(row, 0, (size_t)(n * pc->depth + 7) / 8);
        for (int i = 0; i < n; i++) {
            int bit = i * pc->depth;
            row[bit / 8] |= (unsigned char)(s[i] << (8 - pc->depth - bit % 8));
        }
    }
}

static int write_png_rows(png_structp png, png_infop info, const PngCase *pc, unsigned char *row,
                          Buf *out) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_write_fn(png, out, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, pc->width, pc->height, pc->depth, pc->color,
                 pc->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pc->color == PNG_COLOR_TYPE_PALETTE) png_set_PLTE(png, info, pc->palette, pc->num_palette);
    if (pc->trans)
        png_set_tRNS(png, info, pc->trans_alpha, pc->num_trans,
                     pc->color == PNG_COLOR_TYPE_PALETTE ? NULL : &pc->trans_color);
    if (pc->ancillary) {
        png_set_gAMA(png, info, 1.0); /* linear: a colour-managed decoder would brighten */
        png_text text = {0};
        text.compression = PNG_TEXT_COMPRESSION_NONE;
        text.key = "Comment";
        text.text = "written by test_image_decode";
        png_set_text(png, info, &text, 1);
    }
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < pc->height; y++) {
            pack_row(pc, y, row);
            png_write_row(png, row);
        }
    png_write_end(png, NULL);
    return 0;
}

static unsigned char *write_png(const PngCase *pc, size_t *len) {
    Buf out = {0};
    unsigned char *row = malloc((size_t)pc->width * 8 + 8);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    int rc = write_png_rows(png, info, pc, row, &out);
    png_destroy_write_struct(&png, &info);
    free(row);
    if (rc != 0) {
        free(out.data);
        return NULL;
    }
    *len = out.len;
    return out.data;
}

static int to8(int v, int depth) {
    if (depth == 16) return v >> 8; /* the high byte, as PIL */
    if (depth == 8) return v;
    return v * 255 / ((1 << depth) - 1);
}

/* What the reference pipeline makes of the case's samples. */
static void expected_rgb(const PngCase *pc, uint8_t *rgb) {
    int ch = png_channels(pc->color);
    for (int i = 0; i < pc->width * pc->height; i++) {
        const uint16_t *s = pc->samples + (size_t)i * ch;
        uint8_t *o = rgb + 3 * i;
        int r, g, b, a = 255;
        switch (pc->color) {
        case PNG_COLOR_TYPE_GRAY:
            r = g = b = to8(s[0], pc->depth);
            if (pc->trans && s[0] == pc->trans_color.gray) a = 0;
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
            r = g = b = to8(s[0], pc->depth);
            a = to8(s[1], pc->depth);
            break;
        case PNG_COLOR_TYPE_PALETTE:
            r = pc->palette[s[0]].red;
            g = pc->palette[s[0]].green;
            b = pc->palette[s[0]].blue;
            if (pc->trans && s[0] < pc->num_trans) a = pc->trans_alpha[s[0]];
            break;
        case PNG_COLOR_TYPE_RGB: /* a tRNS colour key is ignored for RGB, as in the reference */
            r = to8(s[0], pc->depth);
            g = to8(s[1], pc->depth);
            b = to8(s[2], pc->depth);
            break;
        default:
            r = to8(s[0], pc->depth);
            g = to8(s[1], pc->depth);
            b = to8(s[2], pc->depth);
            a = to8(s[3], pc->depth);
            break;
        }
        o[0] = over_white(r, a);
        o[1] = over_white(g, a);
        o[2] = over_white(b, a);
    }
}

/* A random image of the given kind. Alpha and palette indices are biased to hit the extremes
 * (fully transparent / opaque) as well as everything between. */
static void make_case(PngCase *pc, int color, int depth, int interlace, int trans) {
    memset(pc, 0, sizeof *pc);
    pc->width = 1 + (int)rnd(37);
    pc->height = 1 + (int)rnd(29);
    pc->color = color;
    pc->depth = depth;
    pc->interlace = interlace;
    pc->trans = trans;
    int ch = png_channels(color), maxv = (1 << depth) - 1;
    size_t n = (size_t)pc->width * pc->height * ch;
    pc->samples = malloc(n * sizeof *pc->samples);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        pc->num_palette = 1 + (int)rnd((uint32_t)maxv + 1);
        for (int i = 0; i < pc->num_palette; i++) {
            pc->palette[i].red = (png_byte)rnd(256);
            pc->palette[i].green = (png_byte)rnd(256);
            pc->palette[i].blue = (png_byte)rnd(256);
        }
        maxv = pc->num_palette - 1;
        if (trans) {
            pc->num_trans = 1 + (int)rnd((uint32_t)pc->num_palette);
            for (int i = 0; i < pc->num_trans; i++)
                pc->trans_alpha[i] = (png_byte)(i == 0 ? 0 : i == 1 ? 255 : rnd(256));
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t v = rnd((uint32_t)maxv + 1);
        int is_alpha = (ch == 2 && i % 2 == 1) || (ch == 4 && i % 4 == 3);
        if (is_alpha && rnd(4) == 0) v = rnd(2) ? (uint32_t)maxv : 0;
        pc->samples[i] = (uint16_t)v;
    }
    if (trans && color == PNG_COLOR_TYPE_GRAY) {
        pc->trans_color.gray = pc->samples[0]; /* make sure some pixels are keyed out */
    } else if (trans && color == PNG_COLOR_TYPE_RGB) {
        pc->trans_color.red = pc->samples[0];
        pc->trans_color.green = pc->samples[1];
        pc->trans_color.blue = pc->samples[2];
    }
}

static const char *color_name(int color) {
    switch (color) {
    case PNG_COLOR_TYPE_GRAY:
        return "gray";
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        return "gray+alpha";
    case PNG_COLOR_TYPE_PALETTE:
        return "palette";
    case PNG_COLOR_TYPE_RGB:
        return "rgb";
    default:
        return "rgba";
    }
}

static int check_decode(const unsigned char *data, size_t len, int w, int h, const uint8_t *want,
                        const char *what) {
    EgImage img;
    EgError err = {0};
    int rc = eg_image_decode(data, len, NULL, &img, &err);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    if (rc != 0) return 0;
    CHECK((int)img.width == w && (int)img.height == h, "%s: decoded %ux%u, want %dx%d", what,
          (unsigned)img.width, (unsigned)img.height, w, h);
    int same = (int)img.width == w && (int)img.height == h;
    size_t bad = 0, first = 0;
    for (size_t i = 0; same && i < (size_t)w * h * 3; i++)
        if (img.rgb[i] != want[i] && bad++ == 0) first = i;
    CHECK(same && bad == 0, "%s: %zu of %d values differ (first at %zu: got %d want %d)", what, bad,
          w * h * 3, first, same ? img.rgb[first] : -1, want[first]);
    eg_image_free(&img);
    CHECK(img.rgb == NULL && img.width == 0, "eg_image_free zeroes the image");
    return bad == 0;
}

/* Every colour type x bit depth x interlace x tRNS that PNG allows, several random images each. */
static void test_png_variants(void) {
    static const struct {
        int color, depth, trans;
    } kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1, 0},        {PNG_COLOR_TYPE_GRAY, 2, 0},
        {PNG_COLOR_TYPE_GRAY, 4, 0},        {PNG_COLOR_TYPE_GRAY, 8, 0},
        {PNG_COLOR_TYPE_GRAY, 16, 0},       {PNG_COLOR_TYPE_GRAY, 1, 1},
        {PNG_COLOR_TYPE_GRAY, 4, 1},        {PNG_COLOR_TYPE_GRAY, 8, 1},
        {PNG_COLOR_TYPE_GRAY, 16, 1},       {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0},
        {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0}, {PNG_COLOR_TYPE_PALETTE, 1, 0},
        {PNG_COLOR_TYPE_PALETTE, 2, 0},     {PNG_COLOR_TYPE_PALETTE, 4, 0},
        {PNG_COLOR_TYPE_PALETTE, 8, 0},     {PNG_COLOR_TYPE_PALETTE, 2, 1},
        {PNG_COLOR_TYPE_PALETTE, 8, 1},     {PNG_COLOR_TYPE_RGB, 8, 0},
        {PNG_COLOR_TYPE_RGB, 16, 0},        {PNG_COLOR_TYPE_RGB, 8, 1},
        {PNG_COLOR_TYPE_RGB, 16, 1},        {PNG_COLOR_TYPE_RGBA, 8, 0},
        {PNG_COLOR_TYPE_RGBA, 16, 0},
    };
    int cases = 0, passed = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int interlace = 0; interlace < 2; interlace++)
            for (int rep = 0; rep < 3; rep++) {
                PngCase pc;
                make_case(&pc, kinds[k].color, kinds[k].depth, interlace, kinds[k].trans);
                pc.ancillary = rep == 2;
                char what[128];
                snprintf(what, sizeof what, "PNG %s %d-bit%s%s%s %dx%d", color_name(pc.color),
                         pc.depth, pc.trans ? " +tRNS" : "", interlace ? " Adam7" : "",
                         pc.ancillary ? " +gAMA/tEXt" : "", pc.width, pc.height);
                size_t len = 0;
                unsigned char *png = write_png(&pc, &len);
                CHECK(png != NULL, "%s: libpng could not write it", what);
                if (png) {
                    uint8_t *want = malloc((size_t)pc.width * pc.height * 3);
                    expected_rgb(&pc, want);
                    passed += check_decode(png, len, pc.width, pc.height, want, what);
                    free(want);
                }
                cases++;
                free(png);
                free(pc.samples);
            }
    printf("  PNG variants: %d of %d decoded exactly\n", passed, cases);
}

/* The compositing rule itself on a 256x256 gray+alpha image holding every (value, alpha) pair:
 * alpha 255 is the identity, alpha 0 is white, and everything matches exact rounding. */
static void test_alpha_composite_all_pairs(void) {
    PngCase pc;
    memset(&pc, 0, sizeof pc);
    pc.width = 256;
    pc.height = 256;
    pc.color = PNG_COLOR_TYPE_GRAY_ALPHA;
    pc.depth = 8;
    pc.samples = malloc(256 * 256 * 2 * sizeof *pc.samples);
    for (int a = 0; a < 256; a++)
        for (int c = 0; c < 256; c++) {
            pc.samples[(a * 256 + c) * 2] = (uint16_t)c;
            pc.samples[(a * 256 + c) * 2 + 1] = (uint16_t)a;
        }
    size_t len = 0;
    unsigned char *png = write_png(&pc, &len);
    uint8_t *want = malloc(256 * 256 * 3);
    expected_rgb(&pc, want);
    for (int c = 0; c < 256; c++) {
        CHECK(want[(255 * 256 + c) * 3] == c, "alpha 255 must be the identity");
        CHECK(want[c * 3] == 255, "alpha 0 must be white");
    }
    check_decode(png, len, 256, 256, want, "gray+alpha, all 65536 (value, alpha) pairs");
    free(want);
    free(png);
    free(pc.samples);
}

/* ---- reference files ---- */

static unsigned char *read_data(const char *rel, size_t *len) {
    unsigned char *d = test_read_file(test_data_path(rel), len);
    CHECK(d != NULL, "cannot read %s", test_data_path(rel));
    return d;
}

/* Every image in tests/data/preprocess decodes to the size its name states (NAME_WxH[_...]). */
static void test_reference_files(void) {
    DIR *dir = opendir(test_data_path("preprocess"));
    CHECK(dir != NULL, "cannot list %s", test_data_path("preprocess"));
    int files = 0;
    struct dirent *ent;
    while (dir && (ent = readdir(dir)) != NULL) {
        const char *name = ent->d_name, *dot = strrchr(name, '.');
        if (!dot || (strcmp(dot, ".png") != 0 && strcmp(dot, ".jpg") != 0)) continue;
        char rel[300];
        snprintf(rel, sizeof rel, "preprocess/%s", name);
        size_t len = 0;
        unsigned char *data = read_data(rel, &len);
        if (!data) continue;
        files++;
        unsigned w = 0, h = 0;
        const char *size = strchr(name, '_');
        CHECK(size && sscanf(size + 1, "%ux%u", &w, &h) == 2, "%s: no WxH in the name", name);
        EgImage img;
        EgError err = {0};
        int rc = eg_image_decode(data, len, NULL, &img, &err);
        CHECK(rc == 0, "%s: %s", name, err.msg);
        CHECK(rc != 0 || (img.width == w && img.height == h), "%s: %ux%u, want %ux%u", name,
              (unsigned)img.width, (unsigned)img.height, w, h);
        if (rc == 0 && strncmp(name, "gray", 4) == 0) {
            int gray = 1;
            for (size_t p = 0; p < (size_t)w * h; p++)
                gray &=
                    img.rgb[3 * p] == img.rgb[3 * p + 1] && img.rgb[3 * p] == img.rgb[3 * p + 2];
            CHECK(gray, "%s: gray image decodes with r == g == b", name);
        }
        if (rc == 0) {
            int lo = 255, hi = 0;
            for (size_t p = 0; p < (size_t)w * h * 3; p++) {
                if (img.rgb[p] < lo) lo = img.rgb[p];
                if (img.rgb[p] > hi) hi = img.rgb[p];
            }
            CHECK(hi - lo > 50, "%s: decoded pixels span only %d..%d", name, lo, hi);
        }
        eg_image_free(&img);
        free(data);
    }
    if (dir) closedir(dir);
    CHECK(files >= 8, "expected the 8 reference images, found %d", files);
    printf("  reference files: %d decoded at their stated size\n", files);
}

/* ---- hand-made BMP, TGA and GIF files ---- */

static int says(const EgError *err, const char *text) {
    return strstr(err->msg, text) != NULL;
}

typedef struct Rgba {
    uint8_t r, g, b, a;
} Rgba;

static Rgba random_rgba(int with_alpha) {
    Rgba p = {(uint8_t)rnd(256), (uint8_t)rnd(256), (uint8_t)rnd(256), 255};
    if (with_alpha) p.a = (uint8_t)(rnd(3) == 0 ? 0 : rnd(3) == 0 ? 255 : rnd(256));
    return p;
}

/* BMP, 24 or 32 bits (BI_RGB), bottom-up or top-down, rows padded to 4 bytes. In a 32-bit BI_RGB
 * file the fourth byte is padding (PIL reads BGRX), so it is filled with noise that must not
 * show. */
static unsigned char *make_bmp(int w, int h, int bpp, int top_down, const Rgba *px, size_t *len) {
    Buf b = {0};
    size_t stride = ((size_t)w * bpp / 8 + 3) & ~(size_t)3;
    buf_put(&b, "BM", 2);
    buf_le32(&b, (uint32_t)(54 + stride * h));
    buf_le32(&b, 0);
    buf_le32(&b, 54);
    buf_le32(&b, 40);
    buf_le32(&b, (uint32_t)w);
    buf_le32(&b, (uint32_t)(top_down ? -h : h));
    buf_le16(&b, 1);
    buf_le16(&b, (unsigned)bpp);
    buf_le32(&b, 0); /* BI_RGB */
    buf_le32(&b, (uint32_t)(stride * h));
    buf_le32(&b, 2835);
    buf_le32(&b, 2835);
    buf_le32(&b, 0);
    buf_le32(&b, 0);
    for (int r = 0; r < h; r++) {
        int y = top_down ? r : h - 1 - r;
        size_t start = b.len;
        for (int x = 0; x < w; x++) {
            const Rgba *p = &px[y * w + x];
            buf_u8(&b, p->b);
            buf_u8(&b, p->g);
            buf_u8(&b, p->r);
            if (bpp == 32) buf_u8(&b, rnd(256));
        }
        while (b.len - start < stride)
            buf_u8(&b, 0);
    }
    *len = b.len;
    return b.data;
}

/* TGA: type 2 (raw true colour), 10 (RLE true colour), 3 (raw gray) or 1 (colour-mapped).
 * top_left selects the origin bit; 32 bits carry alpha. */
static unsigned char *make_tga(int w, int h, int type, int bpp, int top_left, const Rgba *px,
                               const Rgba *cmap, int cmap_len, const uint8_t *index, size_t *len) {
    Buf b = {0};
    buf_u8(&b, 0);
    buf_u8(&b, type == 1 ? 1 : 0);
    buf_u8(&b, (unsigned)type);
    buf_le16(&b, 0);
    buf_le16(&b, type == 1 ? (unsigned)cmap_len : 0);
    buf_u8(&b, type == 1 ? 24 : 0);
    buf_le16(&b, 0);
    buf_le16(&b, 0);
    buf_le16(&b, (unsigned)w);
    buf_le16(&b, (unsigned)h);
    buf_u8(&b, (unsigned)bpp);
    buf_u8(&b, (top_left ? 0x20u : 0u) | (bpp == 32 ? 8u : 0u));
    for (int i = 0; type == 1 && i < cmap_len; i++) {
        buf_u8(&b, cmap[i].b);
        buf_u8(&b, cmap[i].g);
        buf_u8(&b, cmap[i].r);
    }
    /* Pixels in file order. */
    int n = w * h, i = 0;
    while (i < n) {
        int y = i / w, x = i % w;
        int src = (top_left ? y : h - 1 - y) * w + x;
        if (type == 10) {
            /* A repeat packet where the next pixels are equal (sometimes), else a raw packet. */
            int same = 1;
            while (i + same < n && same < 128 && rnd(4) != 0) {
                int y2 = (i + same) / w, x2 = (i + same) % w;
                const Rgba *a = &px[src], *c = &px[(top_left ? y2 : h - 1 - y2) * w + x2];
                if (memcmp(a, c, sizeof *a) != 0) break;
                same++;
            }
            int run = same > 1 ? same : 1 + (int)rnd(4);
            if (run > n - i) run = n - i;
            buf_u8(&b, (unsigned)((same > 1 ? 0x80 : 0) | (run - 1)));
            for (int k = 0; k < (same > 1 ? 1 : run); k++) {
                int yy = (i + k) / w, xx = (i + k) % w;
                const Rgba *p = &px[(top_left ? yy : h - 1 - yy) * w + xx];
                buf_u8(&b, p->b);
                buf_u8(&b, p->g);
                buf_u8(&b, p->r);
                if (bpp == 32) buf_u8(&b, p->a);
            }
            i += run;
            continue;
        }
        if (type == 1)
            buf_u8(&b, index[src]);
        else if (type == 3)
            buf_u8(&b, px[src].r);
        else {
            buf_u8(&b, px[src].b);
            buf_u8(&b, px[src].g);
            buf_u8(&b, px[src].r);
            if (bpp == 32) buf_u8(&b, px[src].a);
        }
        i++;
    }
    *len = b.len;
    return b.data;
}

/* GIF with a 4-colour global table, optionally a transparent index, and LZW data written as
 * literals only: a clear code before every 2 codes keeps the code width at 3 bits, which any
 * decoder must accept. A second frame of other colours may follow; only the first is used. */
static void gif_image(Buf *b, int w, int h, const uint8_t *index) {
    buf_u8(b, 0x2C);
    buf_le16(b, 0);
    buf_le16(b, 0);
    buf_le16(b, (unsigned)w);
    buf_le16(b, (unsigned)h);
    buf_u8(b, 0);
    buf_u8(b, 2); /* LZW minimum code size: 4 colours */
    Buf codes = {0};
    uint32_t acc = 0;
    int bits = 0;
#define EMIT(code)                                                                                 \
    do {                                                                                           \
        acc |= (uint32_t)(code) << bits;                                                           \
        bits += 3;                                                                                 \
        while (bits >= 8) {                                                                        \
            buf_u8(&codes, acc & 0xff);                                                            \
            acc >>= 8;                                                                             \
            bits -= 8;                                                                             \
        }                                                                                          \
    } while (0)
    for (int i = 0; i < w * h; i++) {
        if (i % 2 == 0) EMIT(4); /* clear */
        EMIT(index[i]);
    }
    EMIT(5); /* end of information */
    if (bits > 0) buf_u8(&codes, acc & 0xff);
#undef EMIT
    for (size_t at = 0; at < codes.len; at += 255) {
        size_t n = codes.len - at < 255 ? codes.len - at : 255;
        buf_u8(b, (unsigned)n);
        buf_put(b, codes.data + at, n);
    }
    buf_u8(b, 0);
    free(codes.data);
}

static unsigned char *make_gif(int w, int h, const Rgba *pal, int transparent, const uint8_t *index,
                               const uint8_t *second, size_t *len) {
    Buf b = {0};
    buf_put(&b, "GIF89a", 6);
    buf_le16(&b, (unsigned)w);
    buf_le16(&b, (unsigned)h);
    buf_u8(&b, 0x80 | 0x10 | 1); /* global table of 2^(1+1) = 4 colours */
    buf_u8(&b, 0);
    buf_u8(&b, 0);
    for (int i = 0; i < 4; i++) {
        buf_u8(&b, pal[i].r);
        buf_u8(&b, pal[i].g);
        buf_u8(&b, pal[i].b);
    }
    if (transparent >= 0) { /* graphic control extension */
        buf_put(&b, "\x21\xF9\x04\x01\x00\x00", 6);
        buf_u8(&b, (unsigned)transparent);
        buf_u8(&b, 0);
    }
    gif_image(&b, w, h, index);
    if (second) gif_image(&b, w, h, second);
    buf_u8(&b, 0x3B);
    *len = b.len;
    return b.data;
}

/* Keeps every file made here for the truncation and corruption tests. */
typedef struct Sample {
    const char *name;
    unsigned char *data;
    size_t len;
    int strict; /* every byte is checksummed: any corruption must be an error */
} Sample;

static Sample samples[32];
static int n_samples;

static void keep_sample(const char *name, unsigned char *data, size_t len, int strict) {
    if (n_samples < (int)(sizeof samples / sizeof samples[0]))
        samples[n_samples++] = (Sample){name, data, len, strict};
    else
        free(data);
}

/* A 4- or 8-bit BMP with a palette of pal_len entries (BGRX), bottom-up. */
static unsigned char *make_bmp_indexed(int w, int h, int bpp, const Rgba *pal, int pal_len,
                                       const uint8_t *index, size_t *len) {
    Buf b = {0};
    size_t stride = (((size_t)w * bpp + 31) / 32) * 4;
    uint32_t offset = (uint32_t)(54 + 4 * pal_len);
    buf_put(&b, "BM", 2);
    buf_le32(&b, (uint32_t)(offset + stride * h));
    buf_le32(&b, 0);
    buf_le32(&b, offset);
    buf_le32(&b, 40);
    buf_le32(&b, (uint32_t)w);
    buf_le32(&b, (uint32_t)h);
    buf_le16(&b, 1);
    buf_le16(&b, (unsigned)bpp);
    buf_le32(&b, 0);
    buf_le32(&b, (uint32_t)(stride * h));
    buf_le32(&b, 2835);
    buf_le32(&b, 2835);
    buf_le32(&b, (uint32_t)pal_len);
    buf_le32(&b, 0);
    for (int i = 0; i < pal_len; i++) {
        buf_u8(&b, pal[i].b);
        buf_u8(&b, pal[i].g);
        buf_u8(&b, pal[i].r);
        buf_u8(&b, 0);
    }
    for (int r = 0; r < h; r++) {
        const uint8_t *row = index + (size_t)(h - 1 - r) * w;
        unsigned char *line = calloc(stride, 1);
        for (int x = 0; x < w; x++)
            line[x * bpp / 8] |= (unsigned char)(row[x] << (8 - bpp - (x * bpp) % 8));
        buf_put(&b, line, stride);
        free(line);
    }
    *len = b.len;
    return b.data;
}

/* Palettes smaller than the bit depth allows are fine as long as every index is inside them;
 * an index past the palette is corrupt data (stb_image would read uninitialized memory). */
static void test_bmp_palette(void) {
    for (int bpp = 4; bpp <= 8; bpp += 4) {
        int w = 1 + (int)rnd(13), h = 1 + (int)rnd(9), pal_len = 5;
        Rgba pal[5];
        for (int i = 0; i < pal_len; i++)
            pal[i] = random_rgba(0);
        uint8_t *index = malloc((size_t)w * h), *want = malloc((size_t)w * h * 3);
        for (int i = 0; i < w * h; i++) {
            index[i] = (uint8_t)rnd((uint32_t)pal_len);
            want[3 * i] = pal[index[i]].r;
            want[3 * i + 1] = pal[index[i]].g;
            want[3 * i + 2] = pal[index[i]].b;
        }
        size_t len;
        unsigned char *bmp = make_bmp_indexed(w, h, bpp, pal, pal_len, index, &len);
        char what[64];
        snprintf(what, sizeof what, "BMP %d-bit, 5-colour palette, %dx%d", bpp, w, h);
        check_decode(bmp, len, w, h, want, what);
        free(bmp);

        index[rnd((uint32_t)(w * h))] = 7;
        bmp = make_bmp_indexed(w, h, bpp, pal, pal_len, index, &len);
        EgImage img;
        EgError err = {0};
        CHECK(eg_image_decode(bmp, len, NULL, &img, &err) != 0 && says(&err, "palette"),
              "%s with index 7: \"%s\"", what, err.msg);
        free(bmp);
        free(index);
        free(want);
    }
}

static void test_bmp(void) {
    for (int variant = 0; variant < 3; variant++) {
        int w = 1 + (int)rnd(13), h = 1 + (int)rnd(9);
        int bpp = variant == 2 ? 32 : 24, top_down = variant == 1;
        Rgba *px = malloc(sizeof *px * w * h);
        uint8_t *want = malloc((size_t)w * h * 3);
        for (int i = 0; i < w * h; i++) {
            px[i] = random_rgba(0);
            want[3 * i] = px[i].r;
            want[3 * i + 1] = px[i].g;
            want[3 * i + 2] = px[i].b;
        }
        size_t len;
        unsigned char *bmp = make_bmp(w, h, bpp, top_down, px, &len);
        char what[64];
        snprintf(what, sizeof what, "BMP %d-bit %s %dx%d", bpp, top_down ? "top-down" : "bottom-up",
                 w, h);
        check_decode(bmp, len, w, h, want, what);
        keep_sample(variant == 0   ? "BMP 24-bit"
                    : variant == 1 ? "BMP top-down"
                                   : "BMP 32-bit",
                    bmp, len, 0);
        free(px);
        free(want);
    }
}

static void test_tga(void) {
    static const int kinds[][2] = {{2, 24}, {2, 32}, {10, 24}, {10, 32}, {3, 8}, {1, 8}};
    static const char *names[] = {"TGA raw 24", "TGA raw 32", "TGA RLE 24",
                                  "TGA RLE 32", "TGA gray",   "TGA colour-mapped"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int type = kinds[k][0], bpp = kinds[k][1];
        int w = 1 + (int)rnd(11), h = 1 + (int)rnd(7), top_left = (int)(k % 2);
        Rgba *px = malloc(sizeof *px * w * h), cmap[5];
        uint8_t *index = malloc((size_t)w * h), *want = malloc((size_t)w * h * 3);
        for (int i = 0; i < 5; i++)
            cmap[i] = random_rgba(0);
        for (int i = 0; i < w * h; i++) {
            px[i] = random_rgba(bpp == 32);
            if (type == 10 && i > 0 && rnd(2)) px[i] = px[i - 1]; /* give RLE runs to find */
            index[i] = (uint8_t)rnd(5);
            Rgba p = type == 1 ? cmap[index[i]] : px[i];
            if (type == 3) p.g = p.b = p.r;
            want[3 * i] = over_white(p.r, p.a);
            want[3 * i + 1] = over_white(p.g, p.a);
            want[3 * i + 2] = over_white(p.b, p.a);
        }
        size_t len;
        unsigned char *tga = make_tga(w, h, type, bpp, top_left, px, cmap, 5, index, &len);
        char what[64];
        snprintf(what, sizeof what, "%s %dx%d", names[k], w, h);
        check_decode(tga, len, w, h, want, what);
        keep_sample(names[k], tga, len, 0);
        free(px);
        free(index);
        free(want);
    }
}

static void test_gif(void) {
    for (int variant = 0; variant < 2; variant++) {
        int w = 1 + (int)rnd(20), h = 1 + (int)rnd(12);
        Rgba pal[4];
        for (int i = 0; i < 4; i++)
            pal[i] = random_rgba(0);
        int transparent = variant == 1 ? 2 : -1;
        uint8_t *index = malloc((size_t)w * h), *second = malloc((size_t)w * h);
        uint8_t *want = malloc((size_t)w * h * 3);
        for (int i = 0; i < w * h; i++) {
            index[i] = (uint8_t)rnd(4);
            second[i] = (uint8_t)((index[i] + 1) % 4);
            int t = index[i] == transparent;
            want[3 * i] = t ? 255 : pal[index[i]].r;
            want[3 * i + 1] = t ? 255 : pal[index[i]].g;
            want[3 * i + 2] = t ? 255 : pal[index[i]].b;
        }
        size_t len;
        unsigned char *gif = make_gif(w, h, pal, transparent, index, variant ? second : NULL, &len);
        char what[80];
        snprintf(what, sizeof what, "GIF %dx%d%s", w, h,
                 variant ? " transparent index, 2 frames" : "");
        check_decode(gif, len, w, h, want, what);
        keep_sample(variant ? "GIF 2 frames" : "GIF", gif, len, 0);
        free(index);
        free(second);
        free(want);
    }
}

/* ---- failures ---- */

/* Cutting a file anywhere must fail, saying it is truncated (or, when too little is left to even
 * recognise the format, that it is unrecognized) — never decode garbage, never crash. */
static void test_truncation(void) {
    int cuts = 0;
    for (int s = 0; s < n_samples; s++) {
        const Sample *sm = &samples[s];
        for (int t = 0; t < 40; t++) {
            size_t cut = t == 0   ? 0
                         : t == 1 ? sm->len - 1
                         : t == 2 ? sm->len / 2
                                  : rnd((uint32_t)sm->len);
            EgImage img;
            EgError err = {0};
            int rc = eg_image_decode(sm->data, cut, NULL, &img, &err);
            CHECK(rc != 0, "%s cut to %zu of %zu bytes decoded", sm->name, cut, sm->len);
            CHECK(rc == 0 || img.rgb == NULL, "%s: failure leaves the image empty", sm->name);
            CHECK(rc == 0 || says(&err, "truncated") || says(&err, "unrecognized image format"),
                  "%s cut to %zu: unexpected message \"%s\"", sm->name, cut, err.msg);
            if (rc == 0) eg_image_free(&img);
            cuts++;
        }
    }
    printf("  truncation: %d cuts of %d files, all refused\n", cuts, n_samples);
}

/* Flipping bytes: PNG checksums every chunk, so any change must be an error; the stb formats have
 * no checksums and may decode to other pixels, but must never crash or overrun (run under
 * EGRET_SANITIZE to see that). */
static void test_corruption(void) {
    int strict_flips = 0, loose_flips = 0, loose_ok = 0;
    for (int s = 0; s < n_samples; s++) {
        const Sample *sm = &samples[s];
        unsigned char *copy = malloc(sm->len);
        /* Strict samples are small: flip every byte once; the others at random spots. */
        size_t flips = sm->strict ? sm->len : 300;
        for (size_t f = 0; f < flips; f++) {
            memcpy(copy, sm->data, sm->len);
            size_t at = sm->strict ? f : rnd((uint32_t)sm->len);
            int n = sm->strict ? 1 : 1 + (int)rnd(4);
            for (int k = 0; k < n; k++) {
                copy[at] ^= (unsigned char)(1 + rnd(255));
                at = rnd((uint32_t)sm->len);
            }
            EgImage img;
            EgError err = {0};
            int rc = eg_image_decode(copy, sm->len, NULL, &img, &err);
            if (sm->strict) {
                CHECK(rc != 0, "%s with byte %zu changed still decodes", sm->name, f);
                strict_flips++;
            } else {
                loose_flips++;
                loose_ok += rc == 0;
            }
            CHECK(rc == 0 || (img.rgb == NULL && err.msg[0]), "%s: failure without message",
                  sm->name);
            if (rc == 0) {
                CHECK(img.rgb && img.width > 0 && img.height > 0, "%s: success without pixels",
                      sm->name);
                eg_image_free(&img);
            }
        }
        free(copy);
    }
    printf("  corruption: %d PNG byte flips all refused; %d flips in other formats (%d still "
           "decoded)\n",
           strict_flips, loose_flips, loose_ok);
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void buf_be32(Buf *b, uint32_t v) {
    buf_u8(b, v >> 24);
    buf_u8(b, (v >> 16) & 0xff);
    buf_u8(b, (v >> 8) & 0xff);
    buf_u8(b, v & 0xff);
}

static void png_chunk(Buf *b, const char *type, const unsigned char *data, uint32_t n) {
    buf_be32(b, n);
    size_t start = b->len;
    buf_put(b, type, 4);
    if (n) buf_put(b, data, n);
    buf_be32(b, crc32_of(b->data + start, n + 4));
}

/* A valid-looking PNG (correct CRCs) claiming width x height, with a few bytes of image data. */
static unsigned char *png_bomb(uint32_t width, uint32_t height, size_t *len) {
    Buf b = {0};
    buf_put(&b, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {(unsigned char)(width >> 24),
                              (unsigned char)(width >> 16),
                              (unsigned char)(width >> 8),
                              (unsigned char)width,
                              (unsigned char)(height >> 24),
                              (unsigned char)(height >> 16),
                              (unsigned char)(height >> 8),
                              (unsigned char)height,
                              8,
                              2,
                              0,
                              0,
                              0};
    png_chunk(&b, "IHDR", ihdr, 13);
    /* zlib stream of a few zeros: a bomb's data would inflate to the claimed size. */
    static const unsigned char idat[] = {0x78, 0x9c, 0x63, 0x60, 0x00,
                                         0x00, 0x00, 0x02, 0x00, 0x01};
    png_chunk(&b, "IDAT", idat, sizeof idat);
    png_chunk(&b, "IEND", NULL, 0);
    *len = b.len;
    return b.data;
}

static void expect_refused(const unsigned char *data, size_t len, const EgImageLimits *limits,
                           const char *what, const char *size, const char *limit_value,
                           const char *limit_name) {
    EgImage img;
    EgError err = {0};
    int rc = eg_image_decode(data, len, limits, &img, &err);
    CHECK(rc != 0, "%s: decoded", what);
    CHECK(says(&err, size) && says(&err, limit_value) && says(&err, limit_name),
          "%s: message should name the size %s and the limit %s (%s): \"%s\"", what, size,
          limit_value, limit_name, err.msg);
    CHECK(img.rgb == NULL, "%s: no pixels on failure", what);
    /* The header check alone refuses it the same way. */
    EgError probe_err = {0};
    uint32_t w = 0, h = 0;
    CHECK(eg_image_probe(data, len, limits, &w, &h, &probe_err) != 0 &&
              strcmp(probe_err.msg, err.msg) == 0,
          "%s: probe says \"%s\", decode \"%s\"", what, probe_err.msg, err.msg);
}

static void test_limits(void) {
    EgImageLimits def;
    eg_image_limits_default(&def);
    CHECK(def.max_width == 16384 && def.max_height == 16384 && def.max_pixels == 50000000ull &&
              def.max_bytes == 400000000ull,
          "documented defaults");
    char side[32];
    snprintf(side, sizeof side, "%u", (unsigned)def.max_width);

    size_t len;
    unsigned char *d = png_bomb(100000, 100000, &len);
    expect_refused(d, len, NULL, "PNG 100000x100000", "100000x100000", side, "max_width");
    free(d);
    d = png_bomb(16, 100000, &len);
    expect_refused(d, len, NULL, "PNG 16x100000", "16x100000", side, "max_height");
    free(d);
    d = png_bomb(10000, 10000, &len); /* each side allowed, 100 Mpixel is not */
    expect_refused(d, len, NULL, "PNG 10000x10000", "10000x10000", "50000000", "max_pixels");
    free(d);

    /* JPEG: SOI, a baseline frame header claiming 60000x50000 (3 components), EOI. */
    static const unsigned char jpeg[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xC3,
                                         0x50, 0xEA, 0x60, 0x03, 0x01, 0x22, 0x00, 0x02,
                                         0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
    expect_refused(jpeg, sizeof jpeg, NULL, "JPEG 60000x50000", "60000x50000", side, "max_width");

    /* GIF: header and logical screen of 65535x65535, then the trailer. */
    static const unsigned char gif[] = {'G',  'I',  'F',  '8',  '9',  'a',  0xFF,
                                        0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x3B};
    expect_refused(gif, sizeof gif, NULL, "GIF 65535x65535", "65535x65535", side, "max_width");

    /* BMP: headers only, claiming 20000x30000 at 24 bits. */
    Buf b = {0};
    buf_put(&b, "BM", 2);
    buf_le32(&b, 54);
    buf_le32(&b, 0);
    buf_le32(&b, 54);
    buf_le32(&b, 40);
    buf_le32(&b, 20000);
    buf_le32(&b, 30000);
    buf_le16(&b, 1);
    buf_le16(&b, 24);
    for (int i = 0; i < 6; i++)
        buf_le32(&b, 0);
    expect_refused(b.data, b.len, NULL, "BMP 20000x30000", "20000x30000", side, "max_width");
    free(b.data);

    /* TGA: a raw 24-bit header claiming 65535x40000. */
    static const unsigned char tga[18] = {0, 0, 2, 0,    0,    0,    0,    0,  0,
                                          0, 0, 0, 0xFF, 0xFF, 0x40, 0x9C, 24, 0};
    expect_refused(tga, sizeof tga, NULL, "TGA 65535x40000", "65535x40000", side, "max_width");

    /* Caller-chosen limits apply to real images too, pixels and bytes alike. */
    PngCase pc;
    make_case(&pc, PNG_COLOR_TYPE_RGB, 8, 0, 0);
    pc.width = 40;
    pc.height = 30;
    pc.samples = realloc(pc.samples, 40 * 30 * 3 * sizeof *pc.samples);
    for (int i = 0; i < 40 * 30 * 3; i++)
        pc.samples[i] = (uint16_t)rnd(256);
    d = write_png(&pc, &len);
    EgImageLimits lim = def;
    lim.max_pixels = 1000;
    expect_refused(d, len, &lim, "PNG 40x30 with max_pixels 1000", "40x30", "1000", "max_pixels");
    lim = def;
    lim.max_bytes = 40 * 30 * 7 - 1;
    expect_refused(d, len, &lim, "PNG 40x30 with max_bytes 8399", "40x30", "8399", "max_bytes");
    lim.max_bytes = 40 * 30 * 7;
    lim.max_width = 40;
    lim.max_height = 30;
    lim.max_pixels = 1200;
    EgImage img;
    EgError err = {0};
    CHECK(eg_image_decode(d, len, &lim, &img, &err) == 0, "exactly at every limit: %s", err.msg);
    eg_image_free(&img);
    uint32_t w = 0, h = 0;
    CHECK(eg_image_probe(d, len, &lim, &w, &h, &err) == 0 && w == 40 && h == 30,
          "PNG probe: %ux%u (%s)", w, h, err.msg);
    free(d);
    free(pc.samples);
}

/* eg_image_probe reads the declared size without decoding, and refuses what decoding would
 * refuse before it decodes (structure, limits, format) with the same message. */
static void test_probe(void) {
    TestPng bomb = test_jpeg_declaring(7000, 5000, 1);
    uint32_t w = 0, h = 0;
    EgError err = {0};
    CHECK(eg_image_probe(bomb.bytes, bomb.len, NULL, &w, &h, &err) == 0 && w == 7000 && h == 5000,
          "JPEG probe: %ux%u (%s)", w, h, err.msg);
    EgError derr = {0};
    EgImage img;
    size_t cut = bomb.len - 2; /* without its end marker */
    CHECK(eg_image_probe(bomb.bytes, cut, NULL, &w, &h, &err) != 0 &&
              eg_image_decode(bomb.bytes, cut, NULL, &img, &derr) != 0 &&
              strcmp(err.msg, derr.msg) == 0 && says(&err, "truncated"),
          "truncated JPEG: probe \"%s\", decode \"%s\"", err.msg, derr.msg);
    CHECK(eg_image_probe("hello", 5, NULL, &w, &h, &err) != 0 &&
              says(&err, "unrecognized image format"),
          "probe of text: \"%s\"", err.msg);
    free(bomb.bytes);
}

static int has_known_magic(const unsigned char *p, size_t n) {
    return (n >= 2 && p[0] == 'B' && p[1] == 'M') || (n >= 3 && !memcmp(p, "\xff\xd8\xff", 3)) ||
           (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) ||
           (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8));
}

static void test_unrecognized(void) {
    EgImage img;
    EgError err = {0};
    CHECK(eg_image_decode(NULL, 0, NULL, &img, &err) != 0 &&
              says(&err, "unrecognized image format"),
          "NULL input: \"%s\"", err.msg);
    CHECK(eg_image_decode("", 0, NULL, &img, &err) != 0 && says(&err, "unrecognized image format"),
          "empty input: \"%s\"", err.msg);
    /* Other formats' headers (WebP, TIFF, PDF, HEIF, text), padded with zeros to 32 bytes. */
    static const struct {
        const char *bytes;
        size_t len;
    } others[] = {{"RIFF\x24\0\0\0WEBPVP8 ", 16},
                  {"II*\0\x08\0\0\0", 8},
                  {"%PDF-1.7\n", 9},
                  {"\0\0\0\034ftypheic", 12},
                  {"hello, world\n", 13}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        unsigned char buf[32] = {0};
        memcpy(buf, others[i].bytes, others[i].len);
        CHECK(eg_image_decode(buf, sizeof buf, NULL, &img, &err) != 0 &&
                  says(&err, "unrecognized image format"),
              "non-image %zu: \"%s\"", i, err.msg);
    }
    /* Random bytes (redrawn if they happen to start with a supported magic): TGA has no magic,
     * so this also checks that the TGA guess does not swallow garbage. */
    int refused = 0;
    for (int t = 0; t < 500; t++) {
        unsigned char buf[400];
        size_t n = rnd(sizeof buf + 1);
        do {
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)rnd(256);
        } while (has_known_magic(buf, n));
        int rc = eg_image_decode(buf, n, NULL, &img, &err);
        CHECK(rc != 0 && says(&err, "unrecognized image format"), "%zu random bytes: \"%s\"", n,
              rc ? err.msg : "decoded");
        refused += rc != 0;
        if (rc == 0) eg_image_free(&img);
    }
    printf("  unrecognized: %d of 500 random inputs refused as unrecognized\n", refused);
    eg_image_free(NULL);
}

/* PNG error messages name the format and the problem. */
static void test_png_messages(void) {
    PngCase pc;
    make_case(&pc, PNG_COLOR_TYPE_RGB, 8, 0, 0);
    size_t len;
    unsigned char *d = write_png(&pc, &len);
    EgImage img;
    EgError err = {0};
    CHECK(eg_image_decode(d, len - 20, NULL, &img, &err) != 0 && says(&err, "PNG: truncated data"),
          "cut PNG: \"%s\"", err.msg);
    d[len - 20] ^= 0x40; /* inside the last IDAT or its CRC */
    CHECK(eg_image_decode(d, len, NULL, &img, &err) != 0 && says(&err, "PNG: corrupt data") &&
              says(&err, "libpng"),
          "corrupt PNG: \"%s\"", err.msg);
    free(d);
    free(pc.samples);
}

/* ---- failures inside stb, and concurrency ---- */

typedef struct Expect {
    const unsigned char *data;
    size_t len;
    int rc;
    char msg[sizeof(((EgError *)0)->msg)];
    uint64_t hash; /* FNV-1a of the pixels */
} Expect;

static void run_expect(Expect *e) {
    EgImage img;
    EgError err = {0};
    e->rc = eg_image_decode(e->data, e->len, NULL, &img, &err);
    snprintf(e->msg, sizeof e->msg, "%s", e->rc ? err.msg : "");
    e->hash = e->rc ? 0 : eg_fnv1a(EG_FNV1A_INIT, img.rgb, (size_t)img.width * img.height * 3);
    eg_image_free(&img);
}

static Expect expects[4];
static int thread_mismatches;

static void *decode_thread(void *arg) {
    int id = (int)(intptr_t)arg, bad = 0;
    for (int it = 0; it < 60; it++) {
        Expect got = expects[(id + it) % 4];
        run_expect(&got);
        const Expect *want = &expects[(id + it) % 4];
        bad += got.rc != want->rc || strcmp(got.msg, want->msg) != 0 || got.hash != want->hash;
    }
    __atomic_add_fetch(&thread_mismatches, bad, __ATOMIC_RELAXED);
    return NULL;
}

/* Errors stb_image itself finds (after our structure checks pass) are reported with stb's reason,
 * or as "decoding failed" where stb gives none (never with another failure's reason); and decodes
 * running in parallel threads (stb keeps its failure reason in thread-local storage) give the
 * same results as alone. */
static void test_stb_failures_and_threads(const unsigned char *jpeg, size_t jpeg_len) {
    /* A 12-bit JPEG (stb supports 8-bit only): patch the precision byte of the frame header. */
    unsigned char *jpeg12 = malloc(jpeg_len);
    memcpy(jpeg12, jpeg, jpeg_len);
    for (size_t i = 2; i + 4 < jpeg_len; i++)
        if (jpeg12[i] == 0xFF && jpeg12[i + 1] == 0xC0) {
            jpeg12[i + 4] = 12;
            break;
        }
    /* A GIF whose LZW minimum code size is 13 (at most 12 is valid): stb fails without a reason. */
    Rgba pal[4] = {{0, 0, 0, 255}, {255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}};
    uint8_t index[6] = {0, 1, 2, 3, 2, 1};
    size_t gif_len;
    unsigned char *gif13 = make_gif(3, 2, pal, -1, index, NULL, &gif_len);
    CHECK(gif13[25] == 0x2C && gif13[35] == 2, "GIF layout as expected");
    gif13[35] = 13;
    PngCase pc;
    make_case(&pc, PNG_COLOR_TYPE_RGBA, 8, 1, 0);
    size_t png_len;
    unsigned char *png = write_png(&pc, &png_len);

    expects[0] = (Expect){.data = png, .len = png_len};
    expects[1] = (Expect){.data = jpeg12, .len = jpeg_len};
    expects[2] = (Expect){.data = gif13, .len = gif_len};
    expects[3] = (Expect){.data = jpeg, .len = jpeg_len};
    for (int i = 0; i < 4; i++)
        run_expect(&expects[i]);
    CHECK(expects[0].rc == 0 && expects[3].rc == 0, "valid PNG / JPEG decode");
    CHECK(expects[1].rc != 0 && strstr(expects[1].msg, "JPEG: corrupt data (stb_image: ") &&
              !strstr(expects[1].msg, "decoding failed"),
          "12-bit JPEG: \"%s\"", expects[1].msg);
    CHECK(expects[2].rc != 0 && strstr(expects[2].msg, "GIF: corrupt data") &&
              strstr(expects[2].msg, "decoding failed"),
          "GIF with code size 13: \"%s\"", expects[2].msg);

    pthread_t threads[4];
    for (int t = 0; t < 4; t++)
        CHECK(pthread_create(&threads[t], NULL, decode_thread, (void *)(intptr_t)t) == 0,
              "pthread_create");
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    CHECK(thread_mismatches == 0,
          "%d decodes in parallel threads differed from the same decode "
          "alone",
          thread_mismatches);
    free(jpeg12);
    free(gif13);
    free(png);
    free(pc.samples);
}

/* Offset of the first segment with marker FFxx before the scan data (its length field is at
 * +2); 0 if none. */
static size_t jpeg_segment(const unsigned char *jpeg, size_t len, unsigned char marker) {
    for (size_t i = 2; i + 4 <= len && jpeg[i] == 0xFF;) {
        if (jpeg[i + 1] == marker) return i;
        if (jpeg[i + 1] == 0xDA) break;
        i += 2 + ((size_t)jpeg[i + 2] << 8 | jpeg[i + 3]);
    }
    return 0;
}

/* Huffman tables stb_image 2.27 would trust (found by fuzz/fuzz_image, reproducers in
 * fuzz/regressions/fuzz_image/): refused by our header walk with a message, before stb reads or
 * writes out of bounds. */
static void test_jpeg_huffman_tables(const unsigned char *jpeg, size_t len) {
    unsigned char *bad = malloc(len);
    EgImage img;
    EgError err = {0};
    size_t dht = jpeg_segment(jpeg, len, 0xC4), sos = jpeg_segment(jpeg, len, 0xDA);
    CHECK(dht && sos, "reference JPEG has DHT and SOS segments");
    if (!dht || !sos) {
        free(bad);
        return;
    }
    /* More than 256 codes in one table: counts of the 15- and 16-bit codes set to 255 each. */
    memcpy(bad, jpeg, len);
    bad[dht + 5 + 14] = 255;
    bad[dht + 5 + 15] = 255;
    CHECK(eg_image_decode(bad, len, NULL, &img, &err) != 0 && says(&err, "at most 256"),
          "DHT with > 256 codes: \"%s\"", err.msg);
    /* The first scan component decoding with AC table 3, which no DHT defines. */
    memcpy(bad, jpeg, len);
    bad[sos + 6] = 0x03;
    CHECK(eg_image_decode(bad, len, NULL, &img, &err) != 0 && says(&err, "not defined"),
          "scan with an undefined Huffman table: \"%s\"", err.msg);
    free(bad);
}

int main(void) {
    test_rng_init();
    test_alpha_composite_all_pairs();
    test_png_variants();
    test_reference_files();
    test_bmp();
    test_bmp_palette();
    test_tga();
    test_gif();

    /* Samples for truncation / corruption: small PNGs of several kinds without tRNS (tRNS is an
     * ancillary chunk libpng may drop on a bad CRC, so only those are fully checksummed), the
     * reference JPEG, and the hand-made files above. */
    static const int png_kinds[][3] = {{PNG_COLOR_TYPE_RGB, 8, 0},
                                       {PNG_COLOR_TYPE_PALETTE, 4, 0},
                                       {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 1},
                                       {PNG_COLOR_TYPE_RGBA, 8, 1}};
    static const char *png_names[] = {"PNG rgb", "PNG palette", "PNG gray+alpha 16 Adam7",
                                      "PNG rgba Adam7"};
    for (int k = 0; k < 4; k++) {
        PngCase pc;
        make_case(&pc, png_kinds[k][0], png_kinds[k][1], png_kinds[k][2], 0);
        size_t len;
        unsigned char *d = write_png(&pc, &len);
        if (d) keep_sample(png_names[k], d, len, 1);
        free(pc.samples);
    }
    size_t jlen;
    unsigned char *jpeg = read_data("preprocess/rgb_96x96_q90.jpg", &jlen);
    if (jpeg) keep_sample("JPEG", jpeg, jlen, 0);

    if (jpeg) test_stb_failures_and_threads(jpeg, jlen);
    if (jpeg) test_jpeg_huffman_tables(jpeg, jlen);
    test_truncation();
    test_corruption();
    test_limits();
    test_unrecognized();
    test_probe();
    test_png_messages();
    for (int s = 0; s < n_samples; s++)
        free(samples[s].data);
    return test_finish();
}
