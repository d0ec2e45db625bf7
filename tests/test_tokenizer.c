/* Tokenizer against HF: every case of tests/data/tokenizer/tokenizer_cases.json (ids with and
 * without BOS, tokens, decoded text) and HF's decoded greedy outputs of the demo model; then
 * property tests (round trips of random text, streaming == full decode, invalid UTF-8), added
 * token flags on a small synthetic tokenizer, load errors, and a 100 KB timing run. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "language/tokenizer.h"
#include "language/utf8.h"
#include "tests/test_util.h"

static EgTokenizer *load_or_report(const char *path) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load(path, &err);
    CHECK(tok != NULL, "load %s: %s", path, err.msg);
    return tok;
}

static int ids_equal(const int32_t *a, size_t na, const cJSON *expected) {
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, expected) {
        if (i >= na || a[i] != (int32_t)e->valuedouble) return 0;
        i++;
    }
    return i == na;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* Streams ids one by one and returns the concatenation (malloc'd, length in *len_out). */
static char *stream_all(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip,
                        size_t *len_out) {
    EgDecodeStream *s = eg_decode_stream_new(tok, skip);
    size_t cap = 64, len = 0;
    char *all = malloc(cap);
    EgError err = {0};
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t pl = 0;
        int rc = i < n ? eg_decode_stream_push_ex(s, ids[i], &piece, &pl, &err)
                       : eg_decode_stream_flush_ex(s, &piece, &pl, &err);
        CHECK(rc == 0 && piece, "stream push: %s", err.msg);
        if (!piece) continue;
        while (len + pl + 1 > cap)
            all = realloc(all, cap *= 2);
        memcpy(all + len, piece, pl);
        len += pl;
        free(piece);
    }
    all[len] = 0;
    eg_decode_stream_free(s);
    if (len_out) *len_out = len;
    return all;
}

static void check_stream_matches(const EgTokenizer *tok, const int32_t *ids, size_t n, int skip,
                                 const char *what) {
    EgError err = {0};
    size_t flen = 0, slen = 0;
    char *full = eg_tokenizer_decode_ex(tok, ids, n, skip, &flen, &err);
    char *streamed = stream_all(tok, ids, n, skip, &slen);
    CHECK(full && flen == slen && memcmp(full, streamed, slen) == 0,
          "%s: stream \"%s\" != full \"%s\"", what, streamed, full ? full : err.msg);
    free(full);
    free(streamed);
}

/* ------------------------------------------------------------------ HF cases */

static void test_hf_cases(const EgTokenizer *tok) {
    size_t len = 0;
    char *json = (char *)test_read_file(test_data_path("tokenizer/tokenizer_cases.json"), &len);
    CHECK(json != NULL, "cannot read tokenizer_cases.json");
    if (!json) return;
    cJSON *cases = cJSON_ParseWithLength(json, len);
    free(json);
    CHECK(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) >= 10, "cases file malformed");
    int n_cases = 0, n_ok = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        const cJSON *want_bos = cJSON_GetObjectItem(c, "ids_with_bos");
        const cJSON *tokens = cJSON_GetObjectItem(c, "tokens");
        const char *decoded = cJSON_GetObjectItem(c, "decoded")->valuestring;
        EgError err = {0};
        int32_t *ids = NULL, *ids_bos = NULL;
        size_t n = 0, n_bos = 0;
        int ok = 1;
        int rc = eg_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err);
        CHECK(rc == 0, "encode \"%s\": %s", text, err.msg);
        rc |= eg_tokenizer_encode(tok, text, strlen(text), 1, &ids_bos, &n_bos, &err);
        CHECK(rc == 0, "encode+bos \"%s\": %s", text, err.msg);
        if (rc) continue;
        n_cases++;
        if (!ids_equal(ids, n, want)) {
            ok = 0;
            fprintf(stderr, "case \"%s\": ids mismatch\n", text);
            print_ids("got", ids, n);
        }
        if (!ids_equal(ids_bos, n_bos, want_bos)) {
            ok = 0;
            fprintf(stderr, "case \"%s\": ids_with_bos mismatch\n", text);
            print_ids("got", ids_bos, n_bos);
        }
        size_t i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tokens) {
            const char *got = i < n ? eg_tokenizer_token(tok, ids[i]) : NULL;
            if (!got || strcmp(got, t->valuestring) != 0) {
                ok = 0;
                fprintf(stderr, "case \"%s\": token %zu is \"%s\", HF \"%s\"\n", text, i,
                        got ? got : "(none)", t->valuestring);
            }
            i++;
        }
        char *dec = eg_tokenizer_decode(tok, ids, n, 0, &err);
        if (!dec || strcmp(dec, decoded) != 0) {
            ok = 0;
            fprintf(stderr, "case \"%s\": decoded \"%s\", HF \"%s\"\n", text, dec ? dec : err.msg,
                    decoded);
        }
        /* BOS is special: skipping specials makes the BOS variant decode like the plain one */
        char *a = eg_tokenizer_decode(tok, ids_bos, n_bos, 1, &err);
        char *b = eg_tokenizer_decode(tok, ids, n, 1, &err);
        CHECK(a && b && strcmp(a, b) == 0, "skip_special: \"%s\" vs \"%s\"", a, b);
        check_stream_matches(tok, ids, n, 0, text);
        check_stream_matches(tok, ids_bos, n_bos, 0, text);
        check_stream_matches(tok, ids_bos, n_bos, 1, text);
        CHECK(ok, "HF case \"%s\" differs (details above)", text);
        n_ok += ok;
        free(a);
        free(b);
        free(dec);
        free(ids);
        free(ids_bos);
    }
    printf("tokenizer_cases.json: %d/%d cases match HF\n", n_ok, n_cases);
    cJSON_Delete(cases);
}

/* HF decode of the demo model's greedy continuations (tests/data/shapes-cases). */
static void test_greedy_decodes(void) {
    EgTokenizer *tok = load_or_report(test_model_path("shapes-idefics/tokenizer.json"));
    size_t len = 0;
    char *json = (char *)test_read_file(test_data_path("shapes-cases/cases.json"), &len);
    CHECK(json != NULL, "cannot read shapes-cases/cases.json");
    if (!tok || !json) {
        eg_tokenizer_free(tok);
        free(json);
        return;
    }
    cJSON *cases = cJSON_ParseWithLength(json, len);
    free(json);
    int n = 0, ok = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *gi = cJSON_GetObjectItem(c, "greedy_ids");
        const char *want = cJSON_GetObjectItem(c, "greedy_text")->valuestring;
        int32_t ids[256];
        size_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, gi) if (k < 256) ids[k++] = (int32_t)e->valuedouble;
        EgError err = {0};
        char *got = eg_tokenizer_decode(tok, ids, k, 0, &err);
        int same = got && strcmp(got, want) == 0;
        CHECK(same, "greedy decode: \"%s\" vs HF \"%s\"", got ? got : err.msg, want);
        check_stream_matches(tok, ids, k, 0, want);
        n++;
        ok += same;
        free(got);
    }
    printf("shapes-cases greedy_text: %d/%d decodes match HF\n", ok, n);
    cJSON_Delete(cases);
    eg_tokenizer_free(tok);
}

static void test_accessors(const EgTokenizer *tok) {
    CHECK(eg_tokenizer_vocab_size(tok) == 477, "vocab size %d", eg_tokenizer_vocab_size(tok));
    CHECK(eg_tokenizer_bos(tok) == 1, "bos %d", eg_tokenizer_bos(tok));
    CHECK(eg_tokenizer_eos(tok) == 2, "eos %d", eg_tokenizer_eos(tok));
    CHECK(eg_tokenizer_unk(tok) == 0, "unk %d", eg_tokenizer_unk(tok));
    CHECK(eg_tokenizer_pad(tok) == 0, "pad %d (config says <unk>)", eg_tokenizer_pad(tok));
    CHECK(eg_tokenizer_find(tok, "<image>") == 476, "<image>");
    CHECK(eg_tokenizer_find(tok, "<fake_token_around_image>") == 475, "<fake...>");
    CHECK(eg_tokenizer_find(tok, "<0x0A>") == 13, "<0x0A>");
    CHECK(eg_tokenizer_find(tok, "no such token") == -1, "absent token");
    CHECK(eg_tokenizer_token(tok, 299) && strcmp(eg_tokenizer_token(tok, 299), "▁Output:") == 0,
          "token 299");
    CHECK(eg_tokenizer_token(tok, 477) == NULL && eg_tokenizer_token(tok, -1) == NULL,
          "out of range ids have no token");
    CHECK(eg_tokenizer_is_special(tok, 476) && !eg_tokenizer_is_special(tok, 299), "special");
    /* BOS is decoded like any token unless skipped; the Strip decoder only cuts a leading space */
    int32_t ids[] = {1, 299, 476, 13, 2};
    EgError err = {0};
    char *s = eg_tokenizer_decode(tok, ids, 5, 0, &err);
    CHECK(s && strcmp(s, "<s> Output:<image>\n</s>") == 0, "decode with specials: \"%s\"", s);
    free(s);
    s = eg_tokenizer_decode(tok, ids, 5, 1, &err);
    CHECK(s && strcmp(s, "Output:\n") == 0, "decode skipping specials: \"%s\"", s);
    free(s);
    /* ids with no token are skipped, as HF does */
    int32_t gaps[] = {299, 100000, -5, 300};
    s = eg_tokenizer_decode(tok, gaps, 4, 0, &err);
    CHECK(s && strcmp(s, "Output: a") == 0, "unknown ids skipped: \"%s\"", s);
    free(s);
}

/* ------------------------------------------------------------------ properties */

static size_t rand_below(size_t n) {
    return (size_t)(test_rng_u64() % n);
}

/* Random text assembled from pieces; the expected HF round trip is built alongside: each text
 * segment between special tokens decodes as " " + segment (Prepend "▁", then "▁" -> " "), special
 * tokens as themselves, and the Strip decoder drops one leading space of the whole text. */
static void random_text(char *text, size_t *len, char *expect, size_t *elen, int with_specials) {
    static const char *const pieces[] = {
        "the", "a",    "Output:", "red",  "circle", " ", " ",        "  ",       "\n",
        "\t",  ".",    ",",       "!",    "?",      "é", "ï",        "über",     "café",
        "ß",   "你好", "世界",    "，",   "日本語", "😀", "🎉",        "👍🏽", "x",
        "Z",   "0",    "42",      "3.14", "Ω",      "ж", "\xC2\xA0", "\r\n",     "'",
        "\"",  "_",    "-",       "=",    "\\"};
    static const char *const specials[] = {"<image>", "<fake_token_around_image>", "<s>", "</s>",
                                           "<unk>"};
    size_t n_pieces = sizeof pieces / sizeof *pieces;
    size_t count = 1 + rand_below(24);
    size_t tl = 0, el = 0;
    int in_segment = 0;
    for (size_t i = 0; i < count; i++) {
        const char *p;
        int special = with_specials && rand_below(6) == 0;
        p = special ? specials[rand_below(5)] : pieces[rand_below(n_pieces)];
        size_t pl = strlen(p);
        memcpy(text + tl, p, pl);
        tl += pl;
        if (special) {
            in_segment = 0;
        } else if (!in_segment) {
            expect[el++] = ' ';
            in_segment = 1;
        }
        memcpy(expect + el, p, pl);
        el += pl;
    }
    if (el && expect[0] == ' ') {
        memmove(expect, expect + 1, el - 1);
        el--;
    }
    text[tl] = expect[el] = 0;
    *len = tl;
    *elen = el;
}

static void test_round_trips(const EgTokenizer *tok) {
    char text[1024], expect[1100];
    int failures = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t tl, el;
        random_text(text, &tl, expect, &el, iter % 2);
        int32_t *ids = NULL;
        size_t n = 0;
        EgError err = {0};
        if (eg_tokenizer_encode(tok, text, tl, 0, &ids, &n, &err) != 0) {
            CHECK(0, "encode \"%s\": %s", text, err.msg);
            continue;
        }
        /* byte fallback covers every character: unk only comes from a literal "<unk>" */
        int no_unk = 1;
        for (size_t i = 0; i < n; i++)
            no_unk &= ids[i] != eg_tokenizer_unk(tok);
        if (strstr(text, "<unk>")) no_unk = 1;
        char *dec = eg_tokenizer_decode(tok, ids, n, 0, &err);
        char *streamed = stream_all(tok, ids, n, 0, NULL);
        int ok = no_unk && dec && strcmp(dec, expect) == 0 && strcmp(streamed, dec) == 0;
        if (!ok && failures++ < 5)
            fprintf(stderr,
                    "round trip of \"%s\": decoded \"%s\", streamed \"%s\", want \"%s\"%s\n", text,
                    dec, streamed, expect, no_unk ? "" : " (unk produced)");
        free(dec);
        free(streamed);
        free(ids);
    }
    CHECK(failures == 0, "%d random round trips failed", failures);
}

/* Random id sequences. With valid_runs, byte tokens come as whole UTF-8 characters, which is
 * what encode produces and what the streaming contract covers: stream == full decode, always.
 * Without, byte runs may be invalid UTF-8; then HF's full decode may turn a whole run into
 * U+FFFD, which a stream cannot do retroactively, so only "valid UTF-8 out" must hold. */
static void random_id_streams(const EgTokenizer *tok, int valid_runs) {
    int vocab = eg_tokenizer_vocab_size(tok), failures = 0, n_same = 0;
    int32_t ids[96];
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 0, want = rand_below(64);
        while (n < want) {
            if (rand_below(2) == 0) {
                int32_t id = (int32_t)rand_below((size_t)vocab);
                if (valid_runs && id >= 3 && id <= 258) continue; /* bytes only as whole chars */
                ids[n++] = id;
            } else if (!valid_runs) {
                ids[n++] = (int32_t)(3 + rand_below(256)); /* <0x00>..<0xFF> are ids 3..258 */
            } else {
                static const uint32_t ranges[][2] = {{0x20, 0x7E},
                                                     {0xA0, 0x7FF},
                                                     {0x800, 0xD7FF},
                                                     {0xE000, 0xFFFD},
                                                     {0x10000, 0x10FFFF}};
                size_t r = rand_below(5);
                uint32_t cp = ranges[r][0] + (uint32_t)rand_below(ranges[r][1] - ranges[r][0] + 1);
                char u[4];
                size_t ul = eg_utf8_encode(cp, u);
                for (size_t k = 0; k < ul; k++)
                    ids[n++] = 3 + (unsigned char)u[k];
            }
        }
        int skip = (int)rand_below(2);
        EgError err = {0};
        size_t flen = 0, slen = 0;
        char *full = eg_tokenizer_decode_ex(tok, ids, n, skip, &flen, &err);
        char *streamed = stream_all(tok, ids, n, skip, &slen);
        int valid = eg_utf8_valid_prefix(streamed, slen) == slen;
        int same = full && flen == slen && memcmp(full, streamed, slen) == 0;
        int fffd = full && memmem(full, flen, "\xEF\xBF\xBD", 3) != NULL;
        if (!(valid && (same || (!valid_runs && fffd))) && failures++ < 5)
            fprintf(stderr, "random ids: stream \"%s\" vs full \"%s\"\n", streamed, full);
        n_same += same;
        free(full);
        free(streamed);
    }
    CHECK(failures == 0, "%d random id streams (valid_runs %d) wrong", failures, valid_runs);
    printf("random id streams (%s byte runs): %d/2000 identical to the full decode\n",
           valid_runs ? "valid" : "arbitrary", n_same);
}

static void test_stream_partial_utf8(const EgTokenizer *tok) {
    /* "😀" through byte fallback: F0 9F 98 80 -> nothing, nothing, nothing, the emoji */
    int32_t ids[] = {292, 243, 162, 155, 131, 312};
    const char *want[] = {"", "", "", "", "😀", " o"};
    EgDecodeStream *s = eg_decode_stream_new(tok, 0);
    EgError err = {0};
    for (int i = 0; i < 6; i++) {
        char *piece = NULL;
        CHECK(eg_decode_stream_push(s, ids[i], &piece, &err) == 0, "push: %s", err.msg);
        CHECK(piece && strcmp(piece, want[i]) == 0, "piece %d: \"%s\", want \"%s\"", i, piece,
              want[i]);
        free(piece);
    }
    eg_decode_stream_free(s);
    /* the leading strip applies once, at the very start: "▁" alone emits nothing, then later
     * spaces are kept */
    int32_t sp[] = {292, 292, 299};
    const char *want_sp[] = {"", " ", " Output:"};
    s = eg_decode_stream_new(tok, 0);
    for (int i = 0; i < 3; i++) {
        char *piece = NULL;
        eg_decode_stream_push(s, sp[i], &piece, &err);
        CHECK(piece && strcmp(piece, want_sp[i]) == 0, "strip piece %d: \"%s\"", i, piece);
        free(piece);
    }
    eg_decode_stream_free(s);
    /* an unfinished sequence at the end becomes U+FFFD on flush, as in the full decode */
    int32_t cut[] = {299, 243, 162};
    check_stream_matches(tok, cut, 3, 0, "unfinished emoji");
}

static void test_invalid_utf8(const EgTokenizer *tok) {
    static const struct {
        const char *bad;
        size_t len;
    } bads[] = {{"\xFF", 1},
                {"\x80", 1},
                {"\xC0\xAF", 2},
                {"\xED\xA0\x80", 3},
                {"\xF4\x90\x80\x80", 4},
                {"\xE4\xBD", 2},
                {"\xC3", 1},
                {"\xF0\x9F\x98", 3},
                {"\xFE\xFE", 2}};
    char buf[256];
    for (int iter = 0; iter < 300; iter++) {
        const char *prefix = iter % 3 == 0 ? "" : iter % 3 == 1 ? "héllo 世界 " : "<image>ok";
        size_t pl = strlen(prefix);
        size_t k = rand_below(sizeof bads / sizeof *bads);
        memcpy(buf, prefix, pl);
        memcpy(buf + pl, bads[k].bad, bads[k].len);
        /* truncated sequences must be followed by something that does not complete them */
        size_t len = pl + bads[k].len;
        if (rand_below(2)) buf[len++] = 'x';
        int32_t *ids = (int32_t *)1;
        size_t n = 99, off = 12345;
        EgError err = {0};
        int rc = eg_tokenizer_encode_ex(tok, buf, len, 1, &ids, &n, &off, &err);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", pl);
        CHECK(rc == -1 && ids == NULL && n == 0 && off == pl && strstr(err.msg, want),
              "invalid case %zu after \"%s\": rc %d off %zu msg \"%s\"", k, prefix, rc, off,
              err.msg);
    }
    /* random bytes: never crash; an error always names an offset whose prefix is valid */
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rand_below(64);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)test_rng_u64();
        int32_t *ids = NULL;
        size_t n = 0, off = (size_t)-1;
        EgError err = {0};
        if (eg_tokenizer_encode_ex(tok, buf, len, 0, &ids, &n, &off, &err) == 0) {
            free(ids);
            continue;
        }
        CHECK(off < len && strstr(err.msg, "invalid UTF-8 at byte offset"), "msg \"%s\"", err.msg);
        CHECK(eg_tokenizer_encode(tok, buf, off, 0, &ids, &n, &err) == 0,
              "the prefix before the reported offset %zu should encode", off);
        free(ids);
    }
}

/* ------------------------------------------------------------------ synthetic tokenizers */

/* A tiny byte-fallback tokenizer with the LLaMA normalizer/decoder and the given added tokens
 * (JSON array text). The model vocab: <unk>, the 256 byte tokens, "▁", "hello", "▁hello". */
static char *tiny_tokenizer_json(const char *added_json, int with_normalizer) {
    cJSON *root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON_AddNumberToObject(vocab, "<unk>", 0);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, name, 1 + b);
    }
    const char *extra[] = {"▁", "h", "e", "l", "o", "he", "ll", "hell", "hello", "▁hello"};
    for (int i = 0; i < 10; i++)
        cJSON_AddNumberToObject(vocab, extra[i], 257 + i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    const char *m[] = {"h e", "l l", "he ll", "hell o", "▁ hello"};
    for (int i = 0; i < 5; i++)
        cJSON_AddItemToArray(merges, cJSON_CreateString(m[i]));
    cJSON_AddItemToObject(root, "added_tokens", cJSON_Parse(added_json));
    cJSON_AddItemToObject(
        root, "normalizer",
        with_normalizer
            ? cJSON_Parse("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
                          "\"prepend\":\"▁\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" "
                          "\"},\"content\":\"▁\"}]}")
            : cJSON_CreateNull());
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON_AddItemToObject(
        root, "decoder",
        cJSON_Parse("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                    "{\"String\":\"▁\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":"
                    "\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}"));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static EgTokenizer *tiny(const char *added_json, int with_normalizer) {
    char *json = tiny_tokenizer_json(added_json, with_normalizer);
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "tiny", &err);
    CHECK(tok != NULL, "tiny tokenizer: %s", err.msg);
    free(json);
    return tok;
}

/* Encodes text and shows the result as the model tokens' text (byte tokens as their byte) with
 * every added token (ids >= 267 in the tiny tokenizers) in brackets, so split points show. */
static void check_splits(const EgTokenizer *tok, const char *text, const char *want) {
    int32_t *ids = NULL;
    size_t n = 0;
    EgError err = {0};
    char got[512];
    if (eg_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n, &err) != 0) {
        CHECK(0, "encode \"%s\": %s", text, err.msg);
        return;
    }
    size_t gl = 0;
    for (size_t i = 0; i < n && gl < 400; i++) {
        const char *t = eg_tokenizer_token(tok, ids[i]);
        if (ids[i] >= 267)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "[%s]", t);
        else if (strncmp(t, "<0x", 3) == 0 && strlen(t) == 6)
            got[gl++] = (char)strtol(t + 3, NULL, 16);
        else
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s", t);
    }
    got[gl] = 0;
    CHECK(strcmp(got, want) == 0, "splits of \"%s\": \"%s\", want \"%s\"", text, got, want);
    free(ids);
}

static void test_added_token_flags(void) {
    /* lstrip / rstrip absorb the whitespace next to the token (no normalizer: bytes show) */
    EgTokenizer *tok = tiny("[{\"id\":267,\"content\":\"<L>\",\"lstrip\":true,\"rstrip\":false,"
                            "\"single_word\":false,\"normalized\":false,\"special\":true},"
                            "{\"id\":268,\"content\":\"<R>\",\"lstrip\":false,\"rstrip\":true,"
                            "\"single_word\":false,\"normalized\":false,\"special\":true},"
                            "{\"id\":269,\"content\":\"<mask>\",\"lstrip\":false,\"rstrip\":false,"
                            "\"single_word\":true,\"normalized\":false,\"special\":false},"
                            "{\"id\":270,\"content\":\"<m>\",\"lstrip\":false,\"rstrip\":false,"
                            "\"single_word\":false,\"normalized\":false,\"special\":false}]",
                            0);
    if (tok) {
        check_splits(tok, "a \t<L> b", "a[<L>] b");
        check_splits(tok, "a <R> \n b", "a [<R>]b");
        check_splits(tok, "<L><R>  <L>", "[<L>][<R>][<L>]");
        /* HF's own single_word test case (tokenizers' added_vocabulary.rs) */
        check_splits(tok, "<mask> My name <mask> A<mask> <mask>ony <mask>",
                     "[<mask>] My name [<mask>] A<mask> <mask>ony [<mask>]");
        /* leftmost-longest: "<mask>" wins over "<m>" at the same start, and a discarded match
         * still consumes its text */
        check_splits(tok, "x<mask>y <m>", "x<mask>y [<m>]");
        check_splits(tok, "hello", "hello");
        int32_t ids[] = {267, 268, 269, 270};
        EgError err = {0};
        char *s = eg_tokenizer_decode(tok, ids, 4, 1, &err);
        CHECK(s && strcmp(s, "<mask><m>") == 0, "skip only special added tokens: \"%s\"", s);
        free(s);
        eg_tokenizer_free(tok);
    }
    /* normalized=true tokens are matched by their normalized form ("▁wor", Prepend applied)
     * inside each normalized segment; a content already in the model vocab keeps its model id */
    tok = tiny("[{\"id\":267,\"content\":\"wor\",\"lstrip\":false,\"rstrip\":false,"
               "\"single_word\":false,\"normalized\":true,\"special\":false},"
               "{\"id\":268,\"content\":\"<i>\",\"lstrip\":false,\"rstrip\":false,"
               "\"single_word\":false,\"normalized\":false,\"special\":true},"
               "{\"id\":300,\"content\":\"hello\",\"lstrip\":false,\"rstrip\":false,"
               "\"single_word\":false,\"normalized\":false,\"special\":false}]",
               1);
    if (tok) {
        CHECK(eg_tokenizer_find(tok, "hello") == 265, "model id kept for 'hello'");
        CHECK(eg_tokenizer_vocab_size(tok) == 269, "vocab size %d", eg_tokenizer_vocab_size(tok));
        check_splits(tok, "wor wor", "[wor][wor]");
        check_splits(tok, "xwor", "▁xwor");
        check_splits(tok, "<i>wor", "[<i>][wor]");
        check_splits(tok, "a wor", "▁a[wor]");
        eg_tokenizer_free(tok);
    }
}

/* The tiny tokenizer with other BPE options, plus a vocab token "oh" that no merge builds. */
static EgTokenizer *tiny_model(int byte_fallback, int fuse_unk, int ignore_merges) {
    char *json = tiny_tokenizer_json("[]", 0);
    cJSON *root = cJSON_Parse(json);
    free(json);
    cJSON *model = cJSON_GetObjectItem(root, "model");
    cJSON_ReplaceItemInObject(model, "byte_fallback", cJSON_CreateBool(byte_fallback));
    cJSON_ReplaceItemInObject(model, "fuse_unk", cJSON_CreateBool(fuse_unk));
    cJSON_AddBoolToObject(model, "ignore_merges", ignore_merges);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model, "vocab"), "oh", 267);
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "tiny", &err);
    CHECK(tok != NULL, "tiny model: %s", err.msg);
    free(json);
    return tok;
}

static void check_ids(const EgTokenizer *tok, const char *text, const int32_t *want, size_t n,
                      const char *what) {
    int32_t *ids = NULL;
    size_t got = 0;
    EgError err = {0};
    int rc = eg_tokenizer_encode(tok, text, strlen(text), 0, &ids, &got, &err);
    int ok = rc == 0 && got == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    CHECK(ok, "%s: \"%s\" %s", what, text, rc ? err.msg : "gives other ids");
    if (!ok && rc == 0) print_ids("got", ids, got);
    free(ids);
}

static void test_bpe_options(void) {
    /* ids: <unk> 0, bytes 1..256, "h" 258, "e" 259, "o" 261, "he" 262, "hello" 265, "oh" 267 */
    EgTokenizer *tok = tiny_model(0, 1, 0);
    if (tok) {
        int32_t want[] = {262, 0, 261}; /* "xyz" unknown, fused into one <unk> */
        check_ids(tok, "hexyzo", want, 3, "fuse_unk");
        int32_t oh[] = {261, 258}; /* no "o h" merge */
        check_ids(tok, "oh", oh, 2, "merges only");
        eg_tokenizer_free(tok);
    }
    tok = tiny_model(0, 0, 0);
    if (tok) {
        int32_t want[] = {262, 0, 0, 0, 261};
        check_ids(tok, "hexyzo", want, 5, "no fuse_unk");
        eg_tokenizer_free(tok);
    }
    tok = tiny_model(1, 1, 1);
    if (tok) {
        int32_t oh[] = {267}; /* ignore_merges: a whole word in the vocab is taken as is */
        check_ids(tok, "oh", oh, 1, "ignore_merges");
        int32_t hx[] = {262, 1 + 'x'}; /* otherwise BPE + byte fallback as usual */
        check_ids(tok, "hex", hx, 2, "ignore_merges fallback");
        eg_tokenizer_free(tok);
    }
}

static void expect_load_error(const char *json, const char *needle, const char *what) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "test.json", &err);
    CHECK(tok == NULL && strstr(err.msg, needle), "%s: want an error naming \"%s\", got \"%s\"",
          what, needle, tok ? "(loaded)" : err.msg);
    eg_tokenizer_free(tok);
}

/* Replaces root[key] in a copy of the reference file and returns it as JSON text. */
static char *variant(const char *base, const char *key, const char *value_json) {
    cJSON *root = cJSON_Parse(base);
    cJSON_ReplaceItemInObjectCaseSensitive(root, key, cJSON_Parse(value_json));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void test_load_errors(void) {
    size_t len = 0;
    char *base = (char *)test_read_file(test_data_path("tokenizer/tokenizer.json"), &len);
    CHECK(base != NULL, "read tokenizer.json");
    if (!base) return;
    base = realloc(base, len + 1);
    base[len] = 0;
    static const struct {
        const char *key, *value, *needle;
    } cases[] = {
        {"normalizer", "{\"type\":\"NFKC\"}", "NFKC"},
        {"normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}",
         "Lowercase"},
        {"pre_tokenizer", "{\"type\":\"Metaspace\",\"replacement\":\"▁\"}", "Metaspace"},
        {"decoder", "{\"type\":\"WordPiece\"}", "WordPiece"},
        {"decoder",
         "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"Strip\","
         "\"content\":\" \",\"start\":0,\"stop\":1}]}",
         "stop"},
        {"post_processor", "{\"type\":\"RobertaProcessing\"}", "RobertaProcessing"},
        {"truncation", "{\"max_length\":10}", "truncation"},
        {"model", "{\"type\":\"Unigram\",\"vocab\":[]}", "Unigram"},
        {"model", "{\"type\":\"WordPiece\",\"vocab\":{}}", "WordPiece"},
        {"model", "{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}", "\"b\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *json = variant(base, cases[i].key, cases[i].value);
        expect_load_error(json, cases[i].needle, cases[i].key);
        free(json);
    }
    /* truncated JSON at many cut points: always a clean failure */
    EgError err = {0};
    for (size_t cut = 0; cut < len; cut += len / 37 + 1) {
        EgTokenizer *tok = eg_tokenizer_load_from_memory(base, cut, "cut.json", &err);
        CHECK(tok == NULL && strstr(err.msg, "cut.json"), "truncated at %zu: \"%s\"", cut, err.msg);
        eg_tokenizer_free(tok);
    }
    CHECK(eg_tokenizer_load("/nonexistent/tokenizer.json", &err) == NULL &&
              strstr(err.msg, "/nonexistent/tokenizer.json"),
          "missing file: \"%s\"", err.msg);
    free(base);
}

/* ------------------------------------------------------------------ timing */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_large_input(const EgTokenizer *tok) {
    size_t cap = 100 * 1024, len = 0;
    char *text = malloc(cap + 64);
    static const char *const words[] = {
        "a small red circle ", "on the left.\n", "你好 ", "😀 ", "aaaaaaaa", "Output: "};
    while (len < cap) {
        const char *w = words[rand_below(6)];
        memcpy(text + len, w, strlen(w));
        len += strlen(w);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    EgError err = {0};
    double t0 = now_s();
    int rc = eg_tokenizer_encode(tok, text, len, 0, &ids, &n, &err);
    double t1 = now_s();
    CHECK(rc == 0, "encode 100 KB: %s", err.msg);
    char *dec = rc == 0 ? eg_tokenizer_decode(tok, ids, n, 0, &err) : NULL;
    double t2 = now_s();
    CHECK(dec && strlen(dec) == len && memcmp(dec, text, len) == 0, "100 KB round trip");
    printf("100 KB (one BPE word of %zu bytes): encode %.1f ms -> %zu ids, decode %.1f ms\n", len,
           (t1 - t0) * 1e3, n, (t2 - t1) * 1e3);
    /* the worst case for a naive merge loop: one long run of a single repeated letter */
    memset(text, 'a', cap);
    t0 = now_s();
    free(ids);
    ids = NULL;
    rc = eg_tokenizer_encode(tok, text, cap, 0, &ids, &n, &err);
    CHECK(rc == 0 && n > 0, "encode 100 KB of 'a': %s", err.msg);
    printf("100 KB of 'a': encode %.1f ms -> %zu ids\n", (now_s() - t0) * 1e3, n);
    free(ids);
    free(dec);
    free(text);
}

/* A LLaMA-sized tokenizer (about 32k tokens, 32k merges, ~1 MB of JSON) made up here, to show
 * that loading and encoding scale (timings printed, not asserted). Tokens: 62 letters/digits, all
 * 3844 pairs of them, then 28k triples, each built by a merge. */
static void test_large_vocab(void) {
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    cJSON *root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    int id = 0;
    char name[16], a[8], b[8];
    cJSON_AddNumberToObject(vocab, "<unk>", id++);
    for (int i = 0; i < 256; i++) {
        snprintf(name, sizeof name, "<0x%02X>", i);
        cJSON_AddNumberToObject(vocab, name, id++);
    }
    cJSON_AddNumberToObject(vocab, "\xE2\x96\x81", id++); /* ▁ */
    for (int i = 0; i < 62; i++) {
        snprintf(name, sizeof name, "%c", alpha[i]);
        cJSON_AddNumberToObject(vocab, name, id++);
    }
    for (int i = 0; i < 62; i++)
        for (int j = 0; j < 62; j++) {
            snprintf(name, sizeof name, "%c%c", alpha[i], alpha[j]);
            cJSON_AddNumberToObject(vocab, name, id++);
            snprintf(a, sizeof a, "%c", alpha[i]);
            snprintf(b, sizeof b, "%c", alpha[j]);
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pair);
        }
    for (int k = 0; k < 28000; k++) { /* base-62 digits of k: every triple is distinct */
        int i = k % 62, j = (k / 62) % 62, l = k / 3844;
        snprintf(name, sizeof name, "%c%c%c", alpha[i], alpha[j], alpha[l]);
        snprintf(a, sizeof a, "%c%c", alpha[i], alpha[j]);
        snprintf(b, sizeof b, "%c", alpha[l]);
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(a));
        cJSON_AddItemToArray(pair, cJSON_CreateString(b));
        cJSON_AddItemToArray(merges, pair);
        cJSON_AddNumberToObject(vocab, name, id++);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteFallback\"}"));
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    EgError err = {0};
    double t0 = now_s();
    EgTokenizer *tok = eg_tokenizer_load_from_memory(json, strlen(json), "big", &err);
    double t1 = now_s();
    printf("synthetic %d-token / %d-merge tokenizer (%zu KB JSON): load %.1f ms\n", id,
           3844 + 28000, strlen(json) / 1024, (t1 - t0) * 1e3);
    free(json);
    CHECK(tok != NULL && eg_tokenizer_vocab_size(tok) == id, "big tokenizer: %s", err.msg);
    if (tok) {
        size_t len = 100 * 1024;
        char *text = malloc(len);
        for (size_t i = 0; i < len; i++)
            text[i] = alpha[rand_below(62)];
        int32_t *ids = NULL;
        size_t n = 0;
        t0 = now_s();
        CHECK(eg_tokenizer_encode(tok, text, len, 0, &ids, &n, &err) == 0, "%s", err.msg);
        printf("  encode 100 KB: %.1f ms -> %zu ids\n", (now_s() - t0) * 1e3, n);
        char *dec = eg_tokenizer_decode(tok, ids, n, 0, &err);
        CHECK(dec && memcmp(dec, text, len) == 0, "big tokenizer round trip");
        free(dec);
        free(ids);
        free(text);
        eg_tokenizer_free(tok);
    }
}

/* Plain text (a user's) spells no special token; markup around it still does. */
static void test_plain_text(const EgTokenizer *tok) {
    const char *text = "<s>say <image></s> or <fake_token_around_image><unk>!</s>";
    size_t len = strlen(text), user0 = 3, user1 = len - 4; /* markup: "<s>" ... "</s>" */
    uint8_t plain[64] = {0};
    memset(plain + user0, 1, user1 - user0);
    int32_t *ids = NULL, *all = NULL, *piece = NULL;
    size_t n = 0, n_all = 0, n_piece = 0;
    EgError err = {0};
    int rc = eg_tokenizer_encode_plain(tok, text, len, plain, &ids, &n, &err);
    CHECK(rc == 0, "encode_plain: %s", err.msg);
    int special_inside = 0;
    for (size_t i = 1; rc == 0 && i + 1 < n; i++)
        special_inside += eg_tokenizer_is_special(tok, ids[i]);
    CHECK(rc == 0 && n > 2 && ids[0] == 1 && ids[n - 1] == 2 && special_inside == 0,
          "plain text: markup <s> and </s> only (%d special ids inside)", special_inside);
    char *back = rc == 0 ? eg_tokenizer_decode(tok, ids, n, 0, &err) : NULL;
    CHECK(back && strstr(back, "say <image></s> or <fake_token_around_image><unk>!"),
          "plain text decodes as typed: \"%s\"", back);
    free(back);
    /* without plain bytes it is eg_tokenizer_encode */
    CHECK(eg_tokenizer_encode_plain(tok, text, len, NULL, &all, &n_all, &err) == 0 &&
              eg_tokenizer_encode(tok, text, len, 0, &piece, &n_piece, &err) == 0 &&
              n_all == n_piece && memcmp(all, piece, n_all * sizeof *all) == 0 && n_all < n,
          "plain NULL: as eg_tokenizer_encode");
    free(ids);
    free(all);
    free(piece);
    /* a special token half in markup, half in plain text is not matched */
    const char *split = "<ima" "ge>";
    memset(plain, 0, sizeof plain);
    memset(plain + 4, 1, 3);
    rc = eg_tokenizer_encode_plain(tok, split, strlen(split), plain, &ids, &n, &err);
    int image = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        image += ids[i] == eg_tokenizer_find(tok, "<image>");
    CHECK(rc == 0 && image == 0, "a token straddling plain text: %d <image>", image);
    free(ids);
}

int main(void) {
    test_rng_init();
    double t0 = now_s();
    EgTokenizer *tok = load_or_report(test_data_path("tokenizer/tokenizer.json"));
    REQUIRE(tok != NULL, "cannot continue without the tokenizer");
    printf("load: %.2f ms\n", (now_s() - t0) * 1e3);
    test_accessors(tok);
    test_hf_cases(tok);
    test_greedy_decodes();
    test_round_trips(tok);
    random_id_streams(tok, 1);
    random_id_streams(tok, 0);
    test_stream_partial_utf8(tok);
    test_invalid_utf8(tok);
    test_added_token_flags();
    test_plain_text(tok);
    test_bpe_options();
    test_load_errors();
    test_large_input(tok);
    test_large_vocab();
    eg_tokenizer_free(tok);
    return test_finish();
}
