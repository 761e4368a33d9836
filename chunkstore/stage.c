/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Stages: the open pack's unwritten tail, kept in memory and written to
 * the file with direct I/O in whole segments.
 *
 * Why: a buffered pwrite() sends every pack byte through a page-cache page
 * that the kernel must allocate, zero, fill and later write back.  On the
 * VMs we run on, memory the guest frees goes back to the host, so each
 * newly allocated page costs a host fault too; that copy took 22% of a
 * putting thread's time, and left put new at 0.92x one core's `lz4 -1`
 * (docs/BENCHMARKS.md).  Direct I/O from a ring the store reuses touches
 * no new memory, and an ingest no longer pushes the source's own data
 * out of the page cache.
 *
 * Design notes
 *
 *  1. A stage is a ring of CS_STAGE_SEGMENTS slots of CS_STAGE_SEGMENT
 *     bytes.  Segment k is the image of the file's bytes [k * SEGMENT,
 *     (k + 1) * SEGMENT) and sits in slot k % SEGMENTS.
 *  2. A record's place is reserved first, in file order, under the
 *     caller's lock (the store's write_lock), which then lets go: the
 *     copy into the ring (cs_stage_fill) runs without it, so that two
 *     putters do not wait for each other's copies.  Fills finish in any
 *     order; `filled` is the end of the complete prefix, up to which the
 *     oldest unfinished reservation has copied.  A reservation is one of
 *     CS_STAGE_FILLS entries in a table of its own (`fills`), not in the
 *     caller's memory: a fill that ends before older ones returns while
 *     its entry is still needed.
 *  3. The stage's flusher thread writes each full segment below `filled`,
 *     in order, with one pwrite; `written` then moves past it and its slot
 *     is free for segment k + SEGMENTS.  A fill that finds no free slot
 *     waits: the disk is then what limits puts.  The oldest unfinished
 *     fill always has room (everything before it is complete, so the
 *     flusher can free slots), so fills cannot wait on each other in a
 *     circle.  A stage used from a forked child, which has no flusher,
 *     writes full segments in the filling thread; it forgets a write the
 *     parent had under way, the parent's waiters, and the fills the
 *     parent's threads had under way, whose bytes become garbage
 *     (adopt_after_fork).  Forking while the flusher holds `lock` would
 *     still hang the child: the store's rule stands, no fork with puts in
 *     progress (chunkstore.h).
 *  4. cs_stage_flush() makes what was reserved below a given end (a
 *     commit's batch, or everything) reach the file: it waits for those
 *     fills, writes the full segments, then the partial last one, from
 *     the 4 KiB block where the previous such write ended up to the next
 *     4 KiB boundary.  Fills that would copy into that range wait for the
 *     write (`pad_end`), and the write waits for copies under way into it
 *     (`copying_to`), since no bytes may change under a direct write
 *     (checksumming file systems).  The unreserved rest of the range is
 *     zeroed; reserved bytes past `filled` go as they are.  The ring keeps
 *     that segment and writes it again, whole, once it fills.  Writes run
 *     one at a time (`io_busy`) and a later write of a range carries every
 *     byte an earlier one did below `filled`, so no write can undo
 *     another.  What a later write repeats of an earlier one below
 *     `filled` is the same bytes, so a write torn by a crash cannot change
 *     what a commit made durable.  Bytes past `filled` in the file are
 *     garbage that no catalog row points at (pack.c, design note 3); a
 *     sealed pack is truncated to its size.
 *  5. Bytes not yet in the file are read from the ring (cs_stage_read),
 *     so a put can be read back as soon as it returns.  Bytes a flush
 *     wrote are read from the file, like everything committed: a check of
 *     what is on disk (verify --data) must see the disk.
 *  6. A failed write leaves its bytes in the ring and the error in
 *     `error`.  The next fill, reservation or flush tries the write again
 *     and fails with the error if it persists; a reservation then
 *     reserves nothing.  A disk that filled up and was then freed loses
 *     nothing.  A fill that fails
 *     gives up the rest of its reservation (`abandoned`): those bytes are
 *     garbage no row points at, and `filled` moves past them as the ring
 *     has room.
 *  7. Locking: `lock` guards the fields below it.  The caller serializes
 *     reservations; fills, reads and flushes may come from any thread.
 *     The ring's memory is not guarded: a fill copies only into its own
 *     reservation, which no write reads until the fill is done or a
 *     partial write has made it wait (note 4); a write reads it with
 *     io_busy, and reads take `lock`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cs-internal.h"

#define RING_SIZE ((size_t) CS_STAGE_SEGMENTS * CS_STAGE_SEGMENT)

/* Rings are reused from pack to pack: new memory is what costs (see
 * above).  Plain pages, not transparent huge pages: a MADV_HUGEPAGE ring
 * cut put dup from 13 GB/s to 2-6 GB/s in half the runs, the kernel
 * compacting memory under the putters (BENCHMARKS.md, "Direct writes"). */
struct cs_stage_pool {
        pthread_mutex_t lock;
        uint8_t *free_rings[2];
        unsigned n_free;
};

/* A reservation (note 2). */
typedef struct fill_entry {
        uint64_t offset, end; /* the file's bytes [offset, end) */
        uint64_t copied;      /* copied from offset up to here */
        uint64_t copying_to;  /* a copy without lock runs from copied to here, or 0 */
        bool abandoned;       /* the fill failed: the rest is garbage (note 6) */
} fill_entry;

struct cs_stage {
        int fd;
        cs_stage_pool *pool;
        uint8_t *ring; /* RING_SIZE bytes, aligned for direct I/O */
        pthread_t flusher;
        bool flusher_started;
        pid_t pid; /* the process that has the flusher */

        pthread_mutex_t lock;
        pthread_cond_t changed; /* what a waiter waits for changed */
        unsigned waiters;       /* threads other than the flusher waiting on changed */
        uint64_t reserved;      /* the end of what was reserved */
        uint64_t filled;        /* bytes below are in the ring or the file (note 2) */
        uint64_t written;       /* segments below are on disk; a multiple of SEGMENT */
        uint64_t on_file;       /* bytes below are in the file (>= written after a flush) */
        fill_entry fills[CS_STAGE_FILLS]; /* reservations [oldest, next) by ticket % FILLS */
        uint64_t oldest, next;
        bool io_busy;           /* a write is under way (note 4) */
        uint64_t pad_end;       /* a partial write reads the ring up to here (note 4) */
        bool stop;
        int error; /* the last write's, until one succeeds (note 6) */
};

cs_stage_pool *cs_stage_pool_new(void)
{
        cs_stage_pool *p = calloc(1, sizeof(*p));

        if (p)
                pthread_mutex_init(&p->lock, NULL);
        return p;
}

cs_stage_pool *cs_stage_pool_free(cs_stage_pool *p)
{
        if (!p)
                return NULL;
        for (unsigned i = 0; i < p->n_free; i++)
                free(p->free_rings[i]);
        pthread_mutex_destroy(&p->lock);
        return mfree(p);
}

static uint8_t *ring_take(cs_stage_pool *p)
{
        void *ring = NULL;

        pthread_mutex_lock(&p->lock);
        if (p->n_free > 0)
                ring = p->free_rings[--p->n_free];
        pthread_mutex_unlock(&p->lock);
        if (!ring && posix_memalign(&ring, CS_STAGE_ALIGN, RING_SIZE) != 0)
                return NULL;
        return ring;
}

static void ring_give_back(cs_stage_pool *p, uint8_t *ring)
{
        pthread_mutex_lock(&p->lock);
        if (p->n_free < ELEMENTSOF(p->free_rings))
                p->free_rings[p->n_free++] = TAKE_PTR(ring);
        pthread_mutex_unlock(&p->lock);
        free(ring);
}

static uint8_t *ring_at(const cs_stage *s, uint64_t offset)
{
        return s->ring + offset % RING_SIZE;
}

/* Writes the file's bytes [from, to), all in one segment, from the ring.
 * Called with lock held and io_busy taken; lets go of lock meanwhile. */
static int write_range(cs_stage *s, uint64_t from, uint64_t to)
{
        const uint8_t *p = ring_at(s, from);
        size_t done = 0, size = to - from;
        int r = 0;

        pthread_mutex_unlock(&s->lock);
        while (done < size) {
                ssize_t n = pwrite(s->fd, p + done, size - done, (off_t) (from + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = negative_errno();
                        /* The device wants a coarser alignment than 4 KiB:
                         * the same writes, through the page cache. */
                        int flags = fcntl(s->fd, F_GETFL);
                        if (r == -EINVAL && flags >= 0 && (flags & O_DIRECT) &&
                            fcntl(s->fd, F_SETFL, flags & ~O_DIRECT) == 0) {
                                r = 0;
                                continue;
                        }
                        break;
                }
                if (n == 0) {
                        r = -ENOSPC;
                        break;
                }
                done += (size_t) n;
        }
        pthread_mutex_lock(&s->lock);
        return r;
}

static void wait_changed(cs_stage *s)
{
        s->waiters++;
        pthread_cond_wait(&s->changed, &s->lock);
        s->waiters--;
}

/* Moves `filled` over the complete prefix (note 2), and over what failed
 * fills gave up as far as the ring has room for it; wakes the flusher
 * when a segment filled up, and whoever else waits.  Lock held. */
static void advance_filled(cs_stage *s)
{
        uint64_t before = s->filled;

        while (s->oldest < s->next) {
                const fill_entry *e = &s->fills[s->oldest % CS_STAGE_FILLS];

                s->filled = MAX(s->filled, e->abandoned ? MIN(e->end, s->written + RING_SIZE) : e->copied);
                if (s->filled < e->end)
                        break;
                s->oldest++;
        }
        if (s->filled / CS_STAGE_SEGMENT != before / CS_STAGE_SEGMENT || s->waiters > 0)
                pthread_cond_broadcast(&s->changed);
}

/* Writes the oldest segment if it is full (lock held, io_busy free).
 * 1 if it wrote one, 0 if none was full. */
static int write_full_segment(cs_stage *s)
{
        int r;

        if (s->filled < s->written + CS_STAGE_SEGMENT)
                return 0;
        s->io_busy = true;
        r = write_range(s, s->written, s->written + CS_STAGE_SEGMENT);
        s->io_busy = false;
        s->error = r < 0 ? r : 0;
        if (r >= 0) {
                s->written += CS_STAGE_SEGMENT;
                advance_filled(s); /* a given-up fill may have waited for room */
        }
        pthread_cond_broadcast(&s->changed);
        return r < 0 ? r : 1;
}

static void *flusher_main(void *userdata)
{
        cs_stage *s = userdata;

        pthread_mutex_lock(&s->lock);
        while (!s->stop) {
                if (s->io_busy || s->error < 0 || s->filled < s->written + CS_STAGE_SEGMENT) {
                        pthread_cond_wait(&s->changed, &s->lock);
                        continue;
                }
                (void) write_full_segment(s);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

int cs_stage_new(cs_stage_pool *pool, int fd, const void *head, size_t head_size, cs_stage **ret)
{
        cs_stage *s;

        if (head_size > CS_STAGE_SEGMENT)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->ring = ring_take(pool);
        if (!s->ring) {
                free(s);
                return -ENOMEM;
        }
        s->fd = fd;
        s->pool = pool;
        s->pid = getpid();
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->changed, NULL);
        memcpy(s->ring, head, head_size);
        s->filled = s->reserved = head_size;
        /* Without a flusher, appends write full segments themselves. */
        s->flusher_started = pthread_create(&s->flusher, NULL, flusher_main, s) == 0;
        *ret = s;
        return 0;
}

cs_stage *cs_stage_free(cs_stage *s)
{
        if (!s)
                return NULL;
        if (s->flusher_started && s->pid == getpid()) {
                pthread_mutex_lock(&s->lock);
                s->stop = true;
                pthread_cond_broadcast(&s->changed);
                pthread_mutex_unlock(&s->lock);
                pthread_join(s->flusher, NULL);
        }
        ring_give_back(s->pool, TAKE_PTR(s->ring));
        pthread_cond_destroy(&s->changed);
        pthread_mutex_destroy(&s->lock);
        return mfree(s);
}

/* A stage used in a forked child (lock held): the parent's flusher, and
 * any write it had under way, stayed in the parent.  The child writes by
 * itself what it needs, again. */
static void adopt_after_fork(cs_stage *s)
{
        if (s->pid == getpid())
                return;
        s->pid = getpid();
        s->flusher_started = false;
        s->io_busy = false;
        s->pad_end = 0;
        s->waiters = 0;
        /* The parent's waiters are not ours: a broadcast would wait for
         * them. */
        pthread_cond_init(&s->changed, NULL);
        /* Fills the parent had under way never finish here. */
        for (uint64_t t = s->oldest; t < s->next; t++) {
                fill_entry *e = &s->fills[t % CS_STAGE_FILLS];
                e->copying_to = 0;
                e->abandoned = e->abandoned || e->copied < e->end;
        }
        advance_filled(s);
}

/* After a failed write (a full disk that may have been freed since) the
 * flusher waits for the error to clear: the next fill, reservation or
 * flush writes again itself (lock held, io_busy free).  The error if it
 * persists. */
static int retry_write(cs_stage *s)
{
        s->error = 0;
        return write_full_segment(s);
}

int cs_stage_reserve(cs_stage *s, uint64_t offset, size_t size, uint64_t *ret_ticket)
{
        int r = 0;

        pthread_mutex_lock(&s->lock);
        adopt_after_fork(s);
        if (offset != s->reserved) {
                r = -EINVAL;
                goto out;
        }
        for (;;) {
                /* Fail rather than reserve more: fills that gave up keep
                 * their entries until the ring moves past them, and a
                 * table full of them would wait for ever. */
                if (s->error < 0 && !s->io_busy) {
                        r = retry_write(s);
                        if (r < 0)
                                goto out;
                        r = 0;
                }
                if (s->next - s->oldest < CS_STAGE_FILLS)
                        break;
                wait_changed(s);
        }
        s->fills[s->next % CS_STAGE_FILLS] = (fill_entry) {
                .offset = offset,
                .end = offset + size,
                .copied = offset,
        };
        *ret_ticket = s->next++;
        s->reserved = offset + size;
out:
        pthread_mutex_unlock(&s->lock);
        return r;
}

int cs_stage_fill(cs_stage *s, uint64_t ticket, const void *data)
{
        const uint8_t *p = data;
        fill_entry *e;
        int r = 0;

        pthread_mutex_lock(&s->lock);
        adopt_after_fork(s);
        e = &s->fills[ticket % CS_STAGE_FILLS];
        while (e->copied < e->end) {
                /* The free part of the ring: up to the oldest unwritten
                 * segment's slot, and no further than the slot's end. */
                uint64_t at = e->copied, limit = s->written + RING_SIZE;
                size_t room = at < limit ? (size_t) MIN(MIN(limit - at, e->end - at),
                                                        CS_STAGE_SEGMENT - at % CS_STAGE_SEGMENT)
                                         : 0;

                /* A partial write is reading this part of the ring. */
                if (at < s->pad_end) {
                        wait_changed(s);
                        continue;
                }
                if (s->error < 0 || (room == 0 && !s->flusher_started)) {
                        /* After a failed write (a full disk that may have
                         * been freed since), or without a flusher: write
                         * here, and fail with the error if it persists. */
                        if (s->io_busy) {
                                wait_changed(s);
                                continue;
                        }
                        r = retry_write(s);
                        if (r < 0) {
                                e->abandoned = true;
                                advance_filled(s);
                                break;
                        }
                        if (r == 0 && room == 0) /* older fills are under way */
                                wait_changed(s);
                        continue;
                }
                if (room == 0) {
                        wait_changed(s);
                        continue;
                }
                e->copying_to = at + room;
                pthread_mutex_unlock(&s->lock);
                memcpy(ring_at(s, at), p + (at - e->offset), room);
                pthread_mutex_lock(&s->lock);
                e->copying_to = 0;
                e->copied += room;
                advance_filled(s);
        }
        pthread_mutex_unlock(&s->lock);
        return r < 0 ? r : 0;
}

/* Whether a copy under way writes into the ring below `to`. */
static bool copying_below(const cs_stage *s, uint64_t to)
{
        for (uint64_t t = s->oldest; t < s->next; t++) {
                const fill_entry *e = &s->fills[t % CS_STAGE_FILLS];
                if (e->copying_to > 0 && e->copied < to)
                        return true;
        }
        return false;
}

int cs_stage_flush(cs_stage *s, uint64_t upto)
{
        uint64_t target;
        int r = 0;

        pthread_mutex_lock(&s->lock);
        adopt_after_fork(s);
        target = MIN(upto, s->reserved);
        for (;;) {
                if (s->io_busy) {
                        wait_changed(s);
                        continue;
                }
                /* Also when an earlier flush wrote it all (a seal flushes
                 * under the store's lock, then again without it). */
                if (MAX(s->written, s->on_file) >= target)
                        break;
                r = write_full_segment(s);
                if (r < 0)
                        break;
                if (r > 0)
                        continue;
                if (s->filled < target) { /* fills reserved below target */
                        wait_changed(s);
                        continue;
                }

                /* The partial last segment, to a 4 KiB boundary (note 4),
                 * from the block holding the end of the last such write:
                 * what lies before it is in the file already, and small
                 * frequent commits would otherwise rewrite up to 1 MiB
                 * each. */
                uint64_t complete = s->filled, to = (complete + CS_STAGE_ALIGN - 1) / CS_STAGE_ALIGN * CS_STAGE_ALIGN;
                uint64_t from = MAX(s->written, s->on_file / CS_STAGE_ALIGN * CS_STAGE_ALIGN);
                s->io_busy = true;
                s->pad_end = to;
                while (copying_below(s, to))
                        wait_changed(s);
                if (s->reserved < to)
                        memset(ring_at(s, s->reserved), 0, (size_t) (to - s->reserved));
                r = write_range(s, from, to);
                s->io_busy = false;
                s->pad_end = 0;
                s->error = r < 0 ? r : 0;
                if (r >= 0)
                        s->on_file = MAX(s->on_file, complete);
                pthread_cond_broadcast(&s->changed);
                break;
        }
        pthread_mutex_unlock(&s->lock);
        return r < 0 ? r : 0;
}

size_t cs_stage_read(cs_stage *s, uint64_t offset, void *buf, size_t size)
{
        uint8_t *out = buf;
        uint64_t in_file;
        size_t from_file;

        pthread_mutex_lock(&s->lock);
        in_file = MAX(s->written, s->on_file);
        if (offset + size <= in_file || offset + size > s->reserved) {
                /* In the file, or not reserved (the caller's location is
                 * wrong: the file read will say so). */
                pthread_mutex_unlock(&s->lock);
                return size;
        }
        from_file = offset < in_file ? (size_t) (in_file - offset) : 0;
        for (size_t done = from_file; done < size;) {
                uint64_t at = offset + done;
                size_t n = MIN(size - done, (size_t) (CS_STAGE_SEGMENT - at % CS_STAGE_SEGMENT));
                memcpy(out + done, ring_at(s, at), n);
                done += n;
        }
        pthread_mutex_unlock(&s->lock);
        return from_file;
}
