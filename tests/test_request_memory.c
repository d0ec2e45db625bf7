/* What requests can make the server hold in memory, against an in-process server with the demo
 * model: a compressed request that inflates far past its size (a gzip bomb) is refused without
 * inflating it, while a small compressed request is answered; decoded requests are held to a
 * memory budget (RESOURCE_EXHAUSTED past it, the figures in GetStats), without the unknown fields
 * a client may pad them with; connections parking partial messages are held to the transport's
 * memory quota. Growth is read from this process's peak resident set (VmHWM, reset before each
 * measurement), so a peak that is freed again before the answer still counts. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include "egret/v1/egret.pb-c.h"
#include "server/grpc_server.h"
#include "server/proto_request.h"
#include "test_util.h"
#include "tools/grpc_client.h"

#define MiB (1ull << 20)

static EgEngine *engine;
static unsigned char *png;
static size_t png_len;

/* ---- memory ---- */

/* A field of /proc/self/status in bytes (VmRSS, VmHWM). */
static uint64_t proc_status_bytes(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = strtoull(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return kb * 1024;
}

/* Resets the peak resident set to the current one (Linux: clear_refs 5). */
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* ---- requests ---- */

static EgRequest caption_request(EgRequestPart *part) {
    *part = (EgRequestPart){.is_image = 1, .image = png, .image_len = png_len};
    EgRequest q = {.parts = part, .n_parts = 1, .use_template = 1, .gen = {.max_new_tokens = 4}};
    eg_sampling_params_default(&q.gen.sampling);
    return q;
}

/* A packed GenerateRequest (malloc'd). */
static uint8_t *packed(const EgRequest *q, size_t *len) {
    uint8_t *bytes = NULL;
    EgError err = {0};
    CHECK(eg_proto_request_encode(q, &bytes, len, &err) == 0, "encode: %s", err.msg);
    return bytes;
}

/* `inflated` bytes of zeros after `head`, gzip-compressed (windowBits 15 + 16) or, with
 * zlib_format, in the zlib format gRPC's "deflate" uses. */
static grpc_slice compress_zeros(const uint8_t *head, size_t head_len, uint64_t inflated,
                                 int zlib_format) {
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 9, Z_DEFLATED, zlib_format ? 15 : 15 + 16, 9, Z_DEFAULT_STRATEGY) ==
              Z_OK,
          "deflateInit2");
    size_t cap = head_len + inflated / 500 + (1 << 16);
    uint8_t *out = malloc(cap);
    static uint8_t zeros[1 << 20];
    z.next_out = out;
    z.avail_out = (uInt)cap;
    z.next_in = (uint8_t *)head;
    z.avail_in = (uInt)head_len;
    CHECK(deflate(&z, Z_NO_FLUSH) == Z_OK, "deflate head");
    int ok = 1;
    for (uint64_t left = inflated; left > 0 && ok;) {
        uInt n = left < sizeof zeros ? (uInt)left : (uInt)sizeof zeros;
        z.next_in = zeros;
        z.avail_in = n;
        ok = deflate(&z, Z_NO_FLUSH) == Z_OK && z.avail_in == 0;
        left -= n;
    }
    CHECK(ok && deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)out, z.total_out);
    deflateEnd(&z);
    free(out);
    return s;
}

/* One Generate call whose message is `body`, already compressed with `algorithm` (the
 * channel's default, so grpc-encoding names it). Returns the status code; message in msg. */
static grpc_status_code compressed_call(const char *addr, grpc_slice body,
                                        grpc_compression_algorithm algorithm, char *msg,
                                        size_t cap) {
    grpc_init();
    /* Its own connection: channels to one target otherwise share one. */
    grpc_arg arg[2] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM,
         .value.integer = (int)algorithm},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1}};
    grpc_channel_args args = {2, arg};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, &args);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(120, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
        grpc_slice_from_static_string("/egret.v1.Egret/Generate"), NULL, deadline, NULL);
    grpc_byte_buffer *bb = grpc_raw_compressed_byte_buffer_create(&body, 1, algorithm);
    grpc_byte_buffer *reply = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    CHECK(grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK, "start batch");
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CHECK(ev.type == GRPC_OP_COMPLETE, "the compressed call never completed");
    char *d = grpc_slice_to_c_string(details);
    snprintf(msg, cap, "%s", d);
    gpr_free(d);
    grpc_slice_unref(details);
    if (reply) grpc_byte_buffer_destroy(reply);
    grpc_byte_buffer_destroy(bb);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return code;
}

static grpc_status_code plain_call(const char *addr, const EgRequest *q, char *msg, size_t cap) {
    EgError err = {0};
    EgClient *c = eg_client_connect(addr, NULL, &err);
    EgClientAnswer a;
    EgCallStatus st = {0};
    int rc = c ? eg_client_generate(c, q, 0, 120, NULL, NULL, &a, &st, &err) : -1;
    CHECK(rc == 0, "call: %s", err.msg);
    eg_client_answer_free(&a);
    eg_client_close(c);
    snprintf(msg, cap, "%s", st.message);
    return st.code;
}

/* ---- compressed requests ---- */

static void test_compression_bomb(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "bomb")) return;
    EgRequestPart part;
    EgRequest q = caption_request(&part);
    char msg[512];
    grpc_status_code code = plain_call(r.addr, &q, msg, sizeof msg); /* warm up */
    CHECK(code == GRPC_STATUS_OK, "warm-up: %d %s", (int)code, msg);

    /* A valid request, compressed both ways gRPC offers, is answered. */
    size_t len = 0;
    uint8_t *bytes = packed(&q, &len);
    for (int zlib_format = 0; zlib_format < 2; zlib_format++) {
        grpc_slice small = compress_zeros(bytes, len, 0, zlib_format);
        code =
            compressed_call(r.addr, small, zlib_format ? GRPC_COMPRESS_DEFLATE : GRPC_COMPRESS_GZIP,
                            msg, sizeof msg);
        CHECK(code == GRPC_STATUS_OK, "compressed (%s) request: %d %s",
              zlib_format ? "deflate" : "gzip", (int)code, msg);
        grpc_slice_unref(small);
    }
    /* Data that does not inflate, and a valid stream cut short. */
    grpc_slice garbage = grpc_slice_from_static_string("certainly not gzip");
    code = compressed_call(r.addr, garbage, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "not valid gzip"),
          "garbage as gzip: %d %s", (int)code, msg);
    grpc_slice whole = compress_zeros(bytes, len, 0, 0);
    grpc_slice cut = grpc_slice_sub(whole, 0, GRPC_SLICE_LENGTH(whole) / 2);
    code = compressed_call(r.addr, cut, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "not valid gzip"),
          "truncated gzip: %d %s", (int)code, msg);
    grpc_slice_unref(cut);
    grpc_slice_unref(whole);

    /* 1 GiB of zeros after a valid request's fields, gzip'd to about 1 MiB. */
    grpc_slice bomb = compress_zeros(bytes, len, 1ull << 30, 0);
    free(bytes);
    uint64_t before = proc_status_bytes("VmRSS");
    int have_peak = reset_peak() == 0;
    code = compressed_call(r.addr, bomb, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    uint64_t peak = proc_status_bytes("VmHWM"), after = proc_status_bytes("VmRSS");
    uint64_t top = have_peak && peak > after ? peak : after;
    fprintf(stderr,
            "gzip bomb (%zu bytes, 1 GiB inflated): status %d '%s'; resident %.1f MiB "
            "before, peak %.1f MiB (+%.1f)\n",
            GRPC_SLICE_LENGTH(bomb), (int)code, msg, before / (double)MiB, top / (double)MiB,
            ((double)top - (double)before) / (double)MiB);
    grpc_slice_unref(bomb);
    CHECK(code == GRPC_STATUS_RESOURCE_EXHAUSTED, "the bomb: status %d '%s'", (int)code, msg);
    CHECK(strstr(msg, "max_request_bytes") != NULL, "the bomb's message names the limit: '%s'",
          msg);
    CHECK(top < before + 64 * MiB, "the bomb grew the resident set by %.1f MiB",
          ((double)top - (double)before) / (double)MiB);
    code = plain_call(r.addr, &q, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "after the bomb: %d %s", (int)code, msg);
    free(test_server_stop(&r));
}

/* ---- the request memory budget ---- */

static grpc_status_code raw_call(const char *addr, const char *method, const uint8_t *bytes,
                                 size_t len, EgClientReplyFn fn, void *user, char *msg,
                                 size_t cap) {
    return test_call(addr, NULL, method, bytes, len, 120, fn, user, msg, cap);
}

/* A Generate call with these request bytes on its own thread; the first one streams a long
 * answer until `release` is set. */
typedef struct Background {
    const char *addr;
    const uint8_t *bytes;
    size_t len;
    atomic_int *release; /* set: a long stream cancelled once it is */
    grpc_status_code code;
    char msg[512];
    pthread_t thread;
} Background;

static int until_released(void *user, const uint8_t *data, size_t len) {
    (void)data;
    (void)len;
    return atomic_load((atomic_int *)user) != 0;
}

static void *background_call(void *arg) {
    Background *b = arg;
    b->code = raw_call(
        b->addr, b->release ? "/egret.v1.Egret/GenerateStream" : "/egret.v1.Egret/Generate",
        b->bytes, b->len, b->release ? until_released : NULL, b->release, b->msg, sizeof b->msg);
    return NULL;
}

/* A request for one image part of `image_len` bytes (junk unless it is the test image),
 * followed by an unknown field (99, length-delimited) of `unknown_len` bytes. */
static uint8_t *request_bytes(size_t image_len, size_t unknown_len, uint32_t max_new,
                              int ignore_eos, size_t *len) {
    uint8_t *junk = image_len ? malloc(image_len) : NULL;
    if (junk) memset(junk, 'j', image_len);
    EgRequestPart part = {.is_image = 1,
                          .image = image_len ? junk : png,
                          .image_len = image_len ? image_len : png_len};
    EgRequest q = {.parts = &part, .n_parts = 1, .gen = {.max_new_tokens = max_new}};
    eg_sampling_params_default(&q.gen.sampling);
    q.gen.ignore_eos = ignore_eos;
    size_t n = 0;
    uint8_t *bytes = packed(&q, &n);
    free(junk);
    if (!bytes) return NULL;
    uint8_t *out = realloc(bytes, n + 16 + unknown_len);
    if (!out) {
        free(bytes);
        return NULL;
    }
    if (unknown_len) {
        out[n++] = 0x9a; /* field 99, wire type 2 */
        out[n++] = 0x06;
        size_t v = unknown_len;
        for (; v >= 0x80; v >>= 7)
            out[n++] = (uint8_t)(v | 0x80);
        out[n++] = (uint8_t)v;
        memset(out + n, 'u', unknown_len);
        n += unknown_len;
    }
    *len = n;
    return out;
}

static void test_budget(void) {
    TestServer r;
    EgServerOptions so = {.request_memory_bytes = 8 * MiB, .max_batch = 1, .max_queue = 8};
    if (test_server_start(&r, engine, so, "budget")) return;
    atomic_int release = 0;
    size_t len[3];
    uint8_t *bytes[3] = {
        request_bytes(0, 0, 1024, 1, &len[0]),    /* runs until released */
        request_bytes(0, 4 * MiB, 4, 0, &len[1]), /* waits; 4 MiB of unknown field */
        request_bytes(5 * MiB, 0, 4, 0, &len[2]), /* waits; a 5 MiB (junk) image */
    };
    Background bg[3];
    for (int i = 0; i < 3; i++) {
        bg[i] = (Background){
            .addr = r.addr, .bytes = bytes[i], .len = len[i], .release = i == 0 ? &release : NULL};
        pthread_create(&bg[i].thread, NULL, background_call, &bg[i]);
        test_wait_for_engine(r.addr, 1, (uint32_t)i);
    }
    Egret__V1__ServerStats *st = test_server_stats(r.addr);
    uint64_t held = st ? st->request_bytes_held : 0;
    /* the running and waiting requests' images (two test images, 5 MiB of junk) and little
     * else: not the 4 MiB of unknown field */
    uint64_t images = 2 * png_len + 5 * MiB;
    CHECK(st && held >= images && held < images + 64 * 1024,
          "held %llu bytes with %llu bytes of images waiting or running", (unsigned long long)held,
          (unsigned long long)images);
    CHECK(st && st->request_bytes_budget == 8 * MiB, "budget %llu",
          st ? (unsigned long long)st->request_bytes_budget : 0ull);
    if (st) egret__v1__server_stats__free_unpacked(st, NULL);

    /* 3 MiB more does not fit in 8 with over 5 held. The held part is Egret's own memory, so
     * gRPC's transport quota (the same 8 MiB) has room to receive the 3 MiB and let Egret
     * answer with the figures. */
    size_t big_len = 0;
    uint8_t *big = request_bytes(3 * MiB, 0, 4, 0, &big_len);
    char msg[512];
    grpc_status_code code =
        raw_call(r.addr, "/egret.v1.Egret/Generate", big, big_len, NULL, NULL, msg, sizeof msg);
    char want_held[64], want_asked[64];
    snprintf(want_held, sizeof want_held, "hold %llu bytes", (unsigned long long)held);
    snprintf(want_asked, sizeof want_asked, "needs %zu more", big_len);
    CHECK(code == GRPC_STATUS_RESOURCE_EXHAUSTED && strstr(msg, want_held) &&
              strstr(msg, want_asked) && strstr(msg, "budget of 8388608 bytes"),
          "over the budget: %d '%s'", (int)code, msg);

    atomic_store(&release, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(bg[i].thread, NULL);
    CHECK(bg[0].code == GRPC_STATUS_CANCELLED, "the long stream: %d %s", (int)bg[0].code,
          bg[0].msg);
    CHECK(bg[1].code == GRPC_STATUS_OK, "the request with an unknown field: %d %s", (int)bg[1].code,
          bg[1].msg);
    CHECK(bg[2].code == GRPC_STATUS_INVALID_ARGUMENT, "the junk image: %d %s", (int)bg[2].code,
          bg[2].msg);
    test_wait_for_engine(r.addr, 0, 0);
    st = test_server_stats(r.addr);
    CHECK(st && st->request_bytes_held == 0, "held %llu bytes once every request ended",
          st ? (unsigned long long)st->request_bytes_held : 0ull);
    if (st) egret__v1__server_stats__free_unpacked(st, NULL);
    /* The budget is back: the same 3 MiB request now gets as far as its (junk) image. */
    code = raw_call(r.addr, "/egret.v1.Egret/Generate", big, big_len, NULL, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "image 0"),
          "3 MiB once the budget is free: %d '%s'", (int)code, msg);
    EgRequestPart part;
    EgRequest q = caption_request(&part);
    code = plain_call(r.addr, &q, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "after the budget ran out: %d %s", (int)code, msg);
    free(big);
    for (int i = 0; i < 3; i++)
        free(bytes[i]);
    free(test_server_stop(&r));
}

/* ---- partial messages parked on many connections ---- */

/* Between clients and the server (unix sockets): copies both ways, but at most `cap` bytes
 * of each connection from its client, after which the client's message stays unfinished on
 * the server for as long as the connection is open. */
#define PARKED_CONNECTIONS 6
typedef struct Forwarder {
    char addr[128];
    const char *server_path;
    size_t cap;
    int listen_fd;
    atomic_int stop;
    atomic_size_t forwarded; /* client to server, all connections */
    pthread_t accepter, pumps[PARKED_CONNECTIONS];
    int n_pumps;
} Forwarder;

typedef struct Pump {
    Forwarder *f;
    int client, server;
} Pump;
static Pump pumps[PARKED_CONNECTIONS];

static void *pump_main(void *arg) {
    Pump *p = arg;
    static __thread char buf[1 << 16];
    size_t passed = 0;
    while (!atomic_load(&p->f->stop)) {
        struct pollfd fds[2] = {{.fd = p->server, .events = POLLIN},
                                {.fd = p->client, .events = passed < p->f->cap ? POLLIN : 0}};
        if (poll(fds, 2, 50) <= 0) continue;
        if (fds[0].revents) {
            ssize_t n = read(p->server, buf, sizeof buf);
            if (n <= 0 || send(p->client, buf, (size_t)n, MSG_NOSIGNAL) != n) break;
        }
        if (fds[1].revents) {
            size_t room = p->f->cap - passed;
            ssize_t n = read(p->client, buf, room < sizeof buf ? room : sizeof buf);
            /* the server may close a parked connection: that ends the pump, not the test */
            if (n <= 0 || send(p->server, buf, (size_t)n, MSG_NOSIGNAL) != n) break;
            passed += (size_t)n;
            atomic_fetch_add(&p->f->forwarded, (size_t)n);
        }
    }
    close(p->client);
    close(p->server);
    return NULL;
}

static void *accept_main(void *arg) {
    Forwarder *f = arg;
    while (f->n_pumps < PARKED_CONNECTIONS && !atomic_load(&f->stop)) {
        struct pollfd pfd = {.fd = f->listen_fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) continue;
        int client = accept(f->listen_fd, NULL, NULL);
        int server = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->server_path);
        if (client < 0 || server < 0 || connect(server, (struct sockaddr *)&sa, sizeof sa)) {
            CHECK(0, "forwarder: cannot connect a client to the server");
            if (client >= 0) close(client);
            if (server >= 0) close(server);
            continue;
        }
        Pump *p = &pumps[f->n_pumps];
        *p = (Pump){f, client, server};
        pthread_create(&f->pumps[f->n_pumps++], NULL, pump_main, p);
    }
    return NULL;
}

static int forwarder_start(Forwarder *f, const char *server_addr, size_t cap) {
    memset(f, 0, sizeof *f);
    f->server_path = server_addr + 5; /* "unix:" */
    f->cap = cap;
    snprintf(f->addr, sizeof f->addr, "unix:/tmp/egret-test-%d-forward.sock", (int)getpid());
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->addr + 5);
    unlink(sa.sun_path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof sa) ||
        listen(f->listen_fd, 16)) {
        CHECK(0, "forwarder: cannot listen on %s", f->addr);
        return -1;
    }
    pthread_create(&f->accepter, NULL, accept_main, f);
    return 0;
}

static void forwarder_stop(Forwarder *f) {
    atomic_store(&f->stop, 1);
    pthread_join(f->accepter, NULL);
    for (int i = 0; i < f->n_pumps; i++)
        pthread_join(f->pumps[i], NULL);
    close(f->listen_fd);
    unlink(f->addr + 5);
}

typedef struct Parked {
    const char *addr;
    grpc_slice body;
    grpc_status_code code;
    char msg[512];
    pthread_t thread;
} Parked;

static void *parked_call(void *arg) {
    Parked *p = arg;
    p->code = compressed_call(p->addr, p->body, GRPC_COMPRESS_NONE, p->msg, sizeof p->msg);
    return NULL;
}

static void no_free(void *p) {
    (void)p;
}

/* Resident growth (bytes) while PARKED_CONNECTIONS connections each park `cap` bytes of a
 * 60 MiB message on a server with this request memory budget (0: the default). */
static double parked_growth(uint64_t budget, size_t cap, const char *name) {
    TestServer r;
    EgServerOptions so = {.request_memory_bytes = budget};
    if (test_server_start(&r, engine, so, name)) return -1;
    EgRequestPart part;
    EgRequest q = caption_request(&part);
    char msg[512];
    CHECK(plain_call(r.addr, &q, msg, sizeof msg) == GRPC_STATUS_OK, "warm-up: %s", msg);
    /* One 60 MiB message (one image part of junk), shared by every call without copies. */
    size_t len = 60 * MiB;
    uint8_t *bytes = malloc(len);
    memset(bytes, 'j', len);
    bytes[0] = 0x0a;        /* part 1, length-delimited */
    bytes[1] = 0x80 | 0x7f; /* the rest of the 60 MiB is the part: never parsed */
    Forwarder f;
    if (forwarder_start(&f, r.addr, cap)) return -1;
    uint64_t before = proc_status_bytes("VmRSS");
    Parked p[PARKED_CONNECTIONS];
    for (int i = 0; i < PARKED_CONNECTIONS; i++) {
        p[i] = (Parked){.addr = f.addr, .body = grpc_slice_new(bytes, len, no_free)};
        pthread_create(&p[i].thread, NULL, parked_call, &p[i]);
    }
    /* Until every connection has passed its cap, or nothing has moved for 3 s. */
    size_t last = 0;
    for (int idle = 0, tries = 0; idle < 30 && tries < 600; tries++) {
        usleep(100 * 1000);
        size_t now = atomic_load(&f.forwarded);
        idle = now == last ? idle + 1 : 0;
        last = now;
        if (now >= PARKED_CONNECTIONS * cap) break;
    }
    usleep(300 * 1000);
    uint64_t during = proc_status_bytes("VmRSS");
    double growth = (double)during - (double)before;
    fprintf(stderr,
            "%d connections parking up to %.0f MiB each (budget %.0f MiB): %.1f MiB "
            "passed to the server, resident %.1f -> %.1f MiB (%+.1f)\n",
            PARKED_CONNECTIONS, cap / (double)MiB, budget / (double)MiB, last / (double)MiB,
            before / (double)MiB, during / (double)MiB, growth / (double)MiB);
    forwarder_stop(&f);
    for (int i = 0; i < PARKED_CONNECTIONS; i++) {
        pthread_join(p[i].thread, NULL);
        CHECK(p[i].code != GRPC_STATUS_OK, "a parked call succeeded");
        grpc_slice_unref(p[i].body);
    }
    free(bytes);
    grpc_status_code code = plain_call(r.addr, &q, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "after the parked messages: %d %s", (int)code, msg);
    free(test_server_stop(&r));
    return growth;
}

/* Without a quota the server holds all 6 x 48 MiB (+289 MiB measured); with gRPC 1.51's
 * quota at 64 MiB the windows it grants shrink as the quota fills and about half of it arrives
 * (+89 MiB measured). The quota is not a hard ceiling: twice the budget is the bound here. */
#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer's redzones and quarantine (freed read buffers stay resident) add to it:
 * +145 MiB measured with the quota. */
#define PARKED_BOUND (256.0 * MiB)
#else
#define PARKED_BOUND (128.0 * MiB)
#endif
static void test_parked_messages(void) {
    double growth = parked_growth(64 * MiB, 48 * MiB, "parked");
    CHECK(growth < PARKED_BOUND, "6 parked partial messages grew the resident set by %.1f MiB",
          growth / (double)MiB);
}

/* What a decoded request is counted at: its bytes, texts included, not its unknown fields. */
static void test_held_bytes(void) {
    EgRequestPart parts[2] = {{.is_image = 1, .image = png, .image_len = png_len},
                              {.text = "Output: a", .text_len = 9}};
    EgRequest q = {.parts = parts, .n_parts = 2, .gen = {.max_new_tokens = 4}};
    eg_sampling_params_default(&q.gen.sampling);
    size_t len = 0;
    uint8_t *bytes = packed(&q, &len);
    uint8_t *padded = realloc(bytes, len + 4 + 1000);
    if (!padded) return;
    memcpy(padded + len, (const uint8_t[]){0x9a, 0x06, 0xe8, 0x07}, 4); /* field 99, 1000 B */
    memset(padded + len + 4, 'u', 1000);
    EgProtoRequest r;
    EgError err = {0};
    EgStatus st = eg_proto_request_decode(padded, len + 1004, 8, &r, &err);
    CHECK(st == EG_STATUS_OK, "decode: %s", err.msg);
    size_t held = eg_proto_request_held_bytes(&r);
    CHECK(held >= png_len + 10 && held < png_len + 600,
          "held %zu for a %zu-byte image and 9 bytes "
          "of text",
          held, png_len);
    eg_proto_request_free(&r);
    free(padded);
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}};
    engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    png = test_read_file(test_data_path("shapes-cases/images/c001_0.png"), &png_len);
    REQUIRE(png, "missing the test image");
    test_held_bytes();
    test_compression_bomb();
    test_budget();
    test_parked_messages();
    free(png);
    eg_engine_close(engine);
    return test_finish();
}
