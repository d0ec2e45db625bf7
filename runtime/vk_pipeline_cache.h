/* The driver's pipeline cache (VkPipelineCache) kept on disk, so that a restart on a GPU skips
 * the driver's shader compiles (on lavapipe it holds next to nothing: lavapipe compiles at first
 * dispatch and keeps that in Mesa's own shader cache, see tools/serve_warmup.h).
 *
 * One file per device, driver and Egret build: DIR/pipelines-VENDOR-DEVICE-KEY.bin, KEY from a
 * SHA-256 of the vendor and device ids, the driver version, the device's pipelineCacheUUID and
 * every embedded SPIR-V module. The file is Egret's header (magic, the full key, the data's size
 * and SHA-256) and then the driver's data. A file is never trusted: one that is truncated,
 * corrupt (checksum), written for another key, or whose driver data does not start with a
 * VkPipelineCacheHeaderVersionOne for this very device is ignored with a warning naming it, and
 * the cache starts empty. Writes go to a temporary file renamed over the old one, so a crash or
 * a second process never leaves half a file under the name. */
#ifndef EGRET_VK_PIPELINE_CACHE_H
#define EGRET_VK_PIPELINE_CACHE_H

#include <stdio.h>

#include "runtime/vk_context.h"

/* The default folder: $XDG_CACHE_HOME/egret, else $HOME/.cache/egret (NULL: neither is set).
 * Static buffer. */
const char *eg_pipeline_cache_default_dir(void);

/* Creates vk->pipeline_cache (which must be VK_NULL_HANDLE) from the file for this device in
 * dir when that file is valid, else empty; dir is created if missing. Problems are warnings on
 * log (NULL: stderr), never failures: returns the bytes of driver data loaded (0: none), or -1
 * when not even an empty cache could be created (pipelines are then built without one). */
long eg_pipeline_cache_load(EgVk *vk, const char *dir, FILE *log);

/* Writes vk->pipeline_cache's data to its file (atomically) unless it is what was loaded.
 * Returns the bytes written, 0 when nothing changed, -1 after a warning on log. */
long eg_pipeline_cache_save(EgVk *vk, FILE *log);

/* The file this device's cache lives in, for dir (out: cap bytes). 0, or -1 if it does not fit. */
int eg_pipeline_cache_path(const EgVk *vk, const char *dir, char *out, size_t cap);

#endif
