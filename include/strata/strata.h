/*
 * The C ABI of libstrata: an engine with a private loop and drives on it,
 * with blocking calls. For C and other languages' FFIs; C++ programs use
 * strata/engine.h and strata/drive.h, which also offer coroutines.
 *
 * Contract: every call returns 0 or a negative errno; the message of the
 * last failure of a handle is kept until its next call (strata_*_error()).
 * Options are blockdev-style JSON text, as QMP's blockdev-add takes them.
 * Thread rules: an engine and its drives are used from one thread at a time.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct strata_engine strata_engine;
typedef struct strata_drive strata_drive;

/* A new engine with its own event loop, or NULL when out of memory. */
strata_engine* strata_engine_new(void);
/* Flushes and closes every node still open, then frees the engine. */
void strata_engine_free(strata_engine* engine);
/* The message of the engine's last failure ("" if none). */
const char* strata_engine_error(const strata_engine* engine);

/* Opens a node graph from JSON options and attaches a drive to it. */
int strata_drive_open(strata_engine* engine, const char* json_options, int writable,
                      strata_drive** out);
int strata_drive_read(strata_drive* drive, uint64_t offset, void* buf, size_t len);
int strata_drive_write(strata_drive* drive, uint64_t offset, const void* buf, size_t len);
int strata_drive_write_zeroes(strata_drive* drive, uint64_t offset, uint64_t len);
int strata_drive_discard(strata_drive* drive, uint64_t offset, uint64_t len);
int strata_drive_flush(strata_drive* drive);
uint64_t strata_drive_size(const strata_drive* drive);
const char* strata_drive_error(const strata_drive* drive);
/* Detaches, flushes and closes what was opened for the drive; frees it. */
void strata_drive_close(strata_drive* drive);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
