// The batch table of batched decode (runtime/ops_batch.h EgBatchEntry): for each sequence b of
// a step, where its keys and values are (device addresses, so one dispatch reaches every
// sequence's own cache) and how many keys it has. Needs GL_EXT_buffer_reference(_uvec2); the
// shader defines BATCH_TABLE_BINDING, the binding of the table, before including this.
#define EG_BATCH_ENTRY_WORDS 8u

layout(std430, binding = BATCH_TABLE_BINDING) readonly buffer Seqs { uint seqs[]; };

// Rows of activations reached by address (16-byte aligned: every EgBuffer is).
layout(buffer_reference, std430, buffer_reference_align = 16) buffer ActRef { ACT e[]; };

struct BatchEntry {
    uvec2 k_addr, v_addr; // the buffers holding the keys and the values
    uint k_off, v_off;    // element offsets of key row 0 and value row 0 in them
    uint stride;          // elements from one key (or value) row to the next
    uint n_keys;          // keys this sequence attends to (its new token's is the last)
};

BatchEntry batch_entry(uint b) {
    uint w = b * EG_BATCH_ENTRY_WORDS;
    BatchEntry s;
    s.k_addr = uvec2(seqs[w], seqs[w + 1u]);
    s.v_addr = uvec2(seqs[w + 2u], seqs[w + 3u]);
    s.k_off = seqs[w + 4u];
    s.v_off = seqs[w + 5u];
    s.stride = seqs[w + 6u];
    s.n_keys = seqs[w + 7u];
    return s;
}
