/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers shared by the library, the tools, the daemon and the tests:
 * cleanup attributes so that every function has one exit path, and a few
 * arithmetic macros.  Nothing here allocates global state.
 */
#ifndef CFS_MACRO_H
#define CFS_MACRO_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))

/* Frees and returns NULL, so that "p = mfree(p);" needs no second line. */
static inline void *mfree(void *p)
{
        free(p);
        return NULL;
}

static inline void freep(void *p)
{
        free(*(void **) p);
}

/* Closes preserving errno (a cleanup must never clobber the caller's error)
 * and returns -1, for "fd = safe_close(fd);". */
static inline int safe_close(int fd)
{
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -1;
}

static inline void closep(int *fd)
{
        safe_close(*fd);
}

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hands ownership of a pointer to the caller: returns it and NULLs the local. */
#define TAKE_PTR(p)                           \
        ({                                    \
                __typeof__(p) _taken_ = (p);  \
                (p) = NULL;                   \
                _taken_;                      \
        })

/* The same for file descriptors. */
#define TAKE_FD(fd)                   \
        ({                            \
                int _taken_fd_ = (fd); \
                (fd) = -1;            \
                _taken_fd_;           \
        })

/* Negative errno of the last failing libc call, never 0 (a library that
 * fails without setting errno must not look like success). */
static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}

#endif
