/* Reading a received message that the client may have compressed (grpc-encoding gzip or
 * deflate), without letting it inflate past a limit.
 *
 * gRPC's core inflates a compressed message whole before it checks the result against the
 * largest message allowed, so a 1 MiB gzip body of zeros costs the server a gigabyte before it is
 * refused. The server therefore turns the core's decompression off
 * (GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION) and receives compressed messages as they came;
 * this inflates them itself: first counting the inflated size in a small scratch buffer,
 * stopping as soon as it passes the limit, and only then allocating exactly that size. */
#ifndef EGRET_GRPC_INFLATE_H
#define EGRET_GRPC_INFLATE_H

#include <grpc/byte_buffer.h>
#include <grpc/status.h>
#include <stddef.h>

#include "runtime/error.h"

/* The whole message as one slice (*out, the caller unrefs it), inflated when it arrived
 * compressed. `limit_name` names the limit in messages. Returns GRPC_STATUS_OK, or with err:
 * RESOURCE_EXHAUSTED (it inflates to more than `max` bytes), INVALID_ARGUMENT (corrupt
 * compressed data), UNIMPLEMENTED (a compression Egret does not inflate) or INTERNAL (out of
 * memory). A NULL buffer reads as empty. */
grpc_status_code eg_grpc_read_message(grpc_byte_buffer *bb, size_t max, const char *limit_name,
                                      grpc_slice *out, EgError *err);

#endif
