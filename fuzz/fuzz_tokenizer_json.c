/* Fuzz target: tokenizer.json content -> eg_tokenizer_load_from_memory (the code path
 * eg_tokenizer_load takes after reading the file). A loaded tokenizer must then work: the input
 * bytes themselves (JSON that names the file's own tokens) are encoded, when valid UTF-8, and the
 * ids decoded in full and streamed; the first ids of the vocabulary are decoded, and each one's
 * token string must find that token again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "language/tokenizer.h"
#include "language/utf8.h"

/* Bounds the per-input work on a huge (but valid) vocabulary. */
#define MAX_DECODE_IDS 4096

static void fail(const char *what, const EgError *err) {
    fprintf(stderr, "fuzz_tokenizer_json: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    abort();
}

static void decode_all(const EgTokenizer *tok, const int32_t *ids, size_t n) {
    EgError err;
    size_t len = 0;
    char *text = eg_tokenizer_decode_ex(tok, ids, n, 0, &len, &err);
    if (!text) fail("decode failed", &err);
    free(text);
    EgDecodeStream *s = eg_decode_stream_new(tok, 1);
    if (!s) fail("stream allocation failed", NULL);
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        int rc = i < n ? eg_decode_stream_push(s, ids[i], &piece, &err)
                       : eg_decode_stream_flush(s, &piece, &err);
        if (rc != 0) fail("stream decode failed", &err);
        free(piece);
    }
    eg_decode_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgError err;
    EgTokenizer *tok = eg_tokenizer_load_from_memory((const char *)data, size, "fuzz", &err);
    if (!tok) return 0;
    const char *text = (const char *)data;
    if (eg_utf8_valid_prefix(text, size) == size) {
        int32_t *ids = NULL;
        size_t n = 0;
        /* add_bos fails (as documented) when the tokenizer has no BOS: only ask when it has one */
        int add_bos = eg_tokenizer_bos(tok) >= 0;
        err.msg[0] = 0;
        /* Encoding can fail on valid text (a character neither in the vocab nor byte-covered,
         * and no unk_token: HF fails too), but only with a message. */
        if (eg_tokenizer_encode(tok, text, size, add_bos, &ids, &n, &err) == 0) {
            decode_all(tok, ids, n);
            free(ids);
        } else if (err.msg[0] == 0) {
            fail("encode failed without a message", NULL);
        }
    }
    int vocab = eg_tokenizer_vocab_size(tok);
    size_t n = vocab < MAX_DECODE_IDS ? (size_t)vocab : MAX_DECODE_IDS;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) fail("out of memory", NULL);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)i;
    decode_all(tok, ids, n);
    for (size_t i = 0; i < n; i++) {
        const char *t = eg_tokenizer_token(tok, ids[i]);
        if (t && eg_tokenizer_find(tok, t) < 0) fail("a token's string is not found", NULL);
    }
    free(ids);
    eg_tokenizer_free(tok);
    return 0;
}
