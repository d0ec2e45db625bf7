/* Which prompt template a model folder gets (language/template.h eg_template_choose): a folder
 * without egret_template.json gets its family's built-in, the instruct one when its tokenizer
 * carries a chat template (tokenizer_config.json "chat_template", chat_template.json or
 * chat_template.jinja); the folder's file wins over the built-ins, a --template file over both.
 * The built-ins parse, and the Llama 3.2 Vision Instruct one lays a query out as its chat format
 * does (../shared/docs/mllama.md §7.3) through mllama's prompt rules: one BOS, the user header,
 * the image, the text, <|eot_id|>, the assistant header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/mllama/prompt.h"
#include "language/template.h"
#include "test_util.h"

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(test_write_file(path, text, strlen(text)) == 0, "cannot write %s", path);
}

static void remove_file(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void expect_choice(const char *dir, const char *family, const char *override,
                          const char *want) {
    EgError err = {0};
    EgTemplate *t = eg_template_choose(dir, family, override, &err);
    CHECK(t != NULL, "%s / %s: %s", family, want, err.msg);
    if (!t) return;
    const char *name = eg_template_name(t);
    int ok = strncmp(want, "file:", 5) == 0
                 ? strncmp(name, "file:", 5) == 0 && strstr(name, want + 5) != NULL
                 : strcmp(name, want) == 0;
    CHECK(ok, "%s: template %s, want %s", family, name, want);
    eg_template_free(t);
}

static void check_choice(void) {
    char dir[] = "/tmp/egret-template-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp failed");
        return;
    }
    /* a base folder: no chat template */
    write_file(dir, "tokenizer_config.json", "{\"bos_token\": \"<|begin_of_text|>\"}");
    expect_choice(dir, "mllama", NULL, "mllama");
    expect_choice(dir, "idefics", NULL, "idefics");
    /* an Instruct folder: the chat template in tokenizer_config.json, or in its own file */
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"{{ bos_token }}...\"}");
    expect_choice(dir, "mllama", NULL, "mllama-instruct");
    expect_choice(dir, "idefics", NULL, "idefics-instruct");
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"\"}");
    expect_choice(dir, "mllama", NULL, "mllama");
    write_file(dir, "chat_template.jinja", "{{ bos_token }}");
    expect_choice(dir, "mllama", NULL, "mllama-instruct");
    remove_file(dir, "chat_template.jinja");
    write_file(dir, "chat_template.json", "{\"chat_template\": \"{{ bos_token }}\"}");
    expect_choice(dir, "mllama", NULL, "mllama-instruct");
    /* the folder's file, then an override file */
    const char *file = "{\"example\": [\"<image>\", \"A: {text}\\n\"], \"query\": [\"<image>\", "
                       "\"A: {text}\"]}";
    write_file(dir, "egret_template.json", file);
    expect_choice(dir, "mllama", NULL, "file:egret_template.json");
    write_file(dir, "other.json", file);
    char other[512];
    snprintf(other, sizeof other, "%s/other.json", dir);
    expect_choice(dir, "mllama", other, "file:other.json");
    /* a broken folder file is an error, not a silent fallback */
    write_file(dir, "egret_template.json", "{\"example\": 1}");
    EgError err = {0};
    EgTemplate *t = eg_template_choose(dir, "mllama", NULL, &err);
    CHECK(t == NULL && strstr(err.msg, "egret_template.json"), "broken file accepted (%s)",
          err.msg);
    eg_template_free(t);
    const char *names[] = {"tokenizer_config.json", "chat_template.json", "egret_template.json",
                           "other.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        remove_file(dir, names[i]);
    rmdir(dir);
    CHECK(eg_template_builtin("llava", &err) == NULL && strstr(err.msg, "llava"),
          "unknown built-in accepted");
}

/* The Instruct template's query through mllama's prompt rules. */
static void check_mllama_instruct(void) {
    EgError err = {0};
    EgTemplate *t = eg_template_builtin("mllama-instruct", &err);
    EgTokenizer *tok = eg_tokenizer_load(test_data_path("mllama/tokenizer/tokenizer.json"), &err);
    CHECK(t && tok, "%s", err.msg);
    if (!t || !tok) {
        eg_template_free(t);
        eg_tokenizer_free(tok);
        return;
    }
    const char *q = "Describe this image in two sentences";
    EgPartList list = {0};
    EgPrompt p = {0};
    int rc = eg_template_build(t, NULL, 0, q, strlen(q), &list, &err) ||
             eg_mllama_prompt_build(tok, list.parts, list.n, &p, &err);
    CHECK(rc == 0, "%s", err.msg);
    if (rc == 0) {
        int32_t bos = eg_tokenizer_find(tok, "<|begin_of_text|>");
        int32_t start = eg_tokenizer_find(tok, "<|start_header_id|>");
        int32_t end = eg_tokenizer_find(tok, "<|end_header_id|>");
        int32_t img = eg_tokenizer_find(tok, "<|image|>");
        int32_t eot = eg_tokenizer_find(tok, "<|eot_id|>");
        int n_bos = 0, n_img = 0, n_eot = 0, n_start = 0;
        for (size_t i = 0; i < p.n_tokens; i++) {
            n_bos += p.ids[i] == bos;
            n_img += p.ids[i] == img;
            n_eot += p.ids[i] == eot;
            n_start += p.ids[i] == start;
        }
        CHECK(p.n_tokens > 8 && p.ids[0] == bos && p.ids[1] == start && n_bos == 1 && n_img == 1 &&
                  n_eot == 1 && n_start == 2,
              "instruct prompt: %zu tokens, %d BOS, %d images, %d eot", p.n_tokens, n_bos, n_img,
              n_eot);
        /* it ends with the assistant header and "\n\n" */
        size_t last_end = p.n_tokens;
        while (last_end > 0 && p.ids[last_end - 1] != end)
            last_end--;
        char *tail =
            last_end ? eg_tokenizer_decode(tok, p.ids + last_end, p.n_tokens - last_end, 0, &err)
                     : NULL;
        CHECK(tail && strcmp(tail, "\n\n") == 0, "instruct prompt ends with '%s'",
              tail ? tail : "(no header)");
        free(tail);
        /* the user's text is plain: the same ids as the text tokenized alone */
        int32_t *alone = NULL;
        size_t n_alone = 0;
        CHECK(eg_tokenizer_encode(tok, q, strlen(q), 0, &alone, &n_alone, &err) == 0, "%s",
              err.msg);
        size_t at = 0;
        while (at < p.n_tokens && p.ids[at] != img)
            at++;
        int same = at + 1 + n_alone < p.n_tokens;
        for (size_t i = 0; same && i < n_alone; i++)
            same = p.ids[at + 1 + i] == alone[i];
        CHECK(same && p.ids[at + 1 + n_alone] == eot,
              "the query text is not right after the image");
        free(alone);
    }
    eg_prompt_free(&p);
    eg_part_list_free(&list);
    eg_template_free(t);
    eg_tokenizer_free(tok);
}

int main(void) {
    check_choice();
    check_mllama_instruct();
    const char *builtins[] = {"idefics", "idefics-instruct", "mllama", "mllama-instruct"};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        EgError err = {0};
        EgTemplate *t = eg_template_builtin(builtins[i], &err);
        CHECK(t && strcmp(eg_template_name(t), builtins[i]) == 0, "%s: %s", builtins[i], err.msg);
        eg_template_free(t);
    }
    return test_finish();
}
