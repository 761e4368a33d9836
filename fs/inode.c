/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Nodes: what each FUSE inode stands for.
 *
 * Design notes
 *
 *  1. The FUSE inode number of a node is its address (the root's is 1); the
 *     st_ino userspace sees is a 64-bit hash of the node's path (for a
 *     point: of its timeline, name and root chunk), so it is the same on
 *     every mount and never shared by two paths.  Hardlinked files of one
 *     point share st_ino: it hashes the point and the link group.
 *  2. A node lives while the kernel holds lookups on it (nlookup) or while
 *     something of ours holds it (refs: each child holds its parent, each
 *     open handle its node).  Both counts are under table_lock; a node is
 *     freed when both reach zero, then its parent is released.
 *  3. The virtual levels (timelines/, timelines/T/) are read from the
 *     catalog on every lookup and listing and given one-second timeouts,
 *     so points added or forgotten show within a second without remount.
 *     Everything inside a point is immutable and cached for a day.
 *  4. A point node pins its tree in the store (cs_store_pin), so gc keeps
 *     its chunks even if the point is forgotten while files are open.
 *     The pin is set before the point is checked to still exist.
 *  5. Work that can block (catalog queries, loading a directory) happens
 *     outside table_lock; a node made twice concurrently loses the race
 *     and is freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clonefs.h"
#include "util/macro.h"

#define TIMELINES_NAME "timelines"
#define CLONES_NAME "clones"
#define KEY_TIMELINES 2
#define KEY_CLONES 3

/* --- Keys ------------------------------------------------------------- */

static uint64_t finalize(uint64_t x)
{
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 31;
        return x;
}

static uint64_t mix(uint64_t seed, const void *data, size_t n)
{
        const uint8_t *p = data;
        uint64_t h = seed ^ 0xcbf29ce484222325ull;

        for (size_t i = 0; i < n; i++) {
                h ^= p[i];
                h *= 0x100000001b3ull;
        }
        return finalize(h ^ n);
}

/* Inode numbers 0 and 1 mean "none" and the root. */
static uint64_t as_ino(uint64_t key)
{
        return key < 2 ? key + 2 : key;
}

static uint64_t child_key(uint64_t parent, const char *name, size_t len)
{
        return mix(parent, name, len);
}

static uint64_t clone_node_key(const cfs_clone *cl, uint64_t cino)
{
        return mix(cl->key, &cino, sizeof(cino));
}

static uint64_t entry_ino(const cfs_node *parent, const cs_entry *e)
{
        uint64_t point_key = parent->point ? parent->point->key : parent->key;

        if (S_ISREG(e->mode) && e->link_group) {
                uint64_t g[2] = { 0x6c696e6b, e->link_group };
                return as_ino(mix(point_key, g, sizeof(g)));
        }
        return as_ino(child_key(parent->key, e->name, e->name_len));
}

/* --- The table -------------------------------------------------------- */

static int make_point(cfs_context *ctx, cfs_node *parent, const cs_point_info *info, cfs_node **ret);
static void node_free(cfs_context *ctx, cfs_node *n);
static cfs_node *node_new(cfs_node_kind kind, uint64_t key, const char *name, size_t name_len);

int cfs_nodes_init(cfs_context *ctx, const cs_point_info *point)
{
        pthread_mutex_init(&ctx->table_lock, NULL);
        pthread_mutex_init(&ctx->clones_lock, NULL);
        ctx->table_size = 4096;
        ctx->table = calloc(ctx->table_size, sizeof(*ctx->table));
        if (!ctx->table)
                return -ENOMEM;
        ctx->root = (cfs_node) { .kind = CFS_NODE_ROOT, .key = 1, .ino = 1, .nlookup = 1 };
        pthread_mutex_init(&ctx->root.dir_lock, NULL);
        if (point) {
                /* The point becomes the root: its node's contents move in. */
                cfs_node *n;
                int r = make_point(ctx, &ctx->root, point, &n);
                if (r < 0)
                        return r;
                ctx->root.kind = CFS_NODE_POINT;
                ctx->root.point = n->point;
                ctx->root.key = n->key;
                ctx->root.entry = n->entry;
                ctx->root.name = TAKE_PTR(n->name);
                n->point = NULL;
                n->kind = CFS_NODE_ENTRY; /* so node_free leaves the point alone */
                node_free(ctx, n);
        }
        return 0;
}

static cfs_node *table_find(cfs_context *ctx, uint64_t key)
{
        for (cfs_node *n = ctx->table[key & (ctx->table_size - 1)]; n; n = n->hash_next)
                if (n->key == key)
                        return n;
        return NULL;
}

static void table_grow(cfs_context *ctx)
{
        size_t size = ctx->table_size * 2;
        cfs_node **t = calloc(size, sizeof(*t));

        if (!t)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < ctx->table_size; i++)
                for (cfs_node *n = ctx->table[i], *next; n; n = next) {
                        next = n->hash_next;
                        n->hash_next = t[n->key & (size - 1)];
                        t[n->key & (size - 1)] = n;
                }
        free(ctx->table);
        ctx->table = t;
        ctx->table_size = size;
}

static void table_insert(cfs_context *ctx, cfs_node *n)
{
        if (ctx->n_nodes + 1 > ctx->table_size)
                table_grow(ctx);
        cfs_node **head = &ctx->table[n->key & (ctx->table_size - 1)];
        n->hash_next = *head;
        *head = n;
        ctx->n_nodes++;
}

static void table_remove(cfs_context *ctx, cfs_node *n)
{
        for (cfs_node **p = &ctx->table[n->key & (ctx->table_size - 1)]; *p; p = &(*p)->hash_next)
                if (*p == n) {
                        *p = n->hash_next;
                        ctx->n_nodes--;
                        return;
                }
}

static void point_free(cfs_context *ctx, cfs_point *p)
{
        if (!p)
                return;
        if (p->pin)
                (void) cs_store_unpin(ctx->store, p->pin);
        cs_dir_free(p->keep);
        free(p);
}

static void node_free(cfs_context *ctx, cfs_node *n)
{
        if (n->kind == CFS_NODE_POINT)
                point_free(ctx, n->point);
        cs_dir_free(n->dir);
        pthread_mutex_destroy(&n->dir_lock);
        free(n->entry_storage);
        free(n->target);
        free(n->name);
        for (cfs_alias *a = n->aliases, *next; a; a = next) {
                next = a->next;
                free(a);
        }
        free(n);
}

/* Drops nodes nobody holds, walking up through parents (table_lock held). */
static void release_locked(cfs_context *ctx, cfs_node *n)
{
        while (n && n != &ctx->root && n->nlookup == 0 && n->refs == 0) {
                cfs_node *parent = n->parent;
                table_remove(ctx, n);
                node_free(ctx, n);
                n = parent;
                if (n && n != &ctx->root)
                        n->refs--;
        }
}

void cfs_nodes_done(cfs_context *ctx)
{
        for (size_t i = 0; i < ctx->table_size; i++)
                for (cfs_node *n = ctx->table[i], *next; n; n = next) {
                        next = n->hash_next;
                        node_free(ctx, n);
                }
        free(ctx->table);
        if (ctx->root.kind == CFS_NODE_POINT)
                point_free(ctx, ctx->root.point);
        free(ctx->root.name);
        cs_dir_free(ctx->root.dir);
        cfs_clones_close(ctx);
        pthread_mutex_destroy(&ctx->clones_lock);
        pthread_mutex_destroy(&ctx->root.dir_lock);
        pthread_mutex_destroy(&ctx->table_lock);
}

cfs_node *cfs_node_get(cfs_context *ctx, fuse_ino_t ino)
{
        return ino == FUSE_ROOT_ID ? &ctx->root : (cfs_node *) (uintptr_t) ino;
}

fuse_ino_t cfs_node_ino(cfs_context *ctx, const cfs_node *n)
{
        return n == &ctx->root ? FUSE_ROOT_ID : (fuse_ino_t) (uintptr_t) n;
}

void cfs_node_ref(cfs_context *ctx, cfs_node *n)
{
        pthread_mutex_lock(&ctx->table_lock);
        n->refs++;
        pthread_mutex_unlock(&ctx->table_lock);
}

void cfs_node_unref(cfs_context *ctx, cfs_node *n)
{
        pthread_mutex_lock(&ctx->table_lock);
        n->refs--;
        release_locked(ctx, n);
        pthread_mutex_unlock(&ctx->table_lock);
}

void cfs_node_forget(cfs_context *ctx, cfs_node *n, uint64_t nlookup)
{
        if (n == &ctx->root)
                return;
        pthread_mutex_lock(&ctx->table_lock);
        n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
        release_locked(ctx, n);
        pthread_mutex_unlock(&ctx->table_lock);
}

/* --- Clones ------------------------------------------------------------ */

int cfs_clone_get(cfs_context *ctx, const char *name, cfs_clone **ret)
{
        cfs_clone *cl;
        int r;

        pthread_mutex_lock(&ctx->clones_lock);
        for (cl = ctx->clones; cl; cl = cl->next)
                if (strcmp(cs_clone_name(cl->clone), name) == 0)
                        break;
        if (!cl) {
                cl = calloc(1, sizeof(*cl));
                r = cl ? cs_clone_open(ctx->store, name, &cl->clone) : -ENOMEM;
                if (r < 0) {
                        free(cl);
                        pthread_mutex_unlock(&ctx->clones_lock);
                        return r;
                }
                cl->key = mix(0x636c6f6e65, name, strlen(name));
                cl->next = ctx->clones;
                ctx->clones = cl;
                /* Without it the clone still works; only snapshots of it
                 * must wait for the unmount. */
                r = cfs_control_start(ctx, cl);
                if (r < 0)
                        fuse_log(FUSE_LOG_WARNING, "clonefs: clone %s: no control socket: %s\n", name, strerror(-r));
        }
        pthread_mutex_unlock(&ctx->clones_lock);
        *ret = cl;
        return 0;
}

void cfs_nodes_of_clone(cfs_context *ctx, const cfs_clone *cl, bool (*fn)(void *userdata, cfs_node *n),
                        void *userdata)
{
        bool go_on = true;

        pthread_mutex_lock(&ctx->table_lock);
        if (ctx->root.clone == cl)
                go_on = fn(userdata, &ctx->root);
        for (size_t i = 0; go_on && i < ctx->table_size; i++)
                for (cfs_node *n = ctx->table[i]; go_on && n; n = n->hash_next)
                        if (n->clone == cl)
                                go_on = fn(userdata, n);
        pthread_mutex_unlock(&ctx->table_lock);
}

void cfs_clones_close(cfs_context *ctx)
{
        cfs_clone *lists[] = { ctx->clones, ctx->destroyed };

        for (size_t i = 0; i < ELEMENTSOF(lists); i++)
                for (cfs_clone *cl = lists[i], *next; cl; cl = next) {
                        next = cl->next;
                        cfs_control_stop(cl);
                        cs_clone_close(cl->clone);
                        free(cl);
                }
        ctx->clones = ctx->destroyed = NULL;
}

/* A node remembers the other names it is found by (hard links) or renamed
 * to, newest first, up to CLONE_ALIASES_MAX: past that the oldest goes,
 * which is most likely a name unlinked or renamed away since.  One that
 * fails to allocate is left out; a rewind then leaves that name to the
 * kernel's entry timeout (table_lock held). */
#define CLONE_ALIASES_MAX 64

static void add_alias_locked(cfs_node *n, const cfs_node *parent, const char *name)
{
        size_t count = 0, len = strlen(name);
        cfs_alias *a, **tail = &n->aliases;

        if (n->parent == parent && n->name && strcmp(n->name, name) == 0)
                return;
        for (a = n->aliases; a; a = a->next)
                if (a->parent_key == parent->key && strcmp(a->name, name) == 0)
                        return;
        a = malloc(sizeof(*a) + len + 1);
        if (!a)
                return;
        a->parent_key = parent->key;
        memcpy(a->name, name, len + 1);
        a->next = n->aliases;
        n->aliases = a;
        while (*tail && ++count < CLONE_ALIASES_MAX)
                tail = &(*tail)->next;
        if (*tail) {
                for (cfs_alias *old = (*tail)->next, *next; old; old = next) {
                        next = old->next;
                        free(old);
                }
                (*tail)->next = NULL;
        }
}

bool cfs_node_names(cfs_context *ctx, const cfs_node *n,
                    bool (*fn)(void *userdata, fuse_ino_t parent, const char *name), void *userdata)
{
        if (n->parent && n->name && !fn(userdata, cfs_node_ino(ctx, n->parent), n->name))
                return false;
        for (const cfs_alias *a = n->aliases; a; a = a->next) {
                const cfs_node *parent = a->parent_key == ctx->root.key ? &ctx->root : table_find(ctx, a->parent_key);
                /* A parent the kernel has forgotten holds no dentry of ours. */
                if (parent && !fn(userdata, cfs_node_ino(ctx, parent), a->name))
                        return false;
        }
        return true;
}

void cfs_node_renamed(cfs_context *ctx, cfs_node *parent, const char *name)
{
        cs_clone_attr attr;
        cfs_node *n;

        if (cs_clone_lookup(parent->clone->clone, parent->cino, name, &attr) < 0)
                return;
        pthread_mutex_lock(&ctx->table_lock);
        n = table_find(ctx, clone_node_key(parent->clone, attr.ino));
        if (n)
                add_alias_locked(n, parent, name);
        pthread_mutex_unlock(&ctx->table_lock);
}

int cfs_node_for_clone(cfs_context *ctx, cfs_node *parent, cfs_clone *cl, const cs_clone_attr *attr,
                       const char *name, cfs_node **ret)
{
        uint64_t key = clone_node_key(cl, attr->ino);
        cfs_node *n;

        pthread_mutex_lock(&ctx->table_lock);
        n = table_find(ctx, key);
        if (n) {
                n->nlookup++;
                if (S_ISREG(attr->mode) && attr->nlink > 1)
                        add_alias_locked(n, parent, name);
                pthread_mutex_unlock(&ctx->table_lock);
                *ret = n;
                return 0;
        }
        n = node_new(CFS_NODE_CLONE, key, name, strlen(name));
        if (!n) {
                pthread_mutex_unlock(&ctx->table_lock);
                return -ENOMEM;
        }
        n->clone = cl;
        n->cino = attr->ino;
        n->ino = attr->stable_ino;
        n->parent = parent;
        if (parent != &ctx->root)
                parent->refs++;
        n->nlookup = 1;
        table_insert(ctx, n);
        pthread_mutex_unlock(&ctx->table_lock);
        *ret = n;
        return 0;
}

int cfs_nodes_root_clone(cfs_context *ctx, const char *name)
{
        cs_clone_attr attr;
        cfs_clone *cl;
        int r;

        r = cfs_clone_get(ctx, name, &cl);
        if (r >= 0)
                r = cs_clone_getattr(cl->clone, CS_CLONE_ROOT, &attr);
        if (r < 0)
                return r;
        ctx->root.kind = CFS_NODE_CLONE;
        ctx->root.clone = cl;
        ctx->root.cino = CS_CLONE_ROOT;
        ctx->root.key = clone_node_key(cl, CS_CLONE_ROOT);
        return 0;
}

void cfs_stat_from_clone(cfs_context *ctx, const cs_clone_attr *a, struct stat *st)
{
        memset(st, 0, sizeof(*st));
        st->st_ino = a->stable_ino;
        st->st_mode = a->mode;
        st->st_uid = a->uid;
        st->st_gid = a->gid;
        st->st_nlink = a->nlink;
        st->st_size = (off_t) a->size;
        st->st_rdev = (dev_t) a->rdev;
        st->st_atim = a->atime;
        st->st_mtim = a->mtime;
        st->st_ctim = a->ctime;
        st->st_blksize = ctx->block_size;
        st->st_blocks = (blkcnt_t) a->blocks;
}

bool cfs_node_immutable(const cfs_node *n)
{
        return n->kind == CFS_NODE_POINT || n->kind == CFS_NODE_ENTRY;
}

/* --- Making nodes ------------------------------------------------------ */

static cfs_node *node_new(cfs_node_kind kind, uint64_t key, const char *name, size_t name_len)
{
        cfs_node *n = calloc(1, sizeof(*n));

        if (!n)
                return NULL;
        n->name = strndup(name, name_len);
        if (!n->name) {
                free(n);
                return NULL;
        }
        n->kind = kind;
        n->key = key;
        n->ino = as_ino(key);
        pthread_mutex_init(&n->dir_lock, NULL);
        return n;
}

/* A deep copy of e into one allocation owned by the node. */
static int copy_entry(cfs_node *n, const cs_entry *e)
{
        size_t size = e->name_len + 1 + (S_ISLNK(e->mode) ? e->size + 1 : 0) + e->n_xattrs * sizeof(cs_xattr) +
                      (S_ISREG(e->mode) ? e->content.n * sizeof(cs_chunk_id) : 0);
        uint8_t *p;

        for (size_t i = 0; i < e->n_xattrs; i++)
                size += strlen(e->xattrs[i].name) + 1 + e->xattrs[i].size;
        n->entry_storage = p = malloc(size + 16);
        if (!p)
                return -ENOMEM;
        n->entry = *e;
        if (e->n_xattrs) {
                /* cs_xattr holds pointers: keep it aligned at the start. */
                cs_xattr *x = (cs_xattr *) p;
                p += e->n_xattrs * sizeof(cs_xattr);
                for (size_t i = 0; i < e->n_xattrs; i++) {
                        size_t len = strlen(e->xattrs[i].name) + 1;
                        x[i] = e->xattrs[i];
                        x[i].name = memcpy(p, e->xattrs[i].name, len);
                        p += len;
                        x[i].value = memcpy(p, e->xattrs[i].value, e->xattrs[i].size);
                        p += e->xattrs[i].size;
                }
                n->entry.xattrs = x;
        }
        n->entry.name = memcpy(p, e->name, e->name_len);
        p += e->name_len;
        *p++ = 0;
        if (S_ISLNK(e->mode)) {
                n->entry.target = memcpy(p, e->target, e->size);
                p += e->size;
                *p++ = 0;
        }
        if (S_ISREG(e->mode) && e->content.n) {
                n->entry.content.ids = memcpy(p, e->content.ids, e->content.n * sizeof(cs_chunk_id));
                p += e->content.n * sizeof(cs_chunk_id);
        }
        return 0;
}

static int make_point(cfs_context *ctx, cfs_node *parent, const cs_point_info *info, cfs_node **ret)
{
        cfs_point *p = calloc(1, sizeof(*p));
        cs_point_info again;
        cfs_node *n;
        int r;

        if (!p)
                return -ENOMEM;
        p->root = info->root;
        snprintf(p->timeline, sizeof(p->timeline), "%s", info->timeline);
        snprintf(p->name, sizeof(p->name), "%s", info->name);
        p->key = mix(child_key(parent->key, info->name, strlen(info->name)), info->root.bytes, CS_CHUNK_ID_SIZE);

        /* Pin, then check the point still exists (design note 4). */
        r = cs_store_pin(ctx->store, &p->root, &p->pin);
        if (r == -EROFS || r == -EACCES || r == -EPERM)
                r = 0; /* a catalog we cannot write, nobody here can gc either */
        if (r < 0) {
                free(p);
                return r;
        }
        r = cs_point_find(ctx->store, info->timeline, info->name, &again);
        if (r >= 0 && !cs_chunk_id_equal(&again.root, &info->root))
                r = -ENOENT;
        if (r >= 0)
                r = cs_point_load(ctx->store, &p->root, &p->root_entry, &p->keep);
        n = r >= 0 ? node_new(CFS_NODE_POINT, p->key, info->name, strlen(info->name)) : NULL;
        if (!n) {
                point_free(ctx, p);
                return r < 0 ? r : -ENOMEM;
        }
        n->point = p;
        n->entry = p->root_entry;
        n->entry.name = n->name;
        n->entry.name_len = strlen(n->name);
        *ret = n;
        return 0;
}

/* Builds the child `name` of parent, without the table lock. */
static int make_child(cfs_context *ctx, cfs_node *parent, const char *name, cfs_node **ret)
{
        size_t len = strlen(name);
        cs_point_info info;
        cfs_node *n = NULL;
        int r;

        switch (parent->kind) {
        case CFS_NODE_ROOT:
                if (strcmp(name, TIMELINES_NAME) == 0)
                        n = node_new(CFS_NODE_TIMELINES, KEY_TIMELINES, name, len);
                else if (strcmp(name, CLONES_NAME) == 0)
                        n = node_new(CFS_NODE_CLONES, KEY_CLONES, name, len);
                else
                        return -ENOENT;
                break;
        case CFS_NODE_CLONES: {
                cs_clone_attr attr;
                cfs_clone *cl;
                if (!cs_clone_name_is_valid(name))
                        return -ENOENT;
                r = cfs_clone_get(ctx, name, &cl);
                if (r >= 0)
                        r = cs_clone_getattr(cl->clone, CS_CLONE_ROOT, &attr);
                if (r < 0)
                        return r;
                n = node_new(CFS_NODE_CLONE, clone_node_key(cl, CS_CLONE_ROOT), name, len);
                if (n) {
                        n->clone = cl;
                        n->cino = CS_CLONE_ROOT;
                        n->ino = attr.stable_ino;
                }
                break;
        }
        case CFS_NODE_CLONE:
                return -EIO; /* cfs_node_lookup() handles clone inodes */
        case CFS_NODE_TIMELINES:
                if (!cs_name_is_valid(name))
                        return -ENOENT;
                r = cs_point_find(ctx->store, name, "latest", &info);
                if (r < 0)
                        return r;
                n = node_new(CFS_NODE_TIMELINE, child_key(parent->key, name, len), name, len);
                break;
        case CFS_NODE_TIMELINE:
                r = cs_point_find(ctx->store, parent->name, name, &info);
                if (r < 0)
                        return r;
                if (strcmp(info.name, name) == 0)
                        return make_point(ctx, parent, &info, ret);
                /* "latest" or a label: a symlink to the point's name.  The
                 * target is part of the key: when "latest" moves, the kernel
                 * meets a new inode instead of a cached old target. */
                n = node_new(CFS_NODE_LINK, mix(child_key(parent->key, name, len), info.name, strlen(info.name)),
                             name, len);
                if (n) {
                        n->target = strdup(info.name);
                        if (!n->target) {
                                node_free(ctx, n);
                                return -ENOMEM;
                        }
                }
                break;
        case CFS_NODE_POINT:
        case CFS_NODE_ENTRY: {
                const cs_dir *d;
                const cs_entry *e;
                if (!S_ISDIR(parent->entry.mode))
                        return -ENOTDIR;
                r = cfs_node_dir(ctx, parent, &d);
                if (r < 0)
                        return r;
                e = cs_dir_find(d, name, len);
                if (!e)
                        return -ENOENT;
                n = node_new(CFS_NODE_ENTRY, child_key(parent->key, name, len), name, len);
                if (n && copy_entry(n, e) < 0) {
                        node_free(ctx, n);
                        return -ENOMEM;
                }
                if (n) {
                        n->point = parent->point;
                        n->ino = entry_ino(parent, e);
                }
                break;
        }
        case CFS_NODE_LINK:
                return -ENOTDIR;
        }
        if (!n)
                return -ENOMEM;
        *ret = n;
        return 0;
}

int cfs_node_lookup(cfs_context *ctx, cfs_node *parent, const char *name, cfs_node **ret)
{
        cfs_node *made = NULL, *n;
        bool virtual_level = parent->kind == CFS_NODE_TIMELINES || parent->kind == CFS_NODE_TIMELINE ||
                             parent->kind == CFS_NODE_CLONES;
        int r;

        if (parent->kind == CFS_NODE_CLONE) {
                cs_clone_attr attr;
                r = cs_clone_lookup(parent->clone->clone, parent->cino, name, &attr);
                if (r < 0)
                        return r;
                return cfs_node_for_clone(ctx, parent, parent->clone, &attr, name, ret);
        }

        /* Inside a point nothing changes: a node we have is the answer.  The
         * virtual levels always ask the catalog (design note 3). */
        if (!virtual_level || parent->kind == CFS_NODE_ROOT) {
                uint64_t key = child_key(parent->key, name, strlen(name));
                if (parent->kind == CFS_NODE_ROOT)
                        key = strcmp(name, TIMELINES_NAME) == 0 ? KEY_TIMELINES
                              : strcmp(name, CLONES_NAME) == 0  ? KEY_CLONES
                                                                : 0;
                pthread_mutex_lock(&ctx->table_lock);
                n = key ? table_find(ctx, key) : NULL;
                if (n && n->parent == parent) {
                        n->nlookup++;
                        pthread_mutex_unlock(&ctx->table_lock);
                        *ret = n;
                        return 0;
                }
                pthread_mutex_unlock(&ctx->table_lock);
        }

        r = make_child(ctx, parent, name, &made);
        if (r < 0)
                return r;

        pthread_mutex_lock(&ctx->table_lock);
        n = table_find(ctx, made->key);
        if (n) {
                n->nlookup++;
                pthread_mutex_unlock(&ctx->table_lock);
                node_free(ctx, made);
                *ret = n;
                return 0;
        }
        made->parent = parent;
        if (parent != &ctx->root)
                parent->refs++;
        made->nlookup = 1;
        table_insert(ctx, made);
        pthread_mutex_unlock(&ctx->table_lock);
        *ret = made;
        return 0;
}

int cfs_node_dir(cfs_context *ctx, cfs_node *n, const cs_dir **ret)
{
        int r = 0;

        pthread_mutex_lock(&n->dir_lock);
        if (!n->dir)
                r = cs_dir_load(ctx->store, &n->entry.subdir, &n->dir);
        pthread_mutex_unlock(&n->dir_lock);
        if (r < 0)
                return r;
        *ret = n->dir;
        return 0;
}

/* --- Attributes -------------------------------------------------------- */

/* st_blocks: holes do not count, so that du, and cp's and tar's test for
 * a sparse file (st_blocks below st_size), see what the source had. */
static uint64_t allocated_blocks(cfs_context *ctx, const cs_entry *e)
{
        if (!S_ISREG(e->mode))
                return DIV_ROUND_UP(e->size, 512);
        return DIV_ROUND_UP(cs_content_data_bytes(&e->content, e->size, ctx->block_size), 512);
}

void cfs_node_stat(cfs_context *ctx, const cfs_node *n, struct stat *st)
{
        if (n->kind == CFS_NODE_CLONE) {
                cs_clone_attr attr = {};
                (void) cs_clone_getattr(n->clone->clone, n->cino, &attr);
                cfs_stat_from_clone(ctx, &attr, st);
                return;
        }
        memset(st, 0, sizeof(*st));
        st->st_ino = n->ino;
        st->st_blksize = ctx->block_size;
        if (cfs_node_immutable(n)) {
                const cs_entry *e = &n->entry;
                st->st_mode = e->mode;
                st->st_uid = e->uid;
                st->st_gid = e->gid;
                st->st_nlink = e->nlink ? e->nlink : 1;
                st->st_size = (off_t) e->size;
                st->st_rdev = (dev_t) e->rdev;
                st->st_mtim.tv_sec = e->mtime_sec;
                st->st_mtim.tv_nsec = e->mtime_nsec;
                st->st_atim = st->st_mtim;
                st->st_ctim.tv_sec = e->ctime_sec;
                st->st_ctim.tv_nsec = e->ctime_nsec;
                st->st_blocks = (blkcnt_t) allocated_blocks(ctx, e);
                return;
        }
        if (n->kind == CFS_NODE_LINK) {
                st->st_mode = S_IFLNK | 0777;
                st->st_nlink = 1;
                st->st_size = (off_t) strlen(n->target);
        } else {
                st->st_mode = S_IFDIR | 0555;
                st->st_nlink = 2;
        }
}

/* --- Listing ------------------------------------------------------------ */

static int list_timelines(cfs_context *ctx, cfs_node *n, off_t first, cfs_dirent_fn add, void *userdata)
{
        _cleanup_free_ cs_timeline_info *list = NULL;
        size_t count = 0;
        int r;

        r = cs_timeline_list(ctx->store, &list, &count);
        if (r < 0)
                return r;
        for (size_t i = (size_t) first; i < count; i++) {
                const char *name = list[i].name;
                if (!add(userdata, name, strlen(name), as_ino(child_key(n->key, name, strlen(name))),
                         S_IFDIR, (off_t) i + 1))
                        break;
        }
        return 0;
}

static int list_points(cfs_context *ctx, cfs_node *n, off_t first, cfs_dirent_fn add, void *userdata)
{
        _cleanup_free_ cs_point_info *list = NULL;
        size_t count = 0, index = 0;
        int r;

        r = cs_point_list(ctx->store, n->name, &list, &count);
        if (r == -ENOENT)
                count = 0; /* forgotten meanwhile: an empty listing */
        else if (r < 0)
                return r;

        /* Offsets: "latest", then every point, then every label. */
        if (count > 0 && (size_t) first <= index) {
                const char *newest = list[count - 1].name;
                uint64_t key = mix(child_key(n->key, "latest", 6), newest, strlen(newest));
                if (!add(userdata, "latest", 6, as_ino(key), S_IFLNK, (off_t) index + 1))
                        return 0;
        }
        index++;
        for (size_t i = 0; i < count; i++, index++) {
                const char *name = list[i].name;
                uint64_t key = mix(child_key(n->key, name, strlen(name)), list[i].root.bytes, CS_CHUNK_ID_SIZE);
                if (index >= (size_t) first &&
                    !add(userdata, name, strlen(name), as_ino(key), S_IFDIR, (off_t) index + 1))
                        return 0;
        }
        for (size_t i = 0; i < count; i++) {
                const char *label = list[i].label;
                if (!label[0])
                        continue;
                uint64_t key = mix(child_key(n->key, label, strlen(label)), list[i].name, strlen(list[i].name));
                if (index >= (size_t) first && !add(userdata, label, strlen(label), as_ino(key), S_IFLNK, (off_t) index + 1))
                        return 0;
                index++;
        }
        return 0;
}

int cfs_node_list(cfs_context *ctx, cfs_node *n, off_t first, cfs_dirent_fn add, void *userdata)
{
        const cs_dir *d;
        int r;

        switch (n->kind) {
        case CFS_NODE_ROOT:
                if (first == 0 &&
                    !add(userdata, TIMELINES_NAME, strlen(TIMELINES_NAME), as_ino(KEY_TIMELINES), S_IFDIR, 1))
                        return 0;
                if (first <= 1)
                        add(userdata, CLONES_NAME, strlen(CLONES_NAME), as_ino(KEY_CLONES), S_IFDIR, 2);
                return 0;
        case CFS_NODE_CLONES: {
                _cleanup_free_ cs_clone_info *list = NULL;
                size_t count = 0;
                r = cs_clone_list(ctx->store, &list, &count);
                if (r < 0)
                        return r;
                for (size_t i = (size_t) first; i < count; i++)
                        if (!add(userdata, list[i].name, strlen(list[i].name),
                                 cs_clone_stable_ino(list[i].name, CS_CLONE_ROOT), S_IFDIR, (off_t) i + 1))
                                break;
                return 0;
        }
        case CFS_NODE_CLONE:
                return -EIO; /* ops-clone.c lists clone directories */
        case CFS_NODE_TIMELINES:
                return list_timelines(ctx, n, first, add, userdata);
        case CFS_NODE_TIMELINE:
                return list_points(ctx, n, first, add, userdata);
        case CFS_NODE_POINT:
        case CFS_NODE_ENTRY:
                if (!S_ISDIR(n->entry.mode))
                        return -ENOTDIR;
                r = cfs_node_dir(ctx, n, &d);
                if (r < 0)
                        return r;
                for (size_t i = (size_t) first; i < cs_dir_size(d); i++) {
                        const cs_entry *e = cs_dir_entry(d, i);
                        if (!add(userdata, e->name, e->name_len, entry_ino(n, e), e->mode, (off_t) i + 1))
                                break;
                }
                return 0;
        case CFS_NODE_LINK:
                return -ENOTDIR;
        }
        return -EIO;
}

const char *cfs_node_path(const cfs_node *n, char *buf, size_t size)
{
        const cfs_node *chain[256];
        size_t depth = 0, o = 0;

        for (const cfs_node *p = n; p && p->kind != CFS_NODE_ROOT && depth < ELEMENTSOF(chain); p = p->parent)
                chain[depth++] = p;
        buf[0] = 0;
        while (depth-- > 0 && o + 1 < size) {
                const char *name = chain[depth]->name;
                for (size_t i = 0; name[i] && o + 5 < size; i++) {
                        unsigned char c = (unsigned char) name[i];
                        if (c >= 0x20 && c < 0x7f)
                                buf[o++] = (char) c;
                        else
                                o += (size_t) snprintf(buf + o, size - o, "\\x%02x", c);
                }
                if (depth > 0 && o + 1 < size)
                        buf[o++] = '/';
                buf[o] = 0;
        }
        return buf;
}
