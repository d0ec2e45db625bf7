/* The Llama 3 byte-level BPE tokenizer against HF: every case of tests/data/mllama/tokenizer/
 * cases.txt (made by refgen/mllama/make_tokenizer_goldens.py) - ids with BOS and specials parsed,
 * ids with specials as plain text, decoded text with and without specials, decodes of random
 * ids - each decode also streamed id by id (equal to the full decode, never half a character);
 * then invalid UTF-8 refused before tokenizing, specials in plain text, load errors for the
 * byte-level shapes not supported, and a 1 MB input. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "language/tokenizer.h"
#include "language/utf8.h"
#include "tests/test_util.h"

/* REQUIRE for void functions */
#define REQUIRE_VOID(cond)                                                                         \
    do {                                                                                           \
        int ok_ = (cond) ? 1 : 0;                                                                  \
        TEST_CHECK_VALUE(ok_, #cond, "cannot go on");                                              \
        if (!ok_) return;                                                                          \
    } while (0)

#define N_REGULAR 4000 /* the goldens' layout: Llama 3's 128000 + k is N_REGULAR + k here */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ cases.txt */

typedef struct Bytes {
    char *s;
    size_t n;
} Bytes;

typedef struct Ids {
    int32_t *v;
    size_t n;
} Ids;

static Bytes parse_hex(const char *p) {
    size_t n = strlen(p) / 2;
    Bytes b = {malloc(n + 1), n};
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(p + 2 * i, "%2x", &v);
        b.s[i] = (char)v;
    }
    b.s[n] = 0;
    return b;
}

static Ids parse_ids(const char *p) {
    Ids ids = {malloc((strlen(p) / 2 + 1) * sizeof(int32_t)), 0};
    char *end;
    for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
        ids.v[ids.n++] = (int32_t)v;
        p = end;
    }
    return ids;
}

static int ids_same(const int32_t *a, size_t na, Ids b) {
    return na == b.n && (na == 0 || memcmp(a, b.v, na * sizeof *a) == 0);
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Streams ids one by one; every piece must be whole UTF-8 characters. Returns the concatenation
 * (malloc'd, length in *len_out). */
static char *stream_all(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip,
                        size_t *len_out) {
    EgDecodeStream *s = eg_decode_stream_new(tok, skip);
    EgError err = {0};
    size_t cap = 64, len = 0;
    char *all = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t pl = 0;
        int rc = i < n ? eg_decode_stream_push_ex(s, ids[i], &piece, &pl, &err)
                       : eg_decode_stream_flush_ex(s, &piece, &pl, &err);
        CHECK(rc == 0 && piece, "stream push: %s", err.msg);
        if (!piece) continue;
        CHECK(eg_utf8_valid_prefix(piece, pl) == pl, "stream piece %zu is not whole UTF-8", i);
        while (len + pl + 1 > cap)
            all = realloc(all, cap *= 2);
        memcpy(all + len, piece, pl);
        len += pl;
        free(piece);
    }
    all[len] = 0;
    eg_decode_stream_free(s);
    *len_out = len;
    return all;
}

/* Full and streamed decode of ids both equal want. */
static int check_decode(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip, Bytes want,
                        size_t case_no) {
    EgError err = {0};
    size_t flen = 0, slen = 0;
    char *full = eg_tokenizer_decode_ex(tok, ids, n, skip, &flen, &err);
    char *streamed = stream_all(tok, ids, n, skip, &slen);
    int ok_full = full && flen == want.n && memcmp(full, want.s, flen) == 0;
    int ok_stream = slen == want.n && memcmp(streamed, want.s, slen) == 0;
    CHECK(ok_full, "case %zu: decode(skip=%d) \"%s\" != HF \"%s\"", case_no, skip,
          full ? full : err.msg, want.s);
    CHECK(ok_stream, "case %zu: streamed decode(skip=%d) \"%s\" != HF \"%s\"", case_no, skip,
          streamed, want.s);
    free(full);
    free(streamed);
    return ok_full && ok_stream;
}

static void test_hf_cases(const EgTokenizer *tok) {
    size_t len = 0;
    char *raw = (char *)test_read_file(test_data_path("mllama/tokenizer/cases.txt"), &len);
    REQUIRE_VOID(raw != NULL);
    char *txt = malloc(len + 1); /* test_read_file's buffer has no terminating NUL */
    memcpy(txt, raw, len);
    txt[len] = 0;
    free(raw);
    size_t n_strings = 0, n_random = 0, failed = 0, case_no = 0;
    Bytes s = {0};
    Ids a = {0}, p = {0}, r = {0};
    int have_s = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        const char *arg = line[1] == ' ' ? line + 2 : line + 1;
        switch (line[0]) {
        case 'S':
            free(s.s), free(a.v), free(p.v), free(r.v);
            s = parse_hex(arg);
            a = p = r = (Ids){0};
            have_s = 1;
            case_no++;
            break;
        case 'R':
            free(s.s), free(a.v), free(p.v), free(r.v);
            s = (Bytes){0};
            a = p = (Ids){0};
            r = parse_ids(arg);
            have_s = 0;
            case_no++;
            n_random++;
            break;
        case 'A':
            a = parse_ids(arg);
            break;
        case 'P':
            p = parse_ids(arg);
            break;
        case 'D':
        case 'K': {
            Bytes want = parse_hex(arg);
            int skip = line[0] == 'K';
            int ok = have_s ? check_decode(tok, a.v, a.n, skip, want, case_no)
                            : check_decode(tok, r.v, r.n, skip, want, case_no);
            failed += !ok;
            free(want.s);
            if (!have_s || !skip) break;
            /* the K line ends a string case: now its encodes */
            n_strings++;
            EgError err = {0};
            int32_t *ids = NULL;
            size_t n = 0;
            int rc = eg_tokenizer_encode(tok, s.s, s.n, 1, &ids, &n, &err);
            int ok_a = rc == 0 && ids_same(ids, n, a);
            CHECK(ok_a, "case %zu: ids of \"%s\" differ from HF (%s)", case_no, s.s,
                  rc ? err.msg : "");
            if (!ok_a) print_ids("egret", ids, n), print_ids("HF   ", a.v, a.n);
            free(ids);
            /* specials as plain text: HF split_special_tokens=True */
            uint8_t *plain = malloc(s.n + 1);
            memset(plain, 1, s.n + 1);
            rc = eg_tokenizer_encode_plain(tok, s.s, s.n, plain, &ids, &n, &err);
            int ok_p = rc == 0 && ids_same(ids, n, p);
            CHECK(ok_p, "case %zu: plain ids of \"%s\" differ from HF (%s)", case_no, s.s,
                  rc ? err.msg : "");
            if (!ok_p) print_ids("egret", ids, n), print_ids("HF   ", p.v, p.n);
            /* byte-level BPE is lossless */
            size_t dl = 0;
            char *back = rc == 0 ? eg_tokenizer_decode_ex(tok, ids, n, 0, &dl, &err) : NULL;
            CHECK(back && dl == s.n && memcmp(back, s.s, dl) == 0, "case %zu: round trip", case_no);
            failed += !ok_a || !ok_p;
            free(back);
            free(ids);
            free(plain);
            break;
        }
        default:
            CHECK(0, "cases.txt: unknown line after case %zu: \"%.20s\"", case_no, line);
        }
    }
    free(s.s), free(a.v), free(p.v), free(r.v);
    free(txt);
    printf("HF cases: %zu strings, %zu random-id decodes, %zu failed\n", n_strings, n_random,
           failed);
    CHECK(n_strings >= 2000 && n_random >= 100, "too few cases (%zu, %zu)", n_strings, n_random);
}

/* ------------------------------------------------------------------ properties */

static void test_specials(const EgTokenizer *tok) {
    CHECK(eg_tokenizer_bos(tok) == N_REGULAR, "bos %d", eg_tokenizer_bos(tok));
    CHECK(eg_tokenizer_eos(tok) == N_REGULAR + 9, "eos (<|eot_id|>) %d", eg_tokenizer_eos(tok));
    CHECK(eg_tokenizer_pad(tok) == N_REGULAR + 4, "pad %d", eg_tokenizer_pad(tok));
    CHECK(eg_tokenizer_unk(tok) == -1, "unk %d", eg_tokenizer_unk(tok));
    CHECK(eg_tokenizer_vocab_size(tok) == N_REGULAR + 257, "vocab %d",
          eg_tokenizer_vocab_size(tok));
    int32_t image = eg_tokenizer_find(tok, "<|image|>");
    CHECK(image == N_REGULAR + 256 && eg_tokenizer_is_special(tok, image), "<|image|> %d", image);
    CHECK(eg_tokenizer_find(tok, "<|reserved_special_token_246|>") == N_REGULAR + 255, "reserved");
    CHECK(eg_tokenizer_find(tok, "Ġ") >= 0 && eg_tokenizer_find(tok, " ") < 0,
          "vocab is spelt in ByteLevel characters");

    /* markup "<|image|>" is the special; the same characters typed by the user are text */
    const char text[] = "<|image|><|image|>";
    uint8_t plain[18] = {0};
    memset(plain + 9, 1, 9);
    int32_t *ids = NULL;
    size_t n = 0;
    EgError err = {0};
    int rc = eg_tokenizer_encode_plain(tok, text, 18, plain, &ids, &n, &err);
    CHECK(rc == 0 && n > 2 && ids[0] == image, "markup special: rc %d n %zu", rc, n);
    for (size_t i = 1; rc == 0 && i < n; i++)
        CHECK(!eg_tokenizer_is_special(tok, ids[i]), "plain text made special id %d", ids[i]);
    free(ids);
}

static void test_invalid_utf8(const EgTokenizer *tok) {
    static const struct {
        const char *s;
        size_t len, bad;
    } cases[] = {
        {"\x80", 1, 0},                  /* lone continuation byte */
        {"ab\xC3", 3, 2},                /* truncated 2-byte sequence */
        {"a\xC0\xAF", 3, 1},             /* overlong '/' */
        {"\xE0\x80\xAF", 3, 0},          /* overlong 3-byte */
        {"ok \xED\xA0\x80", 6, 3},       /* UTF-16 surrogate D800 */
        {"\xF4\x90\x80\x80", 4, 0},      /* above U+10FFFF */
        {"x\xF5\x80\x80\x80", 5, 1},     /* F5 never starts a sequence */
        {"\xE2\x82", 2, 0},              /* truncated euro sign */
        {"<|image|>\xFF", 10, 9},        /* after a special token */
        {"caf\xC3\xA9 \xE9t\xE9", 9, 6}, /* Latin-1 after valid UTF-8 */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        EgError err = {0};
        int32_t *ids = (int32_t *)1;
        size_t n = 99, off = 12345;
        int rc = eg_tokenizer_encode_ex(tok, cases[k].s, cases[k].len, 1, &ids, &n, &off, &err);
        CHECK(rc == -1 && ids == NULL && n == 0 && off == cases[k].bad &&
                  strstr(err.msg, "invalid UTF-8 at byte offset"),
              "invalid case %zu: rc %d off %zu msg \"%s\"", k, rc, off, err.msg);
    }
}

/* Partial UTF-8 across tokens: single-byte tokens of "é" (C3 A9) and "😀" (F0 9F 98 80) give
 * "" until the character is complete; a truncated one ends as one U+FFFD (from_utf8_lossy). */
static void test_stream_partial(const EgTokenizer *tok) {
    int32_t id[256];
    /* the ids of the 256 byte tokens: encode each byte's ByteLevel character by lookup */
    for (int b = 0; b < 256; b++) {
        unsigned cp = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE
                          ? (unsigned)b
                      : b <= 0x20 ? 0x100u + b
                      : b <= 0xA0 ? 0x100u + 33 + (b - 0x7Fu)
                                  : 0x100u + 67;
        char s[5] = {0};
        eg_utf8_encode(cp, s);
        id[b] = eg_tokenizer_find(tok, s);
        CHECK(id[b] >= 0 && id[b] < 256, "byte token %02X missing", b);
    }
    int32_t seq[] = {id[0xF0], id[0x9F], id[0x98], id[0x80], id['!'], id[0xC3], id[0xA9]};
    const char *want[] = {"", "", "", "\xF0\x9F\x98\x80", "!", "", "\xC3\xA9"};
    EgDecodeStream *s = eg_decode_stream_new(tok, 0);
    EgError err = {0};
    for (size_t i = 0; i < 7; i++) {
        char *piece = NULL;
        CHECK(eg_decode_stream_push(s, seq[i], &piece, &err) == 0 && piece &&
                  strcmp(piece, want[i]) == 0,
              "push %zu: \"%s\"", i, piece ? piece : err.msg);
        free(piece);
    }
    char *piece = NULL;
    int32_t cut[] = {id[0xE2], id[0x82]}; /* "€" without its last byte */
    for (size_t i = 0; i < 2; i++) {
        CHECK(eg_decode_stream_push(s, cut[i], &piece, &err) == 0 && piece && !*piece, "cut");
        free(piece);
    }
    CHECK(eg_decode_stream_flush(s, &piece, &err) == 0 && piece &&
              strcmp(piece, "\xEF\xBF\xBD") == 0,
          "flush of a truncated character: \"%s\"", piece ? piece : err.msg);
    free(piece);
    eg_decode_stream_free(s);
}

/* ------------------------------------------------------------------ load errors */

static void expect_load_error(const char *json, const char *needle) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "t.json", &err);
    CHECK(tok == NULL && strstr(err.msg, needle), "want error with \"%s\", got \"%s\"", needle,
          tok ? "(loaded)" : err.msg);
    eg_tokenizer_free(tok);
}

/* The goldens' tokenizer.json with one section replaced. */
static char *with_section(const cJSON *root, const char *key, const char *json) {
    cJSON *copy = cJSON_Duplicate(root, 1);
    cJSON_ReplaceItemInObjectCaseSensitive(copy, key, cJSON_Parse(json));
    char *s = cJSON_PrintUnformatted(copy);
    cJSON_Delete(copy);
    return s;
}

static void test_load_errors(void) {
    size_t len = 0;
    char *text = (char *)test_read_file(test_data_path("mllama/tokenizer/tokenizer.json"), &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    REQUIRE_VOID(root != NULL);
    static const struct {
        const char *key, *json, *needle;
    } cases[] = {
        {"decoder", "{\"type\":\"Fuse\"}", "ByteLevel pre_tokenizer without the matching"},
        {"pre_tokenizer", "null", "ByteLevel decoder without the matching"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"\\\\s+\"},\"behavior\":\"Removed\",\"invert\":false},{\"type\":\"ByteLevel\"}]}",
         "other than Isolated"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"(a\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\"}]}",
         "does not compile in PCRE2"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"[^\\\\S]\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\"}]}",
         "cannot translate"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"a\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
         "\"add_prefix_space\":true}]}",
         "add_prefix_space"},
        {"pre_tokenizer", "{\"type\":\"ByteLevel\",\"use_regex\":true}", "'ByteLevel' unsupported"},
        {"post_processor", "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"BertProcessing\"}]}",
         "post_processor Sequence"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *json = with_section(root, cases[k].key, cases[k].json);
        expect_load_error(json, cases[k].needle);
        free(json);
    }
    cJSON_Delete(root);
}

/* A Split regex that can match empty ("x*"): HF cuts the text at every empty match, so the gaps
 * become one-character pieces. Ids from HF tokenizers 0.23.3 on the goldens' vocabulary. */
static void test_empty_matches(void) {
    size_t len = 0;
    char *text = (char *)test_read_file(test_data_path("mllama/tokenizer/tokenizer.json"), &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    REQUIRE_VOID(root != NULL);
    char *json = with_section(root, "pre_tokenizer",
                              "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                              "\"pattern\":{\"Regex\":\"x*\"},\"behavior\":\"Isolated\","
                              "\"invert\":false},{\"type\":\"ByteLevel\"}]}");
    cJSON_Delete(root);
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "x*.json", &err);
    free(json);
    REQUIRE_VOID(tok != NULL);
    static const struct {
        const char *text;
        int32_t ids[16];
        size_t n;
    } cases[] = {
        {"abxxc", {64, 65, 87, 87, 66}, 5},
        {"xx", {87, 87}, 2},
        {"", {0}, 0},
        {"hello world x", {71, 68, 75, 75, 78, 220, 86, 78, 81, 75, 67, 220, 87}, 13},
        {"\xC3\xA9x\xC3\xA9", {127, 102, 87, 127, 102}, 5},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = eg_tokenizer_encode(tok, cases[k].text, strlen(cases[k].text), 0, &ids, &n, &err);
        CHECK(rc == 0 && n == cases[k].n && (n == 0 || memcmp(ids, cases[k].ids, n * 4) == 0),
              "x* on \"%s\": rc %d, %zu ids", cases[k].text, rc, n);
        free(ids);
    }
    eg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ size */

static void test_large_input(const EgTokenizer *tok) {
    /* 1 MB: mixed text, then one run of spaces (the regex's backtracking alternatives) */
    static const char *const parts[] = {"The cat's 12345 ", "日本語 ", "  \n\n",    "👍🏽 ",
                                        "Привет! ",         "\t",      "x<|image|>"};
    size_t cap = (1 << 20) + 64, n = 0;
    char *text = malloc(cap);
    while (n < (1 << 20)) {
        const char *p = parts[test_rng_u64() % 7];
        memcpy(text + n, p, strlen(p));
        n += strlen(p);
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) memset(text, ' ', n);
        EgError err = {0};
        int32_t *ids = NULL;
        size_t n_ids = 0, dl = 0;
        double t0 = now_s();
        int rc = eg_tokenizer_encode(tok, text, n, 0, &ids, &n_ids, &err);
        double t1 = now_s();
        CHECK(rc == 0, "encode of 1 MB (%s): %s", pass ? "spaces" : "mixed", err.msg);
        char *back = rc == 0 ? eg_tokenizer_decode_ex(tok, ids, n_ids, 0, &dl, &err) : NULL;
        CHECK(back && dl == n && memcmp(back, text, n) == 0, "1 MB round trip");
        printf("1 MB %s: %zu ids, encode %.1f ms\n", pass ? "of spaces" : "mixed", n_ids,
               (t1 - t0) * 1e3);
        free(back);
        free(ids);
    }
    free(text);
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    double t0 = now_s();
    EgTokenizer *tok = eg_tokenizer_load(test_data_path("mllama/tokenizer/tokenizer.json"), &err);
    REQUIRE(tok != NULL, "load: %s", err.msg);
    printf("load: %.2f ms\n", (now_s() - t0) * 1e3);
    test_specials(tok);
    test_hf_cases(tok);
    test_invalid_utf8(tok);
    test_stream_partial(tok);
    test_load_errors();
    test_empty_matches();
    test_large_input(tok);
    eg_tokenizer_free(tok);
    return test_finish();
}
