/* Fuzz target: the tokenizer's encode and decode (full and streaming) on the test tokenizer
 * (tests/data/tokenizer/tokenizer.json, the demo model's).
 *
 * data[0] picks the mode, the rest is the payload:
 *   mode 0 (data[0] % 2 == 0): the payload is text. Invalid UTF-8 must fail with the offset of
 *     the first bad byte (tokenizer.h); valid text must encode to ids in the vocabulary, whose
 *     full decode is valid UTF-8 and equals the concatenated streaming decode (the documented
 *     invariant for ids encode produces).
 *   mode 1: the payload is ids, 2 bytes each, spread over [-4, vocab + 4) and the int32 extremes.
 *     Both decodes must give valid UTF-8 (bad byte runs become U+FFFD) and, when the full
 *     decode holds no U+FFFD (every byte run was valid), the same text.
 * data[0] bit 1: add_bos (mode 0) / skip_special (mode 1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer.h"
#include "language/utf8.h"

static const EgTokenizer *tokenizer(void) {
    static EgTokenizer *tok; /* loaded once, lives for the process */
    if (!tok) {
        EgError err;
        tok = eg_tokenizer_load(EGRET_SOURCE_DIR "/tests/data/tokenizer/tokenizer.json", &err);
        if (!tok) {
            fprintf(stderr, "cannot load the test tokenizer: %s\n", err.msg);
            abort();
        }
    }
    return tok;
}

static void fail(const char *what) {
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

static void require_utf8(const char *s, size_t len, const char *what) {
    if (eg_utf8_valid_prefix(s, len) != len) fail(what);
}

/* Full decode and streaming decode of ids; checks both and whether they agree. must_agree: the
 * caller knows every byte run is valid UTF-8. */
static void check_decodes(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          int must_agree) {
    EgError err;
    size_t full_len = 0;
    char *full = eg_tokenizer_decode_ex(tok, ids, n, skip_special, &full_len, &err);
    if (!full) fail("decode failed");
    require_utf8(full, full_len, "full decode is not valid UTF-8");
    if (full[full_len] != 0) fail("full decode is not NUL-terminated");

    EgDecodeStream *s = eg_decode_stream_new(tok, skip_special);
    if (!s) fail("stream allocation failed");
    char *joined = malloc(1);
    size_t joined_len = 0;
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t len = 0;
        int rc = i < n ? eg_decode_stream_push_ex(s, ids[i], &piece, &len, &err)
                       : eg_decode_stream_flush_ex(s, &piece, &len, &err);
        if (rc != 0 || !piece) fail("stream push/flush failed");
        require_utf8(piece, len, "stream piece is not valid UTF-8");
        char *grown = joined ? realloc(joined, joined_len + len + 1) : NULL;
        if (!grown) fail("out of memory");
        joined = grown;
        memcpy(joined + joined_len, piece, len);
        joined_len += len;
        free(piece);
    }
    eg_decode_stream_free(s);
    if (!must_agree) must_agree = !memmem(full, full_len, "\xEF\xBF\xBD", 3);
    if (must_agree && (joined_len != full_len || memcmp(joined, full, full_len) != 0))
        fail("streaming decode differs from the full decode");
    free(joined);
    free(full);
}

static void fuzz_encode(const EgTokenizer *tok, const char *text, size_t len, int add_bos) {
    int32_t *ids = NULL;
    size_t n = 0, bad = SIZE_MAX;
    EgError err;
    int rc = eg_tokenizer_encode_ex(tok, text, len, add_bos, &ids, &n, &bad, &err);
    size_t valid = eg_utf8_valid_prefix(text, len);
    if (valid != len) {
        if (rc == 0) fail("invalid UTF-8 was encoded");
        if (bad != valid) fail("invalid UTF-8 reported at the wrong offset");
        if (!strstr(err.msg, "invalid UTF-8")) fail("invalid UTF-8 error does not say so");
        return;
    }
    if (rc != 0) fail("valid text failed to encode");
    const int vocab = eg_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab || !eg_tokenizer_token(tok, ids[i]))
            fail("encode produced an id without a token");
    if (add_bos && (n == 0 || ids[0] != eg_tokenizer_bos(tok))) fail("add_bos without BOS first");
    check_decodes(tok, ids, n, 0, 1);
    check_decodes(tok, ids, n, 1, 1);
    free(ids);
}

static void fuzz_ids(const EgTokenizer *tok, const uint8_t *p, size_t len, int skip_special) {
    const uint32_t vocab = (uint32_t)eg_tokenizer_vocab_size(tok);
    size_t n = len / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) fail("out of memory");
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
        if (v == 0xFFFF)
            ids[i] = INT32_MAX;
        else if (v == 0xFFFE)
            ids[i] = INT32_MIN;
        else
            ids[i] = (int32_t)(v % (vocab + 8)) - 4;
    }
    check_decodes(tok, ids, n, skip_special, 0);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const EgTokenizer *tok = tokenizer();
    const int mode = data[0] & 1, flag = (data[0] >> 1) & 1;
    if (mode == 0)
        fuzz_encode(tok, (const char *)data + 1, size - 1, flag);
    else
        fuzz_ids(tok, data + 1, size - 1, flag);
    return 0;
}
