/* egret serve: loads a model and serves it over gRPC until SIGTERM / SIGINT (which drain). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "engine/scheduler.h"
#include "runtime/vk_pipeline_cache.h"
#include "server/grpc_server.h"
#include "server/metrics_http.h"
#include "tools/cli.h"
#include "tools/serve_warmup.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: egret serve [options]\n"
            "Serves egret.v1.Egret and grpc.health.v1.Health until SIGTERM or SIGINT, which\n"
            "drain: health turns NOT_SERVING, the listening socket closes, connections get\n"
            "GOAWAY (no new calls), calls in flight get the grace period to finish and are\n"
            "then cancelled. A second signal cancels at once.\n"
            "  --model DIR                  checkpoint folder (default: the bundled demo model)\n"
            "  --listen ADDR                host:port or unix:/path (default 127.0.0.1:50051)\n"
            "  --device INDEX|NAME          Vulkan device (default: EGRET_DEVICE, else the best)\n"
            "  --fp32                       fp32 weights and activations (default fp16)\n"
            "  --quant q8|q4                quantize the projections' weights while loading\n"
            "  --template FILE              the prompt template (docs/prompt-templates.md);\n"
            "                               default: the folder's egret_template.json, else\n"
            "                               the built-in one for its family, base or instruct\n"
            "start:\n"
            "  --pipeline-cache DIR|off     keep the driver's compiled pipelines in DIR, per\n"
            "                               device, driver and Egret build (default\n"
            "                               $XDG_CACHE_HOME/egret, else ~/.cache/egret)\n"
            "  --no-warmup                  say SERVING without running every kind of request\n"
            "                               once first (the first requests then pay the\n"
            "                               driver's shader compiles)\n"
            "limits (over a limit: RESOURCE_EXHAUSTED naming it):\n"
            "  --max-request-bytes N        largest request message, inflated when the client\n"
            "                               compressed it (default 64 MiB)\n"
            "  --max-images N               images per request, examples included (default 16)\n"
            "  --max-image-pixels N         width x height of one image (default %llu)\n"
            "  --max-image-side N           width or height of one image (default %u)\n"
            "  --max-request-pixels N       width x height of all of a request's images, as\n"
            "                               their headers declare them, checked before any is\n"
            "                               decoded (default %u x max-image-pixels)\n"
            "  --context-length N           prompt + new tokens (default: the model's)\n"
            "  --max-new-tokens N           per request (default 1024)\n"
            "  --default-max-new-tokens N   when a request sets none (default 128)\n"
            "  --max-queue N                requests waiting for the engine (default 64)\n"
            "  --request-memory-bytes N     memory all requests may hold together: decoded\n"
            "                               requests queued or running, and gRPC's buffers of\n"
            "                               messages still arriving (default 8 x\n"
            "                               max-request-bytes: 512 MiB)\n"
            "  --max-streams-per-connection N   calls open at once on one connection (default\n"
            "                               100; more wait in the client)\n"
            "  --max-batch N                requests decoding together (default 8, at most 16)\n"
            "  --prefill-chunk N            prompt tokens per engine step, so requests already\n"
            "                               decoding keep streaming during a long prompt\n"
            "                               (default 256)\n"
            "  --decode-workers N           threads decoding request images beside the engine,\n"
            "                               which keeps streaming meanwhile (default half the\n"
            "                               cores, 1 to 8: %u here)\n"
            "  --grace SECONDS              drain grace period (default 30)\n"
            "  --print-settings             print what these options come to (listen address,\n"
            "                               port, grace, model; defaults where not given) as\n"
            "                               JSON and exit, for checking deployment files\n"
            "connections (durations in seconds; 0 turns idle and age limits off):\n"
            "  --max-connections N          live at once; more are closed as they come, and a\n"
            "                               connection that has not spoken yet makes room\n"
            "                               (default: from the descriptor limit, which is\n"
            "                               raised to its hard limit at start; at most 4096)\n"
            "  --handshake-timeout S        to send the HTTP/2 preface, with TLS to finish its\n"
            "                               handshake too (default 15)\n"
            "  --max-connection-idle S      closed after this long without calls (default 300)\n"
            "  --max-connection-age S       asked to reconnect after this long (default 1800)\n"
            "  --max-connection-age-grace S calls then get this long to finish (default 60)\n"
            "reuse across requests (0 turns a cache off):\n"
            "  --image-cache-mb N           images' cross-attention keys/values (default 256)\n"
            "  --prefix-cache-entries N     sequences kept for prompts that start alike (default 4)\n"
            "  --prefix-cache-mb N          their device memory (default 1024)\n"
            "example sets (CreateExampleSet; kept apart, never evicted by other traffic):\n"
            "  --example-sets-mb N          memory all sets may hold (default 512; 0: none)\n"
            "  --max-example-sets N         sets held at once (default 64; 0: none)\n"
            "  --example-sets-dir DIR       keep sets' pairs here and register them at start\n"
            "operations:\n"
            "  --metrics-listen ADDR        serve Prometheus metrics at http://ADDR/metrics\n"
            "                               (host:port; default off; docs/metrics.md)\n"
            "  --log-format text|json       the request log on stderr: one line per request,\n"
            "                               as text (default) or one JSON object\n"
            "security:\n"
            "  --tls-cert FILE --tls-key FILE   serve TLS with this PEM certificate chain and key\n"
            "  --api-key-file FILE          require this key (default: EGRET_API_KEY) in\n"
            "                               'authorization: Bearer KEY' or 'x-api-key: KEY'\n"
            "                               (unknown methods too; health checks need none)\n"
            "requests: text is UTF-8 without U+0000, stop strings too (INVALID_ARGUMENT);\n"
            "text is plain text: '<image>', '</s>' and other special-token strings typed in it\n"
            "are not tokens. Client strings in the log are escaped.\n",
            (unsigned long long)EG_IMAGE_DEFAULT_MAX_PIXELS, EG_IMAGE_DEFAULT_MAX_SIDE,
            EG_ENGINE_REQUEST_PIXELS_FACTOR, eg_scheduler_default_decode_workers());
}

/* What deployment files must agree with (tests/test_deploy_manifests.py reads it): the
 * server's own defaults with the options given applied, rather than copies of the numbers. */
static int print_settings_json(const char *model_dir, const EgServerOptions *given) {
    EgServerOptions o = *given;
    eg_server_apply_defaults(&o);
    const char *colon = strrchr(o.listen, ':');
    int port = colon && strncmp(o.listen, "unix", 4) != 0 ? atoi(colon + 1) : 0;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", model_dir);
    cJSON_AddStringToObject(j, "listen", o.listen);
    cJSON_AddNumberToObject(j, "port", port);
    cJSON_AddNumberToObject(j, "grace_s", o.grace_s);
    cJSON_AddNumberToObject(j, "handshake_timeout_s", o.handshake_timeout_s);
    cJSON_AddNumberToObject(j, "max_connection_idle_s", o.max_connection_idle_s);
    cJSON_AddNumberToObject(j, "max_connection_age_s", o.max_connection_age_s);
    cJSON_AddNumberToObject(j, "max_connection_age_grace_s", o.max_connection_age_grace_s);
    cJSON_AddStringToObject(j, "health_service", "grpc.health.v1.Health");
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) {
        fprintf(stderr, "egret: out of host memory\n");
        return 1;
    }
    puts(text);
    cJSON_free(text);
    return 0;
}

/* The address served, with the port bound when the one asked for was 0 (so that a test or a
 * supervisor can start replicas on free ports and read back where each one is). */
static void print_serving(const char *model_dir, const EgServerOptions *so, const EgServer *s,
                          const char *api_key) {
    const char *addr = so->listen ? so->listen : "127.0.0.1:50051";
    const char *colon = strrchr(addr, ':');
    int port = eg_server_port(s);
    if (port > 0 && colon && strncmp(addr, "unix", 4) != 0)
        fprintf(stderr, "egret: serving %s on %.*s:%d", model_dir, (int)(colon - addr), addr,
                port);
    else
        fprintf(stderr, "egret: serving %s on %s", model_dir, addr);
    fprintf(stderr, "%s%s\n", so->tls_cert_file ? " (TLS)" : "",
            api_key ? " (API key required)" : "");
    fflush(stderr);
}

static EgServer *volatile g_server;

/* Every connection costs descriptors, and the usual soft limit (1024) is far below the hard one:
 * take what the system allows. */
static void raise_descriptor_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = was;
    }
    fprintf(stderr, "egret: descriptor limit %llu (was %llu)\n", (unsigned long long)rl.rlim_cur,
            (unsigned long long)was);
}

/* A duration option in seconds. With zero_is_off, 0 turns the limit off (EgServerOptions spells
 * that as negative); otherwise it must be above 0. */
static int parse_seconds(const char *name, const char *arg, int zero_is_off, double *out) {
    float v = 0;
    if (cli_parse_float(name, arg, &v)) return -1;
    if (zero_is_off ? v < 0 : !(v > 0)) {
        fprintf(stderr, "egret: --%s wants seconds %s, got '%s'\n", name,
                zero_is_off ? ">= 0" : "> 0", arg);
        return -1;
    }
    *out = v > 0 ? v : -1;
    return 0;
}

static int run_warmup(EgEngine *engine, uint32_t max_batch, EgError *err) {
    EgWarmupReport r;
    if (eg_serve_warmup(engine, max_batch ? max_batch : EG_SERVER_DEFAULT_MAX_BATCH, &r, err))
        return -1;
    fprintf(stderr, "egret: warm-up: %u requests, %llu pipelines run for the first time, %.2f s\n",
            r.requests, (unsigned long long)r.pipelines, r.seconds);
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    if (g_server) eg_server_drain(g_server);
}

int cli_serve(int argc, char **argv) {
    enum {
        O_MODEL = 256, O_LISTEN, O_DEVICE, O_FP32, O_QUANT, O_REQ_BYTES, O_IMAGES, O_PIXELS, O_SIDE,
        O_CONTEXT, O_MAX_NEW, O_DEFAULT_NEW, O_QUEUE, O_GRACE, O_CERT, O_KEY, O_KEYFILE, O_HELP,
        O_IMAGE_CACHE, O_PREFIX_ENTRIES, O_PREFIX_MB, O_BATCH, O_CHUNK, O_MAX_CONN,
        O_HANDSHAKE, O_IDLE, O_AGE, O_AGE_GRACE, O_REQ_MEMORY, O_STREAMS, O_REQ_PIXELS,
        O_DECODERS, O_SETS_MB, O_MAX_SETS, O_SETS_DIR, O_PRINT_SETTINGS, O_NO_WARMUP,
        O_PIPELINE_CACHE, O_METRICS, O_LOG_FORMAT, O_TEMPLATE
    };
    static const struct option longopts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"listen", required_argument, 0, O_LISTEN},
        {"device", required_argument, 0, O_DEVICE},
        {"fp32", no_argument, 0, O_FP32},
        {"quant", required_argument, 0, O_QUANT},
        {"template", required_argument, 0, O_TEMPLATE},
        {"max-request-bytes", required_argument, 0, O_REQ_BYTES},
        {"max-images", required_argument, 0, O_IMAGES},
        {"max-image-pixels", required_argument, 0, O_PIXELS},
        {"max-image-side", required_argument, 0, O_SIDE},
        {"max-request-pixels", required_argument, 0, O_REQ_PIXELS},
        {"decode-workers", required_argument, 0, O_DECODERS},
        {"context-length", required_argument, 0, O_CONTEXT},
        {"max-new-tokens", required_argument, 0, O_MAX_NEW},
        {"default-max-new-tokens", required_argument, 0, O_DEFAULT_NEW},
        {"max-queue", required_argument, 0, O_QUEUE},
        {"request-memory-bytes", required_argument, 0, O_REQ_MEMORY},
        {"max-streams-per-connection", required_argument, 0, O_STREAMS},
        {"max-batch", required_argument, 0, O_BATCH},
        {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"grace", required_argument, 0, O_GRACE},
        {"max-connections", required_argument, 0, O_MAX_CONN},
        {"handshake-timeout", required_argument, 0, O_HANDSHAKE},
        {"max-connection-idle", required_argument, 0, O_IDLE},
        {"max-connection-age", required_argument, 0, O_AGE},
        {"max-connection-age-grace", required_argument, 0, O_AGE_GRACE},
        {"tls-cert", required_argument, 0, O_CERT},
        {"tls-key", required_argument, 0, O_KEY},
        {"api-key-file", required_argument, 0, O_KEYFILE},
        {"image-cache-mb", required_argument, 0, O_IMAGE_CACHE},
        {"prefix-cache-entries", required_argument, 0, O_PREFIX_ENTRIES},
        {"prefix-cache-mb", required_argument, 0, O_PREFIX_MB},
        {"example-sets-mb", required_argument, 0, O_SETS_MB},
        {"max-example-sets", required_argument, 0, O_MAX_SETS},
        {"example-sets-dir", required_argument, 0, O_SETS_DIR},
        {"no-warmup", no_argument, 0, O_NO_WARMUP},
        {"pipeline-cache", required_argument, 0, O_PIPELINE_CACHE},
        {"metrics-listen", required_argument, 0, O_METRICS},
        {"log-format", required_argument, 0, O_LOG_FORMAT},
        {"help", no_argument, 0, O_HELP},
        {"print-settings", no_argument, 0, O_PRINT_SETTINGS},
        {0, 0, 0, 0}};
    const char *model_dir = cli_default_model();
    EgEngineOptions eo = {0};
    uint32_t cache_value = 0;
    EgServerOptions so = {0};
    eg_image_limits_default(&eo.limits.image);
    char *api_key = NULL;
    uint32_t side = 0;
    float grace = 0;
    int c, bad = 0, print_settings = 0, warmup = 1;
    const char *pipeline_cache = eg_pipeline_cache_default_dir();
    const char *metrics_listen = NULL;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_MODEL:
            model_dir = optarg;
            break;
        case O_LISTEN:
            so.listen = optarg;
            break;
        case O_DEVICE:
            eo.model.device = optarg;
            break;
        case O_FP32:
            eo.model.fp32 = 1;
            break;
        case O_QUANT:
            bad = cli_parse_quant(optarg, &eo.model.quant);
            break;
        case O_TEMPLATE:
            eo.template_path = optarg;
            break;
        case O_REQ_BYTES:
            bad = cli_parse_u32("max-request-bytes", optarg, &so.max_request_bytes);
            break;
        case O_IMAGES:
            bad = cli_parse_u32("max-images", optarg, &eo.limits.max_images);
            break;
        case O_PIXELS:
            bad = cli_parse_u64("max-image-pixels", optarg, &eo.limits.image.max_pixels);
            break;
        case O_SIDE:
            bad = cli_parse_u32("max-image-side", optarg, &side);
            eo.limits.image.max_width = eo.limits.image.max_height = side;
            break;
        case O_REQ_PIXELS:
            bad = cli_parse_u64("max-request-pixels", optarg, &eo.limits.max_request_pixels);
            break;
        case O_DECODERS:
            bad = cli_parse_u32("decode-workers", optarg, &so.decode_workers);
            break;
        case O_CONTEXT:
            bad = cli_parse_u32("context-length", optarg, &eo.limits.context_length);
            break;
        case O_MAX_NEW:
            bad = cli_parse_u32("max-new-tokens", optarg, &eo.limits.max_new_tokens);
            break;
        case O_DEFAULT_NEW:
            bad = cli_parse_u32("default-max-new-tokens", optarg, &so.default_max_new_tokens);
            break;
        case O_QUEUE:
            bad = cli_parse_u32("max-queue", optarg, &so.max_queue);
            break;
        case O_REQ_MEMORY:
            bad = cli_parse_u64("request-memory-bytes", optarg, &so.request_memory_bytes);
            break;
        case O_STREAMS:
            bad = cli_parse_u32("max-streams-per-connection", optarg,
                                &so.max_streams_per_connection);
            break;
        case O_BATCH:
            bad = cli_parse_u32("max-batch", optarg, &so.max_batch);
            break;
        case O_CHUNK:
            bad = cli_parse_u32("prefill-chunk", optarg, &eo.prefill_chunk);
            break;
        case O_GRACE:
            bad = cli_parse_float("grace", optarg, &grace);
            so.grace_s = grace;
            break;
        case O_MAX_CONN:
            bad = cli_parse_u32("max-connections", optarg, &so.max_connections);
            if (!bad && !so.max_connections) {
                fprintf(stderr, "egret: --max-connections wants at least 1\n");
                bad = 1;
            }
            break;
        case O_HANDSHAKE:
            bad = parse_seconds("handshake-timeout", optarg, 0, &so.handshake_timeout_s);
            break;
        case O_IDLE:
            bad = parse_seconds("max-connection-idle", optarg, 1, &so.max_connection_idle_s);
            break;
        case O_AGE:
            bad = parse_seconds("max-connection-age", optarg, 1, &so.max_connection_age_s);
            break;
        case O_AGE_GRACE:
            bad = parse_seconds("max-connection-age-grace", optarg, 0,
                                &so.max_connection_age_grace_s);
            break;
        case O_CERT:
            so.tls_cert_file = optarg;
            break;
        case O_KEY:
            so.tls_key_file = optarg;
            break;
        case O_KEYFILE:
            free(api_key);
            bad = !(api_key = cli_read_secret(optarg));
            break;
        case O_IMAGE_CACHE: /* the engine's convention: 0 default, negative off */
            bad = cli_parse_u32("image-cache-mb", optarg, &cache_value);
            eo.caches.image_cache_mb = cache_value ? (long)cache_value : -1;
            break;
        case O_PREFIX_ENTRIES:
            bad = cli_parse_u32("prefix-cache-entries", optarg, &cache_value);
            eo.caches.prefix_cache_entries = cache_value ? (long)cache_value : -1;
            break;
        case O_PREFIX_MB:
            bad = cli_parse_u32("prefix-cache-mb", optarg, &cache_value);
            eo.caches.prefix_cache_mb = cache_value ? (long)cache_value : -1;
            break;
        case O_SETS_MB:
            bad = cli_parse_u32("example-sets-mb", optarg, &cache_value);
            eo.caches.example_sets_mb = cache_value ? (long)cache_value : -1;
            break;
        case O_MAX_SETS:
            bad = cli_parse_u32("max-example-sets", optarg, &cache_value);
            eo.caches.max_example_sets = cache_value ? (long)cache_value : -1;
            break;
        case O_SETS_DIR:
            so.example_sets_dir = optarg;
            break;
        case O_PIPELINE_CACHE:
            pipeline_cache = strcmp(optarg, "off") == 0 ? NULL : optarg;
            break;
        case O_METRICS: {
            EgError addr_err = {0};
            metrics_listen = optarg;
            if (eg_metrics_http_check_addr(optarg, &addr_err)) {
                fprintf(stderr, "egret: %s\n", addr_err.msg);
                bad = 1;
            }
            break;
        }
        case O_LOG_FORMAT:
            if (strcmp(optarg, "json") == 0 || strcmp(optarg, "text") == 0) {
                so.log_json = strcmp(optarg, "json") == 0;
            } else {
                fprintf(stderr, "egret: --log-format wants text or json, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_NO_WARMUP:
            warmup = 0;
            break;
        case O_HELP:
            usage(stdout);
            free(api_key);
            return 0;
        case O_PRINT_SETTINGS:
            print_settings = 1;
            break;
        default:
            bad = 1;
        }
    }
    if (bad || optind < argc) {
        if (!bad) fprintf(stderr, "egret serve: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        free(api_key);
        return 2;
    }
    if (print_settings) {
        free(api_key);
        return print_settings_json(model_dir, &so);
    }
    if (!api_key && getenv("EGRET_API_KEY") && *getenv("EGRET_API_KEY"))
        api_key = strdup(getenv("EGRET_API_KEY"));
    so.api_key = api_key;

    raise_descriptor_limit();
    EgError err = {0};
    eo.model.progress = stderr;
    eo.model.pipeline_cache_dir = pipeline_cache;
    EgEngine *engine = eg_engine_open(model_dir, &eo, &err);
    if (!engine) {
        fprintf(stderr, "egret: %s\n", err.msg);
        free(api_key);
        return 1;
    }
    /* before the server binds: nothing answers, health included, until requests run warm */
    if (warmup && run_warmup(engine, so.max_batch, &err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        eg_engine_close(engine);
        free(api_key);
        return 1;
    }
    EgServer *server = eg_server_start(engine, &so, &err);
    if (!server) {
        fprintf(stderr, "egret: %s\n", err.msg);
        eg_engine_close(engine);
        free(api_key);
        return 1;
    }
    EgMetricsHttp *metrics = NULL;
    if (metrics_listen) {
        metrics = eg_metrics_http_start(server, metrics_listen, &err);
        if (!metrics) {
            fprintf(stderr, "egret: %s\n", err.msg);
            eg_server_drain(server); /* started: it ends through its own loop */
            eg_server_run(server);
            eg_server_free(server);
            eg_engine_close(engine);
            free(api_key);
            return 1;
        }
        fprintf(stderr, "egret: metrics on %s (port %d) at /metrics\n", metrics_listen,
                eg_metrics_http_port(metrics));
    }
    g_server = server;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    print_serving(model_dir, &so, server, api_key);
    int rc = eg_server_run(server);
    g_server = NULL;
    eg_metrics_http_stop(metrics);
    eg_server_free(server);
    eg_engine_close(engine);
    free(api_key);
    return rc;
}
