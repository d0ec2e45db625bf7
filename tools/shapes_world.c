/* The shapes world, ported from refgen/shapes.py (see shapes_world.h for what is and is not
 * reproduced). Comments name the shapes.py line each rule mirrors; "shapes.py:N" is the line in
 * the reference generator refgen/shapes.py that came with the reference data.
 *
 * The geometry is computed in float32 because shapes.py computes it with float32 torch tensors:
 * the pixel-centre grid is float32 and every Python-float operand (the object centre, the radius
 * and its multiples) is converted to float32 when it meets a tensor, while the operand itself is
 * formed in double (Python float arithmetic). Each helper below keeps that split so that a pixel
 * on an edge falls on the same side as in the reference. */
#include "tools/shapes_world.h"
#include "runtime/hash.h"
#include "tools/png_encode.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* shapes.py:11-14 COLORS, in dict order. */
static const uint8_t COLOR_RGB[EG_SHAPES_N_COLORS][3] = {
    {220, 40, 40},   /* red */
    {40, 170, 60},   /* green */
    {40, 80, 230},   /* blue */
    {235, 215, 40},  /* yellow */
    {140, 50, 190},  /* purple */
    {245, 140, 20},  /* orange */
    {245, 245, 245}, /* white */
    {15, 15, 15},    /* black */
};
static const char *const COLOR_NAMES[EG_SHAPES_N_COLORS] = {"red",    "green",  "blue",  "yellow",
                                                            "purple", "orange", "white", "black"};
/* shapes.py:15 SHAPES. */
static const char *const SHAPE_NAMES[EG_SHAPES_N_SHAPES] = {"circle", "square", "triangle",
                                                            "diamond", "cross"};
/* shapes.py:16 SIZES: the radius parameter r of each shape, in pixels. */
static const char *const SIZE_NAMES[EG_SHAPES_N_SIZES] = {"small", "large"};
static const double SIZE_RADIUS[EG_SHAPES_N_SIZES] = {5.0, 9.0};
/* shapes.py:17 POSITIONS: name -> (row, col) of the 3x3 grid, in dict order. */
static const char *const POSITION_NAMES[EG_SHAPES_N_POSITIONS] = {"left", "right", "top", "bottom",
                                                                  "center"};
static const int POSITION_CELL[EG_SHAPES_N_POSITIONS][2] = {{1, 0}, {1, 2}, {0, 1}, {2, 1}, {1, 1}};
/* shapes.py:18-19 POS_PHRASE: how a caption says the position. */
static const char *const POSITION_PHRASES[EG_SHAPES_N_POSITIONS] = {
    "on the left", "on the right", "at the top", "at the bottom", "in the center"};
/* shapes.py:20 COUNT_WORDS. */
static const char *const COUNT_WORDS[EG_SHAPES_MAX_OBJECTS + 1] = {NULL, "one", "two", "three"};
/* shapes.py:21 TASKS (shapes.py spells the colour task "color", as the episodes do). */
static const char *const TASK_NAMES[EG_SHAPES_N_TASKS] = {"caption", "color",    "shape",
                                                          "size",    "position", "count"};

/* shapes.py:22 CELL = IMAGE_SIZE / 3.0, a Python (double) value. */
#define CELL (EG_SHAPES_IMAGE_SIZE / 3.0)
/* shapes.py:38 rng.uniform(-1.5, 1.5): the jitter of an object's centre inside its cell. */
#define JITTER 1.5
/* shapes.py:39 rng.randint(95, 150), both ends included. */
#define BG_MIN 95
#define BG_MAX 150
/* shapes.py:72 torch.randn(...) * 6.0: the noise std, in grey levels. */
#define NOISE_STD 6.0f

/* ---- PRNG ---- */

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void eg_shapes_rng_seed(EgShapesRng *rng, uint64_t seed) {
    /* splitmix64 expands the seed so that nearby seeds (0, 1, 2, ...) give unrelated streams and
     * the state is never all zero. */
    for (int i = 0; i < 4; i++)
        rng->s[i] = eg_splitmix64_next(&seed);
}

uint64_t eg_shapes_rng_next(EgShapesRng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double eg_shapes_rng_uniform(EgShapesRng *rng) {
    /* Same resolution as Python's random.random(): 53 bits. */
    return (double)(eg_shapes_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

uint32_t eg_shapes_rng_below(EgShapesRng *rng, uint32_t n) {
    /* Rejection on the top 32 bits keeps every value equally likely, as rng.choice/randint are. */
    uint32_t limit = (uint32_t)(-n) % n; /* 2^32 mod n: the biased low values to reject */
    for (;;) {
        uint64_t m = (uint64_t)(uint32_t)(eg_shapes_rng_next(rng) >> 32) * n;
        if ((uint32_t)m >= limit) return (uint32_t)(m >> 32);
    }
}

double eg_shapes_rng_normal(EgShapesRng *rng) {
    /* Box-Muller; u1 in (0, 1] so the log is finite. One deviate per call keeps the function
     * stateless; the noise of one image needs only 12288 of them. */
    double u1 = 1.0 - eg_shapes_rng_uniform(rng);
    double u2 = eg_shapes_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- Sampling (shapes.py:25-40 sample_scene) ---- */

int eg_shapes_sample(EgShapesRng *rng, int n, EgShapesScene *out) {
    if (n < 0 || n > EG_SHAPES_MAX_OBJECTS) return -1;
    memset(out, 0, sizeof *out);
    if (n == 0) {
        /* shapes.py:28 rng.choices([1, 2, 3], weights=[0.5, 0.3, 0.2]): bisect on the cumulative
         * weights 0.5, 0.8, 1.0. */
        double u = eg_shapes_rng_uniform(rng);
        n = u < 0.5 ? 1 : u < 0.8 ? 2 : 3;
    }
    int cells[EG_SHAPES_MAX_OBJECTS]; /* row * 3 + col */
    if (n == 1) {
        /* shapes.py:29-31: a single object sits in one of the five named cells (never a corner),
         * chosen uniformly by name. */
        out->position = (EgShapesPosition)eg_shapes_rng_below(rng, EG_SHAPES_N_POSITIONS);
        cells[0] = POSITION_CELL[out->position][0] * 3 + POSITION_CELL[out->position][1];
    } else {
        /* shapes.py:33-34: n distinct cells of all nine (corners included), sorted into reading
         * order, and no named position. rng.sample is a uniform draw without replacement, which a
         * partial Fisher-Yates shuffle also is. */
        out->position = EG_SHAPES_POS_NONE;
        int all[9];
        for (int i = 0; i < 9; i++)
            all[i] = i;
        for (int i = 0; i < n; i++) {
            int j = i + (int)eg_shapes_rng_below(rng, (uint32_t)(9 - i));
            int t = all[i];
            all[i] = all[j];
            all[j] = t;
            cells[i] = all[i];
        }
        for (int i = 1; i < n; i++) /* insertion sort: (r, c) tuples order as r * 3 + c */
            for (int j = i; j > 0 && cells[j - 1] > cells[j]; j--) {
                int t = cells[j];
                cells[j] = cells[j - 1];
                cells[j - 1] = t;
            }
    }
    out->n_objects = n;
    for (int i = 0; i < n; i++) {
        /* shapes.py:36-38: colour, shape and size are independent uniform choices (so two objects
         * may share all three), and the centre is jittered uniformly by up to 1.5 px per axis. */
        EgShapesObject *o = &out->objects[i];
        o->color = (EgShapesColor)eg_shapes_rng_below(rng, EG_SHAPES_N_COLORS);
        o->shape = (EgShapesShape)eg_shapes_rng_below(rng, EG_SHAPES_N_SHAPES);
        o->size = (EgShapesSize)eg_shapes_rng_below(rng, EG_SHAPES_N_SIZES);
        o->row = cells[i] / 3;
        o->col = cells[i] % 3;
        o->dy = -JITTER + 2.0 * JITTER * eg_shapes_rng_uniform(rng);
        o->dx = -JITTER + 2.0 * JITTER * eg_shapes_rng_uniform(rng);
    }
    /* shapes.py:39-40: one grey level per scene, and a noise seed below 2^30. */
    out->bg = BG_MIN + (int)eg_shapes_rng_below(rng, BG_MAX - BG_MIN + 1);
    out->noise_seed = eg_shapes_rng_next(rng) >> 34;
    return 0;
}

int eg_shapes_scene_from_seed(uint64_t seed, int n_objects, EgShapesScene *out) {
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, seed);
    return eg_shapes_sample(&rng, n_objects, out);
}

/* ---- Rendering (shapes.py:68-97 render) ---- */

void eg_shapes_object_center(const EgShapesObject *o, double *cy, double *cx) {
    /* shapes.py:76-77, in double as Python computes it. */
    *cy = (o->row + 0.5) * CELL + o->dy;
    *cx = (o->col + 0.5) * CELL + o->dx;
}

/* Whether the pixel whose centre is (ys, xs) belongs to the object: shapes.py:80-94, with
 * dy = ys - cy and dx = xs - cx as float32 (shapes.py:79) and every threshold a double product
 * rounded to float32, as torch does when it compares a float32 tensor with a Python float. */
static int covers(const EgShapesObject *o, float cyf, float cxf, float ys, float xs) {
    double r = SIZE_RADIUS[o->size];
    float rf = (float)r;
    float dy = ys - cyf, dx = xs - cxf;
    float ady = fabsf(dy), adx = fabsf(dx);
    switch (o->shape) {
    case EG_SHAPES_CIRCLE: /* shapes.py:81: a disc of radius r */
        return dy * dy + dx * dx <= (float)(r * r);
    case EG_SHAPES_SQUARE: /* shapes.py:83: half-side 0.85 r */
        return ady <= (float)(r * 0.85) && adx <= (float)(r * 0.85);
    case EG_SHAPES_DIAMOND: /* shapes.py:85: an L1 ball of radius 1.1 r */
        return ady + adx <= (float)(r * 1.1);
    case EG_SHAPES_TRIANGLE: {
        /* shapes.py:86-89: apex up at cy - r, base at cy + 0.8 r; t runs 0 at the apex to 1 at
         * the base and the half-width grows as t * r (so the base is 2 r wide). */
        float t = (dy + rf) / (float)(1.8 * r);
        return t >= 0.0f && t <= 1.0f && adx <= t * rf;
    }
    case EG_SHAPES_CROSS: {
        /* shapes.py:91-92: a plus sign of two bars, length 2 r, half-thickness 0.33 r. */
        float w = (float)(r * 0.33);
        return (ady <= w && adx <= rf) || (adx <= w && ady <= rf);
    }
    default:
        return 0;
    }
}

int eg_shapes_object_covers(const EgShapesObject *o, int y, int x) {
    if ((unsigned)o->size >= EG_SHAPES_N_SIZES) return 0;
    double cy, cx;
    eg_shapes_object_center(o, &cy, &cx);
    return covers(o, (float)cy, (float)cx, (float)y + 0.5f, (float)x + 0.5f);
}

void eg_shapes_render(const EgShapesScene *scene, uint8_t *rgb) {
    enum { S = EG_SHAPES_IMAGE_SIZE };
    EgShapesRng noise;
    eg_shapes_rng_seed(&noise, scene->noise_seed);
    /* shapes.py:71-72: the background is bg + N(0, 1) * 6 in float32, one independent deviate per
     * channel and pixel. torch draws them channel-major ([3][S][S]); so do we, for the same
     * layout of the stream (not the same values: the generators differ). */
    float bgf = (float)scene->bg;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) {
            float v = bgf + (float)eg_shapes_rng_normal(&noise) * NOISE_STD;
            /* shapes.py:97: clamp to [0, 255], then round (torch.round: half to even, which is
             * nearbyintf in the default rounding mode). */
            v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
            rgb[(size_t)i * 3 + (size_t)c] = (uint8_t)nearbyintf(v);
        }
    /* shapes.py:75-96: each object, in reading order, replaces the pixels it covers with its
     * flat colour (hard edges, no noise on the shape, later objects over earlier ones). Pixel
     * centres are at index + 0.5 (shapes.py:73), exact in float32. */
    for (int k = 0; k < scene->n_objects && k < EG_SHAPES_MAX_OBJECTS; k++) {
        const EgShapesObject *o = &scene->objects[k];
        if ((unsigned)o->color >= EG_SHAPES_N_COLORS || (unsigned)o->size >= EG_SHAPES_N_SIZES)
            continue;
        double cy, cx;
        eg_shapes_object_center(o, &cy, &cx);
        float cyf = (float)cy, cxf = (float)cx;
        const uint8_t *col = COLOR_RGB[o->color];
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                if (covers(o, cyf, cxf, (float)y + 0.5f, (float)x + 0.5f))
                    memcpy(rgb + ((size_t)y * S + (size_t)x) * 3, col, 3);
    }
}

/* ---- Texts (shapes.py:43-65) ---- */

/* shapes.py:43-44 article(): "an" before a vowel. Only colours get an article in multi-object
 * captions, so of the words here only "orange" takes "an". */
static const char *article(const char *word) {
    return strchr("aeiou", word[0]) ? "an" : "a";
}

/* Appends to buf at *len; returns 0, or -1 when it does not fit (buf stays terminated). */
static int append(char *buf, size_t cap, size_t *len, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > cap) {
        if (cap > *len) {
            memcpy(buf + *len, s, cap - *len - 1);
            buf[cap - 1] = '\0';
        }
        *len = cap ? cap - 1 : 0;
        return -1;
    }
    memcpy(buf + *len, s, n + 1);
    *len += n;
    return 0;
}

static int scene_valid(const EgShapesScene *s) {
    if (s->n_objects < 1 || s->n_objects > EG_SHAPES_MAX_OBJECTS) return 0;
    for (int i = 0; i < s->n_objects; i++) {
        const EgShapesObject *o = &s->objects[i];
        if ((unsigned)o->color >= EG_SHAPES_N_COLORS || (unsigned)o->shape >= EG_SHAPES_N_SHAPES ||
            (unsigned)o->size >= EG_SHAPES_N_SIZES)
            return 0;
    }
    return s->n_objects > 1 || (unsigned)s->position < EG_SHAPES_N_POSITIONS;
}

int eg_shapes_caption(const EgShapesScene *s, char *buf, size_t cap) {
    if (!cap) return -1;
    buf[0] = '\0';
    if (!scene_valid(s)) return -1;
    size_t len = 0;
    int bad = 0;
    if (s->n_objects == 1) {
        /* shapes.py:49-51: "a {size} {color} {shape} {position phrase}." — always "a", since the
         * word after it is a size and neither size starts with a vowel. */
        const EgShapesObject *o = &s->objects[0];
        const char *words[] = {"a ", SIZE_NAMES[o->size],   " ", COLOR_NAMES[o->color],
                               " ",  SHAPE_NAMES[o->shape], " ", POSITION_PHRASES[s->position],
                               "."};
        for (size_t i = 0; i < sizeof words / sizeof *words; i++)
            bad |= append(buf, cap, &len, words[i]);
    } else {
        /* shapes.py:52-53: "{article} {color} {shape}" per object in reading order, joined by
         * ", " with " and " before the last; no sizes and no positions. */
        for (int i = 0; i < s->n_objects; i++) {
            const EgShapesObject *o = &s->objects[i];
            if (i > 0) bad |= append(buf, cap, &len, i == s->n_objects - 1 ? " and " : ", ");
            const char *color = COLOR_NAMES[o->color];
            const char *words[] = {article(color), " ", color, " ", SHAPE_NAMES[o->shape]};
            for (size_t j = 0; j < sizeof words / sizeof *words; j++)
                bad |= append(buf, cap, &len, words[j]);
        }
        bad |= append(buf, cap, &len, ".");
    }
    return bad ? -1 : (int)len;
}

int eg_shapes_answer(const EgShapesScene *s, EgShapesTask task, char *buf, size_t cap) {
    if (!cap) return -1;
    buf[0] = '\0';
    if (!scene_valid(s)) return -1;
    if (task == EG_SHAPES_TASK_CAPTION) return eg_shapes_caption(s, buf, cap); /* shapes.py:58-59 */
    const char *word;
    if (task == EG_SHAPES_TASK_COUNT) {
        word = COUNT_WORDS[s->n_objects]; /* shapes.py:60-61 */
    } else {
        /* shapes.py:62: the single-attribute tasks only exist for single-object scenes. */
        if (s->n_objects != 1) return -1;
        const EgShapesObject *o = &s->objects[0];
        switch (task) {
        case EG_SHAPES_TASK_COLOR:
            word = COLOR_NAMES[o->color];
            break;
        case EG_SHAPES_TASK_SHAPE:
            word = SHAPE_NAMES[o->shape];
            break;
        case EG_SHAPES_TASK_SIZE:
            word = SIZE_NAMES[o->size];
            break;
        case EG_SHAPES_TASK_POSITION:
            word = POSITION_NAMES[s->position]; /* shapes.py:63-64: the bare name, "left." */
            break;
        default:
            return -1;
        }
    }
    /* shapes.py:61, 64, 65: every single-word answer ends with a full stop. */
    size_t len = 0;
    int bad = append(buf, cap, &len, word) | append(buf, cap, &len, ".");
    if (bad) {
        buf[0] = '\0';
        return -1;
    }
    return (int)len;
}

/* ---- Vocabulary accessors ---- */

const char *eg_shapes_color_name(EgShapesColor c) {
    return (unsigned)c < EG_SHAPES_N_COLORS ? COLOR_NAMES[c] : NULL;
}

const char *eg_shapes_shape_name(EgShapesShape s) {
    return (unsigned)s < EG_SHAPES_N_SHAPES ? SHAPE_NAMES[s] : NULL;
}

const char *eg_shapes_size_name(EgShapesSize s) {
    return (unsigned)s < EG_SHAPES_N_SIZES ? SIZE_NAMES[s] : NULL;
}

const char *eg_shapes_position_name(EgShapesPosition p) {
    return (unsigned)p < EG_SHAPES_N_POSITIONS ? POSITION_NAMES[p] : NULL;
}

const char *eg_shapes_task_name(EgShapesTask t) {
    return (unsigned)t < EG_SHAPES_N_TASKS ? TASK_NAMES[t] : NULL;
}

const uint8_t *eg_shapes_color_rgb(EgShapesColor c) {
    return (unsigned)c < EG_SHAPES_N_COLORS ? COLOR_RGB[c] : NULL;
}

double eg_shapes_size_radius(EgShapesSize s) {
    return (unsigned)s < EG_SHAPES_N_SIZES ? SIZE_RADIUS[s] : 0.0;
}

int eg_shapes_position_cell(EgShapesPosition p, int *row, int *col) {
    if ((unsigned)p >= EG_SHAPES_N_POSITIONS) return -1;
    *row = POSITION_CELL[p][0];
    *col = POSITION_CELL[p][1];
    return 0;
}

int eg_shapes_render_png(const EgShapesScene *scene, uint8_t **png, size_t *png_len,
                         EgError *err) {
    uint8_t rgb[EG_SHAPES_RGB_BYTES];
    eg_shapes_render(scene, rgb);
    return eg_png_encode_rgb(rgb, EG_SHAPES_IMAGE_SIZE, EG_SHAPES_IMAGE_SIZE, png, png_len, err);
}
