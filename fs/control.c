/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control socket of a clone a mount has open.  A mount holds its
 * clones exclusively, so "clonectl clone snapshot" and "clone export" of a
 * mounted clone ask the mount to fold it: the mount is the one process
 * that sees the clone's state whole.
 *
 * Protocol: one request line, one reply line.
 *   "fold\n"  ->  "ok <32 hex digits>\n" (the folded tree, committed to
 *                 the store, not yet a point) or "error <errno>\n"
 *   "fold added\n"  ->  "ok <32 hex digits> <bytes>\n": the same, and the
 *                 stored bytes the fold's puts added to the store, which
 *                 the caller records with the point; a mount from before
 *                 this request answers "error 22", and the caller falls
 *                 back to "fold"
 *   "reset TIMELINE POINT FORCE ROOT\n"  ->  "ok\n" or "error <errno>\n":
 *                 rewind or refresh to the tree ROOT (32 hex digits),
 *                 which is that point's or derived from it (a PostgreSQL
 *                 clone's recovery setup); FORCE 0 or 1
 *   "destroy FORCE\n"  ->  "ok\n" or "error <errno>\n"
 * reset and destroy refuse with ETXTBSY while files of the clone are open
 * in this mount, and destroy with EBUSY when the clone is the mount's
 * root (-o clone=NAME), unless FORCE is 1.  Afterwards the kernel's entries,
 * attributes and pages of every inode of the clone are invalidated, so
 * no reader sees the old state; handles still open (FORCE) get ENOENT.
 * The socket is abstract (cs_clone_control_address); only root and the
 * daemon's own uid are served (SO_PEERCRED).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "clonefs.h"
#include "util/macro.h"

static bool peer_allowed(int conn)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return false;
        return cred.uid == 0 || cred.uid == getuid();
}

static bool note_open(void *userdata, cfs_node *n)
{
        bool *open = userdata;
        *open = n->opens > 0;
        return !*open;
}

/* Whether a file or directory of the clone is open in this mount. */
static bool files_open(cfs_context *ctx, cfs_clone *cl)
{
        bool open = false;
        cfs_nodes_of_clone(ctx, cl, note_open, &open);
        return open;
}

/* What the kernel must forget of a clone: the kernel ids of its nodes,
 * and (parent id, name) of each name it knows them by. */
typedef struct stale {
        cfs_context *ctx;
        fuse_ino_t *inodes;
        fuse_ino_t *parents;
        char **names;
        size_t n_inodes, inodes_cap, n_names, names_cap;
        bool failed;
} stale;

static bool grow(void **array, size_t *cap, size_t n, size_t size)
{
        if (n < *cap)
                return true;
        size_t new_cap = MAX(*cap * 2, 64u);
        void *p = reallocarray(*array, new_cap, size);
        if (!p)
                return false;
        *array = p;
        *cap = new_cap;
        return true;
}

/* parents and names grow together: names_cap is the size of both. */
static bool note_name(void *userdata, fuse_ino_t parent, const char *name)
{
        stale *st = userdata;
        size_t cap = st->names_cap;
        char *copy;

        if (!grow((void **) &st->parents, &cap, st->n_names, sizeof(*st->parents)) ||
            !grow((void **) &st->names, &st->names_cap, st->n_names, sizeof(*st->names)) ||
            !(copy = strdup(name)))
                return false;
        st->parents[st->n_names] = parent;
        st->names[st->n_names++] = copy;
        return true;
}

static bool note_stale(void *userdata, cfs_node *n)
{
        stale *st = userdata;
        bool ok = grow((void **) &st->inodes, &st->inodes_cap, st->n_inodes, sizeof(*st->inodes));

        if (ok) {
                st->inodes[st->n_inodes++] = cfs_node_ino(st->ctx, n);
                ok = cfs_node_names(st->ctx, n, note_name, st);
        }
        st->failed = !ok;
        return ok;
}

/* Drops everything the kernel caches about the clone's inodes: the names
 * it knows (its dentries), and the attributes and pages of each inode.
 * The nodes' ids and names are copied under the table lock and the
 * kernel is told outside it, since the kernel may call back into us. */
static void invalidate_clone(cfs_context *ctx, cfs_clone *cl)
{
        stale st = { .ctx = ctx };

        cfs_nodes_of_clone(ctx, cl, note_stale, &st);
        if (st.failed)
                fuse_log(FUSE_LOG_ERR, "clonefs: clone %s: out of memory: the kernel may serve stale data for 1 s\n",
                         cs_clone_name(cl->clone));
        for (size_t i = 0; i < st.n_names; i++) {
                (void) fuse_lowlevel_notify_inval_entry(ctx->se, st.parents[i], st.names[i], strlen(st.names[i]));
                free(st.names[i]);
        }
        for (size_t i = 0; i < st.n_inodes; i++)
                (void) fuse_lowlevel_notify_inval_inode(ctx->se, st.inodes[i], 0, 0);
        free(st.inodes);
        free(st.parents);
        free(st.names);
}

/* "reset TIMELINE POINT FORCE ROOT" */
static int serve_reset(cfs_clone *cl, cs_store *writer, const char *args)
{
        char root[CS_CHUNK_ID_STRING_MAX];
        cs_point_info to = {};
        int force, end = 0, r;

        /* The widths are CS_TIMELINE_NAME_MAX, CS_POINT_NAME_MAX - 1 and
         * 2 * CS_CHUNK_ID_SIZE; a longer field is cut, and then what is
         * left of it is not the end of the line: refused. */
        if (sscanf(args, "%128s %63s %d %32s%n", to.timeline, to.name, &force, root, &end) != 4 ||
            (args[end] != '\n' && args[end] != '\0') || cs_chunk_id_parse(root, &to.root) < 0)
                return -EINVAL;
        if (!force && files_open(cl->ctx, cl))
                return -ETXTBSY;
        r = cs_clone_reset_open(cl->clone, writer, &to);
        invalidate_clone(cl->ctx, cl);
        return r;
}

/* "destroy FORCE": the clone leaves the list of the mount's clones, so
 * clones/NAME is looked up afresh (and not found); nodes that still point
 * at it keep a handle on its unlinked files until unmount. */
static int serve_destroy(cfs_clone *cl, cs_store *writer, const char *args)
{
        cfs_context *ctx = cl->ctx;
        int force, r;

        if (sscanf(args, "%d", &force) != 1)
                return -EINVAL;
        if (!force && files_open(ctx, cl))
                return -ETXTBSY;
        /* A mount of this clone alone (-o clone=NAME, say bound into a
         * container) is in use for as long as it is mounted. */
        if (!force && ctx->root.clone == cl)
                return -EBUSY;
        pthread_mutex_lock(&ctx->clones_lock);
        r = cs_clone_destroy_open(cl->clone, writer);
        if (r >= 0) {
                for (cfs_clone **p = &ctx->clones; *p; p = &(*p)->next)
                        if (*p == cl) {
                                *p = cl->next;
                                break;
                        }
                cl->next = ctx->destroyed;
                ctx->destroyed = cl;
                cl->destroyed = true;
        }
        pthread_mutex_unlock(&ctx->clones_lock);
        invalidate_clone(ctx, cl);
        return r;
}

static void serve(cfs_clone *cl, int conn)
{
        struct timeval timeout = { .tv_sec = 10 };
        char request[300] = "", reply[80] = "ok\n";
        cs_store *writer = NULL;
        cs_chunk_id tree;
        ssize_t n;
        int r = 0;

        (void) setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        if (!peer_allowed(conn))
                r = -EPERM;
        else if ((n = read(conn, request, sizeof(request) - 1)) <= 0 || !strchr(request, '\n'))
                r = -EINVAL;
        /* A write handle for as long as the operation takes: the chunks a
         * fold puts are committed before the reply, and the caller roots
         * them; a reset and a destroy change the catalog. */
        if (r >= 0)
                r = cs_store_open(cl->ctx->store_path, CS_OPEN_WRITE | CS_OPEN_NOWAIT, &writer);
        if (r < 0)
                ;
        else if (strcmp(request, "fold\n") == 0 || strcmp(request, "fold added\n") == 0) {
                r = cs_clone_fold_open(cl->clone, writer, &tree);
                if (r >= 0) {
                        char hex[CS_CHUNK_ID_STRING_MAX];
                        cs_put_counters added;
                        /* writer is this request's own handle, so its
                         * counters are what the fold put and nothing else. */
                        cs_store_put_counters(writer, &added);
                        if (request[4] == ' ')
                                snprintf(reply, sizeof(reply), "ok %s %" PRIu64 "\n", cs_chunk_id_format(&tree, hex),
                                         added.stored_bytes);
                        else
                                snprintf(reply, sizeof(reply), "ok %s\n", cs_chunk_id_format(&tree, hex));
                }
        } else if (strncmp(request, "reset ", 6) == 0)
                r = serve_reset(cl, writer, request + 6);
        else if (strncmp(request, "destroy ", 8) == 0)
                r = serve_destroy(cl, writer, request + 8);
        else
                r = -EINVAL;
        cs_store_unref(writer);
        if (r < 0)
                snprintf(reply, sizeof(reply), "error %d\n", -r);
        (void) !write(conn, reply, strlen(reply));
}

static void *control_main(void *userdata)
{
        cfs_clone *cl = userdata;

        for (;;) {
                int conn = accept4(cl->control_fd, NULL, NULL, SOCK_CLOEXEC);
                if (conn < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        break; /* shut down */
                }
                serve(cl, conn);
                close(conn);
                if (cl->destroyed) {
                        /* Frees the socket's name for a new clone of the same name. */
                        cl->control_fd = safe_close(cl->control_fd);
                        break;
                }
        }
        return NULL;
}

int cfs_control_start(cfs_context *ctx, cfs_clone *cl)
{
        struct sockaddr_un addr;
        socklen_t len;
        int r;

        cl->ctx = ctx;
        cl->control_fd = -1;
        r = cs_clone_control_address(ctx->store, cs_clone_name(cl->clone), &addr, &len);
        if (r < 0)
                return r;
        cl->control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cl->control_fd < 0)
                return negative_errno();
        if (bind(cl->control_fd, (struct sockaddr *) &addr, len) < 0 || listen(cl->control_fd, 4) < 0) {
                r = negative_errno();
                cl->control_fd = safe_close(cl->control_fd);
                return r;
        }
        r = pthread_create(&cl->control_thread, NULL, control_main, cl);
        if (r != 0) {
                cl->control_fd = safe_close(cl->control_fd);
                return -r;
        }
        cl->control_running = true;
        return 0;
}

void cfs_control_stop(cfs_clone *cl)
{
        if (!cl->control_running)
                return;
        (void) shutdown(cl->control_fd, SHUT_RDWR);
        pthread_join(cl->control_thread, NULL);
        cl->control_fd = safe_close(cl->control_fd);
        cl->control_running = false;
}
