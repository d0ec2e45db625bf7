/* Decoding an egret.v1.GenerateRequest (proto/egret/v1/egret.proto) into the engine's request.
 *
 * This is where proto3's "unset means zero" meets the engine's parameters: max_new_tokens 0 takes
 * the server's default, top_p 0 and repetition_penalty 0 mean "off" (1). Everything else is passed
 * through unchanged and validated by the engine, which names the field at fault. Structural
 * problems (a part with neither text nor image, an empty stop string) are caught here. */
#ifndef EGRET_PROTO_REQUEST_H
#define EGRET_PROTO_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "egret/v1/egret.pb-c.h"
#include "engine/engine.h"

typedef struct EgProtoRequest {
    Egret__V1__GenerateRequest *msg; /* the unpacked message; req points into it */
    EgRequestPart *parts;
    EgRequestExample *examples;
    const char **stops;
    EgRequest req;
} EgProtoRequest;

/* Structural limits, checked on the wire before the message is unpacked (unpacking allocates
 * per element, so a 64 MiB message of empty parts would otherwise cost gigabytes). */
#define EG_PROTO_MAX_PARTS 4096 /* parts + examples */
#define EG_PROTO_MAX_STOPS 16
#define EG_PROTO_MAX_STOP_BYTES 256

/* Unpacks and converts. On failure err says what is wrong, nothing is left allocated, and the
 * result is EG_STATUS_INVALID_ARGUMENT (malformed) or EG_STATUS_RESOURCE_EXHAUSTED (over a
 * structural limit above). Unknown fields are dropped as soon as the message is unpacked: a
 * request may wait in the queue, and should hold only what the engine reads. */
EgStatus eg_proto_request_decode(const uint8_t *data, size_t len, uint32_t default_max_new_tokens,
                                 EgProtoRequest *out, EgError *err);
void eg_proto_request_free(EgProtoRequest *r);
/* The bytes a decoded request holds: its images, texts and stop strings, unknown fields if any
 * were kept, and the structures around them. */
size_t eg_proto_request_held_bytes(const EgProtoRequest *r);

/* The other direction, for clients: `r` as a packed GenerateRequest (malloc'd *out). Sampling
 * parameters are sent as they are (top_p 1 and repetition_penalty 1 rather than 0). */
int eg_proto_request_encode(const EgRequest *r, uint8_t **out, size_t *len, EgError *err);

/* An egret.v1.CreateExampleSetRequest: the pairs (pointing into msg) and the template. Text
 * holding U+0000 is refused (protobuf-c would cut it there); the rest is checked by the engine
 * (eg_engine_example_set_create). Also the format example sets are persisted in. */
typedef struct EgProtoExampleSet {
    Egret__V1__CreateExampleSetRequest *msg;
    EgRequestExample *pairs;
    size_t n_pairs;
    const char *template_name;
} EgProtoExampleSet;
EgStatus eg_proto_example_set_decode(const uint8_t *data, size_t len, EgProtoExampleSet *out,
                                     EgError *err);
void eg_proto_example_set_free(EgProtoExampleSet *s);
int eg_proto_example_set_encode(const EgRequestExample *pairs, size_t n, const char *template_name,
                                uint8_t **out, size_t *len, EgError *err);

/* Why generation stopped, in the answer's egret.v1.FinishReason and back (UNSPECIFIED and
 * unknown values read as cancelled). */
Egret__V1__FinishReason eg_finish_reason_to_proto(EgFinishReason r);
EgFinishReason eg_finish_reason_from_proto(Egret__V1__FinishReason r);

#endif
