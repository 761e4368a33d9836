/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Timelines and points in the catalog.  A timeline is a name; a point is a
 * row naming the root chunk of an immutable tree, with its label and a few
 * figures computed when it was made.
 *
 * Design notes
 *
 *  1. A point's name is its creation time in UTC, ISO 8601 basic format
 *     ("20261122T101505Z"): no colons, so it works in "docker run -v".  Two
 *     points of one timeline in the same second: the second is named
 *     "...Z-2", the third "...Z-3".  Listings order points by creation
 *     time and id, not by name ("...Z-10" sorts before "...Z-2").
 *  2. Adding a point is one transaction that also creates the timeline, so
 *     a crash leaves either the whole point or none of it.  Its chunks were
 *     committed before (cs_store_commit_locked), so a point row never names
 *     a chunk that is not durable.
 *  3. Labels are unique within a timeline and may not be "latest" or look
 *     like a point name, so "T@X" always means one thing: a point name
 *     first, then a label, then "latest".
 *  4. points.id is an INTEGER PRIMARY KEY without AUTOINCREMENT, so SQLite
 *     gives a new point the id of the deleted newest one.  A row of another
 *     table that names a point by id (point_refs: pg_backups) would then
 *     describe the new point: another backup's LSNs for a PostgreSQL base,
 *     a backup for a plain snapshot.  So removing a point deletes those
 *     rows in its transaction, and adding one first deletes any row whose
 *     point is gone or is another point (catalogs written before removal
 *     did this keep such rows), so no old row ever reaches a new point.
 *     Rows keyed by names (clones, clone_points) are not affected.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cs-internal.h"

bool cs_name_is_valid(const char *name)
{
        size_t len;

        if (!name)
                return false;
        len = strlen(name);
        return len >= 1 && len <= CS_TIMELINE_NAME_MAX && strspn(name, CS_NAME_CHARS) == len &&
               name[0] != '.' && name[0] != '-';
}

static bool looks_like_point_name(const char *s)
{
        /* 8 digits, 'T', 6 digits, 'Z' */
        if (strlen(s) < 16)
                return false;
        for (int i = 0; i < 15; i++)
                if (i == 8 ? s[i] != 'T' : (s[i] < '0' || s[i] > '9'))
                        return false;
        return s[15] == 'Z';
}

bool cs_label_is_valid(const char *label)
{
        return cs_name_is_valid(label) && strcmp(label, "latest") != 0 && !looks_like_point_name(label);
}

static void copy_text(char *dst, size_t size, const unsigned char *src)
{
        snprintf(dst, size, "%s", src ? (const char *) src : "");
}

#define POINT_COLUMNS                                                                         \
        "p.id, t.name, p.name, p.label, p.root, p.created, p.files, p.logical_bytes, "      \
        "p.added_bytes"

static int read_point_row(sqlite3_stmt *stmt, cs_point_info *p)
{
        *p = (cs_point_info) {};
        p->id = sqlite3_column_int64(stmt, 0);
        copy_text(p->timeline, sizeof(p->timeline), sqlite3_column_text(stmt, 1));
        copy_text(p->name, sizeof(p->name), sqlite3_column_text(stmt, 2));
        copy_text(p->label, sizeof(p->label), sqlite3_column_text(stmt, 3));
        if (sqlite3_column_bytes(stmt, 4) != CS_CHUNK_ID_SIZE)
                return -EBADMSG;
        memcpy(p->root.bytes, sqlite3_column_blob(stmt, 4), CS_CHUNK_ID_SIZE);
        p->created = sqlite3_column_int64(stmt, 5);
        p->files = (uint64_t) sqlite3_column_int64(stmt, 6);
        p->logical_bytes = (uint64_t) sqlite3_column_int64(stmt, 7);
        p->added_bytes = (uint64_t) sqlite3_column_int64(stmt, 8);
        return 0;
}

int cs_timeline_list(cs_store *store, cs_timeline_info **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ cs_timeline_info *list = NULL;
        size_t n = 0, cap = 0;
        sqlite3 *db;
        int rc, r;

        if (!store || !ret || !ret_n)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_prepare(db,
                             "SELECT t.name, COUNT(p.id), MAX(p.created), "
                             "  (SELECT logical_bytes FROM points WHERE timeline = t.id "
                             "   ORDER BY created DESC, id DESC LIMIT 1) "
                             "FROM timelines t LEFT JOIN points p ON p.timeline = t.id "
                             "GROUP BY t.id ORDER BY t.name",
                             &stmt);
        while (r >= 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        cs_timeline_info *l = reallocarray(list, cap, sizeof(*l));
                        if (!l) {
                                r = -ENOMEM;
                                break;
                        }
                        list = l;
                }
                cs_timeline_info *t = &list[n++];
                *t = (cs_timeline_info) {};
                copy_text(t->name, sizeof(t->name), sqlite3_column_text(stmt, 0));
                t->points = (uint64_t) sqlite3_column_int64(stmt, 1);
                t->newest = sqlite3_column_int64(stmt, 2);
                t->logical_bytes = (uint64_t) sqlite3_column_int64(stmt, 3);
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

int cs_point_list(cs_store *store, const char *timeline, cs_point_info **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ cs_point_info *list = NULL;
        size_t n = 0, cap = 0;
        int64_t exists = 0;
        sqlite3 *db;
        int rc = SQLITE_DONE, r;

        if (!store || !timeline || !ret || !ret_n)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_exec(db, "BEGIN");
        if (r >= 0)
                r = cs_index_prepare(db, "SELECT COUNT(*) FROM timelines WHERE name = ?", &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, timeline, -1, SQLITE_STATIC);
                rc = sqlite3_step(stmt);
                exists = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
                sqlite3_finalize(TAKE_PTR(stmt));
                if (!exists)
                        r = rc == SQLITE_ROW ? -ENOENT : cs_sqlite_errno(rc);
        }
        if (r >= 0)
                r = cs_index_prepare(db,
                                     "SELECT " POINT_COLUMNS " FROM points p JOIN timelines t "
                                     "ON p.timeline = t.id WHERE t.name = ? ORDER BY p.created, p.id",
                                     &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, timeline, -1, SQLITE_STATIC);
                while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                        if (n == cap) {
                                cap = cap ? 2 * cap : 16;
                                cs_point_info *l = reallocarray(list, cap, sizeof(*l));
                                if (!l) {
                                        r = -ENOMEM;
                                        break;
                                }
                                list = l;
                        }
                        r = read_point_row(stmt, &list[n++]);
                        if (r < 0)
                                break;
                }
                if (r >= 0 && rc != SQLITE_DONE)
                        r = cs_sqlite_errno(rc);
        }
        sqlite3_finalize(TAKE_PTR(stmt));
        (void) cs_index_exec(db, "COMMIT");
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

int cs_point_find(cs_store *store, const char *timeline, const char *point, cs_point_info *ret)
{
        static const char *const queries[] = {
                "SELECT " POINT_COLUMNS " FROM points p JOIN timelines t ON p.timeline = t.id "
                "WHERE t.name = ?1 AND p.name = ?2",
                "SELECT " POINT_COLUMNS " FROM points p JOIN timelines t ON p.timeline = t.id "
                "WHERE t.name = ?1 AND p.label = ?2",
                "SELECT " POINT_COLUMNS " FROM points p JOIN timelines t ON p.timeline = t.id "
                "WHERE t.name = ?1 AND ?2 = 'latest' ORDER BY p.created DESC, p.id DESC LIMIT 1",
        };
        sqlite3 *db;
        int r = -ENOENT;

        if (!store || !timeline || !point || !ret)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = -ENOENT;
        for (size_t i = 0; i < ELEMENTSOF(queries) && r == -ENOENT; i++) {
                _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
                int rc;

                r = cs_index_prepare(db, queries[i], &stmt);
                if (r < 0)
                        break;
                sqlite3_bind_text(stmt, 1, timeline, -1, SQLITE_STATIC);
                sqlite3_bind_text(stmt, 2, point, -1, SQLITE_STATIC);
                rc = sqlite3_step(stmt);
                if (rc == SQLITE_ROW)
                        r = read_point_row(stmt, ret);
                else
                        r = rc == SQLITE_DONE ? -ENOENT : cs_sqlite_errno(rc);
        }
        cs_index_reader_release(store->index, db);
        return r;
}

static int timeline_id(sqlite3 *db, const char *name, bool create, int64_t *ret)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, "SELECT id FROM timelines WHERE name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(stmt, 0);
                return 0;
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        if (!create)
                return -ENOENT;
        sqlite3_finalize(TAKE_PTR(stmt));
        r = cs_index_prepare(db, "INSERT INTO timelines(name, created) VALUES(?, strftime('%s','now'))",
                             &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        r = cs_index_step(stmt);
        if (r < 0)
                return r;
        *ret = sqlite3_last_insert_rowid(db);
        return 0;
}

/* Picks the first free name for a point created at `created` (note 1). */
static int pick_point_name(sqlite3 *db, int64_t timeline, int64_t created, char name[static CS_POINT_NAME_MAX])
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        time_t t = (time_t) created;
        struct tm tm;
        char base[32];
        int r;

        if (!gmtime_r(&t, &tm))
                return -EINVAL;
        strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
        r = cs_index_prepare(db, "SELECT COUNT(*) FROM points WHERE timeline = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        for (unsigned n = 1; n < 100000; n++) {
                int rc;
                if (n == 1)
                        snprintf(name, CS_POINT_NAME_MAX, "%s", base);
                else
                        snprintf(name, CS_POINT_NAME_MAX, "%s-%u", base, n);
                sqlite3_bind_int64(stmt, 1, timeline);
                sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
                rc = sqlite3_step(stmt);
                if (rc != SQLITE_ROW)
                        return cs_sqlite_errno(rc);
                bool taken = sqlite3_column_int64(stmt, 0) > 0;
                sqlite3_reset(stmt);
                if (!taken)
                        return 0;
        }
        return -EEXIST;
}

/* Tables whose rows name a point by points.id (design note 4), each with
 * the DELETE of its rows that belong to no existing point.  A pg_backups
 * row's start_time is its point's created (both are clonectl's clock
 * before BASE_BACKUP, verb-pg.c), so a row that differs was written for
 * an earlier point that had the same id. */
static const struct {
        const char *table;
        const char *drop_stale;
} point_refs[] = {
        { "pg_backups",
          "DELETE FROM pg_backups WHERE NOT EXISTS (SELECT 1 FROM points p"
          " WHERE p.id = pg_backups.point AND p.created = pg_backups.start_time)" },
};

/* In the caller's write transaction: deletes the point_refs rows of points
 * that do not exist.  The tables are made by their first write, so a
 * missing one holds nothing. */
static int drop_stale_point_refs(sqlite3 *db)
{
        for (size_t i = 0; i < ELEMENTSOF(point_refs); i++) {
                int r = cs_index_table_exists(db, point_refs[i].table);
                if (r > 0)
                        r = cs_index_exec(db, point_refs[i].drop_stale);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int insert_point(sqlite3 *db, cs_point_info *info)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int64_t timeline;
        int r;

        /* Before the INSERT takes an id that a stale row may still name. */
        r = drop_stale_point_refs(db);
        if (r < 0)
                return r;
        r = timeline_id(db, info->timeline, true, &timeline);
        if (r < 0)
                return r;
        r = pick_point_name(db, timeline, info->created, info->name);
        if (r < 0)
                return r;
        r = cs_index_prepare(db,
                             "INSERT INTO points(timeline, name, label, root, created, files, "
                             "logical_bytes, added_bytes) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                             &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, timeline);
        sqlite3_bind_text(stmt, 2, info->name, -1, SQLITE_STATIC);
        if (info->label[0])
                sqlite3_bind_text(stmt, 3, info->label, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(stmt, 3);
        sqlite3_bind_blob(stmt, 4, info->root.bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 5, info->created);
        sqlite3_bind_int64(stmt, 6, (int64_t) info->files);
        sqlite3_bind_int64(stmt, 7, (int64_t) info->logical_bytes);
        sqlite3_bind_int64(stmt, 8, (int64_t) info->added_bytes);
        r = cs_index_step(stmt);
        if (r < 0)
                return r; /* -EEXIST: the label is taken (the name was free) */
        info->id = sqlite3_last_insert_rowid(db);
        return 0;
}

int cs_point_add(cs_store *store, cs_point_info *info)
{
        return cs_point_add_with(store, info, NULL, NULL);
}

int cs_point_add_with(cs_store *store, cs_point_info *info, cs_point_add_also also, void *userdata)
{
        sqlite3 *db;
        int r;

        if (!store || !info || !cs_name_is_valid(info->timeline))
                return -EINVAL;
        if (info->label[0] && !cs_label_is_valid(info->label))
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = cs_store_has(store, &info->root, NULL);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;

        pthread_mutex_lock(&store->write_lock);
        r = cs_store_commit_locked(store, false);
        if (r < 0)
                goto out;
        db = cs_index_writer(store->index);
        r = cs_index_begin(db);
        if (r < 0)
                goto out;
        r = insert_point(db, info);
        if (r >= 0 && also)
                r = also(db, info, userdata);
        if (r < 0)
                cs_index_rollback(db);
        else
                r = cs_index_commit(db);
out:
        pthread_mutex_unlock(&store->write_lock);
        return r;
}

int cs_point_remove(cs_store *store, const char *timeline, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *del = NULL;
        int64_t tid;
        sqlite3 *db;
        int r;

        if (!store || !timeline || !name)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&store->write_lock);
        db = cs_store_writer_locked(store);
        r = cs_index_begin(db);
        if (r < 0)
                goto out;
        r = timeline_id(db, timeline, false, &tid);
        if (r >= 0)
                r = cs_index_prepare(db, "DELETE FROM points WHERE timeline = ? AND name = ?", &del);
        if (r >= 0) {
                sqlite3_bind_int64(del, 1, tid);
                sqlite3_bind_text(del, 2, name, -1, SQLITE_STATIC);
                r = cs_index_step(del);
                if (r >= 0 && sqlite3_changes(db) == 0)
                        r = -ENOENT;
        }
        /* The point's rows elsewhere go with it: the next point may take
         * its id (note 4). */
        if (r >= 0)
                r = drop_stale_point_refs(db);
        if (r >= 0) {
                char sql[128];
                snprintf(sql, sizeof(sql),
                         "DELETE FROM timelines WHERE id = %lld AND "
                         "NOT EXISTS (SELECT 1 FROM points WHERE timeline = %lld)",
                         (long long) tid, (long long) tid);
                r = cs_index_exec(db, sql);
        }
        if (r < 0)
                cs_index_rollback(db);
        else
                r = cs_index_commit(db);
out:
        cs_store_writer_unlock(store, &del);
        return r;
}

/* --- Pins ---------------------------------------------------------------- */

/* A process is named by its pid and its start time, so a recycled pid
 * does not keep a dead process's pins alive. */
int cs_process_start_time(pid_t pid, uint64_t *ret)
{
        char path[64], buf[1024], *p;
        unsigned long long start = 0;
        FILE *f;
        size_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? -ESRCH : negative_errno();
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        /* The command name may hold spaces and parentheses: skip past the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        /* Field 22 (starttime) is the 20th after the name. */
        for (int field = 0; field < 20 && p; field++)
                p = strchr(p + 1, ' ');
        if (!p || sscanf(p + 1, "%llu", &start) != 1)
                return -EBADMSG;
        *ret = start;
        return 0;
}

/* "pin:PID:START:HANDLE:N": N counts the handle's pins, so every pin is its
 * own row even when two pin the same tree. */
static int pin_name(const cs_store *store, uint64_t pin, char buf[static 128])
{
        uint64_t start;
        int r = cs_process_start_time(getpid(), &start);

        if (r < 0)
                return r;
        snprintf(buf, 128, "pin:%d:%llu:%p:%llu", (int) getpid(), (unsigned long long) start, (const void *) store,
                 (unsigned long long) pin);
        return 0;
}

static int pin_exec(cs_store *store, const char *sql, const char *name, const cs_chunk_id *root)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        sqlite3 *db;
        int r;

        pthread_mutex_lock(&store->write_lock);
        db = cs_store_writer_locked(store);
        r = cs_index_prepare(db, sql, &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                if (root)
                        sqlite3_bind_blob(stmt, 2, root->bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
                r = cs_index_step(stmt);
        }
        cs_store_writer_unlock(store, &stmt);
        return r;
}

int cs_store_pin(cs_store *store, const cs_chunk_id *root, uint64_t *ret_pin)
{
        uint64_t pin;
        char name[128];
        int r;

        if (!store || !root || !ret_pin)
                return -EINVAL;
        pthread_mutex_lock(&store->write_lock);
        pin = ++store->pins;
        pthread_mutex_unlock(&store->write_lock);
        r = pin_name(store, pin, name);
        if (r < 0)
                return r;
        r = pin_exec(store,
                     "INSERT OR REPLACE INTO roots(name, id, created) VALUES(?1, ?2, strftime('%s','now'))",
                     name, root);
        if (r < 0)
                return r;
        *ret_pin = pin;
        return 0;
}

int cs_store_unpin(cs_store *store, uint64_t pin)
{
        char name[128];
        int r;

        if (!store || !pin)
                return -EINVAL;
        r = pin_name(store, pin, name);
        if (r < 0)
                return r;
        return pin_exec(store, "DELETE FROM roots WHERE name = ?1", name, NULL);
}

int cs_store_drop_stale_pins(cs_store *store, sqlite3 *db)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        char **stale = NULL;
        size_t n = 0;
        int rc, r;

        r = cs_index_prepare(db, "SELECT name FROM roots WHERE name LIKE 'pin:%'", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                const char *name = (const char *) sqlite3_column_text(stmt, 0);
                unsigned long long start = 0;
                uint64_t actual;
                int pid = 0;

                if (!name || sscanf(name, "pin:%d:%llu:", &pid, &start) != 2)
                        continue;
                int alive = cs_process_start_time(pid, &actual);
                if ((alive == 0 && actual == start) || (alive < 0 && alive != -ESRCH))
                        continue; /* it lives, or we cannot tell (hidepid): keep it */
                char **p = reallocarray(stale, n + 1, sizeof(*p));
                if (!p) {
                        r = -ENOMEM;
                        break;
                }
                stale = p;
                stale[n] = strdup(name);
                if (!stale[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));
        for (size_t i = 0; i < n; i++) {
                if (r >= 0)
                        r = pin_exec(store, "DELETE FROM roots WHERE name = ?1", stale[i], NULL);
                free(stale[i]);
        }
        free(stale);
        return r;
}
