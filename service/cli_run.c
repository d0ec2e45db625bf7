/* egret run: captions images, or answers a few-shot prompt, from the command line. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/cli.h"
#include "service/engine.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: egret run [options] IMAGE...\n"
           "Captions each IMAGE with the model's prompt template, or, with --example, answers\n"
           "for each IMAGE the task the examples show.\n"
           "  --model DIR            checkpoint folder (default: the bundled demo model)\n"
           "  --example IMAGE=TEXT   a few-shot example pair (repeatable)\n"
           "  --prompt TEXT          text after the query image's template prefix\n"
           "  --max-new-tokens N     default 32\n"
           "  --temperature T        0 (default) is greedy\n"
           "  --top-k K  --top-p P  --seed S  --stop STRING (repeatable; default: the template's)\n"
           "  --stream               print tokens as they are generated\n"
           "  --fp32                 fp32 weights and activations (default: fp16)\n"
           "  --device INDEX|NAME    Vulkan device (default: EGRET_DEVICE, else the best)\n");
}

static int print_piece(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

typedef struct Example {
    char *image;
    size_t image_len;
    const char *text;
} Example;

int cli_run(int argc, char **argv) {
    static struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                       {"example", required_argument, 0, 'e'},
                                       {"prompt", required_argument, 0, 'p'},
                                       {"max-new-tokens", required_argument, 0, 'n'},
                                       {"temperature", required_argument, 0, 't'},
                                       {"top-k", required_argument, 0, 'k'},
                                       {"top-p", required_argument, 0, 'P'},
                                       {"seed", required_argument, 0, 's'},
                                       {"stop", required_argument, 0, 'S'},
                                       {"stream", no_argument, 0, 'r'},
                                       {"fp32", no_argument, 0, 'f'},
                                       {"device", required_argument, 0, 'D'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *model_dir = cli_default_model(), *prompt = NULL;
    const char *stops[16];
    size_t n_stop = 0, n_examples = 0;
    Example examples[64];
    EgEngineOptions eo = {0};
    EgRequest req = {.gen = {.max_new_tokens = 32}};
    eg_sampling_params_default(&req.gen.sampling);
    int stream = 0, c, rc = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_dir = optarg;
            break;
        case 'e': {
            char *eq = strchr(optarg, '=');
            if (!eq || n_examples == 64) {
                fprintf(stderr, "egret: --example wants IMAGE=TEXT (at most 64)\n");
                goto done;
            }
            *eq = '\0';
            Example *x = &examples[n_examples];
            x->image = cli_read_file(optarg, &x->image_len);
            x->text = eq + 1;
            if (!x->image) goto done;
            n_examples++;
            break;
        }
        case 'p':
            prompt = optarg;
            break;
        case 'n':
            req.gen.max_new_tokens = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 't':
            req.gen.sampling.temperature = strtof(optarg, NULL);
            break;
        case 'k':
            req.gen.sampling.top_k = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'P':
            req.gen.sampling.top_p = strtof(optarg, NULL);
            break;
        case 's':
            req.gen.sampling.seed = strtoull(optarg, NULL, 10);
            break;
        case 'S':
            if (n_stop < 16) stops[n_stop++] = optarg;
            break;
        case 'r':
            stream = 1;
            break;
        case 'f':
            eo.model.fp32 = 1;
            break;
        case 'D':
            eo.model.device = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        goto done;
    }
    EgError err = {{0}};
    eo.model.progress = stderr;
    EgEngine *e = eg_engine_open(model_dir, &eo, &err);
    if (!e) {
        fprintf(stderr, "egret: %s\n", err.msg);
        goto done;
    }
    EgRequestExample rex[64];
    for (size_t i = 0; i < n_examples; i++)
        rex[i] = (EgRequestExample){examples[i].image, examples[i].image_len, examples[i].text,
                                    strlen(examples[i].text)};
    req.examples = rex;
    req.n_examples = n_examples;
    req.use_template = 1;
    req.gen.stop = stops;
    req.gen.n_stop = n_stop;
    int n_images = argc - optind, failures = 0;
    for (int i = 0; i < n_images; i++) {
        const char *path = argv[optind + i];
        size_t len;
        void *bytes = cli_read_file(path, &len);
        if (!bytes) {
            failures++;
            continue;
        }
        EgRequestPart parts[2] = {{.is_image = 1, .image = bytes, .image_len = len},
                                  {.text = prompt, .text_len = prompt ? strlen(prompt) : 0}};
        req.parts = parts;
        req.n_parts = prompt ? 2 : 1;
        if (n_images > 1) printf("[%d/%d] %s: ", i + 1, n_images, path);
        fflush(stdout);
        EgGenerateResult r;
        EgRequestStats stats;
        EgStatus st =
            eg_engine_generate(e, &req, stream ? print_piece : NULL, NULL, &r, &stats, &err);
        if (st != EG_STATUS_OK) {
            fprintf(stderr, "%segret: %s: %s\n", n_images > 1 ? "\n" : "", path, err.msg);
            failures++;
        } else {
            if (!stream) fputs(r.text, stdout);
            printf("\n");
            fprintf(
                stderr,
                "egret: %u prompt tokens, %zu generated (%s), first token %.3f s, total %.3f s\n",
                stats.prompt_tokens, r.n_ids, eg_finish_reason_name(r.finish), r.prefill_s,
                r.total_s);
            eg_generate_result_free(&r);
        }
        free(bytes);
    }
    eg_engine_close(e);
    rc = failures ? 1 : 0;
done:
    for (size_t i = 0; i < n_examples; i++)
        free(examples[i].image);
    return rc;
}
