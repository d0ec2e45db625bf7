#include "utf8.h"

/* Allowed range of the second byte for each lead byte (the only place where ranges differ from
 * plain 80..BF: they exclude overlongs, surrogates and code points above U+10FFFF). */
static void second_byte_range(unsigned char lead, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    else if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
}

int eg_utf8_continues(const unsigned char *have, size_t n, unsigned char b) {
    if (n == 0 || n >= eg_utf8_seq_len(have[0])) return 0;
    if (n == 1) {
        unsigned char lo, hi;
        second_byte_range(have[0], &lo, &hi);
        return b >= lo && b <= hi;
    }
    return b >= 0x80 && b <= 0xBF;
}

size_t eg_utf8_valid_prefix(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (!eg_utf8_is_lead(c)) return i;
        size_t n = eg_utf8_seq_len(c);
        if (len - i < n) return i;
        for (size_t k = 1; k < n; k++)
            if (!eg_utf8_continues(p + i, k, p[i + k])) return i;
        i += n;
    }
    return len;
}

uint32_t eg_utf8_decode(const char *s, size_t *n_bytes) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = eg_utf8_seq_len(p[0]);
    uint32_t cp = n == 1   ? p[0]
                  : n == 2 ? (p[0] & 0x1Fu)
                  : n == 3 ? (p[0] & 0x0Fu)
                           : (p[0] & 0x07u);
    for (size_t k = 1; k < n; k++)
        cp = (cp << 6) | (p[k] & 0x3Fu);
    if (n_bytes) *n_bytes = n;
    return cp;
}

size_t eg_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
