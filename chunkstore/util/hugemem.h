/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef CFS_HUGEMEM_H
#define CFS_HUGEMEM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Memory for caches that fill up once and stay full: reserved with mmap,
 * committed page by page as it is first touched, and backed by transparent
 * huge pages where the kernel allows them.  Then filling a cache costs a
 * page fault per 2 MiB instead of per 4 KiB, which matters where faults are
 * dear (14 us per 4 KiB page on the VM of docs/BENCHMARKS.md).
 */
typedef struct huge_region {
        uint8_t *base; /* 2 MiB-aligned, size bytes; NULL if unmapped */
        size_t size;
        void *map;
        size_t map_size;
} huge_region;

/* Maps size bytes (> 0), zero-filled.  Returns 0 or a negative errno. */
int huge_region_map(huge_region *r, size_t size);
/* Unmaps it; accepts an unmapped region. */
void huge_region_unmap(huge_region *r);

static inline int huge_region_contains(const huge_region *r, const void *p)
{
        /* As integers: comparing pointers into different objects is
         * undefined in C. */
        uintptr_t at = (uintptr_t) p, base = (uintptr_t) r->base;

        return r->base && at >= base && at - base < r->size;
}

#endif
