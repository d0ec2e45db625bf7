/* Text -> ids, following HF tokenizers' pipeline step by step:
 *   1. added tokens with normalized=false are split out of the raw text;
 *   2. each remaining segment is normalized on its own (so every segment gets the Prepend);
 *   3. added tokens with normalized=true are split out of each normalized segment;
 *   4. each remaining piece is one BPE "word" (SentencePiece kind), or, for byte-level BPE, is
 *      split by the pre-tokenizer's regex and each of those pieces, spelt in ByteLevel
 *      characters, is one word.
 * BPE merges run through a min-heap of candidate pairs over a doubly linked list of symbols, the
 * same algorithm (and tie-breaking: lowest rank, then leftmost) as HF's Word::merge_all, so a
 * 100 KB piece costs O(n log n), not O(n^2). */
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

/* ------------------------------------------------------------------ id vector */

typedef struct IdVec {
    int32_t *v;
    size_t n, cap;
} IdVec;

static int idvec_push(IdVec *iv, int32_t id) {
    if (iv->n == iv->cap) {
        size_t cap = iv->cap ? iv->cap * 2 : 64;
        int32_t *p = realloc(iv->v, cap * sizeof *p);
        if (!p) return -1;
        iv->v = p;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
    return 0;
}

/* ------------------------------------------------------------------ normalizer */

int eg_tok_normalize(const EgTokenizer *tok, const char *s, size_t len, EgBuf *out) {
    out->len = 0;
    if (eg_buf_append(out, s, len)) return -1;
    EgBuf tmp = {0};
    int rc = 0;
    for (size_t k = 0; k < tok->n_norm && rc == 0; k++) {
        const EgNormStep *st = &tok->norm[k];
        tmp.len = 0;
        if (st->kind == EG_NORM_PREPEND) {
            if (out->len == 0) continue; /* HF prepends only to non-empty strings */
            rc = eg_buf_append(&tmp, st->a, st->a_len) || eg_buf_append(&tmp, out->data, out->len);
        } else {
            /* all non-overlapping occurrences, left to right */
            size_t i = 0;
            while (i < out->len && rc == 0) {
                if (out->len - i >= st->a_len && memcmp(out->data + i, st->a, st->a_len) == 0) {
                    rc = eg_buf_append(&tmp, st->b, st->b_len);
                    i += st->a_len;
                } else {
                    size_t j = i + 1; /* copy up to the next possible match start in one go */
                    while (j < out->len && out->data[j] != st->a[0])
                        j++;
                    rc = eg_buf_append(&tmp, out->data + i, j - i);
                    i = j;
                }
            }
        }
        EgBuf t = *out;
        *out = tmp;
        tmp = t;
    }
    free(tmp.data);
    if (rc == 0 && eg_buf_reserve(out, 0)) rc = -1;
    if (rc == 0) out->data[out->len] = 0;
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ added-token splitting */

typedef struct Split {
    int32_t id; /* added token id, or -1 for a text piece */
    size_t start, end;
} Split;

typedef struct SplitVec {
    Split *v;
    size_t n, cap;
} SplitVec;

static int split_push(SplitVec *sv, int32_t id, size_t start, size_t end) {
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        Split *p = realloc(sv->v, cap * sizeof *p);
        if (!p) return -1;
        sv->v = p;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (Split){id, start, end};
    return 0;
}

/* Unicode White_Space (what Rust's regex \s matches). */
static int is_space_cp(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Approximation of Rust's Unicode \w (used only for single_word tokens, which IDEFICS files do
 * not have): ASCII letters, digits and '_', and any other non-ASCII code point outside the main
 * punctuation / symbol / space blocks. */
static int is_word_cp(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (is_space_cp(c)) return 0;
    if (c < 0xC0)
        return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
               (c >= 0xBC && c <= 0xBE);
    if (c == 0xD7 || c == 0xF7) return 0;
    if (c >= 0x2000 && c <= 0x2BFF) return c >= 0x2070 && c <= 0x209F;
    if ((c >= 0x3000 && c <= 0x303F) || (c >= 0xFE30 && c <= 0xFE4F)) return 0;
    if ((c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
        (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65))
        return 0;
    if (c >= 0x1F000 && c <= 0x1FAFF) return 0;
    return 1;
}

/* Start of the code point that ends just before s[end] (valid UTF-8, end > 0). */
static size_t prev_cp_start(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static uint32_t cp_at(const char *s, size_t i, size_t *n) {
    return eg_utf8_decode(s + i, n);
}

/* Whether a special token may be matched at s[pos..pos+n): not where any byte is plain text
 * (plain NULL: none is), nor anywhere when all_plain is set. */
static int special_allowed(const uint8_t *plain, int all_plain, size_t pos, size_t n) {
    return !all_plain && (!plain || !memchr(plain + pos, 1, n));
}

/* HF's AddedVocabulary::find_matches over s[0..len) with one pattern set, except that special
 * tokens are not matched over plain text (see special_allowed). */
static int find_matches(const EgTokenizer *tok, const EgMatchSet *set, const char *s, size_t len,
                        const uint8_t *plain, int all_plain, SplitVec *out) {
    out->n = 0;
    size_t start_offset = 0, pos = 0;
    if (set->start[256] == 0) return len ? split_push(out, -1, 0, len) : 0;
    while (pos < len) {
        unsigned char c = (unsigned char)s[pos];
        const EgAddedToken *hit = NULL;
        for (uint32_t k = set->start[c]; k < set->start[c + 1]; k++) {
            const EgAddedToken *a = &tok->added[set->order[k]];
            if (a->pat_len <= len - pos && memcmp(s + pos, a->pattern, a->pat_len) == 0 &&
                (!a->special || special_allowed(plain, all_plain, pos, a->pat_len))) {
                hit = a; /* longest first, so the first hit is the leftmost-longest match */
                break;
            }
        }
        if (!hit) {
            pos++;
            continue;
        }
        size_t mstart = pos, mend = pos + hit->pat_len, n;
        pos = mend; /* matches never overlap, even a discarded one */
        if (hit->single_word) {
            int word_before = mstart > 0 && is_word_cp(cp_at(s, prev_cp_start(s, mstart), &n));
            int word_after = mend < len && is_word_cp(cp_at(s, mend, &n));
            if (word_before || word_after) continue;
        }
        if (hit->lstrip) {
            size_t ns = mstart;
            while (ns > 0) {
                size_t p = prev_cp_start(s, ns);
                if (!is_space_cp(cp_at(s, p, &n))) break;
                ns = p;
            }
            mstart = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            while (mend < len && is_space_cp(cp_at(s, mend, &n)))
                mend += n;
            /* HF keeps scanning inside the stripped spaces and could emit overlapping splits
             * there; resuming after them avoids that (only matters for patterns that start with
             * whitespace). */
            pos = mend;
        }
        if (start_offset < mstart && split_push(out, -1, start_offset, mstart)) return -1;
        if (split_push(out, hit->id, mstart, mend)) return -1;
        start_offset = mend;
    }
    if (start_offset < len && split_push(out, -1, start_offset, len)) return -1;
    return 0;
}

/* ------------------------------------------------------------------ BPE */

typedef struct Sym {
    int32_t id;         /* -1 once merged into its left neighbour */
    int32_t prev, next; /* -1 at the ends */
} Sym;

typedef struct HeapEnt {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
} HeapEnt;

typedef struct Heap {
    HeapEnt *v;
    size_t n, cap;
} Heap;

static int heap_less(const HeapEnt *a, const HeapEnt *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(Heap *h, HeapEnt e) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        HeapEnt *p = realloc(h->v, cap * sizeof *p);
        if (!p) return -1;
        h->v = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = e;
    return 0;
}

static HeapEnt heap_pop(Heap *h) {
    HeapEnt top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const HeapEnt *best = &last;
        if (l < h->n && heap_less(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (l + 1 < h->n && heap_less(&h->v[l + 1], best)) m = l + 1;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static int push_pair(const EgTokenizer *tok, Heap *h, const Sym *sym, int32_t pos) {
    int32_t next = sym[pos].next;
    if (next < 0) return 0;
    const EgMerge *m = eg_merge_find(&tok->merges, sym[pos].id, sym[next].id);
    return m ? heap_push(h, (HeapEnt){m->rank, pos, m->new_id}) : 0;
}

/* Initial symbols of one word, as HF's BPE::merge_word builds them: each char's own token, else
 * its bytes' <0xNN> tokens (byte_fallback), else unk (runs of unknown chars fused if fuse_unk). */
static int word_symbols(const EgTokenizer *tok, const char *s, size_t len, Sym *sym, size_t *n_out,
                        EgError *err) {
    size_t n = 0;
    int pending_unk = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = eg_utf8_seq_len((unsigned char)s[i]);
        int32_t id = eg_strmap_get(&tok->model_map, tok, s + i, cl);
        if (id >= 0) {
            if (pending_unk) sym[n++].id = tok->unk_model_id;
            pending_unk = 0;
            sym[n++].id = id;
            i += cl;
            continue;
        }
        if (tok->byte_fallback) {
            size_t k = 0;
            while (k < cl && tok->byte_ids[(unsigned char)s[i + k]] >= 0)
                k++;
            if (k == cl) {
                /* HF does not flush a pending unk here, so it lands after these bytes */
                for (k = 0; k < cl; k++)
                    sym[n++].id = tok->byte_ids[(unsigned char)s[i + k]];
                i += cl;
                continue;
            }
        }
        if (!tok->unk_token)
            return eg_fail(err,
                           "character at byte %zu is not in the vocab and there is no "
                           "unk_token",
                           i);
        if (tok->unk_model_id < 0)
            return eg_fail(err, "unk_token \"%s\" is not in the vocab", tok->unk_token);
        if (pending_unk && !tok->fuse_unk) sym[n++].id = tok->unk_model_id;
        pending_unk = 1;
        i += cl;
    }
    if (pending_unk) sym[n++].id = tok->unk_model_id;
    for (size_t k = 0; k < n; k++) {
        sym[k].prev = (int32_t)k - 1;
        sym[k].next = k + 1 < n ? (int32_t)k + 1 : -1;
    }
    *n_out = n;
    return 0;
}

static int bpe_word(const EgTokenizer *tok, const char *s, size_t len, IdVec *out, EgError *err) {
    if (len == 0) return 0;
    if (tok->ignore_merges) {
        int32_t id = eg_strmap_get(&tok->model_map, tok, s, len);
        if (id >= 0) return idvec_push(out, id) ? eg_fail(err, "out of memory") : 0;
    }
    if (len > INT32_MAX / 2) return eg_fail(err, "text piece too long (%zu bytes)", len);
    Sym *sym = malloc(len * sizeof *sym); /* one symbol per byte at most */
    Heap h = {0};
    size_t n = 0;
    int rc = sym ? word_symbols(tok, s, len, sym, &n, err) : eg_fail(err, "out of memory");
    for (size_t k = 0; rc == 0 && k + 1 < n; k++)
        if (push_pair(tok, &h, sym, (int32_t)k)) rc = eg_fail(err, "out of memory");
    while (rc == 0 && h.n) {
        HeapEnt top = heap_pop(&h);
        Sym *cur = &sym[top.pos];
        if (cur->id < 0 || cur->next < 0) continue; /* merged away, or now last */
        Sym *right = &sym[cur->next];
        const EgMerge *m = eg_merge_find(&tok->merges, cur->id, right->id);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        cur->id = top.new_id;
        right->id = -1;
        cur->next = right->next;
        if (right->next >= 0) sym[right->next].prev = top.pos;
        if ((cur->prev >= 0 && push_pair(tok, &h, sym, cur->prev)) ||
            push_pair(tok, &h, sym, top.pos))
            rc = eg_fail(err, "out of memory");
    }
    /* symbol 0 is never merged away (only right-hand symbols are) */
    for (int32_t k = n ? 0 : -1; rc == 0 && k >= 0; k = sym[k].next)
        if (idvec_push(out, sym[k].id)) rc = eg_fail(err, "out of memory");
    free(h.v);
    free(sym);
    return rc;
}

/* ------------------------------------------------------------------ pre-tokenizer */

typedef struct PieceCtx {
    const EgTokenizer *tok;
    const char *text;
    EgBuf mapped; /* the piece in ByteLevel characters */
    IdVec *ids;
    EgError *err;
} PieceCtx;

static int byte_level_word(void *ctx, size_t start, size_t end) {
    PieceCtx *c = ctx;
    c->mapped.len = 0;
    if (eg_byte_level_append(&c->mapped, c->text + start, end - start))
        return eg_fail(c->err, "out of memory");
    return bpe_word(c->tok, c->mapped.data, c->mapped.len, c->ids, c->err);
}

/* One text piece left between added tokens: BPE words as the pre-tokenizer cuts them. */
static int encode_piece(const EgTokenizer *tok, const char *s, size_t len, IdVec *ids,
                        EgError *err) {
    if (!tok->pretok) return bpe_word(tok, s, len, ids, err);
    PieceCtx c = {tok, s, {0}, ids, err};
    int rc = eg_pretok_split(tok->pretok, s, len, byte_level_word, &c, err);
    free(c.mapped.data);
    return rc;
}

/* ------------------------------------------------------------------ encode */

static int encode(const EgTokenizer *tok, const char *text, size_t len, const uint8_t *plain,
                  int add_bos, int32_t **ids_out, size_t *n_out, size_t *bad_offset, EgError *err) {
    *ids_out = NULL;
    *n_out = 0;
    if (!text && len) return eg_fail(err, "encode: NULL text");
    size_t valid = eg_utf8_valid_prefix(text, len);
    if (valid != len) {
        if (bad_offset) *bad_offset = valid;
        return eg_fail(err, "invalid UTF-8 at byte offset %zu", valid);
    }
    IdVec ids = {0};
    SplitVec raw = {0}, pieces = {0};
    EgBuf norm = {0};
    int rc = 0;
    if (add_bos) {
        if (tok->bos < 0)
            rc = eg_fail(err, "encode: the tokenizer has no BOS token");
        else if (idvec_push(&ids, tok->bos))
            rc = eg_fail(err, "out of memory");
    }
    if (rc == 0 && find_matches(tok, &tok->raw_set, text, len, plain, 0, &raw))
        rc = eg_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < raw.n; i++) {
        const Split *sp = &raw.v[i];
        if (sp->id >= 0) {
            if (idvec_push(&ids, sp->id)) rc = eg_fail(err, "out of memory");
            continue;
        }
        /* Normalizing moves bytes, so a segment that holds plain text matches no special token
         * after normalization at all (only tokens marked normalized=true are matched there). */
        int seg_plain = plain && memchr(plain + sp->start, 1, sp->end - sp->start) != NULL;
        if (eg_tok_normalize(tok, text + sp->start, sp->end - sp->start, &norm) ||
            find_matches(tok, &tok->norm_set, norm.data, norm.len, NULL, seg_plain, &pieces)) {
            rc = eg_fail(err, "out of memory");
            break;
        }
        for (size_t k = 0; rc == 0 && k < pieces.n; k++) {
            const Split *p = &pieces.v[k];
            if (p->id >= 0)
                rc = idvec_push(&ids, p->id) ? eg_fail(err, "out of memory") : 0;
            else
                rc = encode_piece(tok, norm.data + p->start, p->end - p->start, &ids, err);
        }
    }
    free(raw.v);
    free(pieces.v);
    free(norm.data);
    if (rc) {
        free(ids.v);
        return -1;
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return 0;
}

int eg_tokenizer_encode_ex(const EgTokenizer *tok, const char *text, size_t len, int add_bos,
                           int32_t **ids_out, size_t *n_out, size_t *bad_offset, EgError *err) {
    return encode(tok, text, len, NULL, add_bos, ids_out, n_out, bad_offset, err);
}

int eg_tokenizer_encode(const EgTokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t **ids_out, size_t *n_out, EgError *err) {
    return encode(tok, text, len, NULL, add_bos, ids_out, n_out, NULL, err);
}

int eg_tokenizer_encode_plain(const EgTokenizer *tok, const char *text, size_t len,
                              const uint8_t *plain, int32_t **ids_out, size_t *n_out,
                              EgError *err) {
    return encode(tok, text, len, plain, 0, ids_out, n_out, NULL, err);
}
