/* mllama image preprocessing against HF MllamaImageProcessor (tests/data/mllama/preprocess/, made
 * by refgen/mllama/make_preprocess_goldens.py): for every case (tiny, extreme aspect, exact tile
 * multiples, 1-4 tiles, max_image_tiles 1/2/6, several images per prompt, a batch row with a
 * padding image, PNG/JPEG of every mode through Egret's decoder, tile sizes 56 and 560) the
 * resized image is identical, pixel values are within 1e-5, aspect_ratio_ids, aspect_ratio_mask
 * and num_tiles identical. Then the spec's worked canvas examples, and hostile sizes refused. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/safetensors.h"
#include "tests/test_util.h"
#include "vision/image_decode.h"
#include "vision/tile_preprocess.h"

#define PIXEL_TOL 1e-5

/* The generator's synthetic_image: wrapping gradients plus a texture, from (x, y, c, seed). */
static EgImage synthetic_image(uint32_t w, uint32_t h, int64_t seed) {
    EgImage img = {w, h, malloc((size_t)w * h * 3)};
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++)
            for (int64_t c = 0; c < 3; c++) {
                int64_t v = x * (3 + c) + y * (5 + 2 * c) +
                            ((x * x + 3 * y * y + seed * 7 + c * 11) % 17) * 9 + seed * 29;
                img.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(v & 255);
            }
    return img;
}

static int load_image(const cJSON *spec, EgImage *img) {
    const cJSON *syn = cJSON_GetObjectItem(spec, "synthetic");
    if (syn) {
        *img = synthetic_image((uint32_t)cJSON_GetArrayItem(syn, 0)->valuedouble,
                               (uint32_t)cJSON_GetArrayItem(syn, 1)->valuedouble,
                               (int64_t)cJSON_GetArrayItem(syn, 2)->valuedouble);
        return 0;
    }
    const char *file = cJSON_GetStringValue(cJSON_GetObjectItem(spec, "file"));
    size_t len = 0;
    unsigned char *bytes = test_read_file(test_data_path(file), &len);
    EgError err = {0};
    int rc = bytes ? eg_image_decode(bytes, len, NULL, img, &err) : -1;
    CHECK(rc == 0, "decode %s: %s", file, bytes ? err.msg : "cannot read");
    free(bytes);
    return rc;
}

static const EgTensorView *golden(const EgTensorFile *g, const char *fmt, int k, int i, int j) {
    char name[96];
    snprintf(name, sizeof name, fmt, k, i, j);
    const EgTensorView *t = eg_tensors_find(g, name);
    CHECK(t != NULL, "golden tensor %s missing", name);
    return t;
}

static int64_t *golden_i64(const EgTensorFile *g, const char *what, int k, int64_t want_numel) {
    char fmt[64];
    snprintf(fmt, sizeof fmt, "c%%d.%s", what);
    const EgTensorView *t = golden(g, fmt, k, 0, 0);
    if (!t || t->numel != want_numel) return NULL;
    int64_t *v = malloc((size_t)want_numel * sizeof *v);
    EgError err = {0};
    if (eg_tensor_to_i64(t, v, &err)) {
        free(v);
        return NULL;
    }
    return v;
}

/* max |a - b| over n floats of a (every stride-th) against golden tensor values b; the mean in
 * *mean when non-NULL. */
static double max_abs_diff(const float *a, const float *b, size_t n, size_t stride, double *mean) {
    double m = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i * stride] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN sticks */
        sum += d;
    }
    if (mean) *mean = n ? sum / (double)n : 0;
    return m;
}

/* JPEG decodes through stb_image, not Pillow's libjpeg-turbo: IDCT and chroma upsampling differ
 * by a few levels (vision/image_decode.c), so a case with a JPEG input is held to the mean
 * difference the IDEFICS preprocessing test allows (0.01), not to the per-pixel bound. */
#define JPEG_MEAN_TOL 0.01

static int spec_is_jpeg(const cJSON *spec) {
    const char *file = cJSON_GetStringValue(cJSON_GetObjectItem(spec, "file"));
    size_t n = file ? strlen(file) : 0;
    return n > 4 && strcmp(file + n - 4, ".jpg") == 0;
}

static int pixels_ok(int jpeg, double max, double mean) {
    return jpeg ? mean <= JPEG_MEAN_TOL : max <= PIXEL_TOL;
}

/* HF's resized image (before padding) against eg_image_resize with the tiling's size. */
static void check_resized(const EgTensorFile *g, int k, int i, int j, const EgImage *img,
                          const EgMllamaPreprocessConfig *cfg, int jpeg) {
    const EgTensorView *want = golden(g, "c%d.b%d.i%d.resized", k, i, j);
    EgMllamaTiling t;
    EgError err = {0};
    if (!want ||
        eg_mllama_tiling(img->width, img->height, cfg->tile_size, cfg->max_tiles, &t, &err)) {
        CHECK(0, "case %d image %d.%d: tiling: %s", k, i, j, err.msg);
        return;
    }
    CHECK(want->ndim == 3 && want->shape[0] == t.resized_height &&
              want->shape[1] == t.resized_width,
          "case %d image %d.%d (%ux%u): resized to %ux%u, HF %lldx%lld", k, i, j, img->width,
          img->height, t.resized_width, t.resized_height, (long long)want->shape[1],
          (long long)want->shape[0]);
    if (want->shape[0] != t.resized_height || want->shape[1] != t.resized_width) return;
    size_t n = (size_t)t.resized_width * t.resized_height * 3;
    uint8_t *got = malloc(n);
    int rc =
        eg_image_resize(img->rgb, img->width, img->height, got, t.resized_width, t.resized_height,
                        EG_FILTER_BILINEAR, EG_RESAMPLE_PIL13, NULL, NULL, &err);
    size_t diff = 0, levels = 0;
    for (size_t p = 0; rc == 0 && p < n; p++) {
        int d = (int)got[p] - ((const uint8_t *)want->data)[p];
        diff += d != 0;
        levels += (size_t)(d < 0 ? -d : d);
    }
    if (jpeg)
        CHECK(rc == 0 && levels <= n,
              "case %d image %d.%d: resized JPEG %.3f levels off on average", k, i, j,
              (double)levels / (double)n);
    else
        CHECK(rc == 0 && diff == 0, "case %d image %d.%d: %zu of %zu resized bytes differ from PIL",
              k, i, j, diff, n);
    free(got);
}

static void run_case(const EgTensorFile *g, const cJSON *c, int k, double *worst) {
    EgMllamaPreprocessConfig cfg;
    eg_mllama_preprocess_config_default(&cfg, cJSON_GetObjectItem(c, "tile_size")->valueint,
                                        cJSON_GetObjectItem(c, "max_tiles")->valueint);
    const cJSON *shape = cJSON_GetObjectItem(c, "pixel_values_shape");
    const cJSON *samples = cJSON_GetObjectItem(c, "samples");
    size_t n_b = (size_t)cJSON_GetArraySize(samples);
    size_t n_slots = (size_t)cJSON_GetArrayItem(shape, 1)->valuedouble;
    size_t jt = (size_t)cfg.max_tiles, s = (size_t)cfg.tile_size;
    size_t slot_floats = jt * 3 * s * s;
    size_t stride = (size_t)cJSON_GetObjectItem(c, "pixel_stride")->valuedouble;
    CHECK((size_t)cJSON_GetArrayItem(shape, 2)->valuedouble == jt, "case %d: J", k);
    int case_jpeg = 0;

    float *pixels = malloc(n_b * n_slots * slot_floats * sizeof(float));
    int32_t *ids = malloc(n_b * n_slots * sizeof *ids), *mask = malloc(n_b * n_slots * jt * 4);
    int32_t *tiles = malloc(n_b * n_slots * sizeof *tiles);
    int64_t *want_ids = golden_i64(g, "aspect_ratio_ids", k, (int64_t)(n_b * n_slots));
    int64_t *want_mask = golden_i64(g, "aspect_ratio_mask", k, (int64_t)(n_b * n_slots * jt));
    int64_t *want_tiles = golden_i64(g, "num_tiles", k, (int64_t)(n_b * n_slots));
    CHECK(want_ids && want_mask && want_tiles, "case %d: golden ids/mask/num_tiles", k);

    for (size_t i = 0; i < n_b; i++) {
        const cJSON *sample = cJSON_GetArrayItem(samples, (int)i);
        size_t n_img = (size_t)cJSON_GetArraySize(sample);
        EgImage imgs[8] = {0};
        int ok = n_img <= 8, jpeg = 0;
        for (size_t j = 0; ok && j < n_img; j++) {
            ok = load_image(cJSON_GetArrayItem(sample, (int)j), &imgs[j]) == 0;
            jpeg |= spec_is_jpeg(cJSON_GetArrayItem(sample, (int)j));
        }
        case_jpeg |= jpeg;
        EgError err = {0};
        float *row = pixels + i * n_slots * slot_floats;
        for (size_t p = 0; p < n_slots * slot_floats; p++)
            row[p] = NAN; /* poison: every value must be written */
        int rc =
            ok ? eg_mllama_preprocess_images(imgs, n_img, n_slots, &cfg, row, ids + i * n_slots,
                                             mask + i * n_slots * jt, tiles + i * n_slots, &err)
               : -1;
        CHECK(rc == 0, "case %d sample %zu: %s", k, i, err.msg);
        for (size_t j = 0; rc == 0 && j < n_img && s <= 56; j++)
            check_resized(g, k, (int)i, (int)j, &imgs[j], &cfg,
                          spec_is_jpeg(cJSON_GetArrayItem(sample, (int)j)));
        /* full tiles of each image, exact zeros after them */
        for (size_t j = 0; rc == 0 && stride == 1 && j < n_slots; j++) {
            const float *slot = row + j * slot_floats;
            size_t n_used = (size_t)tiles[i * n_slots + j], used = n_used * 3 * s * s;
            if (j < n_img) {
                const EgTensorView *want = golden(g, "c%d.b%d.i%d.tiles", k, (int)i, (int)j);
                if (!want || (size_t)want->numel != used) {
                    CHECK(0, "case %d image %zu.%zu: %zu tiles, HF %lld values", k, i, j, n_used,
                          want ? (long long)want->numel : -1LL);
                    continue;
                }
                double mean, d = max_abs_diff(slot, want->data, used, 1, &mean);
                if (!jpeg && d > *worst) *worst = d;
                CHECK(pixels_ok(jpeg, d, mean),
                      "case %d image %zu.%zu: |pixel - HF| max %g mean %g", k, i, j, d, mean);
            }
            size_t nonzero = 0;
            for (size_t p = used; p < slot_floats; p++)
                nonzero += slot[p] != 0.0f;
            CHECK(nonzero == 0, "case %d slot %zu.%zu: %zu padding values not 0", k, i, j, nonzero);
        }
        for (size_t j = 0; j < n_img; j++)
            eg_image_free(&imgs[j]);
    }
    if (stride > 1) { /* every stride-th value of the whole [B, N, J, 3, S, S] */
        const EgTensorView *want = golden(g, "c%d.pixel_values_sampled", k, 0, 0);
        size_t n = (n_b * n_slots * slot_floats + stride - 1) / stride;
        if (want && (size_t)want->numel == n) {
            double mean, d = max_abs_diff(pixels, want->data, n, stride, &mean);
            if (!case_jpeg && d > *worst) *worst = d;
            CHECK(pixels_ok(case_jpeg, d, mean),
                  "case %d: |pixel - HF| max %g mean %g (every %zuth)", k, d, mean, stride);
        } else {
            CHECK(0, "case %d: sampled pixels: %lld values, want %zu", k,
                  want ? (long long)want->numel : -1LL, n);
        }
    }
    for (size_t p = 0; want_ids && want_tiles && p < n_b * n_slots; p++) {
        CHECK(ids[p] == want_ids[p], "case %d slot %zu: aspect_ratio_id %d, HF %lld", k, p, ids[p],
              (long long)want_ids[p]);
        CHECK(tiles[p] == want_tiles[p], "case %d slot %zu: num_tiles %d, HF %lld", k, p, tiles[p],
              (long long)want_tiles[p]);
    }
    for (size_t p = 0; want_mask && p < n_b * n_slots * jt; p++)
        CHECK(mask[p] == want_mask[p], "case %d: aspect_ratio_mask[%zu] %d, HF %lld", k, p, mask[p],
              (long long)want_mask[p]);
    free(pixels);
    free(ids);
    free(mask);
    free(tiles);
    free(want_ids);
    free(want_mask);
    free(want_tiles);
}

static void test_goldens(void) {
    size_t len = 0;
    char *json = (char *)test_read_file(test_data_path("mllama/preprocess/cases.json"), &len);
    cJSON *meta = json ? cJSON_ParseWithLength(json, len) : NULL;
    free(json);
    EgError err = {0};
    EgTensorFile *g =
        eg_tensors_open_file(test_data_path("mllama/preprocess/goldens.safetensors"), &err);
    CHECK(meta && g, "goldens: %s", err.msg);
    if (!meta || !g) {
        cJSON_Delete(meta);
        eg_tensors_close(g);
        return;
    }
    double worst = 0;
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(meta, "cases")) run_case(g, c, k++, &worst);
    printf("%d HF cases, max |pixel - HF| = %g\n", k, worst);
    CHECK(k >= 30, "only %d cases", k);
    cJSON_Delete(meta);
    eg_tensors_close(g);
}

/* mllama.md §3.3's worked examples (S = 560, 4 tiles): W x H in, canvas and resized size out. */
static void test_worked_examples(void) {
    static const struct {
        uint32_t w, h;
        int rows, cols, id;
        uint32_t rh, rw;
    } ex[] = {
        {640, 480, 1, 2, 2, 480, 640},    {100, 75, 1, 1, 1, 420, 560},
        {1000, 2000, 2, 1, 5, 1120, 560}, {1920, 1080, 2, 2, 6, 630, 1120},
        {2000, 300, 1, 4, 4, 300, 2000},  {300, 2500, 4, 1, 8, 2240, 268},
        {50, 50, 1, 1, 1, 560, 560},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        EgMllamaTiling t = {0};
        EgError err = {0};
        int rc = eg_mllama_tiling(ex[i].w, ex[i].h, 560, 4, &t, &err);
        CHECK(rc == 0 && t.rows == ex[i].rows && t.cols == ex[i].cols &&
                  t.aspect_ratio_id == ex[i].id && t.resized_height == ex[i].rh &&
                  t.resized_width == ex[i].rw,
              "%ux%u: canvas %dx%d id %d resized %ux%u (%s)", ex[i].w, ex[i].h, t.rows, t.cols,
              t.aspect_ratio_id, t.resized_height, t.resized_width, err.msg);
    }
    CHECK(eg_mllama_num_aspect_ratios(4) == 8 && eg_mllama_num_aspect_ratios(1) == 1 &&
              eg_mllama_num_aspect_ratios(6) == 14 && eg_mllama_num_aspect_ratios(0) == 0,
          "aspect ratio counts");
}

static void expect_tiling_error(uint32_t w, uint32_t h, int tile, int max_tiles,
                                const char *needle) {
    EgMllamaTiling t;
    EgError err = {0};
    int rc = eg_mllama_tiling(w, h, tile, max_tiles, &t, &err);
    CHECK(rc == -1 && strstr(err.msg, needle), "%ux%u tile %d x%d: rc %d \"%s\", want \"%s\"", w, h,
          tile, max_tiles, rc, err.msg, needle);
}

static int stop_now(void *user) {
    (void)user;
    return 1;
}

static void test_hostile(void) {
    expect_tiling_error(0, 10, 560, 4, "empty image (0x10)");
    expect_tiling_error(10, 0, 560, 4, "empty image (10x0)");
    expect_tiling_error(1u << 21, 1, 560, 4, "has a side above");
    expect_tiling_error(1, 0xFFFFFFFFu, 560, 4, "has a side above");
    expect_tiling_error(10, 10, 0, 4, "tile size 0 outside");
    expect_tiling_error(10, 10, -5, 4, "tile size -5 outside");
    expect_tiling_error(10, 10, 1 << 20, 4, "tile size 1048576 outside");
    expect_tiling_error(10, 10, 560, 0, "max_image_tiles 0 outside");
    expect_tiling_error(10, 10, 560, 1000, "max_image_tiles 1000 outside");

    /* the largest side accepted still tiles into the canvas without overflow */
    EgMllamaTiling t;
    EgError err = {0};
    CHECK(eg_mllama_tiling(EG_MLLAMA_MAX_IMAGE_SIDE, 1, 560, 4, &t, &err) == 0 && t.cols == 4 &&
              t.rows == 1 && t.resized_width == 2240 && t.resized_height == 1,
          "1M x 1: %dx%d -> %ux%u (%s)", t.rows, t.cols, t.resized_width, t.resized_height,
          err.msg);

    EgMllamaPreprocessConfig cfg;
    eg_mllama_preprocess_config_default(&cfg, 28, 4);
    float *px = malloc(4 * 3 * 28 * 28 * sizeof *px);
    int32_t ids[1], mask[4];
    EgImage none = {0};
    CHECK(eg_mllama_preprocess_image(&none, &cfg, px, NULL, &err) == -1 &&
              strstr(err.msg, "no image"),
          "image without pixels: \"%s\"", err.msg);
    EgImage one = synthetic_image(5, 5, 1);
    CHECK(eg_mllama_preprocess_images(&one, 2, 1, &cfg, px, ids, mask, NULL, &err) == -1 &&
              strstr(err.msg, "2 images for 1 slots"),
          "more images than slots: \"%s\"", err.msg);
    /* a caller gone away stops the resize */
    cfg.stop = stop_now;
    CHECK(eg_mllama_preprocess_image(&one, &cfg, px, NULL, &err) == -1 &&
              strstr(err.msg, "stopped"),
          "stop function: \"%s\"", err.msg);
    cfg.stop = NULL;
    cfg.norm.std[1] = 0;
    CHECK(eg_mllama_preprocess_image(&one, &cfg, px, NULL, &err) == -1 &&
              strstr(err.msg, "image_std[1]"),
          "zero std: \"%s\"", err.msg);
    eg_image_free(&one);
    free(px);
}

/* Printed, not asserted: one 1920x1080 photo-sized image at the real 560 x 4 tiles. */
static void time_real_size(void) {
    EgMllamaPreprocessConfig cfg;
    eg_mllama_preprocess_config_default(&cfg, 560, 4);
    EgImage img = synthetic_image(1920, 1080, 12);
    float *px = malloc((size_t)4 * 3 * 560 * 560 * sizeof *px);
    int32_t id, mask[4];
    EgError err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = eg_mllama_preprocess_images(&img, 1, 1, &cfg, px, &id, mask, NULL, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(rc == 0 && id == 6, "1920x1080: rc %d id %d (%s)", rc, id, err.msg);
    printf("1920x1080 -> 2x2 tiles of 560: %.1f ms\n",
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6);
    free(px);
    eg_image_free(&img);
}

int main(void) {
    test_rng_init();
    test_worked_examples();
    test_goldens();
    test_hostile();
    time_real_size();
    return test_finish();
}
