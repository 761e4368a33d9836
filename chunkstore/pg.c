/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PostgreSQL sources in the catalog: the link of a timeline to a server,
 * what each base backup point covers, and the WAL received from it.  Also
 * blob objects, the tree object that holds one WAL segment (or any byte
 * string longer than a block) in the store.
 *
 * Design notes
 *
 *  1. Schema 2 adds four tables to schema 1.  The first write of a PostgreSQL
 *     row creates them (ensure_schema), in the transaction of that write,
 *     which also sets meta.schema to 2, so a clonectl that knows nothing of
 *     WAL roots refuses the store rather than have its gc sweep the WAL:
 *       pg_sources(timeline, conninfo, slot, system_id, segment_size, created)
 *       pg_backups(point, tli, start_lsn, end_lsn, start_time, end_time)
 *       pg_wal(timeline, tli, segno, size, partial, root, first_commit,
 *              last_commit, created)
 *       pg_history(timeline, tli, content)
 *     gc keeps everything reachable from pg_wal.root too (gc.c, push_roots).
 *     pg_backups names its point by points.id, which SQLite reuses: the
 *     row is written in the point's own transaction (cs_pg_point_add) and
 *     deleted in the transaction that removes the point (timeline.c,
 *     design note 4).
 *  2. conninfo never holds a password: the caller strips it (libpq's
 *     PGPASSFILE and service files supply it at connect time).
 *  3. A pg_wal row is written only after its chunks are durable (the puts
 *     are committed first, in the same call), so the flush position the
 *     receiver acknowledges after cs_pg_wal_put returns survives a crash.
 *  4. A blob object is a tree chunk whose children are the blob's blocks
 *     (the zero id for an all-zero block) and whose body is "CBL1" and the
 *     blob's size as le64.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cs-internal.h"

#define BLOB_MAGIC "CBL1"
#define BLOB_BODY_SIZE 12

static const char pg_schema_sql[] =
        "CREATE TABLE IF NOT EXISTS pg_sources(timeline TEXT PRIMARY KEY, conninfo TEXT NOT NULL,"
        "  slot TEXT NOT NULL, system_id TEXT NOT NULL, segment_size INTEGER NOT NULL,"
        "  created INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS pg_backups(point INTEGER PRIMARY KEY, tli INTEGER NOT NULL,"
        "  start_lsn INTEGER NOT NULL, end_lsn INTEGER NOT NULL, start_time INTEGER NOT NULL,"
        "  end_time INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS pg_wal(timeline TEXT NOT NULL, tli INTEGER NOT NULL,"
        "  segno INTEGER NOT NULL, size INTEGER NOT NULL, partial INTEGER NOT NULL,"
        "  root BLOB NOT NULL, first_commit INTEGER NOT NULL, last_commit INTEGER NOT NULL,"
        "  created INTEGER NOT NULL, PRIMARY KEY(timeline, tli, segno)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS pg_history(timeline TEXT NOT NULL, tli INTEGER NOT NULL,"
        "  content BLOB NOT NULL, PRIMARY KEY(timeline, tli)) WITHOUT ROWID;"
        "UPDATE meta SET value = 2 WHERE key = 'schema' AND value < 2;";

/* In the writer's open transaction. */
static int ensure_schema(sqlite3 *db)
{
        return cs_index_exec(db, pg_schema_sql);
}

static bool no_such_table(sqlite3 *db, int r)
{
        return r == -EIO && strstr(sqlite3_errmsg(db), "no such table");
}

typedef void (*bind_fn)(sqlite3_stmt *stmt, const void *userdata);

/* Runs the statement sql, or each of the statements in it, with bind()'s
 * values, in db's open transaction.  Returns the number of rows the
 * first statement changed. */
static int run_bound(sqlite3 *db, const char *sql, bind_fn bind, const void *userdata)
{
        int changes = -1, r = 0;

        for (const char *next = sql; r >= 0 && *next;) {
                sqlite3_stmt *stmt = NULL;
                int rc = sqlite3_prepare_v2(db, next, -1, &stmt, &next);
                if (rc != SQLITE_OK)
                        return cs_sqlite_errno(rc);
                if (!stmt)
                        break; /* only white space was left */
                bind(stmt, userdata);
                r = cs_index_step(stmt);
                if (changes < 0)
                        changes = sqlite3_changes(db);
                sqlite3_finalize(stmt);
        }
        return r < 0 ? r : MAX(changes, 0);
}

/* run_bound() inside one write transaction of its own, after committing
 * pending puts so that the row never names a chunk that is not durable.
 * The count is read before the writer connection is let go: a background
 * commit may use it next. */
static int write_rows(cs_store *store, const char *sql, bind_fn bind, const void *userdata)
{
        sqlite3_stmt *none = NULL;
        sqlite3 *db;
        int changes = 0, r;

        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&store->write_lock);
        r = cs_store_commit_locked(store, false);
        if (r < 0)
                goto out;
        db = cs_index_writer(store->index);
        r = cs_index_begin(db);
        if (r < 0)
                goto out;
        r = ensure_schema(db);
        if (r >= 0)
                r = changes = run_bound(db, sql, bind, userdata);
        if (r < 0) {
                cs_index_rollback(db);
                goto out;
        }
        r = cs_index_commit(db);
        if (r >= 0)
                r = changes;
out:
        cs_store_writer_unlock(store, &none);
        return r;
}

/* write_rows(), for one row: 0 on success. */
static int write_row(cs_store *store, const char *sql, bind_fn bind, const void *userdata)
{
        int r = write_rows(store, sql, bind, userdata);

        return r < 0 ? r : 0;
}

/* What a read selects by: the timeline, then up to two integers. */
typedef struct key {
        const char *timeline;
        int n_ints;
        int64_t ints[2];
} key;

typedef int (*row_fn)(sqlite3_stmt *stmt, void *ret);

/* Runs a query on a pooled reader and hands each row to row(), which
 * fills the element at ret.  With many, *(void **) ret is an array grown
 * by elem_size, and *ret_n its length; without, the first row fills ret
 * and no row is -ENOENT.  A catalog without the tables reads as empty. */
static int read_rows(cs_store *store, const char *sql, const key *k, row_fn row, size_t elem_size, bool many,
                     void *ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ uint8_t *list = NULL;
        size_t n = 0, cap = 0;
        sqlite3 *db;
        int rc = SQLITE_DONE, r;

        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_prepare(db, sql, &stmt);
        if (no_such_table(db, r))
                r = 0;
        else if (r >= 0) {
                sqlite3_bind_text(stmt, 1, k->timeline, -1, SQLITE_STATIC);
                for (int i = 0; i < k->n_ints; i++)
                        sqlite3_bind_int64(stmt, 2 + i, k->ints[i]);
        }
        while (r >= 0 && stmt && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (!many) {
                        r = row(stmt, ret);
                        n = 1;
                        break;
                }
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        uint8_t *l = reallocarray(list, cap, elem_size);
                        if (!l) {
                                r = -ENOMEM;
                                break;
                        }
                        list = l;
                }
                r = row(stmt, list + elem_size * n++);
        }
        if (r >= 0 && stmt && rc != SQLITE_DONE && rc != SQLITE_ROW)
                r = cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;
        if (!many)
                return n ? 0 : -ENOENT;
        *(void **) ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

static void copy_text(char *dst, size_t size, const unsigned char *src)
{
        snprintf(dst, size, "%s", src ? (const char *) src : "");
}

/* --- Sources ---------------------------------------------------------------- */

static void bind_source(sqlite3_stmt *stmt, const void *userdata)
{
        const cs_pg_source *s = userdata;
        char sysid[32];

        snprintf(sysid, sizeof(sysid), "%llu", (unsigned long long) s->system_id);
        sqlite3_bind_text(stmt, 1, s->timeline, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 2, s->conninfo, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 3, s->slot, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(stmt, 4, sysid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 5, s->segment_size);
        sqlite3_bind_int64(stmt, 6, s->created);
}

#define INSERT_SOURCE                                                                             \
        "INSERT INTO pg_sources(timeline, conninfo, slot, system_id, segment_size, created)"    \
        " VALUES(?, ?, ?, ?, ?, ?)"

int cs_pg_source_add(cs_store *store, const cs_pg_source *src)
{
        if (!store || !src || !cs_name_is_valid(src->timeline) || !src->slot[0])
                return -EINVAL;
        return write_row(store, INSERT_SOURCE, bind_source, src);
}

static int read_source_row(sqlite3_stmt *stmt, void *userdata)
{
        cs_pg_source *ret = userdata;

        *ret = (cs_pg_source) {};
        copy_text(ret->timeline, sizeof(ret->timeline), sqlite3_column_text(stmt, 0));
        copy_text(ret->conninfo, sizeof(ret->conninfo), sqlite3_column_text(stmt, 1));
        copy_text(ret->slot, sizeof(ret->slot), sqlite3_column_text(stmt, 2));
        ret->system_id = strtoull((const char *) sqlite3_column_text(stmt, 3), NULL, 10);
        ret->segment_size = (uint32_t) sqlite3_column_int64(stmt, 4);
        ret->created = sqlite3_column_int64(stmt, 5);
        return 0;
}

int cs_pg_source_get(cs_store *store, const char *timeline, cs_pg_source *ret)
{
        if (!store || !timeline || !ret)
                return -EINVAL;
        return read_rows(store,
                         "SELECT timeline, conninfo, slot, system_id, segment_size, created FROM pg_sources"
                         " WHERE timeline = ?",
                         &(key) { .timeline = timeline }, read_source_row, 0, false, ret, NULL);
}

static void bind_timeline(sqlite3_stmt *stmt, const void *userdata)
{
        sqlite3_bind_text(stmt, 1, userdata, -1, SQLITE_TRANSIENT);
}

int cs_pg_source_remove(cs_store *store, const char *timeline)
{
        int r;

        if (!store || !cs_name_is_valid(timeline))
                return -EINVAL;
        /* One transaction: a receiver's next cs_pg_wal_put either comes
         * before it (and its row goes too) or finds no link; nothing of
         * the old link is left for a new one of the same name to resume
         * from.  The points stay, and so do the chunks clones use, and
         * their backup rows, which say they are base backups that cannot
         * start without the WAL gone now (pg-clone.c refuses to clone
         * them); a new link of the name needs the points forgotten first.
         * The backups of forgotten points go: a point id can be used
         * again, and its new backup row must not collide. */
        r = write_rows(store,
                       "DELETE FROM pg_sources WHERE timeline = ?1;"
                       "DELETE FROM pg_wal WHERE timeline = ?1;"
                       "DELETE FROM pg_history WHERE timeline = ?1;"
                       "DELETE FROM pg_backups WHERE point NOT IN (SELECT id FROM points);",
                       bind_timeline, timeline);
        if (r < 0)
                return r;
        return r == 0 ? -ENOENT : 0;
}

/* --- Base backups ------------------------------------------------------------ */

static void bind_backup(sqlite3_stmt *stmt, const void *userdata)
{
        const cs_pg_backup *b = userdata;

        sqlite3_bind_int64(stmt, 1, b->point);
        sqlite3_bind_int64(stmt, 2, b->tli);
        sqlite3_bind_int64(stmt, 3, (int64_t) b->start_lsn);
        sqlite3_bind_int64(stmt, 4, (int64_t) b->end_lsn);
        sqlite3_bind_int64(stmt, 5, b->start_time);
        sqlite3_bind_int64(stmt, 6, b->end_time);
}

typedef struct backup_point {
        cs_pg_backup *b;
        const cs_pg_source *src;
} backup_point;

/* In cs_point_add's transaction: the backup under the new point's id,
 * and with src the timeline's link, so that a failure leaves neither the
 * point nor a link without its first point.  start_time is the point's
 * created: timeline.c tells a row left by an earlier point of the same id
 * by it (its design note 4). */
static int record_backup(sqlite3 *db, const cs_point_info *info, void *userdata)
{
        backup_point *bp = userdata;
        int r;

        bp->b->point = info->id;
        bp->b->start_time = info->created;
        r = ensure_schema(db);
        if (r >= 0 && bp->src)
                r = run_bound(db, INSERT_SOURCE, bind_source, bp->src);
        if (r >= 0)
                r = run_bound(db,
                              "INSERT INTO pg_backups(point, tli, start_lsn, end_lsn, start_time, end_time)"
                              " VALUES(?, ?, ?, ?, ?, ?)",
                              bind_backup, bp->b);
        return r < 0 ? r : 0;
}

int cs_pg_point_add(cs_store *store, cs_point_info *info, cs_pg_backup *b, const cs_pg_source *src)
{
        if (!store || !info || !b)
                return -EINVAL;
        if (src && (strcmp(src->timeline, info->timeline) != 0 || !src->slot[0]))
                return -EINVAL;
        return cs_point_add_with(store, info, record_backup, &(backup_point) { b, src });
}

static int read_backup_row(sqlite3_stmt *stmt, void *userdata)
{
        *(cs_pg_backup *) userdata = (cs_pg_backup) {
                .point = sqlite3_column_int64(stmt, 0),
                .tli = (uint32_t) sqlite3_column_int64(stmt, 1),
                .start_lsn = (uint64_t) sqlite3_column_int64(stmt, 2),
                .end_lsn = (uint64_t) sqlite3_column_int64(stmt, 3),
                .start_time = sqlite3_column_int64(stmt, 4),
                .end_time = sqlite3_column_int64(stmt, 5),
        };
        return 0;
}

int cs_pg_backup_list(cs_store *store, const char *timeline, cs_pg_backup **ret, size_t *ret_n)
{
        if (!store || !timeline || !ret || !ret_n)
                return -EINVAL;
        return read_rows(store,
                         "SELECT b.point, b.tli, b.start_lsn, b.end_lsn, b.start_time, b.end_time"
                         " FROM pg_backups b JOIN points p ON p.id = b.point"
                         " JOIN timelines t ON t.id = p.timeline WHERE t.name = ?"
                         " ORDER BY b.end_lsn, b.point",
                         &(key) { .timeline = timeline }, read_backup_row, sizeof(cs_pg_backup), true, ret, ret_n);
}

/* --- WAL segments and timeline history ---------------------------------------- */

typedef struct wal_row {
        const char *timeline;
        const cs_pg_wal *w;
} wal_row;

static void bind_wal(sqlite3_stmt *stmt, const void *userdata)
{
        const wal_row *row = userdata;
        const cs_pg_wal *w = row->w;

        sqlite3_bind_text(stmt, 1, row->timeline, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 2, w->tli);
        sqlite3_bind_int64(stmt, 3, (int64_t) w->segno);
        sqlite3_bind_int64(stmt, 4, w->size);
        sqlite3_bind_int(stmt, 5, w->partial);
        sqlite3_bind_blob(stmt, 6, w->root.bytes, CS_CHUNK_ID_SIZE, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 7, w->first_commit);
        sqlite3_bind_int64(stmt, 8, w->last_commit);
        sqlite3_bind_int64(stmt, 9, (int64_t) time(NULL));
}

/* The link is tested in the writing statement itself, so that a
 * receiver racing cs_pg_source_remove() cannot leave a row behind. */
#define IF_LINKED " WHERE EXISTS (SELECT 1 FROM pg_sources WHERE timeline = ?1)"

/* After a write that changed nothing: -ENOENT if that is because the
 * timeline is not linked. */
static int linked_or_enoent(cs_store *store, const char *timeline, int changes)
{
        cs_pg_source src;
        int r;

        if (changes != 0)
                return 0;
        r = cs_pg_source_get(store, timeline, &src);
        return r == -ENOENT ? r : 0;
}

int cs_pg_wal_put(cs_store *store, const char *timeline, const cs_pg_wal *w)
{
        wal_row row = { timeline, w };
        int r;

        if (!store || !cs_name_is_valid(timeline) || !w || w->tli == 0)
                return -EINVAL;
        /* A complete segment is never replaced, a partial one only by a
         * complete or a longer one (receivers resuming, archive-wal). */
        r = write_rows(store,
                       "INSERT INTO pg_wal(timeline, tli, segno, size, partial, root, first_commit,"
                       " last_commit, created) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9" IF_LINKED
                       " ON CONFLICT(timeline, tli, segno) DO UPDATE SET size = excluded.size,"
                       " partial = excluded.partial, root = excluded.root,"
                       " first_commit = excluded.first_commit, last_commit = excluded.last_commit,"
                       " created = excluded.created"
                       " WHERE pg_wal.partial AND (NOT excluded.partial OR excluded.size >= pg_wal.size)",
                       bind_wal, &row);
        return r < 0 ? r : linked_or_enoent(store, timeline, r);
}

typedef struct prune_row {
        const char *timeline;
        uint64_t before;
} prune_row;

static void bind_prune(sqlite3_stmt *stmt, const void *userdata)
{
        const prune_row *p = userdata;

        sqlite3_bind_text(stmt, 1, p->timeline, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 2, (int64_t) MIN(p->before, (uint64_t) INT64_MAX));
}

int cs_pg_wal_prune(cs_store *store, const char *timeline, uint64_t before_segno)
{
        prune_row p = { timeline, before_segno };

        if (!store || !cs_name_is_valid(timeline))
                return -EINVAL;
        return write_rows(store, "DELETE FROM pg_wal WHERE timeline = ? AND segno < ?", bind_prune, &p);
}

static int read_wal_row(sqlite3_stmt *stmt, void *userdata)
{
        cs_pg_wal *w = userdata;

        *w = (cs_pg_wal) {
                .tli = (uint32_t) sqlite3_column_int64(stmt, 0),
                .segno = (uint64_t) sqlite3_column_int64(stmt, 1),
                .size = (uint32_t) sqlite3_column_int64(stmt, 2),
                .partial = sqlite3_column_int(stmt, 3) != 0,
                .first_commit = sqlite3_column_int64(stmt, 5),
                .last_commit = sqlite3_column_int64(stmt, 6),
        };
        if (sqlite3_column_bytes(stmt, 4) != CS_CHUNK_ID_SIZE)
                return -EBADMSG;
        memcpy(w->root.bytes, sqlite3_column_blob(stmt, 4), CS_CHUNK_ID_SIZE);
        return 0;
}

#define WAL_COLUMNS "SELECT tli, segno, size, partial, root, first_commit, last_commit FROM pg_wal"

int cs_pg_wal_list(cs_store *store, const char *timeline, cs_pg_wal **ret, size_t *ret_n)
{
        if (!store || !timeline || !ret || !ret_n)
                return -EINVAL;
        return read_rows(store, WAL_COLUMNS " WHERE timeline = ? ORDER BY segno, tli", &(key) { .timeline = timeline },
                         read_wal_row, sizeof(cs_pg_wal), true, ret, ret_n);
}

int cs_pg_wal_get(cs_store *store, const char *timeline, uint32_t tli, uint64_t segno, cs_pg_wal *ret)
{
        if (!store || !timeline || !ret)
                return -EINVAL;
        return read_rows(store, WAL_COLUMNS " WHERE timeline = ? AND tli = ? AND segno = ?",
                         &(key) { timeline, 2, { tli, (int64_t) segno } }, read_wal_row, 0, false, ret, NULL);
}

typedef struct history_row {
        const char *timeline;
        uint32_t tli;
        const void *content;
        size_t size;
} history_row;

static void bind_history(sqlite3_stmt *stmt, const void *userdata)
{
        const history_row *h = userdata;

        sqlite3_bind_text(stmt, 1, h->timeline, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 2, h->tli);
        sqlite3_bind_blob(stmt, 3, h->size ? h->content : "", (int) h->size, SQLITE_TRANSIENT);
}

int cs_pg_history_put(cs_store *store, const char *timeline, uint32_t tli, const void *content, size_t size)
{
        history_row h = { timeline, tli, content, size };
        int r;

        if (!store || !cs_name_is_valid(timeline) || (!content && size) || size > CS_CHUNK_SIZE_MAX)
                return -EINVAL;
        r = write_rows(store, "INSERT OR REPLACE INTO pg_history(timeline, tli, content) SELECT ?1, ?2, ?3" IF_LINKED,
                       bind_history, &h);
        return r < 0 ? r : linked_or_enoent(store, timeline, r);
}

typedef struct history_out {
        void *content;
        size_t size;
} history_out;

static int read_history_row(sqlite3_stmt *stmt, void *userdata)
{
        history_out *h = userdata;
        size_t size = (size_t) sqlite3_column_bytes(stmt, 0);

        h->content = malloc(size + 1);
        if (!h->content)
                return -ENOMEM;
        if (size)
                memcpy(h->content, sqlite3_column_blob(stmt, 0), size);
        ((char *) h->content)[size] = 0;
        h->size = size;
        return 0;
}

int cs_pg_history_get(cs_store *store, const char *timeline, uint32_t tli, void **ret, size_t *ret_size)
{
        history_out h = {};
        int r;

        if (!store || !timeline || !ret || !ret_size)
                return -EINVAL;
        r = read_rows(store, "SELECT content FROM pg_history WHERE timeline = ? AND tli = ?",
                      &(key) { timeline, 1, { tli } }, read_history_row, 0, false, &h, NULL);
        if (r < 0)
                return r;
        *ret = h.content;
        *ret_size = h.size;
        return 0;
}

/* --- Blob objects ---------------------------------------------------------------- */

int cs_blob_build(cs_store *store, const void *data, size_t size, cs_chunk_id *ret)
{
        uint32_t bs;
        size_t n;
        _cleanup_free_ cs_chunk_id *ids = NULL;
        _cleanup_free_ uint8_t *obj = NULL;
        uint8_t body[BLOB_BODY_SIZE];
        int r;

        if (!store || (!data && size) || !ret)
                return -EINVAL;
        bs = cs_store_block_size(store);
        n = DIV_ROUND_UP(size, bs);
        if (cs_tree_size(n, sizeof(body)) > CS_CHUNK_SIZE_MAX)
                return -E2BIG;
        ids = calloc(MAX(n, 1u), sizeof(*ids));
        obj = malloc(cs_tree_size(n, sizeof(body)));
        if (!ids || !obj)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                size_t len = MIN((size_t) bs, size - i * bs);
                r = cs_store_put(store, CS_KIND_DATA, (const uint8_t *) data + i * bs, len, &ids[i]);
                if (r < 0)
                        return r;
        }
        memcpy(body, BLOB_MAGIC, 4);
        for (int i = 0; i < 8; i++)
                body[4 + i] = (uint8_t) ((uint64_t) size >> (8 * i));
        cs_tree_encode(obj, ids, n, body, sizeof(body));
        r = cs_store_put(store, CS_KIND_TREE, obj, cs_tree_size(n, sizeof(body)), ret);
        return r < 0 ? r : 0;
}

int cs_blob_blocks(cs_store *store, const cs_chunk_id *id, cs_chunk_id **ret_blocks, size_t *ret_n,
                   uint64_t *ret_size)
{
        _cleanup_free_ uint8_t *obj = NULL;
        _cleanup_free_ cs_chunk_id *ids = NULL;
        const cs_chunk_id *children;
        const uint8_t *body;
        size_t n, body_size;
        uint64_t size = 0;
        cs_chunk_info info;
        int r;

        if (!store || !id || !ret_blocks || !ret_n || !ret_size)
                return -EINVAL;
        r = cs_store_has(store, id, &info);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        obj = malloc(MAX(info.size, 1u));
        if (!obj)
                return -ENOMEM;
        r = cs_store_get(store, id, obj, info.size);
        if (r < 0)
                return r;
        r = cs_tree_decode(obj, (size_t) r, &children, &n, (const void **) &body, &body_size);
        if (r < 0)
                return r;
        if (body_size != BLOB_BODY_SIZE || memcmp(body, BLOB_MAGIC, 4) != 0)
                return -EBADMSG;
        for (int i = 0; i < 8; i++)
                size |= (uint64_t) body[4 + i] << (8 * i);
        if (DIV_ROUND_UP(size, cs_store_block_size(store)) != n)
                return -EBADMSG;
        ids = malloc(MAX(n, 1u) * sizeof(*ids));
        if (!ids)
                return -ENOMEM;
        memcpy(ids, children, n * sizeof(*ids));
        *ret_blocks = TAKE_PTR(ids);
        *ret_n = n;
        *ret_size = size;
        return 0;
}

int cs_blob_read(cs_store *store, const cs_chunk_id *id, void *buf, size_t buf_size, size_t *ret_size)
{
        _cleanup_free_ cs_chunk_id *ids = NULL;
        uint64_t size;
        uint32_t bs;
        size_t n;
        int r;

        if (!store || !id || (!buf && buf_size) || !ret_size)
                return -EINVAL;
        r = cs_blob_blocks(store, id, &ids, &n, &size);
        if (r < 0)
                return r;
        if (size > buf_size)
                return -ENOBUFS;
        bs = cs_store_block_size(store);
        for (size_t i = 0; i < n; i++) {
                size_t len = (size_t) MIN((uint64_t) bs, size - i * bs);
                if (cs_chunk_id_is_zero(&ids[i])) {
                        memset((uint8_t *) buf + i * bs, 0, len);
                        continue;
                }
                r = cs_store_get(store, &ids[i], (uint8_t *) buf + i * bs, len);
                if (r < 0)
                        return r;
                if ((size_t) r != len)
                        return -EBADMSG;
        }
        *ret_size = (size_t) size;
        return 0;
}
