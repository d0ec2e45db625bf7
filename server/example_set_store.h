/* Example sets on disk (--example-sets-dir): one file per set, DIR/<id>.egset, holding its pairs
 * (images and texts, never device state) so that a restarted server registers them again.
 *
 * File format, version 1: the 8 bytes "EGRETSET", a little-endian uint32 version (1), then an
 * egret.v1.CreateExampleSetRequest message (the pairs and the template), to the end of the file.
 * The message is what clients send, with a parser already hardened (and fuzzed:
 * fuzz/fuzz_example_set.c); the header tells a set file from any other file.
 *
 * Files are written to a temporary name in DIR, flushed to disk, then renamed over the final
 * name, so a crash leaves either the whole file or none. */
#ifndef EGRET_EXAMPLE_SET_STORE_H
#define EGRET_EXAMPLE_SET_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"

#define EG_EXAMPLE_SET_FILE_MAGIC "EGRETSET"
#define EG_EXAMPLE_SET_FILE_VERSION 1u
#define EG_EXAMPLE_SET_FILE_SUFFIX ".egset"

/* The message inside a set file's bytes (*msg points into data), or -1 with err naming what is
 * wrong (not a set file, a version this build does not read). */
int eg_example_set_file_parse(const uint8_t *data, size_t len, const uint8_t **msg, size_t *msg_len,
                              EgError *err);

/* Writes DIR/<id>.egset atomically with the pairs. */
int eg_example_set_store_save(const char *dir, const char *id, const EgRequestExample *pairs,
                              size_t n, const char *template_name, EgError *err);
/* Removes DIR/<id>.egset (no error when it is not there). */
int eg_example_set_store_remove(const char *dir, const char *id, EgError *err);

/* Registers every DIR/ *.egset with the engine. A file that cannot be read, is not a set file,
 * is refused by the engine, or whose pairs do not make the id its name says (a set made for
 * another model) is skipped with a line on log naming it. on_loaded (may be NULL) is called per
 * registered set. Returns the number registered, or -1 with err when DIR cannot be read. */
int eg_example_set_store_load(const char *dir, EgEngine *e, FILE *log,
                              void (*on_loaded)(void *user, const char *id), void *user,
                              EgError *err);

#endif
