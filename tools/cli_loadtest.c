/* egret loadtest: a bounded load test of a running server (tools/grpc_loadtest.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/grpc_loadtest.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: egret loadtest --server ADDR [options]\n"
           "Runs concurrent clients against a running Egret server with a seeded mix of valid\n"
           "streaming and unary requests, bad requests, cancellations and short deadlines, and\n"
           "checks that every call ends with a complete answer or the status its kind calls for,\n"
           "and that the server's GetStats comes back to its baseline afterwards. Prints a report\n"
           "(requests by outcome, requests/s, p50/p99 time to first token and latency, failures);\n"
           "the exit code is 1 on any failure. Meant for loopback or a test server: it sends\n"
           "requests as fast as the server answers them.\n"
           "  --server ADDR          host:port or unix:/path (default: EGRET_SERVER, else\n"
           "                         127.0.0.1:50051)\n"
           "  --clients N            concurrent clients, each with its own channel (default 32)\n"
           "  --duration SECONDS     time cap: no call starts after it (default 60; 0: none,\n"
           "                         then --requests is needed)\n"
           "  --requests N           request cap (default: none)\n"
           "  --seed S               the request mix (default 1)\n"
           "  --call-timeout SECONDS deadline of calls that ask for none; reaching it counts as\n"
           "                         a hang (default 120)\n"
           "  --settle SECONDS       time the server gets to come back to its baseline after\n"
           "                         the load (default 10)\n"
           "  --host-memory-slack MIB  allowed growth of the server's resident set (default 64)\n"
           "  --api-key-file FILE    the server's API key (default: EGRET_API_KEY)\n"
           "  --tls-ca FILE          use TLS, trusting these PEM roots\n"
           "  --tls-server-name NAME the name to check in the server certificate\n"
           "  --json                 print the report as JSON\n"
           "  --quiet                no progress lines on stderr\n");
}

int cli_loadtest(int argc, char **argv) {
    enum {
        O_SERVER = 256,
        O_CLIENTS,
        O_DURATION,
        O_REQUESTS,
        O_SEED,
        O_TIMEOUT,
        O_SETTLE,
        O_SLACK,
        O_KEYFILE,
        O_CA,
        O_SNI,
        O_JSON,
        O_QUIET,
        O_HELP
    };
    static const struct option longopts[] = {{"server", required_argument, 0, O_SERVER},
                                             {"clients", required_argument, 0, O_CLIENTS},
                                             {"duration", required_argument, 0, O_DURATION},
                                             {"requests", required_argument, 0, O_REQUESTS},
                                             {"seed", required_argument, 0, O_SEED},
                                             {"call-timeout", required_argument, 0, O_TIMEOUT},
                                             {"settle", required_argument, 0, O_SETTLE},
                                             {"host-memory-slack", required_argument, 0, O_SLACK},
                                             {"api-key-file", required_argument, 0, O_KEYFILE},
                                             {"tls-ca", required_argument, 0, O_CA},
                                             {"tls-server-name", required_argument, 0, O_SNI},
                                             {"json", no_argument, 0, O_JSON},
                                             {"quiet", no_argument, 0, O_QUIET},
                                             {"help", no_argument, 0, O_HELP},
                                             {0, 0, 0, 0}};
    EgLoadtestOptions o = {.seed = 1, .progress = stderr};
    const char *env = getenv("EGRET_SERVER");
    o.target = env && *env ? env : "127.0.0.1:50051";
    char *api_key = NULL;
    int json = 0, c, bad = 0;
    float f;
    uint32_t u32;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_SERVER:
            o.target = optarg;
            break;
        case O_CLIENTS:
            bad = cli_parse_u32("clients", optarg, &o.clients);
            if (!bad && (o.clients < 1 || o.clients > 1024)) {
                fprintf(stderr, "egret loadtest: --clients wants 1..1024, got %s\n", optarg);
                bad = 1;
            }
            break;
        case O_DURATION:
            bad = cli_parse_float("duration", optarg, &f);
            if (!bad && f < 0) {
                fprintf(stderr, "egret loadtest: --duration wants seconds >= 0\n");
                bad = 1;
            }
            o.duration_s = f > 0 ? f : -1; /* 0: no time cap */
            break;
        case O_REQUESTS:
            bad = cli_parse_u64("requests", optarg, &o.max_requests);
            break;
        case O_SEED:
            bad = cli_parse_u64("seed", optarg, &o.seed);
            break;
        case O_TIMEOUT:
            bad = cli_parse_float("call-timeout", optarg, &f);
            if (!bad && f <= 0) {
                fprintf(stderr, "egret loadtest: --call-timeout wants seconds > 0\n");
                bad = 1;
            }
            o.call_timeout_s = f;
            break;
        case O_SETTLE:
            bad = cli_parse_float("settle", optarg, &f);
            if (!bad && f <= 0) {
                fprintf(stderr, "egret loadtest: --settle wants seconds > 0\n");
                bad = 1;
            }
            o.settle_s = f;
            break;
        case O_SLACK:
            bad = cli_parse_u32("host-memory-slack", optarg, &u32);
            if (!bad && u32 == 0) {
                fprintf(stderr, "egret loadtest: --host-memory-slack wants MiB > 0\n");
                bad = 1;
            }
            o.host_memory_slack_bytes = (uint64_t)u32 << 20;
            break;
        case O_KEYFILE:
            free(api_key);
            bad = !(api_key = cli_read_secret(optarg));
            break;
        case O_CA:
            o.client.tls_ca_file = optarg;
            break;
        case O_SNI:
            o.client.tls_server_name = optarg;
            break;
        case O_JSON:
            json = 1;
            break;
        case O_QUIET:
            o.progress = NULL;
            break;
        case O_HELP:
            usage(stdout);
            free(api_key);
            return 0;
        default:
            bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "egret loadtest: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && o.duration_s < 0 && !o.max_requests) {
        fprintf(stderr, "egret loadtest: --duration 0 (no time cap) needs --requests\n");
        bad = 1;
    }
    if (bad) {
        usage(stderr);
        free(api_key);
        return 2;
    }
    if (!api_key && getenv("EGRET_API_KEY") && *getenv("EGRET_API_KEY"))
        api_key = strdup(getenv("EGRET_API_KEY"));
    o.client.api_key = api_key;
    EgLoadtestReport *r = malloc(sizeof *r);
    EgError err = {0};
    int rc = 1;
    if (!r) {
        fprintf(stderr, "egret loadtest: out of memory\n");
    } else if (eg_loadtest_run(&o, r, &err)) {
        fprintf(stderr, "egret loadtest: %s\n", err.msg);
    } else {
        if (json)
            eg_loadtest_print_json(r, stdout);
        else
            eg_loadtest_print(r, stdout);
        rc = r->failures ? 1 : 0;
    }
    free(r);
    free(api_key);
    return rc;
}
