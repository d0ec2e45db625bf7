/* Internal layout of EgTokenizer, shared by tokenizer_load.c (building it from JSON),
 * tokenizer_encode.c (normalize + added tokens + pre-tokenizer + BPE), tokenizer_decode.c and
 * tokenizer_bytelevel.c (the byte-level pre-tokenizer and byte map). Not a public API. */
#ifndef EGRET_TOKENIZER_INTERNAL_H
#define EGRET_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "language/tokenizer.h"
#include "runtime/buf.h"

/* ---- string -> id hash map. Keys are not stored: slot ids point into the tokenizer's token
 * table, so the key of id i is tok_str[i] (that keeps one copy of every token string). */
typedef struct EgStrMap {
    int32_t *slots; /* -1 = empty */
    size_t mask;    /* capacity - 1, capacity a power of two */
} EgStrMap;

uint64_t eg_hash_bytes(const void *p, size_t n);

/* ---- (left id, right id) -> merge map */
typedef struct EgMerge {
    uint64_t key; /* (uint64)left << 32 | right; UINT64_MAX = empty slot */
    uint32_t rank;
    int32_t new_id;
} EgMerge;

typedef struct EgMergeMap {
    EgMerge *slots;
    size_t mask;
} EgMergeMap;

const EgMerge *eg_merge_find(const EgMergeMap *m, int32_t left, int32_t right);

/* ---- normalizer: a list of steps applied in order to each text segment */
enum { EG_NORM_PREPEND, EG_NORM_REPLACE };
typedef struct EgNormStep {
    int kind;
    char *a; /* PREPEND: the prefix; REPLACE: the pattern */
    size_t a_len;
    char *b; /* REPLACE: the replacement */
    size_t b_len;
} EgNormStep;

/* ---- added tokens */
typedef struct EgAddedToken {
    int32_t id;
    char *content;  /* as written in the file (owned) */
    char *pattern;  /* what is matched: content, or normalize(content) when normalized */
    size_t pat_len; /* 0: never matched (HF ignores empty contents) */
    uint8_t special, lstrip, rstrip, single_word, normalized;
} EgAddedToken;

/* Patterns of one matching pass (raw or normalized), indexed by their first byte and longest
 * first, so a left-to-right scan that takes the first hit is HF's leftmost-longest match. */
typedef struct EgMatchSet {
    int32_t *order;      /* indices into EgTokenizer.added, grouped by first byte */
    uint32_t start[257]; /* order[start[c]..start[c+1]) begin with byte c */
} EgMatchSet;

/* ---- decoder: Replace* ByteFallback? [Fuse [Strip]] (Replace only before ByteFallback, so a
 * byte run's decoded text is never rewritten and per-id precomputation is exact) */
typedef struct EgReplace {
    char *from, *to;
    size_t from_len, to_len;
} EgReplace;

/* ---- byte-level BPE (tokenizer_bytelevel.c): the Split pre-tokenizer's compiled regex */
typedef struct EgPreTokenizer EgPreTokenizer;
struct cJSON;

/* Reads tokenizer.json's non-null pre_tokenizer into tok->pretok (refuses unsupported shapes). */
int eg_pretok_load(EgTokenizer *tok, const struct cJSON *pre, const char *src, EgError *err);
/* pattern: the regex as HF's Split holds it (Oniguruma syntax). */
EgPreTokenizer *eg_pretok_new(const char *pattern, const char *src, EgError *err);
void eg_pretok_free(EgPreTokenizer *p);
/* Calls piece(ctx, start, end) for each piece of s[0..len) (valid UTF-8) in order: the pieces
 * cover the text. Stops at the first non-zero return of piece and returns it. */
int eg_pretok_split(const EgPreTokenizer *p, const char *s, size_t len,
                    int (*piece)(void *ctx, size_t start, size_t end), void *ctx, EgError *err);
/* ByteLevel: appends each byte of s as its GPT-2 byte character. 0 / -1 (out of memory). */
int eg_byte_level_append(EgBuf *out, const char *s, size_t n);
/* The byte a ByteLevel character stands for, -1 if cp is not one of the 256. */
int eg_byte_level_from_cp(uint32_t cp);

struct EgTokenizer {
    /* token table: id -> string (NULL for gaps), one allocation per string */
    int32_t n_ids;
    char **tok_str;
    uint32_t *tok_len;
    uint8_t *is_special; /* id is a special added token */

    EgStrMap model_map; /* the BPE model's vocab */
    EgStrMap added_map; /* added token contents */
    EgMergeMap merges;
    int32_t byte_ids[256]; /* id of "<0xNN>" in the model vocab, -1 if absent */

    /* BPE options */
    int byte_fallback, fuse_unk, ignore_merges;
    char *unk_token;      /* model.unk_token string (NULL if none); resolved at encode */
    int32_t unk_model_id; /* its id in the model vocab, -1 if absent */

    EgNormStep *norm;
    size_t n_norm;

    EgPreTokenizer *pretok; /* NULL: each text piece is one BPE word (SentencePiece kind) */

    EgAddedToken *added;
    size_t n_added;
    EgMatchSet raw_set, norm_set;

    /* decoder */
    int dec_byte_level; /* ByteLevel decoder: every token is bytes (dec_str), and the joined
                         * bytes become text as Rust's from_utf8_lossy does (one U+FFFD per
                         * maximal invalid subsequence); no Replace, ByteFallback
                         * or Strip then */
    EgReplace *repl; /* applied in order to every token before ByteFallback */
    size_t n_repl;
    int dec_byte_fallback;
    char strip_char[5]; /* UTF-8 of Strip's content char, "" when no Strip */
    size_t strip_char_len;
    int strip_start;
    /* per id, precomputed decoder output: byte value (0..255) for byte-fallback tokens, else -1
     * and the token text after the Replace steps (ids without a token: -1 and NULL); for
     * ByteLevel the token's bytes (dec_byte -1) */
    int16_t *dec_byte;
    char **dec_str;
    uint32_t *dec_len;

    int32_t bos, eos, unk, pad;
    int32_t template_bos; /* what the post-processor puts first, -1 for nothing */
};

/* Map helpers (tokenizer_util.c). */
int eg_strmap_init(EgStrMap *m, size_t n_keys);
void eg_strmap_free(EgStrMap *m);
/* Inserts id with key tok_str[id]; replaces an existing entry with the same key. */
void eg_strmap_put(EgStrMap *m, const EgTokenizer *tok, int32_t id);
int32_t eg_strmap_get(const EgStrMap *m, const EgTokenizer *tok, const char *key, size_t len);
int eg_mergemap_init(EgMergeMap *m, size_t n);
void eg_mergemap_free(EgMergeMap *m);
/* Later duplicates overwrite earlier ones, as HF's HashMap collect does. */
void eg_mergemap_put(EgMergeMap *m, int32_t left, int32_t right, uint32_t rank, int32_t new_id);

/* Applies the normalizer to s[0..len) into out (cleared first). 0 / -1 (out of memory). */
int eg_tok_normalize(const EgTokenizer *tok, const char *s, size_t len, EgBuf *out);

#endif
