/* Which image each prompt token attends to, by the rule of HF's IdeficsProcessor: the most recent
 * <image> token at or before it; none before the first image, and none for tokens strictly
 * after an end-of-sequence token until the next <image>. */
#ifndef EGRET_IMAGE_MASK_H
#define EGRET_IMAGE_MASK_H

#include <stddef.h>
#include <stdint.h>

/* Fills image_of_token[t] with the image index (0-based, counting <image> tokens) or -1.
 * Returns the number of <image> tokens. */
uint32_t eg_image_of_tokens(const int32_t *ids, size_t n, int32_t image_token, int32_t eos_token,
                            int32_t *image_of_token);

#endif
