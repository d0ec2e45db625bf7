/* Prompt assembly against HF's IdeficsProcessor: the processor golden (ids and one-hot image
 * mask), the 30 demo-model few-shot prompts (ids), the same prompts rebuilt through the
 * egret_template.json few-shot helper, the image-mask rules, and template file errors. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "language/prompt.h"
#include "language/template.h"
#include "language/tokenizer.h"
#include "tests/test_util.h"

/* ------------------------------------------------------------------ tiny safetensors reader */

/* Reads one I64 tensor: 8-byte little-endian header length, JSON header, raw data. Kept here on
 * purpose (independent of the engine's loader). Returns malloc'd values, *count, dims in shape. */
static int64_t *st_read_i64(const unsigned char *file, size_t file_len, const char *key,
                            size_t *count, int64_t shape[4], int *ndim) {
    if (file_len < 8) return NULL;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | file[i];
    if (hlen > file_len - 8) return NULL;
    cJSON *h = cJSON_ParseWithLength((const char *)file + 8, (size_t)hlen);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, key);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    int64_t *out = NULL;
    if (cJSON_IsString(dtype) && strcmp(dtype->valuestring, "I64") == 0 &&
        cJSON_GetArraySize(offs) == 2) {
        size_t a = (size_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
        size_t b = (size_t)cJSON_GetArrayItem(offs, 1)->valuedouble;
        const unsigned char *data = file + 8 + hlen;
        if (a <= b && b <= file_len - 8 - hlen && (b - a) % 8 == 0) {
            *count = (b - a) / 8;
            out = malloc(*count ? *count * 8 : 1);
            for (size_t i = 0; out && i < *count; i++) {
                uint64_t v = 0;
                for (int k = 7; k >= 0; k--)
                    v = v << 8 | data[a + i * 8 + (size_t)k];
                out[i] = (int64_t)v;
            }
            *ndim = 0;
            const cJSON *d;
            cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(t, "shape")) {
                if (*ndim < 4) shape[(*ndim)++] = (int64_t)d->valuedouble;
            }
        }
    }
    cJSON_Delete(h);
    return out;
}

/* ------------------------------------------------------------------ helpers */

static EgPromptPart text_part(const char *s) {
    return (EgPromptPart){.kind = EG_PART_TEXT, .text = s, .len = strlen(s)};
}

static EgPromptPart image_part(void) {
    return (EgPromptPart){.kind = EG_PART_IMAGE, .text = NULL, .len = 0};
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

static int same_ids_json(const EgPrompt *p, const cJSON *want) {
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, want) {
        if (i >= p->n_tokens || p->ids[i] != (int32_t)e->valuedouble) return 0;
        i++;
    }
    return i == p->n_tokens;
}

/* Expected ids of a prompt string, by encoding it directly (no BOS added: it is in the text). */
static int32_t *encode_str(const EgTokenizer *tok, const char *s, size_t *n) {
    int32_t *ids = NULL;
    EgError err = {0};
    if (eg_tokenizer_encode(tok, s, strlen(s), 0, &ids, n, &err) != 0) return NULL;
    return ids;
}

/* ------------------------------------------------------------------ (1) processor golden */

static void test_processor_golden(const EgTokenizer *tok) {
    size_t len = 0;
    unsigned char *file =
        test_read_file(test_data_path("preprocess/processor_golden.safetensors"), &len);
    CHECK(file != NULL, "cannot read processor_golden.safetensors");
    if (!file) return;
    size_t n_ids = 0, n_mask = 0;
    int64_t shape_ids[4], shape_mask[4];
    int nd_ids = 0, nd_mask = 0;
    int64_t *want_ids = st_read_i64(file, len, "processor/input_ids", &n_ids, shape_ids, &nd_ids);
    int64_t *want_mask =
        st_read_i64(file, len, "processor/image_attention_mask", &n_mask, shape_mask, &nd_mask);
    free(file);
    CHECK(want_ids && want_mask && nd_mask == 3, "golden tensors missing");
    if (!want_ids || !want_mask || nd_mask != 3) {
        free(want_ids);
        free(want_mask);
        return;
    }
    EgPromptPart parts[] = {image_part(), text_part("Output: a small red circle on the left.\n"),
                            image_part(), text_part("Output:")};
    EgPrompt p;
    EgError err = {0};
    int rc = eg_prompt_build(tok, parts, 4, NULL, &p, &err);
    CHECK(rc == 0, "build: %s", err.msg);
    if (rc == 0) {
        int ok = p.n_tokens == n_ids;
        for (size_t i = 0; ok && i < n_ids; i++)
            ok = p.ids[i] == want_ids[i];
        CHECK(ok, "processor golden input_ids differ (%zu vs %zu tokens)", p.n_tokens, n_ids);
        if (!ok) print_ids("got", p.ids, p.n_tokens);
        int cols = (int)shape_mask[2];
        CHECK(p.n_images == 2 && cols == 2, "images %d, mask columns %d", p.n_images, cols);
        int32_t *m = eg_prompt_image_mask_onehot(&p, cols, &err);
        int mok = m && (size_t)shape_mask[1] == p.n_tokens && n_mask == p.n_tokens * 2;
        for (size_t i = 0; mok && i < n_mask; i++)
            mok = m[i] == want_mask[i];
        CHECK(mok, "processor golden image_attention_mask differs");
        printf("processor golden: %zu ids and the [1,%zu,2] image mask %s\n", p.n_tokens,
               p.n_tokens, ok && mok ? "match HF" : "DIFFER");
        free(m);
        size_t tl = 0;
        char *s = eg_prompt_text(tok, parts, 4, NULL, &tl, &err);
        CHECK(s && strcmp(s,
                          "<s><fake_token_around_image><image><fake_token_around_image>"
                          "Output: a small red circle on the left.\n"
                          "<fake_token_around_image><image><fake_token_around_image>Output:") == 0,
              "prompt text \"%s\"", s);
        free(s);
        eg_prompt_free(&p);
    }
    free(want_ids);
    free(want_mask);
}

/* ------------------------------------------------------------------ (2) + (3) shapes cases */

/* Parts of one case; text pointers stay inside the cJSON tree. */
static size_t case_parts(const cJSON *c, EgPromptPart *parts, size_t max) {
    size_t n = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(c, "parts")) {
        if (n == max) break;
        const cJSON *text = cJSON_GetObjectItem(p, "text");
        parts[n++] = cJSON_IsString(text) ? text_part(text->valuestring) : image_part();
    }
    return n;
}

/* Examples from the parts: each (image, "Output: X\n") pair gives X; the query is the last image
 * followed by "Output:". Returns the number of examples, or -1 if the case has another shape. */
static int case_examples(const EgPromptPart *parts, size_t n, EgFewShotExample *ex) {
    if (n < 2 || parts[n - 2].kind != EG_PART_IMAGE || parts[n - 1].kind != EG_PART_TEXT ||
        strcmp(parts[n - 1].text, "Output:") != 0 || n % 2)
        return -1;
    int k = 0;
    for (size_t i = 0; i + 2 < n; i += 2) {
        const EgPromptPart *t = &parts[i + 1];
        if (parts[i].kind != EG_PART_IMAGE || t->kind != EG_PART_TEXT || t->len < 9 ||
            strncmp(t->text, "Output: ", 8) != 0 || t->text[t->len - 1] != '\n')
            return -1;
        ex[k].text = t->text + 8;
        ex[k].len = t->len - 9;
        k++;
    }
    return k;
}

static void test_shapes_cases(void) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load(test_model_path("shapes-idefics/tokenizer.json"), &err);
    CHECK(tok != NULL, "demo tokenizer: %s", err.msg);
    EgTemplate *tpl = eg_template_for_model(test_model_path("shapes-idefics"), &err);
    CHECK(tpl != NULL, "demo template: %s", err.msg);
    EgTemplate *dflt = eg_template_default(&err);
    CHECK(dflt != NULL, "default template: %s", err.msg);
    size_t len = 0;
    char *json = (char *)test_read_file(test_data_path("shapes-cases/cases.json"), &len);
    CHECK(json != NULL, "cannot read shapes-cases/cases.json");
    cJSON *cases = json ? cJSON_ParseWithLength(json, len) : NULL;
    free(json);
    if (!tok || !tpl || !dflt || !cases) goto done;
    CHECK(eg_template_stop_count(tpl) == 1 && strcmp(eg_template_stop(tpl, 0), "\n") == 0,
          "demo template stops at a newline");
    int n = 0, ok_parts = 0, ok_tpl = 0, ok_dflt = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *want = cJSON_GetObjectItem(c, "prompt_ids");
        EgPromptPart parts[32];
        size_t np = case_parts(c, parts, 32);
        EgPrompt p;
        n++;
        if (eg_prompt_build(tok, parts, np, NULL, &p, &err) != 0) {
            CHECK(0, "case %d: %s", n - 1, err.msg);
            continue;
        }
        int same = same_ids_json(&p, want);
        CHECK(same, "case %d: prompt_ids differ from HF", n - 1);
        if (!same) print_ids("got", p.ids, p.n_tokens);
        ok_parts += same;
        /* the query's tokens see the last image */
        CHECK(p.n_tokens && p.image_index[p.n_tokens - 1] == p.n_images - 1,
              "case %d: last token sees image %d of %d", n - 1, p.image_index[p.n_tokens - 1],
              p.n_images);
        eg_prompt_free(&p);

        /* (3) the same prompt through the few-shot helper, with the demo's and the default
         * template */
        EgFewShotExample ex[16];
        int k = case_examples(parts, np, ex);
        CHECK(k >= 0, "case %d does not have the few-shot shape", n - 1);
        if (k < 0) continue;
        for (int which = 0; which < 2; which++) {
            EgPartList pl;
            if (eg_template_build(which ? dflt : tpl, ex, (size_t)k, NULL, 0, &pl, &err) != 0) {
                CHECK(0, "case %d: template build: %s", n - 1, err.msg);
                continue;
            }
            int tsame = 0;
            if (eg_prompt_build(tok, pl.parts, pl.n, NULL, &p, &err) == 0) {
                tsame = same_ids_json(&p, want);
                eg_prompt_free(&p);
            }
            CHECK(tsame, "case %d: %s template prompt differs from HF", n - 1,
                  which ? "default" : "demo");
            if (which)
                ok_dflt += tsame;
            else
                ok_tpl += tsame;
            eg_part_list_free(&pl);
        }
    }
    CHECK(n == 30, "expected 30 cases, found %d", n);
    printf("shapes-cases prompt_ids: %d/%d from parts, %d/%d via egret_template.json, %d/%d via "
           "the default template\n",
           ok_parts, n, ok_tpl, n, ok_dflt, n);

    /* a query text continues after "Output: " */
    EgFewShotExample one = {"red.", 4};
    EgPartList pl;
    if (eg_template_build(tpl, &one, 1, "a small", 7, &pl, &err) == 0) {
        EgPrompt p;
        size_t ne = 0;
        int32_t *want = encode_str(tok,
                                   "<s><fake_token_around_image><image><fake_token_around_image>"
                                   "Output: red.\n<fake_token_around_image><image>"
                                   "<fake_token_around_image>Output: a small",
                                   &ne);
        int rc = eg_prompt_build(tok, pl.parts, pl.n, NULL, &p, &err);
        CHECK(rc == 0 && want && p.n_tokens == ne && memcmp(p.ids, want, ne * 4) == 0,
              "query text prompt");
        if (rc == 0) eg_prompt_free(&p);
        free(want);
        eg_part_list_free(&pl);
    }
done:
    cJSON_Delete(cases);
    eg_template_free(tpl);
    eg_template_free(dflt);
    eg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ (4) mask rules */

/* HF's processor, which reads special-token strings in user text as those tokens. */
static const EgPromptOptions HF_TEXT = {.end_of_utterance = -1, .special_in_text = 1};

static void check_index(const EgTokenizer *tok, const EgPromptPart *parts, size_t n,
                        const EgPromptOptions *opt, const char *want_text,
                        const int32_t *want_index, size_t want_n, int want_images,
                        const char *what) {
    EgPrompt p;
    EgError err = {0};
    if (eg_prompt_build(tok, parts, n, opt, &p, &err) != 0) {
        CHECK(0, "%s: %s", what, err.msg);
        return;
    }
    size_t ne = 0;
    int32_t *want_ids = encode_str(tok, want_text, &ne);
    CHECK(want_ids && ne == p.n_tokens && memcmp(want_ids, p.ids, ne * 4) == 0,
          "%s: ids differ from encoding \"%s\"", what, want_text);
    int ok = p.n_tokens == want_n && p.n_images == want_images;
    for (size_t i = 0; ok && i < want_n; i++)
        ok = p.image_index[i] == want_index[i];
    CHECK(ok, "%s: image index differs (images %d)", what, p.n_images);
    if (!ok) {
        print_ids("ids", p.ids, p.n_tokens);
        print_ids("index", p.image_index, p.n_tokens);
    }
    free(want_ids);
    eg_prompt_free(&p);
}

static int count_id(const EgPrompt *p, int32_t id) {
    int n = 0;
    for (size_t i = 0; i < p->n_tokens; i++)
        n += p->ids[i] == id;
    return n;
}

/* By default a user's text is plain text: typed special-token strings are the characters they
 * spell, the real image keeps index 0, and text free of them still gets HF's ids. */
static void test_plain_user_text(const EgTokenizer *tok) {
    static const char *const typed[] = {"<image>", "<fake_token_around_image>", "<s>", "</s>",
                                        "<unk>"};
    const int32_t ids_of[] = {476, 475, 1, 2, 0};
    const int structural[] = {1, 2, 1, 0, 0}; /* how many the parts and markup make */
    for (size_t k = 0; k < sizeof typed / sizeof *typed; k++) {
        char text[64];
        snprintf(text, sizeof text, "look %s here", typed[k]);
        EgPromptPart parts[] = {text_part(text), image_part(), text_part("Output:")};
        EgPrompt p;
        EgError err = {0};
        if (eg_prompt_build(tok, parts, 3, NULL, &p, &err) != 0) {
            CHECK(0, "typed %s: %s", typed[k], err.msg);
            continue;
        }
        CHECK(count_id(&p, ids_of[k]) == structural[k],
              "typed %s: %d of its id, want %d (structure only)", typed[k],
              count_id(&p, ids_of[k]), structural[k]);
        /* the typed text decodes back to itself */
        char *back = eg_tokenizer_decode(tok, p.ids, p.n_tokens, 1, &err);
        CHECK(back && strstr(back, text), "typed %s: decodes to \"%s\"", typed[k], back);
        free(back);
        /* the real image is image 0, seen by the query's tokens */
        CHECK(p.n_images == 1 && p.image_index[p.n_tokens - 1] == 0,
              "typed %s: the last token sees image %d", typed[k], p.image_index[p.n_tokens - 1]);
        eg_prompt_free(&p);
    }
    /* <end_of_utterance> and everything else in test_end_of_utterance; text without special
     * strings: the same ids as HF's reading */
    EgPromptPart parts[] = {image_part(), text_part("Output: a small red circle.")};
    EgPrompt a, b;
    EgError err = {0};
    CHECK(eg_prompt_build(tok, parts, 2, NULL, &a, &err) == 0 &&
              eg_prompt_build(tok, parts, 2, &HF_TEXT, &b, &err) == 0 &&
              a.n_tokens == b.n_tokens && memcmp(a.ids, b.ids, a.n_tokens * 4) == 0,
          "plain text: ids as HF's");
    eg_prompt_free(&a);
    eg_prompt_free(&b);
}

static void test_mask_rules(const EgTokenizer *tok) {
    /* consecutive images share the fake token between them:
     * <s> <fake> <image> <fake> <image> <fake> text... -> -1 -1 0 0 1 1 1... */
    {
        EgPromptPart parts[] = {image_part(), image_part(), text_part("hi there")};
        const char *str = "<s><fake_token_around_image><image><fake_token_around_image><image>"
                          "<fake_token_around_image>hi there";
        size_t n = 0;
        int32_t *ids = encode_str(tok, str, &n);
        int32_t idx[32] = {-1, -1, 0, 0};
        for (size_t i = 4; i < n && i < 32; i++)
            idx[i] = 1;
        CHECK(n > 6 && ids[4] == 476 && ids[5] == 475, "consecutive images setup");
        check_index(tok, parts, 3, NULL, str, idx, n, 2, "consecutive images");
        free(ids);
    }
    /* EOS inside text (read as HF does): the EOS itself still sees image 0, the tokens after it
     * see none until the next <image> (the opening fake token of image 1 included) */
    {
        EgPromptPart parts[] = {image_part(), text_part("a</s>b"), image_part(), text_part("c")};
        size_t n = 0;
        int32_t *ids =
            encode_str(tok,
                       "<s><fake_token_around_image><image><fake_token_around_image>"
                       "a</s>b<fake_token_around_image><image><fake_token_around_image>c",
                       &n);
        int32_t idx[64];
        int seen_eos = 0, count = -1;
        for (size_t i = 0; i < n && i < 64; i++) {
            if (ids[i] == 476) count++, seen_eos = 0;
            idx[i] = seen_eos ? -1 : count;
            if (ids[i] == 2) seen_eos = 1;
        }
        /* spot-check the rule independently of the loop above */
        size_t eos_at = 0;
        while (eos_at < n && ids[eos_at] != 2)
            eos_at++;
        CHECK(eos_at + 1 < n && idx[eos_at] == 0 && idx[eos_at + 1] == -1, "EOS rule setup");
        check_index(tok, parts, 4, &HF_TEXT,
                    "<s><fake_token_around_image><image><fake_token_around_image>"
                    "a</s>b<fake_token_around_image><image><fake_token_around_image>c",
                    idx, n, 2, "EOS inside text");
        free(ids);
    }
    /* no images: every token sees none; the one-hot form is [T, 1] of zeros, as HF returns */
    {
        EgPromptPart parts[] = {text_part("hello world")};
        int32_t idx[16];
        for (int i = 0; i < 16; i++)
            idx[i] = -1;
        size_t n = 0;
        int32_t *ids = encode_str(tok, "<s>hello world", &n);
        check_index(tok, parts, 1, NULL, "<s>hello world", idx, n, 0, "no images");
        free(ids);
        EgPrompt p;
        EgError err = {0};
        if (eg_prompt_build(tok, parts, 1, NULL, &p, &err) == 0) {
            int32_t *m = eg_prompt_image_mask_onehot(&p, 1, &err);
            int zeros = m != NULL;
            for (size_t i = 0; zeros && i < p.n_tokens; i++)
                zeros = m[i] == 0;
            CHECK(zeros, "no-image one-hot mask must be all zeros");
            free(m);
            eg_prompt_free(&p);
        }
    }
    /* read as HF does, a literal "<image>" in user text counts: it takes index 0 and pushes the
     * real image to index 1 >= n_images, so that image's tokens see none */
    {
        EgPromptPart parts[] = {text_part("x<image>y"), image_part(), text_part("z")};
        size_t n = 0;
        int32_t *ids = encode_str(tok,
                                  "<s>x<image>y<fake_token_around_image><image>"
                                  "<fake_token_around_image>z",
                                  &n);
        int32_t idx[32];
        int count = -1;
        for (size_t i = 0; i < n && i < 32; i++) {
            if (ids[i] == 476) count++;
            idx[i] = count >= 1 ? -1 : count;
        }
        check_index(tok, parts, 3, &HF_TEXT,
                    "<s>x<image>y<fake_token_around_image><image><fake_token_around_image>z", idx,
                    n, 1, "literal <image> in text");
        free(ids);
    }
    test_plain_user_text(tok);
    /* text parts lose spaces (only spaces) at both ends; an empty text part still separates two
     * images (each gets its own opening fake token) */
    {
        EgPromptPart parts[] = {text_part("  Output: x  "), text_part("\tq\n "), image_part(),
                                text_part(""), image_part()};
        EgError err = {0};
        char *s = eg_prompt_text(tok, parts, 5, NULL, NULL, &err);
        CHECK(s && strcmp(s, "<s>Output: x\tq\n<fake_token_around_image><image>"
                             "<fake_token_around_image><fake_token_around_image><image>"
                             "<fake_token_around_image>") == 0,
              "strip and empty text: \"%s\"", s);
        free(s);
    }
    /* invalid UTF-8 in a part names the part and the offset inside it */
    {
        EgPromptPart parts[] = {image_part(), text_part("ok \xC3(")};
        EgPrompt p;
        EgError err = {0};
        CHECK(eg_prompt_build(tok, parts, 2, NULL, &p, &err) == -1 && strstr(err.msg, "part 1") &&
                  strstr(err.msg, "byte offset 3"),
              "invalid UTF-8: \"%s\"", err.msg);
    }
}

/* <end_of_utterance>: a copy of the tokenizer with that special token added (id 477). */
static void test_end_of_utterance(void) {
    size_t len = 0;
    char *json = (char *)test_read_file(test_data_path("tokenizer/tokenizer.json"), &len);
    CHECK(json != NULL, "read tokenizer.json");
    if (!json) return;
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    cJSON_AddItemToArray(cJSON_GetObjectItem(root, "added_tokens"),
                         cJSON_Parse("{\"id\":477,\"content\":\"<end_of_utterance>\","
                                     "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                                     "\"normalized\":false,\"special\":true}"));
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load_from_memory(text, strlen(text), "eou", &err);
    free(text);
    CHECK(tok != NULL, "eou tokenizer: %s", err.msg);
    if (!tok) return;
    EgPromptPart parts[] = {text_part("User:"), image_part(), text_part("what?"),
                            text_part("Assistant:")};
    char *s = eg_prompt_text(tok, parts, 4, NULL, NULL, &err);
    /* only between two consecutive text parts, never after an image or at the start */
    CHECK(s && strcmp(s, "<s>User:<fake_token_around_image><image><fake_token_around_image>"
                         "what?<end_of_utterance>Assistant:") == 0,
          "auto end_of_utterance: \"%s\"", s);
    free(s);
    EgPromptOptions off = eg_prompt_default_options();
    off.end_of_utterance = 0;
    off.add_eos = 1;
    s = eg_prompt_text(tok, parts, 4, &off, NULL, &err);
    CHECK(s && strcmp(s, "<s>User:<fake_token_around_image><image><fake_token_around_image>"
                         "what?Assistant:</s>") == 0,
          "end_of_utterance off, add_eos: \"%s\"", s);
    free(s);
    EgPrompt p;
    CHECK(eg_prompt_build(tok, parts, 4, NULL, &p, &err) == 0, "%s", err.msg);
    int has = 0;
    for (size_t i = 0; i < p.n_tokens; i++)
        has += p.ids[i] == 477;
    CHECK(has == 1, "one <end_of_utterance> id in the prompt");
    eg_prompt_free(&p);
    /* a template's markup holds special tokens; the example's and the query's text, typed by a
     * user, cannot add any */
    const char *js = "{\"example\": [\"<image>\", \"User: {text}<end_of_utterance>\\n\"],"
                     " \"query\": [\"<image>\", \"User: {text}<end_of_utterance>\\nAssistant:\"]}";
    EgTemplate *t = eg_template_parse(js, strlen(js), "instruct", &err);
    CHECK(t != NULL, "instruct template: %s", err.msg);
    EgFewShotExample ex = {"a<end_of_utterance>b<image>c", 28};
    EgPartList pl = {0};
    if (t && eg_template_build(t, &ex, 1, "q</s><s>", 8, &pl, &err) == 0 &&
        eg_prompt_build(tok, pl.parts, pl.n, NULL, &p, &err) == 0) {
        int eou = 0, image = 0, bos = 0, eos = 0;
        for (size_t i = 0; i < p.n_tokens; i++) {
            eou += p.ids[i] == 477;
            image += p.ids[i] == 476;
            bos += p.ids[i] == 1;
            eos += p.ids[i] == 2;
        }
        CHECK(eou == 2 && image == 2 && bos == 1 && eos == 0,
              "template markup only: %d <end_of_utterance>, %d <image>, %d <s>, %d </s>", eou,
              image, bos, eos);
        char *back = eg_tokenizer_decode(tok, p.ids, p.n_tokens, 0, &err);
        CHECK(back && strstr(back, "a<end_of_utterance>b<image>c<end_of_utterance>") &&
                  strstr(back, "q</s><s><end_of_utterance>"),
              "typed text kept as written: \"%s\"", back);
        free(back);
        eg_prompt_free(&p);
    } else {
        CHECK(0, "instruct prompt: %s", err.msg);
    }
    eg_part_list_free(&pl);
    eg_template_free(t);
    eg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ template errors */

static void expect_template_error(const char *json, const char *needle) {
    EgError err = {0};
    EgTemplate *t = eg_template_parse(json, strlen(json), "models/x/egret_template.json", &err);
    CHECK(t == NULL && strstr(err.msg, "models/x/egret_template.json") && strstr(err.msg, needle),
          "template %s: want an error naming the file and \"%s\", got \"%s\"", json, needle,
          t ? "(parsed)" : err.msg);
    eg_template_free(t);
}

static void test_template_errors(void) {
    expect_template_error("{\"example\": [\"<image>\", \"{text}\"]", "invalid JSON");
    expect_template_error("[1, 2]", "not a JSON object");
    expect_template_error("{\"example\": [\"<image>\", \"{text}\"]}", "missing \"query\"");
    expect_template_error("{\"query\": [\"<image>\"]}", "missing \"example\"");
    expect_template_error("{\"example\": [\"{text}\"], \"query\": [\"<image>\"]}", "\"<image>\"");
    expect_template_error("{\"example\": [\"<image>\", \"x\"], \"query\": [\"<image>\"]}",
                          "{text}");
    expect_template_error(
        "{\"example\": [\"<image>\", \"{text}{text}\"], \"query\": [\"<image>\"]}",
        "more than once");
    expect_template_error("{\"example\": [\"<image>\", 5], \"query\": [\"<image>\"]}",
                          "not a string");
    expect_template_error("{\"example\": [\"<image>\", \"{text}\"], \"query\": [\"<image>\"], "
                          "\"stops\": [\"\\n\"]}",
                          "unknown key \"stops\"");
    expect_template_error("{\"example\": [\"<image>\", \"{text}\"], \"query\": [\"<image>\"], "
                          "\"prefix\": [\"<image>\"]}",
                          "prefix");
    EgError err = {0};
    CHECK(eg_template_load("/nonexistent/egret_template.json", &err) == NULL &&
              strstr(err.msg, "/nonexistent/egret_template.json"),
          "missing file: \"%s\"", err.msg);
    /* a folder without the file falls back to the default template */
    EgTemplate *t = eg_template_for_model("/nonexistent-model-dir", &err);
    CHECK(t != NULL && eg_template_stop_count(t) == 1, "default template fallback: %s", err.msg);
    /* prefix text, and a query without {text} refuses a query text */
    const char *js = "{\"prefix\": [\"Shapes.\\n\"], \"example\": [\"<image>\", \"A: {text}\\n\"],"
                     " \"query\": [\"<image>\", \"A:\"]}";
    EgTemplate *p = eg_template_parse(js, strlen(js), "inline", &err);
    CHECK(p != NULL, "prefix template: %s", err.msg);
    if (p) {
        EgFewShotExample ex = {"red", 3};
        EgPartList pl;
        CHECK(eg_template_build(p, &ex, 1, NULL, 0, &pl, &err) == 0 && pl.n == 5 &&
                  pl.parts[0].kind == EG_PART_TEXT && strcmp(pl.parts[0].text, "Shapes.\n") == 0 &&
                  pl.parts[1].kind == EG_PART_IMAGE && strcmp(pl.parts[2].text, "A: red\n") == 0 &&
                  pl.parts[3].kind == EG_PART_IMAGE && strcmp(pl.parts[4].text, "A:") == 0,
              "prefix layout");
        eg_part_list_free(&pl);
        CHECK(eg_template_build(p, &ex, 1, "x", 1, &pl, &err) == -1 && strstr(err.msg, "{text}"),
              "query text without a slot: \"%s\"", err.msg);
    }
    eg_template_free(p);
    eg_template_free(t);
}

int main(void) {
    EgError err = {0};
    EgTokenizer *tok = eg_tokenizer_load(test_data_path("tokenizer/tokenizer.json"), &err);
    REQUIRE(tok != NULL, "tokenizer: %s", err.msg);
    test_processor_golden(tok);
    test_shapes_cases();
    test_mask_rules(tok);
    test_end_of_utterance();
    test_template_errors();
    eg_tokenizer_free(tok);
    return test_finish();
}
