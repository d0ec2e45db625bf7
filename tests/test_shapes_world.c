/* The shapes world (tools/shapes_world.h), the C port of refgen/shapes.py, and the PNG encoder:
 * - sampling: a seed always gives the same scene and bytes; counts, cells, vocabularies, jitter,
 *   background and noise seeds follow shapes.py's distributions;
 * - rendering: every pixel is either a scene object's exact palette colour where shapes.py's
 *   geometry (written out again here in double precision) says so, or background; every cluster
 *   of coloured pixels is one object, centred where the scene says; the background has the mean
 *   and noise std of shapes.py (grey level + N(0, 6));
 * - the reference images (tests/data/shapes-cases, drawn by shapes.py itself): every object in
 *   them is reproduced pixel for pixel by eg_shapes_object_covers for some jitter, the answers
 *   built from the fitted objects equal the reference's true answers, and their background
 *   statistics match ours;
 * - texts: captions and answers for hand-made scenes, and every caption/answer of cases.json
 *   parsed back into a scene and rebuilt to the same string;
 * - PNG: eg_png_encode_rgb output decodes (vision/image_decode.h) to identical pixels. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tools/png_encode.h"
#include "tools/shapes_world.h"
#include "vision/image_decode.h"

enum { S = EG_SHAPES_IMAGE_SIZE };
#define CELL (S / 3.0)
/* A background channel further than this from the grey level would be a 7.5-sigma noise value
 * (never seen in practice); anything that far out is not background. */
#define BG_BAND 45

/* REQUIRE for the void test functions: a failure that makes the rest of one test meaningless. */
#define REQUIRE_VOID(cond, ...)                                                                    \
    do {                                                                                           \
        CHECK(cond, __VA_ARGS__);                                                                  \
        if (!(cond)) return;                                                                       \
    } while (0)

/* Palette index of an RGB pixel, or -1 when it is not exactly one of the eight colours. */
static int palette_index(const uint8_t *px) {
    for (int c = 0; c < EG_SHAPES_N_COLORS; c++)
        if (memcmp(px, eg_shapes_color_rgb((EgShapesColor)c), 3) == 0) return c;
    return -1;
}

/* shapes.py's shape rules, written out independently in double precision, as a signed margin:
 * >= 0 inside, < 0 outside, and its size says how close the pixel centre is to an edge. */
static double ref_margin(EgShapesShape shape, double r, double dy, double dx) {
    double ady = fabs(dy), adx = fabs(dx);
    switch (shape) {
    case EG_SHAPES_CIRCLE:
        return r * r - (dy * dy + dx * dx);
    case EG_SHAPES_SQUARE:
        return fmin(0.85 * r - ady, 0.85 * r - adx);
    case EG_SHAPES_DIAMOND:
        return 1.1 * r - ady - adx;
    case EG_SHAPES_TRIANGLE: {
        double t = (dy + r) / (1.8 * r);
        return fmin(fmin(t, 1.0 - t), t * r - adx);
    }
    case EG_SHAPES_CROSS: {
        double w = 0.33 * r;
        return fmax(fmin(w - ady, r - adx), fmin(w - adx, r - ady));
    }
    default:
        return -1.0;
    }
}

static double object_margin(const EgShapesObject *o, int y, int x) {
    double cy = (o->row + 0.5) * CELL + o->dy, cx = (o->col + 0.5) * CELL + o->dx;
    return ref_margin(o->shape, eg_shapes_size_radius(o->size), y + 0.5 - cy, x + 0.5 - cx);
}

/* ---- connected clusters of palette-coloured pixels ---- */

typedef struct Cluster {
    int color, n;
    int ymin, ymax, xmin, xmax;
    double sy, sx; /* sums of pixel-centre coordinates */
} Cluster;

/* Labels 4-connected same-colour palette pixels; label[i] = cluster index or -1. Returns the
 * number of clusters (at most max; more is reported as max + 1). */
static int find_clusters(const uint8_t *rgb, int *label, Cluster *cl, int max) {
    int n = 0, stack[S * S];
    for (int i = 0; i < S * S; i++)
        label[i] = -1;
    for (int i = 0; i < S * S; i++) {
        int color = palette_index(rgb + i * 3);
        if (color < 0 || label[i] >= 0) continue;
        if (n == max) return max + 1;
        Cluster *c = &cl[n];
        *c = (Cluster){.color = color, .ymin = S, .xmin = S, .ymax = -1, .xmax = -1};
        int top = 0;
        stack[top++] = i;
        label[i] = n;
        while (top) {
            int p = stack[--top], y = p / S, x = p % S;
            c->n++;
            c->sy += y + 0.5;
            c->sx += x + 0.5;
            c->ymin = y < c->ymin ? y : c->ymin;
            c->ymax = y > c->ymax ? y : c->ymax;
            c->xmin = x < c->xmin ? x : c->xmin;
            c->xmax = x > c->xmax ? x : c->xmax;
            const int nb[4][2] = {{-1, 0}, {1, 0}, {0, -1}, {0, 1}};
            for (int k = 0; k < 4; k++) {
                int yy = y + nb[k][0], xx = x + nb[k][1];
                if (yy < 0 || yy >= S || xx < 0 || xx >= S) continue;
                int q = yy * S + xx;
                if (label[q] < 0 && palette_index(rgb + q * 3) == color) {
                    label[q] = n;
                    stack[top++] = q;
                }
            }
        }
        n++;
    }
    return n;
}

/* ---- sampling ---- */

static void test_determinism(void) {
    uint8_t a[EG_SHAPES_RGB_BYTES], b[EG_SHAPES_RGB_BYTES];
    int same_for_other_seed = 0;
    for (uint64_t seed = 0; seed < 50; seed++) {
        uint64_t s = seed * 0x9e3779b97f4a7c15ull + test_rng_u64() % 1000;
        EgShapesScene x, y, z;
        CHECK(eg_shapes_scene_from_seed(s, 0, &x) == 0, "sample");
        CHECK(eg_shapes_scene_from_seed(s, 0, &y) == 0, "sample");
        CHECK(memcmp(&x, &y, sizeof x) == 0, "seed %llu: two different scenes",
              (unsigned long long)s);
        eg_shapes_render(&x, a);
        eg_shapes_render(&y, b);
        CHECK(memcmp(a, b, sizeof a) == 0, "seed %llu: two different renders",
              (unsigned long long)s);
        eg_shapes_scene_from_seed(s + 1, 0, &z);
        eg_shapes_render(&z, b);
        same_for_other_seed += memcmp(a, b, sizeof a) == 0;
    }
    CHECK(same_for_other_seed == 0, "%d neighbouring seeds drew identical images",
          same_for_other_seed);

    /* The same noise seed gives the same noise; another gives other noise. */
    EgShapesScene sc;
    eg_shapes_scene_from_seed(7, 1, &sc);
    eg_shapes_render(&sc, a);
    sc.noise_seed ^= 1;
    eg_shapes_render(&sc, b);
    CHECK(memcmp(a, b, sizeof a) != 0, "noise does not depend on noise_seed");

    /* Pinned values: a changed PRNG or sampling order would silently change every drawn scene
     * (and examples/); this makes it a visible decision. Seed 5 is `egret draw --seed 5`'s
     * first scene. */
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, 5);
    eg_shapes_sample(&rng, 0, &sc);
    char text[EG_SHAPES_TEXT_MAX];
    eg_shapes_caption(&sc, text, sizeof text);
    CHECK(strcmp(text, "a large orange cross at the bottom.") == 0, "seed 5 drew '%s'", text);
}

static void test_sampling(void) {
    enum { N = 30000 };
    int counts[4] = {0}, colors[EG_SHAPES_N_COLORS] = {0}, shapes[EG_SHAPES_N_SHAPES] = {0};
    int sizes[EG_SHAPES_N_SIZES] = {0}, positions[EG_SHAPES_N_POSITIONS] = {0}, cells[9] = {0};
    int bg_seen[256] = {0}, bad = 0, objects = 0;
    double jmin = 9, jmax = -9, jsum = 0;
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, test_rng_u64());
    for (int i = 0; i < N; i++) {
        EgShapesScene sc;
        CHECK(eg_shapes_sample(&rng, 0, &sc) == 0, "sample");
        int n = sc.n_objects;
        if (n < 1 || n > 3) {
            bad++;
            continue;
        }
        counts[n]++;
        if (n == 1) {
            int r, c;
            bad += eg_shapes_position_cell(sc.position, &r, &c) != 0 || r != sc.objects[0].row ||
                   c != sc.objects[0].col;
            if ((unsigned)sc.position < EG_SHAPES_N_POSITIONS) positions[sc.position]++;
        } else {
            bad += sc.position != EG_SHAPES_POS_NONE;
        }
        for (int k = 0; k < n; k++) {
            const EgShapesObject *o = &sc.objects[k];
            bad += o->row < 0 || o->row > 2 || o->col < 0 || o->col > 2;
            /* reading order, distinct cells */
            if (k > 0)
                bad += o->row * 3 + o->col <= sc.objects[k - 1].row * 3 + sc.objects[k - 1].col;
            if (n > 1) cells[(o->row * 3 + o->col) % 9]++;
            colors[o->color % EG_SHAPES_N_COLORS]++;
            shapes[o->shape % EG_SHAPES_N_SHAPES]++;
            sizes[o->size % EG_SHAPES_N_SIZES]++;
            double j[2] = {o->dy, o->dx};
            for (int a = 0; a < 2; a++) {
                jmin = fmin(jmin, j[a]);
                jmax = fmax(jmax, j[a]);
                jsum += j[a];
            }
            objects++;
        }
        bad += sc.bg < 95 || sc.bg > 150 || sc.noise_seed >= (1ull << 30);
        bg_seen[sc.bg & 255]++;
    }
    CHECK(bad == 0, "%d scenes break a sampling rule", bad);
    /* Binomial tolerances of about 4.5 sigma. */
    const double want[4] = {0, 0.5, 0.3, 0.2};
    for (int n = 1; n <= 3; n++)
        CHECK(fabs(counts[n] / (double)N - want[n]) < 0.013,
              "%d objects: %.4f of scenes, want %.1f", n, counts[n] / (double)N, want[n]);
    for (int c = 0; c < EG_SHAPES_N_COLORS; c++)
        CHECK(fabs(colors[c] / (double)objects - 1.0 / 8) < 0.009, "colour %s: %.4f",
              eg_shapes_color_name((EgShapesColor)c), colors[c] / (double)objects);
    for (int s = 0; s < EG_SHAPES_N_SHAPES; s++)
        CHECK(fabs(shapes[s] / (double)objects - 1.0 / 5) < 0.011, "shape %s: %.4f",
              eg_shapes_shape_name((EgShapesShape)s), shapes[s] / (double)objects);
    CHECK(fabs(sizes[0] / (double)objects - 0.5) < 0.013, "small: %.4f",
          sizes[0] / (double)objects);
    for (int p = 0; p < EG_SHAPES_N_POSITIONS; p++)
        CHECK(fabs(positions[p] / (double)counts[1] - 0.2) < 0.016, "position %s: %.4f",
              eg_shapes_position_name((EgShapesPosition)p), positions[p] / (double)counts[1]);
    int multi = 0;
    for (int c = 0; c < 9; c++)
        multi += cells[c];
    for (int c = 0; c < 9; c++) /* multi-object scenes use all nine cells, corners included */
        CHECK(fabs(cells[c] / (double)multi - 1.0 / 9) < 0.01, "cell %d: %.4f", c,
              cells[c] / (double)multi);
    CHECK(jmin >= -1.5 && jmax <= 1.5 && jmin < -1.49 && jmax > 1.49, "jitter range [%g, %g]", jmin,
          jmax);
    CHECK(fabs(jsum / (2.0 * objects)) < 0.03, "jitter mean %g", jsum / (2.0 * objects));
    int levels = 0;
    for (int g = 95; g <= 150; g++)
        levels += bg_seen[g] > 0;
    CHECK(levels == 56, "%d of the 56 grey levels 95..150 drawn", levels);

    for (int n = 1; n <= 3; n++) {
        EgShapesScene sc;
        int ok = 1;
        for (int i = 0; i < 200; i++)
            ok &= eg_shapes_sample(&rng, n, &sc) == 0 && sc.n_objects == n;
        CHECK(ok, "a fixed count of %d is not honoured", n);
    }
    EgShapesScene sc;
    CHECK(eg_shapes_sample(&rng, 4, &sc) == -1 && eg_shapes_sample(&rng, -1, &sc) == -1,
          "object counts outside 0..3 accepted");
}

/* ---- rendering ---- */

static void check_render(const EgShapesScene *sc, const uint8_t *rgb, int *bad_pixels,
                         int *bad_clusters) {
    int label[S * S];
    Cluster cl[16];
    /* Pixel by pixel: the last object whose shapes.py geometry covers it paints it; pixels
     * within 1e-3 of an edge may fall either way (float32 in the renderer, double here). */
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const uint8_t *px = rgb + (y * S + x) * 3;
            int want = -1, unsure = 0;
            for (int k = 0; k < sc->n_objects; k++) {
                double m = object_margin(&sc->objects[k], y, x);
                if (fabs(m) < 1e-3) unsure = 1;
                if (m >= 0) want = sc->objects[k].color;
            }
            int got = palette_index(px);
            int background = 1;
            for (int c = 0; c < 3; c++)
                background &= abs(px[c] - sc->bg) <= BG_BAND;
            if (unsure) continue;
            if (want >= 0 ? got != want : (got >= 0 || !background)) {
                if (*bad_pixels < 5)
                    fprintf(stderr, "pixel (%d, %d) is %d,%d,%d, want %s\n", y, x, px[0], px[1],
                            px[2], want >= 0 ? eg_shapes_color_name(want) : "background");
                (*bad_pixels)++;
            }
        }
    /* Clusters: each holds at least one object's centre pixel; one holding exactly one is that
     * object, and its centroid is the shape's centroid at the described cell and jitter (the
     * triangle's is 0.2 r below its centre). */
    int n = find_clusters(rgb, label, cl, 15);
    int owners[16] = {0}, owner_of[16];
    for (int k = 0; k < sc->n_objects; k++) {
        const EgShapesObject *o = &sc->objects[k];
        double cy, cx;
        eg_shapes_object_center(o, &cy, &cx);
        int l = n <= 15 ? label[(int)cy * S + (int)cx] : -1;
        if (l < 0 || cl[l].color != (int)o->color) {
            fprintf(stderr, "object %d: centre pixel is not %s\n", k,
                    eg_shapes_color_name(o->color));
            (*bad_clusters)++;
            continue;
        }
        owners[l]++;
        owner_of[l] = k;
    }
    for (int l = 0; l < n && n <= 15; l++) {
        if (owners[l] == 0) {
            fprintf(stderr, "cluster %d (%s, %d px) belongs to no object\n", l,
                    eg_shapes_color_name(cl[l].color), cl[l].n);
            (*bad_clusters)++;
        }
        if (owners[l] != 1) continue;
        const EgShapesObject *o = &sc->objects[owner_of[l]];
        double cy, cx, my = cl[l].sy / cl[l].n, mx = cl[l].sx / cl[l].n;
        eg_shapes_object_center(o, &cy, &cx);
        if (o->shape == EG_SHAPES_TRIANGLE) cy += 0.2 * eg_shapes_size_radius(o->size);
        int in_cell = (int)(my / CELL) == o->row && (int)(mx / CELL) == o->col;
        if (!in_cell || fabs(my - cy) > 0.75 || fabs(mx - cx) > 0.75) {
            fprintf(stderr, "%s %s: centroid (%.2f, %.2f), want (%.2f, %.2f) in cell (%d, %d)\n",
                    eg_shapes_color_name(o->color), eg_shapes_shape_name(o->shape), my, mx, cy, cx,
                    o->row, o->col);
            (*bad_clusters)++;
        }
    }
}

/* Background pixels of an image: those not exactly a palette colour. Accumulates the deviations
 * from the grey level. */
typedef struct BgStats {
    double n, sum, sum2, tail; /* tail: |v - bg| >= 19, i.e. beyond ~3 sigma */
    double rg;                 /* sum of (r - bg)(g - bg), for channel independence */
} BgStats;

static void add_background(const uint8_t *rgb, double bg, BgStats *st) {
    for (int i = 0; i < S * S; i++) {
        const uint8_t *px = rgb + i * 3;
        if (palette_index(px) >= 0) continue;
        for (int c = 0; c < 3; c++) {
            double d = px[c] - bg;
            st->n++;
            st->sum += d;
            st->sum2 += d * d;
            st->tail += fabs(d) >= 19;
        }
        st->rg += (px[0] - bg) * (px[1] - bg);
    }
}

/* The grey level of an image drawn by shapes.py is not stored: it is the background's mean,
 * which must sit close to an integer in 95..150. Returns it, or -1. */
static int estimate_bg(const uint8_t *rgb, double *mean, double *std) {
    BgStats st = {0};
    add_background(rgb, 0.0, &st);
    *mean = st.sum / st.n;
    *std = sqrt(st.sum2 / st.n - *mean * *mean);
    int g = (int)lround(*mean);
    return g >= 95 && g <= 150 && fabs(*mean - g) < 0.3 ? g : -1;
}

static void test_render(void) {
    uint8_t rgb[EG_SHAPES_RGB_BYTES];
    int bad_pixels = 0, bad_clusters = 0, bad_bg = 0;
    BgStats all = {0};
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, test_rng_u64());
    for (int i = 0; i < 400; i++) {
        EgShapesScene sc;
        eg_shapes_sample(&rng, i % 4, &sc); /* random, then 1, 2, 3 objects */
        eg_shapes_render(&sc, rgb);
        check_render(&sc, rgb, &bad_pixels, &bad_clusters);
        BgStats one = {0};
        add_background(rgb, sc.bg, &one);
        double mean = one.sum / one.n, std = sqrt(one.sum2 / one.n - mean * mean);
        /* Per image about 11000 samples: the mean is within 0.06 of the grey level (1 sigma),
         * the std within 0.04 of 6.007 (N(0, 6) plus rounding's 1/12 variance). */
        if (fabs(mean) > 0.3 || fabs(std - 6.007) > 0.25) {
            if (bad_bg < 3)
                fprintf(stderr, "scene %d: background mean bg%+.3f, std %.3f\n", i, mean, std);
            bad_bg++;
        }
        add_background(rgb, sc.bg, &all);
    }
    CHECK(bad_pixels == 0, "%d pixels differ from shapes.py's geometry", bad_pixels);
    CHECK(bad_clusters == 0, "%d objects or clusters misplaced", bad_clusters);
    CHECK(bad_bg == 0, "%d images with a background off N(bg, 6)", bad_bg);
    double mean = all.sum / all.n, std = sqrt(all.sum2 / all.n - mean * mean);
    double tail = all.tail / all.n, rho = all.rg / (all.n / 3) / (std * std);
    printf("render: background mean bg%+.4f, std %.4f, P(|d| >= 19) %.5f, r-g correlation %.4f\n",
           mean, std, tail, rho);
    CHECK(fabs(mean) < 0.02 && fabs(std - 6.007) < 0.02, "pooled background: mean %+.4f std %.4f",
          mean, std);
    /* Gaussian: P(|6z + rounding| >= 18.5) = 2 (1 - Phi(3.083)) = 0.00205 (a uniform or a
     * differently scaled noise with the same std has another tail). */
    CHECK(fabs(tail - 0.00205) < 0.0004, "background tail %.5f, want 0.00205", tail);
    CHECK(fabs(rho) < 0.01, "channels' noise correlated: %.4f", rho);
}

/* ---- texts ---- */

static int lookup(const char *word, const char *(*name)(int), int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(word, name(i)) == 0) return i;
    return -1;
}
static const char *color_name_i(int i) {
    return eg_shapes_color_name((EgShapesColor)i);
}
static const char *shape_name_i(int i) {
    return eg_shapes_shape_name((EgShapesShape)i);
}
static const char *size_name_i(int i) {
    return eg_shapes_size_name((EgShapesSize)i);
}
static const char *position_name_i(int i) {
    return eg_shapes_position_name((EgShapesPosition)i);
}

/* Parses a caption as shapes.py writes one into a scene (cells are not in multi-object captions;
 * reading order is kept by giving the objects increasing cells). Returns 0 or -1. */
static int parse_caption(const char *text, EgShapesScene *sc) {
    char buf[256], *save = NULL, *w[32];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", text);
    size_t len = strlen(buf);
    if (len == 0 || buf[len - 1] != '.') return -1;
    buf[len - 1] = '\0';
    for (char *t = strtok_r(buf, " ,", &save); t && n < 32; t = strtok_r(NULL, " ,", &save))
        w[n++] = t;
    memset(sc, 0, sizeof *sc);
    sc->bg = 120;
    if (n == 7 && strcmp(w[5], "the") == 0) { /* a SIZE COLOR SHAPE on the left */
        EgShapesObject *o = &sc->objects[0];
        int size = lookup(w[1], size_name_i, EG_SHAPES_N_SIZES);
        int color = lookup(w[2], color_name_i, EG_SHAPES_N_COLORS);
        int shape = lookup(w[3], shape_name_i, EG_SHAPES_N_SHAPES);
        int pos = lookup(w[6], position_name_i, EG_SHAPES_N_POSITIONS);
        if (size < 0 || color < 0 || shape < 0 || pos < 0) return -1;
        *o = (EgShapesObject){.color = color, .shape = shape, .size = size};
        sc->n_objects = 1;
        sc->position = (EgShapesPosition)pos;
        eg_shapes_position_cell(sc->position, &o->row, &o->col);
        return 0;
    }
    sc->position = EG_SHAPES_POS_NONE;
    for (int i = 0; i < n;) { /* ARTICLE COLOR SHAPE [and] ... */
        if (strcmp(w[i], "and") == 0) {
            i++;
            continue;
        }
        if (i + 2 >= n || sc->n_objects == 3) return -1;
        int color = lookup(w[i + 1], color_name_i, EG_SHAPES_N_COLORS);
        int shape = lookup(w[i + 2], shape_name_i, EG_SHAPES_N_SHAPES);
        if (color < 0 || shape < 0) return -1;
        int k = sc->n_objects++;
        sc->objects[k] = (EgShapesObject){.color = color, .shape = shape, .row = k, .col = k};
        i += 3;
    }
    return sc->n_objects >= 2 ? 0 : -1;
}

static void test_texts(void) {
    char buf[EG_SHAPES_TEXT_MAX];
    EgShapesScene sc = {.n_objects = 1, .position = EG_SHAPES_LEFT, .bg = 120};
    sc.objects[0] = (EgShapesObject){.color = EG_SHAPES_RED,
                                     .shape = EG_SHAPES_CIRCLE,
                                     .size = EG_SHAPES_SMALL,
                                     .row = 1,
                                     .col = 0};
    CHECK(eg_shapes_caption(&sc, buf, sizeof buf) == 31 &&
              strcmp(buf, "a small red circle on the left.") == 0,
          "caption '%s'", buf);
    const char *want[EG_SHAPES_N_TASKS] = {
        "a small red circle on the left.", "red.", "circle.", "small.", "left.", "one."};
    for (int t = 0; t < EG_SHAPES_N_TASKS; t++) {
        int n = eg_shapes_answer(&sc, (EgShapesTask)t, buf, sizeof buf);
        CHECK(n == (int)strlen(want[t]) && strcmp(buf, want[t]) == 0, "%s answer '%s'",
              eg_shapes_task_name((EgShapesTask)t), buf);
    }
    /* The article depends on the colour: "an orange". A single object always gets "a" (before
     * its size), even an orange one. */
    sc.objects[0].color = EG_SHAPES_ORANGE;
    sc.objects[0].size = EG_SHAPES_LARGE;
    sc.position = EG_SHAPES_CENTER;
    eg_shapes_caption(&sc, buf, sizeof buf);
    CHECK(strcmp(buf, "a large orange circle in the center.") == 0, "caption '%s'", buf);
    sc.n_objects = 3;
    sc.position = EG_SHAPES_POS_NONE;
    sc.objects[1] = (EgShapesObject){.color = EG_SHAPES_WHITE, .shape = EG_SHAPES_CROSS};
    sc.objects[2] = (EgShapesObject){.color = EG_SHAPES_BLACK, .shape = EG_SHAPES_TRIANGLE};
    eg_shapes_caption(&sc, buf, sizeof buf);
    CHECK(strcmp(buf, "an orange circle, a white cross and a black triangle.") == 0, "caption '%s'",
          buf);
    sc.n_objects = 2;
    eg_shapes_caption(&sc, buf, sizeof buf);
    CHECK(strcmp(buf, "an orange circle and a white cross.") == 0, "caption '%s'", buf);
    CHECK(eg_shapes_answer(&sc, EG_SHAPES_TASK_COUNT, buf, sizeof buf) == 4 &&
              strcmp(buf, "two.") == 0,
          "count '%s'", buf);
    for (int t = EG_SHAPES_TASK_COLOR; t <= EG_SHAPES_TASK_POSITION; t++)
        CHECK(eg_shapes_answer(&sc, (EgShapesTask)t, buf, sizeof buf) == -1 && buf[0] == '\0',
              "%s of a two-object scene gave '%s'", eg_shapes_task_name((EgShapesTask)t), buf);
    char small[10];
    CHECK(eg_shapes_caption(&sc, small, sizeof small) == -1 && strlen(small) == 9,
          "short buffer: '%s'", small);

    /* Every text of the reference episodes (written by shapes.py), parsed back into a scene,
     * must come out of eg_shapes_answer unchanged. */
    size_t len;
    char *json = (char *)test_read_file(test_data_path("shapes-cases/cases.json"), &len);
    REQUIRE_VOID(json != NULL, "cannot read shapes-cases/cases.json");
    cJSON *cases = cJSON_ParseWithLength(json, len);
    free(json);
    int texts = 0, same = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *task = cJSON_GetObjectItem(c, "task")->valuestring;
        int t = -1;
        for (int i = 0; i < EG_SHAPES_N_TASKS; i++)
            if (strcmp(task, eg_shapes_task_name((EgShapesTask)i)) == 0) t = i;
        const cJSON *part;
        cJSON_ArrayForEach(part, cJSON_GetObjectItem(c, "parts")) {
            const cJSON *text = cJSON_GetObjectItem(part, "text");
            if (!text) continue;
            char answer[128]; /* an example's text, or the query's true answer */
            if (strcmp(text->valuestring, "Output:") == 0)
                snprintf(answer, sizeof answer, "%s",
                         cJSON_GetObjectItem(c, "expected_answer")->valuestring);
            else
                snprintf(answer, sizeof answer, "%s", text->valuestring + strlen("Output: "));
            answer[strcspn(answer, "\n")] = '\0';
            texts++;
            EgShapesScene p = {.n_objects = 1, .bg = 120};
            char word[128];
            snprintf(word, sizeof word, "%s", answer);
            word[strcspn(word, ".")] = '\0';
            int ok = 0;
            switch (t) {
            case EG_SHAPES_TASK_CAPTION:
                ok = parse_caption(answer, &p) == 0;
                break;
            case EG_SHAPES_TASK_COLOR:
                ok = (int)(p.objects[0].color = lookup(word, color_name_i, 8)) >= 0;
                break;
            case EG_SHAPES_TASK_SHAPE:
                ok = (int)(p.objects[0].shape = lookup(word, shape_name_i, 5)) >= 0;
                break;
            case EG_SHAPES_TASK_SIZE:
                ok = (int)(p.objects[0].size = lookup(word, size_name_i, 2)) >= 0;
                break;
            case EG_SHAPES_TASK_POSITION:
                ok = (int)(p.position = lookup(word, position_name_i, 5)) >= 0;
                break;
            case EG_SHAPES_TASK_COUNT:
                p.n_objects = strcmp(word, "one") == 0 ? 1 : strcmp(word, "two") == 0 ? 2 : 3;
                ok = 1;
                break;
            }
            if (t != EG_SHAPES_TASK_CAPTION && t != EG_SHAPES_TASK_POSITION && p.n_objects == 1)
                p.position = EG_SHAPES_CENTER;
            char rebuilt[EG_SHAPES_TEXT_MAX] = "";
            if (ok) eg_shapes_answer(&p, (EgShapesTask)t, rebuilt, sizeof rebuilt);
            if (ok && strcmp(rebuilt, answer) == 0)
                same++;
            else
                fprintf(stderr, "%s answer '%s' rebuilt as '%s'\n", task, answer, rebuilt);
        }
    }
    cJSON_Delete(cases);
    CHECK(texts >= 100 && same == texts, "%d of %d reference texts rebuilt exactly", same, texts);
}

/* ---- the reference images ---- */

/* Finds a jitter (and shape and size) for which eg_shapes_object_covers draws exactly the
 * cluster's pixels. Returns 0 and fills *o, or -1. */
static int fit_cluster(const int *label, int l, const Cluster *c, EgShapesObject *o) {
    const double step = 0.01;
    for (int shape = 0; shape < EG_SHAPES_N_SHAPES; shape++)
        for (int size = 0; size < EG_SHAPES_N_SIZES; size++) {
            double r = eg_shapes_size_radius((EgShapesSize)size);
            /* Centre estimate from the bounding box (the triangle's box is centred 0.1 r
             * above its centre: apex at cy - r, base at cy + 0.8 r). */
            double ey = (c->ymin + c->ymax + 1) / 2.0, ex = (c->xmin + c->xmax + 1) / 2.0;
            if (shape == EG_SHAPES_TRIANGLE) ey += 0.1 * r;
            int row = (int)(ey / CELL), col = (int)(ex / CELL);
            if (row < 0 || row > 2 || col < 0 || col > 2) continue;
            double by = ey - (row + 0.5) * CELL, bx = ex - (col + 0.5) * CELL;
            int y0 = c->ymin - 2 < 0 ? 0 : c->ymin - 2, y1 = c->ymax + 2 >= S ? S - 1 : c->ymax + 2;
            int x0 = c->xmin - 2 < 0 ? 0 : c->xmin - 2, x1 = c->xmax + 2 >= S ? S - 1 : c->xmax + 2;
            for (double dy = fmax(-1.5, by - 0.8); dy <= fmin(1.5, by + 0.8); dy += step)
                for (double dx = fmax(-1.5, bx - 0.8); dx <= fmin(1.5, bx + 0.8); dx += step) {
                    EgShapesObject t = {.color = c->color,
                                        .shape = shape,
                                        .size = size,
                                        .row = row,
                                        .col = col,
                                        .dy = dy,
                                        .dx = dx};
                    int match = 1;
                    for (int y = y0; y <= y1 && match; y++)
                        for (int x = x0; x <= x1 && match; x++)
                            match = eg_shapes_object_covers(&t, y, x) == (label[y * S + x] == l);
                    if (match) {
                        *o = t;
                        return 0;
                    }
                }
        }
    return -1;
}

static int cmp_object(const void *a, const void *b) {
    const EgShapesObject *x = a, *y = b;
    return (x->row * 3 + x->col) - (y->row * 3 + y->col);
}

static void test_reference_images(void) {
    size_t len;
    char *json = (char *)test_read_file(test_data_path("shapes-cases/cases.json"), &len);
    REQUIRE_VOID(json != NULL, "cannot read shapes-cases/cases.json");
    cJSON *cases = cJSON_ParseWithLength(json, len);
    free(json);
    int images = 0, clusters = 0, fitted = 0, answered = 0, right = 0, bad_bg = 0;
    double sum_std = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *task = cJSON_GetObjectItem(c, "task")->valuestring;
        const cJSON *parts = cJSON_GetObjectItem(c, "parts");
        int n_parts = cJSON_GetArraySize(parts);
        for (int i = 0; i + 1 < n_parts; i += 2) {
            const cJSON *img = cJSON_GetObjectItem(cJSON_GetArrayItem(parts, i), "image");
            const char *text =
                cJSON_GetObjectItem(cJSON_GetArrayItem(parts, i + 1), "text")->valuestring;
            char truth[128], rel[128];
            if (strcmp(text, "Output:") == 0)
                snprintf(truth, sizeof truth, "%s",
                         cJSON_GetObjectItem(c, "expected_answer")->valuestring);
            else
                snprintf(truth, sizeof truth, "%s", text + strlen("Output: "));
            truth[strcspn(truth, "\n")] = '\0';
            snprintf(rel, sizeof rel, "shapes-cases/%s", img->valuestring);
            unsigned char *bytes = test_read_file(test_data_path(rel), &len);
            EgImage im = {0};
            EgError err;
            int ok = bytes && eg_image_decode(bytes, len, NULL, &im, &err) == 0 && im.width == S &&
                     im.height == S;
            free(bytes);
            CHECK(ok, "%s: cannot decode", rel);
            if (!ok) {
                eg_image_free(&im);
                continue;
            }
            images++;
            double mean, std;
            int bg = estimate_bg(im.rgb, &mean, &std);
            sum_std += std;
            if (bg < 0 || fabs(std - 6.007) > 0.25) {
                fprintf(stderr, "%s: background mean %.3f std %.3f\n", rel, mean, std);
                bad_bg++;
            }
            int label[S * S];
            Cluster cl[16];
            int n = find_clusters(im.rgb, label, cl, 15);
            EgShapesScene sc = {.n_objects = n, .bg = bg, .position = EG_SHAPES_POS_NONE};
            int all_fit = n >= 1 && n <= 3;
            for (int l = 0; l < n && l < 15; l++) {
                clusters++;
                EgShapesObject o;
                if (fit_cluster(label, l, &cl[l], &o) == 0) {
                    fitted++;
                    if (l < 3) sc.objects[l] = o;
                } else {
                    fprintf(stderr, "%s: no jitter draws the %s cluster at (%d..%d, %d..%d)\n", rel,
                            eg_shapes_color_name(cl[l].color), cl[l].ymin, cl[l].ymax, cl[l].xmin,
                            cl[l].xmax);
                    all_fit = 0;
                }
            }
            eg_image_free(&im);
            if (!all_fit) continue;
            /* The scene the fitted objects make must give the reference's true answer. */
            qsort(sc.objects, (size_t)n, sizeof *sc.objects, cmp_object);
            for (int p = 0; n == 1 && p < EG_SHAPES_N_POSITIONS; p++) {
                int r, col;
                eg_shapes_position_cell((EgShapesPosition)p, &r, &col);
                if (r == sc.objects[0].row && col == sc.objects[0].col)
                    sc.position = (EgShapesPosition)p;
            }
            int t = 0;
            while (t < EG_SHAPES_N_TASKS && strcmp(task, eg_shapes_task_name((EgShapesTask)t)))
                t++;
            char got[EG_SHAPES_TEXT_MAX];
            eg_shapes_answer(&sc, (EgShapesTask)t, got, sizeof got);
            answered++;
            if (strcmp(got, truth) == 0)
                right++;
            else
                fprintf(stderr, "%s: fitted scene says '%s', shapes.py said '%s'\n", rel, got,
                        truth);
        }
    }
    cJSON_Delete(cases);
    printf("reference: %d images, %d/%d objects reproduced exactly, %d/%d answers rebuilt, "
           "background std %.3f on average\n",
           images, fitted, clusters, right, answered, sum_std / images);
    CHECK(images >= 70, "only %d reference images", images);
    CHECK(fitted == clusters, "%d of %d reference objects not reproduced", clusters - fitted,
          clusters);
    CHECK(answered >= images - 2 && right == answered, "%d of %d answers rebuilt", right, answered);
    CHECK(bad_bg == 0 && fabs(sum_std / images - 6.007) < 0.05,
          "%d reference backgrounds off; mean std %.3f", bad_bg, sum_std / images);
}

/* ---- PNG ---- */

static void test_png(void) {
    const int sizes[][2] = {{64, 64}, {1, 1}, {7, 3}, {3, 7}, {301, 203}};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = malloc((size_t)w * h * 3);
        if (w == S && h == S) {
            EgShapesScene sc;
            eg_shapes_scene_from_seed(test_rng_u64(), 0, &sc);
            eg_shapes_render(&sc, rgb);
        } else {
            for (size_t i = 0; i < (size_t)w * h * 3; i++)
                rgb[i] = (uint8_t)test_rng_u64();
        }
        uint8_t *png = NULL;
        size_t png_len = 0;
        EgError err = {0};
        int rc = eg_png_encode_rgb(rgb, w, h, &png, &png_len, &err);
        CHECK(rc == 0 && png && png_len > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0,
              "%dx%d: encode failed: %s", w, h, err.msg);
        EgImage im = {0};
        int dec = rc == 0 ? eg_image_decode(png, png_len, NULL, &im, &err) : -1;
        CHECK(dec == 0 && im.width == (uint32_t)w && im.height == (uint32_t)h &&
                  memcmp(im.rgb, rgb, (size_t)w * h * 3) == 0,
              "%dx%d: round trip differs (%s)", w, h, dec ? err.msg : "pixels");
        eg_image_free(&im);
        free(png);
        free(rgb);
    }
    uint8_t px[3] = {0};
    uint8_t *png = (uint8_t *)px;
    size_t png_len = 1;
    EgError err = {0};
    CHECK(eg_png_encode_rgb(px, 0, 5, &png, &png_len, &err) == -1 && !png && png_len == 0 &&
              strstr(err.msg, "0x5"),
          "a 0x5 image was encoded: '%s'", err.msg);
    CHECK(eg_png_encode_rgb(NULL, 1, 1, &png, &png_len, &err) == -1, "NULL pixels encoded");
}

int main(void) {
    test_rng_init();
    test_determinism();
    test_sampling();
    test_render();
    test_texts();
    test_reference_images();
    test_png();
    return test_finish();
}
