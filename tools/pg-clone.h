/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Provisioning from a PostgreSQL timeline: which times its base points and
 * stored WAL cover, and a clone that recovers to a given time.
 */
#ifndef CLONECTL_PG_CLONE_H
#define CLONECTL_PG_CLONE_H

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

/* What one base point can be recovered to: times in Unix microseconds,
 * from its end (inclusive) to the newest commit in the WAL stored without
 * a gap after its start (exclusive: recovery stops before a commit that
 * is later than the target, so one must exist). */
typedef struct pg_range {
        cs_point_info point;
        cs_pg_backup backup;
        uint64_t first_segno, last_segno; /* the gapless WAL from its start */
        uint64_t wal_end_lsn;
        int64_t from, to;
        bool usable; /* the WAL reaches its end LSN and holds a later commit */
} pg_range;

typedef struct pg_coverage {
        cs_pg_source src;
        pg_range *ranges; /* one per base point, oldest first */
        size_t n_ranges;
        cs_pg_wal *wal;   /* by segno, then tli */
        size_t n_wal;
} pg_coverage;

/* Reports failures in one line. */
int pg_coverage_load(cs_store *store, const char *timeline, pg_coverage *ret);
void pg_coverage_done(pg_coverage *c);

/* "2026-11-22 10:15:05[.123][+02[:00]]", with 'T' for the space and 'Z'
 * for UTC; no zone is local time.  Unix microseconds. */
int pg_parse_time(const char *s, int64_t *ret);
/* "2026-11-22 08:15:05.123456+00" */
void pg_format_time(int64_t usec, char buf[static 40]);

/* The tree a clone NAME of TIMELINE as of `at` starts from (design notes
 * of pg-clone.c): *ret is the base point it comes from with its root
 * replaced by that tree, committed to the store.  PG_AT_LATEST recovers
 * every stored segment.  Reports failures in one line. */
#define PG_AT_LATEST INT64_MAX
int pg_clone_tree(cs_store *store, const char *name, const char *timeline, int64_t at, cs_point_info *ret,
                  uint64_t *ret_segments);

/* clone create NAME --from TIMELINE --at TIME|latest: parses `at` (into
 * *ret_at, PG_AT_LATEST for "latest"), then pg_clone_tree() of the newest
 * base point that ended by it, its WAL up to the first commit after it
 * under .clonefs/wal/.  Reports failures in one line; the caller creates
 * the clone of *ret and prints. */
int pg_clone_at(cs_store *store, const char *name, const char *timeline, const char *at, cs_point_info *ret,
                int64_t *ret_at, uint64_t *ret_segments);

/* clone create NAME --from TIMELINE@POINT where POINT is a base backup of
 * a timeline linked to PostgreSQL: the backup alone does not start (its
 * checkpoint record is in the WAL), so the clone gets the WAL from its
 * start to its end and recovers to there, recovery_target = 'immediate'.
 * Returns 1 with *ret the derived point (as pg_clone_tree()), 0 when base
 * is not such a point (nothing to derive: *ret untouched), or a negative
 * errno reported in one line, also when the base's WAL is not stored up
 * to its end yet. */
#define PG_AT_BASE_END INT64_MIN
int pg_clone_base_tree(cs_store *store, const char *name, const cs_point_info *base, cs_point_info *ret,
                       uint64_t *ret_segments);

/* What a clone recovers to, for messages: "the end of its stored WAL",
 * "the end of its base backup" or the time as pg_format_time(). */
void pg_format_target(int64_t at, char buf[static 40]);

#endif
