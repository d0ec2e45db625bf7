/* The engine's example sets (engine/engine.h, "Example sets"): the registry, and the hooks the
 * request path (engine_job.c) calls on the engine's thread. Not a public interface. */
#ifndef EGRET_EXAMPLE_SETS_H
#define EGRET_EXAMPLE_SETS_H

#include <stdatomic.h>

#include "engine/engine.h"
#include "engine/image_cache.h"
#include "engine/prefix_cache.h"

typedef struct EgExampleSets EgExampleSets;
typedef struct EgExampleSet EgExampleSet;

/* max_bytes, max_sets: the budget; the model's identity comes from model_dir/config.json and
 * the template (part of every id). */
EgExampleSets *eg_example_sets_new(const char *model_dir, const EgTemplate *tmpl,
                                   uint64_t max_bytes, uint64_t max_sets, EgError *err);
/* Frees every set, with its pins (the engine's thread, before the caches go). */
void eg_example_sets_free(EgExampleSets *r, EgImageCache *ic, EgPrefixCache *pc);
void eg_example_sets_counts(EgExampleSets *r, uint64_t *count, uint64_t *bytes, uint64_t *max_bytes,
                            uint64_t *max_sets);

/* The set with this id, held for a request until eg_example_set_release; NULL when not held. */
EgExampleSet *eg_example_set_acquire(EgExampleSets *r, const char *id);
/* Engine's thread: a deleted set's last holder frees it (and its pins). */
void eg_example_set_release(EgExampleSets *r, EgExampleSet *s, EgImageCache *ic, EgPrefixCache *pc);
const EgRequestExample *eg_example_set_pairs(const EgExampleSet *s, size_t *n);
/* Engine's thread: pins the set's images in the image cache (once). -1 when out of memory. */
int eg_example_set_attach(EgExampleSet *s, EgImageCache *ic);
/* Engine's thread, as a request using the set starts: whether it found the set's images and
 * prefix kept (n_shared prompt tokens reused, every pair's image cached). Warm-ups count
 * nothing. */
void eg_example_set_note_start(EgExampleSet *s, int warmup, uint32_t n_shared, int images_cached);
/* Engine's thread, when a request using the set ended well: pins its prefix (the first
 * prefix_tokens tokens of seq, whose ids and image keys are given) unless already pinned. */
void eg_example_set_keep_prefix(EgExampleSet *s, EgPrefixCache *pc, const EgFamilySeq *seq,
                                const int32_t *ids, const EgImageKey *const *image_keys);
/* Engine's thread: frees the deleted sets no request holds. */
void eg_example_sets_tidy(EgExampleSets *r, EgImageCache *ic, EgPrefixCache *pc);

#endif
