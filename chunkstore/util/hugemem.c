/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <sys/mman.h>

#include "hugemem.h"

#define HUGE_PAGE (2u << 20)

int huge_region_map(huge_region *r, size_t size)
{
        *r = (huge_region) {};
        if (size == 0 || size > SIZE_MAX - HUGE_PAGE)
                return -EINVAL;
        /* One huge page more, to align the start. */
        r->map_size = size + HUGE_PAGE;
        r->map = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r->map == MAP_FAILED) {
                *r = (huge_region) {};
                return -ENOMEM;
        }
        r->base = (uint8_t *) (((uintptr_t) r->map + HUGE_PAGE - 1) & ~(uintptr_t) (HUGE_PAGE - 1));
        r->size = size;
        /* A hint: without THP the region works with 4 KiB pages. */
        (void) madvise(r->base, size, MADV_HUGEPAGE);
        return 0;
}

void huge_region_unmap(huge_region *r)
{
        if (r->map)
                (void) munmap(r->map, r->map_size);
        *r = (huge_region) {};
}
