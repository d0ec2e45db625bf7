/* Header and structure checks for the formats decoded by stb_image (JPEG, GIF, BMP, TGA).
 *
 * stb_image allocates from the header's dimensions and, on truncated input, quietly reads zeros
 * and returns a half-garbage image. So before stb sees the data we parse the header ourselves
 * (refusing oversized images before anything is allocated) and walk the file's structure to make
 * sure all of it is present: JPEG segments up to the end-of-image marker, GIF blocks up to the
 * trailer, the BMP pixel array, the TGA pixel data (walking RLE packets). These walks are linear
 * in the file size and decode nothing. */
#include <inttypes.h>
#include <string.h>

#include "vision/image_internal.h"

static uint32_t le16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t be16(const uint8_t *p) {
    return (uint32_t)p[0] << 8 | p[1];
}

/* ---- JPEG ---- */

static int is_sof(uint8_t m) {
    /* SOF0-15 except DHT (C4), JPG (C8) and DAC (CC). */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

static int jpeg_truncated(size_t len, const char *where, EgError *err) {
    return eg_fail(err, "JPEG: truncated data (%zu bytes, cut %s)", len, where);
}

/* stb_image 2.27 (Debian 12's libstb-dev) trusts the Huffman tables it is given; the two ways
 * they make it read or write out of bounds (found by fuzz/fuzz_image) are refused here first:
 * - a DHT table with more than 256 codes writes past its 257-entry size list and 256-entry
 *   symbol array;
 * - a scan that uses a table no DHT defined decodes with stb's uninitialized (malloc'd) table
 *   and indexes its symbol array with garbage.
 * defined: bit t for DC table t, bit 4 + t for AC table t. */
static int jpeg_check_dht(const uint8_t *p, size_t n, size_t at, unsigned *defined, EgError *err) {
    while (n > 0) {
        if (n < 17) return eg_fail(err, "JPEG: corrupt data (short Huffman table at byte %zu)", at);
        if (p[0] >> 4 > 1 || (p[0] & 15) > 3)
            return eg_fail(err, "JPEG: corrupt data (Huffman table class/id %02X at byte %zu)",
                           p[0], at);
        size_t codes = 0;
        for (int i = 1; i <= 16; i++)
            codes += p[i];
        if (codes > 256)
            return eg_fail(err,
                           "JPEG: corrupt data (Huffman table with %zu codes, at most 256, at byte "
                           "%zu)",
                           codes, at);
        if (17 + codes > n)
            return eg_fail(err, "JPEG: corrupt data (Huffman table longer than its segment)");
        *defined |= 1u << ((p[0] >> 4) * 4 + (p[0] & 15));
        p += 17 + codes;
        at += 17 + codes;
        n -= 17 + codes;
    }
    return 0;
}

/* An SOS header (p: after the length, n bytes): each component's tables must be defined. Which
 * ones a scan decodes with follows stb: baseline scans use both; progressive DC scans the DC table
 * (first pass only), progressive AC scans the AC table. */
static int jpeg_check_sos(const uint8_t *p, size_t n, int progressive, unsigned defined,
                          EgError *err) {
    if (n < 1 || n < 1 + 2 * (size_t)p[0] + 3)
        return eg_fail(err, "JPEG: corrupt data (short scan header)");
    const size_t ns = p[0];
    const uint8_t ss = p[1 + 2 * ns], ah = p[3 + 2 * ns] >> 4;
    const int need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss > 0;
    for (size_t k = 0; k < ns; k++) {
        const unsigned dc = p[2 + 2 * k] >> 4, ac = p[2 + 2 * k] & 15;
        if ((need_dc && (dc > 3 || !(defined >> dc & 1))) ||
            (need_ac && (ac > 3 || !(defined >> (4 + ac) & 1))))
            return eg_fail(err,
                           "JPEG: corrupt data (scan uses Huffman table DC %u / AC %u, not "
                           "defined)",
                           dc, ac);
    }
    return 0;
}

int eg_image_scan_jpeg(const uint8_t *data, size_t len, const EgImageLimits *limits,
                       EgImageHeader *hdr, EgError *err) {
    int have_frame = 0, have_scan = 0, progressive = 0;
    unsigned tables = 0; /* Huffman tables defined so far (jpeg_check_dht) */
    size_t pos = 2;      /* after SOI */
    memset(hdr, 0, sizeof *hdr);
    hdr->stb_channels = 3; /* JPEG has no alpha; gray and CMYK come back as RGB */
    for (;;) {
        if (pos >= len) return jpeg_truncated(len, "before the end-of-image marker", err);
        if (data[pos] != 0xFF)
            return eg_fail(err, "JPEG: corrupt data (no marker at byte %zu)", pos);
        while (pos < len && data[pos] == 0xFF)
            pos++; /* fill bytes */
        if (pos >= len) return jpeg_truncated(len, "inside a marker", err);
        uint8_t m = data[pos++];
        if (m == 0xD9) { /* EOI */
            if (!have_scan) return eg_fail(err, "JPEG: corrupt data (no image data before end)");
            return 0; /* anything after EOI is ignored, as every decoder does */
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* markers without a segment */
        if (m == 0x00 || m == 0xD8)
            return eg_fail(err, "JPEG: corrupt data (unexpected marker FF%02X at byte %zu)", m,
                           pos - 2);
        if (len - pos < 2) return jpeg_truncated(len, "inside a segment header", err);
        size_t seglen = be16(data + pos);
        if (seglen < 2)
            return eg_fail(err, "JPEG: corrupt data (segment length %zu at byte %zu)", seglen, pos);
        if (seglen > len - pos) return jpeg_truncated(len, "inside a segment", err);
        if (is_sof(m) && !have_frame) {
            if (seglen < 8) return eg_fail(err, "JPEG: corrupt data (short frame header)");
            uint32_t height = be16(data + pos + 3), width = be16(data + pos + 5);
            if (height == 0)
                return eg_fail(err, "JPEG: height given by a DNL marker is not supported");
            if (eg_image_check_limits(EG_IMAGE_JPEG, width, height, limits, err) != 0) return -1;
            hdr->width = width;
            hdr->height = height;
            have_frame = 1;
            progressive = m == 0xC2;
        }
        if (m == 0xC4 && jpeg_check_dht(data + pos + 2, seglen - 2, pos + 2, &tables, err) != 0)
            return -1;
        if (m == 0xDA && !have_frame)
            return eg_fail(err, "JPEG: corrupt data (scan before frame header)");
        if (m == 0xDA && jpeg_check_sos(data + pos + 2, seglen - 2, progressive, tables, err) != 0)
            return -1;
        pos += seglen;
        if (m != 0xDA) continue;
        /* SOS: entropy-coded data follows, up to the next marker that is neither a stuffed byte
         * (FF00) nor a restart marker (FFD0-FFD7). */
        have_scan = 1;
        for (;;) {
            const uint8_t *ff = pos < len ? memchr(data + pos, 0xFF, len - pos) : NULL;
            if (!ff) return jpeg_truncated(len, "inside the image data", err);
            pos = (size_t)(ff - data);
            if (pos + 1 >= len) return jpeg_truncated(len, "inside the image data", err);
            uint8_t next = data[pos + 1];
            if (next == 0x00 || (next >= 0xD0 && next <= 0xD7))
                pos += 2;
            else if (next == 0xFF)
                pos += 1;
            else
                break;
        }
    }
}

/* ---- GIF ---- */

static int gif_truncated(size_t len, EgError *err) {
    return eg_fail(err, "GIF: truncated data (%zu bytes, no trailer)", len);
}

/* Skips a chain of data sub-blocks (size byte, data), ending with a zero size. */
static int gif_skip_blocks(const uint8_t *data, size_t len, size_t *pos) {
    for (;;) {
        if (*pos >= len) return -1;
        size_t n = data[(*pos)++];
        if (n == 0) return 0;
        if (n > len - *pos) return -1;
        *pos += n;
    }
}

int eg_image_scan_gif(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err) {
    memset(hdr, 0, sizeof *hdr);
    if (len < 13) return eg_fail(err, "GIF: truncated data (%zu bytes, header incomplete)", len);
    /* stb_image renders the first frame onto the whole logical screen, so that is the size. */
    hdr->width = le16(data + 6);
    hdr->height = le16(data + 8);
    hdr->stb_channels = 4;
    if (eg_image_check_limits(EG_IMAGE_GIF, hdr->width, hdr->height, limits, err) != 0) return -1;
    size_t pos = 13;
    if (data[10] & 0x80) pos += (size_t)3 << ((data[10] & 7) + 1); /* global colour table */
    int images = 0;
    for (;;) {
        if (pos >= len) return gif_truncated(len, err);
        uint8_t block = data[pos++];
        if (block == 0x3B) { /* trailer */
            if (images == 0) return eg_fail(err, "GIF: corrupt data (no image in the file)");
            return 0;
        }
        if (block == 0x21) { /* extension: label, then sub-blocks */
            pos++;
            if (gif_skip_blocks(data, len, &pos) != 0) return gif_truncated(len, err);
        } else if (block == 0x2C) { /* image descriptor, local colour table, LZW data */
            if (len - pos < 9) return gif_truncated(len, err);
            uint8_t flags = data[pos + 8];
            pos += 9;
            if (flags & 0x80) pos += (size_t)3 << ((flags & 7) + 1);
            pos++; /* LZW minimum code size */
            if (gif_skip_blocks(data, len, &pos) != 0) return gif_truncated(len, err);
            images++;
        } else {
            return eg_fail(err, "GIF: corrupt data (unknown block 0x%02x at byte %zu)", block,
                           pos - 1);
        }
    }
}

/* ---- BMP ---- */

int eg_image_scan_bmp(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err) {
    memset(hdr, 0, sizeof *hdr);
    if (len < 18) return eg_fail(err, "BMP: truncated data (%zu bytes, header incomplete)", len);
    uint32_t offset = le32(data + 10), hsz = le32(data + 14);
    /* The info-header versions stb_image reads: core (12), v3 (40), v3 + masks (56), v4, v5. */
    if (hsz != 12 && hsz != 40 && hsz != 56 && hsz != 108 && hsz != 124)
        return eg_fail(err, "BMP: unsupported info header size %" PRIu32, hsz);
    if (len < 14 + (size_t)hsz)
        return eg_fail(err, "BMP: truncated data (%zu bytes, header incomplete)", len);
    int64_t width, height;
    uint32_t planes, bpp, compression = 0;
    if (hsz == 12) {
        width = le16(data + 18);
        height = le16(data + 20);
        planes = le16(data + 22);
        bpp = le16(data + 24);
    } else {
        width = (int32_t)le32(data + 18);
        height = (int32_t)le32(data + 22); /* negative: rows stored top-down */
        planes = le16(data + 26);
        bpp = le16(data + 28);
        compression = le32(data + 30);
    }
    if (width <= 0 || height == 0)
        return eg_fail(err, "BMP: invalid image size %" PRId64 "x%" PRId64, width, height);
    if (height < 0) height = -height;
    if (eg_image_check_limits(EG_IMAGE_BMP, (uint64_t)width, (uint64_t)height, limits, err) != 0)
        return -1;
    hdr->width = (uint32_t)width;
    hdr->height = (uint32_t)height;
    if (planes != 1) return eg_fail(err, "BMP: corrupt data (%" PRIu32 " planes)", planes);
    if (compression == 1 || compression == 2)
        return eg_fail(err, "BMP: RLE compression is not supported");
    if (compression != 0 && compression != 3)
        return eg_fail(err, "BMP: compression type %" PRIu32 " is not supported", compression);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return eg_fail(err, "BMP: %" PRIu32 " bits per pixel is not supported", bpp);
    if (offset < 14 + hsz)
        return eg_fail(err, "BMP: corrupt data (pixel data offset %" PRIu32 " inside the header)",
                       offset);
    /* Rows are padded to 4 bytes; sizes are below 2^32 each, so this cannot overflow. */
    uint64_t stride = ((uint64_t)width * bpp + 31) / 32 * 4;
    uint64_t need = offset + stride * (uint64_t)height;
    if (need > len)
        return eg_fail(err, "BMP: truncated data (%zu bytes, pixel data needs %" PRIu64 ")", len,
                       need);
    /* stb_image leaves palette entries past the file's palette uninitialized (stack memory), so
     * an index beyond it must not reach stb. psize is stb's own count (for OS/2 core headers it
     * counts from offset - 38), so we check exactly the entries stb fills. */
    if (bpp <= 8) {
        uint64_t psize =
            hsz == 12 ? (offset >= 38 ? (offset - 38) / 3 : 0) : (offset - 14 - hsz) / 4;
        if (psize == 0 || psize > 256)
            return eg_fail(err, "BMP: corrupt data (palette of %" PRIu64 " entries)", psize);
        for (uint64_t y = 0; psize < (1u << bpp) && y < (uint64_t)height; y++) {
            const uint8_t *row = data + offset + y * stride;
            for (int64_t x = 0; x < width; x++) {
                unsigned shift = (unsigned)(8 - bpp - (x * bpp) % 8);
                unsigned index = (row[x * bpp / 8] >> shift) & ((1u << bpp) - 1);
                if (index >= psize)
                    return eg_fail(err,
                                   "BMP: corrupt data (pixel index %u outside the %" PRIu64
                                   "-entry palette)",
                                   index, psize);
            }
        }
    }
    /* PIL reads uncompressed 32-bit BMPs as BGRX (the fourth byte is not alpha); stb_image would
     * use it as alpha, so ask stb for 3 channels. */
    hdr->stb_channels = (bpp == 32 && compression == 0) ? 3 : 0;
    return 0;
}

/* ---- TGA ---- */

typedef struct TgaHeader {
    uint32_t id_len, cmap_type, type, cmap_first, cmap_len, cmap_bits, width, height, bpp, desc;
} TgaHeader;

static void tga_parse(const uint8_t *d, TgaHeader *h) {
    h->id_len = d[0];
    h->cmap_type = d[1];
    h->type = d[2];
    h->cmap_first = le16(d + 3);
    h->cmap_len = le16(d + 5);
    h->cmap_bits = d[7];
    h->width = le16(d + 12);
    h->height = le16(d + 14);
    h->bpp = d[16];
    h->desc = d[17];
}

/* Stricter than stb_image's own test (which random bytes pass about once in a million): the
 * colour-map type must agree with the image type, the pixel size must suit the image type and
 * the obsolete interleave bits must be clear. */
int eg_image_looks_like_tga(const uint8_t *data, size_t len) {
    if (len < 18) return 0;
    TgaHeader h;
    tga_parse(data, &h);
    if (h.cmap_type > 1 || h.width == 0 || h.height == 0 || (h.desc & 0xC0)) return 0;
    switch (h.type) {
    case 1: /* colour-mapped, raw or RLE */
    case 9:
        return h.cmap_type == 1 && (h.bpp == 8 || h.bpp == 16) && h.cmap_len > 0 &&
               (h.cmap_bits == 8 || h.cmap_bits == 15 || h.cmap_bits == 16 || h.cmap_bits == 24 ||
                h.cmap_bits == 32);
    case 2: /* true colour */
    case 10:
        return h.cmap_type == 0 && (h.bpp == 15 || h.bpp == 16 || h.bpp == 24 || h.bpp == 32);
    case 3: /* gray (16 = gray + alpha) */
    case 11:
        return h.cmap_type == 0 && (h.bpp == 8 || h.bpp == 16);
    default:
        return 0;
    }
}

int eg_image_scan_tga(const uint8_t *data, size_t len, const EgImageLimits *limits,
                      EgImageHeader *hdr, EgError *err) {
    memset(hdr, 0, sizeof *hdr);
    if (!eg_image_looks_like_tga(data, len)) return eg_fail(err, "TGA: corrupt header");
    TgaHeader h;
    tga_parse(data, &h);
    if (eg_image_check_limits(EG_IMAGE_TGA, h.width, h.height, limits, err) != 0) return -1;
    hdr->width = h.width;
    hdr->height = h.height;
    if (h.cmap_type == 1 && h.cmap_first != 0)
        return eg_fail(err, "TGA: colour maps not starting at index 0 are not supported");
    size_t pos = 18 + h.id_len;
    if (h.cmap_type == 1) pos += (size_t)h.cmap_len * ((h.cmap_bits + 7) / 8);
    size_t pixel_bytes = (h.bpp + 7) / 8;
    uint64_t pixels = (uint64_t)h.width * h.height;
    if (h.type < 8) {
        uint64_t need = pos + pixels * pixel_bytes;
        if (need > len)
            return eg_fail(err, "TGA: truncated data (%zu bytes, pixel data needs %" PRIu64 ")",
                           len, need);
    } else {
        /* RLE packets: a header byte (bit 7 = repeat, low 7 bits = count - 1), then one pixel
         * (repeat) or count pixels (raw). */
        for (uint64_t done = 0; done < pixels;) {
            if (pos >= len) return eg_fail(err, "TGA: truncated data (%zu bytes)", len);
            uint8_t packet = data[pos++];
            size_t count = (size_t)(packet & 0x7F) + 1;
            size_t bytes = (packet & 0x80) ? pixel_bytes : count * pixel_bytes;
            if (bytes > len - pos) return eg_fail(err, "TGA: truncated data (%zu bytes)", len);
            pos += bytes;
            done += count;
        }
    }
    hdr->stb_channels = 0;
    return 0;
}
