/* The work the memory-return programs do after freeing a peak: batches of 1,000 blocks
 * of 64, 164 and 264 bytes (size classes other than the peak's), allocated, written and
 * freed. */
#ifndef SLAB_CAPI_TESTS_WORK_H
#define SLAB_CAPI_TESTS_WORK_H

#include <stdlib.h>
#include <string.h>

/* Keeps the compiler from pairing the mallocs with the frees and removing both. */
static void *(*volatile work_malloc)(size_t) = malloc;

static inline void small_class_work(void) {
    void *blocks[1000];
    for (int i = 0; i < 1000; i++) {
        blocks[i] = work_malloc(64 + i % 3 * 100);
        memset(blocks[i], 1, 8);
    }
    for (int i = 0; i < 1000; i++) free(blocks[i]);
}

#endif
