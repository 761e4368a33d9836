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
 * processes may open the same store at the same time.
 */
#ifndef CLONEFS_CHUNKSTORE_H
#define CLONEFS_CHUNKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The on-disk format this library reads and writes.  A store with a larger
 * number is refused with -EPROTONOSUPPORT. */
#define CS_FORMAT_VERSION 1

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

/* Closes the handle.  Puts not yet committed are discarded (their bytes
 * stay in the pack as reclaimable garbage).  Accepts NULL; returns NULL. */
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
 * every chunk of every commit that returned. */
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

#ifdef __cplusplus
}
#endif

#endif
