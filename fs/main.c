/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonefs STORE MOUNTPOINT [-f] [-o OPTIONS]: options, the store, the FUSE
 * session and daemonizing.  Everything that can fail is checked before
 * the daemon detaches, so a bad store or point is a message on the
 * terminal and a non-zero exit, not a dead mount.
 *
 * Also works as "mount -t fuse.clonefs STORE MNT -o ..." and from fstab
 * ("STORE MNT fuse.clonefs defaults,allow_other 0 0"): mount.fuse3 runs
 * this program with the same arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "clonefs.h"
#include "util/macro.h"
#include "util/size.h"

/* Eight prefetch windows.  The kernel keeps what was read (keep_cache),
 * so this only has to carry blocks from the prefetch to the reader and
 * serve a block's other pages to readers of parts of it; a larger cache
 * costs a page fault per 4 KiB the first time it fills, which made a
 * cold 1 GiB read 1.6x slower at 256M (docs/BENCHMARKS.md). */
#define DEFAULT_CACHE_SIZE (64u * 1024 * 1024)
#define DEFAULT_PREFETCH_KIB 8192
#define MAX_PREFETCH_KIB (1024 * 1024)

enum {
        KEY_DEBUG,
        KEY_HELP,
        KEY_VERSION,
};

#define CFS_OPT(t, p) { t, offsetof(cfs_options, p), 1 }
static const struct fuse_opt cfs_opt_spec[] = {
        CFS_OPT("point=%s", point),
        CFS_OPT("clone=%s", clone),
        CFS_OPT("cache_size=%s", cache_size),
        CFS_OPT("prefetch_kib=%s", prefetch_kib_arg),
        FUSE_OPT_KEY("debug", KEY_DEBUG),
        FUSE_OPT_KEY("-d", KEY_DEBUG),
        FUSE_OPT_END,
};

/* fuse_opt_parse() stores options at offsets into its data pointer, so
 * the options come first. */
typedef struct parse_state {
        cfs_options opts;
        char *store;
        bool debug;
} parse_state;

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
        parse_state *ps = data;

        switch (key) {
        case KEY_DEBUG:
                ps->debug = true;
                return 1; /* libfuse prints the protocol too */
        case FUSE_OPT_KEY_NONOPT:
                if (!ps->store) {
                        ps->store = strdup(arg);
                        return ps->store ? 0 : -1;
                }
                return 1; /* the mountpoint, for fuse_parse_cmdline() */
        default:
                return 1;
        }
}

static void usage(const char *program)
{
        printf("Usage: %s STORE MOUNTPOINT [-f] [-o OPTION[,OPTION...]]\n\n"
               "Mounts a clonefs store: timelines/<timeline>/<point>/ read-only,\n"
               "clones/<clone>/ writable.\n\n"
               "Options:\n"
               "  -f                      stay in the foreground\n"
               "  -o point=TIMELINE@POINT mount one point as the root\n"
               "  -o clone=NAME           mount one clone, writable, as the root\n"
               "  -o cache_size=SIZE      decompressed data kept in memory (default 64M)\n"
               "  -o prefetch_kib=N       read ahead of sequential readers, 0 to 1048576 (default 8192)\n"
               "  -o allow_other          let other users in (file permissions still apply)\n"
               "  -o debug                log every operation\n",
               program);
}

/* Logs to syslog once detached: stderr then goes nowhere. */
static void log_to_syslog(enum fuse_log_level level, const char *fmt, va_list ap)
{
        vsyslog((int) level, fmt, ap);
}

/* The mount's bdi is "MAJ:MIN" of its st_dev, read from mountinfo: a stat()
 * of the mountpoint would ask our own daemon, which is not serving yet. */
static void set_readahead(const char *mountpoint, unsigned kib)
{
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], dev[64] = "", path[PATH_MAX];
        unsigned major, minor;

        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char mnt[PATH_MAX];
                /* id parent MAJ:MIN root mountpoint ... */
                if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &major, &minor, mnt) != 3)
                        continue;
                if (strcmp(mnt, mountpoint) == 0)
                        snprintf(dev, sizeof(dev), "%u:%u", major, minor); /* the last one wins */
        }
        fclose(f);
        if (!dev[0])
                return;
        snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
        f = fopen(path, "we");
        if (!f)
                return; /* not root: the kernel's default stays */
        fprintf(f, "%u\n", kib);
        fclose(f);
}

static int open_store(const char *path, cs_store **ret)
{
        int r = cs_store_open(path, 0, ret);

        switch (r) {
        case 0:
                return 0;
        case -ENOENT:
                fprintf(stderr, "clonefs: store %s does not exist\n", path);
                break;
        case -ENOTDIR:
                fprintf(stderr, "clonefs: store %s is not a directory\n", path);
                break;
        case -EMEDIUMTYPE:
                fprintf(stderr, "clonefs: %s is not a clonefs store (no config file)\n", path);
                break;
        case -EPROTONOSUPPORT:
                fprintf(stderr, "clonefs: store %s has a newer format than this clonefs understands\n", path);
                break;
        default:
                fprintf(stderr, "clonefs: cannot open store %s: %s\n", path, strerror(-r));
        }
        return r;
}

static int find_point_option(cs_store *store, const char *spec, cs_point_info *ret)
{
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        const char *at = strchr(spec, '@');
        int r;

        if (!at || at == spec || !at[1] || (size_t) (at - spec) > CS_TIMELINE_NAME_MAX) {
                fprintf(stderr, "clonefs: -o point=%s: expected TIMELINE@POINT\n", spec);
                return -EINVAL;
        }
        memcpy(timeline, spec, (size_t) (at - spec));
        timeline[at - spec] = 0;
        r = cs_point_find(store, timeline, at + 1, ret);
        if (r < 0)
                fprintf(stderr, "clonefs: -o point=%s: %s\n", spec,
                        r == -ENOENT ? "no such point" : strerror(-r));
        return r;
}

/* Checks what the mount will need, in one line on stderr if it fails. */
static int check_store(const char *path, const cfs_options *opts)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        cs_point_info point;
        int r;

        r = open_store(path, &store);
        if (r < 0)
                return r;
        if (opts->point)
                return find_point_option(store, opts->point, &point);
        if (opts->clone) {
                cs_clone *c = NULL;
                r = cs_clone_open(store, opts->clone, &c);
                cs_clone_close(c);
                if (r < 0)
                        fprintf(stderr, "clonefs: -o clone=%s: %s\n", opts->clone,
                                r == -ENOENT   ? "no such clone"
                                : r == -EBUSY  ? "the clone is in use by another mount"
                                : r == -EINVAL ? "invalid clone name"
                                               : strerror(-r));
                return r;
        }
        return 0;
}

/* A whole number of KiB, 0 to MAX_PREFETCH_KIB, in decimal. */
static int parse_kib(const char *s, unsigned *ret)
{
        unsigned long v = 0;

        if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 7)
                return -EINVAL;
        v = strtoul(s, NULL, 10);
        if (v > MAX_PREFETCH_KIB)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

/* Opens the store for the daemon and builds the mount's root. */
static int open_root(cfs_context *ctx, uint8_t **ret_zeros)
{
        cs_point_info point;
        int r;

        r = cs_store_open(ctx->store_path, 0, &ctx->store);
        if (r < 0)
                return r;
        ctx->block_size = cs_store_block_size(ctx->store);
        ctx->prefetch_blocks = MAX((size_t) ctx->opts.prefetch_kib * 1024 / ctx->block_size, 1u);
        *ret_zeros = calloc(1, ctx->block_size);
        if (!*ret_zeros)
                return -ENOMEM;
        ctx->zeros = *ret_zeros;
        if (ctx->opts.point) {
                const char *at = strchr(ctx->opts.point, '@');
                char timeline[CS_TIMELINE_NAME_MAX + 1];
                snprintf(timeline, sizeof(timeline), "%.*s", (int) (at - ctx->opts.point), ctx->opts.point);
                r = cs_point_find(ctx->store, timeline, at + 1, &point);
                if (r < 0)
                        return r;
        }
        r = cfs_nodes_init(ctx, ctx->opts.point ? &point : NULL);
        if (r >= 0 && ctx->opts.clone)
                r = cfs_nodes_root_clone(ctx, ctx->opts.clone);
        return r;
}

int main(int argc, char **argv)
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct fuse_cmdline_opts cmd = {};
        struct fuse_loop_config *loop = NULL;
        struct fuse_session *se = NULL;
        cfs_context ctx = {};
        parse_state ps = {};
        uint64_t cache_size = DEFAULT_CACHE_SIZE;
        char *store_path = NULL, fsname[PATH_MAX + 16];
        struct stat st;
        uint8_t *zeros = NULL;
        int status = EXIT_FAILURE, r;

        if (fuse_opt_parse(&args, &ps, cfs_opt_spec, opt_proc) < 0)
                goto out1;
        ctx.opts = ps.opts;
        if (fuse_parse_cmdline(&args, &cmd) != 0)
                goto out1;
        if (cmd.show_help) {
                usage(argv[0]);
                fuse_lowlevel_help();
                status = EXIT_SUCCESS;
                goto out1;
        }
        if (cmd.show_version) {
                printf("clonefs %s\n", PACKAGE_VERSION);
                fuse_lowlevel_version();
                status = EXIT_SUCCESS;
                goto out1;
        }
        if (!ps.store || !cmd.mountpoint) {
                fprintf(stderr, "clonefs: usage: %s STORE MOUNTPOINT [-f] [-o OPTIONS] (try --help)\n", argv[0]);
                goto out1;
        }
        store_path = realpath(ps.store, NULL);
        if (!store_path) {
                if (errno == ENOENT)
                        fprintf(stderr, "clonefs: store %s does not exist\n", ps.store);
                else
                        fprintf(stderr, "clonefs: store %s: %s\n", ps.store, strerror(errno));
                goto out1;
        }
        /* mount.fuse3 -o drop_privileges hands over an open /dev/fuse as
         * /dev/fd/N: only a path is checked. */
        if (strncmp(cmd.mountpoint, "/dev/fd/", 8) != 0) {
                r = stat(cmd.mountpoint, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
                if (r < 0) {
                        fprintf(stderr, "clonefs: mountpoint %s: %s\n", cmd.mountpoint, strerror(-r));
                        goto out1;
                }
        }
        ctx.opts.prefetch_kib = DEFAULT_PREFETCH_KIB;
        if (ctx.opts.prefetch_kib_arg && parse_kib(ctx.opts.prefetch_kib_arg, &ctx.opts.prefetch_kib) < 0) {
                fprintf(stderr, "clonefs: -o prefetch_kib=%s: expected a whole number of KiB from 0 to %d\n",
                        ctx.opts.prefetch_kib_arg, MAX_PREFETCH_KIB);
                goto out1;
        }
        if (ctx.opts.cache_size && (parse_size(ctx.opts.cache_size, &cache_size) < 0 || cache_size < (1u << 20))) {
                fprintf(stderr, "clonefs: -o cache_size=%s: expected a size of at least 1M, such as 512M\n",
                        ctx.opts.cache_size);
                goto out1;
        }

        /* Everything that can fail is checked before we detach, on a handle
         * of its own: SQLite connections must not cross the fork, so the
         * daemon opens the store again afterwards (open_root()). */
        if (ctx.opts.point && ctx.opts.clone) {
                fprintf(stderr, "clonefs: -o point and -o clone exclude each other\n");
                goto out1;
        }
        r = check_store(store_path, &ctx.opts);
        if (r < 0)
                goto out1;
        ctx.store_path = store_path;
        ctx.debug = ps.debug;

        /* Permissions are the kernel's to enforce, for every uid. */
        if (fuse_opt_add_arg(&args, "-odefault_permissions") < 0 || fuse_opt_add_arg(&args, "-osubtype=clonefs") < 0)
                goto out3;
        if (!strchr(store_path, ',')) {
                snprintf(fsname, sizeof(fsname), "-ofsname=%s", store_path);
                if (fuse_opt_add_arg(&args, fsname) < 0)
                        goto out3;
        }

        se = fuse_session_new(&args, &cfs_ops, sizeof(cfs_ops), &ctx);
        if (!se)
                goto out3;
        ctx.se = se;
        if (fuse_set_signal_handlers(se) != 0)
                goto out4;
        if (fuse_session_mount(se, cmd.mountpoint) != 0) {
                fprintf(stderr, "clonefs: cannot mount on %s\n", cmd.mountpoint);
                goto out5;
        }
        set_readahead(cmd.mountpoint, 1024);

        if (fuse_daemonize(cmd.foreground) != 0)
                goto out6;
        if (!cmd.foreground) {
                openlog("clonefs", LOG_PID, LOG_DAEMON);
                fuse_set_log_func(log_to_syslog);
        }
        r = open_root(&ctx, &zeros);
        if (r < 0) {
                fuse_log(FUSE_LOG_ERR, "clonefs: cannot set up the mount: %s\n", strerror(-r));
                goto out6;
        }
        /* Threads only now: fuse_daemonize() forks. */
        r = cfs_cache_new(ctx.store, (size_t) cache_size, 2, &ctx.cache);
        if (r < 0) {
                fuse_log(FUSE_LOG_ERR, "clonefs: cannot set up the block cache: %s\n", strerror(-r));
                goto out6;
        }

        if (cmd.singlethread) {
                r = fuse_session_loop(se);
        } else {
                loop = fuse_loop_cfg_create();
                if (!loop)
                        goto out7;
                fuse_loop_cfg_set_clone_fd(loop, cmd.clone_fd);
                fuse_loop_cfg_set_max_threads(loop, 16);
                fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads == UINT_MAX ? 10 : cmd.max_idle_threads);
                r = fuse_session_loop_mt(se, loop);
        }
        status = r == 0 ? EXIT_SUCCESS : EXIT_FAILURE;

out7:
        fuse_loop_cfg_destroy(loop);
        ctx.cache = cfs_cache_free(ctx.cache);
out6:
        fuse_session_unmount(se);
out5:
        fuse_remove_signal_handlers(se);
out4:
        fuse_session_destroy(se);
out3:
        if (ctx.store) {
                cfs_nodes_done(&ctx);
                cs_store_unref(ctx.store);
        }
        free(zeros);
out1:
        free(store_path);
        free(ps.store);
        free(cmd.mountpoint);
        free(ctx.opts.point);
        free(ctx.opts.clone);
        free(ctx.opts.cache_size);
        free(ctx.opts.prefetch_kib_arg);
        fuse_opt_free_args(&args);
        return status;
}
