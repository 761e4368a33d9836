/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * chunkstore.h: the only public header of libclonefs-chunkstore.
 *
 * A store is a directory holding content-addressed chunks: each chunk is at
 * most one block of data, named by its keyed XXH3-128 hash, compressed with
 * LZ4 and appended to a pack file, located through a SQLite catalog.  Chunks
 * are immutable and deduplicated; roots name the chunks that must survive
 * garbage collection.  docs/ARCHITECTURE.md describes the on-disk formats.
 *
 * Conventions: every fallible function returns a negative errno on failure
 * and >= 0 on success.  Handles are opaque.  A cs_store handle is safe to use
 * from several threads at once unless a function says otherwise; several
 * processes may open the same store at the same time.  A write handle runs
 * a thread of its own that commits full batches of puts; a forked child
 * must not use a handle that had puts in progress at the fork (open its
 * own).
 */
#ifndef CLONEFS_CHUNKSTORE_H
#define CLONEFS_CHUNKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The on-disk format this library writes into new stores; it reads and
 * writes every earlier one too, in that store's own format.  A store with
 * a larger number is refused with -EPROTONOSUPPORT.  2: a segmented
 * file's entry carries its count of blocks that are not holes
 * (docs/ARCHITECTURE.md, "Point trees"). */
#define CS_FORMAT_VERSION 2

#define CS_BLOCK_SIZE_MIN (4u * 1024u)
#define CS_BLOCK_SIZE_MAX (1024u * 1024u)
#define CS_BLOCK_SIZE_DEFAULT (64u * 1024u)

/* Largest chunk put() accepts: tree objects may exceed one data block. */
#define CS_CHUNK_SIZE_MAX (16u * 1024u * 1024u)

#define CS_CHUNK_ID_SIZE 16
#define CS_CHUNK_ID_STRING_MAX (2 * CS_CHUNK_ID_SIZE + 1)

typedef struct cs_chunk_id {
        uint8_t bytes[CS_CHUNK_ID_SIZE];
} cs_chunk_id;

/* What a chunk holds.  The kind is part of the hash, so a data block and a
 * tree object with the same bytes are different chunks. */
typedef enum cs_chunk_kind {
        /* Opaque bytes: a block of file data. */
        CS_KIND_DATA = 0,
        /* A tree object: a child list the store can walk (see cs_tree_*)
         * followed by a body the store does not interpret. */
        CS_KIND_TREE = 1,
        _CS_KIND_MAX,
} cs_chunk_kind;

typedef struct cs_store cs_store;

/* --- Chunk ids ---------------------------------------------------------- */

/* The all-zero id names any all-zero block; such blocks are never stored.
 * Readers treat it as a hole. */
bool cs_chunk_id_is_zero(const cs_chunk_id *id);
bool cs_chunk_id_equal(const cs_chunk_id *a, const cs_chunk_id *b);
/* Writes 32 lowercase hex digits and a NUL into buf (CS_CHUNK_ID_STRING_MAX). */
char *cs_chunk_id_format(const cs_chunk_id *id, char buf[static CS_CHUNK_ID_STRING_MAX]);
/* Parses 32 hex digits.  -EINVAL if s is anything else. */
int cs_chunk_id_parse(const char *s, cs_chunk_id *ret_id);

/* --- Creating and opening ---------------------------------------------- */

typedef struct cs_init_params {
        /* Fixed for the store's life; a power of two in
         * [CS_BLOCK_SIZE_MIN, CS_BLOCK_SIZE_MAX].  0 picks the default. */
        uint32_t block_size;
        /* 0 for LZ4's fast mode; 1..12 for LZ4 HC at that level (smaller
         * store, slower puts; reads are as fast either way). */
        int lz4hc_level;
} cs_init_params;

/* Creates a store in directory path, which must not exist or be empty.
 * The directory becomes mode 0700, the config and catalog 0600.
 * -EEXIST if path already holds anything, -EINVAL on bad params. */
int cs_store_init(const char *path, const cs_init_params *params);

enum {
        /* Open for put(), commit(), roots, gc and compaction.  Holds a shared
         * lock on the store for the handle's life; gc needs it exclusively. */
        CS_OPEN_WRITE = 1 << 0,
        /* With CS_OPEN_WRITE: fail with -EBUSY instead of waiting for a gc. */
        CS_OPEN_NOWAIT = 1 << 1,
};

/* Opens an existing store.  Errors: -ENOENT (no such directory),
 * -EMEDIUMTYPE (a directory that is not a clonefs store),
 * -EPROTONOSUPPORT (a newer format), -EBADMSG (a damaged config),
 * -EACCES.  On success *ret_store owns the handle. */
int cs_store_open(const char *path, unsigned flags, cs_store **ret_store);

/* Closes the handle.  Puts not yet committed are discarded: their bytes
 * are cut off the pack, which is sealed.  Accepts NULL; returns NULL. */
cs_store *cs_store_unref(cs_store *store);
void cs_store_unrefp(cs_store **store);

uint32_t cs_store_block_size(const cs_store *store);
/* The store's directory, valid for the handle's life. */
const char *cs_store_path(const cs_store *store);

/* Installs a hook for diagnostics the library cannot return (for example a
 * damaged chunk found while walking a tree).  Called from any thread.  */
typedef void (*cs_log_fn)(void *userdata, int error, const char *message);
void cs_store_set_log(cs_store *store, cs_log_fn fn, void *userdata);

/* --- Chunks ------------------------------------------------------------- */

/* Stores size bytes of data (at most CS_CHUNK_SIZE_MAX; data chunks at most
 * one block) and returns its id in *ret_id.  Returns 1 if the chunk was new,
 * 0 if the store already had it or it is all zeros.  The chunk becomes
 * durable and visible to other processes at the next cs_store_commit();
 * this handle sees it at once.  Errors: -EROFS (not opened for writing),
 * -EINVAL, -ENOSPC, -EIO.  Thread-safe: compression runs in the calling
 * thread, so callers use several threads to use several cores. */
int cs_store_put(cs_store *store, cs_chunk_kind kind, const void *data, size_t size,
                 cs_chunk_id *ret_id);

/* Makes every put that returned before this call durable: the pack bytes
 * are fdatasync()ed, then their index rows are committed in one SQLite
 * transaction.  A crash at any point leaves a consistent store that holds
 * every chunk of every commit that returned.  Full batches are committed
 * in the background meanwhile; once one of those, or any commit, failed in
 * a way that lost puts (a failed fdatasync, say), this and every later
 * commit of the handle fail with that error. */
int cs_store_commit(cs_store *store);

/* Reads chunk *id into buf (buf_size bytes).  Returns the chunk's size.
 * Every read is decompressed and re-hashed: damaged data gives -EBADMSG
 * (or -EIO from the disk), never wrong bytes.  -ENOENT if the store does
 * not hold the chunk, -ENOBUFS if buf is smaller than the chunk.  The zero
 * id is not a chunk (-ENOENT): callers treat it as a hole. */
int cs_store_get(cs_store *store, const cs_chunk_id *id, void *buf, size_t buf_size);

typedef struct cs_chunk_info {
        cs_chunk_kind kind;
        uint32_t size;        /* uncompressed */
        uint32_t stored_size; /* in the pack, without the record header */
        uint64_t pack;
        uint64_t offset;
} cs_chunk_info;

/* 1 and fills *ret_info (may be NULL) if the store holds the chunk, 0 if not. */
int cs_store_has(cs_store *store, const cs_chunk_id *id, cs_chunk_info *ret_info);

/* --- Tree objects --------------------------------------------------------
 *
 * A CS_KIND_TREE chunk starts with the list of chunks it references, so
 * that gc and verify can walk any tree without knowing what it means:
 *
 *     le32 child_count | child_count * 16-byte ids | body
 *
 * The zero id may appear as a child (a hole) and is skipped by walkers.
 */

/* Size of a tree object with n children and a body of body_size bytes. */
size_t cs_tree_size(size_t n_children, size_t body_size);
/* Lays out children and body into buf (cs_tree_size() bytes). */
void cs_tree_encode(void *buf, const cs_chunk_id *children, size_t n_children,
                    const void *body, size_t body_size);
/* Points into a decoded tree object: -EBADMSG if it is malformed. */
int cs_tree_decode(const void *buf, size_t size, const cs_chunk_id **ret_children,
                   size_t *ret_n_children, const void **ret_body, size_t *ret_body_size);

/* --- Roots -------------------------------------------------------------- */

/* A root keeps a chunk, and everything reachable from it, alive through gc.
 * Root names are at most 255 bytes.  Setting a root commits pending puts
 * first, so a root never points at a chunk that is not durable. */
int cs_store_root_set(cs_store *store, const char *name, const cs_chunk_id *id);
/* -ENOENT if there is no such root. */
int cs_store_root_get(cs_store *store, const char *name, cs_chunk_id *ret_id);
int cs_store_root_delete(cs_store *store, const char *name);

/* --- Garbage collection, compaction ------------------------------------- */

typedef struct cs_gc_report {
        uint64_t chunks_kept;
        uint64_t chunks_removed;
        uint64_t bytes_removed; /* stored bytes of removed chunks */
        uint64_t packs_rewritten;
        uint64_t packs_removed;
        uint64_t bytes_reclaimed; /* pack file bytes given back to the fs */
} cs_gc_report;

enum {
        CS_GC_DRY_RUN = 1 << 0,
        /* Fail with -EBUSY rather than wait for writers to finish. */
        CS_GC_NOWAIT = 1 << 1,
};

/* Removes every chunk not reachable from a root, then compacts.  Takes the
 * store's lock exclusively, so it waits for writers (other handles opened
 * with CS_OPEN_WRITE) to close, and they wait for it.  The handle must be
 * opened with CS_OPEN_WRITE; gc drops this handle's own shared lock while
 * it runs.  Readers are never blocked and never see a chunk vanish that
 * their catalog snapshot still lists. */
int cs_store_gc(cs_store *store, unsigned flags, cs_gc_report *ret_report);

/* Rewrites every sealed pack whose live bytes are below min_live_percent of
 * its size, then removes packs no chunk uses.  Chunks move; their ids and
 * contents do not.  Safe alongside readers and writers. */
int cs_store_compact(cs_store *store, unsigned min_live_percent, cs_gc_report *ret_report);

/* --- Verification and statistics ---------------------------------------- */

enum {
        /* Read back every chunk, decompress and re-hash it. */
        CS_VERIFY_DATA = 1 << 0,
};

typedef enum cs_problem_severity {
        /* Reclaimable space; the store is consistent. */
        CS_PROBLEM_NOTICE,
        /* Lost or damaged data, or a broken catalog. */
        CS_PROBLEM_ERROR,
} cs_problem_severity;

typedef void (*cs_problem_fn)(void *userdata, cs_problem_severity severity,
                              const char *message);

typedef struct cs_verify_report {
        uint64_t chunks_checked;
        uint64_t chunks_damaged;
        uint64_t chunks_missing;  /* referenced by a root or tree, not stored */
        uint64_t packs_checked;
        uint64_t orphan_bytes;    /* pack bytes no catalog row points at */
        uint64_t orphan_chunks;   /* stored chunks no root reaches */
        uint64_t errors;          /* everything of severity ERROR */
} cs_verify_report;

/* Checks the catalog against the packs and every root's reachability; with
 * CS_VERIFY_DATA also every chunk's bytes.  Each finding is passed to
 * problem (may be NULL).  Returns 0 when no ERROR was found, -EBADMSG when
 * some were (the report says what), or another -errno if verification
 * itself could not run.  Read-only: never changes the store. */
int cs_store_verify(cs_store *store, unsigned flags, cs_problem_fn problem, void *userdata,
                    cs_verify_report *ret_report);

typedef struct cs_stats {
        uint32_t block_size;
        int lz4hc_level;
        uint64_t logical_bytes; /* every byte ever put, duplicates and zeros included */
        uint64_t unique_bytes;  /* uncompressed size of the chunks held */
        uint64_t stored_bytes;  /* compressed size of the chunks held */
        uint64_t pack_bytes;    /* size of the pack files on disk */
        uint64_t catalog_bytes; /* catalog with its WAL */
        uint64_t chunks;
        uint64_t packs;
        uint64_t roots;
} cs_stats;

int cs_store_stats(cs_store *store, cs_stats *ret_stats);

/* --- Point trees ---------------------------------------------------------
 *
 * A point is a Merkle tree of chunks (docs/ARCHITECTURE.md, "Point trees"):
 * a point object names the root directory; a directory is an index object
 * over pages of entries sorted by name; a regular file's content is its
 * list of block ids (the zero id for a hole), inline in its directory page
 * for small files, else split into segment objects of CS_SEGMENT_BLOCKS
 * blocks.  An unchanged file or directory is the same chunk in every point,
 * so a point costs what changed.
 */

#define CS_SEGMENT_BLOCKS 4096u
#define CS_INLINE_BLOCKS_MAX 32u
#define CS_NAME_MAX 255u

typedef struct cs_xattr {
        const char *name;  /* NUL-terminated */
        const void *value;
        uint32_t size;
} cs_xattr;

/* A file's content: either its block ids (segmented == false) or the ids
 * of segment objects holding them (segmented == true).  A segmented file
 * also counts its blocks that are not holes, so that st_blocks needs no
 * segment read (cs_content_data_bytes, which counts inline ids itself;
 * cs_content_build fills the count for both); one from a format 1 store
 * does not know the count. */
typedef struct cs_content {
        bool segmented;
        size_t n;
        const cs_chunk_id *ids;
        bool data_blocks_known;
        uint64_t data_blocks;
} cs_content;

/* Bytes of a file of size bytes that are not in holes, as st_blocks
 * counts them: whole blocks, at most size; size when not known. */
uint64_t cs_content_data_bytes(const cs_content *content, uint64_t size, uint32_t block_size);

/* One directory entry.  Strings are not NUL-terminated: names and symlink
 * targets may hold any byte but '/' and NUL (names) or NUL (targets). */
typedef struct cs_entry {
        const char *name;
        size_t name_len;
        uint32_t mode; /* st_mode, type bits included */
        uint32_t uid, gid;
        uint32_t nlink;
        uint64_t size;     /* regular files: bytes; symlinks: target length */
        int64_t mtime_sec;
        uint32_t mtime_nsec;
        /* What the source said when the entry was read, so the next
         * snapshot can tell an unchanged file without reading it. */
        int64_t ctime_sec;
        uint32_t ctime_nsec;
        uint64_t source_dev, source_ino;
        uint64_t rdev;       /* devices */
        uint64_t link_group; /* hardlinked regular files share a non-zero group */
        const char *target;  /* symlinks */
        size_t n_xattrs;
        const cs_xattr *xattrs;
        /* Regular files: content.  Directories: subdir is the directory
         * object.  Unused otherwise. */
        cs_content content;
        cs_chunk_id subdir;
} cs_entry;

/* Builds the content of a regular file from its block ids: inline when
 * there are at most CS_INLINE_BLOCKS_MAX blocks, else segment objects put
 * into the store.  *ret borrows blocks (inline) or owns *ret_storage
 * (segments; free() it).  */
int cs_content_build(cs_store *store, const cs_chunk_id *blocks, size_t n_blocks,
                     cs_content *ret, cs_chunk_id **ret_storage);

/* Reads the block ids of content: fills blocks[first .. first+n-1].
 * Thread-safe; loads segment objects as needed. */
int cs_content_blocks(cs_store *store, const cs_content *content, uint64_t first, size_t n,
                      cs_chunk_id *blocks);

/* Number of blocks of a file of size bytes in this store. */
uint64_t cs_store_blocks_of(const cs_store *store, uint64_t size);

/* Building a directory: add entries in any order, then finish, which sorts
 * them, writes the pages and the index, and returns the directory's id.
 * Entries are copied; the builder owns nothing of the caller's.  Not
 * thread-safe: one builder per thread. */
typedef struct cs_dir_builder cs_dir_builder;
int cs_dir_builder_new(cs_store *store, cs_dir_builder **ret);
/* -EEXIST for a duplicate name, -EINVAL for a malformed entry. */
int cs_dir_builder_add(cs_dir_builder *b, const cs_entry *entry);
int cs_dir_builder_finish(cs_dir_builder *b, cs_chunk_id *ret_dir);
cs_dir_builder *cs_dir_builder_free(cs_dir_builder *b);
void cs_dir_builder_freep(cs_dir_builder **b);

/* Builds the point object: the root directory's own metadata (its name is
 * ignored) and its directory object. */
int cs_point_build(cs_store *store, const cs_entry *root, cs_chunk_id *ret_point);

/* Whether two entries have the same xattrs, in any order (a source lists
 * them as it stores them, a clone by name). */
bool cs_entry_same_xattrs(const cs_entry *a, const cs_entry *b);

/* A loaded directory: its entries in name order.  Entries (and their
 * strings, xattrs and content ids) stay valid until the directory is
 * freed. */
typedef struct cs_dir cs_dir;
int cs_dir_load(cs_store *store, const cs_chunk_id *dir_id, cs_dir **ret);
size_t cs_dir_size(const cs_dir *d);
const cs_entry *cs_dir_entry(const cs_dir *d, size_t i);
/* The entry named name, or NULL. */
const cs_entry *cs_dir_find(const cs_dir *d, const char *name, size_t name_len);
cs_dir *cs_dir_free(cs_dir *d);
void cs_dir_freep(cs_dir **d);

/* Loads a point object: fills *ret_root (valid until cs_dir_free(*ret_keep))
 * with the root directory's metadata and its directory id in subdir. */
int cs_point_load(cs_store *store, const cs_chunk_id *point, cs_entry *ret_root, cs_dir **ret_keep);

/* --- Timelines and points in the catalog --------------------------------- */

#define CS_NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define CS_TIMELINE_NAME_MAX 128
#define CS_POINT_NAME_MAX 64

/* 1 if name is a valid timeline, clone or label name: 1-128 characters of
 * [A-Za-z0-9._-], not starting with '.' or '-'. */
bool cs_name_is_valid(const char *name);
/* That rule, for messages. */
#define CS_NAME_RULE "1-128 of A-Z a-z 0-9 . _ -, not starting with . or -"

/* 1 if label may name a point: a valid name that is neither "latest" nor
 * shaped like a point name. */
bool cs_label_is_valid(const char *label);

typedef struct cs_point_info {
        int64_t id;
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        char name[CS_POINT_NAME_MAX];
        char label[CS_TIMELINE_NAME_MAX + 1]; /* "" if none */
        cs_chunk_id root;
        int64_t created;      /* seconds since the epoch, UTC */
        uint64_t files;       /* entries of every type */
        uint64_t logical_bytes;
        uint64_t added_bytes; /* stored bytes of the chunks this point added */
} cs_point_info;

typedef struct cs_timeline_info {
        char name[CS_TIMELINE_NAME_MAX + 1];
        uint64_t points;
        int64_t newest; /* created time of the newest point, 0 if none */
        uint64_t logical_bytes; /* of the newest point */
} cs_timeline_info;

/* All timelines, by name.  *ret is an array to free(). */
int cs_timeline_list(cs_store *store, cs_timeline_info **ret, size_t *ret_n);

/* The points of a timeline, oldest first.  -ENOENT if no such timeline. */
int cs_point_list(cs_store *store, const char *timeline, cs_point_info **ret, size_t *ret_n);

/* Resolves POINT, which is a point name, a label or "latest". */
int cs_point_find(cs_store *store, const char *timeline, const char *point, cs_point_info *ret);

/* Adds a point, creating the timeline if needed.  Its name is info->created
 * in UTC ISO 8601 basic format (20261122T101505Z); a second point in the
 * same second gets "-2", "-3", ... appended.  info->timeline, label, root,
 * created, files, logical_bytes and added_bytes are read; name and id are
 * filled in.  Commits pending puts first.  -EEXIST if the label is taken. */
int cs_point_add(cs_store *store, cs_point_info *info);

/* Removes a point (its chunks go at the next gc).  Removes the timeline
 * with its last point. */
int cs_point_remove(cs_store *store, const char *timeline, const char *name);

/* Stored bytes reachable from the chunk tree at id and not already in
 * visited; adds what it walks to visited (a set from cs_reach_new()).
 * Used to tell what removing points would free. */
typedef struct cs_reach cs_reach;
cs_reach *cs_reach_new(void);
cs_reach *cs_reach_free(cs_reach *r);
int cs_reach_walk(cs_store *store, cs_reach *visited, const cs_chunk_id *id, uint64_t *ret_new_bytes);
/* Walks every root and point except the points named in skip (ids) and
 * the stored WAL of wal_timeline (if not NULL) below segment wal_before,
 * which a forget is about to drop (UINT64_MAX: all of it). */
int cs_reach_walk_roots(cs_store *store, cs_reach *visited, const int64_t *skip_points, size_t n_skip,
                        const char *wal_timeline, uint64_t wal_before);

/* Pins keep a tree alive through gc for as long as this process lives,
 * even after its point is forgotten: a mount pins every point it serves.
 * Each pin is its own (returned in *ret_pin, for unpin).  Pins of
 * processes that are gone (by pid and start time, as this PID namespace
 * sees them: run gc where the mounts' processes are visible) are dropped
 * by the next gc.  Work on handles opened without CS_OPEN_WRITE too. */
int cs_store_pin(cs_store *store, const cs_chunk_id *root, uint64_t *ret_pin);
int cs_store_unpin(cs_store *store, uint64_t pin);

/* What this handle's puts added to the store. */
typedef struct cs_put_counters {
        uint64_t chunks;
        uint64_t bytes;        /* uncompressed */
        uint64_t stored_bytes; /* in packs, record headers included */
} cs_put_counters;
void cs_store_put_counters(cs_store *store, cs_put_counters *ret);

/* --- Clones ------------------------------------------------------------------
 *
 * A clone is a writable copy of a point that stores only what it changes
 * (clone.c has the design notes).  Creating one takes constant time.
 */

typedef struct cs_clone cs_clone;

typedef struct cs_clone_info {
        char name[CS_TIMELINE_NAME_MAX + 1];
        char base_timeline[CS_TIMELINE_NAME_MAX + 1];
        char base_point[CS_POINT_NAME_MAX];
        cs_chunk_id base_root;
        int64_t created;
        uint64_t local_bytes; /* allocated by its delta files */
} cs_clone_info;

bool cs_clone_name_is_valid(const char *name);
/* The st_ino of a clone's inode (CS_CLONE_ROOT for its root). */
uint64_t cs_clone_stable_ino(const char *name, uint64_t ino);
/* -EEXIST if the name is taken. */
int cs_clone_create(cs_store *store, const char *name, const cs_point_info *from);
int cs_clone_list(cs_store *store, cs_clone_info **ret, size_t *ret_n);
int cs_clone_find(cs_store *store, const char *name, cs_clone_info *ret);
/* -EBUSY if the clone is open (mounted) and wait is false. */
int cs_clone_destroy(cs_store *store, const char *name, bool wait);
/* Adds info as a point of timeline info->timeline, a clone's, as
 * cs_point_add does, and records with it in the same transaction the
 * clone's base now (base_timeline, base_point): what the point's content
 * derives from.  -ENOENT if there is no such clone. */
int cs_clone_point_add(cs_store *store, cs_point_info *info);
/* Replaces the clone's contents with the point's (rewind, refresh).  Its
 * base becomes that point, or, for one of the clone's own snapshots, the
 * base recorded with it (cs_clone_point_add); base_root becomes to->root
 * either way.  -EBUSY if it is open and wait is false. */
int cs_clone_reset(cs_store *store, const char *name, const cs_point_info *to, bool wait);
/* Folds the clone into a point tree (put into the store, not yet a
 * point): unchanged subtrees and files are the base's own chunks, so this
 * costs what the clone changed.  -EBUSY if the clone is open. */
int cs_clone_fold(cs_store *store, const char *name, cs_chunk_id *ret_point_tree);
/* Reset and destroy of a clone the caller has open (a mount, asked through
 * its control socket): the caller's handle keeps the clone's lock, so no
 * one else can slip in between.  store must be a write handle.  After a
 * reset every inode number but the root's is gone (ENOENT); after a
 * destroy the handle works on unlinked files until it is closed. */
int cs_clone_reset_open(cs_clone *c, cs_store *store, const cs_point_info *to);
int cs_clone_destroy_open(cs_clone *c, cs_store *store);

/* Folds a clone open in this process (a mount's), putting chunks through
 * dst (opened with CS_OPEN_WRITE) and committing them; writers of the
 * clone wait meanwhile.  The tree is not a point yet: the caller adds it,
 * holding a write handle so that gc cannot take it first. */
int cs_clone_fold_open(cs_clone *c, cs_store *dst, cs_chunk_id *ret_point_tree);

/* The address of the control socket a mount listens on for a clone it
 * has open (abstract namespace, derived from the store and the name). */
int cs_clone_control_address(cs_store *store, const char *name, struct sockaddr_un *ret, socklen_t *ret_len);

/* Opens a clone for use (a mount): one process at a time (-EBUSY). */
int cs_clone_open(cs_store *store, const char *name, cs_clone **ret);
cs_clone *cs_clone_close(cs_clone *c);
const char *cs_clone_name(const cs_clone *c);

#define CS_CLONE_ROOT 1

typedef struct cs_clone_attr {
        uint64_t ino;        /* the clone's own inode number */
        uint64_t stable_ino; /* st_ino: stable for the clone's life */
        uint32_t mode, uid, gid, nlink;
        uint64_t size, rdev, blocks;
        struct timespec atime, mtime, ctime;
} cs_clone_attr;

typedef bool (*cs_clone_dirent_fn)(void *userdata, const void *name, size_t name_len, uint64_t stable_ino,
                                   uint32_t mode, uint64_t next);

enum {
        CS_SET_MODE = 1 << 0,
        CS_SET_UID = 1 << 1,
        CS_SET_GID = 1 << 2,
        CS_SET_SIZE = 1 << 3,
        CS_SET_ATIME = 1 << 4,
        CS_SET_MTIME = 1 << 5,
        CS_SET_CTIME = 1 << 6,
};
enum {
        CS_RENAME_NOREPLACE = 1 << 0,
        CS_RENAME_EXCHANGE = 1 << 1,
};
enum {
        CS_FALLOC_KEEP_SIZE = 1 << 0,
        CS_FALLOC_PUNCH_HOLE = 1 << 1,
};
enum {
        CS_XATTR_CREATE = 1 << 0,
        CS_XATTR_REPLACE = 1 << 1,
        /* Setting the access ACL clears S_ISGID: the caller is neither in
         * the file's group nor holds CAP_FSETID (the kernel's
         * posix_acl_update_mode(), which FUSE leaves to the daemon). */
        CS_XATTR_KILL_SGID = 1 << 2,
};

/* Inode operations: thread-safe, each one transaction.  Permission checks
 * are the caller's (the kernel's, with default_permissions). */
int cs_clone_getattr(cs_clone *c, uint64_t ino, cs_clone_attr *ret);
int cs_clone_lookup(cs_clone *c, uint64_t parent, const char *name, cs_clone_attr *ret);
int cs_clone_readdir(cs_clone *c, uint64_t ino, uint64_t offset, cs_clone_dirent_fn fn, void *userdata);
int cs_clone_readlink(cs_clone *c, uint64_t ino, char *buf, size_t size);
/* Makes a file, directory, symlink (target), FIFO, socket or device.  A
 * default ACL of the parent is inherited (as posix_acl_create() does);
 * without one, umask applies to mode. */
int cs_clone_create_node(cs_clone *c, uint64_t parent, const char *name, uint32_t mode, uint64_t rdev, uint32_t uid,
                         uint32_t gid, uint32_t umask, const char *target, cs_clone_attr *ret);
int cs_clone_link(cs_clone *c, uint64_t ino, uint64_t parent, const char *name, cs_clone_attr *ret);
/* child_open: the inode is open, so it outlives its last name until
 * cs_clone_release_inode(). */
int cs_clone_unlink(cs_clone *c, uint64_t parent, const char *name, bool dir_expected, bool child_open,
                    uint64_t *ret_ino);
int cs_clone_rename(cs_clone *c, uint64_t parent, const char *name, uint64_t new_parent, const char *new_name,
                    unsigned flags, bool replaced_open, uint64_t *ret_replaced);
int cs_clone_setattr(cs_clone *c, uint64_t ino, const cs_clone_attr *attr, unsigned valid, cs_clone_attr *ret);
ssize_t cs_clone_read(cs_clone *c, uint64_t ino, void *buf, size_t size, uint64_t offset);
ssize_t cs_clone_write(cs_clone *c, uint64_t ino, const void *buf, size_t size, uint64_t offset);
int cs_clone_fallocate(cs_clone *c, uint64_t ino, int mode, uint64_t offset, uint64_t length);
/* Durable: the delta file and every earlier change of the clone. */
int cs_clone_fsync(cs_clone *c, uint64_t ino, bool datasync);
int cs_clone_getxattr(cs_clone *c, uint64_t ino, const char *name, void *buf, size_t size);
int cs_clone_listxattr(cs_clone *c, uint64_t ino, char *buf, size_t size);
int cs_clone_setxattr(cs_clone *c, uint64_t ino, const char *name, const void *value, size_t size, int flags);
int cs_clone_removexattr(cs_clone *c, uint64_t ino, const char *name);
int cs_clone_release_inode(cs_clone *c, uint64_t ino);

/* --- PostgreSQL sources (pg.c) -------------------------------------------------
 *
 * A timeline linked to a PostgreSQL server: its connection (never with a
 * password), its replication slot, what each base backup point covers and
 * the WAL received since.  WAL segments are blob objects (below), kept
 * through gc like points.
 */

#define CS_PG_CONNINFO_MAX 1024
#define CS_PG_SLOT_MAX 64

typedef struct cs_pg_source {
        char timeline[CS_TIMELINE_NAME_MAX + 1];
        char conninfo[CS_PG_CONNINFO_MAX]; /* without any password */
        char slot[CS_PG_SLOT_MAX];
        uint64_t system_id;
        uint32_t segment_size; /* wal_segment_size, bytes */
        int64_t created;
} cs_pg_source;

/* -EEXIST if the timeline is linked already. */
int cs_pg_source_add(cs_store *store, const cs_pg_source *src);
/* -ENOENT if the timeline is not linked. */
int cs_pg_source_get(cs_store *store, const char *timeline, cs_pg_source *ret);
/* Unlinks the timeline: removes its link, its stored WAL and history and
 * the records of its base backups, in one transaction (their chunks go at
 * the next gc unless something else uses them).  Its points stay.
 * -ENOENT if it is not linked. */
int cs_pg_source_remove(cs_store *store, const char *timeline);

/* What a base backup point covers.  LSNs as 64-bit integers; times in
 * seconds since the epoch by clonectl's clock (start: the point's
 * created, taken before the backup was asked for; end: after the server
 * said it ended). */
typedef struct cs_pg_backup {
        int64_t point; /* cs_point_info.id */
        uint32_t tli;
        uint64_t start_lsn, end_lsn;
        int64_t start_time, end_time;
} cs_pg_backup;

/* Adds a base backup's point as cs_point_add does, and in the same
 * transaction its backup record (b->point and b->start_time are set to
 * the point's id and created) and, with src (pg link), the timeline's
 * link: -EEXIST if it is linked already.  On failure nothing is added. */
int cs_pg_point_add(cs_store *store, cs_point_info *info, cs_pg_backup *b, const cs_pg_source *src);
/* The backups of a timeline's existing points, by end LSN; *ret to free(). */
int cs_pg_backup_list(cs_store *store, const char *timeline, cs_pg_backup **ret, size_t *ret_n);

/* One stored WAL segment (whole or partial: its first size bytes). */
typedef struct cs_pg_wal {
        uint32_t tli;
        uint64_t segno;
        uint32_t size;
        bool partial;
        cs_chunk_id root;     /* a blob object */
        int64_t first_commit; /* commit timestamps in it, microseconds since */
        int64_t last_commit;  /* the epoch; 0 if it holds no commit */
} cs_pg_wal;

/* Commits pending puts, then records the segment.  A complete segment is
 * never replaced; a partial one only by a complete or longer one.
 * -ENOENT if the timeline is not linked (cs_pg_history_put too). */
int cs_pg_wal_put(cs_store *store, const char *timeline, const cs_pg_wal *w);
/* -ENOENT if not stored. */
int cs_pg_wal_get(cs_store *store, const char *timeline, uint32_t tli, uint64_t segno, cs_pg_wal *ret);
/* Every stored segment of a timeline, by segno then tli; *ret to free(). */
int cs_pg_wal_list(cs_store *store, const char *timeline, cs_pg_wal **ret, size_t *ret_n);
/* Removes the segments below before_segno (their chunks go at the next
 * gc).  Returns how many rows it removed. */
int cs_pg_wal_prune(cs_store *store, const char *timeline, uint64_t before_segno);
/* A timeline history file (tli's "0000000N.history"). */
int cs_pg_history_put(cs_store *store, const char *timeline, uint32_t tli, const void *content, size_t size);
/* *ret (NUL-terminated, to free()); -ENOENT if not stored. */
int cs_pg_history_get(cs_store *store, const char *timeline, uint32_t tli, void **ret, size_t *ret_size);

/* Blob objects: a byte string of any size up to about 4 GiB (a tree
 * object over its blocks).  build puts; read fills buf (-ENOBUFS if it is
 * smaller than the blob) and says the size. */
int cs_blob_build(cs_store *store, const void *data, size_t size, cs_chunk_id *ret);
int cs_blob_read(cs_store *store, const cs_chunk_id *id, void *buf, size_t buf_size, size_t *ret_size);
/* A blob's block ids (*ret_blocks to free()) and size, unread: the last
 * block may be short. */
int cs_blob_blocks(cs_store *store, const cs_chunk_id *id, cs_chunk_id **ret_blocks, size_t *ret_n,
                   uint64_t *ret_size);

/* --- The libraries, as loaded (version.c) ------------------------------- */

#define CS_LIBRARY_COUNT 3

typedef struct cs_library_version {
        const char *name;    /* "SQLite", "LZ4", "xxHash" */
        const char *package; /* the Debian package that provides it */
        const char *minimum; /* the oldest version this build accepts */
        char version[32];    /* the version loaded now */
        bool too_old;        /* version is older than minimum */
} cs_library_version;

/* Fills ret with the libraries the chunk store uses, as loaded at run
 * time.  Strings other than version are static. */
void cs_library_versions(cs_library_version ret[static CS_LIBRARY_COUNT]);

#ifdef __cplusplus
}
#endif

#endif
