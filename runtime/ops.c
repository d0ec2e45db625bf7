#include "runtime/ops.h"

#include <math.h>
#include <string.h>

/* Push-constant layouts, mirrored from the shaders. */
typedef struct {
    uint32_t M, N, K, ldx, ldy, x_off, y_off, n_off, flags;
} MatmulPush;
typedef struct {
    uint32_t rows, dim, x_off, x_stride, x_batch, y_off, y_stride, y_batch;
    float eps;
    uint32_t rms;
} NormPush;
typedef struct {
    uint32_t n_keys, head_dim, q_off, q_stride, q_batch, k_off, k_stride, k_batch, v_off, v_stride,
        v_batch, o_off, o_stride, o_batch, mode, q_pos0;
    float scale;
} AttentionPush;
typedef struct {
    uint32_t rows, heads, head_dim, off, stride, pos0, sin_off;
} RopePush;
typedef struct {
    uint32_t tokens, dim, row0, n_rows, out_off;
} EmbedPush;
typedef struct {
    uint32_t images, channels, size, patch_size;
} PatchifyPush;
typedef struct {
    uint32_t images, n_patches, dim;
} VitEmbedPush;

/* Flag bits of shaders/matmul_epilogue.glsl. */
enum { MM_BIAS = 8, MM_MUL = 16, MM_ACCUM = 32, MM_ALPHA = 64, MM_ALPHA_VECTOR = 128 };
/* matvec.comp handles at most this many rows. */
enum { MATVEC_MAX_ROWS = 4 };

int eg_ops_init(EgOps *ops, EgVk *vk, int f16, EgError *err) {
    memset(ops, 0, sizeof *ops);
    if (f16 && !vk->has_float16)
        return eg_fail(err, "device %s lacks shaderFloat16, needed by the fp16 mode: use fp32",
                       vk->props.deviceName);
    ops->vk = vk;
    ops->f16 = f16;
    ops->elem = f16 ? 2 : 4;
    eg_arena_init(&ops->arena, vk, EG_MEM_DEVICE, 4096);
    if (eg_buffer_create(&ops->arena, 16, &ops->dummy, err)) return -1;
    struct {
        EgPipeline *p;
        const char *name;
        int bindings;
        uint32_t writes;
        uint32_t push;
    } table[] = {
        {&ops->matmul, "matmul", 5, 1u << 4, sizeof(MatmulPush)},
        {&ops->matvec, "matvec", 5, 1u << 4, sizeof(MatmulPush)},
        {&ops->norm, "norm", 4, 1u << 3, sizeof(NormPush)},
        {&ops->attention, "attention", 5, 1u << 3, sizeof(AttentionPush)},
        {&ops->rope, "rope", 2, 1u << 0, sizeof(RopePush)},
        {&ops->embed, "embed", 3, 1u << 2, sizeof(EmbedPush)},
        {&ops->patchify, "patchify", 2, 1u << 1, sizeof(PatchifyPush)},
        {&ops->vit_embed, "vit_embed", 4, 1u << 3, sizeof(VitEmbedPush)},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (eg_pipeline_create(vk, table[i].name, f16, table[i].bindings, table[i].writes,
                               table[i].push, table[i].p, err)) {
            eg_ops_destroy(ops);
            return -1;
        }
    }
    return 0;
}

void eg_ops_destroy(EgOps *ops) {
    if (!ops->vk) return;
    EgPipeline *all[] = {&ops->matmul, &ops->matvec, &ops->norm,     &ops->attention,
                         &ops->rope,   &ops->embed,  &ops->patchify, &ops->vit_embed};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        eg_pipeline_destroy(ops->vk, all[i]);
    eg_arena_reset(&ops->arena);
    ops->vk = NULL;
}

uint32_t eg_matrix_chunk_rows(const EgOps *ops, uint32_t cols) {
    VkDeviceSize row_bytes = (VkDeviceSize)cols * ops->elem;
    VkDeviceSize rows = ops->vk->max_storage_range / row_bytes;
    return rows > UINT32_MAX ? UINT32_MAX : (uint32_t)rows;
}

/* Dispatches `groups` workgroups of a 1-D problem as a 2-D grid within the 65535-per-axis limit
 * every Vulkan device guarantees (the shaders use eg_flat_index()). */
static void dispatch_1d(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs,
                        const void *push, uint32_t groups) {
    uint32_t gx = groups < 65535 ? groups : 65535;
    eg_cmd_dispatch(cmd, p, bufs, push, gx, eg_groups(groups, gx ? gx : 1), 1);
}

static const EgBuffer *or_dummy(const EgOps *ops, const EgBuffer *b) {
    return b ? b : &ops->dummy;
}

void eg_op_linear(EgCmd *cmd, const EgOps *ops, const EgLinear *a) {
    const EgMatrix *w = a->w;
    uint32_t flags = (uint32_t)a->act;
    if (a->bias) flags |= MM_BIAS;
    if (a->mul) flags |= MM_MUL;
    if (a->accum) flags |= MM_ACCUM;
    if (a->alpha) flags |= MM_ALPHA | (a->alpha_vector ? MM_ALPHA_VECTOR : 0);
    const EgPipeline *p = a->rows <= MATVEC_MAX_ROWS ? &ops->matvec : &ops->matmul;
    for (uint32_t c = 0; c < w->n_chunks; c++) {
        uint32_t n0 = c * w->chunk_rows;
        uint32_t n = eg_matrix_chunk_len(w, c);
        MatmulPush push = {.M = a->rows,
                           .N = n,
                           .K = w->cols,
                           .ldx = a->ldx ? a->ldx : w->cols,
                           .ldy = a->ldy ? a->ldy : w->rows,
                           .x_off = a->x_off,
                           .y_off = a->y_off,
                           .n_off = n0,
                           .flags = flags};
        const EgBuffer *bufs[5] = {a->x, &w->chunks[c], or_dummy(ops, a->bias),
                                   or_dummy(ops, a->alpha), a->y};
        if (p == &ops->matvec)
            eg_cmd_dispatch(cmd, p, bufs, &push, eg_groups(n, 4), 1, 1);
        else
            eg_cmd_dispatch(cmd, p, bufs, &push, eg_groups(n, 64), eg_groups(a->rows, 64), 1);
    }
}

void eg_op_norm(EgCmd *cmd, const EgOps *ops, const EgNorm *a) {
    uint32_t xs = a->x_stride ? a->x_stride : a->dim;
    uint32_t ys = a->y_stride ? a->y_stride : a->dim;
    NormPush push = {.rows = a->rows,
                     .dim = a->dim,
                     .x_off = a->x_off,
                     .x_stride = xs,
                     .x_batch = a->x_batch ? a->x_batch : a->rows * xs,
                     .y_off = a->y_off,
                     .y_stride = ys,
                     .y_batch = a->y_batch ? a->y_batch : a->rows * ys,
                     .eps = a->eps,
                     .rms = a->rms ? 1u : 0u};
    const EgBuffer *bufs[4] = {a->x, a->weight, or_dummy(ops, a->bias), a->y};
    eg_cmd_dispatch(cmd, &ops->norm, bufs, &push, a->rows, a->batches ? a->batches : 1, 1);
}

void eg_op_attention(EgCmd *cmd, const EgOps *ops, const EgAttention *a) {
    uint32_t width = a->heads * a->head_dim;
    AttentionPush push = {.n_keys = a->n_keys,
                          .head_dim = a->head_dim,
                          .q_off = a->q_off,
                          .q_stride = a->q_stride ? a->q_stride : width,
                          .q_batch = a->q_batch,
                          .k_off = a->k_off,
                          .k_stride = a->k_stride ? a->k_stride : width,
                          .k_batch = a->k_batch,
                          .v_off = a->v_off,
                          .v_stride = a->v_stride ? a->v_stride : width,
                          .v_batch = a->v_batch,
                          .o_off = a->o_off,
                          .o_stride = a->o_stride ? a->o_stride : width,
                          .o_batch = a->o_batch,
                          .mode = (uint32_t)a->mode,
                          .q_pos0 = a->q_pos0,
                          .scale = a->scale};
    const EgBuffer *bufs[5] = {a->q, a->k, a->v, a->o, or_dummy(ops, a->ranges)};
    eg_cmd_dispatch(cmd, &ops->attention, bufs, &push, a->n_queries, a->heads,
                    a->batches ? a->batches : 1);
}

void eg_op_rope(EgCmd *cmd, const EgOps *ops, const EgRope *a) {
    RopePush push = {.rows = a->rows,
                     .heads = a->heads,
                     .head_dim = a->head_dim,
                     .off = a->x_off,
                     .stride = a->stride ? a->stride : a->heads * a->head_dim,
                     .pos0 = a->pos0,
                     .sin_off = a->table_positions * (a->head_dim / 2)};
    const EgBuffer *bufs[2] = {a->x, a->table};
    dispatch_1d(cmd, &ops->rope, bufs, &push,
                eg_groups(a->rows * a->heads * (a->head_dim / 2), 64));
}

void eg_rope_table(float *out, uint32_t positions, uint32_t head_dim, float theta) {
    uint32_t half = head_dim / 2;
    for (uint32_t j = 0; j < half; j++) {
        /* torch: inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32. */
        float exponent = (float)(2 * j) / (float)head_dim;
        float inv_freq = 1.0f / powf(theta, exponent);
        for (uint32_t pos = 0; pos < positions; pos++) {
            float angle = (float)pos * inv_freq;
            out[pos * half + j] = (float)cos((double)angle);
            out[(size_t)positions * half + pos * half + j] = (float)sin((double)angle);
        }
    }
}

void eg_op_embed(EgCmd *cmd, const EgOps *ops, const EgEmbed *a) {
    EmbedPush push = {.tokens = a->tokens,
                      .dim = a->dim,
                      .row0 = a->row0,
                      .n_rows = a->n_rows,
                      .out_off = a->out_off};
    const EgBuffer *bufs[3] = {a->ids, a->table, a->out};
    dispatch_1d(cmd, &ops->embed, bufs, &push, eg_groups(a->tokens * a->dim, 64));
}

void eg_op_patchify(EgCmd *cmd, const EgOps *ops, const EgBuffer *pixels, const EgBuffer *patches,
                    uint32_t images, uint32_t channels, uint32_t size, uint32_t patch_size) {
    PatchifyPush push = {images, channels, size, patch_size};
    const EgBuffer *bufs[2] = {pixels, patches};
    dispatch_1d(cmd, &ops->patchify, bufs, &push, eg_groups(images * channels * size * size, 64));
}

void eg_op_vit_embed(EgCmd *cmd, const EgOps *ops, const EgBuffer *patches, const EgBuffer *cls,
                     const EgBuffer *pos, const EgBuffer *out, uint32_t images, uint32_t n_patches,
                     uint32_t dim) {
    VitEmbedPush push = {images, n_patches, dim};
    const EgBuffer *bufs[4] = {patches, cls, pos, out};
    dispatch_1d(cmd, &ops->vit_embed, bufs, &push, eg_groups(images * (n_patches + 1) * dim, 64));
}
