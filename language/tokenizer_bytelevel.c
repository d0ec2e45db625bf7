/* Byte-level BPE (GPT-2 / Llama 3 kind): the Split pre-tokenizer's regex (PCRE2 in UTF + UCP
 * mode, JIT-compiled where available), the ByteLevel byte <-> character map, and reading the
 * pre_tokenizer section of tokenizer.json. HF `tokenizers` runs the Split regex with Oniguruma;
 * PCRE2 gives the same pieces on Llama 3's pattern (both backtrack and take the leftmost
 * alternative) except for `\s`: PCRE2 10.42 counts U+180E (MONGOLIAN VOWEL SEPARATOR, a format
 * character since Unicode 6.3) as white space, Oniguruma does not. The pattern is rewritten so
 * `\s` / `\S` mean Oniguruma's set (see translate()). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

struct EgPreTokenizer {
    pcre2_code *re;
};

/* ------------------------------------------------------------------ ByteLevel map */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes keep their code point; the other 68
 * (0x00-0x20, 0x7F-0xA0, 0xAD), in increasing order, become U+0100..U+0143. */
static uint32_t byte_to_cp(unsigned char b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 0x100u + b;
    if (b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    return 0x100u + 67; /* 0xAD */
}

int eg_byte_level_from_cp(uint32_t cp) {
    if (cp < 0x100) return byte_to_cp((unsigned char)cp) == cp ? (int)cp : -1;
    if (cp > 0x143) return -1;
    uint32_t i = cp - 0x100;
    return i <= 32 ? (int)i : i <= 66 ? (int)(0x7F + i - 33) : 0xAD;
}

int eg_byte_level_append(EgBuf *out, const char *s, size_t n) {
    if (eg_buf_reserve(out, 2 * n)) return -1;
    for (size_t i = 0; i < n; i++)
        out->len += eg_utf8_encode(byte_to_cp((unsigned char)s[i]), out->data + out->len);
    out->data[out->len] = 0;
    return 0;
}

/* ------------------------------------------------------------------ Split regex */

/* Oniguruma's \s (what HF matches) is exactly [\t\n\v\f\r\x{85}\p{Z}] (checked over the whole BMP
 * against tokenizers 0.23; the astral planes hold no white space). */
#define ONIG_SPACE "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}"
/* Letters and numbers that tokenizers 0.23's Oniguruma (Unicode 16) has and PCRE2 10.42
 * (Unicode 14) lacks: everything assigned in Unicode 15 and 16, from a comparison of the two over
 * every code point. PCRE2 has none that Oniguruma lacks. With a newer PCRE2 they are redundant. */
static const char NEW_LETTERS[] =
    "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}"
    "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}"
    "\\x{1123f}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}"
    "\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}\\x{11bc0}-\\x{11be0}"
    "\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}\\x{1342f}"
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}"
    "\\x{16d40}-\\x{16d6c}\\x{18cff}\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}"
    "\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}"
    "\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}";
static const char NEW_NUMBERS[] = "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}"
                                  "\\x{11f50}-\\x{11f59}\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}"
                                  "\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}\\x{1e4f0}-\\x{1e4f9}"
                                  "\\x{1e5f1}-\\x{1e5fa}";

/* The pattern HF runs, spelt for PCRE2. Outside a character class `\s` becomes [ONIG_SPACE] and
 * `\S` its complement, `\p{L}` / `\p{N}` gain the newer code points in a class; inside a class
 * the same members are added in place. A `\S` inside a class has no such simple rewrite and is
 * refused, as are POSIX classes. */
static int translate(const char *pat, size_t len, EgBuf *out) {
    int in_class = 0, rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char e = pat[++i];
            if (e == 's')
                rc = in_class ? eg_buf_append(out, ONIG_SPACE, strlen(ONIG_SPACE))
                              : eg_buf_append(out, "[" ONIG_SPACE "]", strlen(ONIG_SPACE) + 2);
            else if (e == 'S' && in_class)
                return -2;
            else if (e == 'S')
                rc = eg_buf_append(out, "[^" ONIG_SPACE "]", strlen(ONIG_SPACE) + 3);
            else if (e == 'p' && len - i >= 4 &&
                     (memcmp(pat + i + 1, "{L}", 3) == 0 || memcmp(pat + i + 1, "{N}", 3) == 0)) {
                const char *extra = pat[i + 2] == 'L' ? NEW_LETTERS : NEW_NUMBERS;
                rc = (!in_class && eg_buf_append(out, "[", 1)) ||
                     eg_buf_append(out, pat + i - 1, 5) ||
                     eg_buf_append(out, extra, strlen(extra)) ||
                     (!in_class && eg_buf_append(out, "]", 1));
                i += 3;
            } else
                rc = eg_buf_append(out, pat + i - 1, 2);
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            rc = eg_buf_append(out, pat + i, 1);
            /* a ']' right after '[' or '[^' is a literal, not the end of the class */
            if (rc == 0 && i + 1 < len && pat[i + 1] == '^') rc = eg_buf_append(out, pat + ++i, 1);
            if (rc == 0 && i + 1 < len && pat[i + 1] == ']') rc = eg_buf_append(out, pat + ++i, 1);
            continue;
        }
        if (c == '[' && in_class && i + 1 < len && pat[i + 1] == ':') {
            return -2; /* POSIX classes: not needed by any known tokenizer, so not translated */
        }
        if (c == ']' && in_class) in_class = 0;
        rc = eg_buf_append(out, pat + i, 1);
    }
    return rc ? -1 : in_class ? -2 : 0;
}

EgPreTokenizer *eg_pretok_new(const char *pattern, const char *src, EgError *err) {
    EgBuf pat = {0};
    int t = translate(pattern, strlen(pattern), &pat);
    if (t) {
        free(pat.data);
        eg_fail(err,
                t == -1 ? "%s: out of memory"
                        : "%s: Split regex uses a construct this tokenizer cannot translate "
                          "(\\S or [: inside a character class, or an unclosed class)",
                src);
        return NULL;
    }
    int code;
    PCRE2_SIZE at;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat.data, pat.len, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    free(pat.data);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        eg_fail(err, "%s: Split regex does not compile in PCRE2: %s (near offset %zu)", src,
                (const char *)msg, (size_t)at);
        return NULL;
    }
    /* JIT is an optimisation only: without it (platform or SELinux refusing executable memory)
     * pcre2_match interprets the same pattern with the same results. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    EgPreTokenizer *p = calloc(1, sizeof *p);
    if (!p) {
        pcre2_code_free(re);
        eg_fail(err, "%s: out of memory", src);
        return NULL;
    }
    p->re = re;
    return p;
}

void eg_pretok_free(EgPreTokenizer *p) {
    if (!p) return;
    pcre2_code_free(p->re);
    free(p);
}

/* HF's Split with behaviour Isolated: every match is a piece and so is every gap between
 * matches. The text is valid UTF-8 (checked by the caller), so PCRE2's own check is skipped. */
int eg_pretok_split(const EgPreTokenizer *p, const char *s, size_t len,
                    int (*piece)(void *ctx, size_t start, size_t end), void *ctx, EgError *err) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!md) return eg_fail(err, "out of memory");
    size_t pos = 0, gap = 0;
    int rc = 0;
    while (pos < len && rc == 0) {
        int m = pcre2_match(p->re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its frames on the heap */
            m = pcre2_match(p->re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                            NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = eg_fail(err, "pre-tokenizer regex failed at byte %zu: %s", pos, (const char *)msg);
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0], end = ov[1];
        if (start > gap) rc = piece(ctx, gap, start);
        if (rc == 0 && end > start) rc = piece(ctx, start, end);
        gap = end;
        /* an empty match moves on by one character, as every regex iterator does */
        if (end > start)
            pos = end;
        else if (end < len)
            pos = end + eg_utf8_seq_len((unsigned char)s[end]);
        else
            break;
    }
    if (rc == 0 && gap < len) rc = piece(ctx, gap, len);
    pcre2_match_data_free(md);
    return rc;
}

/* ------------------------------------------------------------------ tokenizer.json */

static const char *type_of(const cJSON *j) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int is_true(const cJSON *obj, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* The one shape byte-level BPE files (Llama 3, Qwen 2, ...) use: Sequence[Split(Regex, Isolated,
 * invert false), ByteLevel(add_prefix_space false, use_regex false)]. ByteLevel's trim_offsets
 * changes offsets only. Anything else is refused by name. */
int eg_pretok_load(EgTokenizer *tok, const cJSON *pre, const char *src, EgError *err) {
    const char *type = type_of(pre);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    const cJSON *split =
        type && strcmp(type, "Sequence") == 0 && cJSON_IsArray(list) ? list->child : NULL;
    const cJSON *bl = split ? split->next : NULL;
    const char *st = type_of(split), *bt = type_of(bl);
    if (!st || strcmp(st, "Split") != 0 || !bt || strcmp(bt, "ByteLevel") != 0 || bl->next)
        return eg_fail(err,
                       "%s: pre_tokenizer '%s' unsupported (only null, or Sequence[Split, "
                       "ByteLevel] as in Llama 3)",
                       src, type ? type : "(none)");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
    const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(split, "behavior");
    if (!cJSON_IsString(re))
        return eg_fail(err, "%s: Split pre-tokenizer without a Regex pattern unsupported", src);
    if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") != 0 ||
        is_true(split, "invert"))
        return eg_fail(err, "%s: Split pre-tokenizer other than Isolated, invert false unsupported",
                       src);
    if (is_true(bl, "add_prefix_space") || is_true(bl, "use_regex"))
        return eg_fail(err,
                       "%s: ByteLevel pre-tokenizer with add_prefix_space or use_regex "
                       "unsupported",
                       src);
    tok->pretok = eg_pretok_new(re->valuestring, src, err);
    return tok->pretok ? 0 : -1;
}
