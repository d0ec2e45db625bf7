#include "server/request_log.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "server/grpc_log_escape.h"

static void write_text(FILE *f, const EgRequestLogLine *l) {
    char peer[EG_LOG_FIELD_MAX], error[EG_LOG_FIELD_MAX];
    eg_log_escape_str(peer, sizeof peer, l->peer);
    eg_log_escape_str(error, sizeof error, l->error);
    fprintf(f,
            "egret: request %llu %s peer=%s status=%s images=%u prompt_tokens=%u generated=%u "
            "ttft=%.3fs total=%.3fs queue=%.3fs",
            (unsigned long long)l->id, l->method, peer, l->status, l->images, l->prompt_tokens,
            l->generated, l->ttft_s, l->total_s, l->queue_s);
    if (*error) fprintf(f, " error=\"%s\"", error);
    fputc('\n', f);
}

/* Seconds rounded to the millisecond, as the text line shows them. */
static double ms(double s) {
    return (double)(long long)(s * 1000 + 0.5) / 1000;
}

static int write_json(FILE *f, const EgRequestLogLine *l) {
    char peer[EG_LOG_FIELD_MAX], error[EG_LOG_FIELD_MAX], when[40];
    eg_log_escape_json_str(peer, sizeof peer, l->peer);
    eg_log_escape_json_str(error, sizeof error, l->error);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "time", when) &&
             cJSON_AddNumberToObject(o, "request", (double)l->id) &&
             cJSON_AddStringToObject(o, "method", l->method) &&
             cJSON_AddStringToObject(o, "peer", peer) &&
             cJSON_AddStringToObject(o, "status", l->status) &&
             cJSON_AddNumberToObject(o, "images", l->images) &&
             cJSON_AddNumberToObject(o, "prompt_tokens", l->prompt_tokens) &&
             cJSON_AddNumberToObject(o, "generated", l->generated) &&
             cJSON_AddNumberToObject(o, "ttft", ms(l->ttft_s)) &&
             cJSON_AddNumberToObject(o, "total", ms(l->total_s)) &&
             cJSON_AddNumberToObject(o, "queue", ms(l->queue_s)) &&
             (!*error || cJSON_AddStringToObject(o, "error", error));
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text) return -1;
    fputs(text, f);
    fputc('\n', f);
    free(text);
    return 0;
}

void eg_request_log_write(FILE *f, int json, const EgRequestLogLine *l) {
    /* out of memory for the JSON object: the line still goes out, as text */
    if (!json || write_json(f, l) != 0) write_text(f, l);
}
