/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PostgreSQL source over libpq: connecting (replication connections,
 * with a diagnosis that says what to change on the server when one is
 * refused), the server checks, the replication slot, and base backups
 * streamed into a point.  Every function reports its own failure in one
 * line and returns a negative errno.
 */
#ifndef CLONECTL_SOURCE_PG_H
#define CLONECTL_SOURCE_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

static inline void PQclearp(PGresult **r)
{
        if (*r)
                PQclear(*r);
}

static inline void PQfinishp(PGconn **c)
{
        if (*c)
                PQfinish(*c);
}

/* The link of a timeline, reporting "not linked" (with how to link) or a
 * catalog error in one line. */
int pg_source_find(cs_store *store, const char *timeline, cs_pg_source *ret);

/* conninfo without any password, in key='value' form: what the catalog
 * keeps.  -EINVAL (reported) if libpq cannot parse it. */
int pg_conninfo_strip(const char *conninfo, char **ret);

/* Opens a physical replication connection.  When the server refuses it,
 * finds out why (a normal connection, the role's attributes) and reports
 * what to change. */
int pg_connect_replication(const char *conninfo, PGconn **ret);

typedef struct pg_server {
        int version;            /* PQserverVersion: 150004 */
        uint64_t system_id;
        uint32_t tli;
        uint64_t xlogpos;
        uint32_t segment_size;  /* bytes */
} pg_server;

/* IDENTIFY_SYSTEM and the settings clonefs needs (version >= 13,
 * wal_level >= replica); warns about max_wal_senders < 2 and an unset
 * max_slot_wal_keep_size. */
int pg_check_server(PGconn *conn, pg_server *ret);

/* A permanent physical slot that reserves WAL now.  -EEXIST (reported,
 * with what to do) if the name is taken. */
int pg_create_slot(PGconn *conn, const char *slot);
/* Drops the slot, on a connection of its own (a link's may be in the
 * middle of a COPY), of the server with system_id (0: any).  1 if it was
 * dropped, 0 if it was not there; -EBUSY if a walsender still holds it
 * after wait_seconds; -ECONNREFUSED, -EXDEV (another cluster), -EIO.
 * Reports nothing: why it failed is in ret_why, for the caller's line,
 * which knows what the slot left behind means. */
int pg_drop_slot(const char *conninfo, const char *slot, uint64_t system_id, int wait_seconds, char *ret_why,
                 size_t size);
/* Default slot name of a timeline: clonefs_ + the name in [a-z0-9_]. */
void pg_default_slot(const char *timeline, char buf[static CS_PG_SLOT_MAX]);
bool pg_slot_name_is_valid(const char *slot);

typedef struct pg_backup_result {
        cs_chunk_id point;
        uint64_t files, logical_bytes, bytes_received;
        uint32_t tli;
        uint64_t start_lsn, end_lsn;
} pg_backup_result;

/* Runs BASE_BACKUP (fast checkpoint, tablespace map, manifest) and builds
 * its point: the main archive at the root, each tablespace's under
 * pg_tblspc/OID/, the manifest as backup_manifest. */
int pg_base_backup(PGconn *conn, cs_store *store, bool progress, pg_backup_result *ret);

/* "0/16B3748" */
int pg_lsn_parse(const char *s, uint64_t *ret);
void pg_lsn_format(uint64_t lsn, char buf[static 24]);

/* One line of a libpq error (newlines folded), in buf. */
const char *pg_error_line(const char *message, char *buf, size_t size);

#endif
