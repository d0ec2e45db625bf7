/* Bicubic and bilinear resize and normalization, a transcription of Pillow 9.4's
 * libImaging/Resample.c (the same in Pillow 13 for these filters, except its pass order: see
 * EG_RESAMPLE_PIL13) for 8-bit RGB images (precompute_coeffs, normalize_coeffs_8bpc,
 * ImagingResampleHorizontal_8bpc / Vertical_8bpc, ImagingResampleInner). The reference pixels
 * were made by PIL, and matching them needs the same arithmetic, not just the same filter:
 * double-precision coefficients computed in the same order, the same fixed-point quantization and
 * rounding, and the uint8 intermediate between the two passes. EG_RESAMPLE_TORCH reproduces
 * torch's uint8 antialiased bicubic (what HF transformers 5's default image processor runs),
 * which is the same algorithm with int16 weights. */
#include "vision/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const EgPixelNorm eg_clip_norm = {
    .mean = {0.48145466f, 0.4578275f, 0.40821073f},
    .std = {0.26862954f, 0.26130258f, 0.27577711f},
};

/* Largest preprocessed side we accept: far above any vision encoder's input, and small enough
 * that 3 * size * size floats cannot overflow. */
#define MAX_OUT_SIDE 16384

/* Pillow's 8-bit mode keeps 2 bits of headroom for negative lobes: 32 - 8 - 2. */
#define PIL_PRECISION_BITS (32 - 8 - 2)

/* Keys cubic convolution with a = -0.5. Both references use the same first lobe; the second lobe
 * is written differently (Pillow's bicubic_filter vs torch's cubic_convolution2), which can move
 * a coefficient by an ulp, so each is kept in its own expression order. */
static double bicubic_filter(double x, EgResampleArith arith) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) {
        if (arith == EG_RESAMPLE_TORCH) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
        return (((x - 5) * x + 8) * x - 4) * a;
    }
    return 0.0;
}

/* Pillow's triangle filter (support 1); torch's antialiased bilinear uses the same one. */
static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_at(double x, EgResampleFilter filter, EgResampleArith arith) {
    return filter == EG_FILTER_BILINEAR ? bilinear_filter(x) : bicubic_filter(x, arith);
}

/* For each output pixel: the first input pixel used, how many, and ksize fixed-point weights. */
typedef struct Coeffs {
    int ksize;
    int precision; /* fractional bits of the weights */
    int *bounds;   /* [out_size][2]: xmin, count */
    int32_t *k;    /* [out_size][ksize] */
} Coeffs;

static void coeffs_free(Coeffs *c) {
    free(c->bounds);
    free(c->k);
}

/* Round half away from zero, then truncate (both references' float -> int weight rule). */
static int32_t quantize(double v, int bits) {
    double scaled = v * (double)(1 << bits);
    return v < 0 ? (int32_t)(-0.5 + scaled) : (int32_t)(0.5 + scaled);
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size); torch's
 * _compute_indices_min_size_weights_aa + compute_index_ranges_int16_weights compute the same
 * doubles and differ only in the weights' precision. */
static int coeffs_init(int in_size, int out_size, EgResampleFilter filter, EgResampleArith arith,
                       Coeffs *c) {
    const double filter_support = filter == EG_FILTER_BILINEAR ? 1.0 : 2.0;
    /* Pillow takes the box as floats: (double)(in1 - in0) / outSize with in1 - in0 a float. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale; /* widen the kernel when downscaling */
    double support = filter_support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;

    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->k = calloc((size_t)out_size * ksize, sizeof *c->k);
    double *w = calloc((size_t)out_size * ksize, sizeof *w);
    if (!c->bounds || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return -1;
    }
    double w_max = 0.0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* truncation toward zero, as in Pillow */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = w + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            k[x] = filter_at((x + xmin - center + 0.5) * ss, filter, arith);
            ww += k[x];
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) k[x] /= ww;
            if (k[x] > w_max) w_max = k[x];
        }
        c->bounds[2 * xx + 0] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    if (arith == EG_RESAMPLE_TORCH) {
        /* int16 weights: as many fractional bits as keep the largest weight below 2^15. */
        int bits = 0;
        for (; bits < 22; bits++)
            if ((int)(0.5 + w_max * (1 << (bits + 1))) >= (1 << 15)) break;
        c->precision = bits;
    } else {
        c->precision = PIL_PRECISION_BITS;
    }
    for (size_t i = 0; i < (size_t)out_size * ksize; i++)
        c->k[i] = quantize(w[i], c->precision);
    free(w);
    return 0;
}

/* Pillow's clip8 (torch saturates the same way): the accumulator started at 1/2 (rounding);
 * floor-shift and clamp to 0..255. Written without shifting a negative number, which C leaves
 * implementation-defined. */
static inline uint8_t clip8(int64_t ss, int bits) {
    if (ss < 0) return 0;
    int64_t v = ss >> bits;
    return v > 255 ? 255 : (uint8_t)v;
}

/* How often the passes poll a stop function: every this many rows. A row of a large image is
 * tens of microseconds, a poll a few nanoseconds. */
#define STOP_ROWS 16

/* A caller's stop function (NULL: never stop). */
typedef struct Stop {
    int (*fn)(void *user);
    void *user;
} Stop;

static int stopped(const Stop *stop, int row) {
    return stop->fn && row % STOP_ROWS == 0 && stop->fn(stop->user);
}

/* Horizontal pass over input rows [row0, row0 + rows), into rows x out_w. Returns -1 when stop
 * said to give up. */
static int resample_horizontal(const uint8_t *src, int src_w, int row0, int rows, uint8_t *dst,
                               int out_w, const Coeffs *c, const Stop *stop) {
    for (int yy = 0; yy < rows; yy++) {
        if (stopped(stop, yy)) return -1;
        const uint8_t *in = src + (size_t)(yy + row0) * src_w * 3;
        uint8_t *out = dst + (size_t)yy * out_w * 3;
        for (int xx = 0; xx < out_w; xx++) {
            int xmin = c->bounds[2 * xx], xmax = c->bounds[2 * xx + 1];
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            int64_t s0 = (int64_t)1 << (c->precision - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++) {
                const uint8_t *p = in + (size_t)(x + xmin) * 3;
                s0 += p[0] * (int64_t)k[x];
                s1 += p[1] * (int64_t)k[x];
                s2 += p[2] * (int64_t)k[x];
            }
            out[3 * xx + 0] = clip8(s0, c->precision);
            out[3 * xx + 1] = clip8(s1, c->precision);
            out[3 * xx + 2] = clip8(s2, c->precision);
        }
    }
    return 0;
}

/* Vertical pass: bounds are relative to src's first row. */
static int resample_vertical(const uint8_t *src, int w, uint8_t *dst, int out_h, const Coeffs *c,
                             const Stop *stop) {
    for (int yy = 0; yy < out_h; yy++) {
        if (stopped(stop, yy)) return -1;
        int ymin = c->bounds[2 * yy], ymax = c->bounds[2 * yy + 1];
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        uint8_t *out = dst + (size_t)yy * w * 3;
        for (int xx = 0; xx < w; xx++) {
            int64_t s0 = (int64_t)1 << (c->precision - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *p = src + ((size_t)(y + ymin) * w + xx) * 3;
                s0 += p[0] * (int64_t)k[y];
                s1 += p[1] * (int64_t)k[y];
                s2 += p[2] * (int64_t)k[y];
            }
            out[3 * xx + 0] = clip8(s0, c->precision);
            out[3 * xx + 1] = clip8(s1, c->precision);
            out[3 * xx + 2] = clip8(s2, c->precision);
        }
    }
    return 0;
}

static int resize(const uint8_t *src, uint32_t src_w, uint32_t src_h, uint8_t *dst, uint32_t dst_w,
                  uint32_t dst_h, EgResampleFilter filter, EgResampleArith arith, const Stop *stop,
                  EgError *err) {
    if (!src || !dst || src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0)
        return eg_fail(err, "resize: empty image (%ux%u -> %ux%u)", (unsigned)src_w,
                       (unsigned)src_h, (unsigned)dst_w, (unsigned)dst_h);
    if (src_w > INT32_MAX / 4 || src_h > INT32_MAX / 4 || dst_w > INT32_MAX / 4 ||
        dst_h > INT32_MAX / 4)
        return eg_fail(err, "resize: image too large (%ux%u -> %ux%u)", (unsigned)src_w,
                       (unsigned)src_h, (unsigned)dst_w, (unsigned)dst_h);
    int in_w = (int)src_w, in_h = (int)src_h, out_w = (int)dst_w, out_h = (int)dst_h;
    int need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) { /* Image.resize returns a copy when the size is unchanged */
        memcpy(dst, src, (size_t)in_w * in_h * 3);
        return 0;
    }

    Coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    int rc = -1;
    if ((need_h && coeffs_init(in_w, out_w, filter, arith, &ch) != 0) ||
        (need_v && coeffs_init(in_h, out_h, filter, arith, &cv) != 0)) {
        eg_fail(err, "resize: out of memory");
        goto done;
    }
    /* Pillow 13: "if height is being scaled down more than twice the amount the width is, run
     * the vertical pass first" (pixel counts, so negative when a side grows) */
    int vertical_first = arith == EG_RESAMPLE_PIL13 && in_h - out_h > 0 &&
                         (int64_t)in_h - out_h > ((int64_t)in_w - out_w) * 2;
    if (!need_v) {
        if (resample_horizontal(src, in_w, 0, in_h, dst, out_w, &ch, stop)) goto cancelled;
    } else if (!need_h) {
        if (resample_vertical(src, in_w, dst, out_h, &cv, stop)) goto cancelled;
    } else if (vertical_first) {
        tmp = malloc((size_t)in_w * out_h * 3);
        if (!tmp) {
            eg_fail(err, "resize: out of memory");
            goto done;
        }
        if (resample_vertical(src, in_w, tmp, out_h, &cv, stop) ||
            resample_horizontal(tmp, in_w, 0, out_h, dst, out_w, &ch, stop))
            goto cancelled;
    } else {
        /* Only the input rows the vertical pass will read go through the horizontal pass; the
         * vertical bounds are then relative to the first of them. */
        int first = cv.bounds[0];
        int last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
        for (int i = 0; i < out_h; i++)
            cv.bounds[2 * i] -= first;
        tmp = malloc((size_t)out_w * (last - first) * 3);
        if (!tmp) {
            eg_fail(err, "resize: out of memory");
            goto done;
        }
        if (resample_horizontal(src, in_w, first, last - first, tmp, out_w, &ch, stop) ||
            resample_vertical(tmp, out_w, dst, out_h, &cv, stop))
            goto cancelled;
    }
    rc = 0;
    goto done;
cancelled:
    eg_fail(err, "resize: stopped");
done:
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return rc;
}

int eg_image_resize_bicubic(const uint8_t *src, uint32_t src_w, uint32_t src_h, uint8_t *dst,
                            uint32_t dst_w, uint32_t dst_h, EgResampleArith arith, EgError *err) {
    const Stop never = {NULL, NULL};
    return resize(src, src_w, src_h, dst, dst_w, dst_h, EG_FILTER_BICUBIC, arith, &never, err);
}

int eg_image_resize(const uint8_t *src, uint32_t src_w, uint32_t src_h, uint8_t *dst,
                    uint32_t dst_w, uint32_t dst_h, EgResampleFilter filter, EgResampleArith arith,
                    int (*stop_fn)(void *user), void *stop_user, EgError *err) {
    const Stop stop = {stop_fn, stop_user};
    return resize(src, src_w, src_h, dst, dst_w, dst_h, filter, arith, &stop, err);
}

void eg_preprocess_config_default(EgPreprocessConfig *cfg, int size) {
    cfg->size = size;
    cfg->norm = eg_clip_norm;
    cfg->arith = EG_RESAMPLE_PIL;
    cfg->stop = NULL;
    cfg->stop_user = NULL;
}

int eg_preprocess_image_cfg(const EgImage *img, const EgPreprocessConfig *cfg, float *out,
                            EgError *err) {
    int size = cfg->size;
    if (!img || !img->rgb || img->width == 0 || img->height == 0)
        return eg_fail(err, "preprocess: empty image");
    if (size < 1 || size > MAX_OUT_SIDE)
        return eg_fail(err, "preprocess: output size %d outside 1..%d", size, MAX_OUT_SIDE);
    size_t plane = (size_t)size * size;
    uint8_t *resized = malloc(plane * 3);
    if (!resized) return eg_fail(err, "preprocess: out of memory for %dx%d", size, size);
    const Stop stop = {cfg->stop, cfg->stop_user};
    if (resize(img->rgb, img->width, img->height, resized, (uint32_t)size, (uint32_t)size,
               EG_FILTER_BICUBIC, cfg->arith, &stop, err) != 0) {
        free(resized);
        return eg_fail_prefix(err, "preprocess");
    }
    /* Each channel maps 256 byte values to 256 floats: tabulate, then scatter channels-first.
     * Same float32 arithmetic as the reference: rescale by 1/255, subtract mean, divide by std. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - cfg->norm.mean[c]) / cfg->norm.std[c];
    for (size_t i = 0; i < plane; i++) {
        out[i] = lut[0][resized[3 * i + 0]];
        out[plane + i] = lut[1][resized[3 * i + 1]];
        out[2 * plane + i] = lut[2][resized[3 * i + 2]];
    }
    free(resized);
    return 0;
}

int eg_preprocess_image(const EgImage *img, int size, float *out, EgError *err) {
    EgPreprocessConfig cfg;
    eg_preprocess_config_default(&cfg, size);
    return eg_preprocess_image_cfg(img, &cfg, out, err);
}
