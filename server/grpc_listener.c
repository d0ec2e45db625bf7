/* The accepting thread for plaintext listeners (see grpc_listener.h).
 *
 * Counting live connections: gRPC closes a descriptor it was given without telling anyone, and
 * the number is then free for reuse, so the descriptor itself cannot be watched. Instead the
 * thread keeps a duplicate of every connection it hands over and watches that for a hangup:
 * gRPC ends every connection with shutdown(SHUT_RDWR) before closing it (and a peer that resets
 * it hangs it up too), which the duplicate reports as EPOLLHUP. Then the duplicate is closed and
 * the connection no longer counts. That costs one descriptor per connection (the default cap
 * allows for it) and O(1) per accept and per close, with no scan of the descriptor table. */
#include "server/grpc_listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/clock.h"

#define MAX_SOCKETS 4  /* addresses one name resolves to that are bound */
#define PREFACE_LEN 24 /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": what a client sends first */
#define PEER_CAP 64
#define BACKOFF_MIN_S 0.01  /* accepting paused after EMFILE / ENFILE: first wait, doubled */
#define BACKOFF_MAX_S 0.5   /* ... up to this */
#define REPORT_EVERY_S 10.0 /* at most one log line per this about shed connections */

enum { K_LISTEN, K_WAKE, K_CONN };

typedef struct Conn {
    int kind;
    int fd;                   /* waiting: the connection; handed over: our duplicate of it */
    int handed;               /* given to gRPC */
    int dead;                 /* closed during this batch of events; freed after it */
    double deadline;          /* waiting: closed then unless the preface has come */
    struct Conn *prev, *next; /* in `waiting` (oldest first), `handed` or `dead` */
    char peer[PEER_CAP];
} Conn;

typedef struct List {
    Conn *head, *tail;
} List;

struct EgListener {
    EgListenerOptions opt;
    Conn socks[MAX_SOCKETS];
    int n_socks;
    Conn wake;
    int ep;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    grpc_server *server;
    grpc_server_credentials *creds;
    pthread_t thread;
    int running, stopped;

    /* The accepting thread's own, from here to peers. */
    List waiting, handed, dead;
    int paused;
    double resume_at, backoff_s;
    /* Written by the accepting thread, read by GetStats on any thread. */
    atomic_uint live;
    atomic_ullong shed, timed_out, evicted, accept_errors;
    int last_errno;
    double reported_at;

    /* Peer names of handed-over connections by descriptor, for the request log (any thread).
     * A number is overwritten when it is reused; a request of a connection that ended logs the
     * name until then. */
    pthread_mutex_t peers_mu;
    char (*peers)[PEER_CAP];
    size_t n_peers;
};

/* ---- lists ---- */

static void list_push(List *l, Conn *c) {
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_remove(List *l, Conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

/* ---- reporting ---- */

static void report(EgListener *l, double now) {
    if (now - l->reported_at < REPORT_EVERY_S && l->reported_at > 0) return;
    l->reported_at = now;
    fprintf(l->opt.log,
            "egret: connections: %u live (limit %u); closed so far: %llu at the limit, %llu "
            "waiting ones for newer ones, %llu silent past the handshake timeout; accept "
            "failed %llu times (last: %s)\n",
            atomic_load(&l->live), l->opt.max_connections, atomic_load(&l->shed),
            atomic_load(&l->evicted), atomic_load(&l->timed_out), atomic_load(&l->accept_errors),
            l->last_errno ? strerror(l->last_errno) : "none");
    fflush(l->opt.log);
}

/* ---- connections ---- */

static void conn_close(EgListener *l, Conn *c) {
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    list_remove(c->handed ? &l->handed : &l->waiting, c);
    list_push(&l->dead, c);
    c->dead = 1;
    l->live--;
}

static void format_peer(const struct sockaddr_storage *ss, char *out) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, PEER_CAP, "ipv4:%s:%u", host, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, PEER_CAP, "ipv6:[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, PEER_CAP, "unix:");
    }
}

static void remember_peer(EgListener *l, int fd, const char *peer) {
    pthread_mutex_lock(&l->peers_mu);
    if ((size_t)fd >= l->n_peers) {
        size_t n = l->n_peers ? l->n_peers : 256;
        while (n <= (size_t)fd)
            n *= 2;
        char(*p)[PEER_CAP] = realloc(l->peers, n * sizeof *p);
        if (p) {
            memset(p + l->n_peers, 0, (n - l->n_peers) * sizeof *p);
            l->peers = p;
            l->n_peers = n;
        }
    }
    if ((size_t)fd < l->n_peers) snprintf(l->peers[fd], PEER_CAP, "%s", peer);
    pthread_mutex_unlock(&l->peers_mu);
}

/* The preface is in: from now on the connection is gRPC's. */
static void hand_over(EgListener *l, Conn *c) {
    int fd = c->fd;
    epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    /* Edge-triggered with no events asked for: only the hangup (and errors), once. */
    struct epoll_event ev = {.events = EPOLLET, .data.ptr = c};
    if (dup < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, dup, &ev) != 0) {
        /* Out of descriptors: this connection could not be counted, so it is not served. */
        l->accept_errors++;
        l->last_errno = errno;
        if (dup >= 0) close(dup);
        conn_close(l, c);
        return;
    }
    list_remove(&l->waiting, c);
    list_push(&l->handed, c);
    c->handed = 1;
    c->fd = dup;
    remember_peer(l, fd, c->peer);
    grpc_server_add_channel_from_fd(l->server, fd, l->creds);
}

static void on_waiting_ready(EgListener *l, Conn *c, uint32_t events) {
    char buf[PREFACE_LEN];
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_PEEK);
    if (n >= PREFACE_LEN) {
        hand_over(l, c);
        return;
    }
    int again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    /* Closed, failed, or half-closed before the preface was complete: it never will be. */
    if (n == 0 || (n < 0 && !again) || (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        conn_close(l, c);
}

static void pause_accepting(EgListener *l, int err, double now) {
    l->accept_errors++;
    l->last_errno = err;
    l->backoff_s = l->backoff_s > 0 ? l->backoff_s * 2 : BACKOFF_MIN_S;
    if (l->backoff_s > BACKOFF_MAX_S) l->backoff_s = BACKOFF_MAX_S;
    l->paused = 1;
    l->resume_at = now + l->backoff_s;
    for (int i = 0; i < l->n_socks; i++) {
        struct epoll_event ev = {.events = 0, .data.ptr = &l->socks[i]};
        epoll_ctl(l->ep, EPOLL_CTL_MOD, l->socks[i].fd, &ev);
    }
    report(l, now);
}

static void resume_accepting(EgListener *l) {
    l->paused = 0;
    for (int i = 0; i < l->n_socks; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->socks[i]};
        epoll_ctl(l->ep, EPOLL_CTL_MOD, l->socks[i].fd, &ev);
    }
}

static void accept_all(EgListener *l, int lfd) {
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        double now = eg_now_s();
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM or worse: wait and try again, never give up. */
            pause_accepting(l, errno, now);
            return;
        }
        l->backoff_s = 0;
        if (l->live >= l->opt.max_connections) {
            if (l->waiting.head) { /* the one that has had longest to speak makes room */
                conn_close(l, l->waiting.head);
                l->evicted++;
            } else {
                close(fd);
                l->shed++;
                report(l, now);
                continue;
            }
            report(l, now);
        }
        Conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (!c || epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            l->accept_errors++;
            l->last_errno = c ? errno : ENOMEM;
            close(fd);
            free(c);
            continue;
        }
        int one = 1;
        if (ss.ss_family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->kind = K_CONN;
        c->fd = fd;
        c->deadline = now + l->opt.handshake_timeout_s;
        format_peer(&ss, c->peer);
        list_push(&l->waiting, c);
        l->live++;
    }
}

static void expire(EgListener *l, double now) {
    /* Every connection waits as long, so the oldest is first to expire. */
    while (l->waiting.head && l->waiting.head->deadline <= now) {
        conn_close(l, l->waiting.head);
        l->timed_out++;
    }
}

static int wait_ms(const EgListener *l, double now) {
    double next = -1;
    if (l->waiting.head) next = l->waiting.head->deadline;
    if (l->paused && (next < 0 || l->resume_at < next)) next = l->resume_at;
    if (next < 0) return -1;
    double ms = (next - now) * 1000.0 + 1.0;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

static void free_dead(EgListener *l) {
    while (l->dead.head) {
        Conn *c = l->dead.head;
        list_remove(&l->dead, c);
        free(c);
    }
}

static void *run(void *arg) {
    EgListener *l = arg;
    struct epoll_event evs[64];
    for (;;) {
        double now = eg_now_s();
        expire(l, now);
        if (l->paused && now >= l->resume_at) resume_accepting(l);
        int n = epoll_wait(l->ep, evs, 64, wait_ms(l, now));
        for (int i = 0; i < n; i++) {
            Conn *c = evs[i].data.ptr;
            if (c->kind == K_WAKE) return NULL;
            if (c->kind == K_LISTEN) {
                if (!l->paused) accept_all(l, c->fd);
            } else if (!c->dead) {
                if (c->handed)
                    conn_close(l, c); /* gRPC shut it down, or the peer reset it */
                else
                    on_waiting_ready(l, c, evs[i].events);
            }
        }
        free_dead(l);
    }
}

/* ---- binding ---- */

static int listen_on(EgListener *l, const struct sockaddr *sa, socklen_t len, EgError *err) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return eg_fail(err, "socket: %s", strerror(errno));
    int one = 1;
    if (sa->sa_family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, sa, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        return eg_fail(err, "%s", strerror(e));
    }
    l->socks[l->n_socks].kind = K_LISTEN;
    l->socks[l->n_socks++].fd = fd;
    return 0;
}

static int bind_unix(EgListener *l, const char *path, EgError *err) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        return eg_fail(err, "unix socket path too long (%zu bytes, at most %zu)", strlen(path),
                       sizeof sun.sun_path - 1);
    strcpy(sun.sun_path, path);
    unlink(path); /* a socket left by an earlier run, as gRPC's listener does */
    if (listen_on(l, (struct sockaddr *)&sun, sizeof sun, err)) return -1;
    strcpy(l->unix_path, path);
    return 0;
}

static int bind_tcp(EgListener *l, const char *addr, int *port, EgError *err) {
    char host[256];
    const char *colon, *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':') return eg_fail(err, "expected [ipv6]:port");
        h = addr + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return eg_fail(err, "expected host:port");
        hlen = (size_t)(colon - addr);
    }
    if (hlen >= sizeof host) return eg_fail(err, "host name too long");
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char service[16];
    snprintf(service, sizeof service, "%s", colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(hlen ? host : NULL, service, &hints, &res);
    if (rc != 0) return eg_fail(err, "%s", gai_strerror(rc));
    /* Every address the name has (localhost: ::1 and 127.0.0.1), on one port: with port 0 the
     * first one bound picks it. */
    int bound_port = 0;
    EgError first = {0};
    for (struct addrinfo *ai = res; ai && l->n_socks < MAX_SOCKETS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (bound_port) ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)bound_port);
        EgError e = {0};
        if (listen_on(l, (struct sockaddr *)&ss, ai->ai_addrlen, &e)) {
            if (!first.msg[0]) first = e;
            continue;
        }
        socklen_t len = sizeof ss;
        getsockname(l->socks[l->n_socks - 1].fd, (struct sockaddr *)&ss, &len);
        bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    freeaddrinfo(res);
    if (!l->n_socks) return eg_fail(err, "%s", first.msg[0] ? first.msg : "no address");
    *port = bound_port;
    return 0;
}

EgListener *eg_listener_open(const char *addr, const EgListenerOptions *opt, int *port,
                             EgError *err) {
    EgListener *l = calloc(1, sizeof *l);
    if (!l) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    l->opt = *opt;
    l->ep = -1;
    l->wake.kind = K_WAKE;
    l->wake.fd = -1;
    pthread_mutex_init(&l->peers_mu, NULL);
    *port = 0;
    int rc;
    if (strncmp(addr, "unix:", 5) == 0) {
        const char *path = addr + 5;
        if (strncmp(path, "//", 2) == 0) path += 2; /* unix:///abs/path */
        rc = bind_unix(l, path, err);
    } else {
        rc = bind_tcp(l, addr, port, err);
    }
    if (rc == 0) {
        l->ep = epoll_create1(EPOLL_CLOEXEC);
        l->wake.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->ep < 0 || l->wake.fd < 0) rc = eg_fail(err, "epoll: %s", strerror(errno));
    }
    for (int i = 0; rc == 0 && i < l->n_socks; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->socks[i]};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->socks[i].fd, &ev)) rc = eg_fail(err, "epoll");
    }
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &l->wake};
    if (rc == 0 && epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake.fd, &wev)) rc = eg_fail(err, "epoll");
    if (rc) {
        eg_fail_prefix(err, "cannot listen on %s: ", addr);
        eg_listener_close(l);
        return NULL;
    }
    return l;
}

int eg_listener_start(EgListener *l, grpc_server *server, EgError *err) {
    l->server = server;
    l->creds = grpc_insecure_server_credentials_create();
    if (pthread_create(&l->thread, NULL, run, l) != 0)
        return eg_fail(err, "cannot start the accepting thread");
    l->running = 1;
    return 0;
}

void eg_listener_stop(EgListener *l) {
    if (!l || l->stopped) return;
    l->stopped = 1;
    if (l->running) {
        uint64_t one = 1;
        while (write(l->wake.fd, &one, sizeof one) < 0 && errno == EINTR) {
        }
        pthread_join(l->thread, NULL);
        l->running = 0;
    }
    for (int i = 0; i < l->n_socks; i++)
        close(l->socks[i].fd);
    l->n_socks = 0;
    if (l->unix_path[0]) unlink(l->unix_path);
    while (l->waiting.head)
        conn_close(l, l->waiting.head);
    /* The connections handed over stay open in gRPC: only the duplicates go. */
    while (l->handed.head)
        conn_close(l, l->handed.head);
    free_dead(l);
}

void eg_listener_stats(const EgListener *l, EgListenerStats *out) {
    *out = (EgListenerStats){0};
    if (!l) return;
    out->live = atomic_load(&l->live);
    out->closed_at_limit = atomic_load(&l->shed) + atomic_load(&l->evicted);
    out->timed_out = atomic_load(&l->timed_out);
    out->accept_errors = atomic_load(&l->accept_errors);
}

void eg_listener_close(EgListener *l) {
    if (!l) return;
    eg_listener_stop(l);
    if (l->ep >= 0) close(l->ep);
    if (l->wake.fd >= 0) close(l->wake.fd);
    if (l->creds) grpc_server_credentials_release(l->creds);
    pthread_mutex_destroy(&l->peers_mu);
    free(l->peers);
    free(l);
}

int eg_listener_peer(EgListener *l, const char *grpc_peer, char *out, size_t cap) {
    if (!l || !grpc_peer || strncmp(grpc_peer, "fd:", 3) != 0) return -1;
    char *end;
    long fd = strtol(grpc_peer + 3, &end, 10);
    if (end == grpc_peer + 3 || *end || fd < 0) return -1;
    int rc = -1;
    pthread_mutex_lock(&l->peers_mu);
    if ((size_t)fd < l->n_peers && l->peers[fd][0]) {
        snprintf(out, cap, "%s", l->peers[fd]);
        rc = 0;
    }
    pthread_mutex_unlock(&l->peers_mu);
    return rc;
}
