/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal interfaces of libclonefs-chunkstore: the store object and the
 * modules it is built from.  Never installed, never included outside
 * chunkstore/ (the tests excepted).
 *
 *   chunk.c   keyed hashing, compression, pack record encoding
 *   config.c  the store's config file
 *   index.c   the SQLite catalog: schema, statements, transactions
 *   pack.c    pack files: create, append, read, recover
 *   store.c   the cs_store object: open, put, commit, get, roots
 *   gc.c      mark-and-sweep, compaction, reachability
 *   verify.c  consistency checks and statistics
 *   tree.c    point trees: points, directories, pages, segments
 *   timeline.c timelines, points and pins in the catalog
 */
#ifndef CS_INTERNAL_H
#define CS_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#include "chunkstore.h"
#include "util/macro.h"

/* --- chunk.c ------------------------------------------------------------ */

#define CS_SECRET_SIZE 32          /* the store's key, as kept in the config */
#define CS_HASH_SECRET_SIZE 192    /* XXH3's secret, derived from the key */

typedef struct cs_hasher {
        uint8_t secret[_CS_KIND_MAX][CS_HASH_SECRET_SIZE];
} cs_hasher;

void cs_hasher_init(cs_hasher *h, const uint8_t key[CS_SECRET_SIZE]);
void cs_hasher_hash(const cs_hasher *h, cs_chunk_kind kind, const void *data, size_t size,
                    cs_chunk_id *ret_id);
bool cs_is_zero(const void *data, size_t size);

typedef enum cs_codec {
        CS_CODEC_RAW = 0,
        CS_CODEC_LZ4 = 1,
        _CS_CODEC_MAX,
} cs_codec;

/*
 * A pack record: a fixed header, then stored_size bytes of payload.
 *
 *     le32 magic "CSRC" | u8 kind | u8 codec | le16 reserved (0)
 *     le32 size | le32 stored_size | 16-byte id
 */
#define CS_RECORD_MAGIC 0x43525343u /* "CSRC" */
#define CS_RECORD_HEADER_SIZE 32

typedef struct cs_record_header {
        cs_chunk_kind kind;
        cs_codec codec;
        uint32_t size;
        uint32_t stored_size;
        cs_chunk_id id;
} cs_record_header;

void cs_record_header_encode(const cs_record_header *h, uint8_t out[CS_RECORD_HEADER_SIZE]);
int cs_record_header_decode(const uint8_t in[CS_RECORD_HEADER_SIZE], cs_record_header *ret);

/* Builds a whole record (header + payload) in a new buffer of
 * *ret_record_size bytes: LZ4 (HC at lz4hc_level if > 0) when that
 * shrinks the data, raw otherwise. */
int cs_record_build(cs_chunk_kind kind, const cs_chunk_id *id, const void *data, size_t size,
                    int lz4hc_level, uint8_t **ret_record, size_t *ret_record_size);

/* Decodes a payload into out (exactly h->size bytes) and checks it hashes
 * to h->id: -EBADMSG on any mismatch. */
int cs_record_decode_payload(const cs_hasher *hasher, const cs_record_header *h,
                             const void *payload, void *out);

/* --- config.c ----------------------------------------------------------- */

typedef struct cs_config {
        unsigned format;
        uint32_t block_size;
        int lz4hc_level;
        uint8_t secret[CS_SECRET_SIZE];
} cs_config;

#define CS_CONFIG_FILE "config"
#define CS_CATALOG_FILE "catalog.db"
#define CS_LOCK_FILE "lock"
#define CS_PACK_DIR "packs"

int cs_config_write(int dir_fd, const cs_config *config);
int cs_config_read(int dir_fd, cs_config *ret_config);

/* --- index.c ------------------------------------------------------------ */

typedef struct cs_index cs_index;

/* The newest catalog schema this library reads (pg.c adds 2's tables). */
#define CS_SCHEMA_MAX 2

typedef struct cs_location {
        cs_chunk_kind kind;
        uint64_t pack;
        uint64_t offset; /* of the record header */
        uint32_t size;
        uint32_t stored_size;
} cs_location;

/* Maps a SQLite result code to a negative errno. */
int cs_sqlite_errno(int rc);

int cs_index_create(int dir_fd);
int cs_index_open(int dir_fd, bool writable, cs_index **ret_index);
cs_index *cs_index_free(cs_index *index);

/* Thread-safe; readers use a pool of connections and never wait for a
 * writer (WAL). */
int cs_index_lookup(cs_index *index, const cs_chunk_id *id, cs_location *ret_loc);
/* The same for put's "is it stored already?", in a read transaction kept
 * across lookups while generation (the caller's count of its commits)
 * stays the same (index.c, design note 4). */
int cs_index_lookup_for_put(cs_index *index, const cs_chunk_id *id, cs_location *ret_loc, uint64_t generation);
/* Ends the snapshots held for puts by pooled connections: called by every
 * commit, so that none keeps the catalog's WAL from being checkpointed. */
void cs_index_release_snapshots(cs_index *index);

/* The writer connection, for the store's writer (callers serialize). */
sqlite3 *cs_index_writer(cs_index *index);
/* Takes a reader connection from the pool; give it back with
 * cs_index_reader_release(). */
int cs_index_reader_acquire(cs_index *index, sqlite3 **ret_db);
void cs_index_reader_release(cs_index *index, sqlite3 *db);

int cs_index_begin(sqlite3 *db);   /* BEGIN IMMEDIATE, waiting for other writers */
int cs_index_commit(sqlite3 *db);
void cs_index_rollback(sqlite3 *db);
int cs_index_exec(sqlite3 *db, const char *sql);
int cs_index_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret_stmt);
/* sqlite3_step() mapped to 0 or a negative errno, with the system errno
 * behind an I/O error (a full disk is -ENOSPC, not -EIO). */
int cs_index_step(sqlite3_stmt *stmt);
/* Runs a query returning one integer; *ret is 0 when it returns no row. */
int cs_index_query_int(sqlite3 *db, const char *sql, int64_t arg, int64_t *ret);
/* 1 if the catalog has a table of that name, 0 if not: some are made by
 * their first write (clones, clone_points, the pg_ tables). */
int cs_index_table_exists(sqlite3 *db, const char *name);

static inline void sqlite3_finalizep(sqlite3_stmt **stmt)
{
        sqlite3_finalize(*stmt);
}

static inline void sqlite3_freep(char **s)
{
        sqlite3_free(*s);
}

/* --- pack.c ------------------------------------------------------------- */

#define CS_PACK_MAGIC "CSPACK\r\n"
#define CS_PACK_HEADER_SIZE 32
#define CS_PACK_TARGET_SIZE (64ull * 1024 * 1024)

enum {
        CS_PACK_OPEN = 0,   /* a writer appends to it */
        CS_PACK_SEALED = 1, /* immutable */
};

/* --- stage.c: an open pack's unwritten tail, for direct I/O ------------- */

#define CS_STAGE_SEGMENT (1024u * 1024u) /* one direct write */
#define CS_STAGE_SEGMENTS 8u
#define CS_STAGE_ALIGN 4096u /* of direct writes' offsets and sizes */
#define CS_STAGE_FILLS 64u   /* reservations being filled at once, at most */

/* Rings of a store handle's stages, reused from pack to pack. */
typedef struct cs_stage_pool cs_stage_pool;
cs_stage_pool *cs_stage_pool_new(void);
cs_stage_pool *cs_stage_pool_free(cs_stage_pool *p);

typedef struct cs_stage cs_stage;
/* A stage for the pack open as fd, whose first head_size bytes (at most a
 * segment) are head, and its flusher thread. */
int cs_stage_new(cs_stage_pool *pool, int fd, const void *head, size_t head_size, cs_stage **ret);
/* Stops the flusher; what was not flushed is dropped. */
cs_stage *cs_stage_free(cs_stage *s);
/* Reserves the file's [offset, offset + size) for a record; offset must
 * be the end of what was reserved.  Callers serialize reservations. */
int cs_stage_reserve(cs_stage *s, uint64_t offset, size_t size, uint64_t *ret_ticket);
/* Copies a reservation's bytes into the ring, waiting for room; any
 * thread, no lock of the caller's needed.  On failure the reservation's
 * bytes are garbage. */
int cs_stage_fill(cs_stage *s, uint64_t ticket, const void *data);
/* Writes what was reserved below upto to the file (not fdatasync), once
 * its fills are done. */
int cs_stage_flush(cs_stage *s, uint64_t upto);
/* Copies the part of the file's [offset, offset + size) that is still only
 * in the ring into buf; returns how many leading bytes must be read from
 * the file (size if all). */
size_t cs_stage_read(cs_stage *s, uint64_t offset, void *buf, size_t size);

typedef struct cs_pack_writer {
        uint64_t id;
        int fd;
        uint64_t size;      /* bytes written or reserved so far, header included */
        uint64_t committed; /* bytes the catalog's rows account for */
        unsigned inflight;  /* reserved records still being written (store.c) */
        cs_stage *stage;    /* staged direct writes, or NULL: buffered pwrite */
} cs_pack_writer;

/* Formats "packs/<16 hex digits>.pack" into buf. */
void cs_pack_path(uint64_t id, char buf[static 64]);
/* Registers a new open pack in the catalog, creates and locks its file.
 * With a pool and a file system that does direct I/O, appends go through
 * a stage; else each is a pwrite. */
int cs_pack_create(int dir_fd, sqlite3 *db, cs_stage_pool *pool, cs_pack_writer *ret_writer);
/* A record's place at the end of an open pack: reserved under the
 * caller's lock, written without it (store.c, design note 2). */
typedef struct cs_pack_slot {
        int fd;
        cs_stage *stage; /* or NULL: a pwrite */
        uint64_t offset;
        size_t size;
        uint64_t ticket; /* the stage's reservation */
} cs_pack_slot;
/* Reserves size bytes at the end of the pack, serialized by the caller.
 * The writer's fd and stage must stay open until the slot is filled. */
int cs_pack_reserve(cs_pack_writer *w, size_t size, cs_pack_slot *ret_slot);
/* Writes a record into its slot (staged, or written; then, every
 * CS_PACK_WRITEBACK_WINDOW bytes, starts writeback so that the commit's
 * fdatasync finds little left to write).  On failure the slot's bytes
 * are garbage that no row points at. */
#define CS_PACK_WRITEBACK_WINDOW (8u * 1024 * 1024)
int cs_pack_fill(const cs_pack_slot *slot, const void *record);
/* Both, under the caller's lock. */
int cs_pack_append(cs_pack_writer *w, const void *record, size_t size, uint64_t *ret_offset);
/* Writes what the stage holds below upto to the file (nothing without a
 * stage).  On failure the bytes stay staged, and a later flush tries
 * again. */
int cs_pack_flush(cs_pack_writer *w, uint64_t upto);
/* Reads [offset, offset + size) of an open pack's file that is still
 * staged into buf; returns how many leading bytes must come from the file. */
size_t cs_pack_read_staged(cs_pack_writer *w, uint64_t offset, void *buf, size_t size);
/* fdatasync()s the pack, after cs_pack_flush().  sealing: its size is
 * final, and the file is cut to it (a flushed stage pads to 4 KiB). */
int cs_pack_sync(cs_pack_writer *w, bool sealing);
/* Records the pack's size and marks it sealed (in the caller's transaction). */
int cs_pack_seal(cs_pack_writer *w, sqlite3 *db);
void cs_pack_writer_close(cs_pack_writer *w);
/* Cuts off what was never committed and seals the pack (closing a handle). */
int cs_pack_abandon(cs_pack_writer *w, sqlite3 *db);
/* Finds open packs whose writer died, truncates their uncommitted tails
 * and seals them.  exclusive: the caller excludes every writer (gc), so
 * an OPEN row without a file is dead too. */
int cs_pack_recover(int dir_fd, sqlite3 *db, bool exclusive);
/* Checks a pack file's header. */
int cs_pack_check_header(int fd, uint64_t id);

/* A small cache of read-only pack descriptors shared by reader threads. */
typedef struct cs_pack_cache cs_pack_cache;
int cs_pack_cache_new(int dir_fd, cs_pack_cache **ret);
cs_pack_cache *cs_pack_cache_free(cs_pack_cache *c);
/* Reads a record at loc into buf (CS_RECORD_HEADER_SIZE + stored_size
 * bytes).  -ENOENT if the pack is gone (moved by compaction). */
int cs_pack_cache_read(cs_pack_cache *c, const cs_location *loc, void *buf);
/* Reads size bytes at offset of pack id into buf; a short read is -EBADMSG. */
int cs_pack_cache_pread(cs_pack_cache *c, uint64_t id, uint64_t offset, void *buf, size_t size);
/* Forgets a pack's descriptor (after compaction removed it). */
void cs_pack_cache_drop(cs_pack_cache *c, uint64_t id);

/* --- store.c ------------------------------------------------------------ */

typedef struct cs_pending cs_pending;

/* New chunks that putters of one handle may compress at once without a
 * second copy of the same one (store.c, design note 7). */
#define CS_CLAIMS_MAX 64u

struct cs_store {
        char *path;
        int dir_fd;
        int lock_fd;
        unsigned flags;
        cs_config config;
        cs_hasher hasher;
        cs_index *index;
        cs_pack_cache *packs;

        cs_log_fn log_fn;
        void *log_userdata;

        /* Everything below is the writer's state, under write_lock. */
        pthread_mutex_t write_lock;
        cs_pack_writer pack;
        cs_stage_pool *stage_pool;
        cs_pending *pending;
        cs_pending *committing; /* the batch a commit is syncing, or NULL */
        bool commit_running;    /* a commit is under way (it may wait unlocked) */
        unsigned retiring_inflight; /* writes still going into a pack being sealed */
        uint64_t retiring_id;
        cs_pending *spare;      /* an empty table, reused as the next pending */
        pthread_cond_t commit_done;
        /* The committer thread (store.c, design note 6), started by the
         * first full batch. */
        pthread_t committer;
        pid_t committer_pid;
        bool committer_started, committer_stop, commit_wanted;
        int commit_error; /* the last background commit's, until one succeeds */
        int lost_error;   /* a failed commit dropped acknowledged puts */
        pthread_cond_t commit_wake;
        uint64_t pending_logical_bytes;
        /* Ids that a putter found new and is storing (design note 7). */
        cs_chunk_id claims[CS_CLAIMS_MAX];
        unsigned n_claims, claim_waiters;
        pthread_cond_t claim_done;
        /* Batches committed, written under write_lock and read atomically
         * too: a held lookup snapshot older than one is stale. */
        uint64_t commits;
        cs_put_counters added; /* what this handle's puts added */
        uint64_t pins;         /* pins made through this handle */
};

void cs_store_log(cs_store *store, int error, const char *format, ...) _printf_(3, 4);

/* Whether a store writes a segmented file's data-block count, in a point's
 * entry (tree.c, design note 2) and a clone's base blob (clone.c): from
 * format 2 on, which a format 1 reader would misread. */
static inline bool cs_store_writes_data_blocks(const cs_store *store)
{
        return store->config.format >= 2;
}

/* Reads and verifies the chunk at loc into buf (loc->size bytes). */
int cs_store_read_location(cs_store *store, const cs_location *loc, const cs_chunk_id *id,
                           void *buf);
/* Looks a chunk up among this handle's uncommitted puts, then the catalog. */
int cs_store_locate(cs_store *store, const cs_chunk_id *id, cs_location *ret_loc);
/* Appends a ready record to the current pack as an uncommitted chunk
 * (callers hold write_lock). */
int cs_store_append_locked(cs_store *store, const cs_record_header *h, const uint8_t *record,
                           size_t record_size);
/* Commits pending puts; with seal, also seals the open pack.  Callers hold
 * write_lock; it is released while the pack is fdatasync()ed and the batch
 * written to the catalog, so callers must not keep pointers into the
 * writer state across the call. */
int cs_store_commit_locked(cs_store *store, bool seal);
/* The catalog's writer connection, for a caller holding write_lock: waits
 * until no commit is using it (a commit writes its batch unlocked). */
sqlite3 *cs_store_writer_locked(cs_store *store);
/* Ends such a use: finalizes the caller's statement while the connection
 * is still its own (a background commit may take it as soon as write_lock
 * is let go), then unlocks. */
void cs_store_writer_unlock(cs_store *store, sqlite3_stmt **stmt);

/* timeline.c: cs_point_add, and also, in the same transaction, whatever
 * `also` writes about the new point (info->id and name are set) on the
 * catalog's writer connection db.  also's error rolls the point back. */
typedef int (*cs_point_add_also)(sqlite3 *db, const cs_point_info *info, void *userdata);
int cs_point_add_with(cs_store *store, cs_point_info *info, cs_point_add_also also, void *userdata);

/* timeline.c: pins.  Start time of a process (field 22 of /proc/PID/stat);
 * -ESRCH if it does not exist. */
int cs_process_start_time(pid_t pid, uint64_t *ret);
/* Deletes the pins of processes that are gone (gc, under the exclusive lock). */
int cs_store_drop_stale_pins(cs_store *store, sqlite3 *db);

/* Lock modes on the store's lock file. */
int cs_store_lock(cs_store *store, int operation, bool nowait);

/* The mark phase shared by gc and verify: fills a set of every id reachable
 * from a root.  Missing or damaged tree chunks are reported through
 * cs_store_log and counted. */
typedef struct cs_idset cs_idset;
cs_idset *cs_idset_new(void);
cs_idset *cs_idset_free(cs_idset *s);
int cs_idset_add(cs_idset *s, const cs_chunk_id *id); /* 1 if added, 0 if present */
bool cs_idset_contains(const cs_idset *s, const cs_chunk_id *id);
size_t cs_idset_size(const cs_idset *s);

typedef struct cs_mark_result {
        uint64_t missing;
        uint64_t damaged;
} cs_mark_result;

typedef void (*cs_mark_problem_fn)(void *userdata, int error, const cs_chunk_id *id,
                                   const cs_chunk_id *parent);
int cs_store_mark(cs_store *store, sqlite3 *db, cs_idset *marked, cs_mark_problem_fn problem,
                  void *userdata, cs_mark_result *ret);

#endif
