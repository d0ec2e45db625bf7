/* The metrics endpoint (`egret serve --metrics-listen ADDR`): GET /metrics answers the
 * Prometheus text exposition (server/metrics_text.h) over HTTP/1.1, served by libmicrohttpd on
 * a thread of its own, so a scrape never waits for the engine and the engine never waits for
 * a scrape. Anything else is refused: another path 404, another method 405, a request whose
 * headers do not fit 16 KiB 431, more than 32 connections at once refused, a connection silent
 * for 10 s closed. */
#ifndef EGRET_METRICS_HTTP_H
#define EGRET_METRICS_HTTP_H

#include "runtime/error.h"
#include "server/grpc_server.h"

typedef struct EgMetricsHttp EgMetricsHttp;

/* Binds addr ("host:port", "[v6addr]:port"; port 0 picks a free one) and serves s's metrics
 * until eg_metrics_http_stop, which must come before eg_server_free. NULL with err naming the
 * address when it cannot bind. */
EgMetricsHttp *eg_metrics_http_start(EgServer *s, const char *addr, EgError *err);
/* Whether addr is an address eg_metrics_http_start can bind (syntax and name resolution; the
 * port may still be taken): 0, or -1 with err. For checking options before a long start. */
int eg_metrics_http_check_addr(const char *addr, EgError *err);
/* The TCP port bound. */
int eg_metrics_http_port(const EgMetricsHttp *h);
void eg_metrics_http_stop(EgMetricsHttp *h);

#endif
