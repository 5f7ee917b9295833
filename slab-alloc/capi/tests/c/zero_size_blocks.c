/* Zero-size requests are valid and give unique pointers that free takes back: malloc(0),
 * valloc(0), and memalign / posix_memalign / aligned_alloc with size 0 and alignments up
 * to 1 MiB, many of each, among ordinary blocks. A zero-size block's pointer must lie
 * inside its block: at the block's end it may be the start of the next slab, which free
 * would take for a block of that slab (its header then goes on a free list), or the
 * hardened build would report a valid free. Prints only what glibc prints too. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*volatile do_malloc)(size_t) = malloc;
static void (*volatile do_free)(void *) = free;
static void *(*volatile do_memalign)(size_t, size_t) = memalign;
static void *(*volatile do_realloc)(void *, size_t) = realloc;

static const size_t sizes[] = {8, 16, 24, 48, 100, 256, 1000, 2048, 5000, 8192, 20480, 65536, 131072};

/* Blocks of every class after the zero-size ones went back, written and checked: a slab
 * whose header was taken for a free block shows as a crash or overwritten contents. */
static int churn(const char *what) {
    int bad = 0;
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        unsigned char *kept[64];
        for (int k = 0; k < 64; k++) {
            kept[k] = do_malloc(sizes[c]);
            if (!kept[k]) { printf("%s: malloc(%zu) failed\n", what, sizes[c]); return 1; }
            memset(kept[k], (int)(c * 64 + k) & 0xff, sizes[c]);
        }
        for (int k = 0; k < 64; k++) {
            for (size_t b = 0; b < sizes[c]; b++)
                if (kept[k][b] != ((c * 64 + k) & 0xff)) { bad = 1; break; }
            do_free(kept[k]);
        }
    }
    if (bad) printf("%s: a block's contents changed\n", what);
    return bad;
}

int main(void) {
    enum { N = 20000, M = 600 };
    static void *v[N], *keep[M * 4];
    int bad = 0;
    for (int i = 0; i < N; i++) v[i] = do_malloc(0);
    for (int i = 0; i < N; i++) do_free(v[i]);
    for (int i = 0; i < N; i++) v[i] = do_realloc(do_malloc(0), 0 + (i % 2) * 24);
    for (int i = 0; i < N; i++) do_free(v[i]);
    puts("malloc(0) and realloc of it: freed");
    for (int i = 0; i < 200; i++) v[i] = valloc(0);
    for (int i = 0; i < 200; i++) do_free(v[i]);
    puts("valloc(0): freed");
    for (size_t align = 32; align <= (1 << 20); align *= 2) {
        for (int i = 0; i < M; i++) {
            switch (i % 3) {
            case 0: v[i] = do_memalign(align, 0); break;
            case 1: if (posix_memalign(&v[i], align, 0)) v[i] = NULL; break;
            default: v[i] = aligned_alloc(align, 0); break;
            }
            if (v[i] == NULL || (uintptr_t)v[i] % align) { printf("align %zu: bad block\n", align); return 1; }
            for (int j = 0; j < 4; j++) keep[i * 4 + j] = do_malloc(1 + ((i * 4 + j) * 4099) % 20000);
        }
        for (int i = 0; i < M; i++) do_free(v[i]);
        bad |= churn("memalign(A, 0)");
        for (int i = 0; i < M * 4; i++) do_free(keep[i]);
    }
    puts("memalign, posix_memalign and aligned_alloc with size 0, alignments 32 to 1 MiB: freed");
    return bad;
}
