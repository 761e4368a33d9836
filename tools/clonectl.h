/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl: shared state of the command line (parsed once in main, read-only
 * afterwards) and the verbs.  Each verb takes its positional arguments
 * (argv[0] is the verb) and returns 0 or a negative errno it has already
 * reported in one line.
 */
#ifndef CLONECTL_H
#define CLONECTL_H

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

extern const char *arg_store;
extern bool arg_json;
extern bool arg_data;
extern uint64_t arg_block_size;
extern int arg_lz4hc_level;
extern const char *arg_from;
extern const char *arg_label;
extern const char *arg_pre;
extern const char *arg_post;
extern bool arg_full;
extern bool arg_ignore_errors;
extern int arg_threads;
extern uint64_t arg_keep_last, arg_keep_hourly, arg_keep_daily, arg_keep_weekly, arg_keep_monthly;
extern bool arg_dry_run;
extern bool arg_prune;
/* pg receive-wal: a failure that restarting cannot fix (clonectl(8)). */
#define CLONECTL_EXIT_GIVE_UP 3
/* pg wal-fetch failing for another reason than a file the store lacks:
 * PostgreSQL aborts recovery on a restore_command status above 125,
 * and takes any other failure for the end of the WAL. */
#define CLONECTL_EXIT_RESTORE_FAILED 255

extern const char *arg_to;
extern bool arg_force;
extern const char *arg_slot;
extern const char *arg_at;
extern bool arg_keep_slot;

/* The options a command takes.  --store, --verbose, --help and --version
 * go with every command; any other given to a command that does not take
 * it is refused in one line, rather than silently ignored. */
enum {
        OPT_JSON = 1u << 0,
        OPT_DATA = 1u << 1,
        OPT_BLOCK_SIZE = 1u << 2,
        OPT_LZ4HC = 1u << 3,
        OPT_FROM = 1u << 4,
        OPT_LABEL = 1u << 5,
        OPT_PRE = 1u << 6,
        OPT_POST = 1u << 7,
        OPT_FULL = 1u << 8,
        OPT_IGNORE_ERRORS = 1u << 9,
        OPT_THREADS = 1u << 10,
        OPT_KEEP_LAST = 1u << 11,
        OPT_KEEP_HOURLY = 1u << 12,
        OPT_KEEP_DAILY = 1u << 13,
        OPT_KEEP_WEEKLY = 1u << 14,
        OPT_KEEP_MONTHLY = 1u << 15,
        OPT_DRY_RUN = 1u << 16,
        OPT_PRUNE = 1u << 17,
        OPT_TO = 1u << 18,
        OPT_FORCE = 1u << 19,
        OPT_SLOT = 1u << 20,
        OPT_AT = 1u << 21,
        OPT_KEEP_SLOT = 1u << 22,
};
#define OPT_KEEP (OPT_KEEP_LAST | OPT_KEEP_HOURLY | OPT_KEEP_DAILY | OPT_KEEP_WEEKLY | OPT_KEEP_MONTHLY)

/* Refuses, in one line naming it, an option given that command (as the
 * user would type it, "clone create") does not take. */
int check_options(const char *command, unsigned takes);

/* A command of a verb with commands of its own (clone, pg). */
typedef struct subcommand {
        const char *name, *args; /* args: the usage after "VERB NAME" */
        int n_args;              /* after NAME */
        unsigned options;        /* OPT_ bits it takes */
} subcommand;

/* Finds argv[1] among verb_name's commands and checks its argument count and
 * options; its index, or a negative errno reported in one line. */
int find_subcommand(const char *verb_name, const subcommand *commands, size_t n, int argc, char **argv);

/* Opens the store named by --store, $CLONEFS_STORE or /var/lib/clonefs,
 * reporting any failure in one line that names the store. */
int open_store(unsigned flags, cs_store **ret_store);

int verb_init(int argc, char **argv);
int verb_verify(int argc, char **argv);
int verb_stats(int argc, char **argv);
int verb_snapshot(int argc, char **argv);
int verb_timelines(int argc, char **argv);
int verb_points(int argc, char **argv);
int verb_restore(int argc, char **argv);
int verb_diff(int argc, char **argv);
int verb_forget(int argc, char **argv);
int verb_gc(int argc, char **argv);
int verb_clone(int argc, char **argv);
int verb_pg(int argc, char **argv);
int verb_timeline(int argc, char **argv);
int verb_doctor(int argc, char **argv);

/* Splits "TIMELINE@POINT" (POINT optional: *ret_point is then NULL),
 * reporting a malformed spec in one line. */
int parse_point_spec(const char *spec, char timeline[static CS_TIMELINE_NAME_MAX + 1], const char **ret_point);
/* Resolves "TIMELINE@POINT", reporting failure in one line. */
int find_point(cs_store *store, const char *spec, cs_point_info *ret);
/* Refuses, in one line, a timeline named after a clone: a clone's
 * snapshots go there (clone snapshot), and rewind takes the latest of them,
 * so a tree from anywhere else must not be added to it. */
int refuse_clone_timeline(cs_store *store, const char *timeline);
/* Refuses, in one line, a timeline linked to PostgreSQL: its points are
 * base backups (pg sync), which a clone at a time is made from, so a
 * directory snapshot must not be added to it. */
int refuse_pg_timeline(cs_store *store, const char *timeline);

#endif
