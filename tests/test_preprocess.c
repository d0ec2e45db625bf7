/* Preprocessing (decode -> PIL-exact bicubic resize -> CLIP normalization) against the goldens made
 * with PIL 9.4 and with HF's IdeficsProcessor, plus properties of the resize itself checked
 * against an independent floating-point implementation of the same filter. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vision/image_decode.h"
#include "vision/preprocess.h"

/* ---- A minimal safetensors reader (8-byte LE header length, JSON header, raw data), kept
 * private to the test so it does not depend on the engine's loader. ---- */

typedef struct Safetensors {
    unsigned char *buf;
    size_t len;
    size_t data_start;
    cJSON *header;
} Safetensors;

static int st_open(Safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    st->buf = test_read_file(path, &st->len);
    if (!st->buf || st->len < 8) return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | st->buf[i];
    if (hlen > st->len - 8) return -1;
    st->header = cJSON_ParseWithLength((const char *)st->buf + 8, (size_t)hlen);
    st->data_start = 8 + (size_t)hlen;
    return st->header ? 0 : -1;
}

static void st_close(Safetensors *st) {
    cJSON_Delete(st->header);
    free(st->buf);
    memset(st, 0, sizeof *st);
}

/* Copies an F32 tensor out (the data need not be aligned in the file). Returns NULL if the key
 * is missing or malformed; *count gets the element count. */
static float *st_f32(const Safetensors *st, const char *key, size_t *count) {
    cJSON *t = cJSON_GetObjectItemCaseSensitive(st->header, key);
    cJSON *dtype = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    cJSON *offs = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dtype) || strcmp(dtype->valuestring, "F32") != 0 || !cJSON_IsArray(shape) ||
        cJSON_GetArraySize(offs) != 2)
        return NULL;
    size_t n = 1;
    cJSON *d;
    cJSON_ArrayForEach(d, shape) n *= (size_t)d->valuedouble;
    size_t begin = (size_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
    size_t end = (size_t)cJSON_GetArrayItem(offs, 1)->valuedouble;
    if (end < begin || end - begin != n * 4 || st->data_start + end > st->len) return NULL;
    float *out = malloc(n * sizeof *out);
    if (out) memcpy(out, st->buf + st->data_start + begin, n * 4);
    *count = n;
    return out;
}

/* ---- helpers ---- */

typedef struct Diff {
    double max, mean;
} Diff;

static Diff compare(const float *a, const float *b, size_t n) {
    Diff d = {0, 0};
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d.max) d.max = e;
        d.mean += e;
    }
    d.mean /= (double)n;
    return d;
}

static int load_image(const char *name, EgImage *img) {
    char rel[256];
    snprintf(rel, sizeof rel, "preprocess/%s", name);
    size_t len = 0;
    unsigned char *bytes = test_read_file(test_data_path(rel), &len);
    if (!bytes) return -1;
    EgError err = {0};
    int rc = eg_image_decode(bytes, len, NULL, img, &err);
    if (rc != 0) fprintf(stderr, "decode %s: %s\n", name, err.msg);
    free(bytes);
    return rc;
}

static int is_jpeg(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".jpg") == 0;
}

/* ---- goldens ---- */

/* Every image file in tests/data/preprocess, at 64 and 224, against preprocess_golden. PNGs must
 * match PIL to within one 8-bit level anywhere (1/255/std ~ 0.015) and almost everywhere exactly;
 * the JPEG only on average, because stb_image's JPEG decoder is not libjpeg. */
static void test_preprocess_goldens(void) {
    Safetensors st;
    if (st_open(&st, test_data_path("preprocess/preprocess_golden.safetensors")) != 0) {
        CHECK(0, "cannot read preprocess_golden.safetensors");
        st_close(&st);
        return;
    }
    DIR *dir = opendir(test_data_path("preprocess"));
    CHECK(dir != NULL, "cannot list %s", test_data_path("preprocess"));
    int files = 0;
    struct dirent *ent;
    while (dir && (ent = readdir(dir)) != NULL) {
        const char *name = ent->d_name;
        size_t n = strlen(name);
        if (n < 5 || (strcmp(name + n - 4, ".png") != 0 && !is_jpeg(name))) continue;
        files++;
        EgImage img;
        if (load_image(name, &img) != 0) {
            CHECK(0, "%s does not decode", name);
            continue;
        }
        static const int sizes[2] = {64, 224};
        for (int s = 0; s < 2; s++) {
            int size = sizes[s];
            char key[300];
            snprintf(key, sizeof key, "%s@%d", name, size);
            size_t count = 0;
            float *want = st_f32(&st, key, &count);
            CHECK(want && count == (size_t)3 * size * size, "golden %s missing or misshaped", key);
            if (!want || count != (size_t)3 * size * size) {
                free(want);
                continue;
            }
            float *got = malloc(count * sizeof *got);
            EgError err = {0};
            int rc = eg_preprocess_image(&img, size, got, &err);
            CHECK(rc == 0, "preprocess %s: %s", key, err.msg);
            if (rc == 0) {
                Diff d = compare(got, want, count);
                printf("  %-26s %ux%u -> %3d: max |diff| %.6f  mean |diff| %.2e\n", name,
                       (unsigned)img.width, (unsigned)img.height, size, d.max, d.mean);
                if (is_jpeg(name)) {
                    CHECK(d.mean <= 0.01, "%s: mean |diff| %g > 0.01", key, d.mean);
                } else {
                    CHECK(d.max <= 0.02, "%s: max |diff| %g > 0.02", key, d.max);
                    CHECK(d.mean <= 1e-3, "%s: mean |diff| %g > 1e-3", key, d.mean);
                }
            }
            free(got);
            free(want);
        }
        eg_image_free(&img);
    }
    if (dir) closedir(dir);
    CHECK(files >= 8, "expected the 8 reference images, found %d", files);
    st_close(&st);
}

/* HF IdeficsProcessor's pixel_values [1, 2, 3, 224, 224] for rgb_64x64.png and rgb_100x75.png.
 * transformers 5 resizes with torch's uint8 antialiased bicubic, not PIL: EG_RESAMPLE_TORCH must
 * match it; the PIL arithmetic is reported for comparison (it differs from this golden exactly as
 * much as the reference's own PIL golden does: 1 level at ~0.6% of values, 2 levels at one). */
static void test_processor_golden(void) {
    Safetensors st;
    if (st_open(&st, test_data_path("preprocess/processor_golden.safetensors")) != 0) {
        CHECK(0, "cannot read processor_golden.safetensors");
        st_close(&st);
        return;
    }
    size_t count = 0;
    float *want = st_f32(&st, "processor/pixel_values", &count);
    const size_t one = (size_t)3 * 224 * 224;
    CHECK(want && count == 2 * one, "processor/pixel_values missing or misshaped");
    static const char *names[2] = {"rgb_64x64.png", "rgb_100x75.png"};
    for (int i = 0; want && count == 2 * one && i < 2; i++) {
        EgImage img;
        if (load_image(names[i], &img) != 0) {
            CHECK(0, "%s does not decode", names[i]);
            continue;
        }
        float *got = malloc(one * sizeof *got);
        EgError err = {0};
        EgPreprocessConfig cfg;
        eg_preprocess_config_default(&cfg, 224);
        cfg.arith = EG_RESAMPLE_TORCH;
        CHECK(eg_preprocess_image_cfg(&img, &cfg, got, &err) == 0, "%s", err.msg);
        Diff d = compare(got, want + i * one, one);
        printf("  processor image %d (%s), torch arithmetic: max |diff| %.6f  mean |diff| %.2e\n",
               i, names[i], d.max, d.mean);
        CHECK(d.max <= 0.02, "processor image %d: max |diff| %g > 0.02", i, d.max);
        CHECK(d.mean <= 1e-3, "processor image %d: mean |diff| %g > 1e-3", i, d.mean);

        CHECK(eg_preprocess_image(&img, 224, got, &err) == 0, "%s", err.msg);
        d = compare(got, want + i * one, one);
        printf("  processor image %d (%s), PIL arithmetic:   max |diff| %.6f  mean |diff| %.2e\n",
               i, names[i], d.max, d.mean);
        CHECK(d.mean <= 1e-3, "processor image %d (PIL): mean |diff| %g > 1e-3", i, d.mean);
        free(got);
        eg_image_free(&img);
    }
    free(want);
    st_close(&st);
}

/* ---- resize properties ---- */

static double ref_cubic(double x) {
    x = fabs(x);
    if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
}

/* One separable pass written from the definition, independently of preprocess.c: every input
 * sample whose centre lies within the (scale-widened) support of the output sample's centre,
 * weights normalized to sum 1, result rounded and clipped to 8 bits. */
static void ref_pass(const uint8_t *src, int n_in, int n_out, int count, size_t in_step,
                     size_t in_stride, size_t out_step, size_t out_stride, uint8_t *dst) {
    double scale = (double)n_in / n_out, fs = scale < 1 ? 1 : scale;
    for (int o = 0; o < n_out; o++) {
        double center = (o + 0.5) * scale, wsum = 0;
        double *w = calloc((size_t)n_in, sizeof *w);
        for (int i = 0; i < n_in; i++) {
            /* PIL takes inputs within round(center +- support); the cubic is 0 outside anyway. */
            w[i] = ref_cubic((i + 0.5 - center) / fs);
            wsum += w[i];
        }
        for (int line = 0; line < count; line++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int i = 0; i < n_in; i++)
                    acc += w[i] / wsum * src[line * in_stride + i * in_step + c];
                double r = floor(acc + 0.5);
                dst[line * out_stride + o * out_step + c] = r < 0 ? 0 : r > 255 ? 255 : (uint8_t)r;
            }
        free(w);
    }
}

static void test_resize_matches_reference(EgResampleArith arith) {
    int worst = 0;
    for (int iter = 0; iter < 40; iter++) {
        int iw = 1 + (int)(test_rng_u64() % 70), ih = 1 + (int)(test_rng_u64() % 70);
        int ow = 1 + (int)(test_rng_u64() % 90), oh = 1 + (int)(test_rng_u64() % 90);
        uint8_t *src = malloc((size_t)iw * ih * 3);
        /* Smooth-ish content plus noise, so both flat and busy regions are exercised. */
        for (int y = 0; y < ih; y++)
            for (int x = 0; x < iw; x++)
                for (int c = 0; c < 3; c++)
                    src[((size_t)y * iw + x) * 3 + c] =
                        (uint8_t)((x * 7 + y * 3 + c * 50) % 200 + test_rng_u64() % 56);
        uint8_t *got = malloc((size_t)ow * oh * 3), *tmp = malloc((size_t)ow * ih * 3);
        uint8_t *want = malloc((size_t)ow * oh * 3);
        EgError err = {0};
        CHECK(eg_image_resize_bicubic(src, iw, ih, got, ow, oh, arith, &err) == 0, "%s", err.msg);
        /* PIL skips a pass whose size is unchanged; the reference pass is then an identity
         * anyway (each weight is 1 at the sample itself and 0 at integer distances). */
        ref_pass(src, iw, ow, ih, 3, (size_t)iw * 3, 3, (size_t)ow * 3, tmp);
        ref_pass(tmp, ih, oh, ow, (size_t)ow * 3, 3, (size_t)ow * 3, 3, want);
        int max_diff = 0;
        for (size_t i = 0; i < (size_t)ow * oh * 3; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            if (d > max_diff) max_diff = d;
        }
        /* Only the fixed-point quantization of the weights differs: at most one level after a
         * pass, which the second pass can carry, so two levels in all. */
        CHECK(max_diff <= 2, "%dx%d -> %dx%d differs from the reference by %d levels", iw, ih, ow,
              oh, max_diff);
        if (max_diff > worst) worst = max_diff;
        free(src);
        free(got);
        free(tmp);
        free(want);
    }
    printf("  resize (%s) vs float reference: worst difference %d level(s) over 40 random cases\n",
           arith == EG_RESAMPLE_PIL ? "PIL" : "torch", worst);
}

static void test_resize_constant_and_identity(EgResampleArith arith) {
    static const int sizes[][4] = {
        {5, 7, 224, 224}, {640, 480, 64, 64}, {3, 1, 1, 9}, {1, 1, 2, 2}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int iw = sizes[t][0], ih = sizes[t][1], ow = sizes[t][2], oh = sizes[t][3];
        uint8_t *src = malloc((size_t)iw * ih * 3), *dst = malloc((size_t)ow * oh * 3);
        for (size_t i = 0; i < (size_t)iw * ih; i++) {
            src[3 * i + 0] = 0;
            src[3 * i + 1] = 137;
            src[3 * i + 2] = 255;
        }
        EgError err = {0};
        CHECK(eg_image_resize_bicubic(src, iw, ih, dst, ow, oh, arith, &err) == 0, "%s", err.msg);
        int ok = 1;
        for (size_t i = 0; i < (size_t)ow * oh; i++)
            ok &= dst[3 * i] == 0 && dst[3 * i + 1] == 137 && dst[3 * i + 2] == 255;
        CHECK(ok, "constant %dx%d image is not constant after resize to %dx%d", iw, ih, ow, oh);
        free(src);
        free(dst);
    }

    /* Same size: PIL returns a copy, and the normalization is then exactly the per-value map. */
    EgImage img = {33, 21, malloc(33 * 21 * 3)};
    for (size_t i = 0; i < 33 * 21 * 3; i++)
        img.rgb[i] = (uint8_t)test_rng_u64();
    uint8_t *same = malloc(33 * 21 * 3);
    EgError err = {0};
    CHECK(eg_image_resize_bicubic(img.rgb, 33, 21, same, 33, 21, arith, &err) == 0, "%s", err.msg);
    CHECK(memcmp(same, img.rgb, 33 * 21 * 3) == 0, "same-size resize changed pixels");
    free(same);
    img.height = 33; /* square, so preprocess at 33 is a pass-through */
    img.rgb = realloc(img.rgb, 33 * 33 * 3);
    for (size_t i = 0; i < 33 * 33 * 3; i++)
        img.rgb[i] = (uint8_t)test_rng_u64();
    float *out = malloc(3 * 33 * 33 * sizeof *out);
    EgPreprocessConfig cfg;
    eg_preprocess_config_default(&cfg, 33);
    cfg.arith = arith;
    CHECK(eg_preprocess_image_cfg(&img, &cfg, out, &err) == 0, "%s", err.msg);
    int exact = 1;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < 33 * 33; i++) {
            float v =
                ((float)img.rgb[3 * i + c] / 255.0f - eg_clip_norm.mean[c]) / eg_clip_norm.std[c];
            exact &= out[c * 33 * 33 + i] == v;
        }
    CHECK(exact, "same-size preprocess is not the exact normalization of the input");

    /* Custom normalization: mean 0, std 1 gives v / 255. */
    cfg.norm = (EgPixelNorm){{0, 0, 0}, {1, 1, 1}};
    CHECK(eg_preprocess_image_cfg(&img, &cfg, out, &err) == 0, "%s", err.msg);
    CHECK(out[33 * 33 + 5] == (float)img.rgb[3 * 5 + 1] / 255.0f, "unit normalization");
    free(out);
    eg_image_free(&img);
}

/* A hand-checkable case: 2 pixels (0, 200) upscaled to 4 along x. Output centres fall at
 * 0.25, 0.75, 1.25, 1.75 (input pixel centres at 0.5, 1.5); the taps that exist are renormalized:
 *   out0: d = 0.25, 1.25 -> w = 0.8671875, -0.0703125 -> 200 * -0.0703/0.7969 = -17.6 -> 0
 * (clipped) out1: d = 0.25, 0.75 -> w = 0.8671875,  0.2265625 -> 200 *  0.2266/1.0938 =  41.4 -> 41
 *   out2, out3 mirror them: 158.6 -> 159 and 217.6 -> 218 (overshoot kept, below 255). */
static void test_resize_small_known(EgResampleArith arith) {
    uint8_t src[2 * 3] = {0, 0, 0, 200, 200, 200}, dst[4 * 3];
    EgError err = {0};
    CHECK(eg_image_resize_bicubic(src, 2, 1, dst, 4, 1, arith, &err) == 0, "%s", err.msg);
    CHECK(dst[0] == 0 && dst[3] == 41 && dst[6] == 159 && dst[9] == 218, "2->4: got %d %d %d %d",
          dst[0], dst[3], dst[6], dst[9]);
    CHECK(dst[1] == dst[0] && dst[11] == dst[9], "channels resized alike");
}

static void test_errors(void) {
    EgError err = {0};
    uint8_t px[3] = {1, 2, 3};
    EgImage img = {1, 1, px};
    float out[3 * 4];
    CHECK(eg_preprocess_image(&img, 0, out, &err) != 0 && strstr(err.msg, "size"), "size 0: %s",
          err.msg);
    CHECK(eg_preprocess_image(&img, 100000, out, &err) != 0, "huge size accepted");
    EgImage empty = {0, 0, NULL};
    CHECK(eg_preprocess_image(&empty, 2, out, &err) != 0 && strstr(err.msg, "empty"), "empty: %s",
          err.msg);
    CHECK(eg_preprocess_image(&img, 2, out, &err) == 0, "1x1 -> 2x2: %s", err.msg);
    CHECK(out[0] == out[3], "1x1 upscaled is constant");
    CHECK(eg_image_resize_bicubic(px, 0, 1, px, 1, 1, EG_RESAMPLE_PIL, &err) != 0,
          "0-wide resize accepted");
}

/* Stops at its n-th poll (never when n is 0), counting the polls. */
typedef struct StopAt {
    int polls, at;
} StopAt;

static int stop_at(void *user) {
    StopAt *s = user;
    return ++s->polls == s->at;
}

/* A stop function is polled between rows of the resize: the call gives up at once when it says
 * so, and changes nothing when it never does. */
static void test_stop(void) {
    enum { W = 600, H = 500, S = 32 };
    EgImage img = {W, H, malloc((size_t)W * H * 3)};
    for (size_t i = 0; i < (size_t)W * H * 3; i++)
        img.rgb[i] = (uint8_t)test_rng_u64();
    float want[3 * S * S], got[3 * S * S];
    EgError err = {0};
    CHECK(eg_preprocess_image(&img, S, want, &err) == 0, "preprocess: %s", err.msg);
    EgPreprocessConfig cfg;
    eg_preprocess_config_default(&cfg, S);
    StopAt never = {0, 0};
    cfg.stop = stop_at;
    cfg.stop_user = &never;
    CHECK(eg_preprocess_image_cfg(&img, &cfg, got, &err) == 0 && memcmp(got, want, sizeof got) == 0,
          "with a stop function that never stops: %s", err.msg);
    /* the horizontal pass reads every one of the 500 rows: polled every few rows */
    CHECK(never.polls >= H / 64 && never.polls <= H, "%d polls for %d rows", never.polls, H);
    StopAt third = {0, 3};
    cfg.stop_user = &third;
    CHECK(eg_preprocess_image_cfg(&img, &cfg, got, &err) != 0 && strstr(err.msg, "stopped"),
          "stopped at the third poll: %s", err.msg);
    CHECK(third.polls == 3, "polled %d times after it said stop", third.polls - 3);
    free(img.rgb);
}

int main(void) {
    test_rng_init();
    test_preprocess_goldens();
    test_processor_golden();
    for (int arith = EG_RESAMPLE_PIL; arith <= EG_RESAMPLE_TORCH; arith++) {
        test_resize_constant_and_identity((EgResampleArith)arith);
        test_resize_small_known((EgResampleArith)arith);
        test_resize_matches_reference((EgResampleArith)arith);
    }
    test_errors();
    test_stop();
    return test_finish();
}
