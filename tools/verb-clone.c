/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl clone create|list|destroy|snapshot|rewind|refresh|export.
 *
 * A clone's snapshots are points of the timeline named after the clone.
 * A mount holds its clones exclusively: snapshot, export, rewind, refresh
 * and destroy of a mounted clone ask the mount to do it (fs/control.c).
 * The mount refuses a rewind, refresh or destroy while files of the clone
 * are open in it, unless --force.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include "clonectl.h"
#include "pg-clone.h"
#include "restore.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

static int check_name(const char *name)
{
        if (!cs_clone_name_is_valid(name))
                return log_error_errno(-EINVAL, "invalid clone name '%s': use " CS_NAME_RULE, name);
        return 0;
}

static int busy(int r, const char *name, const char *what)
{
        if (r == -ETXTBSY)
                return log_error_errno(r, "cannot %s clone '%s': files of it are open in a mount (close them, or use --force)",
                                       what, name);
        if (r == -EBUSY)
                return log_error_errno(r, "cannot %s clone '%s': it is in use by another process (unmount it first%s)",
                                       what, name, strcmp(what, "destroy") == 0 ? ", or use --force" : "");
        if (r == -ENOENT)
                return log_error_errno(r, "no clone '%s'", name);
        return log_error_errno(r, "cannot %s clone '%s': %m", what, name);
}

static double elapsed_ms(const struct timespec *start)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) (t.tv_sec - start->tv_sec) * 1e3 + (double) (t.tv_nsec - start->tv_nsec) / 1e6;
}

/* Counts the entries and regular-file bytes of a directory tree. */
static int count_tree(cs_store *store, const cs_chunk_id *dir_id, uint64_t *files, uint64_t *bytes)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        int r = cs_dir_load(store, dir_id, &d);

        for (size_t i = 0; r >= 0 && i < cs_dir_size(d); i++) {
                const cs_entry *e = cs_dir_entry(d, i);
                (*files)++;
                if (S_ISREG(e->mode))
                        *bytes += e->size;
                else if (S_ISDIR(e->mode))
                        r = count_tree(store, &e->subdir, files, bytes);
        }
        return r;
}

/* The entries and regular-file bytes of a point tree, for its point's row. */
static int count_point(cs_store *store, const cs_chunk_id *tree, cs_point_info *p)
{
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL;
        cs_entry root;
        int r = cs_point_load(store, tree, &root, &keep);

        p->files = p->logical_bytes = 0;
        return r < 0 ? r : count_tree(store, &root.subdir, &p->files, &p->logical_bytes);
}

/* Sends one request line to the mount that has the clone open
 * (fs/control.c) and returns what follows "ok" in its reply, or its error. */
static int ask_mount(cs_store *store, const char *name, const char *request, char *ret_reply, size_t size)
{
        _cleanup_close_ int fd = -1;
        struct sockaddr_un addr;
        socklen_t len;
        char reply[96] = "";
        size_t got = 0;
        int r;

        r = cs_clone_control_address(store, name, &addr, &len);
        if (r < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        /* Held by something that does not listen: another clonectl, or a
         * mount on its way out, which still holds the lock a moment after
         * its socket closed (see with_clone). */
        if (connect(fd, (struct sockaddr *) &addr, len) < 0)
                return -EAGAIN;
        if (write(fd, request, strlen(request)) != (ssize_t) strlen(request))
                return -EIO;
        while (got < sizeof(reply) - 1) {
                ssize_t n = read(fd, reply + got, sizeof(reply) - 1 - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t) n;
                if (memchr(reply, '\n', got))
                        break;
        }
        reply[got] = 0;
        reply[strcspn(reply, "\n")] = 0;
        if (strncmp(reply, "ok", 2) == 0 && (reply[2] == 0 || reply[2] == ' ')) {
                snprintf(ret_reply, size, "%s", reply[2] ? reply + 3 : "");
                return 0;
        }
        if (strncmp(reply, "error ", 6) == 0 && atoi(reply + 6) > 0)
                return -atoi(reply + 6);
        return -EIO;
}

/* A clone folded into a tree, and the stored bytes the fold's puts added
 * to the store (for the point's added_bytes). */
typedef struct folded {
        cs_chunk_id tree;
        uint64_t added_bytes;
} folded;

/* The mount folds with its own store handle, so only it knows what the
 * fold added: "fold added" asks it to say.  A mount from before that
 * request refuses it (EINVAL); then plain "fold", and 0 bytes added. */
static int fold_through_mount(cs_store *store, const char *name, folded *ret)
{
        char reply[96], *end;
        int r = ask_mount(store, name, "fold added\n", reply, sizeof(reply));

        if (r == -EINVAL) {
                r = ask_mount(store, name, "fold\n", reply, sizeof(reply));
                if (r < 0)
                        return r;
                ret->added_bytes = 0;
                return cs_chunk_id_parse(reply, &ret->tree) < 0 ? -EBADMSG : 0;
        }
        if (r < 0)
                return r;
        if (strlen(reply) < 2 * CS_CHUNK_ID_SIZE + 2 || reply[2 * CS_CHUNK_ID_SIZE] != ' ' ||
            reply[2 * CS_CHUNK_ID_SIZE + 1] < '0' || reply[2 * CS_CHUNK_ID_SIZE + 1] > '9')
                return -EBADMSG;
        errno = 0;
        ret->added_bytes = strtoull(reply + 2 * CS_CHUNK_ID_SIZE + 1, &end, 10);
        if (errno != 0 || *end != 0)
                return -EBADMSG;
        reply[2 * CS_CHUNK_ID_SIZE] = 0;
        return cs_chunk_id_parse(reply, &ret->tree) < 0 ? -EBADMSG : 0;
}

/* One try at an operation on a clone: itself if the clone is free, else
 * through the mount that has it open; -EAGAIN if neither answers. */
typedef int (*clone_attempt)(cs_store *store, const char *name, void *userdata);

/* Tries for a few seconds while attempts say -EAGAIN: "umount" returns
 * before the daemon has let go of the clone, and a command run right
 * after it should not fail for that.  Still held after that: -EBUSY. */
static int with_clone(cs_store *store, const char *name, clone_attempt attempt, void *userdata)
{
        int r;

        for (unsigned waited_ms = 0;; waited_ms += 50) {
                r = attempt(store, name, userdata);
                if (r != -EAGAIN || waited_ms >= 5000)
                        break;
                usleep(50 * 1000);
        }
        return r == -EAGAIN ? -EBUSY : r;
}

static int fold_attempt(cs_store *store, const char *name, void *userdata)
{
        folded *f = userdata;
        cs_put_counters before, after;
        int r;

        cs_store_put_counters(store, &before);
        r = cs_clone_fold(store, name, &f->tree);
        if (r == -EBUSY)
                return fold_through_mount(store, name, f);
        if (r < 0)
                return r;
        cs_store_put_counters(store, &after);
        f->added_bytes = after.stored_bytes - before.stored_bytes;
        return 0;
}

/* Folds a clone into a tree: directly, or through the mount that has it
 * open, which pauses the clone's writers for the moment of the fold. */
static int fold_clone(cs_store *store, const char *name, folded *ret)
{
        return with_clone(store, name, fold_attempt, ret);
}

static int reset_attempt(cs_store *store, const char *name, void *userdata)
{
        const cs_point_info *to = userdata;
        char request[400], reply[8], root[CS_CHUNK_ID_STRING_MAX];
        int r = cs_clone_reset(store, name, to, false);

        if (r != -EBUSY)
                return r;
        snprintf(request, sizeof(request), "reset %s %s %d %s\n", to->timeline, to->name, arg_force ? 1 : 0,
                 cs_chunk_id_format(&to->root, root));
        return ask_mount(store, name, request, reply, sizeof(reply));
}

static int destroy_attempt(cs_store *store, const char *name, void *userdata)
{
        char reply[8];
        int r = cs_clone_destroy(store, name, false);

        (void) userdata;
        if (r != -EBUSY)
                return r;
        return ask_mount(store, name, arg_force ? "destroy 1\n" : "destroy 0\n", reply, sizeof(reply));
}

/* Folds a clone into a new point of its timeline. */
static int snapshot_clone(cs_store *store, const char *name, const char *label, cs_point_info *ret)
{
        cs_point_info p = {};
        folded f;
        int r;

        r = fold_clone(store, name, &f);
        if (r < 0)
                return busy(r, name, "snapshot");
        p.root = f.tree;
        r = count_point(store, &p.root, &p);
        if (r < 0)
                return log_error_errno(r, "cannot read the folded clone '%s': %m", name);
        snprintf(p.timeline, sizeof(p.timeline), "%s", name);
        if (label)
                snprintf(p.label, sizeof(p.label), "%s", label);
        p.created = (int64_t) time(NULL);
        p.added_bytes = f.added_bytes;
        /* With the clone's base, which a rewind to the point restores. */
        r = cs_clone_point_add(store, &p);
        if (r == -EEXIST)
                return log_error_errno(r, "label '%s' is already taken in timeline '%s'", label, name);
        if (r < 0)
                return log_error_errno(r, "cannot add the clone's point: %m");
        *ret = p;
        return 0;
}

static int clone_create(cs_store *store, const char *name)
{
        cs_clone_info existing;
        cs_point_info from, probe;
        struct timespec start;
        int64_t at = 0;
        uint64_t segments = 0;
        bool pg = false; /* a PostgreSQL clone that recovers to `at` (pg-clone.c) */
        char when[40];
        int r;

        if (!arg_from)
                return log_error_errno(-EINVAL, "clone create needs --from TIMELINE@POINT or --from CLONE");
        if (cs_clone_find(store, name, &existing) == 0)
                return log_error_errno(-EEXIST, "clone '%s' already exists", name);
        if (cs_point_find(store, name, "latest", &probe) == 0)
                return log_error_errno(-EEXIST, "a timeline named '%s' exists; a clone's snapshots go to a timeline "
                                                "of its own name, so choose another name",
                                       name);
        clock_gettime(CLOCK_MONOTONIC, &start);
        if (arg_at) { /* a PostgreSQL timeline as of a time */
                r = pg_clone_at(store, name, arg_from, arg_at, &from, &at, &segments);
                if (r < 0)
                        return r;
                pg = true;
        } else if (strchr(arg_from, '@')) {
                r = find_point(store, arg_from, &probe);
                if (r < 0)
                        return r;
                /* A base backup of a PostgreSQL timeline starts only with
                 * the WAL to its end: recover to there. */
                from = probe;
                r = pg_clone_base_tree(store, name, &probe, &from, &segments);
                if (r < 0)
                        return r;
                pg = r > 0;
                at = PG_AT_BASE_END;
        } else {
                r = check_name(arg_from);
                if (r < 0)
                        return r;
                /* --from CLONE: that clone's state now, as a point of its own. */
                r = snapshot_clone(store, arg_from, NULL, &from);
                if (r < 0)
                        return r;
                clock_gettime(CLOCK_MONOTONIC, &start);
        }
        r = cs_clone_create(store, name, &from);
        if (r == -EEXIST)
                return log_error_errno(r, "clone '%s' already exists", name);
        if (r < 0)
                return log_error_errno(r, "cannot create clone '%s': %m", name);
        if (arg_json) {
                printf("{\"clone\":\"%s\",\"from\":\"%s@%s\",\"milliseconds\":%.3f", name, from.timeline, from.name,
                       elapsed_ms(&start));
                if (pg) {
                        if (at == PG_AT_LATEST || at == PG_AT_BASE_END)
                                snprintf(when, sizeof(when), at == PG_AT_LATEST ? "latest" : "backup_end");
                        else
                                pg_format_time(at, when);
                        printf(",\"at\":\"%s\",\"wal_segments\":%" PRIu64, when, segments);
                }
                printf("}\n");
        } else if (pg) {
                pg_format_target(at, when);
                printf("created clone %s of %s@%s, recovering to %s (%" PRIu64 " WAL segments)\n", name,
                       from.timeline, from.name, when, segments);
        } else {
                printf("created clone %s of %s@%s in %.1f ms\n", name, from.timeline, from.name, elapsed_ms(&start));
        }
        return 0;
}

/* Whether a clone's base point is still on its timeline: forget may have
 * removed it (the clone keeps its tree), and then TIMELINE@POINT no longer
 * names anything a user can clone or restore. */
static bool base_forgotten(cs_store *store, const cs_clone_info *c)
{
        cs_point_info p;

        return cs_point_find(store, c->base_timeline, c->base_point, &p) < 0 ||
               strcmp(p.name, c->base_point) != 0;
}

static int clone_list(cs_store *store)
{
        _cleanup_free_ cs_clone_info *list = NULL;
        size_t n = 0;
        int r;

        r = cs_clone_list(store, &list, &n);
        if (r < 0)
                return log_error_errno(r, "cannot list clones: %m");
        if (arg_json) {
                printf("[");
                for (size_t i = 0; i < n; i++)
                        printf("%s{\"name\":\"%s\",\"base\":\"%s@%s\",\"base_forgotten\":%s,\"created\":%" PRId64
                               ",\"local_bytes\":%" PRIu64 "}",
                               i ? "," : "", list[i].name, list[i].base_timeline, list[i].base_point,
                               base_forgotten(store, &list[i]) ? "true" : "false", list[i].created,
                               list[i].local_bytes);
                printf("]\n");
                return 0;
        }
        if (n == 0) {
                printf("no clones (make one with 'clonectl clone create NAME --from TIMELINE@POINT')\n");
                return 0;
        }
        printf("%-24s %-40s %-20s %12s\n", "CLONE", "FROM", "CREATED", "LOCAL");
        for (size_t i = 0; i < n; i++) {
                char from[CS_TIMELINE_NAME_MAX + CS_POINT_NAME_MAX + 16], when[32] = "-", size[FORMAT_BYTES_MAX];
                time_t t = (time_t) list[i].created;
                struct tm tm;
                if (gmtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
                snprintf(from, sizeof(from), "%s@%s%s", list[i].base_timeline, list[i].base_point,
                         base_forgotten(store, &list[i]) ? " (forgotten)" : "");
                printf("%-24s %-40s %-20s %12s\n", list[i].name, from, when, format_bytes(size, list[i].local_bytes));
        }
        return 0;
}

/* After a reset that gave the clone a new base (refresh, or rewind to a
 * point of another timeline): records its state as its latest snapshot, a
 * point of timeline NAME with the new base, so that a rewind without --to
 * comes back to it instead of to a snapshot from before the move.  The
 * tree is in the store already; the point adds only what pg_clone_tree
 * put for it (added_bytes). */
static int record_reset(cs_store *store, const char *name, const cs_point_info *to, uint64_t added_bytes,
                        cs_point_info *ret)
{
        cs_point_info p = { .root = to->root, .added_bytes = added_bytes };
        int r = count_point(store, &p.root, &p);

        if (r < 0)
                return r;
        snprintf(p.timeline, sizeof(p.timeline), "%s", name);
        p.created = (int64_t) time(NULL);
        r = cs_clone_point_add(store, &p);
        if (r < 0)
                return r;
        *ret = p;
        return 0;
}

static int clone_reset(cs_store *store, const char *name, bool refresh)
{
        cs_clone_info info;
        cs_point_info to, snap;
        cs_pg_source src;
        cs_put_counters before, after;
        bool from_pg = false, moves = refresh;
        int r;

        cs_store_put_counters(store, &before);

        r = cs_clone_find(store, name, &info);
        if (r < 0)
                return busy(r, name, refresh ? "refresh" : "rewind");
        if (refresh) {
                r = cs_pg_source_get(store, info.base_timeline, &src);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "cannot read timeline '%s': %m", info.base_timeline);
                from_pg = r >= 0;
        }
        if (from_pg) {
                /* A PostgreSQL timeline: its newest data is in the WAL past
                 * the newest base point, so provision at its end. */
                r = pg_clone_tree(store, name, info.base_timeline, PG_AT_LATEST, &to, NULL);
                if (r < 0)
                        return r;
        } else if (refresh) {
                r = cs_point_find(store, info.base_timeline, "latest", &to);
                if (r < 0)
                        return log_error_errno(r, "timeline '%s' of clone '%s' has no points", info.base_timeline,
                                               name);
                /* A base point of a timeline unlinked since: refused
                 * (linked, from_pg took the branch above). */
                cs_point_info newest = to;
                r = pg_clone_base_tree(store, name, &newest, &to, NULL);
                if (r < 0)
                        return r;
        } else if (arg_to && strchr(arg_to, '@')) {
                cs_point_info point;
                r = find_point(store, arg_to, &point); /* says itself what is wrong */
                if (r < 0)
                        return r;
                /* A base backup of a PostgreSQL timeline: with its WAL, as
                 * clone create gives it. */
                to = point;
                r = pg_clone_base_tree(store, name, &point, &to, NULL);
                if (r < 0)
                        return r;
                moves = strcmp(to.timeline, name) != 0;
        } else if (arg_to) {
                r = cs_point_find(store, name, arg_to, &to);
                if (r == -ENOENT)
                        return log_error_errno(r, "no point '%s' among the snapshots of clone '%s'", arg_to, name);
                if (r < 0)
                        return r == -EINVAL ? r : log_error_errno(r, "cannot find point '%s': %m", arg_to);
        } else {
                /* Its last snapshot, or the tree it started from, which is
                 * not its base point's own when that was derived (a
                 * PostgreSQL clone's recovery setup, pg-clone.c). */
                r = cs_point_find(store, name, "latest", &to);
                if (r == -ENOENT) {
                        to = (cs_point_info) { .root = info.base_root };
                        snprintf(to.timeline, sizeof(to.timeline), "%s", info.base_timeline);
                        snprintf(to.name, sizeof(to.name), "%s", info.base_point);
                        r = 0;
                }
                if (r < 0)
                        return log_error_errno(r, "cannot read the snapshots of clone '%s': %m", name);
        }
        r = with_clone(store, name, reset_attempt, &to);
        if (r < 0)
                return busy(r, name, refresh ? "refresh" : "rewind");
        if (!moves) {
                printf("clone %s now holds %s@%s\n", name, to.timeline, to.name);
                return 0;
        }
        cs_store_put_counters(store, &after);
        r = record_reset(store, name, &to, after.stored_bytes - before.stored_bytes, &snap);
        if (r < 0)
                return log_error_errno(r, "clone '%s' now holds %s@%s, but recording that as its latest snapshot "
                                          "failed (a rewind without --to would go back to before it): %m",
                                       name, to.timeline, to.name);
        printf("clone %s now holds %s@%s, its snapshot %s\n", name, to.timeline, to.name, snap.name);
        return 0;
}

static int clone_export(cs_store *store, const char *name, const char *dir)
{
        restore_result res = {};
        folded f;
        uint64_t pin = 0;
        int r;

        r = fold_clone(store, name, &f);
        if (r < 0)
                return busy(r, name, "export");
        r = cs_store_commit(store);
        if (r >= 0)
                r = cs_store_pin(store, &f.tree, &pin); /* no point names it: keep gc off it */
        if (r < 0)
                return log_error_errno(r, "cannot export clone '%s': %m", name);
        r = restore_point(store, &f.tree, dir, &res);
        (void) cs_store_unpin(store, pin);
        for (size_t i = 0; i < res.n_errors; i++)
                log_error("%s", res.errors[i]);
        if (r == -ENOTEMPTY)
                r = log_error_errno(r, "cannot export into %s: the directory is not empty", dir);
        else if (r < 0)
                r = log_error_errno(r, "cannot export clone '%s' into %s: %m", name, dir);
        else if (res.n_errors)
                r = log_error_errno(-EIO, "%zu files could not be exported into %s", res.n_errors, dir);
        else
                fprintf(stderr, "exported clone %s: %" PRIu64 " files, %" PRIu64 " bytes into %s\n", name, res.files,
                        res.bytes, dir);
        restore_result_free(&res);
        return r;
}

/* The clone commands: their arguments after "clone COMMAND", and options. */
static const subcommand clone_commands[] = {
        { "create", " NAME --from TIMELINE@POINT|CLONE", 1, OPT_FROM | OPT_AT | OPT_JSON },
        { "list", "", 0, OPT_JSON },
        { "destroy", " NAME [--force]", 1, OPT_FORCE },
        { "snapshot", " NAME [--label L]", 1, OPT_LABEL },
        { "rewind", " NAME [--to POINT] [--force]", 1, OPT_TO | OPT_FORCE },
        { "refresh", " NAME [--force]", 1, OPT_FORCE },
        { "export", " NAME DIR", 2, 0 },
};

int verb_clone(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        const char *sub = argv[1], *name = argc > 2 ? argv[2] : NULL;
        cs_point_info p;
        int r;

        r = find_subcommand("clone", clone_commands, ELEMENTSOF(clone_commands), argc, argv);
        if (r < 0)
                return r;
        if (strcmp(sub, "list") == 0) {
                r = open_store(0, &store);
                return r < 0 ? r : clone_list(store);
        }
        r = check_name(name);
        if (r < 0)
                return r;
        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;

        if (strcmp(sub, "create") == 0)
                return clone_create(store, name);
        if (strcmp(sub, "destroy") == 0) {
                r = with_clone(store, name, destroy_attempt, NULL);
                if (r < 0)
                        return busy(r, name, "destroy");
                printf("destroyed clone %s\n", name);
                return 0;
        }
        if (strcmp(sub, "snapshot") == 0) {
                if (arg_label && !cs_label_is_valid(arg_label))
                        return log_error_errno(-EINVAL, "invalid label '%s'", arg_label);
                r = snapshot_clone(store, name, arg_label, &p);
                if (r < 0)
                        return r;
                printf("%s\n", p.name);
                return 0;
        }
        if (strcmp(sub, "rewind") == 0)
                return clone_reset(store, name, false);
        if (strcmp(sub, "refresh") == 0)
                return clone_reset(store, name, true);
        return clone_export(store, name, argv[3]);
}
