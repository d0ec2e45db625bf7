/* Image preprocessing for mllama (Llama 3.2 Vision), as HF MllamaImageProcessor does it on PIL
 * images: pick a canvas of up to max_tiles square tiles that best fits the image, resize the RGB
 * image into it keeping its aspect ratio (PIL bilinear, bit-exact), pad right and bottom with
 * black, rescale and normalize, and cut the canvas into tiles, row-major. Plus the per-image
 * aspect_ratio_id and aspect_ratio_mask the vision encoder takes. CPU code, once per image.
 *
 * Images reach here already decoded to RGB by eg_image_decode, which composites alpha over white
 * and expands grey and palettes as HF's convert_to_rgb does. */
#ifndef EGRET_TILE_PREPROCESS_H
#define EGRET_TILE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"
#include "vision/image_decode.h"
#include "vision/preprocess.h"

/* Bounds on the configuration (far above the published 560 x 4) and on the image sides this
 * accepts (the decoder's own limit is lower; this guards direct callers). */
#define EG_MLLAMA_MAX_TILES 64
#define EG_MLLAMA_MAX_TILE_SIZE 4096
#define EG_MLLAMA_MAX_IMAGE_SIDE (1u << 20)

/* preprocessor_config.json's fields that matter (the processor requires do_resize, do_pad and a
 * square size; do_rescale / do_normalize are always on in published checkpoints). */
typedef struct EgMllamaPreprocessConfig {
    int tile_size;         /* size.height == size.width (560) */
    int max_tiles;         /* max_image_tiles (4) */
    double rescale_factor; /* 1/255 */
    EgPixelNorm norm;      /* image_mean / image_std (CLIP's) */
    /* Polled between rows of the resize (NULL: never), as EgPreprocessConfig.stop. */
    int (*stop)(void *user);
    void *stop_user;
} EgMllamaPreprocessConfig;

/* tile_size, max_tiles, 1/255, CLIP normalization, no stop function. */
void eg_mllama_preprocess_config_default(EgMllamaPreprocessConfig *cfg, int tile_size,
                                         int max_tiles);

/* Where an image goes: its canvas of rows x cols tiles and its resized size inside it. */
typedef struct EgMllamaTiling {
    int rows, cols;          /* tiles vertically / horizontally (HF's (num_tiles_height, _width)) */
    int aspect_ratio_id;     /* 1 + index of (rows, cols) in the arrangement list */
    uint32_t resized_width;  /* <= cols * tile_size */
    uint32_t resized_height; /* <= rows * tile_size */
} EgMllamaTiling;

/* Number of arrangements (rows, cols) with rows * cols <= max_tiles, listed with rows varying
 * slowest: (1,1), (1,2), ... For 4: 8. The vision model's aspect-ratio tables have this many
 * rows plus one (id 0 is a padding image). 0 if max_tiles is out of range. */
int eg_mllama_num_aspect_ratios(int max_tiles);

/* HF's get_optimal_tiled_canvas + get_image_size_fit_to_canvas for a width x height image. Fails
 * with a message naming the bad value for an empty or oversized image or a bad config. */
int eg_mllama_tiling(uint32_t width, uint32_t height, int tile_size, int max_tiles,
                     EgMllamaTiling *out, EgError *err);

/* One image -> float32 [max_tiles, 3, S, S] in tiles: the rows*cols tiles of the canvas first
 * (row-major), the rest 0.0. Fills *tiling when non-NULL. */
int eg_mllama_preprocess_image(const EgImage *img, const EgMllamaPreprocessConfig *cfg,
                               float *tiles, EgMllamaTiling *tiling, EgError *err);

/* The images of one prompt, packed as HF packs a batch row with n_slots image slots (n_images <=
 * n_slots; the batch's largest image count): pixel_values float32 [n_slots, J, 3, S, S],
 * aspect_ratio_ids [n_slots], aspect_ratio_mask [n_slots, J] and num_tiles [n_slots] (may be
 * NULL), J = max_tiles. Slots past n_images are padding images: pixels 0, id 0, mask 1,0,0,...,
 * num_tiles 0. */
int eg_mllama_preprocess_images(const EgImage *images, size_t n_images, size_t n_slots,
                                const EgMllamaPreprocessConfig *cfg, float *pixel_values,
                                int32_t *aspect_ratio_ids, int32_t *aspect_ratio_mask,
                                int32_t *num_tiles, EgError *err);

#endif
