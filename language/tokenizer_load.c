/* Builds an EgTokenizer from tokenizer.json (+ the optional tokenizer_config.json beside it).
 * Everything the encoder/decoder would otherwise have to interpret per call is resolved here:
 * token strings to ids, merges to an id-pair map, added-token match patterns, and each id's
 * decoded text. Anything this implementation would get wrong is refused with its name. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

/* Ids above this are refused: a bigger table is certainly a corrupt file (LLaMA 3 has 128k). */
#define MAX_IDS (1 << 24)

static int is_null(const cJSON *j) {
    return j == NULL || cJSON_IsNull(j);
}

static const char *type_of(const cJSON *j) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int get_bool(const cJSON *obj, const char *key, int dflt) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j);
    return dflt;
}

/* A JSON number that is an integer in [0, max). Returns -1 otherwise. */
static long get_index(const cJSON *j, long max) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0) || v >= (double)max || floor(v) != v) return -1;
    return (long)v;
}

static char *dup_bytes(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ------------------------------------------------------------------ model: vocab and merges */

static int set_token(EgTokenizer *tok, int32_t id, const char *s, EgError *err, const char *src) {
    if (tok->tok_str[id])
        return eg_fail(err, "%s: id %d is used by both \"%s\" and \"%s\"", src, id,
                       tok->tok_str[id], s);
    size_t n = strlen(s);
    tok->tok_str[id] = dup_bytes(s, n);
    if (!tok->tok_str[id]) return eg_fail(err, "%s: out of memory", src);
    tok->tok_len[id] = (uint32_t)n;
    return 0;
}

static int check_bpe_options(const cJSON *model, const char *src, EgError *err) {
    const char *type = type_of(model);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_IsArray(merges))
        return eg_fail(err, "%s: model type '%s' unsupported (only BPE)", src,
                       type ? type : "(none)");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!is_null(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return eg_fail(err, "%s: BPE dropout unsupported", src);
    static const char *const unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(model, unsupported[i]);
        if (!is_null(j) && !(cJSON_IsString(j) && j->valuestring[0] == 0))
            return eg_fail(err, "%s: BPE %s unsupported", src, unsupported[i]);
    }
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(model, "vocab")))
        return eg_fail(err, "%s: model.vocab missing or not an object", src);
    if (!cJSON_IsArray(merges)) return eg_fail(err, "%s: model.merges missing", src);
    return 0;
}

static int load_merges(EgTokenizer *tok, const cJSON *merges, const char *src, EgError *err) {
    size_t n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) n++;
    if (eg_mergemap_init(&tok->merges, n)) return eg_fail(err, "%s: out of memory", src);
    EgBuf joined = {0};
    uint32_t rank = 0;
    int rc = 0;
    cJSON_ArrayForEach(m, merges) {
        const char *a, *b;
        size_t a_len, b_len;
        if (cJSON_IsString(m)) {
            /* "a b": exactly one space, as HF's convert_merges_to_hashmap requires */
            const char *sp = strchr(m->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = eg_fail(err, "%s: merge #%u \"%s\" is not two tokens", src, rank,
                             m->valuestring);
                break;
            }
            a = m->valuestring;
            a_len = (size_t)(sp - a);
            b = sp + 1;
            b_len = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            a_len = strlen(a);
            b = m->child->next->valuestring;
            b_len = strlen(b);
        } else {
            rc = eg_fail(err, "%s: merge #%u is neither \"a b\" nor [\"a\", \"b\"]", src, rank);
            break;
        }
        joined.len = 0;
        if (eg_buf_append(&joined, a, a_len) || eg_buf_append(&joined, b, b_len)) {
            rc = eg_fail(err, "%s: out of memory", src);
            break;
        }
        int32_t ia = eg_strmap_get(&tok->model_map, tok, a, a_len);
        int32_t ib = eg_strmap_get(&tok->model_map, tok, b, b_len);
        int32_t in = eg_strmap_get(&tok->model_map, tok, joined.data, joined.len);
        if (ia < 0 || ib < 0 || in < 0) {
            rc = eg_fail(err, "%s: merge #%u (\"%.*s\", \"%.*s\"): token \"%.*s\" not in vocab",
                         src, rank, (int)a_len, a, (int)b_len, b,
                         ia < 0   ? (int)a_len
                         : ib < 0 ? (int)b_len
                                  : (int)joined.len,
                         ia < 0   ? a
                         : ib < 0 ? b
                                  : joined.data);
            break;
        }
        eg_mergemap_put(&tok->merges, ia, ib, rank, in);
        rank++;
    }
    free(joined.data);
    return rc;
}

/* ------------------------------------------------------------------ normalizer */

static int add_norm_step(EgTokenizer *tok, const cJSON *n, const char *src, EgError *err) {
    const char *type = type_of(n);
    EgNormStep step = {0};
    if (type && strcmp(type, "Prepend") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(p)) return eg_fail(err, "%s: Prepend normalizer without prepend", src);
        step.kind = EG_NORM_PREPEND;
        step.a_len = strlen(p->valuestring);
        step.a = dup_bytes(p->valuestring, step.a_len);
    } else if (type && strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(str))
            return eg_fail(err,
                           "%s: Replace normalizer with a non-String (Regex) pattern "
                           "unsupported",
                           src);
        if (!cJSON_IsString(content) || str->valuestring[0] == 0)
            return eg_fail(err, "%s: Replace normalizer needs a pattern and a content", src);
        step.kind = EG_NORM_REPLACE;
        step.a_len = strlen(str->valuestring);
        step.a = dup_bytes(str->valuestring, step.a_len);
        step.b_len = strlen(content->valuestring);
        step.b = dup_bytes(content->valuestring, step.b_len);
        if (!step.b) {
            free(step.a);
            step.a = NULL;
        }
    } else {
        return eg_fail(err,
                       "%s: normalizer type '%s' unsupported (only Prepend, Replace, "
                       "Sequence)",
                       src, type ? type : "(none)");
    }
    if (!step.a) return eg_fail(err, "%s: out of memory", src);
    EgNormStep *grown = realloc(tok->norm, (tok->n_norm + 1) * sizeof *grown);
    if (!grown) {
        free(step.a);
        free(step.b);
        return eg_fail(err, "%s: out of memory", src);
    }
    tok->norm = grown;
    tok->norm[tok->n_norm++] = step;
    return 0;
}

static int load_normalizer(EgTokenizer *tok, const cJSON *n, const char *src, EgError *err) {
    if (is_null(n)) return 0;
    const char *type = type_of(n);
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return eg_fail(err, "%s: Sequence normalizer without list", src);
        const cJSON *item;
        cJSON_ArrayForEach(item, list) {
            if (add_norm_step(tok, item, src, err)) return -1;
        }
        return 0;
    }
    return add_norm_step(tok, n, src, err);
}

/* ------------------------------------------------------------------ added tokens */

static int load_added_tokens(EgTokenizer *tok, const cJSON *list, const char *src, EgError *err) {
    if (is_null(list)) return 0;
    size_t n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, list) n++;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return eg_fail(err, "%s: out of memory", src);
    cJSON_ArrayForEach(t, list) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(t, "content");
        long file_id = get_index(cJSON_GetObjectItemCaseSensitive(t, "id"), MAX_IDS);
        if (!cJSON_IsString(content) || file_id < 0)
            return eg_fail(err, "%s: added_tokens entry without content or valid id", src);
        const char *s = content->valuestring;
        size_t len = strlen(s);
        if (len == 0) continue; /* HF ignores empty added tokens */
        if (eg_strmap_get(&tok->added_map, tok, s, len) >= 0) continue; /* duplicate content */
        /* HF re-adds these on load: a content already in the model vocab keeps the model's id */
        int32_t id = eg_strmap_get(&tok->model_map, tok, s, len);
        if (id < 0) {
            id = (int32_t)file_id;
            if (set_token(tok, id, s, err, src)) return -1;
        }
        EgAddedToken *a = &tok->added[tok->n_added++];
        a->id = id;
        a->content = dup_bytes(s, len);
        if (!a->content) return eg_fail(err, "%s: out of memory", src);
        a->special = (uint8_t)get_bool(t, "special", 0);
        a->lstrip = (uint8_t)get_bool(t, "lstrip", 0);
        a->rstrip = (uint8_t)get_bool(t, "rstrip", 0);
        a->single_word = (uint8_t)get_bool(t, "single_word", 0);
        a->normalized = (uint8_t)get_bool(t, "normalized", 1); /* serde default */
        tok->is_special[id] = a->special;
        eg_strmap_put(&tok->added_map, tok, id);
    }
    return 0;
}

typedef struct PatKey {
    unsigned char first;
    uint8_t plain; /* 0 for special tokens: HF's matcher lists them first, so equal patterns
                    * (possible after normalization) resolve to the special one */
    size_t len;
    int32_t index;
} PatKey;

static int cmp_pat(const void *pa, const void *pb) {
    const PatKey *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    if (a->plain != b->plain) return a->plain < b->plain ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static int build_match_set(EgTokenizer *tok, EgMatchSet *set, int normalized) {
    size_t n = 0;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized && tok->added[i].pat_len) n++;
    set->order = malloc((n ? n : 1) * sizeof *set->order);
    PatKey *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!set->order || !keys) {
        free(keys);
        return -1;
    }
    n = 0;
    for (size_t i = 0; i < tok->n_added; i++) {
        const EgAddedToken *a = &tok->added[i];
        if (a->normalized == normalized && a->pat_len)
            keys[n++] = (PatKey){(unsigned char)a->pattern[0], !a->special, a->pat_len, (int32_t)i};
    }
    qsort(keys, n, sizeof *keys, cmp_pat);
    for (size_t i = 0; i < n; i++)
        set->order[i] = keys[i].index;
    free(keys);
    size_t k = 0;
    for (int c = 0; c <= 256; c++) {
        while (k < n && (unsigned char)tok->added[set->order[k]].pattern[0] < c)
            k++;
        set->start[c] = (uint32_t)k;
    }
    set->start[256] = (uint32_t)n;
    return 0;
}

static int build_patterns(EgTokenizer *tok, const char *src, EgError *err) {
    EgBuf b = {0};
    for (size_t i = 0; i < tok->n_added; i++) {
        EgAddedToken *a = &tok->added[i];
        size_t len = strlen(a->content);
        if (a->normalized) {
            /* HF matches normalized tokens by their normalized form (e.g. "▁" prepended) */
            if (eg_tok_normalize(tok, a->content, len, &b)) break;
            a->pattern = eg_buf_take(&b);
            a->pat_len = a->pattern ? strlen(a->pattern) : 0;
        } else {
            a->pattern = dup_bytes(a->content, len);
            a->pat_len = len;
        }
        if (!a->pattern) break;
    }
    free(b.data);
    for (size_t i = 0; i < tok->n_added; i++)
        if (!tok->added[i].pattern) return eg_fail(err, "%s: out of memory", src);
    if (build_match_set(tok, &tok->raw_set, 0) || build_match_set(tok, &tok->norm_set, 1))
        return eg_fail(err, "%s: out of memory", src);
    return 0;
}

/* ------------------------------------------------------------------ decoder */

static int add_replace(EgTokenizer *tok, const cJSON *d, const char *src, EgError *err) {
    const cJSON *str =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(d, "pattern"), "String");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
    if (!cJSON_IsString(str))
        return eg_fail(err, "%s: Replace decoder with a non-String (Regex) pattern unsupported",
                       src);
    if (!cJSON_IsString(content) || str->valuestring[0] == 0)
        return eg_fail(err, "%s: Replace decoder needs a pattern and a content", src);
    EgReplace *grown = realloc(tok->repl, (tok->n_repl + 1) * sizeof *grown);
    if (!grown) return eg_fail(err, "%s: out of memory", src);
    tok->repl = grown;
    EgReplace *r = &tok->repl[tok->n_repl];
    r->from_len = strlen(str->valuestring);
    r->to_len = strlen(content->valuestring);
    r->from = dup_bytes(str->valuestring, r->from_len);
    r->to = dup_bytes(content->valuestring, r->to_len);
    tok->n_repl++;
    if (!r->from || !r->to) return eg_fail(err, "%s: out of memory", src);
    return 0;
}

static int load_decoder(EgTokenizer *tok, const cJSON *dec, const char *src, EgError *err) {
    if (is_null(dec)) return eg_fail(err, "%s: decoder null unsupported", src);
    const cJSON *list = NULL, *single = dec;
    const char *type = type_of(dec);
    if (type && strcmp(type, "ByteLevel") == 0) {
        /* its add_prefix_space / trim_offsets / use_regex options do not act on decoding */
        tok->dec_byte_level = 1;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        list = cJSON_GetObjectItemCaseSensitive(dec, "decoders");
        if (!cJSON_IsArray(list)) return eg_fail(err, "%s: Sequence decoder without list", src);
        single = list->child;
    }
    /* stage: 0 = Replace allowed, 1 = after ByteFallback, 2 = after Fuse, 3 = after Strip */
    int stage = 0;
    for (const cJSON *d = single; d; d = list ? d->next : NULL) {
        const char *t = type_of(d);
        if (!t) return eg_fail(err, "%s: decoder without type", src);
        if (strcmp(t, "Replace") == 0) {
            if (stage != 0)
                return eg_fail(err, "%s: Replace decoder after ByteFallback/Fuse unsupported", src);
            if (add_replace(tok, d, src, err)) return -1;
        } else if (strcmp(t, "ByteFallback") == 0) {
            if (stage != 0) return eg_fail(err, "%s: ByteFallback decoder out of place", src);
            tok->dec_byte_fallback = 1;
            stage = 1;
        } else if (strcmp(t, "Fuse") == 0) {
            if (stage > 1) return eg_fail(err, "%s: Fuse decoder out of place", src);
            stage = 2;
        } else if (strcmp(t, "Strip") == 0) {
            /* before Fuse, Strip would cut every token; after it, only the whole text */
            if (stage != 2) return eg_fail(err, "%s: Strip decoder before Fuse unsupported", src);
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
            long start = get_index(cJSON_GetObjectItemCaseSensitive(d, "start"), 1 << 20);
            long stop = get_index(cJSON_GetObjectItemCaseSensitive(d, "stop"), 1 << 20);
            size_t clen = cJSON_IsString(c) ? strlen(c->valuestring) : 0;
            if (clen == 0 || clen > 4 || eg_utf8_valid_prefix(c->valuestring, clen) != clen ||
                eg_utf8_seq_len((unsigned char)c->valuestring[0]) != clen || start < 0)
                return eg_fail(err, "%s: Strip decoder needs one content char and a start", src);
            if (stop != 0) return eg_fail(err, "%s: Strip decoder with stop > 0 unsupported", src);
            memcpy(tok->strip_char, c->valuestring, clen + 1);
            tok->strip_char_len = clen;
            tok->strip_start = (int)start;
            stage = 3;
        } else {
            return eg_fail(err,
                           "%s: decoder type '%s' unsupported (only ByteLevel alone, or Replace, "
                           "ByteFallback, Fuse, Strip)",
                           src, t);
        }
    }
    return 0;
}

/* "<0xNN>" -> NN, as HF's ByteFallback decoder parses it; -1 otherwise. */
static int parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* What HF's ByteLevel decoder makes of one token: the byte each character stands for; a token
 * with any other character (an added token such as "<|image|> " with a space) keeps its own
 * UTF-8 bytes. 0 / -1 (out of memory). */
static int byte_level_bytes(const char *s, size_t len, char **out, uint32_t *out_len) {
    char *b = malloc(len + 1);
    if (!b) return -1;
    size_t n = 0, i = 0;
    while (i < len) {
        size_t cl = eg_utf8_seq_len((unsigned char)s[i]);
        if (cl > len - i || eg_utf8_valid_prefix(s + i, cl) != cl) break;
        int byte = eg_byte_level_from_cp(eg_utf8_decode(s + i, &cl));
        if (byte < 0) break;
        b[n++] = (char)byte;
        i += cl;
    }
    if (i < len) { /* not all ByteLevel characters */
        memcpy(b, s, len);
        n = len;
    }
    b[n] = 0;
    *out = b;
    *out_len = (uint32_t)n;
    return 0;
}

/* Precomputes, per id, what the decoder chain makes of it before Fuse. */
static int precompute_decoded(EgTokenizer *tok, const char *src, EgError *err) {
    size_t n = (size_t)tok->n_ids;
    tok->dec_byte = malloc(n * sizeof *tok->dec_byte);
    tok->dec_str = calloc(n, sizeof *tok->dec_str);
    tok->dec_len = calloc(n, sizeof *tok->dec_len);
    if (!tok->dec_byte || !tok->dec_str || !tok->dec_len)
        return eg_fail(err, "%s: out of memory", src);
    EgBuf cur = {0}, next = {0};
    int rc = 0;
    for (size_t id = 0; id < n && rc == 0; id++) {
        tok->dec_byte[id] = -1;
        if (!tok->tok_str[id]) continue;
        if (tok->dec_byte_level) {
            rc = byte_level_bytes(tok->tok_str[id], tok->tok_len[id], &tok->dec_str[id],
                                  &tok->dec_len[id]);
            continue;
        }
        cur.len = 0;
        if (eg_buf_append(&cur, tok->tok_str[id], tok->tok_len[id])) rc = -1;
        for (size_t r = 0; r < tok->n_repl && rc == 0; r++) {
            const EgReplace *rp = &tok->repl[r];
            next.len = 0;
            size_t i = 0;
            while (i < cur.len && rc == 0) {
                if (cur.len - i >= rp->from_len &&
                    memcmp(cur.data + i, rp->from, rp->from_len) == 0) {
                    rc = eg_buf_append(&next, rp->to, rp->to_len);
                    i += rp->from_len;
                } else {
                    rc = eg_buf_append(&next, cur.data + i, 1);
                    i++;
                }
            }
            EgBuf t = cur;
            cur = next;
            next = t;
        }
        if (rc) break;
        int byte = tok->dec_byte_fallback ? parse_byte_token(cur.data, cur.len) : -1;
        if (byte >= 0) {
            tok->dec_byte[id] = (int16_t)byte;
        } else {
            tok->dec_str[id] = dup_bytes(cur.data ? cur.data : "", cur.len);
            tok->dec_len[id] = (uint32_t)cur.len;
            if (!tok->dec_str[id]) rc = -1;
        }
    }
    free(cur.data);
    free(next.data);
    return rc ? eg_fail(err, "%s: out of memory", src) : 0;
}

/* ------------------------------------------------------------------ post-processor, specials */

/* Sets *bos_id to the special token the single template puts before $A (-1 if none); fails on
 * any other post-processor shape. */
static int load_post_processor(const cJSON *pp, int32_t *bos_id, const EgTokenizer *tok,
                               const char *src, EgError *err) {
    *bos_id = -1;
    if (is_null(pp)) return 0;
    const char *type = type_of(pp);
    if (type && strcmp(type, "Sequence") == 0) {
        /* Llama 3: [ByteLevel, TemplateProcessing]. A ByteLevel post-processor only trims
         * offsets, which Egret does not report, so it is skipped; one template at most. */
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors"), *p, *tp = NULL;
        if (!cJSON_IsArray(list))
            return eg_fail(err, "%s: Sequence post_processor without processors", src);
        cJSON_ArrayForEach(p, list) {
            const char *t = type_of(p);
            if (t && strcmp(t, "ByteLevel") == 0) continue;
            if (tp || !t || strcmp(t, "TemplateProcessing") != 0)
                return eg_fail(err,
                               "%s: post_processor Sequence other than ByteLevel and one "
                               "TemplateProcessing unsupported",
                               src);
            tp = p;
        }
        return tp ? load_post_processor(tp, bos_id, tok, src, err) : 0;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return eg_fail(err, "%s: post_processor type '%s' unsupported (only TemplateProcessing)",
                       src, type ? type : "(none)");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const cJSON *seq = special ? (first ? first->next : NULL) : first;
    const cJSON *seq_obj = cJSON_GetObjectItemCaseSensitive(seq, "Sequence");
    const cJSON *seq_id = cJSON_GetObjectItemCaseSensitive(seq_obj, "id");
    if (!seq_obj || !cJSON_IsString(seq_id) || strcmp(seq_id->valuestring, "A") != 0 || seq->next)
        return eg_fail(err,
                       "%s: TemplateProcessing single template other than '[<bos>] $A' "
                       "unsupported",
                       src);
    if (!special) return 0;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(special, "id");
    const cJSON *entry =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"),
                                         cJSON_IsString(name) ? name->valuestring : "");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(entry, "ids");
    long id =
        cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 ? get_index(ids->child, tok->n_ids) : -1;
    if (id < 0 || !tok->tok_str[id])
        return eg_fail(err, "%s: TemplateProcessing special token is not one known id", src);
    *bos_id = (int32_t)id;
    return 0;
}

/* tokenizer_config.json writes tokens as "name" or {"content": "name", ...}. */
static int32_t config_token(const EgTokenizer *tok, const cJSON *config, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(config, key);
    if (cJSON_IsObject(j)) j = cJSON_GetObjectItemCaseSensitive(j, "content");
    return cJSON_IsString(j) ? eg_tokenizer_find(tok, j->valuestring) : -1;
}

static int32_t first_found(int32_t a, int32_t b) {
    return a >= 0 ? a : b;
}

/* ------------------------------------------------------------------ assembly */

static EgTokenizer *build(const cJSON *root, const cJSON *config, const char *src, EgError *err) {
    if (!cJSON_IsObject(root)) {
        eg_fail(err, "%s: not a JSON object", src);
        return NULL;
    }
    if (!is_null(cJSON_GetObjectItemCaseSensitive(root, "truncation"))) {
        eg_fail(err, "%s: truncation unsupported (must be null)", src);
        return NULL;
    }
    if (!is_null(cJSON_GetObjectItemCaseSensitive(root, "padding"))) {
        eg_fail(err, "%s: padding unsupported (must be null)", src);
        return NULL;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        eg_fail(err, "%s: no model", src);
        return NULL;
    }
    if (check_bpe_options(model, src, err)) return NULL;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!is_null(added) && !cJSON_IsArray(added)) {
        eg_fail(err, "%s: added_tokens is not a list", src);
        return NULL;
    }

    /* the id range covers the model vocab and the added tokens */
    long max_id = -1;
    size_t n_vocab = 0, n_added = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        long id = get_index(e, MAX_IDS);
        if (id < 0) {
            eg_fail(err, "%s: vocab entry \"%s\" has no valid id", src, e->string);
            return NULL;
        }
        if (id > max_id) max_id = id;
        n_vocab++;
    }
    cJSON_ArrayForEach(e, added) {
        long id = get_index(cJSON_GetObjectItemCaseSensitive(e, "id"), MAX_IDS);
        if (id > max_id) max_id = id;
        n_added++;
    }

    EgTokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        eg_fail(err, "%s: out of memory", src);
        return NULL;
    }
    tok->n_ids = (int32_t)(max_id + 1);
    size_t n = (size_t)tok->n_ids + 1;
    tok->tok_str = calloc(n, sizeof *tok->tok_str);
    tok->tok_len = calloc(n, sizeof *tok->tok_len);
    tok->is_special = calloc(n, 1);
    if (!tok->tok_str || !tok->tok_len || !tok->is_special ||
        eg_strmap_init(&tok->model_map, n_vocab) || eg_strmap_init(&tok->added_map, n_added)) {
        eg_fail(err, "%s: out of memory", src);
        goto fail;
    }
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = (int32_t)get_index(e, MAX_IDS);
        if (set_token(tok, id, e->string, err, src)) goto fail;
        eg_strmap_put(&tok->model_map, tok, id);
    }

    tok->byte_fallback = get_bool(model, "byte_fallback", 0);
    tok->fuse_unk = get_bool(model, "fuse_unk", 0);
    tok->ignore_merges = get_bool(model, "ignore_merges", 0);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    tok->unk_model_id = -1;
    if (cJSON_IsString(unk)) {
        tok->unk_token = dup_bytes(unk->valuestring, strlen(unk->valuestring));
        if (!tok->unk_token) {
            eg_fail(err, "%s: out of memory", src);
            goto fail;
        }
        tok->unk_model_id =
            eg_strmap_get(&tok->model_map, tok, unk->valuestring, strlen(unk->valuestring));
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_ids[b] = eg_strmap_get(&tok->model_map, tok, name, 6);
    }
    if (load_merges(tok, cJSON_GetObjectItemCaseSensitive(model, "merges"), src, err)) goto fail;
    if (load_normalizer(tok, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), src, err))
        goto fail;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!is_null(pre) && eg_pretok_load(tok, pre, src, err)) goto fail;
    if (load_added_tokens(tok, added, src, err)) goto fail;
    /* ids the file named but that ended up unused (an added token that already was in the model
     * vocab keeps the model's id) do not count towards the vocab size */
    while (tok->n_ids > 0 && !tok->tok_str[tok->n_ids - 1])
        tok->n_ids--;
    if (build_patterns(tok, src, err)) goto fail;
    if (load_decoder(tok, cJSON_GetObjectItemCaseSensitive(root, "decoder"), src, err)) goto fail;
    /* byte-level vocabularies are spelt in ByteLevel characters: the two go together */
    if (!tok->pretok != !tok->dec_byte_level) {
        eg_fail(err, "%s: a ByteLevel %s without the matching ByteLevel %s unsupported", src,
                tok->pretok ? "pre_tokenizer" : "decoder",
                tok->pretok ? "decoder" : "pre_tokenizer");
        goto fail;
    }
    if (tok->pretok && tok->byte_fallback) {
        eg_fail(err, "%s: byte_fallback with a ByteLevel pre_tokenizer unsupported", src);
        goto fail;
    }
    if (precompute_decoded(tok, src, err)) goto fail;

    int32_t template_bos;
    if (load_post_processor(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &template_bos,
                            tok, src, err))
        goto fail;
    tok->template_bos = template_bos;
    tok->bos = first_found(template_bos, first_found(config_token(tok, config, "bos_token"),
                                                     eg_tokenizer_find(tok, "<s>")));
    tok->eos = first_found(config_token(tok, config, "eos_token"), eg_tokenizer_find(tok, "</s>"));
    tok->unk = first_found(tok->unk_model_id, config_token(tok, config, "unk_token"));
    tok->pad = config_token(tok, config, "pad_token");
    return tok;
fail:
    eg_tokenizer_free(tok);
    return NULL;
}

static EgTokenizer *load_buffers(const char *json, size_t len, const char *config_json,
                                 size_t config_len, const char *src, EgError *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
        eg_fail(err, "%s: invalid JSON (parse error at byte %zu of %zu)", src, at, len);
        return NULL;
    }
    cJSON *config = NULL;
    if (config_json) {
        config = cJSON_ParseWithLength(config_json, config_len);
        if (!config) {
            cJSON_Delete(root);
            eg_fail(err, "%s: tokenizer_config.json beside it is not valid JSON", src);
            return NULL;
        }
    }
    EgTokenizer *tok = build(root, config, src, err);
    cJSON_Delete(root);
    cJSON_Delete(config);
    return tok;
}

EgTokenizer *eg_tokenizer_load_from_memory(const char *json, size_t len, const char *source_name,
                                           EgError *err) {
    return load_buffers(json, len, NULL, 0, source_name ? source_name : "tokenizer.json", err);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = 0;
                *len = (size_t)n;
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

EgTokenizer *eg_tokenizer_load(const char *path, EgError *err) {
    size_t len = 0, config_len = 0;
    char *json = read_file(path, &len);
    if (!json) {
        eg_fail(err, "%s: cannot read file", path);
        return NULL;
    }
    /* tokenizer_config.json in the same folder, if any */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    char *config_path = malloc(dir_len + sizeof "tokenizer_config.json");
    char *config = NULL;
    if (config_path) {
        memcpy(config_path, path, dir_len);
        memcpy(config_path + dir_len, "tokenizer_config.json", sizeof "tokenizer_config.json");
        config = read_file(config_path, &config_len);
        free(config_path);
    }
    EgTokenizer *tok = load_buffers(json, len, config, config_len, path, err);
    free(json);
    free(config);
    return tok;
}

void eg_tokenizer_free(EgTokenizer *tok) {
    if (!tok) return;
    for (int32_t i = 0; i < tok->n_ids; i++) {
        if (tok->tok_str) free(tok->tok_str[i]);
        if (tok->dec_str) free(tok->dec_str[i]);
    }
    free(tok->tok_str);
    free(tok->tok_len);
    free(tok->is_special);
    free(tok->dec_byte);
    free(tok->dec_str);
    free(tok->dec_len);
    eg_strmap_free(&tok->model_map);
    eg_strmap_free(&tok->added_map);
    eg_mergemap_free(&tok->merges);
    eg_pretok_free(tok->pretok);
    free(tok->unk_token);
    for (size_t i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].a);
        free(tok->norm[i].b);
    }
    free(tok->norm);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].pattern);
    }
    free(tok->added);
    free(tok->raw_set.order);
    free(tok->norm_set.order);
    for (size_t i = 0; i < tok->n_repl; i++) {
        free(tok->repl[i].from);
        free(tok->repl[i].to);
    }
    free(tok->repl);
    free(tok);
}

/* ------------------------------------------------------------------ accessors */

int32_t eg_tokenizer_find(const EgTokenizer *tok, const char *token) {
    size_t len = strlen(token);
    int32_t id = eg_strmap_get(&tok->added_map, tok, token, len);
    return id >= 0 ? id : eg_strmap_get(&tok->model_map, tok, token, len);
}

const char *eg_tokenizer_token(const EgTokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids ? tok->tok_str[id] : NULL;
}

int eg_tokenizer_is_special(const EgTokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && tok->is_special[id];
}

int eg_tokenizer_vocab_size(const EgTokenizer *tok) {
    return tok->n_ids;
}

int32_t eg_tokenizer_bos(const EgTokenizer *tok) {
    return tok->bos;
}
int32_t eg_tokenizer_eos(const EgTokenizer *tok) {
    return tok->eos;
}
int32_t eg_tokenizer_unk(const EgTokenizer *tok) {
    return tok->unk;
}
int32_t eg_tokenizer_pad(const EgTokenizer *tok) {
    return tok->pad;
}

int32_t eg_tokenizer_template_bos(const EgTokenizer *tok) {
    return tok->template_bos;
}
