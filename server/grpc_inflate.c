#include "server/grpc_inflate.h"

#include <grpc/slice.h>
#include <limits.h>
#include <string.h>
#include <zlib.h>

#include "server/grpc_bytes.h"

enum { INFLATED = 0, OVER_LIMIT, CORRUPT, NO_MEMORY };

/* Inflates the slices into dst (exactly `max` bytes of room), or with dst NULL only counts the
 * output (through a scratch buffer), stopping once it passes max. *total: the bytes produced. */
static int inflate_slices(const grpc_slice_buffer *sb, int window_bits, uint8_t *dst, size_t max,
                          size_t *total) {
    z_stream z;
    memset(&z, 0, sizeof z);
    int r = inflateInit2(&z, window_bits);
    if (r != Z_OK) return r == Z_MEM_ERROR ? NO_MEMORY : CORRUPT;
    uint8_t scratch[32768];
    size_t produced = 0, next = 0;
    int result = CORRUPT;
    for (;;) {
        for (; z.avail_in == 0 && next < sb->count; next++) {
            z.next_in = GRPC_SLICE_START_PTR(sb->slices[next]);
            z.avail_in = (uInt)GRPC_SLICE_LENGTH(sb->slices[next]);
        }
        /* Counting, room for one byte past the limit is enough to see it passed. */
        size_t room = dst ? max - produced : max + 1 - produced;
        if (!dst && room > sizeof scratch) room = sizeof scratch;
        if (room > UINT_MAX) room = UINT_MAX;
        z.next_out = dst ? dst + produced : scratch;
        z.avail_out = (uInt)room;
        r = inflate(&z, Z_NO_FLUSH);
        produced += room - z.avail_out;
        if (produced > max) {
            result = OVER_LIMIT;
            break;
        }
        if (r == Z_STREAM_END) {
            /* Bytes after the end of the stream are not part of any message. */
            for (; z.avail_in == 0 && next < sb->count; next++)
                z.avail_in = (uInt)GRPC_SLICE_LENGTH(sb->slices[next]);
            result = z.avail_in == 0 ? INFLATED : CORRUPT;
            break;
        }
        if (r == Z_MEM_ERROR) {
            result = NO_MEMORY;
            break;
        }
        if (r == Z_BUF_ERROR && z.avail_in == 0 && next == sb->count) break; /* truncated */
        if (r == Z_BUF_ERROR && dst && produced == max) { /* more output than counted */
            result = OVER_LIMIT;
            break;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) break; /* Z_DATA_ERROR, Z_NEED_DICT */
    }
    inflateEnd(&z);
    *total = produced;
    return result;
}

grpc_status_code eg_grpc_read_message(grpc_byte_buffer *bb, size_t max, const char *limit_name,
                                      grpc_slice *out, EgError *err) {
    *out = grpc_empty_slice();
    if (!bb || bb->type != GRPC_BB_RAW || bb->data.raw.compression == GRPC_COMPRESS_NONE) {
        *out = eg_grpc_read_all(bb);
        return GRPC_STATUS_OK;
    }
    const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    int window_bits; /* the formats gRPC's own compressor writes */
    const char *name;
    switch (bb->data.raw.compression) {
    case GRPC_COMPRESS_DEFLATE:
        window_bits = 15; /* zlib wrapper */
        name = "deflate";
        break;
    case GRPC_COMPRESS_GZIP:
        window_bits = 15 + 16; /* gzip wrapper */
        name = "gzip";
        break;
    default:
        eg_fail(err,
                "grpc-encoding %d is not supported; send the message uncompressed, or "
                "with gzip or deflate",
                (int)bb->data.raw.compression);
        return GRPC_STATUS_UNIMPLEMENTED;
    }
    size_t total = 0;
    int rc = inflate_slices(sb, window_bits, NULL, max, &total);
    grpc_slice all = grpc_empty_slice();
    if (rc == INFLATED && total > 0) {
        all = grpc_slice_malloc(total);
        size_t again = 0;
        rc = inflate_slices(sb, window_bits, GRPC_SLICE_START_PTR(all), total, &again);
        if (rc == INFLATED && again != total) rc = CORRUPT;
    }
    switch (rc) {
    case INFLATED:
        *out = all;
        return GRPC_STATUS_OK;
    case OVER_LIMIT:
        eg_fail(err,
                "the %s-compressed message (%zu bytes) inflates to more than %zu bytes (limit "
                "%s=%zu)",
                name, sb->length, max, limit_name, max);
        break;
    case CORRUPT:
        eg_fail(err, "the message is not valid %s data (%zu bytes, grpc-encoding %s)", name,
                sb->length, name);
        break;
    default:
        eg_fail(err, "out of host memory inflating a %s-compressed message", name);
    }
    grpc_slice_unref(all);
    return rc == OVER_LIMIT ? GRPC_STATUS_RESOURCE_EXHAUSTED
           : rc == CORRUPT  ? GRPC_STATUS_INVALID_ARGUMENT
                            : GRPC_STATUS_INTERNAL;
}
