/* Sizes and alignments at the edges that a header, a prefix or a rounding step can make
 * overflow: SIZE_MAX minus the prefix, PTRDIFF_MAX + 1, pvalloc's rounding to whole
 * pages near SIZE_MAX, memalign of sizes that overflow once the alignment is added, and
 * posix_memalign's refusals (which leave the out-pointer and errno alone). Then realloc
 * of aligned blocks across every size class boundary and back, keeping every usable
 * byte. Each line states what a call returned (null or not, errno), so the output
 * under glibc and under LD_PRELOAD of another malloc must be identical. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errno_name.h"

#define CASE(call)                                                                      \
    do {                                                                                \
        errno = 0;                                                                      \
        void *block_ = (call);                                                          \
        int saved_ = errno;                                                             \
        printf("%-50s %s\n", #call, block_ ? "ok" : errno_name(saved_));               \
        free(block_);                                                                   \
    } while (0)

static void posix_case(const char *what, size_t align, size_t size) {
    void *out = (void *)0x1;
    errno = 0;
    int result = posix_memalign(&out, align, size);
    printf("%-50s result=%s errno=%s out-untouched=%d\n", what, errno_name(result),
           errno_name(errno), out == (void *)0x1);
    if (result == 0) free(out);
}

/* realloc from every size to every other of an aligned block keeps the usable bytes
 * that fit, and the new block's usable size covers the request; a refused realloc to
 * an impossible size leaves the block as it was. */
static void realloc_aligned(void) {
    size_t aligns[] = {16, 32, 64, 4096, 8192, 65536, (size_t)1 << 21};
    size_t sizes[] = {1, 100, 4000, 5000, 100000, 131072, 131073, 300000, 3 << 20};
    size_t count = sizeof sizes / sizeof *sizes, lost = 0, short_blocks = 0, granted = 0;
    for (size_t a = 0; a < sizeof aligns / sizeof *aligns; a++)
        for (size_t i = 0; i < count; i++)
            for (size_t j = 0; j < count; j++) {
                unsigned char *block = memalign(aligns[a], sizes[i]);
                if (!block) abort();
                size_t usable = malloc_usable_size(block);
                for (size_t k = 0; k < usable; k++) block[k] = (unsigned char)(k * 13 + a);
                unsigned char *moved = realloc(block, sizes[j]);
                if (!moved) abort();
                size_t kept = usable < sizes[j] ? usable : sizes[j];
                for (size_t k = 0; k < kept; k++)
                    if (moved[k] != (unsigned char)(k * 13 + a)) {
                        lost++;
                        break;
                    }
                size_t new_usable = malloc_usable_size(moved);
                short_blocks += new_usable < sizes[j];
                memset(moved, 0, new_usable);
                size_t impossible[] = {SIZE_MAX - aligns[a], SIZE_MAX, (size_t)PTRDIFF_MAX};
                for (size_t k = 0; k < 3; k++) {
                    void *refused = realloc(moved, impossible[k]);
                    if (refused) {
                        granted++;
                        moved = refused;
                    }
                }
                free(moved);
            }
    printf("realloc of aligned blocks: lost=%zu short=%zu impossible-granted=%zu\n", lost,
           short_blocks, granted);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    CASE(malloc(SIZE_MAX - 15));
    CASE(malloc(SIZE_MAX - 16));
    CASE(malloc(SIZE_MAX - 31));
    CASE(malloc(SIZE_MAX - page));
    CASE(malloc((size_t)PTRDIFF_MAX + 1));
    CASE(malloc((size_t)PTRDIFF_MAX - 4096));
    CASE(calloc(1, SIZE_MAX - 15));
    CASE(calloc(SIZE_MAX - 15, 1));
    CASE(calloc(2, SIZE_MAX / 2));
    CASE(calloc(SIZE_MAX, SIZE_MAX));
    CASE(valloc(SIZE_MAX - page));
    CASE(valloc(SIZE_MAX - page + 1));
    CASE(pvalloc(SIZE_MAX - page));
    CASE(pvalloc(SIZE_MAX - page + 2));
    CASE(pvalloc(SIZE_MAX - 2 * page));
    CASE(memalign(4096, SIZE_MAX - 4000));
    CASE(memalign(4096, SIZE_MAX - 8192));
    CASE(memalign(1 << 20, SIZE_MAX - (1 << 20)));
    CASE(memalign(64, SIZE_MAX));
    CASE(memalign((size_t)1 << 62, 1));
    CASE(memalign(SIZE_MAX / 2 + 1, 1));
    CASE(memalign(SIZE_MAX / 2, 1));
    CASE(memalign(SIZE_MAX, 1));
    CASE(aligned_alloc(SIZE_MAX / 2 + 1, 1));
    CASE(aligned_alloc(SIZE_MAX, 1));
    CASE(aligned_alloc(64, SIZE_MAX - 63));
    CASE(aligned_alloc(4096, PTRDIFF_MAX));
    CASE(memalign((1 << 20) + 1, 10));
    CASE(memalign(3 << 20, 10));
    CASE(aligned_alloc(3, 5));
    CASE(aligned_alloc(1 << 28, 1));
    CASE(reallocarray(NULL, SIZE_MAX, 2));
    CASE(reallocarray(NULL, 0, SIZE_MAX));
    CASE(reallocarray(NULL, SIZE_MAX, 0));
    CASE(reallocarray(NULL, 1, SIZE_MAX - 15));
    CASE(realloc(NULL, SIZE_MAX - 15));
    CASE(realloc(NULL, 0));

    posix_case("posix_memalign(0, 8)", 0, 8);
    posix_case("posix_memalign(4, 8)", 4, 8);
    posix_case("posix_memalign(24, 8)", 24, 8);
    posix_case("posix_memalign(8, SIZE_MAX - 8)", 8, SIZE_MAX - 8);
    posix_case("posix_memalign(2^63, 8)", (size_t)1 << 63, 8);
    posix_case("posix_memalign(2^62, 8)", (size_t)1 << 62, 8);

    /* A refused realloc of a live block keeps it and sets ENOMEM. */
    size_t starts[] = {100, 1 << 20};
    size_t targets[] = {SIZE_MAX - 15, (size_t)PTRDIFF_MAX + 1, SIZE_MAX - 4096,
                        (size_t)1 << 45};
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 4; j++) {
            char *block = malloc(starts[i]);
            strcpy(block, "kept");
            errno = 0;
            char *moved = realloc(block, targets[j]);
            printf("realloc(malloc(%zu), impossible #%zu) %s %s kept=%d\n", starts[i], j,
                   moved ? "ok" : "NULL", errno_name(errno), strcmp(block, "kept") == 0);
            free(moved ? moved : block);
        }
    char *block = malloc(10);
    char *zero = reallocarray(block, 0, 5);
    printf("reallocarray(p, 0, 5) %s\n", zero ? "ok" : "NULL");
    free(zero);

    realloc_aligned();
    return 0;
}
