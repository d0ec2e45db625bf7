/* GetStats counts the connections Egret's listener (server/grpc_listener.c) keeps and closes:
 * live ones, those closed at --max-connections, those closed silent past the handshake timeout.
 * An in-process server on a unix socket with the demo model, max_connections 3 and a 1 s
 * handshake timeout, and raw sockets that connect and say nothing. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "egret/v1/egret.pb-c.h"
#include "server/grpc_server.h"
#include "test_util.h"

/* A connection to the server's unix socket that sends nothing; -1 on failure. */
static int silent_connection(const char *addr) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = addr + strlen("unix:");
    if (strlen(path) >= sizeof sa.sun_path) return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Polls GetStats (up to 10 s) until `done` holds for it; the last stats, or NULL. */
static Egret__V1__ServerStats *poll_stats(const char *addr,
                                          int (*done)(const Egret__V1__ServerStats *)) {
    Egret__V1__ServerStats *st = NULL;
    for (int tries = 0; tries < 100; tries++) {
        if (st) egret__v1__server_stats__free_unpacked(st, NULL);
        st = test_server_stats(addr);
        if (!st || done(st)) return st;
        usleep(100 * 1000);
    }
    return st;
}

static int some_closed_at_limit(const Egret__V1__ServerStats *st) {
    return st->connections_closed_at_limit > 0;
}

static int some_timed_out(const Egret__V1__ServerStats *st) {
    return st->connections_timed_out > 0;
}

int main(void) {
    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}};
    EgEngine *engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    TestServer t;
    EgServerOptions so = {.max_connections = 3, .handshake_timeout_s = 1};
    if (test_server_start(&t, engine, so, "connections") == 0) {
        Egret__V1__ServerStats *st = test_server_stats(t.addr);
        CHECK(st && st->connections_live >= 1 && st->connections_closed_at_limit == 0 &&
                  st->connections_timed_out == 0,
              "at the start: %u live, %llu closed at the limit, %llu timed out",
              st ? st->connections_live : 0,
              st ? (unsigned long long)st->connections_closed_at_limit : 0ull,
              st ? (unsigned long long)st->connections_timed_out : 0ull);
        if (st) egret__v1__server_stats__free_unpacked(st, NULL);

        int fds[5];
        for (int i = 0; i < 5; i++)
            fds[i] = silent_connection(t.addr);
        /* Five silent connections on a limit of three: the listener closes some of them as they
         * come, and GetStats itself (a connection that speaks) may take a silent one's place. */
        st = poll_stats(t.addr, some_closed_at_limit);
        CHECK(st && st->connections_closed_at_limit >= 2,
              "5 silent connections at a limit of 3: %llu closed at the limit",
              st ? (unsigned long long)st->connections_closed_at_limit : 0ull);
        if (st) egret__v1__server_stats__free_unpacked(st, NULL);
        /* Those still open say nothing for longer than the handshake timeout. */
        st = poll_stats(t.addr, some_timed_out);
        CHECK(st && st->connections_timed_out >= 1 && st->connections_live <= 3,
              "after the handshake timeout: %llu timed out, %u live",
              st ? (unsigned long long)st->connections_timed_out : 0ull,
              st ? st->connections_live : 0);
        if (st) egret__v1__server_stats__free_unpacked(st, NULL);
        for (int i = 0; i < 5; i++)
            if (fds[i] >= 0) close(fds[i]);
        free(test_server_stop(&t));
    }
    eg_engine_close(engine);
    return test_finish();
}
