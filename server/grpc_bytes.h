/* Moving protobuf-c messages in and out of gRPC byte buffers, status names, and reading the PEM
 * files of TLS: what the server and the client share. */
#ifndef EGRET_GRPC_BYTES_H
#define EGRET_GRPC_BYTES_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "runtime/error.h"

/* A new byte buffer holding the packed message (the caller destroys it). */
grpc_byte_buffer *eg_grpc_pack(const ProtobufCMessage *msg);
/* The whole buffer as one contiguous slice (the caller unrefs it). */
grpc_slice eg_grpc_read_all(grpc_byte_buffer *bb);
/* The value of metadata `key` (lowercase), or an empty slice; not owned. */
grpc_slice eg_grpc_metadata_get(const grpc_metadata_array *md, const char *key);

/* "RESOURCE_EXHAUSTED" for GRPC_STATUS_RESOURCE_EXHAUSTED, ...; "?" for a code gRPC does not
 * define. */
const char *eg_grpc_status_name(grpc_status_code code);

/* A PEM file (certificates, keys), NUL-terminated, malloc'd; NULL with err when it cannot be
 * read, is empty, or is larger than 1 MiB. */
char *eg_read_pem(const char *path, EgError *err);

#endif
