/* A server's metrics in the Prometheus text format (docs/metrics.md). */
#ifndef EGRET_METRICS_TEXT_H
#define EGRET_METRICS_TEXT_H

#include "runtime/buf.h"
#include "server/grpc_server.h"

/* Appends the exposition to out. Any thread, while the server exists; takes no lock the
 * engine's thread holds while it works. 0, or -1 when out of memory. */
int eg_server_metrics_text(EgServer *s, EgBuf *out);

#endif
