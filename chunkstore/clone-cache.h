/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Per-clone caches that keep the write and read paths off the file system
 * and the catalog: open delta files by inode, and decoded base blocks by
 * (inode, block).  Both live inside a cs_clone and are used only under its
 * mutex, so they have no locks of their own.  Internal to the library.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "chunkstore.h"
#include "util/hugemem.h"

#define CS_FD_CACHE_SLOTS 64

typedef struct cs_fd_cache {
        struct {
                uint64_t ino; /* 0: free */
                int fd;
                uint64_t used;
        } slot[CS_FD_CACHE_SLOTS];
        uint64_t tick;
} cs_fd_cache;

void cs_fd_cache_init(cs_fd_cache *cache);

/* Returns the delta file of ino, opened read-write in dir_fd under its hex
 * name; created when create is true (*ret_created tells whether it was).
 * The fd is borrowed: valid until the next call on the cache.  -ENOENT
 * when it does not exist and create is false. */
int cs_fd_cache_get(cs_fd_cache *cache, int dir_fd, uint64_t ino, bool create, bool *ret_created);

/* Closes the cached fd of ino, if any: call before its file is unlinked
 * or replaced. */
void cs_fd_cache_drop(cs_fd_cache *cache, uint64_t ino);
void cs_fd_cache_clear(cs_fd_cache *cache);

/* A direct-mapped cache of decoded base blocks.  Base content never
 * changes for an inode number (inode numbers are never reused in a
 * clone's catalog), so entries need no invalidation except on a reset,
 * which replaces the catalog. */
typedef struct cs_block_cache {
        size_t n_slots;
        uint32_t block_size;
        struct {
                uint64_t ino; /* 0: free */
                uint64_t block;
        } *key;
        uint8_t *data; /* n_slots blocks, in region */
        huge_region region;
} cs_block_cache;

int cs_block_cache_init(cs_block_cache *cache, size_t n_slots, uint32_t block_size);
void cs_block_cache_done(cs_block_cache *cache);

/* The cached bytes of (ino, block), or NULL; borrowed until the next
 * store into the cache. */
const uint8_t *cs_block_cache_find(const cs_block_cache *cache, uint64_t ino, uint64_t block);
void cs_block_cache_store(cs_block_cache *cache, uint64_t ino, uint64_t block, const uint8_t *data);
void cs_block_cache_clear(cs_block_cache *cache);

/* Base block ids by (inode, block), direct-mapped.  A segmented file's
 * ids live in segment chunks that cost a read and a decode each; one
 * segment load fills the ids of CS_ID_CACHE_RUN neighbouring blocks. */
#define CS_ID_CACHE_RUN 256

typedef struct cs_id_cache {
        size_t n_slots;
        struct cs_id_slot {
                uint64_t ino; /* 0: free */
                uint64_t block;
                cs_chunk_id id;
        } *slot;
} cs_id_cache;

int cs_id_cache_init(cs_id_cache *cache, size_t n_slots);
void cs_id_cache_done(cs_id_cache *cache);
bool cs_id_cache_find(const cs_id_cache *cache, uint64_t ino, uint64_t block, cs_chunk_id *ret);
void cs_id_cache_store(cs_id_cache *cache, uint64_t ino, uint64_t block, const cs_chunk_id *id);
void cs_id_cache_clear(cs_id_cache *cache);
