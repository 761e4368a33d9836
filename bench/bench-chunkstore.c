/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-chunkstore: throughput of the chunk store's put and get paths.
 *
 *   bench-chunkstore synthetic STORE_DIR [--size MiB] [--threads N]
 *                    [--data-out FILE] [--seed N] [--block-size SIZE]
 *       Generates --size MiB of database-page-like data in memory (8 KiB
 *       heap pages of tuples mixing integers, dates, amounts, names and
 *       words, which LZ4 compresses about 2-4x; every block is unique),
 *       optionally writes exactly that data to FILE (so that "lz4 -b1
 *       FILE" measures LZ4 on the same bytes), then measures:
 *         put-new  N threads put disjoint blocks into an empty store,
 *                  timed up to and including the final cs_store_commit();
 *         put-dup  the same blocks again: every put is a duplicate;
 *         get      N threads read every block back (warm page cache).
 *       STORE_DIR is created (with --block-size, default the library's)
 *       unless it already is a store.  Block size is the store's.
 *
 *   bench-chunkstore ingest STORE_DIR SRC_DIR [--threads N]
 *       Walks SRC_DIR (not following symlinks), reads every regular file
 *       in block-size pieces, puts them from N threads, commits, and
 *       reports bytes read, time, MB/s and the store's statistics, both
 *       absolute and as added by this run.  STORE_DIR must be a store.
 *
 * Output: one line per measurement, space-separated key=value pairs,
 * first "bench=<mode> op=<measurement>".  MB is 10^6 bytes, as lz4 -b
 * uses.  "cpu" is our user+system CPU seconds over wall seconds: 2.0
 * means both of two cores were busy the whole time; "other_cpu" is the
 * same for everything else on the machine (a run where it is not near 0
 * shared the cores with someone and is not a measurement of the store),
 * including "steal": the time a VM's hypervisor gave its CPUs to other
 * guests.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunkstore.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/size.h"

#define THREADS_MAX 256
#define PAGE_SIZE_DB 8192u             /* the synthetic data's page size */
#define INGEST_ITEM_SIZE (1024u * 1024u) /* work unit of ingest threads */

static unsigned arg_threads = 1;
static uint64_t arg_size_mib = 1024;
static uint64_t arg_block_size;
static uint64_t arg_seed = 1;
static const char *arg_data_out;

/* --- Timing --------------------------------------------------------------- */

typedef struct stopwatch {
        struct timespec wall;
        struct rusage usage;
        double machine_busy; /* CPU seconds of the whole machine, < 0 if unknown */
        double machine_steal; /* of which the hypervisor gave to other guests */
} stopwatch;

typedef struct cpu_use {
        /* CPU seconds per wall second: ours in user and kernel mode, and
         * everything else running on the machine meanwhile (other
         * processes make a measurement worthless; < 0 if unknown), and the
         * part of it the hypervisor gave to other guests (steal). */
        double user, sys, other, steal;
} cpu_use;

static double ts_seconds(const struct timespec *ts)
{
        return (double) ts->tv_sec + (double) ts->tv_nsec / 1e9;
}

static double tv_seconds(const struct timeval *tv)
{
        return (double) tv->tv_sec + (double) tv->tv_usec / 1e6;
}

/* Busy CPU seconds of all CPUs since boot, from /proc/stat, and in
 * *ret_steal those that went to other guests; < 0 if unknown. */
static double machine_busy_seconds(double *ret_steal)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");
        unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
        long hz = sysconf(_SC_CLK_TCK);

        if (!f || hz <= 0 ||
            fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle,
                   &iowait, &irq, &softirq, &steal) != 8)
                return -1;
        *ret_steal = (double) steal / (double) hz;
        return (double) (user + nice + system + irq + softirq + steal) / (double) hz;
}

static void stopwatch_start(stopwatch *w)
{
        w->machine_busy = machine_busy_seconds(&w->machine_steal);
        getrusage(RUSAGE_SELF, &w->usage);
        clock_gettime(CLOCK_MONOTONIC, &w->wall);
}

/* Wall seconds since start; *ret_cpu (may be NULL) gets the CPU used. */
static double stopwatch_stop(const stopwatch *w, cpu_use *ret_cpu)
{
        struct timespec now;
        struct rusage usage;
        double wall, user, sys, busy, steal = 0;

        clock_gettime(CLOCK_MONOTONIC, &now);
        getrusage(RUSAGE_SELF, &usage);
        busy = machine_busy_seconds(&steal);
        wall = ts_seconds(&now) - ts_seconds(&w->wall);
        user = tv_seconds(&usage.ru_utime) - tv_seconds(&w->usage.ru_utime);
        sys = tv_seconds(&usage.ru_stime) - tv_seconds(&w->usage.ru_stime);
        if (ret_cpu && wall > 0)
                *ret_cpu = (cpu_use) {
                        .user = user / wall,
                        .sys = sys / wall,
                        /* /proc/stat counts in ticks: tiny negatives are noise. */
                        .other = busy < 0 || w->machine_busy < 0
                                         ? -1
                                         : MAX(0.0, (busy - w->machine_busy - user - sys) / wall),
                        .steal = busy < 0 || w->machine_busy < 0 ? -1 : (steal - w->machine_steal) / wall,
                };
        else if (ret_cpu)
                *ret_cpu = (cpu_use) { .other = -1, .steal = -1 };
        return wall;
}

static double mb_per_s(uint64_t bytes, double seconds)
{
        return seconds > 0 ? (double) bytes / 1e6 / seconds : 0;
}

/* --- Synthetic data: database-like heap pages ---------------------------- */

typedef struct rng {
        uint64_t s;
} rng;

/* splitmix64: fast, and good enough to keep blocks unique. */
static uint64_t rng_next(rng *g)
{
        uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static uint32_t rng_below(rng *g, uint32_t n)
{
        return (uint32_t) (((rng_next(g) >> 32) * n) >> 32);
}

static const char *const first_names[] = {
        "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
        "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
        "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy",
        "Matthew", "Betty", "Anthony", "Sandra", "Mark", "Margaret", "Donald", "Ashley",
        "Steven", "Kimberly", "Andrew", "Emily", "Paul", "Donna", "Joshua", "Michelle",
        "Kenji", "Yuki", "Ahmed", "Fatima", "Lars", "Ingrid", "Pierre", "Camille",
        "Giovanni", "Giulia", "Olumide", "Amara", "Wei", "Mei", "Rahul", "Priya",
        "Sven", "Astrid", "Diego", "Lucia", "Ivan", "Olga", "Mateus", "Beatriz",
};

static const char *const last_names[] = {
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
        "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
        "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
        "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
        "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
        "Carter", "Roberts", "Tanaka", "Suzuki", "Muller", "Schmidt", "Rossi", "Bianchi",
        "Dubois", "Lefebvre", "Johansson", "Nilsson", "Kowalski", "Nowak", "Okafor", "Singh",
};

static const char *const cities[] = {
        "Berlin", "Paris", "London", "Madrid", "Rome", "Vienna", "Prague", "Warsaw",
        "Amsterdam", "Brussels", "Lisbon", "Dublin", "Oslo", "Stockholm", "Helsinki", "Copenhagen",
        "New York", "Chicago", "Toronto", "Boston", "Seattle", "Austin", "Denver", "Atlanta",
        "Tokyo", "Osaka", "Seoul", "Singapore", "Mumbai", "Sydney", "Melbourne", "Auckland",
};

static const char *const statuses[] = {
        "pending", "paid", "shipped", "delivered", "cancelled", "returned", "refunded", "on_hold",
};

static const char *const words[] = {
        "the", "order", "was", "delivered", "to", "customer", "on", "time", "and", "package",
        "arrived", "damaged", "please", "contact", "support", "for", "refund", "replacement",
        "item", "out", "of", "stock", "backordered", "until", "next", "week", "shipping",
        "address", "changed", "by", "request", "gift", "wrap", "included", "invoice", "sent",
        "via", "email", "payment", "received", "credit", "card", "declined", "retry",
        "warehouse", "north", "south", "east", "west", "priority", "standard", "express",
        "discount", "applied", "coupon", "code", "expired", "loyalty", "points", "redeemed",
        "size", "color", "blue", "red", "green", "black", "white", "large", "small", "medium",
        "quality", "check", "passed", "failed", "returned", "label", "printed", "tracking",
        "number", "updated", "carrier", "delay", "weather", "holiday", "season", "customs",
        "cleared", "held", "signature", "required", "left", "at", "door", "neighbour",
        "reception", "office", "hours", "closed", "weekend", "monday", "friday", "morning",
        "evening", "call", "before", "delivery", "fragile", "handle", "with", "care", "note",
        "from", "sales", "team", "account", "manager", "escalated", "resolved", "ticket",
};

static char *put_str(char *p, const char *s)
{
        size_t n = strlen(s);
        memcpy(p, s, n);
        return p + n;
}

static char *put_uint(char *p, uint64_t v, unsigned min_digits)
{
        char tmp[24];
        unsigned n = 0;

        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v);
        while (n < min_digits)
                tmp[n++] = '0';
        while (n)
                *p++ = tmp[--n];
        return p;
}

static void put_le(uint8_t *p, uint64_t v, unsigned bytes)
{
        for (unsigned i = 0; i < bytes; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

/* A varlena-like text field: one length byte, then the characters. */
static uint8_t *put_text(uint8_t *p, const char *s, size_t n)
{
        *p++ = (uint8_t) ((n + 1) << 1 | 1);
        memcpy(p, s, n);
        return p + n;
}

/* One "orders" tuple into out (at most 256 bytes); returns its length. */
static size_t make_tuple(rng *g, uint64_t row, uint32_t xid, uint32_t blkno, uint16_t lp,
                         uint8_t *out)
{
        char text[160], *t;
        uint8_t *p = out;
        uint64_t customer = 1 + rng_below(g, 250000);
        const char *first = first_names[rng_below(g, ELEMENTSOF(first_names))];
        const char *last = last_names[rng_below(g, ELEMENTSOF(last_names))];

        /* Tuple header: xmin, xmax, cid, ctid, infomask2, infomask, hoff. */
        put_le(p, xid + rng_below(g, 4), 4);
        put_le(p + 4, rng_below(g, 16) == 0 ? xid + 100 + rng_below(g, 1000) : 0, 4);
        put_le(p + 8, 0, 4);
        put_le(p + 12, blkno, 4);
        put_le(p + 16, lp, 2);
        put_le(p + 18, 9, 2);
        put_le(p + 20, 0x0902, 2);
        p[22] = 24;
        p[23] = 0;
        p += 24;

        put_le(p, row, 8); /* bigint id */
        put_le(p + 8, customer, 4);
        put_le(p + 12, rng_below(g, 100000), 4); /* product */
        put_le(p + 16, 1 + rng_below(g, 9), 2);   /* quantity */
        put_le(p + 18, 0, 2);
        /* timestamptz: microseconds, rows roughly in time order */
        put_le(p + 20, 730000000000000ull + row * 37000000ull + rng_below(g, 30000000), 8);
        p += 28;

        t = put_str(text, first);
        *t++ = ' ';
        t = put_str(t, last);
        p = put_text(p, text, (size_t) (t - text));

        t = text;
        for (const char *s = first; *s; s++)
                *t++ = (char) (*s | 0x20);
        *t++ = '.';
        for (const char *s = last; *s; s++)
                *t++ = (char) (*s | 0x20);
        t = put_uint(t, customer % 1000, 1);
        t = put_str(t, rng_below(g, 3) ? "@example.com" : "@mail.example.org");
        p = put_text(p, text, (size_t) (t - text));

        t = put_str(text, cities[rng_below(g, ELEMENTSOF(cities))]);
        p = put_text(p, text, (size_t) (t - text));

        /* amount as numeric text, status, a date */
        t = put_uint(text, rng_below(g, 5000), 1);
        *t++ = '.';
        t = put_uint(t, rng_below(g, 100), 2);
        p = put_text(p, text, (size_t) (t - text));
        t = put_str(text, statuses[rng_below(g, ELEMENTSOF(statuses))]);
        p = put_text(p, text, (size_t) (t - text));
        t = put_str(text, "2024-");
        t = put_uint(t, 1 + rng_below(g, 12), 2);
        *t++ = '-';
        t = put_uint(t, 1 + rng_below(g, 28), 2);
        p = put_text(p, text, (size_t) (t - text));

        /* a free-text note of 0-12 words, empty in a third of the rows */
        t = text;
        if (rng_below(g, 3)) {
                unsigned n = 2 + rng_below(g, 11);
                for (unsigned i = 0; i < n; i++) {
                        if (i)
                                *t++ = ' ';
                        t = put_str(t, words[rng_below(g, ELEMENTSOF(words))]);
                }
        }
        p = put_text(p, text, (size_t) (t - text));
        return (size_t) (p - out);
}

/* Fills one 8 KiB page: header, line pointers growing up, tuples growing
 * down from the end, zeros between (some pages are only partly full). */
static void make_page(rng *g, uint64_t page_no, uint64_t *row, uint8_t *page)
{
        uint32_t xid = (uint32_t) (1000 + page_no * 7);
        unsigned lower = 24, upper = PAGE_SIZE_DB;
        unsigned fill = rng_below(g, 8) == 0 ? 40 + rng_below(g, 50) : 100;
        unsigned limit = PAGE_SIZE_DB - (PAGE_SIZE_DB - 24) * fill / 100;
        uint16_t lp = 1;
        uint8_t tuple[256];

        memset(page, 0, PAGE_SIZE_DB);
        for (;;) {
                size_t len = make_tuple(g, *row, xid, (uint32_t) page_no, lp, tuple);
                size_t aligned = (len + 7) & ~(size_t) 7;
                if (upper < aligned || upper - aligned < lower + 4 || upper - aligned < limit)
                        break;
                upper -= (unsigned) aligned;
                memcpy(page + upper, tuple, len);
                /* ItemIdData: offset 15 bits, flags 2, length 15 */
                put_le(page + lower, (uint64_t) upper | 1ull << 15 | (uint64_t) len << 17, 4);
                lower += 4;
                lp++;
                (*row)++;
        }
        /* PageHeaderData: lsn, checksum, flags, lower, upper, special,
         * size/version, prune xid. */
        put_le(page, 0x16000000ull + page_no * 0x2a8 + rng_below(g, 0x100), 8);
        put_le(page + 8, rng_next(g), 2);
        put_le(page + 10, 0, 2);
        put_le(page + 12, lower, 2);
        put_le(page + 14, upper, 2);
        put_le(page + 16, PAGE_SIZE_DB, 2);
        put_le(page + 18, PAGE_SIZE_DB | 4, 2);
        put_le(page + 20, 0, 4);
}

static int make_data(uint64_t size, uint64_t seed, uint8_t **ret_data)
{
        _cleanup_free_ uint8_t *data = NULL;
        rng g = { .s = seed };
        uint64_t row = 1;

        if (size == 0 || size % PAGE_SIZE_DB)
                return -EINVAL;
        data = malloc(size);
        if (!data)
                return -ENOMEM;
        for (uint64_t i = 0; i < size / PAGE_SIZE_DB; i++)
                make_page(&g, i, &row, data + i * PAGE_SIZE_DB);
        *ret_data = TAKE_PTR(data);
        return 0;
}

static int write_file(const char *path, const uint8_t *data, uint64_t size)
{
        _cleanup_close_ int fd = -1;
        uint64_t done = 0;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        while (done < size) {
                ssize_t n = write(fd, data + done, MIN(size - done, (uint64_t) 1 << 30));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                done += (uint64_t) n;
        }
        /* Flushed now, so that its writeback does not land inside a
         * measurement. */
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

/* --- Threads -------------------------------------------------------------- */

#define JOB_BATCH_BLOCKS 64

typedef enum job_kind {
        JOB_PUT,
        JOB_GET,
} job_kind;

typedef struct job {
        cs_store *store;
        job_kind kind;
        const uint8_t *data;
        cs_chunk_id *ids;
        size_t block_size, n_blocks;
        atomic_size_t *next; /* the first block of the next batch */
        uint64_t new_chunks;
        int result;
} job;

static void *job_run(void *userdata)
{
        job *j = userdata;
        _cleanup_free_ uint8_t *buf = NULL;
        int r;

        if (j->kind == JOB_GET) {
                buf = malloc(j->block_size);
                if (!buf) {
                        j->result = -ENOMEM;
                        return NULL;
                }
        }
        for (;;) {
                size_t first = atomic_fetch_add(j->next, JOB_BATCH_BLOCKS);
                if (first >= j->n_blocks)
                        break;
                for (size_t i = first; i < MIN(first + JOB_BATCH_BLOCKS, j->n_blocks); i++) {
                        if (j->kind == JOB_PUT) {
                                r = cs_store_put(j->store, CS_KIND_DATA, j->data + i * j->block_size,
                                                 j->block_size, &j->ids[i]);
                                if (r > 0)
                                        j->new_chunks++;
                        } else {
                                r = cs_store_get(j->store, &j->ids[i], buf, j->block_size);
                                if (r >= 0 && (size_t) r != j->block_size)
                                        r = -EBADMSG;
                        }
                        if (r < 0) {
                                j->result = r;
                                return NULL;
                        }
                }
        }
        return NULL;
}

/* Runs kind over n_blocks blocks, which the threads take in batches of
 * JOB_BATCH_BLOCKS: fixed halves left one core idle while the other
 * finished a half that compressed slower (up to 66 ms of 1.4 s).
 * The time includes starting the threads (microseconds) and, for puts,
 * the final commit. */
static int run_jobs(cs_store *store, job_kind kind, const uint8_t *data, cs_chunk_id *ids,
                    size_t n_blocks, size_t block_size, double *ret_seconds, cpu_use *ret_cpu,
                    uint64_t *ret_new_chunks, double *ret_commit_seconds)
{
        pthread_t threads[THREADS_MAX];
        job jobs[THREADS_MAX];
        atomic_size_t next = 0;
        unsigned started = 0;
        uint64_t new_chunks = 0;
        double commit_seconds = 0;
        stopwatch w, c;
        int r = 0;

        stopwatch_start(&w);
        for (unsigned t = 0; t < arg_threads; t++) {
                jobs[t] = (job) {
                        .store = store,
                        .kind = kind,
                        .data = data,
                        .ids = ids,
                        .block_size = block_size,
                        .n_blocks = n_blocks,
                        .next = &next,
                };
                r = -pthread_create(&threads[t], NULL, job_run, &jobs[t]);
                if (r < 0) {
                        log_error_errno(r, "cannot start a thread: %m");
                        break;
                }
                started++;
        }
        for (unsigned t = 0; t < started; t++) {
                pthread_join(threads[t], NULL);
                if (jobs[t].result < 0 && r >= 0)
                        r = jobs[t].result;
                new_chunks += jobs[t].new_chunks;
        }
        if (r >= 0 && kind == JOB_PUT) {
                stopwatch_start(&c);
                r = cs_store_commit(store);
                commit_seconds = stopwatch_stop(&c, NULL);
        }
        *ret_seconds = stopwatch_stop(&w, ret_cpu);
        if (ret_commit_seconds)
                *ret_commit_seconds = commit_seconds;
        if (ret_new_chunks)
                *ret_new_chunks = new_chunks;
        return r;
}

/* --- Store helpers -------------------------------------------------------- */

/* Opens path for writing, creating the store first if path does not exist
 * or is an empty directory. */
static int open_or_create(const char *path, uint64_t block_size, cs_store **ret_store)
{
        cs_init_params params = { .block_size = (uint32_t) block_size };
        int r;

        r = cs_store_open(path, CS_OPEN_WRITE, ret_store);
        if (r != -ENOENT && r != -EMEDIUMTYPE)
                return r;
        r = cs_store_init(path, &params);
        if (r < 0)
                return r;
        return cs_store_open(path, CS_OPEN_WRITE, ret_store);
}

static void print_stats(const char *mode, const cs_stats *s, const cs_stats *before)
{
        printf("bench=%s op=stats block_size=%" PRIu32 " logical_bytes=%" PRIu64
               " unique_bytes=%" PRIu64 " stored_bytes=%" PRIu64 " pack_bytes=%" PRIu64
               " catalog_bytes=%" PRIu64 " chunks=%" PRIu64 " packs=%" PRIu64
               " compression=%.3f",
               mode, s->block_size, s->logical_bytes, s->unique_bytes, s->stored_bytes,
               s->pack_bytes, s->catalog_bytes, s->chunks, s->packs,
               s->stored_bytes ? (double) s->unique_bytes / (double) s->stored_bytes : 0.0);
        if (before)
                printf(" added_unique_bytes=%" PRIu64 " added_stored_bytes=%" PRIu64
                       " added_pack_bytes=%" PRIu64 " added_catalog_bytes=%" PRId64
                       " added_chunks=%" PRIu64,
                       s->unique_bytes - before->unique_bytes,
                       s->stored_bytes - before->stored_bytes,
                       s->pack_bytes - before->pack_bytes,
                       (int64_t) (s->catalog_bytes - before->catalog_bytes),
                       s->chunks - before->chunks);
        printf("\n");
        fflush(stdout);
}

/* One line of a synthetic measurement; commit_seconds < 0 for gets. */
static void print_measurement(const char *op, size_t block_size, uint64_t bytes, double seconds,
                              const cpu_use *cpu, double commit_seconds, uint64_t new_chunks)
{
        printf("bench=synthetic op=%s threads=%u block_size=%zu bytes=%" PRIu64
               " seconds=%.3f mb_s=%.1f cpu=%.2f cpu_user=%.2f cpu_sys=%.2f other_cpu=%.2f steal=%.2f",
               op, arg_threads, block_size, bytes, seconds, mb_per_s(bytes, seconds),
               cpu->user + cpu->sys, cpu->user, cpu->sys, cpu->other, cpu->steal);
        if (commit_seconds >= 0)
                printf(" final_commit_seconds=%.3f new_chunks=%" PRIu64, commit_seconds, new_chunks);
        printf("\n");
        fflush(stdout);
}

/* --- synthetic ------------------------------------------------------------ */

static int verb_synthetic(const char *store_path)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ cs_chunk_id *ids = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t size = arg_size_mib * 1024 * 1024, new_chunks;
        double seconds, commit_seconds;
        cpu_use cpu;
        size_t block_size, n_blocks;
        cs_stats stats;
        stopwatch w;
        int r;

        r = open_or_create(store_path, arg_block_size, &store);
        if (r < 0)
                return log_error_errno(r, "cannot open or create store %s: %m", store_path);
        block_size = cs_store_block_size(store);
        if (size % block_size || size % PAGE_SIZE_DB)
                return log_error_errno(-EINVAL, "--size must be a multiple of the block size (%zu)",
                                       block_size);
        n_blocks = size / block_size;

        stopwatch_start(&w);
        r = make_data(size, arg_seed, &data);
        if (r < 0)
                return log_error_errno(r, "cannot make %" PRIu64 " bytes of data: %m", size);
        seconds = stopwatch_stop(&w, NULL);
        log_debug("generated %" PRIu64 " bytes in %.2f s", size, seconds);
        if (arg_data_out) {
                r = write_file(arg_data_out, data, size);
                if (r < 0)
                        return log_error_errno(r, "cannot write %s: %m", arg_data_out);
        }
        printf("bench=synthetic op=data bytes=%" PRIu64 " block_size=%zu blocks=%zu seed=%" PRIu64
               " file=%s\n",
               size, block_size, n_blocks, arg_seed, arg_data_out ? arg_data_out : "-");
        fflush(stdout);

        ids = calloc(n_blocks, sizeof(*ids));
        if (!ids)
                return log_error_errno(-ENOMEM, "out of memory");

        r = run_jobs(store, JOB_PUT, data, ids, n_blocks, block_size, &seconds, &cpu, &new_chunks,
                     &commit_seconds);
        if (r < 0)
                return log_error_errno(r, "put of new data failed: %m");
        print_measurement("put-new", block_size, size, seconds, &cpu, commit_seconds, new_chunks);
        if (new_chunks != n_blocks)
                log_warning("only %" PRIu64 " of %zu blocks were new: was the store empty?",
                            new_chunks, n_blocks);

        r = cs_store_stats(store, &stats);
        if (r < 0)
                return log_error_errno(r, "cannot read store statistics: %m");
        print_stats("synthetic", &stats, NULL);

        r = run_jobs(store, JOB_PUT, data, ids, n_blocks, block_size, &seconds, &cpu, &new_chunks,
                     &commit_seconds);
        if (r < 0)
                return log_error_errno(r, "put of duplicate data failed: %m");
        print_measurement("put-dup", block_size, size, seconds, &cpu, commit_seconds, new_chunks);

        /* Twice: the first reads the packs from disk (the store writes
         * them around the page cache, stage.c), the second what is cached,
         * which is the store's own cost and what `lz4 -b` compares with. */
        r = run_jobs(store, JOB_GET, data, ids, n_blocks, block_size, &seconds, &cpu, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "get failed: %m");
        print_measurement("get-first", block_size, size, seconds, &cpu, -1, 0);
        r = run_jobs(store, JOB_GET, data, ids, n_blocks, block_size, &seconds, &cpu, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "get failed: %m");
        print_measurement("get", block_size, size, seconds, &cpu, -1, 0);

        /* Untimed: the bytes read back are the bytes put. */
        buf = malloc(block_size);
        if (!buf)
                return log_error_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n_blocks; i++) {
                r = cs_store_get(store, &ids[i], buf, block_size);
                if (r < 0)
                        return log_error_errno(r, "get of block %zu failed: %m", i);
                if ((size_t) r != block_size || memcmp(buf, data + i * block_size, block_size) != 0)
                        return log_error_errno(-EBADMSG, "block %zu read back different bytes", i);
        }
        return 0;
}

/* --- ingest --------------------------------------------------------------- */

typedef struct ingest_item {
        size_t file;    /* index into the file list */
        uint64_t offset;
        uint64_t size;
} ingest_item;

typedef struct ingest_plan {
        char **files;
        size_t n_files, files_cap;
        ingest_item *items;
        size_t n_items, items_cap;
        uint64_t bytes;
} ingest_plan;

static void ingest_plan_done(ingest_plan *p)
{
        for (size_t i = 0; i < p->n_files; i++)
                free(p->files[i]);
        free(p->files);
        free(p->items);
}

static int plan_add_file(ingest_plan *p, const char *path, uint64_t size, uint64_t item_size)
{
        if (p->n_files == p->files_cap) {
                size_t cap = p->files_cap ? 2 * p->files_cap : 256;
                char **f = reallocarray(p->files, cap, sizeof(*f));
                if (!f)
                        return -ENOMEM;
                p->files = f;
                p->files_cap = cap;
        }
        p->files[p->n_files] = strdup(path);
        if (!p->files[p->n_files])
                return -ENOMEM;
        for (uint64_t off = 0; off < size; off += item_size) {
                if (p->n_items == p->items_cap) {
                        size_t cap = p->items_cap ? 2 * p->items_cap : 1024;
                        ingest_item *it = reallocarray(p->items, cap, sizeof(*it));
                        if (!it)
                                return -ENOMEM;
                        p->items = it;
                        p->items_cap = cap;
                }
                p->items[p->n_items++] = (ingest_item) {
                        .file = p->n_files,
                        .offset = off,
                        .size = MIN(item_size, size - off),
                };
        }
        p->n_files++;
        p->bytes += size;
        return 0;
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* Adds every regular file under path (symlinks are not followed). */
static int plan_walk(ingest_plan *p, const char *path, uint64_t item_size)
{
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        d = opendir(path);
        if (!d)
                return log_error_errno(negative_errno(), "cannot open directory %s: %m", path);
        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *child = NULL;
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (asprintf(&child, "%s/%s", path, de->d_name) < 0)
                        return log_error_errno(-ENOMEM, "out of memory");
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return log_error_errno(negative_errno(), "cannot stat %s: %m", child);
                if (S_ISDIR(st.st_mode))
                        r = plan_walk(p, child, item_size);
                else if (S_ISREG(st.st_mode))
                        r = plan_add_file(p, child, (uint64_t) st.st_size, item_size);
                else
                        r = 0;
                if (r == -ENOMEM)
                        return log_error_errno(r, "out of memory");
                if (r < 0)
                        return r;
        }
        if (errno)
                return log_error_errno(negative_errno(), "cannot read directory %s: %m", path);
        return 0;
}

typedef struct ingest_job {
        cs_store *store;
        const ingest_plan *plan;
        atomic_size_t *next;
        size_t block_size;
        uint64_t bytes, zero_bytes, new_bytes, new_chunks;
        int result;
} ingest_job;

static void *ingest_run(void *userdata)
{
        ingest_job *j = userdata;
        _cleanup_free_ uint8_t *buf = malloc(j->block_size);
        _cleanup_close_ int fd = -1;
        size_t fd_file = SIZE_MAX;
        int r;

        if (!buf) {
                j->result = log_error_errno(-ENOMEM, "out of memory");
                return NULL;
        }
        for (;;) {
                size_t i = atomic_fetch_add(j->next, 1);
                if (i >= j->plan->n_items)
                        return NULL;
                const ingest_item *it = &j->plan->items[i];
                const char *path = j->plan->files[it->file];

                if (it->file != fd_file) {
                        fd = safe_close(fd);
                        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                        if (fd < 0) {
                                j->result = log_error_errno(negative_errno(), "cannot open %s: %m", path);
                                return NULL;
                        }
                        fd_file = it->file;
                }
                for (uint64_t off = it->offset; off < it->offset + it->size;) {
                        size_t want = (size_t) MIN((uint64_t) j->block_size, it->offset + it->size - off);
                        ssize_t n = pread(fd, buf, want, (off_t) off);
                        cs_chunk_id id;

                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                j->result = log_error_errno(negative_errno(), "cannot read %s: %m", path);
                                return NULL;
                        }
                        if (n == 0) /* the file shrank since the walk */
                                break;
                        r = cs_store_put(j->store, CS_KIND_DATA, buf, (size_t) n, &id);
                        if (r < 0) {
                                j->result = log_error_errno(r, "cannot put %s at %" PRIu64 ": %m",
                                                            path, off);
                                return NULL;
                        }
                        if (r > 0) {
                                j->new_chunks++;
                                j->new_bytes += (uint64_t) n;
                        } else if (cs_chunk_id_is_zero(&id))
                                j->zero_bytes += (uint64_t) n;
                        j->bytes += (uint64_t) n;
                        off += (uint64_t) n;
                }
        }
}

static int verb_ingest(const char *store_path, const char *src)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_(ingest_plan_done) ingest_plan plan = {};
        pthread_t threads[THREADS_MAX];
        ingest_job jobs[THREADS_MAX];
        atomic_size_t next = 0;
        uint64_t bytes = 0, zero_bytes = 0, new_bytes = 0, new_chunks = 0;
        cs_stats before, after;
        unsigned started = 0;
        double seconds;
        cpu_use cpu;
        size_t block_size, item_size;
        stopwatch w;
        int r = 0;

        r = cs_store_open(store_path, CS_OPEN_WRITE, &store);
        if (r < 0)
                return log_error_errno(r, "cannot open store %s: %m", store_path);
        block_size = cs_store_block_size(store);
        item_size = MAX(block_size, (size_t) INGEST_ITEM_SIZE);
        r = cs_store_stats(store, &before);
        if (r < 0)
                return log_error_errno(r, "cannot read store statistics: %m");

        /* The walk is not timed: only reading and putting are. */
        r = plan_walk(&plan, src, item_size);
        if (r < 0)
                return r;

        stopwatch_start(&w);
        for (unsigned t = 0; t < arg_threads; t++) {
                jobs[t] = (ingest_job) {
                        .store = store,
                        .plan = &plan,
                        .next = &next,
                        .block_size = block_size,
                };
                r = -pthread_create(&threads[t], NULL, ingest_run, &jobs[t]);
                if (r < 0) {
                        log_error_errno(r, "cannot start a thread: %m");
                        break;
                }
                started++;
        }
        for (unsigned t = 0; t < started; t++) {
                pthread_join(threads[t], NULL);
                if (jobs[t].result < 0 && r >= 0)
                        r = jobs[t].result;
                bytes += jobs[t].bytes;
                zero_bytes += jobs[t].zero_bytes;
                new_bytes += jobs[t].new_bytes;
                new_chunks += jobs[t].new_chunks;
        }
        if (r < 0)
                return r;
        r = cs_store_commit(store);
        if (r < 0)
                return log_error_errno(r, "cannot commit: %m");
        seconds = stopwatch_stop(&w, &cpu);

        printf("bench=ingest op=ingest threads=%u block_size=%zu files=%zu bytes=%" PRIu64
               " zero_bytes=%" PRIu64 " new_bytes=%" PRIu64 " new_chunks=%" PRIu64
               " seconds=%.3f mb_s=%.1f cpu=%.2f cpu_user=%.2f cpu_sys=%.2f other_cpu=%.2f steal=%.2f\n",
               arg_threads, block_size, plan.n_files, bytes, zero_bytes, new_bytes, new_chunks,
               seconds, mb_per_s(bytes, seconds), cpu.user + cpu.sys, cpu.user, cpu.sys,
               cpu.other, cpu.steal);
        fflush(stdout);

        r = cs_store_stats(store, &after);
        if (r < 0)
                return log_error_errno(r, "cannot read store statistics: %m");
        print_stats("ingest", &after, &before);
        return 0;
}

/* --- Command line --------------------------------------------------------- */

static void help(void)
{
        printf("Usage: bench-chunkstore synthetic STORE_DIR [--size MiB] [--threads N]\n"
               "                        [--data-out FILE] [--seed N] [--block-size SIZE]\n"
               "       bench-chunkstore ingest STORE_DIR SRC_DIR [--threads N]\n\n"
               "Measures the chunk store's put and get throughput; prints key=value lines.\n\n"
               "  --size MiB         synthetic data to generate (default 1024)\n"
               "  --threads N        threads putting or getting (default 1)\n"
               "  --data-out FILE    also write the synthetic data to FILE\n"
               "  --seed N           seed of the synthetic data (default 1)\n"
               "  --block-size SIZE  block size of a store synthetic creates\n"
               "  -v, --verbose      debug output on stderr\n");
}

enum {
        ARG_SIZE = 0x100,
        ARG_THREADS,
        ARG_DATA_OUT,
        ARG_SEED,
        ARG_BLOCK_SIZE,
};

static int parse_uint(const char *s, const char *option, uint64_t min, uint64_t max,
                      uint64_t *ret)
{
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v < min || v > max)
                return log_error_errno(-EINVAL, "invalid %s '%s': expected a number from %" PRIu64
                                       " to %" PRIu64, option, s, min, max);
        *ret = v;
        return 0;
}

static int parse_argv(int argc, char **argv)
{
        static const struct option options[] = {
                { "size", required_argument, NULL, ARG_SIZE },
                { "threads", required_argument, NULL, ARG_THREADS },
                { "data-out", required_argument, NULL, ARG_DATA_OUT },
                { "seed", required_argument, NULL, ARG_SEED },
                { "block-size", required_argument, NULL, ARG_BLOCK_SIZE },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        uint64_t v;
        int c, r;

        while ((c = getopt_long(argc, argv, "vh", options, NULL)) >= 0) {
                switch (c) {
                case ARG_SIZE:
                        r = parse_uint(optarg, "--size", 1, UINT64_C(1) << 20, &arg_size_mib);
                        if (r < 0)
                                return r;
                        break;
                case ARG_THREADS:
                        r = parse_uint(optarg, "--threads", 1, THREADS_MAX, &v);
                        if (r < 0)
                                return r;
                        arg_threads = (unsigned) v;
                        break;
                case ARG_DATA_OUT:
                        arg_data_out = optarg;
                        break;
                case ARG_SEED:
                        r = parse_uint(optarg, "--seed", 0, UINT64_MAX, &arg_seed);
                        if (r < 0)
                                return r;
                        break;
                case ARG_BLOCK_SIZE:
                        r = parse_size(optarg, &arg_block_size);
                        if (r < 0)
                                return log_error_errno(r, "invalid --block-size '%s': expected a size such as 64K",
                                                       optarg);
                        break;
                case 'v':
                        log_setup(NULL, LOG_LEVEL_DEBUG);
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return -EINVAL; /* getopt printed the reason */
                }
        }
        return 1;
}

int main(int argc, char **argv)
{
        const char *mode;
        int r;

        log_setup(argv[0], LOG_LEVEL_INFO);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        if (optind >= argc) {
                log_error("no mode given (try 'bench-chunkstore --help')");
                return EXIT_FAILURE;
        }
        mode = argv[optind];
        if (strcmp(mode, "synthetic") == 0 && argc - optind == 2)
                r = verb_synthetic(argv[optind + 1]);
        else if (strcmp(mode, "ingest") == 0 && argc - optind == 3)
                r = verb_ingest(argv[optind + 1], argv[optind + 2]);
        else {
                log_error("unknown mode or wrong arguments (try 'bench-chunkstore --help')");
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
