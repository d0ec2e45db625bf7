/* egret.v1.Egret GetModelInfo and GetStats: answered on the queue thread without the engine. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/grpc_server_internal.h"

/* Whether the call's message is a `desc` message (one with no fields parses from any
 * well-formed bytes, unknown fields included); answers INVALID_ARGUMENT when it is not. */
static int request_parses(Call *c, const ProtobufCMessageDescriptor *desc) {
    ProtobufCMessage *m = NULL;
    if (c->payload) {
        grpc_slice all = eg_grpc_read_all(c->payload);
        m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                      GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
    }
    if (m) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 1;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "the request is not a valid %s", desc->name);
    eg_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    return 0;
}

void eg_model_info(Call *c) {
    EgServer *s = c->srv;
    if (!request_parses(c, &egret__v1__get_model_info_request__descriptor)) return;
    EgEngineInfo e;
    eg_engine_describe(s->engine, &e);
    Egret__V1__Limits limits = EGRET__V1__LIMITS__INIT;
    limits.max_request_bytes = s->opt.max_request_bytes;
    limits.max_images = e.limits.max_images;
    limits.max_image_pixels = e.limits.image.max_pixels;
    limits.max_image_side = e.limits.image.max_width < e.limits.image.max_height
                                ? e.limits.image.max_width
                                : e.limits.image.max_height;
    limits.context_length = e.limits.context_length;
    limits.max_new_tokens = e.limits.max_new_tokens;
    limits.default_max_new_tokens = s->opt.default_max_new_tokens;
    limits.max_queue = s->opt.max_queue;
    limits.max_batch = eg_scheduler_max_batch(s->sched);
    limits.prefill_chunk = e.prefill_chunk;
    limits.max_request_pixels = e.limits.max_request_pixels;
    limits.decode_workers = s->opt.decode_workers;
    limits.request_memory_bytes = s->opt.request_memory_bytes;
    limits.max_streams_per_connection = s->opt.max_streams_per_connection;
    EgEngineStats es;
    eg_engine_stats(s->engine, &es);
    limits.example_sets_bytes = es.example_sets_budget;
    limits.max_example_sets = (uint32_t)es.max_example_sets;

    size_t n_stop = eg_template_stop_count(e.prompt_template);
    char **stops = calloc(n_stop + 1, sizeof *stops);
    char *tmpl = eg_template_to_json(e.prompt_template);
    if (!stops || !tmpl) {
        free(stops);
        free(tmpl);
        eg_call_fail(c, GRPC_STATUS_INTERNAL, "out of host memory");
        return;
    }
    for (size_t i = 0; i < n_stop; i++)
        stops[i] = (char *)eg_template_stop(e.prompt_template, i);
    Egret__V1__ModelInfo info = EGRET__V1__MODEL_INFO__INIT;
    info.name = s->model_name;
    info.architecture = (char *)e.architecture;
    info.image_size = e.image_size;
    info.vocab_size = e.vocab_size;
    info.prompt_template = tmpl;
    info.prompt_template_name = (char *)eg_template_name(e.prompt_template);
    info.n_template_stop = n_stop;
    info.template_stop = stops;
    info.limits = &limits;
    info.device = (char *)e.device;
    info.precision = (char *)e.precision;
    Egret__V1__WeightGroup groups[EG_WEIGHT_GROUP_COUNT];
    Egret__V1__WeightGroup *group_ptrs[EG_WEIGHT_GROUP_COUNT];
    char formats[EG_WEIGHT_GROUP_COUNT][32];
    for (int g = 0; e.weights && g < EG_WEIGHT_GROUP_COUNT; g++) {
        EgWeightGroup wg = (EgWeightGroup)g;
        if (!e.weights->group[wg].tensors) continue;
        Egret__V1__WeightGroup *out = &groups[info.n_weight_groups];
        egret__v1__weight_group__init(out);
        eg_weight_group_format(e.weights, wg, formats[info.n_weight_groups], sizeof formats[0]);
        out->name = (char *)eg_weight_group_name(wg);
        out->format = formats[info.n_weight_groups];
        out->bytes = e.weights->group[wg].bytes;
        out->tensors = e.weights->group[wg].tensors;
        group_ptrs[info.n_weight_groups++] = out;
    }
    info.weight_groups = group_ptrs;
    info.weight_bytes = e.weights ? eg_weight_report_bytes(e.weights) : 0;
    grpc_byte_buffer *bb = eg_grpc_pack(&info.base);
    free(stops);
    free(tmpl);
    pthread_mutex_lock(&c->mu);
    int rc = eg_call_finish_locked(c, GRPC_STATUS_OK, "", bb);
    pthread_mutex_unlock(&c->mu);
    eg_server_log(s, c, GRPC_STATUS_OK, "");
    if (rc) eg_call_unref(c);
}

/* The resident set size from /proc (0 where unavailable). */
static uint64_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages_total = 0, pages_resident = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &pages_total, &pages_resident) != 2) pages_resident = 0;
        fclose(f);
    }
    return (uint64_t)pages_resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

void eg_server_stats(Call *c) {
    EgServer *s = c->srv;
    if (!request_parses(c, &egret__v1__get_stats_request__descriptor)) return;
    Egret__V1__ServerStats st = EGRET__V1__SERVER_STATS__INIT;
    st.requests_total = atomic_load(&s->n_total);
    st.requests_ok = atomic_load(&s->n_ok);
    st.requests_cancelled = atomic_load(&s->n_cancelled);
    st.requests_rejected = atomic_load(&s->n_rejected);
    st.requests_failed = atomic_load(&s->n_failed);
    st.in_flight = (uint32_t)atomic_load(&s->generate_calls);
    size_t queued = 0, running = 0, preparing = 0;
    eg_scheduler_counts(s->sched, &queued, &running, &preparing);
    st.queued = (uint32_t)queued;
    st.running = (uint32_t)running;
    st.preparing = (uint32_t)preparing;
    st.generated_tokens = atomic_load(&s->n_tokens);
    EgEngineStats es;
    eg_engine_stats(s->engine, &es);
    st.device_memory_bytes = es.device_memory_bytes;
    st.host_memory_bytes = resident_bytes();
    st.device_memory_is_host = es.device_memory_is_host;
    st.images_decoded = es.images_decoded;
    EgListenerStats ls;
    eg_listener_stats(s->listener, &ls);
    st.connections_live = ls.live;
    st.connections_closed_at_limit = ls.closed_at_limit;
    st.connections_timed_out = ls.timed_out;
    st.connection_accept_errors = ls.accept_errors;
    st.uptime_s = eg_now_s() - s->started_at;
    st.image_cache_hits = es.image_cache_hits;
    st.image_cache_misses = es.image_cache_misses;
    st.image_cache_entries = es.image_cache_entries;
    st.image_cache_bytes = es.image_cache_bytes;
    st.prefix_cache_hits = es.prefix_cache_hits;
    st.prefix_cache_misses = es.prefix_cache_misses;
    st.prefix_cache_tokens_reused = es.prefix_cache_tokens_reused;
    st.prefix_cache_entries = es.prefix_cache_entries;
    st.prefix_cache_bytes = es.prefix_cache_bytes;
    st.example_sets = (uint32_t)es.example_sets;
    st.example_set_bytes = es.example_set_bytes;
    st.example_set_device_bytes = es.example_set_device_bytes;
    st.request_bytes_held = atomic_load(&s->request_bytes_held);
    st.request_bytes_budget = s->opt.request_memory_bytes;
    grpc_byte_buffer *bb = eg_grpc_pack(&st.base);
    pthread_mutex_lock(&c->mu);
    int rc = eg_call_finish_locked(c, GRPC_STATUS_OK, "", bb);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}
