/* Egret's own listening socket for plaintext addresses ("host:port", "unix:/path"): a thread
 * accepts connections and hands each one to the gRPC server (grpc_server_add_channel_from_fd).
 *
 * Why not gRPC's listener: in gRPC 1.51 an accept4 that fails with EMFILE or ENFILE stops that
 * listener for good, so one flood of idle connections up to the descriptor limit leaves the
 * server deaf after the flood has gone. Here running out of descriptors only pauses accepting
 * (it retries with a backoff), live connections are capped (excess ones are closed at once), and
 * a connection must send the HTTP/2 preface within the handshake timeout before gRPC sees it.
 * gRPC 1.51 takes only plaintext descriptors, so TLS keeps gRPC's own listener. */
#ifndef EGRET_GRPC_LISTENER_H
#define EGRET_GRPC_LISTENER_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/error.h"

typedef struct EgListenerOptions {
    uint32_t max_connections;   /* live connections, handed over or not yet; > 0 */
    double handshake_timeout_s; /* to send the HTTP/2 preface; > 0 */
    FILE *log;
} EgListenerOptions;

typedef struct EgListener EgListener;

/* Binds and listens on addr. *port: the TCP port bound (0 for unix sockets). */
EgListener *eg_listener_open(const char *addr, const EgListenerOptions *opt, int *port,
                             EgError *err);
/* Starts accepting for `server`, which must have been started. Returns 0 or -1 with err. */
int eg_listener_start(EgListener *l, grpc_server *server, EgError *err);
/* Stops accepting and closes the listening sockets and the connections not yet handed over
 * (those handed over are gRPC's). Idempotent; peer names stay readable. */
void eg_listener_stop(EgListener *l);
/* Stops and frees. Safe on NULL. */
void eg_listener_close(EgListener *l);

typedef struct EgListenerStats {
    uint32_t live;            /* connections open now, handed over or not yet */
    uint64_t closed_at_limit; /* refused, or closed to make room, at max_connections */
    uint64_t timed_out;       /* closed silent past the handshake timeout */
    uint64_t accept_errors;   /* accept calls that failed (EMFILE, ...) */
} EgListenerStats;
/* The counts so far; all zero for NULL (no listener: TLS). Any thread. */
void eg_listener_stats(const EgListener *l, EgListenerStats *out);

/* Writes the address of the connection gRPC names `fd:N` (its peer string for descriptors it
 * was given) as gRPC would for its own ("ipv4:1.2.3.4:5678", "unix:"). Returns 0, or -1 when
 * the descriptor is not one this listener handed over. */
int eg_listener_peer(EgListener *l, const char *grpc_peer, char *out, size_t cap);

#endif
