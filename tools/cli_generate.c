/* egret run / generate / caption: one set of prompt options, two ways to answer.
 *
 *   run       in-process: loads the model (--model) and answers on this machine
 *   generate  over gRPC (--server): one interleaved prompt, the answer streamed to stdout
 *   caption   over gRPC: one caption per IMAGE
 *
 * The prompt is either positional IMAGEs (one request per image, laid out with the model's
 * template, with --example pairs in front and --prompt after the image), or an ordered list of
 * --image / --text parts (one request; raw unless --example or --template asks for the
 * template). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egret/v1/egret.pb-c.h"
#include "engine/engine.h"
#include "server/proto_request.h"
#include "tools/cli.h"
#include "tools/grpc_client.h"

enum { MAX_ITEMS = 256 };

typedef enum Mode { MODE_RUN, MODE_GENERATE, MODE_CAPTION } Mode;

typedef struct Options {
    Mode mode;
    /* prompt */
    EgRequestPart parts[MAX_ITEMS];
    size_t n_parts;
    EgRequestExample examples[MAX_ITEMS];
    size_t n_examples;
    const char *prompt;
    const char *stops[MAX_ITEMS];
    EgRequest req;
    int stream;
    /* in-process */
    const char *model_dir;
    EgEngineOptions engine;
    /* client */
    const char *server;
    EgClientOptions client;
    char *api_key;
    double timeout_s;
} Options;

static const char *const COMMAND[] = {"run", "generate", "caption"};

static void usage(FILE *f, Mode mode) {
    if (mode == MODE_CAPTION)
        fprintf(f, "usage: egret caption [options] IMAGE...\n"
                   "Asks an Egret server for one caption per IMAGE.\n");
    else if (mode == MODE_GENERATE)
        fprintf(f, "usage: egret generate [options] (--image FILE | --text STR)...\n"
                   "Sends one prompt to an Egret server and streams the answer to stdout.\n");
    else
        fprintf(f, "usage: egret run [options] (IMAGE... | (--image FILE | --text STR)...)\n"
                   "Answers in-process: one caption (or few-shot answer) per IMAGE, or one\n"
                   "answer to the interleaved --image/--text prompt.\n");
    fprintf(f, "prompt:\n"
               "  --image FILE  --text STR   the prompt's parts, in order (repeatable)\n"
               "  --example IMAGE TEXT       a few-shot pair placed before the query with the\n"
               "                             model's template (repeatable)\n"
               "  --prompt TEXT              text after each IMAGE (its template's query text)\n"
               "  --template                 lay out --image/--text with the template\n"
               "generation:\n"
               "  --max-new-tokens N         default: the server's (run: 32)\n"
               "  --temperature T            0 (default) is greedy\n"
               "  --top-k K  --top-p P  --seed S  --repetition-penalty R\n"
               "  --stop STRING              (repeatable; with examples default: the template's)\n");
    if (mode == MODE_RUN)
        fprintf(f, "  --stream                   print tokens as they are generated\n"
                   "model:\n"
                   "  --model DIR                checkpoint folder (default: the demo model)\n"
                   "  --fp32                     fp32 weights and activations (default fp16)\n"
                   "  --quant q8|q4              quantize the projections' weights while loading\n"
                   "  --device INDEX|NAME        Vulkan device (default: EGRET_DEVICE, else "
                   "the best)\n");
    else
        fprintf(f, "%s"
                   "server:\n"
                   "  --example-set ID           the pairs of a registered example set (egret\n"
                   "                             examples create) in front of the query\n"
                   "  --server ADDR              host:port or unix:/path (default: "
                   "EGRET_SERVER, else 127.0.0.1:50051)\n"
                   "  --api-key-file FILE        the server's API key (default: EGRET_API_KEY)\n"
                   "  --tls-ca FILE              use TLS, trusting these PEM roots\n"
                   "  --tls-server-name NAME     the name to check in the server certificate\n"
                   "  --timeout SECONDS          deadline per request (default none)\n",
                mode == MODE_CAPTION ? "  --stream                   print tokens as they arrive\n"
                                     : "");
}

static int add_image_part(Options *o, const char *path) {
    if (o->n_parts == MAX_ITEMS) return fprintf(stderr, "egret: too many parts\n"), -1;
    EgRequestPart *p = &o->parts[o->n_parts];
    *p = (EgRequestPart){.is_image = 1};
    if (!(p->image = cli_read_file(path, &p->image_len))) return -1;
    o->n_parts++;
    return 0;
}

static void free_options(Options *o) {
    for (size_t i = 0; i < o->n_parts; i++)
        free((void *)o->parts[i].image);
    for (size_t i = 0; i < o->n_examples; i++)
        free((void *)o->examples[i].image);
    free(o->api_key);
}

/* Parses argv into o; returns 0, 1 for --help, or -1 (message printed). Positional IMAGEs are
 * left at argv[optind...]. */
static int parse(int argc, char **argv, Options *o) {
    enum {
        O_IMAGE = 256, O_TEXT, O_EXAMPLE, O_PROMPT, O_TEMPLATE, O_MAX_NEW, O_TEMP, O_TOPK, O_TOPP,
        O_SEED, O_REP, O_STOP, O_STREAM, O_MODEL, O_FP32, O_QUANT, O_DEVICE, O_SERVER, O_EXAMPLE_SET,
        O_KEYFILE, O_CA,
        O_SNI, O_TIMEOUT, O_HELP
    };
    static const struct option longopts[] = {
        {"image", required_argument, 0, O_IMAGE},
        {"text", required_argument, 0, O_TEXT},
        {"example", required_argument, 0, O_EXAMPLE},
        {"prompt", required_argument, 0, O_PROMPT},
        {"template", no_argument, 0, O_TEMPLATE},
        {"max-new-tokens", required_argument, 0, O_MAX_NEW},
        {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"stop", required_argument, 0, O_STOP},
        {"stream", no_argument, 0, O_STREAM},
        {"model", required_argument, 0, O_MODEL},
        {"fp32", no_argument, 0, O_FP32},
        {"quant", required_argument, 0, O_QUANT},
        {"device", required_argument, 0, O_DEVICE},
        {"server", required_argument, 0, O_SERVER},
        {"example-set", required_argument, 0, O_EXAMPLE_SET},
        {"api-key-file", required_argument, 0, O_KEYFILE},
        {"tls-ca", required_argument, 0, O_CA},
        {"tls-server-name", required_argument, 0, O_SNI},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    EgGenerateParams *g = &o->req.gen;
    eg_sampling_params_default(&g->sampling);
    g->max_new_tokens = o->mode == MODE_RUN ? 32 : 0;
    g->stop = o->stops;
    o->model_dir = cli_default_model();
    o->server = getenv("EGRET_SERVER") && *getenv("EGRET_SERVER") ? getenv("EGRET_SERVER")
                                                                   : "127.0.0.1:50051";
    o->stream = o->mode == MODE_GENERATE;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int is_client_opt = c >= O_SERVER && c <= O_TIMEOUT;
        int is_model_opt = c >= O_MODEL && c <= O_DEVICE;
        if ((o->mode == MODE_RUN && is_client_opt) || (o->mode != MODE_RUN && is_model_opt)) {
            fprintf(stderr, "egret %s: %s is not an option of this command\n", COMMAND[o->mode],
                    argv[optind - 1]);
            return -1;
        }
        int bad = 0;
        switch (c) {
        case O_IMAGE:
            bad = add_image_part(o, optarg);
            break;
        case O_TEXT:
            if (o->n_parts == MAX_ITEMS) return fprintf(stderr, "egret: too many parts\n"), -1;
            o->parts[o->n_parts++] = (EgRequestPart){.text = optarg, .text_len = strlen(optarg)};
            break;
        case O_EXAMPLE: {
            if (optind >= argc) {
                fprintf(stderr, "egret: --example wants two arguments: IMAGE TEXT\n");
                return -1;
            }
            if (o->n_examples == MAX_ITEMS) return fprintf(stderr, "egret: too many examples\n"), -1;
            EgRequestExample *x = &o->examples[o->n_examples];
            x->text = argv[optind++];
            x->text_len = strlen(x->text);
            if (!(x->image = cli_read_file(optarg, &x->image_len))) return -1;
            o->n_examples++;
            break;
        }
        case O_PROMPT:
            o->prompt = optarg;
            break;
        case O_TEMPLATE:
            o->req.use_template = 1;
            break;
        case O_MAX_NEW:
            bad = cli_parse_u32("max-new-tokens", optarg, &g->max_new_tokens);
            break;
        case O_TEMP:
            bad = cli_parse_float("temperature", optarg, &g->sampling.temperature);
            break;
        case O_TOPK:
            bad = cli_parse_u32("top-k", optarg, &g->sampling.top_k);
            break;
        case O_TOPP:
            bad = cli_parse_float("top-p", optarg, &g->sampling.top_p);
            break;
        case O_SEED:
            bad = cli_parse_u64("seed", optarg, &g->sampling.seed);
            break;
        case O_REP:
            bad = cli_parse_float("repetition-penalty", optarg, &g->sampling.repetition_penalty);
            break;
        case O_STOP:
            if (g->n_stop == MAX_ITEMS) return fprintf(stderr, "egret: too many stops\n"), -1;
            o->stops[g->n_stop++] = optarg;
            break;
        case O_STREAM:
            o->stream = 1;
            break;
        case O_MODEL:
            o->model_dir = optarg;
            break;
        case O_FP32:
            o->engine.model.fp32 = 1;
            break;
        case O_QUANT:
            bad = cli_parse_quant(optarg, &o->engine.model.quant);
            break;
        case O_DEVICE:
            o->engine.model.device = optarg;
            break;
        case O_SERVER:
            o->server = optarg;
            break;
        case O_KEYFILE:
            free(o->api_key);
            if (!(o->api_key = cli_read_secret(optarg))) return -1;
            break;
        case O_CA:
            o->client.tls_ca_file = optarg;
            break;
        case O_SNI:
            o->client.tls_server_name = optarg;
            break;
        case O_TIMEOUT: {
            float t;
            bad = cli_parse_float("timeout", optarg, &t);
            o->timeout_s = t;
            break;
        }
        case O_EXAMPLE_SET:
            o->req.example_set = optarg;
            break;
        case O_HELP:
            return 1;
        default:
            return -1;
        }
        if (bad) return -1;
    }
    if (!o->api_key && getenv("EGRET_API_KEY") && *getenv("EGRET_API_KEY"))
        o->api_key = strdup(getenv("EGRET_API_KEY"));
    o->client.api_key = o->api_key;
    int positional = optind < argc;
    if (o->mode == MODE_CAPTION && (!positional || o->n_parts)) {
        fprintf(stderr, "egret caption: give IMAGE files (not --image/--text)\n");
        return -1;
    }
    if (o->mode == MODE_GENERATE && (positional || !o->n_parts)) {
        fprintf(stderr, "egret generate: give the prompt as --image FILE / --text STR\n");
        return -1;
    }
    if (o->mode == MODE_RUN && positional == (o->n_parts > 0)) {
        fprintf(stderr, "egret run: give either IMAGE files or --image/--text parts\n");
        return -1;
    }
    return 0;
}

/* ---- answering ---- */

typedef struct Backend {
    Options *o;
    EgEngine *engine;
    EgClient *client;
} Backend;

static int print_text(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int print_piece(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    return print_text(user, text, len);
}


/* Answers one request, printing the text (streamed or whole) and a stats line on stderr.
 * Returns 0 or -1 (message printed). */
static int answer(Backend *b, const EgRequest *req, const char *label) {
    Options *o = b->o;
    EgError err = {0};
    if (b->engine) {
        EgGenerateResult r;
        EgRequestStats stats;
        EgStatus st = eg_engine_generate(b->engine, req, o->stream ? print_piece : NULL, NULL, &r,
                                         &stats, &err);
        if (st != EG_STATUS_OK) {
            fprintf(stderr, "%segret: %s%s%s\n", o->stream ? "\n" : "", label ? label : "",
                    label ? ": " : "", err.msg);
            return -1;
        }
        if (!o->stream) fputs(r.text, stdout);
        printf("\n");
        fflush(stdout); /* the answer before the stats line on stderr */
        fprintf(stderr,
                "egret: %u prompt tokens, %zu generated (%s), first token %.3f s, total %.3f s\n",
                stats.prompt_tokens, r.n_ids, eg_finish_reason_name(r.finish), r.prefill_s,
                r.total_s);
        eg_generate_result_free(&r);
        return 0;
    }
    EgClientAnswer a;
    EgCallStatus st;
    int rc = eg_client_generate(b->client, req, o->stream, o->timeout_s,
                                o->stream ? print_text : NULL, NULL, &a, &st, &err);
    if (rc == 0 && st.code == GRPC_STATUS_OK) {
        if (!o->stream) fputs(a.text, stdout);
        printf("\n");
        fflush(stdout);
        EgFinishReason finish =
            eg_finish_reason_from_proto((Egret__V1__FinishReason)a.finish_reason);
        fprintf(stderr,
                "egret: %u prompt tokens, %u generated (%s), first token %.3f s, total %.3f s, "
                "queued %.3f s\n",
                a.prompt_tokens, a.generated_tokens, eg_finish_reason_name(finish), a.ttft_s,
                a.total_s, a.queue_s);
    } else if (rc == 0) {
        fprintf(stderr, "%segret: %s%s%s (status %d)\n", o->stream ? "\n" : "",
                label ? label : "", label ? ": " : "", st.message, (int)st.code);
        rc = -1;
    } else {
        fprintf(stderr, "egret: %s\n", err.msg);
    }
    eg_client_answer_free(&a);
    return rc;
}

static int run_command(Mode mode, int argc, char **argv) {
    Options *o = calloc(1, sizeof *o);
    if (!o) return 1;
    o->mode = mode;
    int rc = parse(argc, argv, o);
    if (rc) {
        usage(rc > 0 ? stdout : stderr, mode);
        free_options(o);
        free(o);
        return rc > 0 ? 0 : 2;
    }
    Backend b = {o, NULL, NULL};
    EgError err = {0};
    if (mode == MODE_RUN) {
        o->engine.model.progress = stderr;
        b.engine = eg_engine_open(o->model_dir, &o->engine, &err);
    } else {
        b.client = eg_client_connect(o->server, &o->client, &err);
    }
    int failures = 0;
    if (!b.engine && !b.client) {
        fprintf(stderr, "egret: %s\n", err.msg);
        failures = 1;
    } else if (o->n_parts) {
        o->req.parts = o->parts;
        o->req.n_parts = o->n_parts;
        o->req.examples = o->examples;
        o->req.n_examples = o->n_examples;
        failures = answer(&b, &o->req, NULL) != 0;
    } else {
        int n_images = argc - optind;
        for (int i = 0; i < n_images; i++) {
            const char *path = argv[optind + i];
            EgRequestPart q[2] = {{.is_image = 1},
                                  {.text = o->prompt, .text_len = o->prompt ? strlen(o->prompt) : 0}};
            if (!(q[0].image = cli_read_file(path, &q[0].image_len))) {
                failures++;
                continue;
            }
            EgRequest req = o->req;
            req.parts = q;
            req.n_parts = o->prompt ? 2 : 1;
            req.examples = o->examples;
            req.n_examples = o->n_examples;
            req.use_template = 1;
            if (n_images > 1) printf("[%d/%d] %s: ", i + 1, n_images, path);
            fflush(stdout);
            failures += answer(&b, &req, path) != 0;
            free((void *)q[0].image);
        }
    }
    eg_engine_close(b.engine);
    eg_client_close(b.client);
    free_options(o);
    free(o);
    return failures ? 1 : 0;
}

int cli_run(int argc, char **argv) { return run_command(MODE_RUN, argc, argv); }
int cli_generate(int argc, char **argv) { return run_command(MODE_GENERATE, argc, argv); }
int cli_caption(int argc, char **argv) { return run_command(MODE_CAPTION, argc, argv); }
