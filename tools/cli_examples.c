/* egret examples: a server's example sets (egret.v1 CreateExampleSet and friends).
 *   create --example IMAGE TEXT...   registers the pairs, prints the set's id
 *   list                             the sets held, with their use and hit counts
 *   get ID                           one set's pairs (texts and image digests)
 *   delete ID                        forgets a set (requests using it finish first)
 * The id is a hash of the pairs and the model: creating the same set on every replica gives the
 * same id, which `egret generate --example-set ID` then names. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egret/v1/egret.pb-c.h"
#include "server/proto_request.h"
#include "tools/cli.h"
#include "tools/grpc_client.h"

enum { MAX_PAIRS = 256 };

static void usage(FILE *f) {
    fprintf(
        f, "usage: egret examples create [options] --example IMAGE TEXT [--example IMAGE TEXT]...\n"
           "       egret examples list [options]\n"
           "       egret examples get [options] ID\n"
           "       egret examples delete [options] ID\n"
           "\n"
           "Example sets: few-shot pairs a server keeps ready (images encoded, prompt prefix\n"
           "prefilled) under an id that is a hash of their content and the model; requests name\n"
           "them with `egret generate --example-set ID`.\n"
           "\n"
           "options:\n"
           "  --example IMAGE TEXT    a pair, in prompt order (create)\n"
           "  --server ADDR           host:port or unix:/path (default: EGRET_SERVER, else\n"
           "                          127.0.0.1:50051)\n"
           "  --api-key-file FILE     the server's API key (default: EGRET_API_KEY)\n"
           "  --tls-ca FILE           use TLS, trusting these PEM roots\n"
           "  --tls-server-name NAME  the name to check in the server certificate\n"
           "  --timeout SECONDS       deadline per call (default 60)\n");
}

/* Collects the single reply message of a unary call. */
static int keep_reply(void *user, const uint8_t *data, size_t len) {
    ProtobufCBinaryData *out = user;
    free(out->data);
    out->data = malloc(len + 1);
    if (!out->data) return 1;
    memcpy(out->data, data, len);
    out->len = len;
    return 0;
}

/* Calls method with request; on OK *reply holds the answer's bytes. Prints failures. */
static int call(EgClient *client, const char *method, const uint8_t *req, size_t len,
                double timeout_s, ProtobufCBinaryData *reply) {
    EgCallStatus st;
    EgError err = {0};
    if (eg_client_call(client, method, req, len, timeout_s, keep_reply, reply, &st, &err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return -1;
    }
    if (st.code != GRPC_STATUS_OK) {
        fprintf(stderr, "egret: %s: %s\n", method, st.message);
        return -1;
    }
    return 0;
}

static void print_pairs(const Egret__V1__ExampleSet *s) {
    for (size_t i = 0; i < s->n_pairs; i++)
        printf("  %zu: image sha256 %s (%llu bytes), text \"%s\"\n", i, s->pairs[i]->image_sha256,
               (unsigned long long)s->pairs[i]->image_bytes, s->pairs[i]->text);
}

static int create(EgClient *client, const EgRequestExample *pairs, size_t n, double timeout_s) {
    uint8_t *req = NULL;
    size_t len = 0;
    EgError err = {0};
    if (eg_proto_example_set_encode(pairs, n, NULL, &req, &len, &err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return 1;
    }
    ProtobufCBinaryData reply = {0};
    int rc = call(client, "/egret.v1.Egret/CreateExampleSet", req, len, timeout_s, &reply);
    free(req);
    Egret__V1__ExampleSet *s =
        rc ? NULL : egret__v1__example_set__unpack(NULL, reply.len, reply.data);
    free(reply.data);
    if (!s) return 1;
    /* the id alone on stdout, so that scripts can take it: ID=$(egret examples create ...) */
    printf("%s\n", s->id);
    fprintf(stderr, "egret: example set %s: %u pairs, %u prefix tokens, %llu bytes (%s)\n", s->id,
            s->pair_count, s->prefix_tokens, (unsigned long long)s->bytes,
            s->created ? "created" : "already held");
    egret__v1__example_set__free_unpacked(s, NULL);
    return 0;
}

static int list(EgClient *client, double timeout_s) {
    Egret__V1__ListExampleSetsRequest req = EGRET__V1__LIST_EXAMPLE_SETS_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = egret__v1__list_example_sets_request__pack(&req, buf);
    ProtobufCBinaryData reply = {0};
    if (call(client, "/egret.v1.Egret/ListExampleSets", buf, len, timeout_s, &reply)) return 1;
    Egret__V1__ListExampleSetsResponse *r =
        egret__v1__list_example_sets_response__unpack(NULL, reply.len, reply.data);
    free(reply.data);
    if (!r) return fprintf(stderr, "egret: the reply is not a ListExampleSetsResponse\n"), 1;
    printf("%-64s %5s %6s %10s %5s %8s %8s\n", "id", "pairs", "prefix", "bytes", "ready", "uses",
           "hits");
    for (size_t i = 0; i < r->n_sets; i++) {
        const Egret__V1__ExampleSet *s = r->sets[i];
        printf("%-64s %5u %6u %10llu %5s %8llu %8llu\n", s->id, s->pair_count, s->prefix_tokens,
               (unsigned long long)s->bytes, s->ready ? "yes" : "no", (unsigned long long)s->uses,
               (unsigned long long)s->hits);
    }
    printf("%zu sets of at most %u; %llu of %llu bytes\n", r->n_sets, r->max_sets,
           (unsigned long long)r->bytes, (unsigned long long)r->budget_bytes);
    egret__v1__list_example_sets_response__free_unpacked(r, NULL);
    return 0;
}

static int by_id(EgClient *client, const char *what, const char *id, double timeout_s) {
    ProtobufCBinaryData reply = {0};
    uint8_t *req = NULL;
    size_t len;
    int get = strcmp(what, "get") == 0;
    if (get) {
        Egret__V1__GetExampleSetRequest m = EGRET__V1__GET_EXAMPLE_SET_REQUEST__INIT;
        m.id = (char *)id;
        len = egret__v1__get_example_set_request__get_packed_size(&m);
        if ((req = malloc(len + 1))) egret__v1__get_example_set_request__pack(&m, req);
    } else {
        Egret__V1__DeleteExampleSetRequest m = EGRET__V1__DELETE_EXAMPLE_SET_REQUEST__INIT;
        m.id = (char *)id;
        len = egret__v1__delete_example_set_request__get_packed_size(&m);
        if ((req = malloc(len + 1))) egret__v1__delete_example_set_request__pack(&m, req);
    }
    if (!req) return 1;
    int rc =
        call(client, get ? "/egret.v1.Egret/GetExampleSet" : "/egret.v1.Egret/DeleteExampleSet",
             req, len, timeout_s, &reply);
    free(req);
    if (rc == 0 && get) {
        Egret__V1__ExampleSet *s = egret__v1__example_set__unpack(NULL, reply.len, reply.data);
        if (s) {
            printf("%s: %u pairs, %u prefix tokens, %llu bytes, ready %s, %llu uses, %llu hits\n",
                   s->id, s->pair_count, s->prefix_tokens, (unsigned long long)s->bytes,
                   s->ready ? "yes" : "no", (unsigned long long)s->uses,
                   (unsigned long long)s->hits);
            print_pairs(s);
            egret__v1__example_set__free_unpacked(s, NULL);
        } else {
            rc = -1;
        }
    } else if (rc == 0) {
        printf("deleted %s\n", id);
    }
    free(reply.data);
    return rc ? 1 : 0;
}

int cli_examples(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *what = argv[1];
    if (strcmp(what, "create") && strcmp(what, "list") && strcmp(what, "get") &&
        strcmp(what, "delete")) {
        fprintf(stderr, "egret examples: unknown subcommand '%s'\n", what);
        usage(stderr);
        return 2;
    }
    enum { O_EXAMPLE = 256, O_SERVER, O_KEYFILE, O_CA, O_SNI, O_TIMEOUT, O_HELP };
    static const struct option longopts[] = {{"example", required_argument, 0, O_EXAMPLE},
                                             {"server", required_argument, 0, O_SERVER},
                                             {"api-key-file", required_argument, 0, O_KEYFILE},
                                             {"tls-ca", required_argument, 0, O_CA},
                                             {"tls-server-name", required_argument, 0, O_SNI},
                                             {"timeout", required_argument, 0, O_TIMEOUT},
                                             {"help", no_argument, 0, O_HELP},
                                             {0, 0, 0, 0}};
    const char *server = getenv("EGRET_SERVER") && *getenv("EGRET_SERVER") ? getenv("EGRET_SERVER")
                                                                           : "127.0.0.1:50051";
    EgClientOptions copt = {0};
    char *api_key = NULL;
    float timeout_s = 60;
    EgRequestExample pairs[MAX_PAIRS];
    size_t n = 0;
    int c, bad = 0;
    optind = 2;
    while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_EXAMPLE:
            if (optind >= argc || n == MAX_PAIRS) {
                fprintf(stderr, "egret: --example wants two arguments: IMAGE TEXT (at most %d)\n",
                        MAX_PAIRS);
                bad = 1;
                break;
            }
            pairs[n].image = cli_read_file(optarg, &pairs[n].image_len);
            pairs[n].text = argv[optind++];
            pairs[n].text_len = strlen(pairs[n].text);
            bad = !pairs[n++].image;
            break;
        case O_SERVER:
            server = optarg;
            break;
        case O_KEYFILE:
            free(api_key);
            bad = !(api_key = cli_read_secret(optarg));
            break;
        case O_CA:
            copt.tls_ca_file = optarg;
            break;
        case O_SNI:
            copt.tls_server_name = optarg;
            break;
        case O_TIMEOUT:
            bad = cli_parse_float("timeout", optarg, &timeout_s);
            break;
        case O_HELP:
            usage(stdout);
            bad = -1;
            break;
        default:
            bad = 1;
        }
    }
    int wants_id = strcmp(what, "get") == 0 || strcmp(what, "delete") == 0;
    if (!bad && (wants_id ? optind + 1 != argc : optind != argc)) {
        fprintf(stderr, "egret examples %s: %s\n", what,
                wants_id ? "give one set ID" : "unexpected argument");
        bad = 1;
    }
    if (!bad && strcmp(what, "create") == 0 && n == 0) {
        fprintf(stderr, "egret examples create: give the pairs with --example IMAGE TEXT\n");
        bad = 1;
    }
    if (!api_key && getenv("EGRET_API_KEY") && *getenv("EGRET_API_KEY"))
        api_key = strdup(getenv("EGRET_API_KEY"));
    copt.api_key = api_key;
    int rc = bad < 0 ? 0 : 2;
    EgError err = {0};
    EgClient *client = bad ? NULL : eg_client_connect(server, &copt, &err);
    if (!bad && !client) {
        fprintf(stderr, "egret: %s\n", err.msg);
        rc = 1;
    } else if (client) {
        rc = strcmp(what, "create") == 0 ? create(client, pairs, n, timeout_s)
             : strcmp(what, "list") == 0 ? list(client, timeout_s)
                                         : by_id(client, what, argv[optind], timeout_s);
    }
    eg_client_close(client);
    for (size_t i = 0; i < n; i++)
        free((void *)pairs[i].image);
    free(api_key);
    return rc;
}
