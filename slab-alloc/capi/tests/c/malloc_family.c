/* The glibc malloc family, case by case: each line states what a call returned (null or
 * not, errno, and the properties glibc documents), so the output under glibc and under
 * LD_PRELOAD of another malloc must be identical. Sizes and addresses, which differ
 * between allocators, are never printed: only the properties promised about them. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "errno_name.h"

/* Reports a block: null and errno, or "ok" with alignment and usable-size checks. A
 * block of up to 16 MiB is written over its whole usable size (a larger one is left
 * untouched: a malloc that wrongly grants 64 GiB must not bring in the OOM killer), then
 * freed. */
static void report(const char *what, void *block, size_t size, size_t align, int saved) {
    if (block == NULL) {
        printf("%-40s NULL %s\n", what, errno_name(saved));
        return;
    }
    size_t usable = malloc_usable_size(block);
    if (usable <= (size_t)16 << 20) memset(block, 0xA5, usable);
    printf("%-40s ok aligned=%d usable>=size=%d\n", what,
           align == 0 || (uintptr_t)block % align == 0, usable >= size);
    free(block);
}

#define CASE(call, size, align)                                                     \
    do {                                                                            \
        errno = 0;                                                                  \
        void *block_ = (call);                                                      \
        report(#call, block_, (size), (align), errno);                             \
    } while (0)

static void posix_case(size_t align, size_t size) {
    void *out = (void *)0x1;
    errno = 0;
    int result = posix_memalign(&out, align, size);
    printf("posix_memalign(%zu, %zu)%*s result=%s errno=%s out-untouched=%d", align, size,
           8, "", errno_name(result), errno_name(errno), out == (void *)0x1);
    if (result == 0) {
        printf(" aligned=%d", (uintptr_t)out % align == 0);
        free(out);
    }
    printf("\n");
}

/* glibc's tst-free-errno: `free` of a block with a mapping of its own keeps errno even
 * when its munmap fails. Pages mapped right before and after the block merge with its
 * mapping, and the process's mapping count is then used up, so that unmapping the block
 * alone would split a mapping in three: munmap fails with ENOMEM. (In glibc, as in
 * pagekeep-slab, the block's mapping runs from a 16-byte header before `p` to
 * `p + malloc_usable_size(p)`.) */
static void *pages[1 << 17];

/* Whether one line of /proc/self/maps strictly contains start..end. */
static int inside_one_mapping(char *start, char *end) {
    FILE *maps = fopen("/proc/self/maps", "r");
    unsigned long low, high;
    char line[512];
    int inside = 0;
    while (maps && fgets(line, sizeof line, maps))
        if (sscanf(line, "%lx-%lx", &low, &high) == 2)
            inside |= low < (uintptr_t)start && (uintptr_t)end < high;
    if (maps) fclose(maps);
    return inside;
}

static void free_keeps_errno_when_munmap_fails(void) {
    long page = sysconf(_SC_PAGESIZE);
    /* Above glibc's largest dynamic mmap threshold (32 MiB), and above the 64 MiB of
     * freed large blocks that pagekeep-slab keeps for reuse, so that `free` unmaps it: a
     * fresh mapping of its own (malloc_trim first releases the blocks kept, which
     * `malloc` could otherwise grow into this one). */
    malloc_trim(0);
    char *block = malloc(80 << 20);
    memset(block, 1, 1 << 20);
    char *start = block - 16, *end = block + malloc_usable_size(block);
    /* A page just before and just after the mapping, where those addresses are free
     * (where they are not, a neighbouring mapping may already be merged). */
    char *neighbours[] = {start - page, end};
    for (int i = 0; i < 2; i++)
        mmap(neighbours[i], (size_t)page, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    int merged = inside_one_mapping(start, end);
    size_t count = 0;
    while (merged && count < sizeof pages / sizeof *pages) {
        /* Alternate protections so that neighbours never merge. */
        void *p = mmap(NULL, (size_t)page, count % 2 ? PROT_READ : PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) break;
        pages[count++] = p;
    }
    errno = 1789;
    free(block);
    int kept = errno == 1789;
    for (size_t i = 0; i < count; i++) munmap(pages[i], (size_t)page);
    /* The block's pages stay mapped if munmap failed: leave them. */
    printf("free keeps errno when munmap fails: %s\n",
           !merged ? "(the block's mapping could not be merged: not checked)"
                   : kept ? "1" : "0");
}

int main(void) {
    const size_t GiB = (size_t)1 << 30;
    long page = sysconf(_SC_PAGESIZE);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Sizes too large for the address space or the machine. */
    CASE(malloc(SIZE_MAX), SIZE_MAX, 16);
    CASE(malloc(SIZE_MAX - 4096), SIZE_MAX - 4096, 16);
    CASE(malloc(PTRDIFF_MAX), PTRDIFF_MAX, 16);
    CASE(malloc(64 * GiB), 64 * GiB, 16);
    CASE(malloc(1024 * GiB), 1024 * GiB, 16);
    CASE(calloc(64, GiB), 64 * GiB, 16);
    CASE(calloc(1024, GiB), 1024 * GiB, 16);
    CASE(calloc(SIZE_MAX / 2, 3), 0, 16);
    CASE(calloc((size_t)1 << 33, (size_t)1 << 33), 0, 16);
    CASE(aligned_alloc((size_t)1 << 40, 1), 1, (size_t)1 << 40);
    CASE(memalign((size_t)1 << 40, 1), 1, (size_t)1 << 40);
    CASE(valloc(SIZE_MAX), SIZE_MAX, 0);
    CASE(pvalloc(SIZE_MAX), SIZE_MAX, 0);
    CASE(reallocarray(NULL, SIZE_MAX / 2, 3), 0, 16);
    CASE(realloc(NULL, SIZE_MAX), 0, 16);

    /* Alignments: glibc 2.36 rounds memalign's and aligned_alloc's up to a power of two
     * (at least 16) and refuses only those above SIZE_MAX / 2 + 1. */
    size_t aligns[] = {0, 1, 8, 16, 24, 48, 100, 4096, 5000, (size_t)1 << 21};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        size_t a = aligns[i];
        size_t rounded = 16;
        while (rounded < a) rounded <<= 1;
        char name[64];
        snprintf(name, sizeof name, "memalign(%zu, 100)", a);
        errno = 0;
        void *block = memalign(a, 100);
        report(name, block, 100, rounded, errno);
        snprintf(name, sizeof name, "aligned_alloc(%zu, 100)", a);
        errno = 0;
        block = aligned_alloc(a, 100);
        report(name, block, 100, rounded, errno);
        posix_case(a, 100);
    }
    CASE(memalign(SIZE_MAX / 2 + 2, 1), 1, 0);
    CASE(aligned_alloc(SIZE_MAX / 2 + 2, 1), 1, 0);
    posix_case(SIZE_MAX / 2 + 2, 1);
    posix_case(4096, SIZE_MAX);

    /* Zero sizes: glibc returns a unique, freeable block. */
    CASE(malloc(0), 0, 16);
    CASE(calloc(0, 10), 0, 16);
    CASE(calloc(10, 0), 0, 16);
    CASE(memalign(64, 0), 0, 64);
    CASE(aligned_alloc(64, 0), 0, 64);
    CASE(valloc(0), 0, (size_t)page);
    CASE(reallocarray(NULL, 0, 0), 0, 16);

    /* valloc and pvalloc: page-aligned; pvalloc rounds the size up to whole pages. */
    CASE(valloc(1), 1, (size_t)page);
    CASE(valloc(3 * (size_t)page + 1), 3 * (size_t)page + 1, (size_t)page);
    CASE(pvalloc(1), (size_t)page, (size_t)page);
    CASE(pvalloc(0), 0, (size_t)page);
    CASE(pvalloc(5 * (size_t)page + 1), 6 * (size_t)page, (size_t)page);

    /* calloc zeroes, also a block that was just freed dirty. */
    for (size_t size = 8; size <= (size_t)1 << 20; size *= 4) {
        unsigned char *dirty = malloc(size);
        memset(dirty, 0xFF, size);
        free(dirty);
        unsigned char *zeroed = calloc(1, size);
        int zero = 1;
        for (size_t i = 0; i < size; i++) zero &= zeroed[i] == 0;
        printf("calloc(1, %zu) after a dirty free: zeroed=%d\n", size, zero);
        free(zeroed);
    }

    /* realloc keeps every byte of the old usable size (up to the new size). */
    size_t sizes[] = {1, 20, 100, 5000, 40000, 200000, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        for (size_t j = 0; j < sizeof sizes / sizeof *sizes; j++) {
            unsigned char *block = malloc(sizes[i]);
            size_t usable = malloc_usable_size(block);
            for (size_t k = 0; k < usable; k++) block[k] = (unsigned char)(k * 7 + 3);
            unsigned char *moved = realloc(block, sizes[j]);
            size_t kept = usable < sizes[j] ? usable : sizes[j];
            size_t wrong = 0;
            for (size_t k = 0; k < kept; k++) wrong += moved[k] != (unsigned char)(k * 7 + 3);
            if (wrong) printf("realloc %zu -> %zu: %zu of %zu usable bytes lost\n",
                              sizes[i], sizes[j], wrong, kept);
            free(moved);
        }
    }
    printf("realloc keeps the usable bytes: checked\n");
    /* realloc(p, 0) frees p and returns NULL (glibc); reallocarray of an overflow fails
     * and leaves the block alone. */
    void *block = malloc(10);
    errno = 0;
    void *result = realloc(block, 0);
    printf("realloc(p, 0)%*s %s\n", 27, "", result == NULL ? "NULL" : "ok");
    free(result);
    block = malloc(10);
    strcpy(block, "kept");
    errno = 0;
    result = reallocarray(block, SIZE_MAX / 2, 3);
    printf("reallocarray(p, overflow)%*s %s %s kept=%d\n", 15, "",
           result == NULL ? "NULL" : "ok", errno_name(errno), strcmp(block, "kept") == 0);
    errno = 0;
    result = realloc(block, SIZE_MAX - 100);
    printf("realloc(p, SIZE_MAX - 100)%*s %s %s kept=%d\n", 14, "",
           result == NULL ? "NULL" : "ok", errno_name(errno), strcmp(block, "kept") == 0);
    result = reallocarray(block, 100, 10);
    printf("reallocarray(p, 100, 10)%*s %s kept=%d\n", 16, "", result == NULL ? "NULL" : "ok",
           strcmp(result, "kept") == 0);
    free(result);

    /* free keeps errno (POSIX 2024, glibc's tst-free-errno), for small and large blocks. */
    size_t free_sizes[] = {8, 5000, 200000, 64 << 20};
    for (size_t i = 0; i < sizeof free_sizes / sizeof *free_sizes; i++) {
        void *p = malloc(free_sizes[i]);
        errno = 1789;
        free(p);
        printf("free(malloc(%zu)) keeps errno: %d\n", free_sizes[i], errno == 1789);
    }
    errno = 1789;
    free(NULL);
    printf("free(NULL) keeps errno: %d\n", errno == 1789);

    /* malloc_usable_size of NULL is 0. */
    printf("malloc_usable_size(NULL) = %zu\n", malloc_usable_size(NULL));

    free_keeps_errno_when_munmap_fails();
    return 0;
}
