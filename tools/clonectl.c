/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl: the administration tool of a clonefs store.  This file parses
 * the command line and dispatches to one verb_*() per subcommand; verbs
 * live in verb-*.c.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clonectl.h"
#include "util/log.h"
#include "util/size.h"

#define DEFAULT_STORE "/var/lib/clonefs"

const char *arg_store;
bool arg_json;
bool arg_data;
uint64_t arg_block_size;
int arg_lz4hc_level;
const char *arg_from;
const char *arg_label;
const char *arg_pre;
const char *arg_post;
bool arg_full;
bool arg_ignore_errors;
int arg_threads;
uint64_t arg_keep_last, arg_keep_hourly, arg_keep_daily, arg_keep_weekly, arg_keep_monthly;
bool arg_dry_run;
bool arg_prune;
const char *arg_to;
bool arg_force;
const char *arg_slot;
const char *arg_at;
bool arg_keep_slot;

typedef struct verb {
        const char *name;
        int min_args, max_args; /* positional arguments after the verb */
        int (*run)(int argc, char **argv);
        unsigned options; /* OPT_*: what it takes; OPT_PER_COMMAND: run checks */
        const char *synopsis;
} verb;

/* A verb with commands of its own (clone, pg, timeline) checks its
 * options once it knows which command it runs. */
#define OPT_PER_COMMAND UINT_MAX

static const verb verbs[] = {
        { "init", 0, 0, verb_init, OPT_BLOCK_SIZE | OPT_LZ4HC, "init [--block-size SIZE] [--lz4hc LEVEL]   create a store" },
        { "verify", 0, 0, verb_verify, OPT_DATA | OPT_JSON, "verify [--data]                           check the store" },
        { "stats", 0, 0, verb_stats, OPT_JSON, "stats [--json]                            space used and saved" },
        { "doctor", 0, 0, verb_doctor, OPT_JSON, "doctor                                    check this machine and the store, say what to fix" },
        { "snapshot", 1, 1, verb_snapshot,
          OPT_FROM | OPT_LABEL | OPT_PRE | OPT_POST | OPT_FULL | OPT_IGNORE_ERRORS | OPT_THREADS | OPT_JSON,
          "snapshot TIMELINE --from DIR [--label L] [--pre CMD] [--post CMD] [--full] [--ignore-errors]\n"
          "                                            add a point: a copy of DIR now" },
        { "timelines", 0, 0, verb_timelines, OPT_JSON, "timelines                                 list timelines" },
        { "points", 1, 1, verb_points, OPT_JSON, "points TIMELINE                           list a timeline's points" },
        { "restore", 2, 2, verb_restore, OPT_JSON, "restore TIMELINE@POINT DIR                copy a point into DIR" },
        { "diff", 2, 2, verb_diff, OPT_JSON, "diff TIMELINE@A TIMELINE@B                what changed between two points" },
        { "forget", 1, 1, verb_forget, OPT_KEEP | OPT_DRY_RUN | OPT_PRUNE | OPT_JSON,
          "forget TIMELINE[@POINT] [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
          "       [--keep-weekly N] [--keep-monthly N] [--dry-run] [--prune]\n"
          "                                            remove points" },
        { "gc", 0, 0, verb_gc, OPT_DRY_RUN | OPT_JSON, "gc [--dry-run]                            reclaim unreferenced space" },
        { "clone", 1, 3, verb_clone, OPT_PER_COMMAND,
          "clone create NAME --from TIMELINE@POINT|CLONE   a writable copy, in milliseconds\n"
          "  clone create NAME --from TIMELINE --at TIME   a PostgreSQL timeline as of TIME (recovers on start)\n"
          "  clone list | destroy NAME [--force] | snapshot NAME [--label L] | export NAME DIR\n"
          "  clone rewind NAME [--to POINT] [--force] | refresh NAME [--force]" },
        { "timeline", 2, 2, verb_timeline, OPT_JSON,
          "timeline show TIMELINE                    points; for PostgreSQL, the times a clone can be made at" },
        { "pg", 1, 4, verb_pg, OPT_PER_COMMAND,
          "pg link TIMELINE CONNINFO [--slot NAME]   link a PostgreSQL server: slot, first base backup\n"
          "  pg unlink TIMELINE [--keep-slot]          drop the link, its slot and its WAL; points stay\n"
          "  pg sync TIMELINE                          a base backup into a new point\n"
          "  pg receive-wal TIMELINE                   stream WAL into the store (runs until stopped)\n"
          "  pg archive-wal TIMELINE PATH              store one WAL file (archive_command = '... %p')\n"
          "  pg wal-fetch TIMELINE WALFILE DEST        write one WAL file back (restore_command = '... %f %p')" },
};

static void help(void)
{
        printf("Usage: clonectl [--store DIR] COMMAND [OPTIONS]\n\n"
               "Manage a clonefs store: timelines of points, clones, space.\n\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                printf("  %s\n", verbs[i].synopsis);
        printf("\nPOINT is a point's name (20261122T101505Z), its label, or 'latest'.\n"
               "TIME is YYYY-MM-DD HH:MM:SS[.frac][+TZ] (or ISO 8601 with T and Z); no zone is local time.\n"
               "CONNINFO is libpq's; a password in it is used, never stored: keep it in ~/.pgpass,\n"
               "PGPASSFILE or a service file.  Set max_slot_wal_keep_size on the server, so that a\n"
               "stopped receive-wal cannot fill its disk.\n");
        printf("\nOptions:\n"
               "  --store DIR   the store (default: $CLONEFS_STORE, else " DEFAULT_STORE ")\n"
               "  --json        machine-readable output\n"
               "  --slot NAME   pg link: the replication slot (default clonefs_TIMELINE)\n"
               "  --keep-slot   pg unlink: leave the slot on the server\n"
               "  --at TIME     clone create: the time a PostgreSQL timeline is cloned at\n"
               "  -v, --verbose more detail on stderr\n"
               "  -h, --help    this text\n"
               "  --version     the version\n");
}

enum {
        ARG_STORE = 0x100,
        ARG_JSON,
        ARG_DATA,
        ARG_BLOCK_SIZE,
        ARG_LZ4HC,
        ARG_VERSION,
        ARG_FROM,
        ARG_LABEL,
        ARG_PRE,
        ARG_POST,
        ARG_FULL,
        ARG_IGNORE_ERRORS,
        ARG_THREADS,
        ARG_KEEP_LAST,
        ARG_KEEP_HOURLY,
        ARG_KEEP_DAILY,
        ARG_KEEP_WEEKLY,
        ARG_KEEP_MONTHLY,
        ARG_DRY_RUN,
        ARG_PRUNE,
        ARG_TO,
        ARG_FORCE,
        ARG_SLOT,
        ARG_AT,
        ARG_KEEP_SLOT,
};

static const struct option options[] = {
        { "store", required_argument, NULL, ARG_STORE },
        { "json", no_argument, NULL, ARG_JSON },
        { "data", no_argument, NULL, ARG_DATA },
        { "block-size", required_argument, NULL, ARG_BLOCK_SIZE },
        { "lz4hc", required_argument, NULL, ARG_LZ4HC },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        { "from", required_argument, NULL, ARG_FROM },
        { "label", required_argument, NULL, ARG_LABEL },
        { "pre", required_argument, NULL, ARG_PRE },
        { "post", required_argument, NULL, ARG_POST },
        { "full", no_argument, NULL, ARG_FULL },
        { "ignore-errors", no_argument, NULL, ARG_IGNORE_ERRORS },
        { "threads", required_argument, NULL, ARG_THREADS },
        { "keep-last", required_argument, NULL, ARG_KEEP_LAST },
        { "keep-hourly", required_argument, NULL, ARG_KEEP_HOURLY },
        { "keep-daily", required_argument, NULL, ARG_KEEP_DAILY },
        { "keep-weekly", required_argument, NULL, ARG_KEEP_WEEKLY },
        { "keep-monthly", required_argument, NULL, ARG_KEEP_MONTHLY },
        { "dry-run", no_argument, NULL, ARG_DRY_RUN },
        { "prune", no_argument, NULL, ARG_PRUNE },
        { "to", required_argument, NULL, ARG_TO },
        { "force", no_argument, NULL, ARG_FORCE },
        { "slot", required_argument, NULL, ARG_SLOT },
        { "at", required_argument, NULL, ARG_AT },
        { "keep-slot", no_argument, NULL, ARG_KEEP_SLOT },
        {}
};

/* Which OPT_ bit each option is (the others go with every command). */
static const struct {
        int arg;
        unsigned opt;
} option_bits[] = {
        { ARG_JSON, OPT_JSON },
        { ARG_DATA, OPT_DATA },
        { ARG_BLOCK_SIZE, OPT_BLOCK_SIZE },
        { ARG_LZ4HC, OPT_LZ4HC },
        { ARG_FROM, OPT_FROM },
        { ARG_LABEL, OPT_LABEL },
        { ARG_PRE, OPT_PRE },
        { ARG_POST, OPT_POST },
        { ARG_FULL, OPT_FULL },
        { ARG_IGNORE_ERRORS, OPT_IGNORE_ERRORS },
        { ARG_THREADS, OPT_THREADS },
        { ARG_KEEP_LAST, OPT_KEEP_LAST },
        { ARG_KEEP_HOURLY, OPT_KEEP_HOURLY },
        { ARG_KEEP_DAILY, OPT_KEEP_DAILY },
        { ARG_KEEP_WEEKLY, OPT_KEEP_WEEKLY },
        { ARG_KEEP_MONTHLY, OPT_KEEP_MONTHLY },
        { ARG_DRY_RUN, OPT_DRY_RUN },
        { ARG_PRUNE, OPT_PRUNE },
        { ARG_TO, OPT_TO },
        { ARG_FORCE, OPT_FORCE },
        { ARG_SLOT, OPT_SLOT },
        { ARG_AT, OPT_AT },
        { ARG_KEEP_SLOT, OPT_KEEP_SLOT },
};

/* The OPT_ bits of the options given (parse_argv). */
static unsigned given_options;

int check_options(const char *command, unsigned takes)
{
        unsigned extra = given_options & ~takes;

        for (size_t i = 0; extra && i < ELEMENTSOF(option_bits); i++) {
                if (!(extra & option_bits[i].opt))
                        continue;
                for (const struct option *o = options; o->name; o++)
                        if (o->val == option_bits[i].arg)
                                return log_error_errno(-EINVAL, "option --%s does not apply to '%s'", o->name,
                                                       command);
        }
        return 0;
}

int find_subcommand(const char *verb_name, const subcommand *commands, size_t n, int argc, char **argv)
{
        char names[256] = "", command[64];
        size_t k = 0, used = 0;

        while (k < n && strcmp(commands[k].name, argv[1]) != 0)
                k++;
        if (k == n) {
                for (size_t i = 0; i < n && used < sizeof(names); i++)
                        used += (size_t) snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                                                  commands[i].name);
                return log_error_errno(-EINVAL, "unknown %s command '%s' (%s)", verb_name, argv[1], names);
        }
        if (argc - 2 != commands[k].n_args)
                return log_error_errno(-EINVAL, "usage: clonectl %s %s%s", verb_name, argv[1], commands[k].args);
        snprintf(command, sizeof(command), "%s %s", verb_name, argv[1]);
        int r = check_options(command, commands[k].options);
        return r < 0 ? r : (int) k;
}

static int parse_count(const char *option, const char *value, uint64_t *ret)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
                return log_error_errno(-EINVAL, "invalid %s '%s': expected a count", option, value);
        *ret = v;
        return 0;
}

/* Says what getopt_long() refused (it returned '?' or ':'), in the one
 * line every other error takes: getopt's own messages have another shape. */
static int option_error(int c, char **argv)
{
        const char *given = argv[optind - 1];
        size_t len, matches = 0;

        if (optopt > 0 && optopt < 0x100) /* a short option, maybe in a cluster such as -vx */
                return log_error_errno(-EINVAL, "unknown option '-%c' (try 'clonectl --help')", optopt);
        len = strcspn(given, "=");
        if (c == ':')
                return log_error_errno(-EINVAL, "option '%.*s' needs a value", (int) len, given);
        if (optopt >= 0x100) /* a known long option that takes no value got one */
                return log_error_errno(-EINVAL, "option '%.*s' takes no value", (int) len, given);
        /* An abbreviation that fits more than one option is refused too. */
        for (const struct option *o = options; o->name; o++)
                if (len > 2 && strncmp(o->name, given + 2, len - 2) == 0)
                        matches++;
        if (matches > 1)
                return log_error_errno(-EINVAL, "option '%.*s' is ambiguous (try 'clonectl --help')", (int) len,
                                       given);
        return log_error_errno(-EINVAL, "unknown option '%.*s' (try 'clonectl --help')", (int) len, given);
}

static int parse_argv(int argc, char **argv)
{
        int c, r;

        opterr = 0; /* option_error() says it */
        while ((c = getopt_long(argc, argv, ":hv", options, NULL)) >= 0) {
                for (size_t i = 0; i < ELEMENTSOF(option_bits); i++)
                        if (option_bits[i].arg == c)
                                given_options |= option_bits[i].opt;
                switch (c) {
                case ARG_STORE:
                        if (!*optarg)
                                return log_error_errno(-EINVAL, "--store needs a directory, not ''");
                        arg_store = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_DATA:
                        arg_data = true;
                        break;
                case ARG_BLOCK_SIZE:
                        r = parse_size(optarg, &arg_block_size);
                        if (r >= 0 && arg_block_size == 0)
                                r = -EINVAL; /* 0 would mean "the default" */
                        if (r < 0)
                                return log_error_errno(r, "invalid --block-size '%s': expected a size such as 64K", optarg);
                        break;
                case ARG_LZ4HC: {
                        char *end;
                        long level = strtol(optarg, &end, 10);
                        if (*end || end == optarg || level < 1 || level > 12)
                                return log_error_errno(-EINVAL, "invalid --lz4hc '%s': expected a level from 1 to 12", optarg);
                        arg_lz4hc_level = (int) level;
                        break;
                }
                case ARG_FROM:
                        arg_from = optarg;
                        break;
                case ARG_LABEL:
                        arg_label = optarg;
                        break;
                case ARG_PRE:
                        arg_pre = optarg;
                        break;
                case ARG_POST:
                        arg_post = optarg;
                        break;
                case ARG_FULL:
                        arg_full = true;
                        break;
                case ARG_IGNORE_ERRORS:
                        arg_ignore_errors = true;
                        break;
                case ARG_THREADS: {
                        uint64_t v;
                        r = parse_count("--threads", optarg, &v);
                        if (r < 0)
                                return r;
                        if (v < 1 || v > 256)
                                return log_error_errno(-EINVAL, "invalid --threads '%s': expected 1 to 256", optarg);
                        arg_threads = (int) v;
                        break;
                }
                case ARG_KEEP_LAST:
                        r = parse_count("--keep-last", optarg, &arg_keep_last);
                        if (r < 0)
                                return r;
                        break;
                case ARG_KEEP_HOURLY:
                        r = parse_count("--keep-hourly", optarg, &arg_keep_hourly);
                        if (r < 0)
                                return r;
                        break;
                case ARG_KEEP_DAILY:
                        r = parse_count("--keep-daily", optarg, &arg_keep_daily);
                        if (r < 0)
                                return r;
                        break;
                case ARG_KEEP_WEEKLY:
                        r = parse_count("--keep-weekly", optarg, &arg_keep_weekly);
                        if (r < 0)
                                return r;
                        break;
                case ARG_KEEP_MONTHLY:
                        r = parse_count("--keep-monthly", optarg, &arg_keep_monthly);
                        if (r < 0)
                                return r;
                        break;
                case ARG_DRY_RUN:
                        arg_dry_run = true;
                        break;
                case ARG_PRUNE:
                        arg_prune = true;
                        break;
                case ARG_TO:
                        arg_to = optarg;
                        break;
                case ARG_FORCE:
                        arg_force = true;
                        break;
                case ARG_SLOT:
                        arg_slot = optarg;
                        break;
                case ARG_AT:
                        arg_at = optarg;
                        break;
                case ARG_KEEP_SLOT:
                        arg_keep_slot = true;
                        break;
                case 'v':
                        log_setup(NULL, LOG_LEVEL_DEBUG);
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("clonectl %s\n", PACKAGE_VERSION);
                        return 0;
                case '?':
                case ':':
                        return option_error(c, argv);
                default:
                        return -EINVAL;
                }
        }
        if (!arg_store)
                arg_store = getenv("CLONEFS_STORE");
        if (!arg_store || !*arg_store)
                arg_store = DEFAULT_STORE;
        return 1;
}

int open_store(unsigned flags, cs_store **ret_store)
{
        int r = cs_store_open(arg_store, flags, ret_store);

        switch (r) {
        case 0:
                return 0;
        case -ENOENT:
                return log_error_errno(r, "store %s does not exist (create it with 'clonectl --store %s init')",
                                       arg_store, arg_store);
        case -ENOTDIR:
                return log_error_errno(r, "store %s is not a directory", arg_store);
        case -EMEDIUMTYPE:
                return log_error_errno(r, "%s is not a clonefs store (no config file)", arg_store);
        case -EPROTONOSUPPORT:
                return log_error_errno(r, "store %s has a newer format than this clonectl understands (%d): upgrade clonefs",
                                       arg_store, CS_FORMAT_VERSION);
        case -EBADMSG:
                return log_error_errno(r, "store %s is damaged: its config or catalog cannot be read", arg_store);
        case -EBUSY:
                return log_error_errno(r, "store %s is busy: garbage collection is running", arg_store);
        default:
                return log_error_errno(r, "cannot open store %s: %m", arg_store);
        }
}

int main(int argc, char **argv)
{
        const verb *v = NULL;
        int r;

        log_setup(argv[0], LOG_LEVEL_INFO);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        if (optind >= argc) {
                log_error("no command given (try 'clonectl --help')");
                return EXIT_FAILURE;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, argv[optind]) == 0)
                        v = &verbs[i];
        if (!v) {
                log_error("unknown command '%s' (try 'clonectl --help')", argv[optind]);
                return EXIT_FAILURE;
        }
        int n = argc - optind - 1;
        if (n < v->min_args || n > v->max_args) {
                /* One line: the synopsis up to its description. */
                size_t len = strcspn(v->synopsis, "\n");
                const char *gap = strstr(v->synopsis, "  ");
                if (gap && (size_t) (gap - v->synopsis) < len)
                        len = (size_t) (gap - v->synopsis);
                if (v->options == OPT_PER_COMMAND)
                        log_error("wrong number of arguments to '%s' (its commands are in 'clonectl --help')", v->name);
                else
                        log_error("wrong number of arguments to '%s'; usage: clonectl %.*s", v->name, (int) len,
                                  v->synopsis);
                return EXIT_FAILURE;
        }
        if (v->options != OPT_PER_COMMAND && check_options(v->name, v->options) < 0)
                return EXIT_FAILURE;
        r = v->run(argc - optind, argv + optind);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
