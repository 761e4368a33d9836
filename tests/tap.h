/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A tiny TAP producer for the unit tests, plus helpers they all need:
 * a scratch directory removed at exit and deterministic test data.
 * Run under automake's tap-driver.sh.
 */
#ifndef CFS_TAP_H
#define CFS_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tap_count;
static int tap_failures;
static char tap_scratch[256];

static inline void tap_ok(int passed, const char *file, int line, const char *format, ...)
        __attribute__((format(printf, 4, 5)));

static inline void tap_ok(int passed, const char *file, int line, const char *format, ...)
{
        va_list ap;

        printf("%sok %d - ", passed ? "" : "not ", ++tap_count);
        va_start(ap, format);
        vprintf(format, ap);
        va_end(ap);
        printf("\n");
        if (!passed) {
                printf("# failed at %s:%d\n", file, line);
                tap_failures++;
        }
        fflush(stdout);
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, expected, ...)                                                        \
        do {                                                                              \
                long long _g = (long long) (got), _e = (long long) (expected);            \
                ok(_g == _e, __VA_ARGS__);                                                \
                if (_g != _e)                                                             \
                        printf("#   got %lld, expected %lld\n", _g, _e);              \
        } while (0)

static inline void tap_remove_scratch(void)
{
        char cmd[300];

        if (!tap_scratch[0] || getenv("CLONEFS_KEEP_SCRATCH"))
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tap_scratch);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", tap_scratch);
}

/* A fresh directory for this test program, removed at exit. */
static inline const char *tap_scratch_dir(void)
{
        const char *tmp = getenv("TMPDIR");

        if (tap_scratch[0])
                return tap_scratch;
        snprintf(tap_scratch, sizeof(tap_scratch), "%s/clonefs-test.XXXXXX", tmp ? tmp : "/tmp");
        if (!mkdtemp(tap_scratch)) {
                printf("Bail out! cannot create a scratch directory\n");
                exit(99);
        }
        atexit(tap_remove_scratch);
        return tap_scratch;
}

/* "<scratch>/<name>" in a static buffer of the caller's. */
static inline char *tap_path(char *buf, size_t size, const char *name)
{
        snprintf(buf, size, "%s/%s", tap_scratch_dir(), name);
        return buf;
}

static inline int tap_done(void)
{
        printf("1..%d\n", tap_count);
        return tap_failures ? 1 : 0;
}

/* Deterministic data: xorshift64* from a seed. */
static inline uint64_t tap_random(uint64_t *state)
{
        uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        return x * 0x2545f4914f6cdd1dull;
}

enum { DATA_RANDOM, DATA_TEXT, DATA_ZERO };

/* Fills buf with random bytes, compressible text-like bytes, or zeros. */
static inline void tap_fill(void *buf, size_t size, int kind, uint64_t seed)
{
        static const char words[] = "clonefs point clone timeline chunk pack block store ";
        uint8_t *p = buf;
        uint64_t s = seed * 2654435761u + 1;

        for (size_t i = 0; i < size; i++) {
                switch (kind) {
                case DATA_RANDOM:
                        p[i] = (uint8_t) (tap_random(&s) >> 56);
                        break;
                case DATA_TEXT:
                        if (i % 64 == 0)
                                tap_random(&s);
                        p[i] = (uint8_t) words[(i + (s >> 58)) % (sizeof(words) - 1)];
                        break;
                default:
                        p[i] = 0;
                }
        }
}

#ifdef CLONEFS_CHUNKSTORE_H
/* A new store of 4 KiB blocks in the scratch directory, open for writing
 * (tests that include chunkstore.h before this header). */
static inline cs_store *tap_store(const char *name)
{
        char path[512];
        cs_store *s = NULL;

        tap_path(path, sizeof(path), name);
        cs_store_init(path, &(cs_init_params) { .block_size = 4096 });
        if (cs_store_open(path, CS_OPEN_WRITE, &s) < 0)
                printf("Bail out! cannot open %s\n", path);
        return s;
}
#endif

#endif
