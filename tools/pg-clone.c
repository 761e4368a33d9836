/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Provisioning from a PostgreSQL timeline (pg-clone.h).
 *
 * Design notes
 *
 *  1. The range a base point can be recovered to is computed from the
 *     commit timestamps parsed out of the WAL stored without a gap from its
 *     start segment (pg-wal.c): from the latest commit time before the
 *     backup's end LSN (the end segment is read for that; commit records
 *     are not in time order, so the latest, not the last) to the newest
 *     commit.  No clock plays a part, neither clonectl's nor the receive
 *     times.
 *  2. A clone at time T is a clone of a derived tree: the base point's root
 *     directory rebuilt with the recovery setup, every other object shared.
 *     It costs a few new chunks and no copy:
 *       recovery.signal
 *       postgresql.auto.conf   the base's, with restore_command,
 *                              recovery_target_time = T, recovery_target_
 *                              action = promote and the overrides that keep
 *                              the clone from acting as the source
 *                              (archive_mode off, no primary_conninfo, slot
 *                              or synchronous_standby_names)
 *       .clonefs/wal/          the WAL segments from the base's start to
 *                              the first commit after T, and the history
 *                              files: files whose blocks are the stored
 *                              segments' own (a partial one padded with a
 *                              hole); restore_command copies from here, so
 *                              the clone recovers wherever it is mounted,
 *                              in a container too, without the store
 *       .clonefs/tablespaces/OID/
 *                              each tablespace, moved here from the
 *                              point's pg_tblspc/OID/ (a directory entry,
 *                              no copy); pg_tblspc/ is left empty
 *       tablespace_map         relocates them: "OID ../.clonefs/
 *                              tablespaces/OID", a path relative to
 *                              pg_tblspc/, so the symlinks PostgreSQL makes
 *                              from it at startup work wherever the clone
 *                              is mounted, in a container too, and never
 *                              reach the source's own tablespace locations
 *       .clonefs/tablespace_map.source
 *                              the source's map, kept for reference
 *       postgresql.conf, pg_hba.conf
 *                              generated when the source keeps them
 *                              outside the data directory (Debian)
 *  3. "latest" recovers every segment stored, with no recovery target:
 *     PostgreSQL replays until restore_command finds no more WAL, then
 *     promotes.  That is what clone refresh of such a clone provisions.
 *     A segment that is there but cannot be copied must stop recovery
 *     with an error, not end it early (RESTORE_COMMAND).  A base point
 *     cloned without a time gets the WAL to the backup's end and
 *     recovery_target = 'immediate' (pg_clone_base_tree): the backup
 *     alone cannot start, its checkpoint record being in the WAL.
 *  4. Ownership: every entry belongs to the local "postgres" user (else the
 *     source's owner of the data directory), and the root is 0700, as the
 *     server demands.  When that differs from the backup's owner, every
 *     directory object is rebuilt with the new owner; file contents are
 *     shared either way.
 */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "pg-clone.h"
#include "pg-wal.h"
#include "source-pg.h"
#include "util/log.h"
#include "util/macro.h"

#define WAL_DIR ".clonefs"

/* --- Times -------------------------------------------------------------------------- */

/* Whether the calendar has the date and time in tm.  strptime takes any
 * day 1 to 31 in any month and second 60 (and 61), and timegm() and
 * mktime() quietly carry them over (February 30 is March 2, 16:46:60 is
 * 16:47:00): a time that comes back changed from timegm(), in which no
 * zone moves the hour, did not exist. */
static bool tm_exists(const struct tm *tm)
{
        struct tm n = *tm;

        (void) timegm(&n);
        return n.tm_year == tm->tm_year && n.tm_mon == tm->tm_mon && n.tm_mday == tm->tm_mday &&
               n.tm_hour == tm->tm_hour && n.tm_min == tm->tm_min && n.tm_sec == tm->tm_sec;
}

int pg_parse_time(const char *s, int64_t *ret)
{
        struct tm tm = {};
        const char *p;
        int64_t frac = 0, scale = 100000, sec;
        int off_sign = 0, off_h = 0, off_m = 0, n = 0;

        p = strptime(s, "%Y-%m-%d", &tm);
        if (!p || (*p != ' ' && *p != 'T'))
                return -EINVAL;
        p = strptime(p + 1, "%H:%M:%S", &tm);
        if (!p || !tm_exists(&tm))
                return -EINVAL;
        if (*p == '.') {
                for (p++; *p >= '0' && *p <= '9'; p++) {
                        frac += scale * (*p - '0');
                        scale /= 10;
                }
        }
        while (*p == ' ')
                p++;
        if (*p == 'Z' && !p[1])
                off_sign = 1;
        else if ((*p == '+' || *p == '-') &&
                 (sscanf(p + 1, "%2d:%2d%n", &off_h, &off_m, &n) == 2 || sscanf(p + 1, "%2d%2d%n", &off_h, &off_m, &n) == 2 ||
                  sscanf(p + 1, "%2d%n", &off_h, &n) == 1) &&
                 !p[1 + n] && off_h <= 14 && off_m < 60)
                off_sign = *p == '+' ? 1 : -1;
        else if (*p)
                return -EINVAL;
        if (off_sign) {
                sec = (int64_t) timegm(&tm) - off_sign * (off_h * 3600 + off_m * 60);
        } else {
                tm.tm_isdst = -1;
                sec = (int64_t) mktime(&tm);
        }
        *ret = sec * 1000000 + frac;
        return 0;
}

void pg_format_time(int64_t usec, char buf[static 40])
{
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        size_t n;

        n = strftime(buf, 40, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
        snprintf(buf + n, 40 - n, ".%06d+00", (int) (usec % 1000000));
}

/* --- Coverage (design note 1) ---------------------------------------------------------- */

void pg_coverage_done(pg_coverage *c)
{
        free(c->ranges);
        free(c->wal);
        *c = (pg_coverage) {};
}

/* Where a base point's range begins (design note 1): at the latest commit
 * time of the records that begin from its start segment up to the
 * backup's end LSN, so that recovery to any time from there on stops past
 * that end, where the copy is consistent, and holds every commit the base
 * files hold; if the stored WAL from its start segment has none, at the
 * first commit after it.  0 when the WAL that would tell is not stored
 * yet.
 *
 * The latest, not the last in the WAL: recovery stops before the first
 * record, by position, whose time is later than the target, and commit
 * records are not in time order (pg-wal.c).  Were `from` the time of the
 * last commit before the end, an earlier record a few microseconds later
 * would stop recovery before the end, and the clone would never become
 * consistent.  The per-segment last_commit is the latest time in the
 * segment (rows stored before that was so hold the last by position,
 * which can be a few microseconds short), so every segment up to the end
 * one counts, not only the end one. */
static int range_start(cs_store *store, const pg_coverage *c, const pg_range *rg, int64_t *ret)
{
        uint32_t seg = c->src.segment_size;
        uint64_t start = rg->backup.start_lsn / seg, end = rg->backup.end_lsn / seg;
        int64_t before = 0, after = 0;
        const cs_pg_wal *at_end = NULL;
        int r;

        for (size_t i = 0; i < c->n_wal; i++)
                if (c->wal[i].segno == end && (!at_end || c->wal[i].tli == rg->backup.tli))
                        at_end = &c->wal[i];
        *ret = 0;
        if (!at_end)
                return 0;
        if (at_end->first_commit) {
                _cleanup_free_ uint8_t *data = malloc(seg);
                size_t size = 0;
                if (!data)
                        return -ENOMEM;
                r = cs_blob_read(store, &at_end->root, data, seg, &size);
                if (r < 0)
                        return r;
                pg_wal_commit_times_around(data, size, end, seg, rg->backup.end_lsn, &before, &after);
        }
        for (size_t i = 0; i < c->n_wal; i++)
                if (c->wal[i].segno >= start && c->wal[i].segno < end)
                        before = MAX(before, c->wal[i].last_commit);
        for (size_t i = 0; !before && !after && i < c->n_wal; i++)
                if (c->wal[i].segno > end && c->wal[i].first_commit)
                        after = c->wal[i].first_commit;
        *ret = before ? before : after;
        return 0;
}

static void compute_range(const pg_coverage *c, pg_range *rg, int64_t from)
{
        uint32_t seg = c->src.segment_size;
        uint64_t start = rg->backup.start_lsn / seg, expect = start;
        bool any = false;

        rg->from = from;
        for (size_t i = 0; i < c->n_wal; i++) {
                const cs_pg_wal *w = &c->wal[i];
                if (w->segno < start)
                        continue;
                if (w->segno != expect && !(any && w->segno == expect - 1))
                        break; /* a gap */
                if (w->segno == expect)
                        expect++;
                if (!any)
                        rg->first_segno = w->segno;
                any = true;
                rg->last_segno = w->segno;
                rg->wal_end_lsn = MAX(rg->wal_end_lsn, w->segno * seg + w->size);
                rg->to = MAX(rg->to, w->last_commit);
        }
        rg->usable = any && rg->from && rg->wal_end_lsn >= rg->backup.end_lsn && rg->to > rg->from;
}

int pg_coverage_load(cs_store *store, const char *timeline, pg_coverage *ret)
{
        _cleanup_free_ cs_pg_backup *backups = NULL;
        _cleanup_free_ cs_point_info *points = NULL;
        size_t nb = 0, np = 0;
        pg_coverage c = {};
        int r;

        r = pg_source_find(store, timeline, &c.src);
        if (r < 0)
                return r;
        r = cs_pg_backup_list(store, timeline, &backups, &nb);
        if (r >= 0)
                r = cs_point_list(store, timeline, &points, &np);
        if (r >= 0)
                r = cs_pg_wal_list(store, timeline, &c.wal, &c.n_wal);
        if (r < 0 && r != -ENOENT) {
                pg_coverage_done(&c);
                return log_error_errno(r, "cannot read timeline '%s': %m", timeline);
        }
        c.ranges = calloc(MAX(nb, 1u), sizeof(pg_range));
        if (!c.ranges) {
                pg_coverage_done(&c);
                return log_error_errno(-ENOMEM, "cannot read timeline '%s': %m", timeline);
        }
        for (size_t i = 0; i < nb; i++) {
                pg_range *rg = &c.ranges[c.n_ranges];
                bool found = false;
                for (size_t k = 0; k < np && !found; k++)
                        if (points[k].id == backups[i].point) {
                                rg->point = points[k];
                                found = true;
                        }
                if (!found)
                        continue;
                int64_t from;
                rg->backup = backups[i];
                r = range_start(store, &c, rg, &from);
                if (r < 0) {
                        pg_coverage_done(&c);
                        return log_error_errno(r, "cannot read the WAL of timeline '%s': %m", timeline);
                }
                compute_range(&c, rg, from);
                c.n_ranges++;
        }
        *ret = c;
        return 0;
}

/* --- Building the clone's tree (design notes 2 to 4) ---------------------------------------- */

typedef struct owner {
        uint32_t uid, gid;
        bool rewrite; /* differs from the backup's */
} owner;

static int put_file(cs_store *store, cs_dir_builder *b, const char *name, const void *data, size_t size,
                    const owner *o)
{
        uint32_t bs = cs_store_block_size(store);
        uint64_t n = cs_store_blocks_of(store, size);
        _cleanup_free_ cs_chunk_id *blocks = calloc(MAX(n, 1u), sizeof(cs_chunk_id));
        _cleanup_free_ cs_chunk_id *storage = NULL;
        cs_entry e = {
                .name = name, .name_len = strlen(name), .mode = S_IFREG | 0600, .uid = o->uid, .gid = o->gid,
                .nlink = 1, .size = size, .mtime_sec = (int64_t) time(NULL), .ctime_sec = (int64_t) time(NULL),
        };
        int r;

        if (!blocks)
                return -ENOMEM;
        for (uint64_t k = 0; k < n; k++) {
                r = cs_store_put(store, CS_KIND_DATA, (const uint8_t *) data + k * bs,
                                 (size_t) MIN((uint64_t) bs, size - k * bs), &blocks[k]);
                if (r < 0)
                        return r;
        }
        r = cs_content_build(store, blocks, n, &e.content, &storage);
        if (r < 0)
                return r;
        return cs_dir_builder_add(b, &e);
}

/* A stored segment as a file of the whole segment size (design note 2). */
static int put_wal_file(cs_store *store, cs_dir_builder *b, const pg_coverage *c, const cs_pg_wal *w,
                        const owner *o)
{
        uint32_t bs = cs_store_block_size(store), seg = c->src.segment_size;
        uint64_t total = cs_store_blocks_of(store, seg), size;
        _cleanup_free_ cs_chunk_id *ids = NULL, *blocks = NULL, *storage = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        char name[25];
        size_t n;
        int r;

        r = cs_blob_blocks(store, &w->root, &ids, &n, &size);
        if (r < 0)
                return r;
        if (n > total)
                return -EBADMSG;
        blocks = calloc(total, sizeof(cs_chunk_id));
        if (!blocks)
                return -ENOMEM;
        memcpy(blocks, ids, n * sizeof(cs_chunk_id));
        if (size % bs && !cs_chunk_id_is_zero(&blocks[n - 1])) {
                /* A short last block inside the file: pad it to a whole one. */
                buf = calloc(1, bs);
                if (!buf)
                        return -ENOMEM;
                r = cs_store_get(store, &blocks[n - 1], buf, bs);
                if (r >= 0)
                        r = cs_store_put(store, CS_KIND_DATA, buf, bs, &blocks[n - 1]);
                if (r < 0)
                        return r;
        }
        pg_wal_file_name(w->tli, w->segno, seg, name);
        cs_entry e = {
                .name = name, .name_len = strlen(name), .mode = S_IFREG | 0600, .uid = o->uid, .gid = o->gid,
                .nlink = 1, .size = seg, .mtime_sec = (int64_t) time(NULL), .ctime_sec = (int64_t) time(NULL),
        };
        r = cs_content_build(store, blocks, total, &e.content, &storage);
        if (r < 0)
                return r;
        return cs_dir_builder_add(b, &e);
}

/* The same directory owned by o, all the way down. */
static int chown_dir(cs_store *store, const cs_chunk_id *dir_id, const owner *o, cs_chunk_id *ret)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        int r;

        r = cs_dir_load(store, dir_id, &d);
        if (r >= 0)
                r = cs_dir_builder_new(store, &b);
        for (size_t i = 0; r >= 0 && i < cs_dir_size(d); i++) {
                cs_entry e = *cs_dir_entry(d, i);
                e.uid = o->uid;
                e.gid = o->gid;
                if (S_ISDIR(e.mode))
                        r = chown_dir(store, &cs_dir_entry(d, i)->subdir, o, &e.subdir);
                if (r >= 0)
                        r = cs_dir_builder_add(b, &e);
        }
        if (r < 0)
                return r;
        return cs_dir_builder_finish(b, ret);
}

static int read_small_file(cs_store *store, const cs_entry *e, char **ret)
{
        uint32_t bs = cs_store_block_size(store);
        uint64_t n = cs_store_blocks_of(store, e->size);
        _cleanup_free_ cs_chunk_id *blocks = NULL;
        _cleanup_free_ char *buf = NULL;
        int r;

        if (e->size > 16 * 1024 * 1024)
                return -EFBIG;
        blocks = calloc(MAX(n, 1u), sizeof(cs_chunk_id));
        buf = calloc(1, n * bs + 1);
        if (!blocks || !buf)
                return -ENOMEM;
        r = cs_content_blocks(store, &e->content, 0, (size_t) n, blocks);
        for (uint64_t k = 0; r >= 0 && k < n; k++)
                if (!cs_chunk_id_is_zero(&blocks[k]))
                        r = cs_store_get(store, &blocks[k], buf + k * bs, bs);
        if (r < 0)
                return r;
        buf[e->size] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

static const char default_hba[] =
        "# Generated by clonefs: the source keeps pg_hba.conf outside its data directory.\n"
        "local   all             all                                     peer\n"
        "host    all             all             127.0.0.1/32            scram-sha-256\n"
        "host    all             all             ::1/128                 scram-sha-256\n"
        "local   replication     all                                     peer\n";

static const char default_conf[] =
        "# Generated by clonefs: the source keeps postgresql.conf outside its data directory.\n"
        "# The clone's settings are in postgresql.auto.conf.\n";

typedef struct plan {
        const char *name, *timeline;
        int64_t at; /* PG_AT_LATEST: every stored segment, no target; PG_AT_BASE_END */
        const pg_coverage *c;
        const pg_range *rg;
        uint64_t last_segno; /* the segment with the first commit after at */
        owner o;
} plan;

/* The point's tablespaces, relocated (design note 2). */
typedef struct tablespaces {
        cs_entry pg_tblspc; /* the point's, emptied */
        cs_entry moved;     /* .clonefs/tablespaces/, one directory per tablespace */
        char *map;          /* the clone's tablespace_map */
        size_t n;
} tablespaces;

static void tablespaces_done(tablespaces *ts)
{
        free(ts->map);
}

static int relocate_tablespaces(cs_store *store, const plan *pl, const cs_entry *pg_tblspc, tablespaces *ret)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *moved = NULL, *left = NULL;
        int r;

        if (!pg_tblspc || !S_ISDIR(pg_tblspc->mode))
                return 0;
        r = cs_dir_load(store, &pg_tblspc->subdir, &d);
        if (r >= 0)
                r = cs_dir_builder_new(store, &moved);
        if (r >= 0)
                r = cs_dir_builder_new(store, &left);
        for (size_t i = 0; r >= 0 && i < cs_dir_size(d); i++) {
                cs_entry e = *cs_dir_entry(d, i);
                char *line;

                e.uid = pl->o.uid;
                e.gid = pl->o.gid;
                if (!S_ISDIR(e.mode) || memchr(e.name, '\n', e.name_len) || memchr(e.name, ' ', e.name_len)) {
                        r = cs_dir_builder_add(left, &e);
                        continue;
                }
                if (pl->o.rewrite)
                        r = chown_dir(store, &cs_dir_entry(d, i)->subdir, &pl->o, &e.subdir);
                if (r >= 0)
                        r = cs_dir_builder_add(moved, &e);
                if (r < 0)
                        break;
                if (asprintf(&line, "%s%.*s ../" WAL_DIR "/tablespaces/%.*s\n", ret->map ? ret->map : "",
                             (int) e.name_len, e.name, (int) e.name_len, e.name) < 0)
                        return -ENOMEM;
                free(ret->map);
                ret->map = line;
                ret->n++;
        }
        if (r < 0 || ret->n == 0)
                return r;
        ret->pg_tblspc = *pg_tblspc;
        ret->pg_tblspc.uid = pl->o.uid;
        ret->pg_tblspc.gid = pl->o.gid;
        ret->pg_tblspc.nlink = 2;
        r = cs_dir_builder_finish(left, &ret->pg_tblspc.subdir);
        if (r < 0)
                return r;
        ret->moved = (cs_entry) { .name = "tablespaces", .name_len = strlen("tablespaces"), .mode = S_IFDIR | 0700,
                                  .uid = pl->o.uid, .gid = pl->o.gid, .nlink = 2 + ret->n,
                                  .mtime_sec = (int64_t) time(NULL), .ctime_sec = (int64_t) time(NULL) };
        return cs_dir_builder_finish(moved, &ret->moved.subdir);
}

static int build_wal_dir(cs_store *store, const plan *pl, const cs_entry *tablespace_map, const tablespaces *ts,
                         cs_entry *ret_dir)
{
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL, *top = NULL;
        cs_entry e;
        int r;

        r = cs_dir_builder_new(store, &b);
        if (r < 0)
                return r;
        for (size_t i = 0; i < pl->c->n_wal; i++) {
                const cs_pg_wal *w = &pl->c->wal[i];
                if (w->segno < pl->rg->first_segno || w->segno > pl->last_segno)
                        continue;
                r = put_wal_file(store, b, pl->c, w, &pl->o);
                if (r < 0)
                        return r;
        }
        /* History files of every timeline after the first. */
        for (uint32_t tli = 2; tli < 1000; tli++) {
                _cleanup_free_ void *content = NULL;
                size_t size;
                char name[32];

                r = cs_pg_history_get(store, pl->timeline, tli, &content, &size);
                if (r == -ENOENT)
                        break;
                if (r < 0)
                        return r;
                snprintf(name, sizeof(name), "%08" PRIX32 ".history", tli);
                r = put_file(store, b, name, content, size, &pl->o);
                if (r < 0)
                        return r;
        }
        e = (cs_entry) { .name = "wal", .name_len = 3, .mode = S_IFDIR | 0700, .uid = pl->o.uid, .gid = pl->o.gid,
                         .nlink = 2, .mtime_sec = (int64_t) time(NULL), .ctime_sec = (int64_t) time(NULL) };
        r = cs_dir_builder_finish(b, &e.subdir);
        if (r >= 0)
                r = cs_dir_builder_new(store, &top);
        if (r >= 0)
                r = cs_dir_builder_add(top, &e);
        if (r >= 0 && ts->n)
                r = cs_dir_builder_add(top, &ts->moved);
        if (r >= 0 && tablespace_map) {
                e = *tablespace_map;
                e.name = "tablespace_map.source";
                e.name_len = strlen(e.name);
                e.uid = pl->o.uid;
                e.gid = pl->o.gid;
                r = cs_dir_builder_add(top, &e);
        }
        if (r < 0)
                return r;
        *ret_dir = (cs_entry) { .name = WAL_DIR, .name_len = strlen(WAL_DIR), .mode = S_IFDIR | 0700,
                                .uid = pl->o.uid, .gid = pl->o.gid, .nlink = ts->n ? 4 : 3,
                                .mtime_sec = (int64_t) time(NULL), .ctime_sec = (int64_t) time(NULL) };
        return cs_dir_builder_finish(top, &ret_dir->subdir);
}

/* PostgreSQL takes any exit status of restore_command up to 125 for "no
 * such file", the end of the WAL: recovery then ends there and the server
 * promotes onto a new timeline without the rest, silently.  Only a status
 * above 125 (or a signal) makes it stop with an error.  So the command
 * exits 1 only when the file is not there (PostgreSQL asks for segments
 * and history files past the end on purpose), and 255 when it is there
 * but cannot be copied (a full pg_wal, an unreadable file) or when the
 * directory cannot be searched, which would hide every file.  cp's own
 * message goes to the server's log.  %f, %p and %% are PostgreSQL's; the
 * rest is sh, without a single quote (the setting is quoted in them). */
#define RESTORE_COMMAND                                                                        \
        "if [ -e " WAL_DIR "/wal/%%f ]; then cp " WAL_DIR "/wal/%%f \"%%p\" || exit 255; "    \
        "elif [ -d " WAL_DIR "/wal ] && [ -x " WAL_DIR "/wal ]; then exit 1; else exit 255; fi"

static int recovery_settings(const plan *pl, const char *base, char **ret)
{
        _cleanup_free_ char *target = NULL;
        char when[40];

        pg_format_target(pl->at, when);
        if (pl->at == PG_AT_LATEST)
                target = strdup("");
        else if (pl->at == PG_AT_BASE_END)
                target = strdup("recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n");
        else if (asprintf(&target, "recovery_target_time = '%s'\nrecovery_target_action = 'promote'\n", when) < 0)
                target = NULL;
        if (!target)
                return -ENOMEM;
        return asprintf(ret,
                        "%s%s"
                        "# Added by clonefs: clone %s of timeline %s as of %s\n"
                        "restore_command = '" RESTORE_COMMAND "'\n"
                        "%s"
                        "recovery_target_timeline = 'latest'\n"
                        "archive_mode = 'off'\n"
                        "primary_conninfo = ''\n"
                        "primary_slot_name = ''\n"
                        "synchronous_standby_names = ''\n",
                        base, base[0] && base[strlen(base) - 1] != '\n' ? "\n" : "", pl->name, pl->timeline, when,
                        target) < 0
                       ? -ENOMEM
                       : 0;
}

static bool is_replaced(const cs_entry *e)
{
        static const char *const names[] = { "recovery.signal", "standby.signal", "tablespace_map",
                                             "postgresql.auto.conf", WAL_DIR, "postmaster.pid" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (e->name_len == strlen(names[i]) && memcmp(e->name, names[i], e->name_len) == 0)
                        return true;
        return false;
}

static int build_tree(cs_store *store, const plan *pl, cs_chunk_id *ret)
{
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL, *root = NULL;
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        _cleanup_(tablespaces_done) tablespaces ts = {};
        _cleanup_free_ char *auto_conf = NULL, *settings = NULL;
        const cs_entry *e;
        cs_entry top, wal;
        int r;

        r = cs_point_load(store, &pl->rg->point.root, &top, &keep);
        if (r >= 0)
                r = cs_dir_load(store, &top.subdir, &root);
        if (r >= 0)
                r = cs_dir_builder_new(store, &b);
        if (r >= 0)
                r = relocate_tablespaces(store, pl, cs_dir_find(root, "pg_tblspc", strlen("pg_tblspc")), &ts);
        if (r < 0)
                return r;

        e = cs_dir_find(root, "postgresql.auto.conf", strlen("postgresql.auto.conf"));
        if (e && S_ISREG(e->mode)) {
                r = read_small_file(store, e, &auto_conf);
                if (r < 0)
                        return r;
        }
        r = recovery_settings(pl, auto_conf ? auto_conf : "", &settings);
        if (r >= 0)
                r = put_file(store, b, "postgresql.auto.conf", settings, strlen(settings), &pl->o);
        if (r >= 0)
                r = put_file(store, b, "recovery.signal", "", 0, &pl->o);
        if (r >= 0 && ts.n)
                r = put_file(store, b, "tablespace_map", ts.map, strlen(ts.map), &pl->o);
        if (r >= 0 && !cs_dir_find(root, "postgresql.conf", strlen("postgresql.conf")))
                r = put_file(store, b, "postgresql.conf", default_conf, strlen(default_conf), &pl->o);
        if (r >= 0 && !cs_dir_find(root, "pg_hba.conf", strlen("pg_hba.conf")))
                r = put_file(store, b, "pg_hba.conf", default_hba, strlen(default_hba), &pl->o);
        if (r >= 0)
                r = build_wal_dir(store, pl, cs_dir_find(root, "tablespace_map", strlen("tablespace_map")), &ts,
                                  &wal);
        if (r >= 0)
                r = cs_dir_builder_add(b, &wal);
        for (size_t i = 0; r >= 0 && i < cs_dir_size(root); i++) {
                cs_entry c = *cs_dir_entry(root, i);
                if (is_replaced(&c))
                        continue;
                if (ts.n && c.name_len == strlen("pg_tblspc") && memcmp(c.name, "pg_tblspc", c.name_len) == 0) {
                        r = cs_dir_builder_add(b, &ts.pg_tblspc);
                        continue;
                }
                c.uid = pl->o.uid;
                c.gid = pl->o.gid;
                if (S_ISDIR(c.mode) && pl->o.rewrite)
                        r = chown_dir(store, &cs_dir_entry(root, i)->subdir, &pl->o, &c.subdir);
                if (r >= 0)
                        r = cs_dir_builder_add(b, &c);
        }
        if (r < 0)
                return r;
        top.mode = S_IFDIR | 0700;
        top.uid = pl->o.uid;
        top.gid = pl->o.gid;
        top.nlink++;
        r = cs_dir_builder_finish(b, &top.subdir);
        if (r < 0)
                return r;
        return cs_point_build(store, &top, ret);
}

/* --- clone create --at ------------------------------------------------------------------ */

static void format_range(const pg_coverage *c, char *buf, size_t size)
{
        int64_t from = 0, to = 0;
        char a[40], z[40];

        for (size_t i = 0; i < c->n_ranges; i++) {
                const pg_range *rg = &c->ranges[i];
                if (!rg->usable)
                        continue;
                if (!from || rg->from < from)
                        from = rg->from;
                to = MAX(to, rg->to);
        }
        if (!from) {
                snprintf(buf, size, "no time yet: it needs a base point and the WAL after it "
                                    "(clonectl pg receive-wal)");
                return;
        }
        pg_format_time(from, a);
        pg_format_time(to, z);
        snprintf(buf, size, "from %s up to (not including) %s", a, z);
}

/* The newest base point that can be recovered to `at`: one whose range
 * holds it, or for PG_AT_LATEST, one whose WAL reaches its end. */
static const pg_range *choose_base(const pg_coverage *c, int64_t at)
{
        for (size_t i = c->n_ranges; i > 0; i--) {
                const pg_range *rg = &c->ranges[i - 1];
                if (at == PG_AT_LATEST ? rg->wal_end_lsn >= rg->backup.end_lsn
                                       : rg->usable && rg->from <= at && at < rg->to)
                        return rg;
        }
        return NULL;
}

/* Builds and commits the tree of a plan whose base is chosen, and gives
 * the base point with that tree as its root. */
static int plan_tree(cs_store *store, plan *pl, cs_point_info *ret, uint64_t *ret_segments)
{
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL;
        cs_entry root;
        cs_chunk_id tree;
        struct passwd *pw;
        int r;

        r = cs_point_load(store, &pl->rg->point.root, &root, &keep);
        if (r < 0)
                return log_error_errno(r, "cannot read point %s: %m", pl->rg->point.name);
        pw = getpwnam("postgres");
        pl->o = (owner) { .uid = pw ? pw->pw_uid : root.uid, .gid = pw ? pw->pw_gid : root.gid };
        pl->o.rewrite = pl->o.uid != root.uid || pl->o.gid != root.gid;

        r = build_tree(store, pl, &tree);
        if (r >= 0)
                r = cs_store_commit(store);
        if (r < 0)
                return log_error_errno(r, "cannot build the clone's recovery setup: %m");
        *ret = pl->rg->point;
        ret->root = tree;
        if (ret_segments)
                *ret_segments = pl->last_segno - pl->rg->first_segno + 1;
        return 0;
}

int pg_clone_tree(cs_store *store, const char *name, const char *timeline, int64_t at, cs_point_info *ret,
                  uint64_t *ret_segments)
{
        _cleanup_(pg_coverage_done) pg_coverage c = {};
        plan pl = { .name = name, .timeline = timeline, .at = at };
        char range[200], when[40];
        int r;

        r = pg_coverage_load(store, timeline, &c);
        if (r < 0)
                return r;
        pl.c = &c;
        pl.rg = choose_base(&c, at);
        if (!pl.rg && at == PG_AT_LATEST)
                return log_error_errno(-ERANGE, "timeline '%s' has no base point whose WAL is stored up to its end "
                                                "yet (clonectl pg receive-wal %s)",
                                       timeline, timeline);
        if (!pl.rg) {
                pg_format_time(at, when);
                format_range(&c, range, sizeof(range));
                return log_error_errno(-ERANGE, "timeline '%s' cannot be provisioned at %s: it covers %s", timeline,
                                       when, range);
        }
        /* Through the segment holding the first commit after the target. */
        pl.last_segno = pl.rg->last_segno;
        for (size_t i = 0; at != PG_AT_LATEST && i < c.n_wal; i++)
                if (c.wal[i].segno >= pl.rg->first_segno && c.wal[i].last_commit > at) {
                        pl.last_segno = c.wal[i].segno;
                        break;
                }
        return plan_tree(store, &pl, ret, ret_segments);
}

/* A base point of a timeline no longer linked: pg unlink dropped the WAL
 * it needs to start, so a clone of it would be a backup PostgreSQL
 * refuses ("could not locate required checkpoint record"); say so now.
 * 0 for any other point. */
static int refuse_unlinked_base(cs_store *store, const cs_point_info *base)
{
        _cleanup_free_ cs_pg_backup *backups = NULL;
        size_t n = 0;
        int r;

        r = cs_pg_backup_list(store, base->timeline, &backups, &n);
        if (r < 0)
                return log_error_errno(r, "cannot read the backups of timeline '%s': %m", base->timeline);
        for (size_t i = 0; i < n; i++)
                if (backups[i].point == base->id)
                        return log_error_errno(-ENOLINK,
                                               "%s@%s is a PostgreSQL base backup, and timeline '%s' is not linked "
                                               "any more (pg unlink dropped its WAL): PostgreSQL could not start a "
                                               "clone of it (clonectl restore gives the backup's files)",
                                               base->timeline, base->name, base->timeline);
        return 0;
}

int pg_clone_base_tree(cs_store *store, const char *name, const cs_point_info *base, cs_point_info *ret,
                       uint64_t *ret_segments)
{
        _cleanup_(pg_coverage_done) pg_coverage c = {};
        plan pl = { .name = name, .timeline = base->timeline, .at = PG_AT_BASE_END };
        cs_pg_source src;
        int r;

        r = cs_pg_source_get(store, base->timeline, &src);
        if (r == -ENOENT)
                return refuse_unlinked_base(store, base);
        if (r < 0)
                return log_error_errno(r, "cannot read timeline '%s': %m", base->timeline);
        r = pg_coverage_load(store, base->timeline, &c);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c.n_ranges && !pl.rg; i++)
                if (c.ranges[i].point.id == base->id)
                        pl.rg = &c.ranges[i];
        if (!pl.rg)
                return 0; /* not a base backup: an ordinary point */
        if (pl.rg->wal_end_lsn < pl.rg->backup.end_lsn)
                return log_error_errno(-ERANGE, "%s@%s is a base backup whose WAL is not stored up to its end yet, "
                                                "and PostgreSQL cannot start without it (clonectl pg receive-wal "
                                                "%s)",
                                       base->timeline, base->name, base->timeline);
        /* Recovery stops once consistent, at the backup's end. */
        pl.c = &c;
        pl.last_segno = MIN(pl.rg->last_segno, pl.rg->backup.end_lsn / c.src.segment_size);
        r = plan_tree(store, &pl, ret, ret_segments);
        return r < 0 ? r : 1;
}

int pg_clone_at(cs_store *store, const char *name, const char *timeline, const char *at, cs_point_info *ret,
                int64_t *ret_at, uint64_t *ret_segments)
{
        int64_t t = PG_AT_LATEST;
        int r;

        if (!cs_name_is_valid(timeline) || strchr(timeline, '@'))
                return log_error_errno(-EINVAL, "--at needs --from TIMELINE (a timeline linked to PostgreSQL), "
                                                "not '%s'",
                                       timeline);
        if (strcmp(at, "latest") != 0 && pg_parse_time(at, &t) < 0)
                return log_error_errno(-EINVAL, "invalid --at '%s': expected YYYY-MM-DD HH:MM:SS[+TZ], ISO 8601 "
                                                "or 'latest'",
                                       at);
        r = pg_clone_tree(store, name, timeline, t, ret, ret_segments);
        if (r < 0)
                return r;
        *ret_at = t;
        return 0;
}

void pg_format_target(int64_t at, char buf[static 40])
{
        if (at == PG_AT_LATEST)
                snprintf(buf, 40, "the end of its stored WAL");
        else if (at == PG_AT_BASE_END)
                snprintf(buf, 40, "the end of its base backup");
        else
                pg_format_time(at, buf);
}
