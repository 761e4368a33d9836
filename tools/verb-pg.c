/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pg verbs: link a timeline to a PostgreSQL server (and unlink it),
 * take base backups into points (sync), receive and archive its WAL, hand
 * WAL back to a recovering server (wal-fetch).  The protocol work is in
 * source-pg.c and pg-wal.c; this file is the command line around it.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clonectl.h"
#include "pg-clone.h"
#include "pg-wal.h"
#include "source-pg.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

/* How long pg unlink waits for a receive-wal to let go of the slot: it
 * looks at its link every 2 s (pg-wal.c, LINK_CHECK_INTERVAL). */
#define UNLINK_SLOT_WAIT 30

static int check_timeline_name(const char *timeline)
{
        if (!cs_name_is_valid(timeline))
                return log_error_errno(-EINVAL, "invalid timeline name '%s': use " CS_NAME_RULE,
                                       timeline);
        return 0;
}

static double now_seconds(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* A base backup into a new point of timeline, recorded as such; with
 * link (pg link), the timeline's link goes in with it. */
static int sync_point(cs_store *store, PGconn *conn, const char *timeline, const cs_pg_source *link,
                      cs_point_info *ret_point)
{
        pg_backup_result res;
        cs_put_counters before, after;
        cs_point_info point = {};
        cs_pg_backup b;
        double start = now_seconds();
        char a[24], z[24];
        int r;

        snprintf(point.timeline, sizeof(point.timeline), "%s", timeline);
        point.created = (int64_t) time(NULL);
        cs_store_put_counters(store, &before);
        r = pg_base_backup(conn, store, isatty(STDERR_FILENO) && !arg_json, &res);
        if (r < 0)
                return r;
        cs_store_put_counters(store, &after);
        point.root = res.point;
        point.files = res.files;
        point.logical_bytes = res.logical_bytes;
        point.added_bytes = after.stored_bytes - before.stored_bytes;
        b = (cs_pg_backup) {
                .tli = res.tli,
                .start_lsn = res.start_lsn,
                .end_lsn = res.end_lsn,
                .end_time = (int64_t) time(NULL),
        };
        /* One transaction: a point without its backup record (or a link
         * without its first point) would be a base nothing describes. */
        r = cs_pg_point_add(store, &point, &b, link);
        if (r < 0)
                return log_error_errno(r, "cannot add the point to timeline '%s': %m", timeline);

        pg_lsn_format(res.start_lsn, a);
        pg_lsn_format(res.end_lsn, z);
        if (arg_json) {
                printf("{\"timeline\":");
                json_write_string(stdout, timeline, strlen(timeline));
                printf(",\"point\":\"%s\",\"files\":%" PRIu64 ",\"logical_bytes\":%" PRIu64
                       ",\"bytes_received\":%" PRIu64 ",\"bytes_new\":%" PRIu64 ",\"bytes_stored\":%" PRIu64
                       ",\"start_lsn\":\"%s\",\"end_lsn\":\"%s\",\"tli\":%" PRIu32 ",\"seconds\":%.3f}\n",
                       point.name, res.files, res.logical_bytes, res.bytes_received, after.bytes - before.bytes,
                       point.added_bytes, a, z, res.tli, now_seconds() - start);
        } else
                printf("%s\n", point.name);
        if (ret_point)
                *ret_point = point;
        return 0;
}

static int verb_pg_link(const char *timeline, const char *conninfo)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_(PQfinishp) PGconn *conn = NULL;
        _cleanup_free_ char *stripped = NULL;
        cs_pg_source src = {};
        cs_point_info p;
        pg_server server;
        char why[512];
        int r;

        if (arg_slot && !pg_slot_name_is_valid(arg_slot))
                return log_error_errno(-EINVAL, "invalid slot name '%s': use 1-63 of a-z 0-9 _", arg_slot);
        r = pg_conninfo_strip(conninfo, &stripped);
        if (r < 0)
                return r;
        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        r = refuse_clone_timeline(store, timeline);
        if (r < 0)
                return r;
        r = cs_point_find(store, timeline, "latest", &p);
        if (r == 0 || cs_pg_source_get(store, timeline, &src) == 0)
                return log_error_errno(-EEXIST, "timeline '%s' already exists: link a new timeline", timeline);

        r = pg_connect_replication(conninfo, &conn);
        if (r < 0)
                return r;
        r = pg_check_server(conn, &server);
        if (r < 0)
                return r;

        src = (cs_pg_source) { .system_id = server.system_id, .segment_size = server.segment_size,
                               .created = (int64_t) time(NULL) };
        snprintf(src.timeline, sizeof(src.timeline), "%s", timeline);
        snprintf(src.conninfo, sizeof(src.conninfo), "%s", stripped);
        if (arg_slot)
                snprintf(src.slot, sizeof(src.slot), "%s", arg_slot);
        else
                pg_default_slot(timeline, src.slot);

        /* The slot first: it keeps every WAL segment from before the
         * backup's start until receive-wal has it. */
        r = pg_create_slot(conn, src.slot);
        if (r < 0)
                return r;
        r = sync_point(store, conn, timeline, &src, NULL);
        if (r < 0) {
                /* A backup stopped half-way leaves its connection in COPY:
                 * close it, then drop the slot so it holds no WAL.  If the
                 * server is gone, the slot stays there pinning WAL: say so,
                 * after the line that said why the link failed. */
                PQfinish(TAKE_PTR(conn));
                if (pg_drop_slot(conninfo, src.slot, server.system_id, 5, why, sizeof(why)) < 0)
                        log_warning("replication slot '%s' is left on the source (%s): it keeps WAL there until "
                                    "dropped with SELECT pg_drop_replication_slot('%s')",
                                    src.slot, why, src.slot);
        }
        return r;
}

static int verb_pg_sync(const char *timeline)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_(PQfinishp) PGconn *conn = NULL;
        cs_pg_source src;
        pg_server server;
        int r;

        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        /* pg link refuses a clone's name; a link made before it did is caught here. */
        r = refuse_clone_timeline(store, timeline);
        if (r < 0)
                return r;
        r = pg_source_find(store, timeline, &src);
        if (r < 0)
                return r;
        r = pg_connect_replication(src.conninfo, &conn);
        if (r < 0)
                return r;
        r = pg_check_server(conn, &server);
        if (r < 0)
                return r;
        if (server.system_id != src.system_id)
                return log_error_errno(-EXDEV, "the server behind timeline '%s' is another cluster now "
                                               "(system identifier %" PRIu64 ", linked to %" PRIu64 ")",
                                       timeline, server.system_id, src.system_id);
        return sync_point(store, conn, timeline, NULL, NULL);
}

/* The slot first, so that a server out of reach changes nothing; then the
 * link, the WAL and the history in one transaction (cs_pg_source_remove).
 * A receive-wal streaming from the slot keeps it busy: it stops once it
 * sees the link gone, and the slot is dropped then. */
static int verb_pg_unlink(const char *timeline)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        cs_pg_source src;
        char why[512];
        int dropped = 0, r;

        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        r = pg_source_find(store, timeline, &src);
        if (r < 0)
                return r;
        if (!arg_keep_slot) {
                dropped = pg_drop_slot(src.conninfo, src.slot, src.system_id, 0, why, sizeof(why));
                if (dropped < 0 && dropped != -EBUSY)
                        return log_error_errno(dropped, "cannot drop replication slot '%s' of timeline '%s' (%s): "
                                                        "nothing changed; unlink with --keep-slot and drop it on the "
                                                        "source with SELECT pg_drop_replication_slot('%s')",
                                               src.slot, timeline, why, src.slot);
        }
        r = cs_pg_source_remove(store, timeline);
        if (r == -ENOENT)
                return pg_source_find(store, timeline, &src); /* unlinked meanwhile: says so */
        if (r < 0)
                return log_error_errno(r, "cannot unlink timeline '%s': %m", timeline);
        /* Not while waiting: gc waits for a write handle. */
        store = cs_store_unref(store);
        if (dropped == -EBUSY) {
                dropped = pg_drop_slot(src.conninfo, src.slot, src.system_id, UNLINK_SLOT_WAIT, why, sizeof(why));
                if (dropped < 0)
                        return log_error_errno(dropped, "timeline '%s' is unlinked, but its replication slot '%s' "
                                                        "could not be dropped (%s): drop it on the source with "
                                                        "SELECT pg_drop_replication_slot('%s')",
                                               timeline, src.slot, why, src.slot);
        }
        if (arg_keep_slot)
                printf("unlinked timeline %s; replication slot %s is kept on the source\n", timeline, src.slot);
        else
                printf("unlinked timeline %s; replication slot %s %s\n", timeline, src.slot,
                       dropped ? "dropped" : "was gone already");
        return 0;
}

/* 0 is no time: a base without a commit in its stored WAL yet. */
static void print_time(const char *key, int64_t usec)
{
        char buf[40];

        if (!usec) {
                printf(",\"%s\":null", key);
                return;
        }
        pg_format_time(usec, buf);
        printf(",\"%s\":\"%s\"", key, buf);
}

static void show_json(const char *timeline, const pg_coverage *c)
{
        char a[24], z[24];

        printf("{\"timeline\":");
        json_write_string(stdout, timeline, strlen(timeline));
        printf(",\"slot\":\"%s\",\"system_id\":\"%" PRIu64 "\",\"bases\":[", c->src.slot, c->src.system_id);
        for (size_t i = 0; i < c->n_ranges; i++) {
                const pg_range *rg = &c->ranges[i];
                pg_lsn_format(rg->backup.start_lsn, a);
                pg_lsn_format(rg->backup.end_lsn, z);
                printf("%s{\"point\":\"%s\",\"start_lsn\":\"%s\",\"end_lsn\":\"%s\",\"usable\":%s", i ? "," : "",
                       rg->point.name, a, z, rg->usable ? "true" : "false");
                print_time("from", rg->from);
                if (rg->usable) {
                        print_time("to", rg->to);
                        pg_lsn_format(rg->wal_end_lsn, z);
                        printf(",\"wal_end_lsn\":\"%s\"", z);
                }
                printf("}");
        }
        printf("],\"wal_segments\":%zu}\n", c->n_wal);
}

int verb_timeline(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_(pg_coverage_done) pg_coverage c = {};
        _cleanup_free_ cs_point_info *points = NULL;
        cs_pg_source src;
        size_t n = 0;
        char a[24], z[24], t1[40], t2[40];
        int r;

        if (strcmp(argv[1], "show") != 0)
                return log_error_errno(-EINVAL, "unknown timeline command '%s' (show)", argv[1]);
        r = check_timeline_name(argv[2]);
        if (r < 0)
                return r;
        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = cs_point_list(store, argv[2], &points, &n);
        /* forget of every point removes the timeline, not its link. */
        if (r == -ENOENT && cs_pg_source_get(store, argv[2], &src) == 0)
                r = 0;
        if (r == -ENOENT)
                return log_error_errno(r, "no timeline '%s'", argv[2]);
        if (r < 0)
                return log_error_errno(r, "cannot read timeline '%s': %m", argv[2]);
        if (cs_pg_source_get(store, argv[2], &src) == -ENOENT) {
                printf("timeline %s: %zu points, not linked to PostgreSQL\n", argv[2], n);
                for (size_t i = 0; i < n; i++)
                        printf("  %s%s%s\n", points[i].name, points[i].label[0] ? "  " : "", points[i].label);
                return 0;
        }
        r = pg_coverage_load(store, argv[2], &c);
        if (r < 0)
                return r;
        if (arg_json) {
                show_json(argv[2], &c);
                return 0;
        }
        printf("timeline %s: PostgreSQL, slot %s, system %" PRIu64 ", %zu stored WAL segments\n", argv[2],
               c.src.slot, c.src.system_id, c.n_wal);
        printf("base points:%s\n", c.n_ranges ? "" : " none (pg sync makes one)");
        for (size_t i = 0; i < c.n_ranges; i++) {
                const pg_range *rg = &c.ranges[i];
                pg_lsn_format(rg->backup.start_lsn, a);
                pg_lsn_format(rg->backup.end_lsn, z);
                if (!rg->from) {
                        /* Not the epoch: no commit in its stored WAL yet. */
                        printf("  %s  LSN %s to %s, no time covered yet (no commit stored from its start)\n",
                               rg->point.name, a, z);
                        continue;
                }
                pg_format_time(rg->from, t1);
                printf("  %s  LSN %s to %s, ended by %s\n", rg->point.name, a, z, t1);
                if (rg->usable) {
                        pg_format_time(rg->to, t2);
                        pg_lsn_format(rg->wal_end_lsn, z);
                        printf("    provisionable from %s up to (not including) %s (WAL to LSN %s)\n", t1, t2, z);
                } else
                        printf("    not provisionable yet: no WAL with a later commit stored after it\n");
        }
        return 0;
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
        (void) sig;
        stop_requested = 1;
}

static int verb_pg_receive_wal(const char *timeline)
{
        struct sigaction sa = { .sa_handler = on_stop };
        int r;

        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        r = pg_receive_wal(timeline, isatty(STDERR_FILENO), &stop_requested);
        /* Errors no restart can fix (the slot is gone, invalidated or taken;
         * the timeline is not linked) exit with their own status, so a
         * service manager can stop restarting (clonefs-pg-receive@.service:
         * RestartPreventExitStatus). The error line is already out. */
        if (r == -ENOENT || r == -ESTALE || r == -EBUSY)
                exit(CLONECTL_EXIT_GIVE_UP);
        return r;
}

/* restore_command: a file the store lacks is exit 1, the end of the WAL
 * to PostgreSQL; any other failure (the store, the destination's disk)
 * must stop recovery instead of ending it early, without the rest of the
 * WAL, on a new timeline. */
static int verb_pg_wal_fetch(const char *timeline, const char *name, const char *dest)
{
        bool missing;
        int r = pg_fetch_wal(timeline, name, dest, &missing);

        if (r < 0 && !missing)
                exit(CLONECTL_EXIT_RESTORE_FAILED);
        return r;
}

/* The pg commands: their arguments after "pg COMMAND", and options. */
static const subcommand pg_commands[] = {
        { "link", " TIMELINE CONNINFO [--slot NAME]", 2, OPT_SLOT | OPT_JSON },
        { "unlink", " TIMELINE [--keep-slot]", 1, OPT_KEEP_SLOT },
        { "sync", " TIMELINE", 1, OPT_JSON },
        { "receive-wal", " TIMELINE", 1, 0 },
        { "archive-wal", " TIMELINE PATH", 2, 0 },
        { "wal-fetch", " TIMELINE WALFILE DEST", 3, 0 },
};

int verb_pg(int argc, char **argv)
{
        const char *sub = argv[1];
        int r;

        r = find_subcommand("pg", pg_commands, ELEMENTSOF(pg_commands), argc, argv);
        if (r >= 0)
                r = check_timeline_name(argv[2]);
        /* A restore_command written wrong must stop recovery too, not end
         * it as if the WAL had run out (verb_pg_wal_fetch). */
        if (r < 0 && strcmp(sub, "wal-fetch") == 0)
                exit(CLONECTL_EXIT_RESTORE_FAILED);
        if (r < 0)
                return r;

        if (strcmp(sub, "link") == 0)
                return verb_pg_link(argv[2], argv[3]);
        if (strcmp(sub, "unlink") == 0)
                return verb_pg_unlink(argv[2]);
        if (strcmp(sub, "sync") == 0)
                return verb_pg_sync(argv[2]);
        if (strcmp(sub, "receive-wal") == 0)
                return verb_pg_receive_wal(argv[2]);
        if (strcmp(sub, "archive-wal") == 0)
                return pg_archive_wal(argv[2], argv[3]);
        return verb_pg_wal_fetch(argv[2], argv[3], argv[4]);
}
