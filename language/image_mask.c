#include "language/image_mask.h"

uint32_t eg_image_of_tokens(const int32_t *ids, size_t n, int32_t image_token, int32_t eos_token,
                            int32_t *image_of_token) {
    int32_t current = -1;
    int after_eos = 0;
    for (size_t t = 0; t < n; t++) {
        if (ids[t] == image_token) {
            current++;
            after_eos = 0;
        }
        image_of_token[t] = after_eos ? -1 : current;
        /* The end-of-sequence token itself still sees the image; the tokens after it do not. */
        if (ids[t] == eos_token) after_eos = 1;
    }
    return (uint32_t)(current + 1);
}
