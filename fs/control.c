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
 * The socket is abstract (cs_clone_control_address); only root and the
 * daemon's own uid are served (SO_PEERCRED).
 */
#include <errno.h>
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

static void serve(cfs_clone *cl, int conn)
{
        struct timeval timeout = { .tv_sec = 10 };
        char request[64] = "", reply[80];
        cs_store *writer = NULL;
        cs_chunk_id tree;
        ssize_t n;
        int r;

        (void) setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        if (!peer_allowed(conn))
                r = -EPERM;
        else {
                n = read(conn, request, sizeof(request) - 1);
                r = n > 0 && strncmp(request, "fold\n", 5) == 0 ? 0 : -EINVAL;
        }
        /* A write handle for as long as the fold takes: the chunks it puts
         * are committed before the reply, and the caller roots them. */
        if (r >= 0)
                r = cs_store_open(cl->ctx->store_path, CS_OPEN_WRITE | CS_OPEN_NOWAIT, &writer);
        if (r >= 0)
                r = cs_clone_fold_open(cl->clone, writer, &tree);
        cs_store_unref(writer);
        if (r >= 0) {
                char hex[CS_CHUNK_ID_STRING_MAX];
                snprintf(reply, sizeof(reply), "ok %s\n", cs_chunk_id_format(&tree, hex));
        } else {
                snprintf(reply, sizeof(reply), "error %d\n", -r);
        }
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
