#include "server/metrics_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/buf.h"
#include "server/metrics_text.h"

/* Memory per connection (libmicrohttpd's read buffer): a request whose line and headers do not
 * fit is answered 431 without being read further. */
enum { CONNECTION_MEMORY = 16 << 10, MAX_CONNECTIONS = 32, IDLE_TIMEOUT_S = 10 };

struct EgMetricsHttp {
    struct MHD_Daemon *daemon;
    EgServer *server;
    int port;
};

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *type,
                              char *body, size_t len, enum MHD_ResponseMemoryMode mode,
                              const char *allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    EgMetricsHttp *h = cls;
    static char not_found[] = "not found: the metrics are at /metrics\n";
    static char not_allowed[] = "method not allowed: GET /metrics\n";
    static const char text[] = "text/plain; charset=utf-8";
    /* answered at the first call, before any body is read: a request with a body (POST, PUT)
     * is refused without taking it in */
    if (strcmp(url, "/metrics") != 0)
        return answer(conn, MHD_HTTP_NOT_FOUND, text, not_found, sizeof not_found - 1,
                      MHD_RESPMEM_PERSISTENT, NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, not_allowed, sizeof not_allowed - 1,
                      MHD_RESPMEM_PERSISTENT, "GET");
    EgBuf b = {0};
    if (eg_server_metrics_text(h->server, &b) != 0) {
        eg_buf_free(&b);
        static char oom[] = "out of host memory\n";
        return answer(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text, oom, sizeof oom - 1,
                      MHD_RESPMEM_PERSISTENT, NULL);
    }
    size_t len = b.len;
    char *body = eg_buf_take(&b);
    if (!body) return MHD_NO;
    return answer(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                  MHD_RESPMEM_MUST_FREE, NULL);
}

/* "host:port" or "[v6]:port" to a socket address (numeric ports; names resolved). */
static int resolve(const char *addr, struct sockaddr_storage *out, socklen_t *out_len,
                   EgError *err) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1])
        return eg_fail(err, "--metrics-listen wants host:port, got '%s'", addr);
    size_t hlen = (size_t)(colon - addr);
    const char *h = addr;
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host)
        return eg_fail(err, "--metrics-listen wants host:port, got '%s'", addr);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res || res->ai_addrlen > sizeof *out) {
        if (res) freeaddrinfo(res);
        return eg_fail(err, "--metrics-listen %s: %s", addr,
                       rc ? gai_strerror(rc) : "no usable address");
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *out_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int eg_metrics_http_check_addr(const char *addr, EgError *err) {
    struct sockaddr_storage sa;
    socklen_t sa_len = 0;
    return resolve(addr, &sa, &sa_len, err);
}

EgMetricsHttp *eg_metrics_http_start(EgServer *s, const char *addr, EgError *err) {
    struct sockaddr_storage sa;
    socklen_t sa_len = 0;
    if (resolve(addr, &sa, &sa_len, err)) return NULL;
    EgMetricsHttp *h = calloc(1, sizeof *h);
    if (!h) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    h->server = s;
    /* poll(), not epoll: libmicrohttpd 0.9.75's epoll loop, once at the connection limit, misses
     * clients closing and keeps their slots until the idle timeout, so a flood of half-sent
     * requests locks scrapes out (test_metrics' flood test). 32 descriptors poll cheaply. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD;
    if (sa.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                                 (const struct sockaddr *)&sa, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                 (size_t)CONNECTION_MEMORY, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (!h->daemon) {
        free(h);
        eg_fail(err, "cannot serve metrics on %s (address in use or not valid?)", addr);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    return h;
}

int eg_metrics_http_port(const EgMetricsHttp *h) {
    return h ? h->port : 0;
}

void eg_metrics_http_stop(EgMetricsHttp *h) {
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
