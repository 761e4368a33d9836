/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl doctor: checks what clonefs needs on this machine and in the
 * store, and says how to fix what is missing.  One line per check, "ok",
 * "warning" or "error", and for anything not ok a "fix:" line; exit
 * status 1 when any check is an error.  Warnings are for what only some
 * uses need (user_allow_other, hole punching, a nearly full disk).
 *
 * The checks look, they change nothing: the sparse-file probe is an
 * unnamed file (O_TMPFILE, else a name unlinked at once) in the store's
 * directory, gone when it is closed.
 *
 * Library versions are those loaded now (cs_library_versions()), so a
 * machine upgraded or downgraded under the package shows here.  libfuse is
 * not linked into clonectl; it is looked up with dlopen().
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "clonectl.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"


/* Below these the store's file system gets a warning. */
#define LOW_SPACE_BYTES (1ull << 30)
#define LOW_SPACE_PERCENT 5

#define SPARSE_PROBE_OFFSET (16u << 20)

typedef enum status {
        STATUS_OK,
        STATUS_WARNING,
        STATUS_ERROR,
} status;

typedef struct report {
        unsigned counts[3];
        unsigned printed;
} report;

static void _printf_(5, 6) say(report *rep, status s, const char *check, const char *fix, const char *format, ...)
{
        static const char *const names[] = { "ok", "warning", "error" };
        char message[1024];
        va_list ap;

        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        rep->counts[s]++;
        if (arg_json) {
                printf("%s{\"check\":", rep->printed++ ? "," : "");
                json_write_string(stdout, check, strlen(check));
                printf(",\"status\":\"%s\",\"message\":", names[s]);
                json_write_string(stdout, message, strlen(message));
                printf(",\"fix\":");
                if (fix && s != STATUS_OK)
                        json_write_string(stdout, fix, strlen(fix));
                else
                        printf("null");
                printf("}");
                return;
        }
        printf("%-8s %s: %s\n", names[s], check, message);
        if (fix && s != STATUS_OK)
                printf("%-8s fix: %s\n", "", fix);
}

static void check_dev_fuse(report *rep)
{
        struct stat st;
        int fd;

        if (stat("/dev/fuse", &st) < 0) {
                say(rep, STATUS_ERROR, "/dev/fuse", "modprobe fuse; in a container, pass the device (docker run --device /dev/fuse)",
                    "missing: nothing can be mounted");
                return;
        }
        if (!S_ISCHR(st.st_mode)) {
                say(rep, STATUS_ERROR, "/dev/fuse", "rm /dev/fuse && mknod -m 0666 /dev/fuse c 10 229",
                    "not a character device");
                return;
        }
        fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                int r = negative_errno();
                say(rep, STATUS_ERROR, "/dev/fuse", "chmod 0666 /dev/fuse; in a container, allow the device (--device /dev/fuse)",
                    "cannot be opened: %s", strerror(-r));
                return;
        }
        close(fd);
        say(rep, STATUS_OK, "/dev/fuse", NULL, "character device %u:%u, opens read-write", major(st.st_rdev),
            minor(st.st_rdev));
}

/* The first of the directories that holds an executable NAME, or NULL. */
static const char *find_program(const char *name, const char *const *dirs, char *buf, size_t size)
{
        for (size_t i = 0; dirs[i]; i++) {
                snprintf(buf, size, "%s/%s", dirs[i], name);
                if (access(buf, X_OK) == 0)
                        return buf;
        }
        return NULL;
}

static void check_fuse_tools(report *rep)
{
        static const char *const bin[] = { "/usr/bin", "/bin", "/usr/local/bin", NULL };
        static const char *const sbin[] = { "/usr/sbin", "/sbin", "/usr/local/sbin", NULL };
        char fusermount[256], helper[256];
        struct stat st;

        if (!find_program("fusermount3", bin, fusermount, sizeof(fusermount))) {
                say(rep, STATUS_ERROR, "fusermount3", "apt install fuse3", "not installed: mounts cannot be undone by users");
                return;
        }
        if (stat(fusermount, &st) == 0 && (!(st.st_mode & S_ISUID) || st.st_uid != 0))
                say(rep, STATUS_WARNING, "fusermount3", "chmod u+s on it, as the fuse3 package installs it",
                    "%s is not setuid root: only root can mount", fusermount);
        else
                say(rep, STATUS_OK, "fusermount3", NULL, "%s", fusermount);
        if (!find_program("mount.fuse3", sbin, helper, sizeof(helper)))
                say(rep, STATUS_ERROR, "mount.fuse3", "apt install fuse3",
                    "not installed: mount -t fuse.clonefs and fstab lines cannot work");
        else
                say(rep, STATUS_OK, "mount.fuse3", NULL, "%s (mount -t fuse.clonefs and fstab work)", helper);
}

static void check_fuse_conf(report *rep)
{
        static const char *const path = "/etc/fuse.conf";
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[512];

        if (f)
                while (fgets(line, sizeof(line), f)) {
                        char *p = line + strspn(line, " \t");
                        size_t n = strcspn(p, " \t\r\n#");
                        if (n == strlen("user_allow_other") && strncmp(p, "user_allow_other", n) == 0) {
                                say(rep, STATUS_OK, path, NULL, "user_allow_other is set: any user may mount with -o allow_other");
                                return;
                        }
                }
        say(rep, STATUS_WARNING, path, "add a line \"user_allow_other\" to /etc/fuse.conf",
            "%s: only root may mount with -o allow_other (which containers and other users need)",
            f ? "no user_allow_other" : "missing");
}

/* The store's directory, or the nearest existing parent that "init"
 * would create it in: where the file system checks look. */
static int probe_dir(char *buf, size_t size)
{
        struct stat st;

        snprintf(buf, size, "%s", arg_store);
        for (;;) {
                if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode))
                        return 0;
                char *slash = strrchr(buf, '/');
                if (!slash) { /* a relative name: the current directory */
                        if (strcmp(buf, ".") == 0)
                                return -ENOENT;
                        snprintf(buf, size, ".");
                        continue;
                }
                if (slash == buf) {
                        buf[1] = 0;
                        continue;
                }
                *slash = 0;
        }
}

static bool check_store(report *rep)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        char fix[PATH_MAX + 64], size[FORMAT_BYTES_MAX];
        cs_stats s;
        int r;

        snprintf(fix, sizeof(fix), "clonectl --store %s init (or --store DIR, or CLONEFS_STORE=DIR)", arg_store);
        r = cs_store_open(arg_store, 0, &store);
        switch (r) {
        case 0:
                break;
        case -ENOENT:
                say(rep, STATUS_ERROR, "store", fix, "%s does not exist", arg_store);
                return false;
        case -EMEDIUMTYPE:
                say(rep, STATUS_ERROR, "store", fix, "%s is not a clonefs store (no config file)", arg_store);
                return false;
        case -EPROTONOSUPPORT:
                say(rep, STATUS_ERROR, "store", "upgrade clonefs", "%s has a newer format than this clonectl", arg_store);
                return false;
        case -ENOSPC:
                say(rep, STATUS_ERROR, "store", "free space there, or clonectl forget ... then clonectl gc",
                    "%s cannot be opened: its file system is full", arg_store);
                return false;
        case -EBADMSG:
                say(rep, STATUS_ERROR, "store", "restore the store from a backup",
                    "%s is damaged: its config or catalog cannot be read", arg_store);
                return false;
        default:
                say(rep, STATUS_ERROR, "store", "check the directory's owner and mode (clonefs stores are 0700)",
                    "%s cannot be opened: %s", arg_store, strerror(-r));
                return false;
        }
        r = cs_store_stats(store, &s);
        if (r < 0) {
                say(rep, STATUS_ERROR, "store", "clonectl verify", "%s: its catalog cannot be read: %s", arg_store,
                    strerror(-r));
                return false;
        }
        say(rep, STATUS_OK, "store", NULL, "%s: block size %s, %" PRIu64 " chunks in %" PRIu64 " packs", arg_store,
            format_bytes(size, s.block_size), s.chunks, s.packs);
        if (access(arg_store, W_OK) < 0)
                say(rep, STATUS_WARNING, "store", "run clonectl as the store's owner, or root",
                    "%s is not writable by this user: snapshot, clone and gc will fail", arg_store);
        return true;
}

static void check_space(report *rep, const char *dir)
{
        char free_s[FORMAT_BYTES_MAX], total_s[FORMAT_BYTES_MAX];
        struct statvfs sv;

        if (statvfs(dir, &sv) < 0) {
                int r = negative_errno();
                say(rep, STATUS_ERROR, "free space", NULL, "cannot statvfs %s: %s", dir, strerror(-r));
                return;
        }
        uint64_t avail = (uint64_t) sv.f_bavail * sv.f_frsize, total = (uint64_t) sv.f_blocks * sv.f_frsize;
        format_bytes(free_s, avail);
        format_bytes(total_s, total);
        if (total == 0) /* ramfs and the like report no size: no limit but memory */
                say(rep, STATUS_OK, "free space", NULL, "%s reports no size limit", dir);
        else if (avail == 0 || (sv.f_files > 0 && sv.f_favail == 0))
                say(rep, STATUS_ERROR, "free space", "free space there, or clonectl forget ... then clonectl gc",
                    "%s is full (%s free of %s%s): snapshots and clone writes fail with ENOSPC", dir, free_s, total_s,
                    avail ? ", no inodes" : "");
        else if (avail < LOW_SPACE_BYTES || (total && avail * 100 < total * LOW_SPACE_PERCENT))
                say(rep, STATUS_WARNING, "free space", "free space there, or clonectl forget ... then clonectl gc",
                    "%s has only %s free of %s", dir, free_s, total_s);
        else
                say(rep, STATUS_OK, "free space", NULL, "%s free of %s in %s", free_s, total_s, dir);
}

/* An unnamed scratch file in dir. */
static int open_probe(const char *dir)
{
        char path[PATH_MAX + 32];
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

        if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
                return fd >= 0 ? fd : negative_errno();
        snprintf(path, sizeof(path), "%s/.clonectl-doctor-XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        (void) unlink(path);
        return fd;
}

static void check_sparse(report *rep, const char *dir)
{
        _cleanup_close_ int fd = -1;
        char block[4096];
        struct stat st;

        fd = open_probe(dir);
        if (fd < 0) {
                say(rep, STATUS_WARNING, "sparse files", "run doctor as a user who may write there",
                    "cannot make a scratch file in %s: %s", dir, strerror(-fd));
                return;
        }
        memset(block, 'x', sizeof(block));
        if (pwrite(fd, block, sizeof(block), SPARSE_PROBE_OFFSET) != (ssize_t) sizeof(block) || fsync(fd) < 0 ||
            fstat(fd, &st) < 0) {
                int r = errno ? negative_errno() : -EIO;
                say(rep, r == -ENOSPC ? STATUS_ERROR : STATUS_WARNING, "sparse files",
                    r == -ENOSPC ? "free space there" : NULL, "cannot write a scratch file in %s: %s", dir,
                    strerror(-r));
                return;
        }
        /* A file system without holes allocates the 16 MiB before the block. */
        if ((uint64_t) st.st_blocks * 512 >= SPARSE_PROBE_OFFSET)
                say(rep, STATUS_ERROR, "sparse files", "put the store on ext4, XFS or btrfs",
                    "%s does not keep holes: clone delta files and restored holes take their full size", dir);
        else
                say(rep, STATUS_OK, "sparse files", NULL, "holes stay holes in %s", dir);

        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SPARSE_PROBE_OFFSET, sizeof(block)) < 0) {
                int r = negative_errno();
                say(rep, STATUS_WARNING, "punch hole", "put the store on ext4, XFS or btrfs",
                    "%s cannot punch holes (%s): clone files that shrink or zero blocks keep their space", dir,
                    strerror(-r));
        } else
                say(rep, STATUS_OK, "punch hole", NULL, "fallocate(PUNCH_HOLE) works in %s", dir);
}

/* A library as loaded now, against configure.ac's minimum. */
static void check_version(report *rep, const char *name, const char *version, bool too_old, const char *minimum,
                          const char *package)
{
        char fix[128];

        snprintf(fix, sizeof(fix), "apt install %s (clonefs needs %s %s or newer)", package, name, minimum);
        if (!version)
                say(rep, STATUS_ERROR, name, fix, "not found");
        else if (too_old)
                say(rep, STATUS_ERROR, name, fix, "%s is older than %s", version, minimum);
        else
                say(rep, STATUS_OK, name, NULL, "%s", version);
}

static void check_libraries(report *rep)
{
        cs_library_version libs[CS_LIBRARY_COUNT];
        int (*fuse_version)(void) = NULL;
        const char *(*fuse_pkgversion)(void) = NULL;
        void *fuse;

        cs_library_versions(libs);
        for (size_t i = 0; i < ELEMENTSOF(libs); i++)
                check_version(rep, libs[i].name, libs[i].version, libs[i].too_old, libs[i].minimum, libs[i].package);

        /* clonefs links libfuse; clonectl asks the same library. */
        fuse = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_LOCAL);
        if (fuse) {
                fuse_version = (int (*)(void)) dlsym(fuse, "fuse_version");
                fuse_pkgversion = (const char *(*) (void)) dlsym(fuse, "fuse_pkgversion");
        }
        check_version(rep, "libfuse", fuse_pkgversion ? fuse_pkgversion() : fuse_version ? "3.x" : NULL,
                      fuse_version && fuse_version() < 312, "3.12", "libfuse3-3");
        if (fuse)
                dlclose(fuse);
}

/* Mounts of this store whose daemon is gone answer ENOTCONN until they
 * are unmounted.  Only this store's mounts are looked at: a stat() of a
 * live but busy mount of someone else's could block. */
static void check_mounts(report *rep, const char *store_path)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096], source[PATH_MAX], mnt[PATH_MAX], fstype[64];
        unsigned n = 0;

        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                const char *dash = strstr(line, " - ");
                struct statvfs sv;
                /* id parent MAJ:MIN root MOUNTPOINT ... - FSTYPE SOURCE ... */
                if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
                    sscanf(dash + 3, "%63s %4095s", fstype, source) != 2)
                        continue;
                if (strcmp(fstype, "fuse.clonefs") != 0 || strcmp(source, store_path) != 0)
                        continue;
                n++;
                /* statfs always asks the daemon; a stat() may be answered from the
                 * kernel's attribute cache. */
                if (statvfs(mnt, &sv) < 0 && errno == ENOTCONN) {
                        char fix[PATH_MAX + 64];
                        snprintf(fix, sizeof(fix), "fusermount3 -u %s, then mount it again", mnt);
                        say(rep, STATUS_ERROR, "mounts", fix, "%s: its daemon is gone (ENOTCONN)", mnt);
                } else
                        say(rep, STATUS_OK, "mounts", NULL, "%s is served", mnt);
        }
        if (n == 0)
                say(rep, STATUS_OK, "mounts", NULL, "the store is not mounted");
}

int verb_doctor(int argc, char **argv)
{
        _cleanup_free_ char *store_path = NULL;
        char dir[PATH_MAX];
        report rep = {};

        if (arg_json)
                printf("{\"checks\":[");
        check_dev_fuse(&rep);
        check_fuse_tools(&rep);
        check_fuse_conf(&rep);
        if (check_store(&rep)) {
                store_path = realpath(arg_store, NULL);
                if (store_path)
                        check_mounts(&rep, store_path);
        }
        if (probe_dir(dir, sizeof(dir)) >= 0) {
                check_space(&rep, dir);
                check_sparse(&rep, dir);
        }
        check_libraries(&rep);

        if (arg_json)
                printf("],\"ok\":%u,\"warnings\":%u,\"errors\":%u}\n", rep.counts[STATUS_OK],
                       rep.counts[STATUS_WARNING], rep.counts[STATUS_ERROR]);
        else
                printf("%u ok, %u warnings, %u errors\n", rep.counts[STATUS_OK], rep.counts[STATUS_WARNING],
                       rep.counts[STATUS_ERROR]);
        fflush(stdout);
        if (rep.counts[STATUS_ERROR])
                return log_error_errno(-EIO, "%u of %u checks failed (see the fix: lines above)", rep.counts[STATUS_ERROR],
                                       rep.counts[STATUS_OK] + rep.counts[STATUS_WARNING] + rep.counts[STATUS_ERROR]);
        return 0;
}
