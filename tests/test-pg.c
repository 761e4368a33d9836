/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the PostgreSQL catalog rows that name a point by its id
 * (pg.c, timeline.c design note 4).  SQLite gives a new point the id of
 * the deleted newest one, so a removed point's pg_backups row must go with
 * it, a point and its backup record go in one transaction, and a catalog
 * that still holds rows of removed points (written before removal deleted
 * them) is healed before the next point takes an id.
 */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#include "cs-internal.h"
#include "tap.h"

#define T0 1700000000 /* points' created times: far apart, never the same second */

static cs_chunk_id root;

/* An empty root directory, the tree of every point here. */
static int make_root(cs_store *s)
{
        cs_dir_builder *b = NULL;
        cs_entry e = { .mode = S_IFDIR | 0755, .nlink = 2 };
        int r;

        r = cs_dir_builder_new(s, &b);
        if (r >= 0)
                r = cs_dir_builder_finish(b, &e.subdir);
        cs_dir_builder_free(b);
        if (r >= 0)
                r = cs_point_build(s, &e, &root);
        return r < 0 ? r : cs_store_commit(s);
}

static cs_point_info point_of(const char *timeline, int64_t created)
{
        cs_point_info p = { .root = root, .created = created };

        snprintf(p.timeline, sizeof(p.timeline), "%s", timeline);
        return p;
}

static int add_base(cs_store *s, const char *timeline, int64_t created, uint64_t lsn, const cs_pg_source *src,
                    cs_point_info *ret)
{
        cs_pg_backup b = { .tli = 1, .start_lsn = lsn, .end_lsn = lsn + 0x100, .end_time = created + 1 };

        *ret = point_of(timeline, created);
        return cs_pg_point_add(s, ret, &b, src);
}

/* The backups of timeline: how many, and the first one's point and LSN. */
static size_t backups(cs_store *s, const char *timeline, cs_pg_backup *ret_first)
{
        cs_pg_backup *list = NULL;
        size_t n = 0;

        if (cs_pg_backup_list(s, timeline, &list, &n) < 0)
                return (size_t) -1;
        if (n && ret_first)
                *ret_first = list[0];
        free(list);
        return n;
}

static int64_t catalog_int(const char *store_path, const char *sql)
{
        char path[600];
        sqlite3 *db = NULL;
        int64_t v = -1;

        snprintf(path, sizeof(path), "%s/catalog.db", store_path);
        if (sqlite3_open(path, &db) == SQLITE_OK)
                (void) cs_index_query_int(db, sql, 0, &v);
        sqlite3_close(db);
        return v;
}

/* What a clonectl from before this fix did: it deleted the point and kept
 * the rows naming it. */
static int catalog_exec(const char *store_path, const char *sql)
{
        char path[600];
        sqlite3 *db = NULL;
        int r = -EIO;

        snprintf(path, sizeof(path), "%s/catalog.db", store_path);
        if (sqlite3_open(path, &db) == SQLITE_OK)
                r = cs_index_exec(db, sql);
        sqlite3_close(db);
        return r;
}

int main(void)
{
        char path[512];
        cs_store *s = NULL;
        cs_pg_source src = { .timeline = "db", .slot = "clonefs_db", .system_id = 42, .segment_size = 16 << 20 };
        cs_point_info p1, p2, p3, plain, got;
        cs_pg_backup b;

        tap_path(path, sizeof(path), "store");
        ok(cs_store_init(path, &(cs_init_params) { .block_size = 4096 }) == 0, "init a store");
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "open it");
        ok(make_root(s) == 0, "an empty tree");

        /* A link and its first point are one transaction. */
        ok(add_base(s, "db", T0, 0x1000000, &src, &p1) == 0, "link db with its first base point");
        ok(cs_pg_source_get(s, "db", &(cs_pg_source) {}) == 0, "db is linked");
        is_int(backups(s, "db", &b), 1, "one base");
        ok(b.point == p1.id && b.start_time == p1.created && b.start_lsn == 0x1000000,
           "it names the point, and starts at the point's created time");
        is_int(add_base(s, "db", T0 + 100, 0x2000000, &src, &p2), -EEXIST, "linking db again is refused");
        is_int(cs_point_find(s, "db", "latest", &got) == 0 ? got.id : 0, p1.id, "and leaves no point");
        is_int(add_base(s, "db2", T0 + 100, 0x2000000, &(cs_pg_source) { .timeline = "db", .slot = "x" }, &p2),
               -EINVAL, "a link of another timeline is refused");
        is_int(cs_point_find(s, "db2", "latest", &got), -ENOENT, "and makes no timeline");

        /* Forget the newest point: its row goes with it, and its id is
         * taken again without the old backup's LSNs. */
        ok(add_base(s, "db", T0 + 100, 0x2000000, NULL, &p2) == 0, "a second base point");
        ok(cs_point_remove(s, "db", p2.name) == 0, "forget it (the store's newest point)");
        is_int(catalog_int(path, "SELECT count(*) FROM pg_backups"), 1, "its backup row is gone with it");
        ok(add_base(s, "db", T0 + 200, 0x3000000, NULL, &p3) == 0, "the next base point is recorded");
        is_int(p3.id, p2.id, "(it took the forgotten point's id)");
        ok(backups(s, "db", &b) == 2 && b.point == p1.id, "two bases, the old one first");
        {
                cs_pg_backup *list = NULL;
                size_t n = 0;
                ok(cs_pg_backup_list(s, "db", &list, &n) == 0 && n == 2 && list[1].point == p3.id &&
                           list[1].start_lsn == 0x3000000 && list[1].start_time == p3.created,
                   "the new one has its own LSNs, not the forgotten one's");
                free(list);
        }
        ok(cs_point_remove(s, "db", p3.name) == 0, "forget it too");
        plain = point_of("jl", T0 + 300);
        ok(cs_point_add(s, &plain) == 0 && plain.id == p3.id, "a plain point of another timeline takes the id");
        is_int(backups(s, "jl", NULL), 0, "and is no PostgreSQL base");

        /* A catalog whose forget kept the rows heals at the next point. */
        ok(add_base(s, "db", T0 + 400, 0x4000000, NULL, &p2) == 0, "a base point");
        cs_store_unref(TAKE_PTR(s));
        {
                char sql[128];
                snprintf(sql, sizeof(sql), "DELETE FROM points WHERE id = %lld", (long long) p2.id);
                ok(catalog_exec(path, sql) == 0, "forget it as an older clonectl did: its backup row stays");
        }
        is_int(catalog_int(path, "SELECT count(*) FROM pg_backups"), 2, "(a stale row)");
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "reopen");
        ok(add_base(s, "db", T0 + 500, 0x5000000, NULL, &p3) == 0, "the next base point is recorded (was -EEXIST)");
        is_int(p3.id, p2.id, "(it took the stale row's id)");
        {
                cs_pg_backup *list = NULL;
                size_t n = 0;
                ok(cs_pg_backup_list(s, "db", &list, &n) == 0 && n == 2 && list[1].point == p3.id &&
                           list[1].start_lsn == 0x5000000,
                   "with its own LSNs");
                free(list);
        }
        cs_store_unref(TAKE_PTR(s));
        {
                char sql[128];
                snprintf(sql, sizeof(sql), "DELETE FROM points WHERE id = %lld", (long long) p3.id);
                ok(catalog_exec(path, sql) == 0, "forget the newest base point the old way again");
        }
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "reopen");
        plain = point_of("jl", T0 + 600);
        ok(cs_point_add(s, &plain) == 0 && plain.id == p3.id, "a plain point takes its id");
        is_int(backups(s, "jl", NULL), 0, "and is no PostgreSQL base");
        is_int(catalog_int(path, "SELECT count(*) FROM pg_backups"), 1, "the stale row is gone");

        /* A stale row already attached to a later point (an older clonectl
         * let the id be taken): its time is not the point's. */
        cs_store_unref(TAKE_PTR(s));
        {
                char sql[256];
                snprintf(sql, sizeof(sql),
                         "INSERT INTO pg_backups(point, tli, start_lsn, end_lsn, start_time, end_time)"
                         " VALUES(%lld, 1, 1, 2, %d, %d)",
                         (long long) plain.id, T0 + 1, T0 + 2);
                ok(catalog_exec(path, sql) == 0, "a backup row of an earlier point on a plain point's id");
        }
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "reopen");
        is_int(backups(s, "jl", NULL), 1, "(the plain point reads as a base)");
        p2 = point_of("other", T0 + 700);
        ok(cs_point_add(s, &p2) == 0, "add any point");
        is_int(backups(s, "jl", NULL), 0, "the row that was not its point's is gone");
        is_int(backups(s, "db", NULL), 1, "the real base stays");
        ok(cs_point_remove(s, "db", p1.name) == 0, "forget db's last point");
        is_int(catalog_int(path, "SELECT count(*) FROM pg_backups"), 0, "no backup row is left");
        ok(cs_pg_source_get(s, "db", &(cs_pg_source) {}) == 0, "the link stays (keyed by name)");

        cs_store_unref(s);
        return tap_done();
}
