/* egret: the Vulkan IDEFICS engine's command line. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/buf.h"
#include "tools/cli.h"

static void usage(FILE *f) {
    fprintf(f, "usage: egret COMMAND [options]\n\n"
               "commands:\n"
               "  devices    list the Vulkan devices (choose one with EGRET_DEVICE=index|name)\n"
               "  serve      serve a model over gRPC (egret.v1.Egret and grpc.health.v1.Health)\n"
               "  caption    ask a server for one caption per image\n"
               "  generate   send a server an interleaved or few-shot prompt, stream the answer\n"
               "  examples   a server's example sets: create, list, get, delete\n"
               "  run        caption images or answer prompts in-process, without a server\n"
               "  bench      time the image stage, prefill and decode (JSON for bench/compare)\n"
               "  eval       accuracy of fp16/q8/q4 against fp32: KL, top-1, answers right\n"
               "  forward    run a model on raw token ids and normalized pixels (developer tool)\n"
               "  draw       draw shapes-world scenes (PNG) with their true captions and answers\n"
               "  loadtest   load-test a running server: concurrent mixed requests, checked outcomes\n"
               "  quantize   write a checkpoint folder with its projections stored as q8 or q4\n"
               "\nRun `egret COMMAND --help` for a command's options.\n");
}

const char *cli_default_model(void) {
    const char *env = getenv("EGRET_MODEL");
    return env && *env ? env : EGRET_DEFAULT_MODEL;
}

long cli_parse_int_list(const char *s, int32_t **out) {
    EgBuf v = {0};
    while (*s) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < INT32_MIN || x > INT32_MAX) {
            fprintf(stderr, "egret: not a list of integers: '%s'\n", s);
            eg_buf_free(&v);
            return -1;
        }
        int32_t id = (int32_t)x;
        if (eg_buf_append(&v, &id, sizeof id)) {
            eg_buf_free(&v);
            return -1;
        }
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            fprintf(stderr, "egret: unexpected '%c' in a list of integers\n", *end);
            eg_buf_free(&v);
            return -1;
        }
    }
    long n = (long)(v.len / sizeof(int32_t));
    *out = (int32_t *)eg_buf_take(&v);
    return *out ? n : -1;
}

void *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "egret: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Strict number parsing: the whole argument, in range, or a message naming the option. */
char *cli_read_secret(const char *path) {
    size_t len;
    char *key = cli_read_file(path, &len);
    while (key && len && (key[len - 1] == '\n' || key[len - 1] == '\r'))
        key[--len] = '\0';
    if (key && !*key) {
        fprintf(stderr, "egret: %s is empty\n", path);
        free(key);
        return NULL;
    }
    return key;
}

int cli_parse_u64_in(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    /* digits only: strtoull would also take leading space and a sign (and negate) */
    if (*s < '0' || *s > '9' || *end || errno == ERANGE || v < lo || v > hi) {
        if (lo > 0 || hi < UINT32_MAX)
            fprintf(stderr,
                    "egret: --%s wants a whole number from %" PRIu64 " to %" PRIu64 ", got '%s'\n",
                    opt, lo, hi, s);
        else
            fprintf(stderr, "egret: --%s wants a whole number, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_u32(const char *opt, const char *s, uint32_t *out) {
    uint64_t v;
    if (cli_parse_u64_in(opt, s, 0, UINT32_MAX, &v)) return -1;
    *out = (uint32_t)v;
    return 0;
}

int cli_parse_quant(const char *s, EgWeightFormat *out) {
    EgError err = {0};
    if (eg_weight_format_parse(s, out, &err) == 0) return 0;
    fprintf(stderr, "egret: --quant: %s\n", err.msg);
    return -1;
}

int cli_parse_u64(const char *opt, const char *s, uint64_t *out) {
    return cli_parse_u64_in(opt, s, 0, UINT64_MAX, out);
}

int cli_parse_float(const char *opt, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "egret: --%s wants a number, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "devices") == 0) return cli_devices(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0) return cli_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") == 0) return cli_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "bench") == 0) return cli_bench(argc - 1, argv + 1);
    if (strcmp(argv[1], "caption") == 0) return cli_caption(argc - 1, argv + 1);
    if (strcmp(argv[1], "generate") == 0) return cli_generate(argc - 1, argv + 1);
    if (strcmp(argv[1], "eval") == 0) return cli_eval(argc - 1, argv + 1);
    if (strcmp(argv[1], "forward") == 0) return cli_forward(argc - 1, argv + 1);
    if (strcmp(argv[1], "draw") == 0) return cli_draw(argc - 1, argv + 1);
    if (strcmp(argv[1], "examples") == 0) return cli_examples(argc - 1, argv + 1);
    if (strcmp(argv[1], "loadtest") == 0) return cli_loadtest(argc - 1, argv + 1);
    if (strcmp(argv[1], "quantize") == 0) return cli_quantize(argc - 1, argv + 1);
    fprintf(stderr, "egret: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
