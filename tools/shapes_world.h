/* The shapes world: a C port of the scene generator the demo model (models/shapes-idefics) was
 * trained on, the reference's refgen/shapes.py. A scene is 1-3 coloured shapes on a noisy grey
 * 64x64 background; every scene has one true caption and one true answer per attribute, so tests
 * can draw fresh images and check the model's answers exactly.
 *
 * What is ported exactly: the vocabularies (colours with their RGB values, shapes, sizes with
 * their radii, grid positions, the words used in captions and answers), the distributions
 * (object count 1/2/3 with weights 0.5/0.3/0.2, uniform choices, sub-cell jitter, background grey
 * level, Gaussian noise of std 6), the rasterisation rules (float32 geometry at pixel centres,
 * hard edges, later objects painted over earlier ones, clamp and round-half-even) and the texts.
 * What is not: the random streams. shapes.py uses Python's Mersenne Twister and torch's
 * generator; here one small PRNG (xoshiro256**) drives everything, so a seed gives the same scene
 * as itself on every machine but not the same scene as shapes.py with that seed. */
#ifndef EGRET_SHAPES_WORLD_H
#define EGRET_SHAPES_WORLD_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"

#define EG_SHAPES_IMAGE_SIZE 64 /* shapes.py IMAGE_SIZE */
#define EG_SHAPES_MAX_OBJECTS 3
/* Bytes of one rendered scene: 64x64 RGB, row-major, channels interleaved. */
#define EG_SHAPES_RGB_BYTES (EG_SHAPES_IMAGE_SIZE * EG_SHAPES_IMAGE_SIZE * 3)
/* Room for the longest text eg_shapes_caption/eg_shapes_answer can produce, with its NUL. */
#define EG_SHAPES_TEXT_MAX 96

/* The vocabularies, in shapes.py's order (COLORS, SHAPES, SIZES, POSITIONS dict order). */
typedef enum EgShapesColor {
    EG_SHAPES_RED,
    EG_SHAPES_GREEN,
    EG_SHAPES_BLUE,
    EG_SHAPES_YELLOW,
    EG_SHAPES_PURPLE,
    EG_SHAPES_ORANGE,
    EG_SHAPES_WHITE,
    EG_SHAPES_BLACK,
    EG_SHAPES_N_COLORS
} EgShapesColor;

typedef enum EgShapesShape {
    EG_SHAPES_CIRCLE,
    EG_SHAPES_SQUARE,
    EG_SHAPES_TRIANGLE,
    EG_SHAPES_DIAMOND,
    EG_SHAPES_CROSS,
    EG_SHAPES_N_SHAPES
} EgShapesShape;

typedef enum EgShapesSize { EG_SHAPES_SMALL, EG_SHAPES_LARGE, EG_SHAPES_N_SIZES } EgShapesSize;

/* The five named positions of a single-object scene, each one cell of the 3x3 grid. */
typedef enum EgShapesPosition {
    EG_SHAPES_POS_NONE = -1, /* scenes of 2 or 3 objects have no named position */
    EG_SHAPES_LEFT,
    EG_SHAPES_RIGHT,
    EG_SHAPES_TOP,
    EG_SHAPES_BOTTOM,
    EG_SHAPES_CENTER,
    EG_SHAPES_N_POSITIONS
} EgShapesPosition;

/* shapes.py TASKS: what a few-shot episode asks for. */
typedef enum EgShapesTask {
    EG_SHAPES_TASK_CAPTION,
    EG_SHAPES_TASK_COLOR,
    EG_SHAPES_TASK_SHAPE,
    EG_SHAPES_TASK_SIZE,
    EG_SHAPES_TASK_POSITION,
    EG_SHAPES_TASK_COUNT,
    EG_SHAPES_N_TASKS
} EgShapesTask;

typedef struct EgShapesObject {
    EgShapesColor color;
    EgShapesShape shape;
    EgShapesSize size;
    int row, col;  /* grid cell, 0..2 each */
    double dy, dx; /* jitter of the centre from the cell centre, pixels, in [-1.5, 1.5) */
} EgShapesObject;

typedef struct EgShapesScene {
    int n_objects;                                 /* 1..3 */
    EgShapesObject objects[EG_SHAPES_MAX_OBJECTS]; /* reading order: by row, then column */
    EgShapesPosition position;                     /* single-object scenes only, else NONE */
    int bg;                                        /* background grey level, 95..150 */
    uint64_t noise_seed;                           /* seeds the noise PRNG in render */
} EgShapesScene;

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64. Exposed so that a caller can draw
 * a sequence of scenes from one stream. */
typedef struct EgShapesRng {
    uint64_t s[4];
} EgShapesRng;

void eg_shapes_rng_seed(EgShapesRng *rng, uint64_t seed);
uint64_t eg_shapes_rng_next(EgShapesRng *rng);
/* Uniform double in [0, 1), 53 bits. */
double eg_shapes_rng_uniform(EgShapesRng *rng);
/* Uniform integer in [0, n), without modulo bias; n > 0. */
uint32_t eg_shapes_rng_below(EgShapesRng *rng, uint32_t n);
/* Standard normal deviate (Box-Muller). */
double eg_shapes_rng_normal(EgShapesRng *rng);

/* Samples a scene as shapes.py sample_scene does: n_objects 1..3 fixes the count, 0 draws it
 * (1, 2, 3 with weights 0.5, 0.3, 0.2). Returns 0, or -1 for any other n_objects. */
int eg_shapes_sample(EgShapesRng *rng, int n_objects, EgShapesScene *out);
/* The same from a seed alone: eg_shapes_rng_seed(seed) then eg_shapes_sample. */
int eg_shapes_scene_from_seed(uint64_t seed, int n_objects, EgShapesScene *out);

/* Draws the scene into rgb (EG_SHAPES_RGB_BYTES bytes, row-major RGB) as shapes.py render does.
 * Deterministic: the noise comes from scene->noise_seed. */
void eg_shapes_render(const EgShapesScene *scene, uint8_t *rgb);

/* The scene drawn (eg_shapes_render) and encoded as a PNG (tools/png_encode.h): what requests
 * and files carry. *png is malloc'd; returns 0, or -1 with err. */
int eg_shapes_render_png(const EgShapesScene *scene, uint8_t **png, size_t *png_len,
                         EgError *err);

/* The scene's caption, e.g. "a small red circle on the left." or "a red circle and an orange
 * cross.". Writes at most cap bytes (NUL included); returns the text length, or -1 when cap is
 * too small (the output is then truncated but terminated). */
int eg_shapes_caption(const EgShapesScene *scene, char *buf, size_t cap);

/* The answer to a task, as shapes.py answer() gives it: the caption, "two.", "red.", "circle.",
 * "small.", "left.". Colour, shape, size and position are defined for single-object scenes only:
 * for other scenes, and for a too-small buffer, returns -1 (buf is then ""). */
int eg_shapes_answer(const EgShapesScene *scene, EgShapesTask task, char *buf, size_t cap);

/* The words: "red", "circle", "small", "left", "color" (shapes.py's spelling of the task names).
 * NULL for a value out of range. */
const char *eg_shapes_color_name(EgShapesColor c);
const char *eg_shapes_shape_name(EgShapesShape s);
const char *eg_shapes_size_name(EgShapesSize s);
const char *eg_shapes_position_name(EgShapesPosition p);
const char *eg_shapes_task_name(EgShapesTask t);
/* The colour's RGB triple (3 bytes); NULL when out of range. */
const uint8_t *eg_shapes_color_rgb(EgShapesColor c);
/* The shape's radius parameter in pixels (5 or 9, shapes.py SIZES); 0 when out of range. */
double eg_shapes_size_radius(EgShapesSize s);
/* The grid cell of a named position; -1 when out of range. */
int eg_shapes_position_cell(EgShapesPosition p, int *row, int *col);
/* Whether the object covers pixel (y, x), row y and column x, by shapes.py's rule for its shape:
 * the test render applies to every pixel. For checking geometry without noise. */
int eg_shapes_object_covers(const EgShapesObject *o, int y, int x);
/* The centre of an object in pixel coordinates (x and y grow right and down, pixel (i, j) covers
 * [j, j+1) x [i, i+1), so its centre is at j + 0.5, i + 0.5). */
void eg_shapes_object_center(const EgShapesObject *o, double *cy, double *cx);

#endif
