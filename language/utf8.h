/* UTF-8 helpers shared by the tokenizer and the prompt builder. Validation follows the Unicode
 * definition (no overlong forms, no surrogates, nothing above U+10FFFF), which is also what Rust's
 * `str` enforces in HF tokenizers, so "valid here" means "HF would accept it". */
#ifndef EGRET_UTF8_H
#define EGRET_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the longest valid UTF-8 prefix of s[0..len): equals len iff the whole text is valid;
 * otherwise it is the byte offset of the first byte of the first invalid sequence (what the
 * service reports in INVALID_ARGUMENT). */
size_t eg_utf8_valid_prefix(const char *s, size_t len);

/* Number of bytes of the (valid) UTF-8 sequence starting with lead byte c: 1..4. */
static inline size_t eg_utf8_seq_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Decodes one code point from valid UTF-8 at s (len >= eg_utf8_seq_len(*s)). */
uint32_t eg_utf8_decode(const char *s, size_t *n_bytes);

/* Encodes cp (<= 0x10FFFF) into out (4 bytes room); returns the byte count. */
size_t eg_utf8_encode(uint32_t cp, char *out);

/* The incremental validity rule used by the streaming decoder: given the bytes already
 * collected for one sequence (have[0..n), n >= 1, a valid lead byte first), whether byte b may
 * come next. Same ranges as eg_utf8_valid_prefix. */
int eg_utf8_continues(const unsigned char *have, size_t n, unsigned char b);

/* Whether c may start a multi-byte sequence (C2..F4); ASCII is not a "lead" here. */
static inline int eg_utf8_is_lead(unsigned char c) {
    return c >= 0xC2 && c <= 0xF4;
}

#endif
