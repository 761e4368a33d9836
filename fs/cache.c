/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block cache: decompressed, verified blocks shared by every reader of
 * the mount, bounded in bytes, evicted least recently used first; and the
 * prefetch threads that fill it ahead of sequential readers, so that
 * decompression runs on every core while the kernel copies data out.
 *
 * Design notes
 *
 *  1. One loader per block: the first thread to miss inserts a LOADING
 *     entry and reads the chunk outside the lock; others wait on `loaded`.
 *  2. An entry in use (refs > 0) is never evicted, so `used` may exceed
 *     the capacity by what readers hold at once.
 *  3. A failed load stays in the table (with its error) only while its
 *     waiters look at it; the next acquire after that tries again.
 *  4. Prefetch requests go into a bounded ring; a full ring drops them:
 *     prefetch is a hint, never a reason to block a reader.
 *  5. Block buffers come from one region the size of the cache, backed by
 *     transparent huge pages where the kernel allows, and an evicted
 *     block's buffer goes to the next load instead of back to malloc.
 *     Page faults are dear (14 us per 4 KiB page on the 2-core VM of
 *     docs/BENCHMARKS.md, a third of the daemon's time in a cold read):
 *     filling the cache then costs a fault per 2 MiB, not per 4 KiB, and
 *     never again once it is full.  Only buffers beyond the capacity
 *     (blocks held by readers, design note 2) come from malloc; up to
 *     SPARE_BUFFERS of those are kept too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clonefs.h"
#include "util/hugemem.h"
#include "util/macro.h"

#define PREFETCH_RING 1024
#define SPARE_BUFFERS 64

enum { LOADING = 1, READY = 0 };

typedef struct centry {
        cfs_block block; /* first: a cfs_block pointer is an entry pointer */
        cs_chunk_id id;
        uint8_t *data;
        int refs;
        int state; /* LOADING, READY, or a negative errno */
        struct centry *hash_next;
        struct centry *lru_prev, *lru_next;
} centry;

struct cfs_cache {
        cs_store *store;
        uint32_t block_size;
        size_t capacity, used;

        pthread_mutex_t lock;
        pthread_cond_t loaded;
        centry **table;
        size_t table_size;
        centry lru; /* sentinel: lru.lru_next is the most recent */
        /* Design note 5: buffers from the region, bump-allocated, and
         * free buffers (the region's and up to SPARE_BUFFERS others). */
        huge_region region;
        size_t region_used;
        uint8_t **spares;
        size_t n_spares, n_heap_spares, max_spares;

        pthread_cond_t work;
        cs_chunk_id ring[PREFETCH_RING];
        size_t ring_head, ring_count;
        bool stopping;
        pthread_t *threads;
        int n_threads;
};

static size_t bucket_of(const cfs_cache *c, const cs_chunk_id *id)
{
        size_t h;
        memcpy(&h, id->bytes, sizeof(h));
        return h & (c->table_size - 1);
}

static centry *find(cfs_cache *c, const cs_chunk_id *id)
{
        for (centry *e = c->table[bucket_of(c, id)]; e; e = e->hash_next)
                if (cs_chunk_id_equal(&e->id, id))
                        return e;
        return NULL;
}

static void lru_unlink(centry *e)
{
        if (e->lru_prev) {
                e->lru_prev->lru_next = e->lru_next;
                e->lru_next->lru_prev = e->lru_prev;
                e->lru_prev = e->lru_next = NULL;
        }
}

static void lru_push_front(cfs_cache *c, centry *e)
{
        e->lru_next = c->lru.lru_next;
        e->lru_prev = &c->lru;
        c->lru.lru_next->lru_prev = e;
        c->lru.lru_next = e;
}

/* A block buffer (under the lock), or NULL: the caller mallocs one. */
static uint8_t *buffer_get(cfs_cache *c)
{
        if (c->n_spares > 0) {
                uint8_t *p = c->spares[--c->n_spares];
                if (!huge_region_contains(&c->region, p))
                        c->n_heap_spares--;
                return p;
        }
        if (c->region.base && c->region_used + c->block_size <= c->region.size) {
                c->region_used += c->block_size;
                return c->region.base + c->region_used - c->block_size;
        }
        return NULL;
}

static void buffer_put(cfs_cache *c, uint8_t *p)
{
        if (!p)
                return;
        if (huge_region_contains(&c->region, p)) {
                c->spares[c->n_spares++] = p; /* always room: max_spares counts them */
        } else if (c->n_heap_spares < SPARE_BUFFERS) {
                c->spares[c->n_spares++] = p;
                c->n_heap_spares++;
        } else {
                free(p);
        }
}

static void remove_entry(cfs_cache *c, centry *e)
{
        for (centry **p = &c->table[bucket_of(c, &e->id)]; *p; p = &(*p)->hash_next)
                if (*p == e) {
                        *p = e->hash_next;
                        break;
                }
        lru_unlink(e);
        if (e->state == READY)
                c->used -= e->block.size;
        buffer_put(c, e->data);
        free(e);
}

static void evict(cfs_cache *c)
{
        centry *e = c->lru.lru_prev;

        while (c->used > c->capacity && e != &c->lru) {
                centry *prev = e->lru_prev;
                if (e->refs == 0)
                        remove_entry(c, e);
                e = prev;
        }
}

int cfs_cache_acquire(cfs_cache *c, const cs_chunk_id *id, const cfs_block **ret)
{
        centry *e;
        int r;

        pthread_mutex_lock(&c->lock);
        e = find(c, id);
        if (e && e->state < 0 && e->refs == 0) {
                remove_entry(c, e); /* a stale failure: try again */
                e = NULL;
        }
        if (e) {
                e->refs++;
                while (e->state == LOADING)
                        pthread_cond_wait(&c->loaded, &c->lock);
                r = e->state;
                if (r == READY) {
                        lru_unlink(e);
                        lru_push_front(c, e);
                }
                if (r < 0)
                        e->refs--;
                pthread_mutex_unlock(&c->lock);
                if (r < 0)
                        return r;
                *ret = &e->block;
                return 0;
        }

        e = calloc(1, sizeof(*e));
        if (!e) {
                pthread_mutex_unlock(&c->lock);
                return -ENOMEM;
        }
        e->id = *id;
        e->refs = 1;
        e->state = LOADING;
        e->hash_next = c->table[bucket_of(c, id)];
        c->table[bucket_of(c, id)] = e;
        e->data = buffer_get(c);
        pthread_mutex_unlock(&c->lock);

        /* Design note 1: the load runs unlocked. */
        if (!e->data)
                e->data = malloc(c->block_size);
        r = e->data ? cs_store_get(c->store, id, e->data, c->block_size) : -ENOMEM;

        pthread_mutex_lock(&c->lock);
        if (r >= 0) {
                e->block = (cfs_block) { .data = e->data, .size = (size_t) r };
                e->state = READY;
                c->used += (size_t) r;
                lru_push_front(c, e);
                evict(c);
        } else {
                /* Its waiters read only the error: the buffer can serve
                 * another load while the failure waits to be retried. */
                buffer_put(c, e->data);
                e->data = NULL;
                e->state = r;
                e->refs--;
        }
        pthread_cond_broadcast(&c->loaded);
        pthread_mutex_unlock(&c->lock);
        if (r < 0)
                return r;
        *ret = &e->block;
        return 0;
}

void cfs_cache_release(cfs_cache *c, const cfs_block *b)
{
        centry *e = (centry *) b;

        pthread_mutex_lock(&c->lock);
        e->refs--;
        if (e->refs == 0 && c->used > c->capacity)
                evict(c);
        pthread_mutex_unlock(&c->lock);
}

void cfs_cache_prefetch(cfs_cache *c, const cs_chunk_id *ids, size_t n)
{
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < n && c->ring_count < PREFETCH_RING; i++) {
                if (cs_chunk_id_is_zero(&ids[i]) || find(c, &ids[i]))
                        continue;
                c->ring[(c->ring_head + c->ring_count) % PREFETCH_RING] = ids[i];
                c->ring_count++;
        }
        pthread_cond_broadcast(&c->work);
        pthread_mutex_unlock(&c->lock);
}

static void *prefetch_main(void *userdata)
{
        cfs_cache *c = userdata;

        for (;;) {
                cs_chunk_id id;
                const cfs_block *b;

                pthread_mutex_lock(&c->lock);
                while (c->ring_count == 0 && !c->stopping)
                        pthread_cond_wait(&c->work, &c->lock);
                if (c->stopping) {
                        pthread_mutex_unlock(&c->lock);
                        return NULL;
                }
                id = c->ring[c->ring_head];
                c->ring_head = (c->ring_head + 1) % PREFETCH_RING;
                c->ring_count--;
                pthread_mutex_unlock(&c->lock);

                /* Errors surface when a reader asks; a prefetch only warms. */
                if (cfs_cache_acquire(c, &id, &b) == 0)
                        cfs_cache_release(c, b);
        }
}

int cfs_cache_new(cs_store *store, size_t capacity, int prefetch_threads, cfs_cache **ret)
{
        cfs_cache *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->store = store;
        c->block_size = cs_store_block_size(store);
        c->capacity = capacity;
        c->table_size = 1;
        while (c->table_size < MAX(capacity / c->block_size, 64u) * 2)
                c->table_size *= 2;
        c->table = calloc(c->table_size, sizeof(*c->table));
        c->threads = calloc((size_t) MAX(prefetch_threads, 1), sizeof(*c->threads));
        /* Design note 5.  Without the region (a cache smaller than a block,
         * or no address space), every buffer comes from malloc. */
        (void) huge_region_map(&c->region, capacity / c->block_size * c->block_size);
        c->max_spares = c->region.size / c->block_size + SPARE_BUFFERS;
        c->spares = calloc(c->max_spares, sizeof(*c->spares));
        if (!c->table || !c->threads || !c->spares) {
                huge_region_unmap(&c->region);
                free(c->spares);
                free(c->table);
                free(c->threads);
                free(c);
                return -ENOMEM;
        }
        c->lru.lru_next = c->lru.lru_prev = &c->lru;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->loaded, NULL);
        pthread_cond_init(&c->work, NULL);
        for (int i = 0; i < prefetch_threads; i++)
                if (pthread_create(&c->threads[c->n_threads], NULL, prefetch_main, c) == 0)
                        c->n_threads++;
        *ret = c;
        return 0;
}

cfs_cache *cfs_cache_free(cfs_cache *c)
{
        if (!c)
                return NULL;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_cond_broadcast(&c->work);
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < c->n_threads; i++)
                pthread_join(c->threads[i], NULL);
        for (size_t i = 0; i < c->table_size; i++)
                for (centry *e = c->table[i], *next; e; e = next) {
                        next = e->hash_next;
                        if (!huge_region_contains(&c->region, e->data))
                                free(e->data);
                        free(e);
                }
        for (size_t i = 0; i < c->n_spares; i++)
                if (!huge_region_contains(&c->region, c->spares[i]))
                        free(c->spares[i]);
        huge_region_unmap(&c->region);
        free(c->spares);
        free(c->table);
        free(c->threads);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->loaded);
        pthread_cond_destroy(&c->work);
        return mfree(c);
}
