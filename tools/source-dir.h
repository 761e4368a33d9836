/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The directory source: reads a directory tree into a point tree in the
 * store, reusing what an earlier point already holds.
 */
#ifndef CLONECTL_SOURCE_DIR_H
#define CLONECTL_SOURCE_DIR_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

typedef struct ingest_options {
        /* Read every file, even those the previous point says are unchanged. */
        bool full;
        /* Worker threads that read, hash and compress (0: one per core). */
        int threads;
        /* Draw a progress line on stderr. */
        bool progress;
        /* Set from a signal handler to stop early (the ingest fails with
         * -ECANCELED). */
        const volatile sig_atomic_t *cancel;
        /* Bytes the source is expected to hold, for the ETA (0: unknown). */
        uint64_t expected_bytes;
        /* When the previous point started (seconds): files changed since
         * then are read again even if their metadata matches. */
        int64_t prev_created;
} ingest_options;

typedef struct ingest_result {
        cs_chunk_id point;       /* the point object */
        uint64_t files;          /* entries of every type, the root excluded */
        uint64_t logical_bytes;  /* sizes of regular files */
        uint64_t bytes_read;
        uint64_t files_read;     /* regular files read (not reused) */
        uint64_t files_reused;   /* regular files taken from the previous point unread */
        /* Files left out or possibly inconsistent, one line each. */
        char **errors;
        size_t n_errors;
        size_t n_warnings;       /* vanished files: printed, not fatal */
} ingest_result;

/* Reads the tree at path.  prev_point (may be NULL) is an earlier point of
 * the same source.  Warnings about vanished files go to stderr as they
 * happen; files that could not be read are listed in ret->errors and left
 * out of the point, which is still built.  Returns a negative errno only
 * when no point could be built. */
int ingest_directory(cs_store *store, const char *path, const cs_chunk_id *prev_point,
                     const ingest_options *o, ingest_result *ret);
void ingest_result_free(ingest_result *r);

/* Writes name into buf (size bytes) with bytes that are neither printable
 * ASCII nor part of valid UTF-8 (C1 controls excluded) as \xNN, so a
 * message stays one line, and harmless to a terminal, whatever a file is
 * called. */
const char *escape_name(char *buf, size_t size, const char *name, size_t len);

#endif
