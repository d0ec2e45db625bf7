/* The server's log line for one request, as text (the default) or as one JSON object
 * (--log-format json, for log shippers), with the same fields either way. */
#ifndef EGRET_REQUEST_LOG_H
#define EGRET_REQUEST_LOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct EgRequestLogLine {
    uint64_t id;
    const char *method;
    const char *peer;   /* as the client's connection gave it: escaped here */
    const char *status; /* a grpc status name */
    uint32_t images, prompt_tokens, generated;
    double ttft_s, total_s, queue_s;
    const char *error; /* NULL or "" for none; may quote the client: escaped here */
} EgRequestLogLine;

/* Writes the line and its newline to f (the caller serializes writers and flushes). Text:
 *   egret: request 12 Generate peer=... status=OK images=1 ... queue=0.000s [error="..."]
 * JSON: {"time":"2026-01-02T03:04:05.678Z","request":12,"method":"Generate","peer":"...",
 *        "status":"OK","images":1,"prompt_tokens":5,"generated":7,"ttft":0.1,"total":0.2,
 *        "queue":0.0[,"error":"..."]}
 * Client text is escaped either way (server/grpc_log_escape.h): a line is always one line. */
void eg_request_log_write(FILE *f, int json, const EgRequestLogLine *l);

#endif
