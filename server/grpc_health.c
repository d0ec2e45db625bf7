/* grpc.health.v1.Health (Check and Watch), answered on the queue thread. Health covers the whole server ("") and "egret.v1.Egret";
 * it is SERVING from start until draining begins. Watch sends the current status at once and
 * again on every change; when the server has drained, watches end with UNAVAILABLE. */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "server/grpc_server_internal.h"

enum {
    SERVING = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
    SERVICE_UNKNOWN = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN,
};

/* The requested service's status, or -1 when the request does not parse. */
static int requested_status(Call *c) {
    grpc_slice all;
    EgError err;
    if (eg_grpc_read_message(c->payload, EG_SMALL_REQUEST_BYTES, "the health request limit", &all,
                             &err) != GRPC_STATUS_OK)
        return -1;
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(
        NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!req) return -1;
    int known = req->service[0] == '\0' || strcmp(req->service, "egret.v1.Egret") == 0;
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return known ? c->srv->serving_status : SERVICE_UNKNOWN;
}

static grpc_byte_buffer *pack_status(int status) {
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    return eg_grpc_pack(&r.base);
}

void eg_health_check(Call *c) {
    int status = requested_status(c);
    if (status < 0) {
        eg_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "not a grpc.health.v1.HealthCheckRequest");
        return;
    }
    if (status == SERVICE_UNKNOWN) {
        eg_call_fail(c, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    pthread_mutex_lock(&c->mu);
    int rc = eg_call_finish_locked(c, GRPC_STATUS_OK, "", pack_status(status));
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

/* What a watcher should have seen last: a watch on an unknown service stays SERVICE_UNKNOWN. */
static int watch_target(const Call *c) {
    return c->watch_unknown ? SERVICE_UNKNOWN : c->srv->serving_status;
}

static void watch_pump(Call *c) {
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (!c->send_in_flight && !c->finish_started) {
        if (atomic_load(&c->client_gone))
            rc = eg_call_finish_locked(c, GRPC_STATUS_CANCELLED, "cancelled", NULL);
        else if (c->watch_sent != watch_target(c)) {
            c->watch_sent = watch_target(c);
            if (eg_call_send_locked(c, pack_status(c->watch_sent)))
                atomic_store(&c->client_gone, 1);
        } else if (c->srv->watches_ended) {
            rc = eg_call_finish_locked(c, GRPC_STATUS_UNAVAILABLE, "the server has shut down",
                                       NULL);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

void eg_health_watch_begin(Call *c) {
    int status = requested_status(c);
    if (status < 0) {
        eg_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "not a grpc.health.v1.HealthCheckRequest");
        return;
    }
    c->watch_unknown = status == SERVICE_UNKNOWN;
    c->watch_sent = -1;
    c->next_watcher = c->srv->watchers;
    c->srv->watchers = c;
    watch_pump(c);
}

/* After a send, or when the watcher's client went away: send what changed, or end the call. */
void eg_health_watch_continue(Call *c) { watch_pump(c); }

void eg_health_forget(Call *c) {
    for (Call **p = &c->srv->watchers; *p; p = &(*p)->next_watcher)
        if (*p == c) {
            *p = c->next_watcher;
            return;
        }
}

void eg_health_set(EgServer *s, int status) {
    s->serving_status = status;
    for (Call *w = s->watchers; w; w = w->next_watcher)
        watch_pump(w);
}

void eg_health_end_watches(EgServer *s) {
    if (s->watches_ended) return;
    s->watches_ended = 1;
    for (Call *w = s->watchers; w; w = w->next_watcher)
        watch_pump(w);
}
