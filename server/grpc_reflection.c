/* grpc.reflection.v1 and v1alpha ServerReflection/ServerReflectionInfo: lets tools such as
 * grpcurl list the services and fetch their descriptors without the .proto files.
 *
 * The answers come from the FileDescriptorSet of the served .proto files, made by protoc at build
 * time and embedded (server/CMakeLists.txt). At start the set is indexed once: each file's name,
 * imports, and every symbol it defines (messages, nested messages, enums, services, methods). The
 * call is a bidirectional stream, handled on the queue thread: receive a request, send its answer,
 * receive the next, until the client closes its side. */
#include <stdlib.h>
#include <string.h>

#include "egret/internal/descriptor_lite.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/grpc_server_internal.h"

extern const unsigned char eg_descriptor_set[];
extern const size_t eg_descriptor_set_len;

typedef struct ReflFile {
    ProtobufCBinaryData bytes; /* the serialized FileDescriptorProto */
    Egret__Internal__FileLite *lite;
} ReflFile;

static struct {
    Egret__Internal__FileSetLite *set;
    ReflFile *files;
    size_t n_files;
} g_index;
static pthread_once_t g_index_once = PTHREAD_ONCE_INIT;

static void build_index(void) {
    g_index.set = egret__internal__file_set_lite__unpack(NULL, eg_descriptor_set_len,
                                                        eg_descriptor_set);
    if (!g_index.set) return;
    g_index.files = calloc(g_index.set->n_file + 1, sizeof *g_index.files);
    if (!g_index.files) return;
    for (size_t i = 0; i < g_index.set->n_file; i++) {
        ReflFile *f = &g_index.files[g_index.n_files];
        f->bytes = g_index.set->file[i];
        f->lite = egret__internal__file_lite__unpack(NULL, f->bytes.len, f->bytes.data);
        if (f->lite) g_index.n_files++;
    }
}

/* Whether `symbol` is `prefix` + "." + `name` (prefix may be empty). */
static int is_child(const char *symbol, const char *prefix, size_t plen, const char *name) {
    if (plen) {
        if (strncmp(symbol, prefix, plen) != 0 || symbol[plen] != '.') return 0;
        symbol += plen + 1;
    }
    return strcmp(symbol, name) == 0;
}

static int message_defines(const Egret__Internal__MessageLite *m, const char *prefix, size_t plen,
                           const char *symbol) {
    if (is_child(symbol, prefix, plen, m->name)) return 1;
    /* nested names extend the message's own */
    size_t nlen = plen + 1 + strlen(m->name);
    if (strlen(symbol) <= nlen || strncmp(symbol, prefix, plen) != 0) return 0;
    char *own = malloc(nlen + 1);
    if (!own) return 0;
    snprintf(own, nlen + 1, "%s%s%s", prefix, plen ? "." : "", m->name);
    int found = 0;
    for (size_t i = 0; !found && i < m->n_nested_type; i++)
        found = message_defines(m->nested_type[i], own, strlen(own), symbol);
    for (size_t i = 0; !found && i < m->n_enum_type; i++)
        found = is_child(symbol, own, strlen(own), m->enum_type[i]->name);
    free(own);
    return found;
}

static int file_defines(const Egret__Internal__FileLite *f, const char *symbol) {
    const char *pkg = f->package;
    size_t plen = strlen(pkg);
    for (size_t i = 0; i < f->n_message_type; i++)
        if (message_defines(f->message_type[i], pkg, plen, symbol)) return 1;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (is_child(symbol, pkg, plen, f->enum_type[i]->name)) return 1;
    for (size_t i = 0; i < f->n_service; i++) {
        const Egret__Internal__ServiceLite *sv = f->service[i];
        if (is_child(symbol, pkg, plen, sv->name)) return 1;
        for (size_t j = 0; j < sv->n_method; j++) {
            char full[512];
            snprintf(full, sizeof full, "%s%s%s", pkg, plen ? "." : "", sv->name);
            if (is_child(symbol, full, strlen(full), sv->method[j]->name)) return 1;
        }
    }
    return 0;
}

static ReflFile *find_file(const char *name) {
    for (size_t i = 0; i < g_index.n_files; i++)
        if (strcmp(g_index.files[i].lite->name, name) == 0) return &g_index.files[i];
    return NULL;
}

/* The file and every file it imports, transitively, each once (a file before its imports). */
static void collect(ReflFile *f, ProtobufCBinaryData *out, size_t *n, int *seen) {
    size_t idx = (size_t)(f - g_index.files);
    if (seen[idx]) return;
    seen[idx] = 1;
    out[(*n)++] = f->bytes;
    for (size_t i = 0; i < f->lite->n_dependency; i++) {
        ReflFile *dep = find_file(f->lite->dependency[i]);
        if (dep) collect(dep, out, n, seen);
    }
}

/* The answer to one request, packed. */
static grpc_byte_buffer *answer(const Grpc__Reflection__V1__ServerReflectionRequest *req) {
    Grpc__Reflection__V1__ServerReflectionResponse resp =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    Grpc__Reflection__V1__FileDescriptorResponse files =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse list =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse error = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse ext =
        GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    ProtobufCBinaryData *out = calloc(g_index.n_files + 1, sizeof *out);
    int *seen = calloc(g_index.n_files + 1, sizeof *seen);
    Grpc__Reflection__V1__ServiceResponse *services = NULL;
    Grpc__Reflection__V1__ServiceResponse **service_ptrs = NULL;
    char message[600] = "";
    ReflFile *found = NULL;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        found = find_file(req->file_by_filename);
        if (!found) snprintf(message, sizeof message, "no file %.500s", req->file_by_filename);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        for (size_t i = 0; !found && i < g_index.n_files; i++)
            if (file_defines(g_index.files[i].lite, req->file_containing_symbol))
                found = &g_index.files[i];
        if (!found)
            snprintf(message, sizeof message, "no symbol %.500s", req->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
        size_t n = 0;
        for (size_t i = 0; i < g_index.n_files; i++)
            n += g_index.files[i].lite->n_service;
        services = calloc(n + 1, sizeof *services);
        service_ptrs = calloc(n + 1, sizeof *service_ptrs);
        char(*names)[256] = calloc(n + 1, sizeof *names);
        if (!services || !service_ptrs || !names) {
            free(names);
            snprintf(message, sizeof message, "out of host memory");
            break;
        }
        size_t k = 0;
        for (size_t i = 0; i < g_index.n_files; i++) {
            const Egret__Internal__FileLite *f = g_index.files[i].lite;
            for (size_t j = 0; j < f->n_service; j++, k++) {
                snprintf(names[k], sizeof names[k], "%s.%s", f->package, f->service[j]->name);
                grpc__reflection__v1__service_response__init(&services[k]);
                services[k].name = names[k];
                service_ptrs[k] = &services[k];
            }
        }
        list.n_service = k;
        list.service = service_ptrs;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &list;
        grpc_byte_buffer *bb = eg_grpc_pack(&resp.base);
        free(names);
        free(services);
        free(service_ptrs);
        free(out);
        free(seen);
        return bb;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        /* The served files declare no extensions: a known message type has none. */
        for (size_t i = 0; !found && i < g_index.n_files; i++)
            if (file_defines(g_index.files[i].lite, req->all_extension_numbers_of_type))
                found = &g_index.files[i];
        if (found) {
            ext.base_type_name = req->all_extension_numbers_of_type;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &ext;
            found = NULL;
        } else {
            snprintf(message, sizeof message, "no type %.500s",
                     req->all_extension_numbers_of_type);
        }
        break;
    default:
        snprintf(message, sizeof message, "no extensions are defined");
        break;
    }
    if (found) {
        size_t n = 0;
        collect(found, out, &n, seen);
        files.n_file_descriptor_proto = n;
        files.file_descriptor_proto = out;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &files;
    } else if (message[0]) {
        error.error_code = GRPC_STATUS_NOT_FOUND;
        error.error_message = message;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &error;
    }
    grpc_byte_buffer *bb = eg_grpc_pack(&resp.base);
    free(out);
    free(seen);
    return bb;
}

/* Posts the next receive. */
static void receive(Call *c) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->recv_buf;
    int rc = grpc_call_start_batch(c->call, ops, n, &c->t_recv, NULL) == GRPC_CALL_OK ? 0 : -1;
    if (rc) rc = eg_call_finish_locked(c, GRPC_STATUS_INTERNAL, "cannot receive", NULL);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

void eg_reflection_begin(Call *c) {
    pthread_once(&g_index_once, build_index);
    if (!g_index.n_files) {
        eg_call_fail(c, GRPC_STATUS_INTERNAL, "the embedded descriptors do not parse");
        return;
    }
    receive(c);
}

void eg_reflection_on_recv(Call *c, int ok) {
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    if (!ok || !bb) { /* the client closed its side (or went away): the call is over */
        if (bb) grpc_byte_buffer_destroy(bb);
        pthread_mutex_lock(&c->mu);
        int rc = c->finish_started ? 0 : eg_call_finish_locked(c, GRPC_STATUS_OK, "", NULL);
        pthread_mutex_unlock(&c->mu);
        if (rc) eg_call_unref(c);
        return;
    }
    grpc_slice all;
    EgError err;
    grpc_status_code read = eg_grpc_read_message(bb, EG_SMALL_REQUEST_BYTES,
                                                 "the reflection request limit", &all, &err);
    grpc_byte_buffer_destroy(bb);
    if (read != GRPC_STATUS_OK) {
        eg_call_fail(c, read, err.msg);
        return;
    }
    Grpc__Reflection__V1__ServerReflectionRequest *req =
        grpc__reflection__v1__server_reflection_request__unpack(NULL, GRPC_SLICE_LENGTH(all),
                                                               GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!req) {
        eg_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, "not a ServerReflectionRequest");
        return;
    }
    grpc_byte_buffer *reply = answer(req);
    grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
    pthread_mutex_lock(&c->mu);
    int rc = eg_call_send_locked(c, reply);
    if (rc) rc = eg_call_finish_locked(c, GRPC_STATUS_INTERNAL, "cannot send", NULL);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

void eg_reflection_on_send_done(Call *c) {
    if (!atomic_load(&c->client_gone)) {
        receive(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int rc = c->finish_started ? 0 : eg_call_finish_locked(c, GRPC_STATUS_CANCELLED, "", NULL);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}
