/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The timeline verbs: snapshot, timelines, points, restore, forget, gc.
 * (diff lives in verb-diff.c.)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clonectl.h"
#include "pg-wal.h"
#include "restore.h"
#include "source-dir.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

/* Written by the signal handler while a snapshot runs: the first SIGINT or
 * SIGTERM caught (0: none), read by the ingest and verb_snapshot.  And
 * what a running --pre is, for kill() (0: none): its process group
 * (negative), or the hook alone when it shares clonectl's (run_hook);
 * the handler passes the signal on to it. */
static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t hook_target;

static void on_signal(int sig)
{
        int saved_errno = errno;

        if (!interrupted)
                interrupted = sig;
        if (hook_target != 0) {
                kill((pid_t) hook_target, sig);
                /* A hook stopped (by SIGSTOP, say) would take the signal
                 * only once continued; without this the wait never ends. */
                kill((pid_t) hook_target, SIGCONT);
        }
        errno = saved_errno;
}

/* What SIGINT and SIGTERM did before verb_snapshot caught them. */
typedef struct caught_signals {
        bool caught;
        struct sigaction old_int, old_term;
} caught_signals;

static void catch_signals(caught_signals *c)
{
        /* No SA_RESTART: a wait for a hook returns EINTR, and the ingest
         * sees the flag at its next block. */
        struct sigaction sa = { .sa_handler = on_signal };

        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &c->old_int);
        sigaction(SIGTERM, &sa, &c->old_term);
        c->caught = true;
}

static void restore_signals(caught_signals *c)
{
        if (!c->caught)
                return;
        sigaction(SIGINT, &c->old_int, NULL);
        sigaction(SIGTERM, &c->old_term, NULL);
        c->caught = false;
}

int parse_point_spec(const char *spec, char timeline[static CS_TIMELINE_NAME_MAX + 1],
                     const char **ret_point)
{
        const char *at = strchr(spec, '@');
        size_t len = at ? (size_t) (at - spec) : strlen(spec);

        if (len == 0 || len > CS_TIMELINE_NAME_MAX)
                return log_error_errno(-EINVAL, "'%s' is not TIMELINE@POINT", spec);
        memcpy(timeline, spec, len);
        timeline[len] = 0;
        if (!cs_name_is_valid(timeline))
                return log_error_errno(-EINVAL, "invalid timeline name '%s': use " CS_NAME_RULE,
                                       timeline);
        *ret_point = at ? at + 1 : NULL;
        if (at && !at[1])
                return log_error_errno(-EINVAL, "'%s' names no point (use TIMELINE@latest)", spec);
        return 0;
}

int find_point(cs_store *store, const char *spec, cs_point_info *ret)
{
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        const char *point;
        int r;

        r = parse_point_spec(spec, timeline, &point);
        if (r < 0)
                return r;
        if (!point)
                return log_error_errno(-EINVAL, "'%s' names no point: use %s@POINT (a name, a label or latest)",
                                       spec, spec);
        r = cs_point_find(store, timeline, point, ret);
        if (r == -ENOENT)
                return log_error_errno(r, "no point '%s' in timeline '%s'", point, timeline);
        if (r < 0)
                return log_error_errno(r, "cannot look up %s: %m", spec);
        return 0;
}

int refuse_clone_timeline(cs_store *store, const char *timeline)
{
        cs_clone_info clone;
        int r;

        r = cs_clone_find(store, timeline, &clone);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "cannot look up clone '%s': %m", timeline);
        return log_error_errno(-EEXIST, "timeline '%s' belongs to the clone of that name: "
                                        "use 'clonectl clone snapshot %s'", timeline, timeline);
}

int refuse_pg_timeline(cs_store *store, const char *timeline)
{
        cs_pg_source src;
        int r;

        r = cs_pg_source_get(store, timeline, &src);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "cannot look up the link of timeline '%s': %m", timeline);
        return log_error_errno(-EEXIST, "timeline '%s' is linked to PostgreSQL: use 'clonectl pg sync %s'",
                               timeline, timeline);
}

static double now_seconds(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* Runs a hook through /bin/sh -c and waits for it.
 *
 * When clonectl is the foreground of its terminal, the hook stays in its
 * process group and keeps the terminal as stdin: a password prompt (sudo,
 * ssh) works, and Ctrl-C reaches it from the terminal.  Otherwise (a
 * script, a service, a background job) it gets a process group of its
 * own, so that a signal passed on reaches what its shell started and
 * never clonectl's caller, and stdin from /dev/null.  A hook outside the
 * foreground that wants the terminal anyway (SIGTTIN, SIGTTOU) would wait
 * for ever: it is killed and reported.
 *
 * With pass_signals (--pre), a SIGINT or SIGTERM caught before or while
 * it runs is passed on to it; --post is never given one, as it may be
 * what restarts the source's service.  Returns 0 when it exits 0, else a
 * negative errno with ret_why describing the failure for a message. */
static int run_hook(const char *command, bool pass_signals, char *ret_why, size_t why_size)
{
        bool foreground = isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp(), wants_tty = false;
        sigset_t stop, saved;
        pid_t pid, target;
        int status, r = 0;

        fflush(stdout);
        fflush(stderr);
        /* Blocked until hook_target names the hook: a signal caught in
         * between would not be passed on. */
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        sigprocmask(SIG_BLOCK, &stop, &saved);
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                sigprocmask(SIG_SETMASK, &saved, NULL);
                snprintf(ret_why, why_size, "could not start: %s", strerror(-r));
                return r;
        }
        if (pid == 0) {
                if (!foreground) {
                        int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                        setpgid(0, 0);
                        if (null_fd >= 0)
                                dup2(null_fd, STDIN_FILENO);
                }
                /* Hooks see stdout as stderr: stdout is the point's name. */
                dup2(STDERR_FILENO, STDOUT_FILENO);
                /* A signal pending until the mask lets it in must stop the
                 * hook, not reach our handler, whose hook_target is the
                 * parent's (exec would reset the handlers, too late).
                 * --post ignores the terminal's Ctrl-C, which reaches it
                 * in clonectl's group: it may be what restarts the
                 * service. */
                signal(SIGINT, pass_signals ? SIG_DFL : SIG_IGN);
                signal(SIGTERM, SIG_DFL);
                sigprocmask(SIG_SETMASK, &saved, NULL);
                execl("/bin/sh", "sh", "-c", command, (char *) NULL);
                _exit(127);
        }
        /* The child does it too: whichever runs first makes the group. */
        if (!foreground)
                (void) setpgid(pid, pid);
        target = foreground ? pid : -pid;
        if (pass_signals) {
                hook_target = target;
                if (interrupted) { /* caught just before the fork */
                        kill(target, interrupted);
                        kill(target, SIGCONT);
                }
        }
        sigprocmask(SIG_SETMASK, &saved, NULL);

        for (;;) {
                if (waitpid(pid, &status, WUNTRACED) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        break;
                }
                if (!WIFSTOPPED(status))
                        break;
                if (WSTOPSIG(status) == SIGTTIN || WSTOPSIG(status) == SIGTTOU) {
                        wants_tty = true;
                        kill(target, SIGKILL);
                }
        }
        hook_target = 0;
        if (r < 0)
                snprintf(ret_why, why_size, "could not be waited for: %s", strerror(-r));
        else if (wants_tty) {
                snprintf(ret_why, why_size,
                         "stopped to wait for the terminal, which it cannot have outside the foreground, "
                         "and was killed");
                return -ENOTTY;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        else if (WIFEXITED(status))
                snprintf(ret_why, why_size, "failed with exit status %d", WEXITSTATUS(status));
        else
                snprintf(ret_why, why_size, "was killed by signal %d", WTERMSIG(status));
        return r < 0 ? r : -ECHILD;
}

static void print_snapshot_json(const cs_point_info *p, const ingest_result *res, const cs_put_counters *added,
                                double seconds)
{
        printf("{\"timeline\":");
        json_write_string(stdout, p->timeline, strlen(p->timeline));
        printf(",\"point\":\"%s\",\"files\":%" PRIu64 ",\"files_read\":%" PRIu64 ",\"files_reused\":%" PRIu64
               ",\"logical_bytes\":%" PRIu64 ",\"bytes_read\":%" PRIu64 ",\"bytes_new\":%" PRIu64
               ",\"bytes_stored\":%" PRIu64 ",\"seconds\":%.3f,\"errors\":[",
               p->name, res->files, res->files_read, res->files_reused, res->logical_bytes, res->bytes_read,
               added->bytes, added->stored_bytes, seconds);
        for (size_t i = 0; i < res->n_errors; i++) {
                if (i)
                        putchar(',');
                json_write_string(stdout, res->errors[i], strlen(res->errors[i]));
        }
        printf("]}\n");
}

int verb_snapshot(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        const char *timeline = argv[1];
        cs_point_info prev = {}, point = {};
        _cleanup_(ingest_result_free) ingest_result res = {};
        cs_put_counters added;
        _cleanup_(restore_signals) caught_signals caught = {};
        char why[128] = "", post_why[128] = "", post_note[160] = "";
        struct stat st;
        bool have_prev;
        double start;
        int r = 0, pre_r = 0, post_r = 0;

        if (!cs_name_is_valid(timeline))
                return log_error_errno(-EINVAL, "invalid timeline name '%s': use " CS_NAME_RULE,
                                       timeline);
        if (!arg_from)
                return log_error_errno(-EINVAL, "snapshot needs --from DIR");
        if (arg_label && !cs_label_is_valid(arg_label))
                return log_error_errno(-EINVAL, "invalid label '%s': use " CS_NAME_RULE ", "
                                                "not 'latest' and not shaped like a point name",
                                       arg_label);
        /* The type first: access() would call a regular file without an x
         * bit unreadable, which hides what is wrong with it. */
        if (stat(arg_from, &st) < 0)
                return log_error_errno(negative_errno(), "cannot read source directory %s: %m", arg_from);
        if (!S_ISDIR(st.st_mode))
                return log_error_errno(-ENOTDIR, "cannot read source directory %s: %m", arg_from);
        if (access(arg_from, R_OK | X_OK) < 0)
                return log_error_errno(negative_errno(), "cannot read source directory %s: %m", arg_from);

        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        r = refuse_clone_timeline(store, timeline);
        if (r < 0)
                return r;
        r = refuse_pg_timeline(store, timeline);
        if (r < 0)
                return r;
        if (arg_label && cs_point_find(store, timeline, arg_label, &prev) == 0 &&
            strcmp(prev.label, arg_label) == 0)
                return log_error_errno(-EEXIST, "label '%s' already names point %s of timeline '%s'",
                                       arg_label, prev.name, timeline);
        r = cs_point_find(store, timeline, "latest", &prev);
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "cannot read timeline '%s': %m", timeline);
        have_prev = r == 0;

        snprintf(point.timeline, sizeof(point.timeline), "%s", timeline);
        if (arg_label)
                snprintf(point.label, sizeof(point.label), "%s", arg_label);
        point.created = (int64_t) time(NULL);
        start = now_seconds();

        /* From here until the point is added, SIGINT or SIGTERM means no
         * point: --pre is passed the signal, the ingest stops, and --post
         * runs to its end whatever happened. */
        catch_signals(&caught);
        if (arg_pre && !interrupted)
                pre_r = run_hook(arg_pre, true, why, sizeof(why));
        if (pre_r >= 0 && !interrupted) {
                ingest_options o = {
                        .full = arg_full,
                        .threads = arg_threads,
                        .progress = isatty(STDERR_FILENO) && !arg_json,
                        .cancel = &interrupted,
                        .expected_bytes = have_prev ? prev.logical_bytes : 0,
                        .prev_created = have_prev ? prev.created : 0,
                };
                r = ingest_directory(store, arg_from, have_prev && !arg_full ? &prev.root : NULL, &o, &res);
        }

        /* --post runs whatever happened: it may be what unlocks the source. */
        if (arg_post)
                post_r = run_hook(arg_post, false, post_why, sizeof(post_why));
        if (post_r < 0)
                snprintf(post_note, sizeof(post_note), " (and --post command %s)", post_why);

        if (interrupted || r == -ECANCELED)
                return log_error_errno(-ECANCELED, "interrupted; no point created%s", post_note);
        if (pre_r < 0)
                return log_error_errno(pre_r, "--pre command %s; no point created%s", why, post_note);
        if (r < 0)
                return log_error_errno(r, "cannot snapshot %s: %m; no point created%s", arg_from, post_note);
        if (res.n_errors && !arg_ignore_errors) {
                /* A point without some files is what --ignore-errors asks
                 * for; without it, make none.  What was put is garbage for
                 * gc, as after an interrupted snapshot.  One line, the first
                 * file in it; -v lists them all. */
                for (size_t i = 0; i < res.n_errors; i++)
                        log_debug("%s", res.errors[i]);
                if (res.n_errors == 1)
                        return log_error_errno(-EIO, "cannot snapshot %s: 1 file could not be read: %s; "
                                                     "no point created (--ignore-errors makes it anyway)%s",
                                               arg_from, res.errors[0], post_note);
                return log_error_errno(-EIO, "cannot snapshot %s: %zu files could not be read, the first: %s; "
                                             "no point created (--ignore-errors makes it anyway)%s",
                                       arg_from, res.n_errors, res.errors[0], post_note);
        }

        cs_store_put_counters(store, &added);
        point.root = res.point;
        point.files = res.files;
        point.logical_bytes = res.logical_bytes;
        point.added_bytes = added.stored_bytes;
        r = cs_point_add(store, &point);
        /* A point made is made: a signal from here on has its usual effect. */
        restore_signals(&caught);
        if (r < 0) {
                if (r == -EEXIST)
                        return log_error_errno(r, "label '%s' is already taken in timeline '%s'%s", arg_label,
                                               timeline, post_note);
                return log_error_errno(r, "cannot add the point to timeline '%s': %m%s", timeline, post_note);
        }

        if (arg_json)
                print_snapshot_json(&point, &res, &added, now_seconds() - start);
        else
                printf("%s\n", point.name);

        /* --ignore-errors: the point is made, and says what it lacks. */
        for (size_t i = 0; i < res.n_errors; i++)
                log_error("%s", res.errors[i]);
        if (post_r < 0)
                return log_error_errno(post_r, "--post command %s (point %s was created)", post_why, point.name);
        return 0;
}

int verb_timelines(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ cs_timeline_info *list = NULL;
        size_t n = 0;
        int r;

        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = cs_timeline_list(store, &list, &n);
        if (r < 0)
                return log_error_errno(r, "cannot list timelines: %m");
        if (arg_json) {
                printf("[");
                for (size_t i = 0; i < n; i++) {
                        printf("%s{\"name\":", i ? "," : "");
                        json_write_string(stdout, list[i].name, strlen(list[i].name));
                        printf(",\"points\":%" PRIu64 ",\"newest\":%" PRId64 ",\"logical_bytes\":%" PRIu64 "}",
                               list[i].points, list[i].newest, list[i].logical_bytes);
                }
                printf("]\n");
                return 0;
        }
        if (n == 0) {
                printf("no timelines (create one with 'clonectl snapshot NAME --from DIR')\n");
                return 0;
        }
        printf("%-32s %7s  %-20s %12s\n", "TIMELINE", "POINTS", "NEWEST", "SIZE");
        for (size_t i = 0; i < n; i++) {
                char when[32] = "-", size[FORMAT_BYTES_MAX];
                time_t t = (time_t) list[i].newest;
                struct tm tm;
                if (list[i].newest && gmtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", &tm);
                printf("%-32s %7" PRIu64 "  %-20s %12s\n", list[i].name, list[i].points, when,
                       format_bytes(size, list[i].logical_bytes));
        }
        return 0;
}

int verb_points(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ cs_point_info *list = NULL;
        size_t n = 0;
        int r;

        if (!cs_name_is_valid(argv[1]))
                return log_error_errno(-EINVAL, "invalid timeline name '%s'", argv[1]);
        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = cs_point_list(store, argv[1], &list, &n);
        if (r == -ENOENT)
                return log_error_errno(r, "no timeline '%s' in store %s", argv[1], arg_store);
        if (r < 0)
                return log_error_errno(r, "cannot list points of '%s': %m", argv[1]);
        if (arg_json) {
                printf("[");
                for (size_t i = 0; i < n; i++) {
                        printf("%s{\"name\":\"%s\",\"label\":", i ? "," : "", list[i].name);
                        if (list[i].label[0])
                                json_write_string(stdout, list[i].label, strlen(list[i].label));
                        else
                                printf("null");
                        printf(",\"created\":%" PRId64 ",\"files\":%" PRIu64 ",\"logical_bytes\":%" PRIu64
                               ",\"added_bytes\":%" PRIu64 "}",
                               list[i].created, list[i].files, list[i].logical_bytes, list[i].added_bytes);
                }
                printf("]\n");
                return 0;
        }
        printf("%-22s %-20s %10s %12s %12s\n", "POINT", "LABEL", "FILES", "SIZE", "ADDED");
        for (size_t i = 0; i < n; i++) {
                char size[FORMAT_BYTES_MAX], added[FORMAT_BYTES_MAX];
                printf("%-22s %-20s %10" PRIu64 " %12s %12s\n", list[i].name,
                       list[i].label[0] ? list[i].label : "-", list[i].files,
                       format_bytes(size, list[i].logical_bytes), format_bytes(added, list[i].added_bytes));
        }
        return 0;
}

int verb_restore(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        restore_result res = {};
        cs_point_info p;
        int r;

        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = find_point(store, argv[1], &p);
        if (r < 0)
                return r;
        r = restore_point(store, &p.root, argv[2], &res);
        if (r == -ENOTEMPTY) {
                restore_result_free(&res);
                return log_error_errno(r, "cannot restore into %s: the directory is not empty", argv[2]);
        }
        for (size_t i = 0; i < res.n_errors; i++)
                log_error("%s", res.errors[i]);
        if (r >= 0 && res.n_errors)
                r = log_error_errno(-EIO, "%zu of %" PRIu64 " files could not be restored into %s", res.n_errors,
                                    res.files, argv[2]);
        else if (r < 0)
                log_error_errno(r, "cannot restore %s@%s into %s: %m", p.timeline, p.name, argv[2]);
        else if (!arg_json)
                fprintf(stderr, "restored %s@%s: %" PRIu64 " files, %" PRIu64 " bytes into %s\n", p.timeline,
                        p.name, res.files, res.bytes, argv[2]);
        restore_result_free(&res);
        return r;
}

/* --- forget --------------------------------------------------------------- */

/* The bucket a point falls in for one retention rule (UTC). */
static int64_t bucket(int64_t created, int rule)
{
        time_t t = (time_t) created;
        struct tm tm;

        gmtime_r(&t, &tm);
        switch (rule) {
        case 0: /* last: every point is its own bucket */
                return created;
        case 1: /* hourly */
                return (int64_t) (tm.tm_year + 1900) * 1000000 + (tm.tm_yday + 1) * 100 + tm.tm_hour;
        case 2: /* daily */
                return (int64_t) (tm.tm_year + 1900) * 1000 + tm.tm_yday + 1;
        case 3: { /* weekly: ISO 8601 year and week */
                char buf[16];
                strftime(buf, sizeof(buf), "%G%V", &tm);
                return strtoll(buf, NULL, 10);
        }
        default: /* monthly */
                return (int64_t) (tm.tm_year + 1900) * 100 + tm.tm_mon + 1;
        }
}

/* restic's rules: each rule keeps the newest point of each of the N most
 * recent buckets that hold a point; a point any rule keeps stays. */
static void apply_retention(const cs_point_info *points, size_t n, bool *keep)
{
        const uint64_t limits[5] = { arg_keep_last, arg_keep_hourly, arg_keep_daily, arg_keep_weekly,
                                     arg_keep_monthly };

        for (int rule = 0; rule < 5; rule++) {
                uint64_t kept = 0;
                int64_t last = INT64_MIN;
                if (limits[rule] == 0)
                        continue;
                for (size_t i = n; i-- > 0 && kept < limits[rule];) {
                        int64_t b = bucket(points[i].created, rule);
                        if (rule == 0 || b != last) {
                                keep[i] = true;
                                kept++;
                                last = b;
                        }
                }
        }
}

/* Walks the stored WAL of timeline below segment before: what forget
 * drops with the points.  Counts its segments and what they alone hold. */
static int walk_dropped_wal(cs_store *store, cs_reach *reach, const char *timeline, uint64_t before,
                            uint64_t *ret_segments, uint64_t *ret_frees)
{
        _cleanup_free_ cs_pg_wal *wal = NULL;
        size_t n = 0;
        int r;

        r = cs_pg_wal_list(store, timeline, &wal, &n);
        if (r == -ENOENT)
                return 0;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                uint64_t frees = 0;
                if (wal[i].segno >= before)
                        continue;
                r = cs_reach_walk(store, reach, &wal[i].root, &frees);
                (*ret_segments)++;
                *ret_frees += frees;
        }
        return r < 0 ? r : 0;
}

int verb_forget(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ cs_point_info *points = NULL;
        _cleanup_free_ bool *keep = NULL;
        _cleanup_free_ int64_t *removed = NULL;
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        const char *only;
        size_t n = 0, n_removed = 0;
        uint64_t total = 0, wal_dropped = 0, wal_before = UINT64_MAX, wal_segments = 0, wal_frees = 0;
        const char *wal_timeline = NULL;
        bool wal_no_base = false;
        cs_reach *reach = NULL;
        bool any_rule = arg_keep_last || arg_keep_hourly || arg_keep_daily || arg_keep_weekly || arg_keep_monthly;
        int r;

        r = parse_point_spec(argv[1], timeline, &only);
        if (r < 0)
                return r;
        if (!only && !any_rule)
                return log_error_errno(-EINVAL, "forget needs a rule (--keep-last N, --keep-hourly N, "
                                                "--keep-daily N, --keep-weekly N, --keep-monthly N) or TIMELINE@POINT");
        if (only && any_rule)
                return log_error_errno(-EINVAL, "give either TIMELINE@POINT or --keep-* rules, not both");

        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        r = cs_point_list(store, timeline, &points, &n);
        if (r == -ENOENT)
                return log_error_errno(r, "no timeline '%s' in store %s", timeline, arg_store);
        if (r < 0)
                return log_error_errno(r, "cannot list points of '%s': %m", timeline);

        keep = calloc(MAX(n, 1u), sizeof(*keep));
        removed = calloc(MAX(n, 1u), sizeof(*removed));
        if (!keep || !removed)
                return log_error_errno(-ENOMEM, "out of memory");
        if (only) {
                cs_point_info target;
                r = find_point(store, argv[1], &target);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        keep[i] = points[i].id != target.id;
        } else {
                apply_retention(points, n, keep);
        }
        for (size_t i = 0; i < n; i++)
                if (!keep[i])
                        removed[n_removed++] = points[i].id;

        /* A PostgreSQL timeline also drops the WAL that no base point left
         * needs (pg_prune_wal below). */
        if (n_removed > 0) {
                r = pg_wal_needed_from(store, timeline, removed, n_removed, &wal_before);
                if (r >= 0)
                        wal_timeline = timeline;
                else if (r != -ENOENT)
                        return r;
        }

        /* What each removal frees: walk what stays first, then each removed
         * point in turn, then the WAL that goes; what a walk newly reaches
         * is freed by that removal. */
        reach = cs_reach_new();
        if (!reach)
                return log_error_errno(-ENOMEM, "out of memory");
        r = cs_reach_walk_roots(store, reach, removed, n_removed, wal_timeline, wal_before);
        if (r < 0) {
                cs_reach_free(reach);
                return log_error_errno(r, "cannot walk the points that stay: %m");
        }
        if (arg_json)
                printf("{\"timeline\":\"%s\",\"dry_run\":%s,\"points\":[", timeline, arg_dry_run ? "true" : "false");
        for (size_t i = 0, printed = 0; i < n; i++) {
                char size[FORMAT_BYTES_MAX];
                uint64_t frees = 0;

                if (!keep[i]) {
                        r = cs_reach_walk(store, reach, &points[i].root, &frees);
                        if (r < 0)
                                break;
                        total += frees;
                }
                if (arg_json) {
                        printf("%s{\"name\":\"%s\",\"action\":\"%s\",\"frees_bytes\":%" PRIu64 "}",
                               printed++ ? "," : "", points[i].name, keep[i] ? "keep" : "remove", frees);
                } else if (keep[i]) {
                        printf("keep    %-22s %s\n", points[i].name, points[i].label);
                } else {
                        printf("%s %-22s frees %s%s%s\n", arg_dry_run ? "would remove" : "remove ",
                               points[i].name, format_bytes(size, frees), points[i].label[0] ? "  " : "",
                               points[i].label);
                }
        }
        if (r >= 0 && wal_timeline)
                r = walk_dropped_wal(store, reach, wal_timeline, wal_before, &wal_segments, &wal_frees);
        cs_reach_free(reach);
        if (r < 0)
                return log_error_errno(r, "cannot tell what forgetting frees: %m");
        total += wal_frees;

        for (size_t i = 0; i < n && !arg_dry_run; i++) {
                if (keep[i])
                        continue;
                r = cs_point_remove(store, timeline, points[i].name);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "cannot remove point %s: %m", points[i].name);
        }
        /* A PostgreSQL timeline's WAL from before its oldest base point. */
        if (!arg_dry_run && n_removed > 0) {
                r = pg_prune_wal(store, timeline, &wal_dropped, &wal_no_base);
                if (r < 0)
                        return r;
        }
        if (arg_dry_run) {
                wal_dropped = wal_segments;
                wal_no_base = wal_timeline && wal_before == UINT64_MAX;
        }
        if (arg_json) {
                printf("],\"removed\":%zu,\"frees_bytes\":%" PRIu64 ",\"wal_segments_dropped\":%" PRIu64
                       ",\"wal_frees_bytes\":%" PRIu64 "}\n",
                       n_removed, total, wal_dropped, wal_frees);
        } else {
                char size[FORMAT_BYTES_MAX];
                /* With no base point left, no WAL is "from before" one. */
                if (wal_dropped)
                        printf("%s %" PRIu64 " WAL segments %s, freeing %s\n", arg_dry_run ? "would drop" : "dropped",
                               wal_dropped,
                               wal_no_base ? "(all stored: no base point is kept)"
                                           : "from before the oldest base point kept",
                               format_bytes(size, wal_frees));
                printf("%s %zu of %zu points, freeing %s%s\n", arg_dry_run ? "would remove" : "removed", n_removed, n,
                       format_bytes(size, total), arg_dry_run || arg_prune ? "" : " at the next 'clonectl gc'");
        }
        if (arg_prune && !arg_dry_run && n_removed > 0) {
                cs_store_unref(TAKE_PTR(store));
                return verb_gc(1, argv);
        }
        return 0;
}

/* --- gc -------------------------------------------------------------------- */

static void log_library(void *userdata, int error, const char *message)
{
        (void) userdata;
        log_warning_errno(error, "%s", message);
}

int verb_gc(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        unsigned flags = arg_dry_run ? CS_GC_DRY_RUN : 0;
        char removed[FORMAT_BYTES_MAX], reclaimed[FORMAT_BYTES_MAX];
        cs_gc_report rep = {};
        int r;

        r = open_store(CS_OPEN_WRITE, &store);
        if (r < 0)
                return r;
        cs_store_set_log(store, log_library, NULL);
        r = cs_store_gc(store, flags | CS_GC_NOWAIT, &rep);
        if (r == -EBUSY) {
                log_info("gc: waiting for other writers (snapshots, clone snapshots) to finish...");
                r = cs_store_gc(store, flags, &rep);
        }
        if (r == -EBADMSG)
                return log_error_errno(r, "gc refused: part of a point cannot be read; run 'clonectl verify'");
        if (r < 0)
                return log_error_errno(r, "gc failed: %m");
        if (arg_json) {
                printf("{\"dry_run\":%s,\"chunks_kept\":%" PRIu64 ",\"chunks_removed\":%" PRIu64
                       ",\"bytes_removed\":%" PRIu64 ",\"packs_rewritten\":%" PRIu64 ",\"packs_removed\":%" PRIu64
                       ",\"bytes_reclaimed\":%" PRIu64 "}\n",
                       arg_dry_run ? "true" : "false", rep.chunks_kept, rep.chunks_removed, rep.bytes_removed,
                       rep.packs_rewritten, rep.packs_removed, rep.bytes_reclaimed);
                return 0;
        }
        printf("%s %" PRIu64 " unreachable chunks (%s), kept %" PRIu64 "\n",
               arg_dry_run ? "would remove" : "removed", rep.chunks_removed, format_bytes(removed, rep.bytes_removed),
               rep.chunks_kept);
        if (!arg_dry_run)
                printf("compacted %" PRIu64 " packs, deleted %" PRIu64 " packs, gave back %s\n", rep.packs_rewritten,
                       rep.packs_removed, format_bytes(reclaimed, rep.bytes_reclaimed));
        return 0;
}
