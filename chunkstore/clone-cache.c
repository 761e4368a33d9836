/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Caches of a clone's open delta files and decoded base blocks (see
 * clone-cache.h).  Without them a PostgreSQL page write cost an openat()
 * and a close(), and a page read of a base block a segment decode plus a
 * block decode and re-hash, for every 8 KiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clone-cache.h"
#include "util/macro.h"

void cs_fd_cache_init(cs_fd_cache *cache)
{
        *cache = (cs_fd_cache) {};
        for (size_t i = 0; i < CS_FD_CACHE_SLOTS; i++)
                cache->slot[i].fd = -1;
}

static int open_delta(int dir_fd, uint64_t ino, bool create, bool *ret_created)
{
        char name[32];
        int fd;

        snprintf(name, sizeof(name), "%" PRIx64, ino);
        *ret_created = false;
        fd = openat(dir_fd, name, O_RDWR | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT || !create)
                return fd < 0 ? negative_errno() : fd;
        /* Created here, so the caller knows the directory changed. */
        fd = openat(dir_fd, name, O_RDWR | O_CLOEXEC | O_CREAT, 0600);
        if (fd < 0)
                return negative_errno();
        *ret_created = true;
        return fd;
}

int cs_fd_cache_get(cs_fd_cache *cache, int dir_fd, uint64_t ino, bool create, bool *ret_created)
{
        size_t victim = 0;
        bool created;
        int fd;

        for (size_t i = 0; i < CS_FD_CACHE_SLOTS; i++) {
                if (cache->slot[i].ino == ino && cache->slot[i].fd >= 0) {
                        cache->slot[i].used = ++cache->tick;
                        if (ret_created)
                                *ret_created = false;
                        return cache->slot[i].fd;
                }
                if (cache->slot[i].used < cache->slot[victim].used)
                        victim = i;
        }
        fd = open_delta(dir_fd, ino, create, &created);
        if (fd < 0)
                return fd;
        safe_close(cache->slot[victim].fd);
        cache->slot[victim].ino = ino;
        cache->slot[victim].fd = fd;
        cache->slot[victim].used = ++cache->tick;
        if (ret_created)
                *ret_created = created;
        return fd;
}

void cs_fd_cache_drop(cs_fd_cache *cache, uint64_t ino)
{
        for (size_t i = 0; i < CS_FD_CACHE_SLOTS; i++)
                if (cache->slot[i].ino == ino) {
                        cache->slot[i].fd = safe_close(cache->slot[i].fd);
                        cache->slot[i].ino = 0;
                        cache->slot[i].used = 0;
                }
}

void cs_fd_cache_clear(cs_fd_cache *cache)
{
        for (size_t i = 0; i < CS_FD_CACHE_SLOTS; i++)
                safe_close(cache->slot[i].fd);
        cs_fd_cache_init(cache);
}

int cs_block_cache_init(cs_block_cache *cache, size_t n_slots, uint32_t block_size)
{
        *cache = (cs_block_cache) { .n_slots = n_slots, .block_size = block_size };
        cache->key = calloc(n_slots, sizeof(*cache->key));
        /* Filled once and kept: huge pages, a fault per 2 MiB. */
        (void) huge_region_map(&cache->region, n_slots * block_size);
        cache->data = cache->region.base;
        if (!cache->key || !cache->data) {
                cs_block_cache_done(cache);
                return -ENOMEM;
        }
        return 0;
}

void cs_block_cache_done(cs_block_cache *cache)
{
        free(cache->key);
        huge_region_unmap(&cache->region);
        *cache = (cs_block_cache) {};
}

static size_t slot_of(const cs_block_cache *cache, uint64_t ino, uint64_t block)
{
        /* Neighbouring blocks of one file land in neighbouring slots. */
        uint64_t h = ino * UINT64_C(0x9e3779b97f4a7c15);
        return (size_t) ((h ^ (h >> 29)) + block) % cache->n_slots;
}

const uint8_t *cs_block_cache_find(const cs_block_cache *cache, uint64_t ino, uint64_t block)
{
        if (cache->n_slots == 0)
                return NULL;
        size_t s = slot_of(cache, ino, block);
        if (cache->key[s].ino != ino || cache->key[s].block != block)
                return NULL;
        return cache->data + s * cache->block_size;
}

void cs_block_cache_store(cs_block_cache *cache, uint64_t ino, uint64_t block, const uint8_t *data)
{
        if (cache->n_slots == 0)
                return;
        size_t s = slot_of(cache, ino, block);
        memcpy(cache->data + s * cache->block_size, data, cache->block_size);
        cache->key[s].ino = ino;
        cache->key[s].block = block;
}

void cs_block_cache_clear(cs_block_cache *cache)
{
        if (cache->key)
                memset(cache->key, 0, cache->n_slots * sizeof(*cache->key));
}

int cs_id_cache_init(cs_id_cache *cache, size_t n_slots)
{
        *cache = (cs_id_cache) { .n_slots = n_slots };
        cache->slot = calloc(n_slots, sizeof(*cache->slot));
        return cache->slot ? 0 : -ENOMEM;
}

void cs_id_cache_done(cs_id_cache *cache)
{
        free(cache->slot);
        *cache = (cs_id_cache) {};
}

static size_t id_slot_of(const cs_id_cache *cache, uint64_t ino, uint64_t block)
{
        uint64_t h = ino * UINT64_C(0x9e3779b97f4a7c15);
        return (size_t) ((h ^ (h >> 29)) + block) % cache->n_slots;
}

bool cs_id_cache_find(const cs_id_cache *cache, uint64_t ino, uint64_t block, cs_chunk_id *ret)
{
        if (cache->n_slots == 0)
                return false;
        const struct cs_id_slot *s = &cache->slot[id_slot_of(cache, ino, block)];
        if (s->ino != ino || s->block != block)
                return false;
        *ret = s->id;
        return true;
}

void cs_id_cache_store(cs_id_cache *cache, uint64_t ino, uint64_t block, const cs_chunk_id *id)
{
        if (cache->n_slots == 0)
                return;
        struct cs_id_slot *s = &cache->slot[id_slot_of(cache, ino, block)];
        *s = (struct cs_id_slot) { .ino = ino, .block = block, .id = *id };
}

void cs_id_cache_clear(cs_id_cache *cache)
{
        if (cache->slot)
                memset(cache->slot, 0, cache->n_slots * sizeof(*cache->slot));
}
