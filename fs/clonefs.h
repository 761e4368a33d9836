/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonefs, the FUSE daemon: the daemon's context and the interfaces
 * between its modules.
 *
 *   main.c   options, store, session, daemonizing
 *   ops.c    the fuse_lowlevel_ops table: translation only
 *   inode.c  nodes: what every inode number stands for, lookups, refcounts
 *   cache.c  decompressed blocks shared by all readers, and prefetch
 *
 * The daemon never touches SQLite or LZ4: everything goes through
 * chunkstore.h.
 */
#ifndef CLONEFS_H
#define CLONEFS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "chunkstore.h"

/* --- cache.c ----------------------------------------------------------- */

typedef struct cfs_cache cfs_cache;

/* A decompressed block, shared and reference-counted. */
typedef struct cfs_block {
        const uint8_t *data;
        size_t size;
} cfs_block;

int cfs_cache_new(cs_store *store, size_t capacity, int prefetch_threads, cfs_cache **ret);
cfs_cache *cfs_cache_free(cfs_cache *c);
/* Returns the block with chunk id *id, reading it if needed; one reader
 * per block however many threads ask.  Release it when done. */
int cfs_cache_acquire(cfs_cache *c, const cs_chunk_id *id, const cfs_block **ret);
void cfs_cache_release(cfs_cache *c, const cfs_block *b);
/* Asks the prefetch threads to load these blocks; never blocks (a full
 * queue drops the request). */
void cfs_cache_prefetch(cfs_cache *c, const cs_chunk_id *ids, size_t n);

/* --- inode.c ----------------------------------------------------------- */

typedef enum cfs_node_kind {
        CFS_NODE_ROOT,      /* the mount's root: "timelines", "clones" */
        CFS_NODE_TIMELINES, /* timelines/: one directory per timeline */
        CFS_NODE_TIMELINE,  /* timelines/T/: points, "latest" and labels */
        CFS_NODE_LINK,      /* timelines/T/latest and label symlinks */
        CFS_NODE_POINT,     /* timelines/T/P/: a point's root directory */
        CFS_NODE_ENTRY,     /* anything inside a point */
        CFS_NODE_CLONES,    /* clones/: one directory per clone */
        CFS_NODE_CLONE,     /* an inode of a clone, its root included: writable */
} cfs_node_kind;

/* A clone opened by the mount: kept open (and so locked against other
 * users) until unmount. */
typedef struct cfs_context cfs_context;

typedef struct cfs_clone {
        cs_clone *clone;
        uint64_t key;
        struct cfs_clone *next;
        /* control.c: the clone's control socket */
        cfs_context *ctx;
        int control_fd;
        pthread_t control_thread;
        bool control_running;
        bool destroyed; /* under the context's clones_lock */
} cfs_clone;

/* A point in use by the mount: pinned in the store while any node of it lives. */
typedef struct cfs_point {
        int refs; /* under the context's table lock */
        uint64_t key;
        cs_chunk_id root;
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        char name[CS_POINT_NAME_MAX];
        cs_entry root_entry;
        cs_dir *keep; /* owns root_entry's storage */
        uint64_t pin;
} cfs_point;

/* Another name the kernel knows a node by: a hard link's, or the one a
 * rename gave it.  The parent is kept by its table key, not its address:
 * the parent node may be freed (and its address reused) meanwhile. */
typedef struct cfs_alias cfs_alias;
struct cfs_alias {
        cfs_alias *next;
        uint64_t parent_key;
        char name[];
};

typedef struct cfs_node cfs_node;
struct cfs_node {
        cfs_node_kind kind;
        uint64_t key;     /* hash of the node's path: the table key */
        uint64_t ino;     /* st_ino: stable across mounts; hardlinks share it */
        uint64_t nlookup; /* the kernel's lookup count */
        uint64_t refs;    /* children and open handles */
        cfs_node *parent;
        char *name;
        cfs_point *point; /* POINT and ENTRY */
        cs_entry entry;   /* POINT (the root) and ENTRY: a deep copy */
        void *entry_storage;
        char *target;     /* LINK */
        cfs_clone *clone; /* CLONE */
        uint64_t cino;    /* CLONE: the clone's inode number */
        uint64_t opens;   /* CLONE: open handles, under table_lock */
        /* CLONE: the names it was looked up by or renamed to besides
         * parent and name, newest first, under table_lock, so that a
         * rewind can make the kernel forget every one (cfs_node_names). */
        cfs_alias *aliases;

        pthread_mutex_t dir_lock;
        cs_dir *dir;      /* directories in points, loaded on first use */

        cfs_node *hash_next;
};

typedef struct cfs_options {
        char *point;     /* -o point=TIMELINE@POINT */
        char *clone;     /* -o clone=NAME */
        char *cache_size;
        int debug;
        char *prefetch_kib_arg; /* -o prefetch_kib= as given */
        unsigned prefetch_kib;  /* ... and checked */
} cfs_options;

struct cfs_context {
        cs_store *store;
        const char *store_path;
        uint32_t block_size;
        cfs_options opts;
        bool debug;
        cfs_cache *cache;
        size_t prefetch_blocks;
        const uint8_t *zeros; /* one block of zeros, for holes */

        struct fuse_session *se; /* for invalidations outside requests */

        pthread_mutex_t clones_lock;
        cfs_clone *clones;
        cfs_clone *destroyed; /* destroyed while mounted: nodes may still point at them */

        pthread_mutex_t table_lock;
        cfs_node **table;
        size_t table_size, n_nodes;
        cfs_node root;
};

static inline cfs_context *cfs_ctx(fuse_req_t req)
{
        return fuse_req_userdata(req);
}

/* Sets up the node table; with point, that point is the mount's root
 * (-o point=T@P). */
int cfs_nodes_init(cfs_context *ctx, const cs_point_info *point);
void cfs_nodes_done(cfs_context *ctx);
/* The node of a FUSE inode number (borrowed: valid while the kernel holds it). */
cfs_node *cfs_node_get(cfs_context *ctx, fuse_ino_t ino);
fuse_ino_t cfs_node_ino(cfs_context *ctx, const cfs_node *n);
/* Calls fn with (parent's kernel id, name) for each name the kernel may
 * know n by, until fn returns false; with table_lock held (as in the
 * callback of cfs_nodes_of_clone).  Returns false if fn did. */
bool cfs_node_names(cfs_context *ctx, const cfs_node *n,
                    bool (*fn)(void *userdata, fuse_ino_t parent, const char *name), void *userdata);
/* After a rename in a clone: the node now at (parent, name), if the
 * kernel has one, gets that name among its aliases. */
void cfs_node_renamed(cfs_context *ctx, cfs_node *parent, const char *name);
/* Finds or makes the child `name` of parent, counting one kernel lookup. */
int cfs_node_lookup(cfs_context *ctx, cfs_node *parent, const char *name, cfs_node **ret);
void cfs_node_forget(cfs_context *ctx, cfs_node *n, uint64_t nlookup);
void cfs_node_ref(cfs_context *ctx, cfs_node *n);
void cfs_node_unref(cfs_context *ctx, cfs_node *n);
/* Fills st for n. */
void cfs_node_stat(cfs_context *ctx, const cfs_node *n, struct stat *st);
/* True for nodes inside points: immutable, cached by the kernel for long. */
bool cfs_node_immutable(const cfs_node *n);
/* The loaded directory of a directory node inside a point. */
int cfs_node_dir(cfs_context *ctx, cfs_node *n, const cs_dir **ret);
/* "timelines/T/P/path" of n into buf, escaped for a log line. */
const char *cfs_node_path(const cfs_node *n, char *buf, size_t size);

/* A directory listing of any node: calls add for each entry from index
 * first on; add returns false when the reply buffer is full. */
typedef bool (*cfs_dirent_fn)(void *userdata, const char *name, size_t name_len, uint64_t ino,
                              uint32_t mode, off_t next);
int cfs_node_list(cfs_context *ctx, cfs_node *n, off_t first, cfs_dirent_fn add, void *userdata);

/* Opens (once) the clone called name. */
int cfs_clone_get(cfs_context *ctx, const char *name, cfs_clone **ret);
void cfs_clones_close(cfs_context *ctx);
/* Calls fn for every node of the clone (the mount's root included) under
 * the table lock, until it returns false.  fn must not take that lock. */
void cfs_nodes_of_clone(cfs_context *ctx, const cfs_clone *cl, bool (*fn)(void *userdata, cfs_node *n),
                        void *userdata);
/* The node of a clone inode, counting one kernel lookup. */
int cfs_node_for_clone(cfs_context *ctx, cfs_node *parent, cfs_clone *cl, const cs_clone_attr *attr,
                       const char *name, cfs_node **ret);
/* Makes the mount's root a clone's root (-o clone=NAME). */
int cfs_nodes_root_clone(cfs_context *ctx, const char *name);
void cfs_stat_from_clone(cfs_context *ctx, const cs_clone_attr *a, struct stat *st);

/* --- control.c ------------------------------------------------------------- */

/* Serves "fold" requests for a clone the mount has open (clonectl clone
 * snapshot and export of a mounted clone). */
int cfs_control_start(cfs_context *ctx, cfs_clone *cl);
void cfs_control_stop(cfs_clone *cl);

/* --- ops.c, ops-clone.c ----------------------------------------------------- */

extern const struct fuse_lowlevel_ops cfs_ops;

#endif
