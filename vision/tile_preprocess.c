/* mllama's tiled preprocessing, transcribed from HF's image_processing_pil_mllama.py
 * (transformers 5.25: get_all_supported_aspect_ratios, get_optimal_tiled_canvas,
 * get_image_size_fit_to_canvas, MllamaImageProcessorPil.resize / pad / _preprocess, pack_images,
 * convert_aspect_ratios_to_ids_np, build_aspect_ratio_mask_np). The canvas choice compares
 * doubles for exact equality, so the arithmetic is kept in the reference's order and types. */
#include "vision/tile_preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void eg_mllama_preprocess_config_default(EgMllamaPreprocessConfig *cfg, int tile_size,
                                         int max_tiles) {
    cfg->tile_size = tile_size;
    cfg->max_tiles = max_tiles;
    cfg->rescale_factor = 1.0 / 255.0;
    cfg->norm = eg_clip_norm;
    cfg->stop = NULL;
    cfg->stop_user = NULL;
}

/* (rows, cols) of arrangement k, in HF's order; returns the count. */
static int arrangements(int max_tiles, int rows[], int cols[]) {
    int n = 0;
    for (int a = 1; a <= max_tiles; a++)
        for (int b = 1; b <= max_tiles; b++)
            if (a * b <= max_tiles) {
                rows[n] = a;
                cols[n] = b;
                n++;
            }
    return n;
}

int eg_mllama_num_aspect_ratios(int max_tiles) {
    if (max_tiles < 1 || max_tiles > EG_MLLAMA_MAX_TILES) return 0;
    int rows[EG_MLLAMA_MAX_TILES * 8], cols[EG_MLLAMA_MAX_TILES * 8];
    return arrangements(max_tiles, rows, cols);
}

static int check_config(int tile_size, int max_tiles, EgError *err) {
    if (tile_size < 1 || tile_size > EG_MLLAMA_MAX_TILE_SIZE)
        return eg_fail(err, "mllama preprocess: tile size %d outside 1..%d", tile_size,
                       EG_MLLAMA_MAX_TILE_SIZE);
    if (max_tiles < 1 || max_tiles > EG_MLLAMA_MAX_TILES)
        return eg_fail(err, "mllama preprocess: max_image_tiles %d outside 1..%d", max_tiles,
                       EG_MLLAMA_MAX_TILES);
    return 0;
}

int eg_mllama_tiling(uint32_t width, uint32_t height, int tile_size, int max_tiles,
                     EgMllamaTiling *out, EgError *err) {
    if (check_config(tile_size, max_tiles, err)) return -1;
    if (width == 0 || height == 0)
        return eg_fail(err, "mllama preprocess: empty image (%ux%u)", (unsigned)width,
                       (unsigned)height);
    if (width > EG_MLLAMA_MAX_IMAGE_SIDE || height > EG_MLLAMA_MAX_IMAGE_SIDE)
        return eg_fail(err, "mllama preprocess: image %ux%u has a side above %u", (unsigned)width,
                       (unsigned)height, (unsigned)EG_MLLAMA_MAX_IMAGE_SIDE);
    /* an arrangement has at most max_tiles rows, and there are fewer than 8 * max_tiles of them
     * (sum over a of max_tiles / a) */
    int rows[EG_MLLAMA_MAX_TILES * 8], cols[EG_MLLAMA_MAX_TILES * 8];
    int n = arrangements(max_tiles, rows, cols);
    const double w = (double)width, h = (double)height;
    double scale[EG_MLLAMA_MAX_TILES * 8];
    double best_up = INFINITY, best_down = -INFINITY;
    for (int k = 0; k < n; k++) {
        double sh = (double)(rows[k] * tile_size) / h, sw = (double)(cols[k] * tile_size) / w;
        scale[k] = sw > sh ? sh : sw; /* np.where(scale_w > scale_h, scale_h, scale_w) */
        if (scale[k] >= 1.0 && scale[k] < best_up) best_up = scale[k];
        if (scale[k] < 1.0 && scale[k] > best_down) best_down = scale[k];
    }
    /* the smallest upscale if any arrangement holds the image, else the least downscale; among
     * arrangements with exactly that scale the smallest canvas, the first on a tie */
    double chosen = best_up < INFINITY ? best_up : best_down;
    int pick = -1;
    for (int k = 0; k < n; k++)
        if (scale[k] == chosen && (pick < 0 || rows[k] * cols[k] < rows[pick] * cols[pick]))
            pick = k;
    out->rows = rows[pick];
    out->cols = cols[pick];
    out->aspect_ratio_id = pick + 1;

    /* get_image_size_fit_to_canvas: between one tile and the canvas, aspect ratio kept */
    uint32_t s = (uint32_t)tile_size;
    uint32_t canvas_w = (uint32_t)out->cols * s, canvas_h = (uint32_t)out->rows * s;
    uint32_t tw = width < s ? s : width > canvas_w ? canvas_w : width;
    uint32_t th = height < s ? s : height > canvas_h ? canvas_h : height;
    double scale_h = (double)th / h, scale_w = (double)tw / w;
    if (scale_w < scale_h) {
        double f = floor(h * scale_w);
        uint32_t nh = f < 1.0 ? 1 : (uint32_t)f; /* "or 1": a zero height becomes 1 */
        out->resized_width = tw;
        out->resized_height = nh < th ? nh : th;
    } else {
        double f = floor(w * scale_h);
        uint32_t nw = f < 1.0 ? 1 : (uint32_t)f;
        out->resized_height = th;
        out->resized_width = nw < tw ? nw : tw;
    }
    return 0;
}

int eg_mllama_preprocess_image(const EgImage *img, const EgMllamaPreprocessConfig *cfg,
                               float *tiles, EgMllamaTiling *tiling_out, EgError *err) {
    if (!img || !img->rgb) return eg_fail(err, "mllama preprocess: no image");
    EgMllamaTiling t;
    if (eg_mllama_tiling(img->width, img->height, cfg->tile_size, cfg->max_tiles, &t, err))
        return -1;
    if (!(cfg->rescale_factor > 0) || !isfinite(cfg->rescale_factor))
        return eg_fail(err, "mllama preprocess: rescale_factor must be a positive number");
    for (int c = 0; c < 3; c++)
        if (!(cfg->norm.std[c] != 0) || !isfinite(cfg->norm.std[c]) || !isfinite(cfg->norm.mean[c]))
            return eg_fail(err, "mllama preprocess: image_std[%d] / image_mean[%d] unusable", c, c);
    size_t s = (size_t)cfg->tile_size, plane = s * s, tile_floats = 3 * plane;
    size_t rw = t.resized_width, rh = t.resized_height;
    uint8_t *resized = malloc(rw * rh * 3);
    if (!resized)
        return eg_fail(err, "mllama preprocess: out of memory for a %zux%zu image", rw, rh);
    if (eg_image_resize(img->rgb, img->width, img->height, resized, t.resized_width,
                        t.resized_height, EG_FILTER_BILINEAR, EG_RESAMPLE_PIL13, cfg->stop,
                        cfg->stop_user, err)) {
        free(resized);
        return eg_fail_prefix(err, "mllama preprocess");
    }
    /* HF: float32(float64(v) * rescale_factor), then (x - mean) / std in float32; 256 values
     * per channel, so tabulate. Value 0 is also the black padding inside the canvas. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] =
                ((float)((double)v * cfg->rescale_factor) - cfg->norm.mean[c]) / cfg->norm.std[c];
    for (int r = 0; r < t.rows; r++) {
        for (int col = 0; col < t.cols; col++) {
            float *tile = tiles + (size_t)(r * t.cols + col) * tile_floats;
            for (size_t y = 0; y < s; y++) {
                size_t cy = (size_t)r * s + y; /* canvas row */
                for (size_t x = 0; x < s; x++) {
                    size_t cx = (size_t)col * s + x;
                    const uint8_t *p = cy < rh && cx < rw ? resized + (cy * rw + cx) * 3 : NULL;
                    for (int c = 0; c < 3; c++)
                        tile[c * plane + y * s + x] = lut[c][p ? p[c] : 0];
                }
            }
        }
    }
    free(resized);
    size_t used = (size_t)t.rows * t.cols;
    memset(tiles + used * tile_floats, 0, ((size_t)cfg->max_tiles - used) * tile_floats * 4);
    if (tiling_out) *tiling_out = t;
    return 0;
}

int eg_mllama_preprocess_images(const EgImage *images, size_t n_images, size_t n_slots,
                                const EgMllamaPreprocessConfig *cfg, float *pixel_values,
                                int32_t *aspect_ratio_ids, int32_t *aspect_ratio_mask,
                                int32_t *num_tiles, EgError *err) {
    if (check_config(cfg->tile_size, cfg->max_tiles, err)) return -1;
    if (n_images > n_slots)
        return eg_fail(err, "mllama preprocess: %zu images for %zu slots", n_images, n_slots);
    size_t j = (size_t)cfg->max_tiles, s = (size_t)cfg->tile_size;
    size_t slot_floats = j * 3 * s * s;
    for (size_t i = 0; i < n_slots; i++) {
        float *slot = pixel_values + i * slot_floats;
        int32_t *mask = aspect_ratio_mask + i * j;
        EgMllamaTiling t = {0};
        if (i < n_images) {
            if (eg_mllama_preprocess_image(&images[i], cfg, slot, &t, err))
                return eg_fail_prefix(err, "image %zu", i);
        } else {
            memset(slot, 0, slot_floats * sizeof *slot); /* a padding image */
        }
        size_t used = (size_t)t.rows * t.cols;
        for (size_t k = 0; k < j; k++)
            mask[k] = k < used || k == 0; /* HF sets tile 0 for every slot, padding included */
        aspect_ratio_ids[i] = t.aspect_ratio_id;
        if (num_tiles) num_tiles[i] = (int32_t)used;
    }
    return 0;
}
