/* JPEG, GIF (first frame), BMP and TGA through stb_image. The only translation unit with the stb
 * implementation: restricted to those four formats and to decoding from memory (no stdio, no
 * HDR/linear float paths). Input reaches here only after image_headers.c has checked the header
 * against the limits and the structure for completeness. stb's failure reason is thread-local
 * (C11 _Thread_local), so concurrent decodes report their own errors. */
#include <limits.h>
#include <stdlib.h>

#include "vision/image_internal.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_TGA
/* Buffers stb returns are handed to EgImage and released with free(). */
#define STBI_MALLOC(sz) malloc(sz)
#define STBI_REALLOC(p, newsz) realloc(p, newsz)
#define STBI_FREE(p) free(p)
/* Third-party code: don't let its style trip our warnings (CI builds with -Werror). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <stb_image.h>
#pragma GCC diagnostic pop

int eg_image_decode_stb(EgImageFormat format, const uint8_t *data, size_t len,
                        const EgImageHeader *hdr, EgImage *out, EgError *err) {
    const char *name = eg_image_format_name(format);
    if (len > INT_MAX) return eg_fail(err, "%s: input too large (%zu bytes)", name, len);
    int w = 0, h = 0, n = 0;
    /* Some stb failure paths return NULL without setting a reason; clear the (thread-local)
     * reason first so an earlier failure's text is never reported for this one. */
    stbi__g_failure_reason = NULL;
    uint8_t *px = stbi_load_from_memory(data, (int)len, &w, &h, &n, hdr->stb_channels);
    if (!px) {
        const char *why = stbi_failure_reason();
        return eg_fail(err, "%s: corrupt data (stb_image: %s)", name,
                       why && *why ? why : "decoding failed");
    }
    int channels = hdr->stb_channels ? hdr->stb_channels : n;
    /* Our header scan checked the limits; make sure stb decoded the size we checked. */
    if ((uint32_t)w != hdr->width || (uint32_t)h != hdr->height || channels < 1 || channels > 4) {
        free(px);
        return eg_fail(err, "%s: corrupt data (decoded %dx%d with %d channels, header says %ux%u)",
                       name, w, h, channels, (unsigned)hdr->width, (unsigned)hdr->height);
    }
    size_t count = (size_t)w * (size_t)h;
    if (channels < 3) { /* gray (+alpha) grows to RGB: make room, then expand in place */
        uint8_t *bigger = realloc(px, count * 3);
        if (!bigger) {
            free(px);
            return eg_fail(err, "%s: out of memory for a %dx%d image", name, w, h);
        }
        px = bigger;
    }
    eg_image_to_rgb(px, channels, count, px);
    if (channels == 4) {
        uint8_t *shrunk = realloc(px, count * 3);
        if (shrunk) px = shrunk;
    }
    out->width = (uint32_t)w;
    out->height = (uint32_t)h;
    out->rgb = px;
    return 0;
}
