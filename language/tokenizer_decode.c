/* Ids -> text: HF's decoder chain Replace* -> ByteFallback -> Fuse -> Strip, or ByteLevel, with
 * the per-token part (Replace, byte recognition, ByteLevel's byte map) precomputed at load. Two
 * forms: a full decode identical to HF, and a streaming decoder that emits each character as
 * soon as its bytes are complete (never half of one). */
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Whether id contributes to the output at all (HF skips ids without a token, and special added
 * tokens when skip_special is set). */
static int visible(const EgTokenizer *tok, int32_t id, int skip_special) {
    if (id < 0 || id >= tok->n_ids || !tok->tok_str[id]) return 0;
    return !(skip_special && tok->is_special[id]);
}

/* Removes up to strip_start leading copies of the Strip char from the whole text. */
static void strip_leading(const EgTokenizer *tok, EgBuf *b) {
    size_t cut = 0, cl = tok->strip_char_len;
    for (int k = 0; k < tok->strip_start && cl; k++) {
        if (b->len - cut < cl || memcmp(b->data + cut, tok->strip_char, cl) != 0) break;
        cut += cl;
    }
    if (cut) {
        memmove(b->data, b->data + cut, b->len - cut);
        b->len -= cut;
        b->data[b->len] = 0;
    }
}

/* Appends a finished run of byte tokens: its text if valid UTF-8, else U+FFFD per byte. */
static int flush_run(EgBuf *out, const unsigned char *run, size_t n) {
    if (eg_utf8_valid_prefix((const char *)run, n) == n) return eg_buf_append(out, run, n);
    for (size_t i = 0; i < n; i++)
        if (eg_buf_append(out, REPLACEMENT, 3)) return -1;
    return 0;
}

static char *decode_byte_level(const EgTokenizer *tok, const int32_t *ids, size_t n,
                               int skip_special, size_t *len_out, EgError *err);

char *eg_tokenizer_decode_ex(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                             size_t *len_out, EgError *err) {
    if (tok->dec_byte_level) return decode_byte_level(tok, ids, n, skip_special, len_out, err);
    EgBuf out = {0};
    unsigned char *run = malloc(n ? n : 1); /* bytes of the current byte-token run */
    size_t run_n = 0;
    int rc = run ? eg_buf_reserve(&out, 0) : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int32_t id = ids[i];
        if (!visible(tok, id, skip_special)) continue;
        if (tok->dec_byte[id] >= 0) {
            run[run_n++] = (unsigned char)tok->dec_byte[id];
            continue;
        }
        if (run_n) rc = flush_run(&out, run, run_n);
        run_n = 0;
        if (rc == 0) rc = eg_buf_append(&out, tok->dec_str[id], tok->dec_len[id]);
    }
    if (rc == 0 && run_n) rc = flush_run(&out, run, run_n);
    free(run);
    if (rc) {
        free(out.data);
        eg_fail(err, "decode: out of memory");
        return NULL;
    }
    strip_leading(tok, &out);
    if (len_out) *len_out = out.len;
    return eg_buf_take(&out);
}

char *eg_tokenizer_decode(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          EgError *err) {
    return eg_tokenizer_decode_ex(tok, ids, n, skip_special, NULL, err);
}

/* ------------------------------------------------------------------ streaming */

struct EgDecodeStream {
    const EgTokenizer *tok;
    int skip_special;
    unsigned char pending[4]; /* bytes of an unfinished UTF-8 sequence (byte fallback) */
    size_t n_pending;
    int strip_left; /* leading Strip chars still allowed to be dropped; 0 once text started */
};

EgDecodeStream *eg_decode_stream_new(const EgTokenizer *tok, int skip_special) {
    EgDecodeStream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->tok = tok;
    s->skip_special = skip_special;
    s->strip_left = tok->strip_char_len ? tok->strip_start : 0;
    return s;
}

void eg_decode_stream_free(EgDecodeStream *s) {
    free(s);
}

/* Appends text to out, applying the Strip decoder while the stream is still at its start. */
static int emit(EgDecodeStream *s, EgBuf *out, const char *text, size_t len) {
    const EgTokenizer *tok = s->tok;
    size_t cl = tok->strip_char_len;
    while (s->strip_left > 0 && len > 0) {
        if (len < cl || memcmp(text, tok->strip_char, cl) != 0) {
            s->strip_left = 0;
            break;
        }
        text += cl;
        len -= cl;
        s->strip_left--;
    }
    if (len && s->strip_left > 0) s->strip_left = 0;
    return eg_buf_append(out, text, len);
}

/* An unfinished sequence that cannot go on: HF's ByteFallback makes each of its bytes a U+FFFD,
 * ByteLevel's from_utf8_lossy the whole of it one U+FFFD. */
static int emit_pending_as_replacement(EgDecodeStream *s, EgBuf *out) {
    size_t n = s->tok->dec_byte_level && s->n_pending ? 1 : s->n_pending;
    for (size_t i = 0; i < n; i++)
        if (emit(s, out, REPLACEMENT, 3)) return -1;
    s->n_pending = 0;
    return 0;
}

/* One byte from a byte-fallback or ByteLevel token. */
static int push_byte(EgDecodeStream *s, EgBuf *out, unsigned char b) {
    if (s->n_pending && !eg_utf8_continues(s->pending, s->n_pending, b)) {
        if (emit_pending_as_replacement(s, out)) return -1;
    }
    if (s->n_pending == 0) {
        if (b < 0x80) return emit(s, out, (const char *)&b, 1);
        if (!eg_utf8_is_lead(b)) return emit(s, out, REPLACEMENT, 3);
    }
    s->pending[s->n_pending++] = b;
    if (s->n_pending == eg_utf8_seq_len(s->pending[0])) {
        s->n_pending = 0;
        return emit(s, out, (const char *)s->pending, eg_utf8_seq_len(s->pending[0]));
    }
    return 0;
}

static int finish(EgBuf *out, int rc, char **result, size_t *len_out, EgError *err) {
    size_t len = out->len;
    if (rc == 0) *result = eg_buf_take(out);
    if (rc || !*result) {
        free(out->data);
        *result = NULL;
        return eg_fail(err, "decode stream: out of memory");
    }
    if (len_out) *len_out = len;
    return 0;
}

int eg_decode_stream_push_ex(EgDecodeStream *s, int32_t id, char **result, size_t *len_out,
                             EgError *err) {
    EgBuf out = {0};
    const EgTokenizer *tok = s->tok;
    int rc = 0;
    *result = NULL;
    if (visible(tok, id, s->skip_special)) {
        if (tok->dec_byte_level) {
            for (uint32_t i = 0; i < tok->dec_len[id] && rc == 0; i++)
                rc = push_byte(s, &out, (unsigned char)tok->dec_str[id][i]);
        } else if (tok->dec_byte[id] >= 0) {
            rc = push_byte(s, &out, (unsigned char)tok->dec_byte[id]);
        } else {
            /* a text token ends the byte run: an unfinished sequence is invalid (HF: U+FFFD) */
            rc = emit_pending_as_replacement(s, &out);
            if (rc == 0) rc = emit(s, &out, tok->dec_str[id], tok->dec_len[id]);
        }
    }
    return finish(&out, rc, result, len_out, err);
}

int eg_decode_stream_push(EgDecodeStream *s, int32_t id, char **result, EgError *err) {
    return eg_decode_stream_push_ex(s, id, result, NULL, err);
}

int eg_decode_stream_flush_ex(EgDecodeStream *s, char **result, size_t *len_out, EgError *err) {
    EgBuf out = {0};
    *result = NULL;
    return finish(&out, emit_pending_as_replacement(s, &out), result, len_out, err);
}

int eg_decode_stream_flush(EgDecodeStream *s, char **result, EgError *err) {
    return eg_decode_stream_flush_ex(s, result, NULL, err);
}

/* ByteLevel's full decode: HF joins the bytes of all tokens and applies from_utf8_lossy once; the
 * streaming rule above is exactly that rule applied byte by byte, so one code path serves both. */
static char *decode_byte_level(const EgTokenizer *tok, const int32_t *ids, size_t n,
                               int skip_special, size_t *len_out, EgError *err) {
    EgDecodeStream s = {.tok = tok, .skip_special = skip_special};
    EgBuf out = {0};
    int rc = eg_buf_reserve(&out, 0);
    for (size_t i = 0; i < n && rc == 0; i++) {
        int32_t id = ids[i];
        if (!visible(tok, id, skip_special)) continue;
        for (uint32_t k = 0; k < tok->dec_len[id] && rc == 0; k++)
            rc = push_byte(&s, &out, (unsigned char)tok->dec_str[id][k]);
    }
    if (rc == 0) rc = emit_pending_as_replacement(&s, &out);
    if (rc) {
        free(out.data);
        eg_fail(err, "decode: out of memory");
        return NULL;
    }
    if (len_out) *len_out = out.len;
    return eg_buf_take(&out);
}
