/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PostgreSQL WAL in the store: file names, commit timestamps parsed out of
 * segments, the streaming receiver (START_REPLICATION on the timeline's
 * slot), archiving one file (archive_command) and fetching one back
 * (restore_command).
 */
#ifndef CLONECTL_PG_WAL_H
#define CLONECTL_PG_WAL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore.h"

/* PostgreSQL's epoch (2000-01-01) in Unix microseconds. */
#define PG_EPOCH_USEC (INT64_C(946684800) * 1000000)

/* "000000010000000000000003" */
void pg_wal_file_name(uint32_t tli, uint64_t segno, uint32_t segment_size, char buf[static 25]);

typedef enum pg_wal_kind {
        PG_WAL_SEGMENT,  /* 24 hex digits */
        PG_WAL_PARTIAL,  /* the same and ".partial" */
        PG_WAL_HISTORY,  /* 8 hex digits and ".history" */
        PG_WAL_BACKUP,   /* a backup history file: "...00000028.backup" */
} pg_wal_kind;

/* Parses a WAL file name (no directory).  -EINVAL for anything else. */
int pg_wal_parse_name(const char *name, uint32_t segment_size, pg_wal_kind *ret_kind, uint32_t *ret_tli,
                      uint64_t *ret_segno);

/* The earliest and the latest commit timestamp (Unix microseconds) of the
 * transaction commit records that begin in the first size bytes of
 * segment segno; 0 for none.  By time: records are not in time order.
 * Stops at the first page that is not this segment's or a record that is
 * cut off. */
void pg_wal_commit_times(const uint8_t *data, size_t size, uint64_t segno, uint32_t segment_size,
                         int64_t *ret_first, int64_t *ret_last);
/* The same, split at lsn: the latest commit time of the records that
 * begin before it, and the earliest of those that begin at or after it;
 * 0 for none. */
void pg_wal_commit_times_around(const uint8_t *data, size_t size, uint64_t segno, uint32_t segment_size,
                                uint64_t lsn, int64_t *ret_last_before, int64_t *ret_first_from);

/* Runs until *stop is set (SIGINT, SIGTERM): streams the timeline's WAL
 * from its slot into the store, reconnecting with backoff. */
int pg_receive_wal(const char *timeline, bool status_line, const volatile sig_atomic_t *stop);

/* The first WAL segment that recovery from the base points of timeline
 * still needs once the points in removed (ids) are gone: the oldest start
 * of those that stay, UINT64_MAX when none does.  -ENOENT, silently, for a
 * timeline not linked to PostgreSQL; other failures reported in one line. */
int pg_wal_needed_from(cs_store *store, const char *timeline, const int64_t *removed, size_t n_removed,
                       uint64_t *ret_segno);

/* After forget: drops the stored WAL from before the oldest remaining
 * base point's start (all of it when none remains: *ret_no_base says so).
 * 0 and nothing done for a timeline not linked to PostgreSQL. */
int pg_prune_wal(cs_store *store, const char *timeline, uint64_t *ret_dropped, bool *ret_no_base);

/* Stores the WAL file at path (archive_command's %p). */
int pg_archive_wal(const char *timeline, const char *path);

/* Writes WAL file name of the timeline to dest (restore_command's %f
 * and %p); a partial segment is padded with zeros.  Every failure is
 * reported; *ret_missing says whether it was only that the store does
 * not have that file, which recovery takes for the end of the WAL. */
int pg_fetch_wal(const char *timeline, const char *name, const char *dest, bool *ret_missing);

#endif
