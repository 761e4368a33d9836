/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The catalog: a SQLite database in WAL mode that says where every chunk
 * lives.  This file owns the schema, the connections and the translation
 * of SQLite's result codes into errnos; no other module opens a database.
 *
 * Design notes
 *
 *  1. Schema (format 1):
 *       meta(key, value)            schema version, counters
 *       packs(id, state, size, created)
 *       chunks(id, kind, pack, offset, size, stored_size)   WITHOUT ROWID
 *       roots(name, id, created)
 *       timelines(id, name, created)
 *       points(id, timeline, name, label, root, created, files,
 *              logical_bytes, added_bytes)
 *       clones(name, base_timeline, base_point, base_root, created)
 *     gc keeps everything reachable from roots.id, points.root and
 *     clones.base_root.
 *     A chunks row exists only once its record's bytes are durable in its
 *     pack (see store.c: fdatasync before COMMIT).  Pack ids are
 *     AUTOINCREMENT: never reused, so a reader's cached descriptor of a
 *     deleted pack can never be mistaken for a newer pack.  Point ids are
 *     not, so rows that name a point by id go with it (timeline.c, design
 *     note 4).
 *  2. Concurrency: WAL mode.  Readers run on a pool of connections, one per
 *     concurrent reader thread, and never wait for a writer.  Each process
 *     has at most one writer connection per store handle; writers serialize
 *     on SQLite's write lock (BEGIN IMMEDIATE with a busy timeout), so two
 *     processes never interleave inside a transaction.
 *  3. Durability: synchronous=FULL.  A commit that returned survives a
 *     crash or a power cut; batches keep the fsyncs few.
 *  4. Held snapshots for put: every read transaction begins by taking a
 *     lock in the WAL's shared memory, under a mutex that all connections
 *     of a process to one database share, so threads putting new data (a
 *     lookup each) queued on it.  cs_index_lookup_for_put keeps its read
 *     transaction open across up to HELD_LOOKUPS lookups within HELD_NSEC,
 *     while the caller's commit generation stays the same.  Such a snapshot
 *     can miss a chunk that another process committed meanwhile: that puts
 *     a duplicate record (its row replaces the other's, compaction drops
 *     the unreferenced copy), never a wrong answer.  Any other use of the
 *     connection ends the held transaction first.  A held snapshot also
 *     keeps checkpoints from passing it, so none outlives its handle's
 *     next commit (cs_index_release_snapshots) nor waits in the pool once
 *     older than HELD_NSEC.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cs-internal.h"

#define BUSY_TIMEOUT_MS 60000
#define READER_POOL_MAX 64
#define HELD_LOOKUPS 256
#define HELD_NSEC (10 * 1000 * 1000)

typedef struct reader {
        sqlite3 *db;
        sqlite3_stmt *lookup;
        /* A read transaction left open by cs_index_lookup_for_put (design
         * note 4): since when, for which generation, how many lookups. */
        bool held;
        uint64_t held_since, held_generation;
        unsigned held_lookups;
} reader;

struct cs_index {
        char *path;
        sqlite3 *writer;

        pthread_mutex_t pool_lock;
        reader pool[READER_POOL_MAX];
        size_t pool_size;
};

static const char schema_sql[] =
        "PRAGMA journal_mode=WAL;"
        "BEGIN;"
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE packs(id INTEGER PRIMARY KEY AUTOINCREMENT, state INTEGER NOT NULL,"
        "                   size INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);"
        "CREATE TABLE chunks(id BLOB PRIMARY KEY, kind INTEGER NOT NULL,"
        "                    pack INTEGER NOT NULL, offset INTEGER NOT NULL,"
        "                    size INTEGER NOT NULL, stored_size INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE roots(name TEXT PRIMARY KEY, id BLOB NOT NULL,"
        "                   created INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE timelines(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
        "                       created INTEGER NOT NULL);"
        "CREATE TABLE points(id INTEGER PRIMARY KEY, timeline INTEGER NOT NULL,"
        "                    name TEXT NOT NULL, label TEXT, root BLOB NOT NULL,"
        "                    created INTEGER NOT NULL, files INTEGER NOT NULL,"
        "                    logical_bytes INTEGER NOT NULL, added_bytes INTEGER NOT NULL,"
        "                    UNIQUE(timeline, name));"
        "CREATE UNIQUE INDEX points_by_label ON points(timeline, label) WHERE label IS NOT NULL;"
        "CREATE TABLE clones(name TEXT PRIMARY KEY, base_timeline TEXT NOT NULL, base_point TEXT NOT NULL,"
        "                    base_root BLOB NOT NULL, created INTEGER NOT NULL);"
        "INSERT INTO meta VALUES('schema', 1), ('logical_bytes', 0);"
        "COMMIT;";

int cs_sqlite_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
        case SQLITE_IOERR:
        default:
                return -EIO;
        }
}

/* Prefers the errno behind an I/O error (ENOSPC hides in SQLITE_IOERR_WRITE). */
static int db_errno(sqlite3 *db, int rc)
{
        if ((rc & 0xff) == SQLITE_IOERR && db) {
                int e = sqlite3_system_errno(db);
                if (e > 0)
                        return -e;
        }
        return cs_sqlite_errno(rc);
}

static int open_connection(const char *path, bool writable, sqlite3 **ret_db)
{
        sqlite3 *db = NULL;
        int rc, r;

        rc = sqlite3_open_v2(path, &db,
                             (writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) |
                                     SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc != SQLITE_OK) {
                r = db_errno(db, rc);
                sqlite3_close(db);
                return r;
        }
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
        /* Keep -wal and -shm when the last connection closes: opening the
         * store must not need free space, so a full disk can still be read
         * and verified. */
        int persist = 1;
        sqlite3_file_control(db, NULL, SQLITE_FCNTL_PERSIST_WAL, &persist);
        /* A chunk row must outlive a power cut once COMMIT returned.  The
         * size limit makes the -wal file shrink back to 4 MiB after a
         * checkpoint, and to nothing when the last connection closes (it
         * persists, see above): without one it kept the size of its
         * largest batch, 12 MB of a 315 MB store after one snapshot. */
        r = cs_index_exec(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
                              " PRAGMA journal_size_limit=4194304;");
        if (r < 0) {
                sqlite3_close(db);
                return r;
        }
        *ret_db = db;
        return 0;
}

int cs_index_step(sqlite3_stmt *stmt)
{
        int rc = sqlite3_step(stmt);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_errno(sqlite3_db_handle(stmt), rc);
}

int cs_index_exec(sqlite3 *db, const char *sql)
{
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : db_errno(db, rc);
}

int cs_index_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret_stmt)
{
        int rc = sqlite3_prepare_v2(db, sql, -1, ret_stmt, NULL);
        return rc == SQLITE_OK ? 0 : db_errno(db, rc);
}

int cs_index_query_int(sqlite3 *db, const char *sql, int64_t arg, int64_t *ret)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, sql, &stmt);
        if (r < 0)
                return r;
        if (sqlite3_bind_parameter_count(stmt) > 0)
                sqlite3_bind_int64(stmt, 1, arg);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(stmt, 0);
                return 0;
        }
        if (rc == SQLITE_DONE) {
                *ret = 0;
                return 0;
        }
        return db_errno(db, rc);
}

int cs_index_table_exists(sqlite3 *db, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
                return 1;
        return rc == SQLITE_DONE ? 0 : db_errno(db, rc);
}

int cs_index_begin(sqlite3 *db)
{
        return cs_index_exec(db, "BEGIN IMMEDIATE");
}

int cs_index_commit(sqlite3 *db)
{
        int r = cs_index_exec(db, "COMMIT");
        if (r < 0)
                cs_index_rollback(db);
        return r;
}

void cs_index_rollback(sqlite3 *db)
{
        if (!sqlite3_get_autocommit(db))
                (void) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int catalog_path(int dir_fd, char **ret_path)
{
        char link[64], *dir, *path;

        /* SQLite wants a path; resolve the directory fd so that a store
         * renamed while open keeps working. */
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dir_fd);
        dir = realpath(link, NULL);
        if (!dir)
                return negative_errno();
        if (asprintf(&path, "%s/%s", dir, CS_CATALOG_FILE) < 0) {
                free(dir);
                return -ENOMEM;
        }
        free(dir);
        *ret_path = path;
        return 0;
}

int cs_index_create(int dir_fd)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        sqlite3 *db = NULL;
        int rc, r;

        r = catalog_path(dir_fd, &path);
        if (r < 0)
                return r;
        /* Create the file ourselves so that it is 0600 from its first byte
         * whatever the umask; SQLite gives -wal and -shm the same mode. */
        fd = openat(dir_fd, CS_CATALOG_FILE, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();

        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = db_errno(db, rc);
                sqlite3_close(db);
                return r;
        }
        r = cs_index_exec(db, schema_sql);
        sqlite3_close(db);
        return r;
}

int cs_index_open(int dir_fd, bool writable, cs_index **ret_index)
{
        _cleanup_free_ cs_index *index = NULL;
        _cleanup_free_ char *path = NULL;
        int64_t schema = 0;
        int r;

        if (faccessat(dir_fd, CS_CATALOG_FILE, F_OK, 0) < 0)
                return errno == ENOENT ? -EMEDIUMTYPE : negative_errno();
        r = catalog_path(dir_fd, &path);
        if (r < 0)
                return r;

        index = calloc(1, sizeof(*index));
        if (!index)
                return -ENOMEM;
        pthread_mutex_init(&index->pool_lock, NULL);

        /* Even a read-only handle opens the catalog read-write when it can:
         * a WAL reader needs write access to the -shm file. */
        r = open_connection(path, true, &index->writer);
        if (r == -EROFS || r == -EACCES) {
                if (writable)
                        return r;
                r = open_connection(path, false, &index->writer);
        }
        if (r < 0)
                return r;

        r = cs_index_query_int(index->writer, "SELECT value FROM meta WHERE key='schema'", 0,
                               &schema);
        /* 2 is 1 plus the PostgreSQL tables (pg.c), added on first use. */
        if (r < 0 || schema < 1 || schema > CS_SCHEMA_MAX) {
                sqlite3_close(index->writer);
                return r < 0 ? r : -EPROTONOSUPPORT;
        }

        index->path = TAKE_PTR(path);
        *ret_index = TAKE_PTR(index);
        return 0;
}

cs_index *cs_index_free(cs_index *index)
{
        if (!index)
                return NULL;
        for (size_t i = 0; i < index->pool_size; i++) {
                sqlite3_finalize(index->pool[i].lookup);
                sqlite3_close(index->pool[i].db);
        }
        sqlite3_close(index->writer);
        pthread_mutex_destroy(&index->pool_lock);
        free(index->path);
        return mfree(index);
}

sqlite3 *cs_index_writer(cs_index *index)
{
        return index->writer;
}

static uint64_t monotonic_nsec(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t) t.tv_sec * 1000000000u + (uint64_t) t.tv_nsec;
}

/* Ends a read transaction held for puts: the next statement sees the
 * newest commits. */
static void reader_release_snapshot(reader *rd)
{
        if (!rd->held)
                return;
        sqlite3_reset(rd->lookup);
        (void) sqlite3_exec(rd->db, "COMMIT", NULL, NULL, NULL);
        rd->held = false;
}

static int reader_take(cs_index *index, reader *ret)
{
        int r;

        pthread_mutex_lock(&index->pool_lock);
        if (index->pool_size > 0) {
                *ret = index->pool[--index->pool_size];
                pthread_mutex_unlock(&index->pool_lock);
                return 0;
        }
        pthread_mutex_unlock(&index->pool_lock);

        *ret = (reader) {};
        r = open_connection(index->path, true, &ret->db);
        if (r == -EROFS || r == -EACCES)
                r = open_connection(index->path, false, &ret->db);
        return r;
}

static void reader_give(cs_index *index, reader *rd)
{
        /* A snapshot past its age waits in the pool for no one. */
        if (rd->held && monotonic_nsec() - rd->held_since > HELD_NSEC)
                reader_release_snapshot(rd);
        pthread_mutex_lock(&index->pool_lock);
        if (index->pool_size < READER_POOL_MAX) {
                index->pool[index->pool_size++] = *rd;
                pthread_mutex_unlock(&index->pool_lock);
                return;
        }
        pthread_mutex_unlock(&index->pool_lock);
        reader_release_snapshot(rd);
        sqlite3_finalize(rd->lookup);
        sqlite3_close(rd->db);
}

int cs_index_reader_acquire(cs_index *index, sqlite3 **ret_db)
{
        reader rd;
        int r = reader_take(index, &rd);
        if (r < 0)
                return r;
        /* Callers run their own statements; the cached one goes with it. */
        reader_release_snapshot(&rd);
        sqlite3_finalize(rd.lookup);
        *ret_db = rd.db;
        return 0;
}

void cs_index_reader_release(cs_index *index, sqlite3 *db)
{
        reader rd = { .db = db };
        reader_give(index, &rd);
}

/* One lookup on rd.  With hold, in the read transaction held for puts
 * (begun if there is none or it is too old); else in its own. */
static int lookup_on(reader *rd, const cs_chunk_id *id, cs_location *ret_loc, bool hold, uint64_t generation)
{
        int rc, r;

        if (rd->held && (!hold || rd->held_generation != generation || rd->held_lookups >= HELD_LOOKUPS ||
                         monotonic_nsec() - rd->held_since > HELD_NSEC))
                reader_release_snapshot(rd);
        if (!rd->lookup) {
                r = cs_index_prepare(rd->db, "SELECT kind, pack, offset, size, stored_size FROM chunks WHERE id = ?",
                                     &rd->lookup);
                if (r < 0)
                        return r;
        }
        if (hold && !rd->held) {
                r = cs_index_exec(rd->db, "BEGIN");
                if (r < 0)
                        return r;
                *rd = (reader) { .db = rd->db, .lookup = rd->lookup, .held = true,
                                 .held_since = monotonic_nsec(), .held_generation = generation };
        }
        rd->held_lookups += hold;

        sqlite3_bind_blob(rd->lookup, 1, id->bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
        rc = sqlite3_step(rd->lookup);
        if (rc == SQLITE_ROW) {
                ret_loc->kind = sqlite3_column_int(rd->lookup, 0);
                ret_loc->pack = (uint64_t) sqlite3_column_int64(rd->lookup, 1);
                ret_loc->offset = (uint64_t) sqlite3_column_int64(rd->lookup, 2);
                ret_loc->size = (uint32_t) sqlite3_column_int64(rd->lookup, 3);
                ret_loc->stored_size = (uint32_t) sqlite3_column_int64(rd->lookup, 4);
                r = 1;
        } else if (rc == SQLITE_DONE) {
                r = 0;
        } else {
                r = db_errno(rd->db, rc);
        }
        /* Reset ends the read transaction unless one is held, so the next
         * lookup sees newer commits from other processes. */
        sqlite3_reset(rd->lookup);
        sqlite3_clear_bindings(rd->lookup);
        if (r < 0)
                reader_release_snapshot(rd);
        return r;
}

int cs_index_lookup(cs_index *index, const cs_chunk_id *id, cs_location *ret_loc)
{
        reader rd;
        int r = reader_take(index, &rd);

        if (r < 0)
                return r;
        r = lookup_on(&rd, id, ret_loc, false, 0);
        reader_give(index, &rd);
        return r;
}

void cs_index_release_snapshots(cs_index *index)
{
        pthread_mutex_lock(&index->pool_lock);
        for (size_t i = 0; i < index->pool_size; i++)
                reader_release_snapshot(&index->pool[i]);
        pthread_mutex_unlock(&index->pool_lock);
}

int cs_index_lookup_for_put(cs_index *index, const cs_chunk_id *id, cs_location *ret_loc, uint64_t generation)
{
        reader rd;
        int r = reader_take(index, &rd);

        if (r < 0)
                return r;
        r = lookup_on(&rd, id, ret_loc, true, generation);
        reader_give(index, &rd);
        return r;
}
