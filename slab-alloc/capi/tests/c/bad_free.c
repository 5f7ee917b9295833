/* Frees that the hardened build must stop: each mode is one mistake, which must end in
 * abort() with a message on stderr naming the address (checked by hardened.sh).
 * "other-copy-large" frees a large block of another copy of the library (its own heap),
 * loaded with dlopen from the path in OTHER_COPY. */
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keeps the compiler from seeing through the mistakes. */
static void *(*volatile do_malloc)(size_t) = malloc;
static void (*volatile do_free)(void *) = free;
static void *(*volatile do_memcpy)(void *, const void *, size_t) = memcpy;

static const char zeros[40];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    char *p = do_malloc(100);
    memset(p, 1, 100);
    if (!strcmp(mode, "double")) {
        do_free(p);
        do_free(p);
    } else if (!strcmp(mode, "double-delayed")) {
        do_free(p);
        for (int i = 0; i < 1024; i++) do_free(do_malloc(100 + i % 50));
        do_free(p);
    } else if (!strcmp(mode, "double-aligned")) {
        void *q = NULL;
        if (posix_memalign(&q, 256, 1000)) return 2;
        do_free(q);
        do_free(q);
    } else if (!strcmp(mode, "double-large")) {
        char *q = do_malloc(1 << 20);
        q[0] = 1;
        do_free(q);
        do_free(q);
    } else if (!strcmp(mode, "underflow")) {
        p[-1] ^= 'A'; /* the top byte of the size in the prefix */
        do_free(p);
    } else if (!strcmp(mode, "underflow-8")) {
        /* mimalloc-bench's one_byte_underflow_small. */
        char *q = do_malloc(8);
        q[-1] ^= 'A';
        do_free(q);
    } else if (!strcmp(mode, "overflow-at-exit")) {
        /* mimalloc-bench's 32_byte_memcpy_overflow_small: 32 bytes (of zeros) past an
         * 8-byte block, then the program exits; caught by the check at exit. */
        char *q = do_malloc(8);
        do_memcpy(q, zeros, sizeof zeros);
    } else if (!strcmp(mode, "overflow-into-free")) {
        /* The same into a free neighbour: caught when the neighbour is handed out. */
        char *a = do_malloc(8), *b = do_malloc(8);
        char *low = a < b ? a : b, *high = a < b ? b : a;
        if (high - low != 32) return 3;
        do_free(high);
        do_memcpy(low, zeros, sizeof zeros);
        do_free(do_malloc(8));
    } else if (!strcmp(mode, "interior")) {
        do_free(p + 32);
    } else if (!strcmp(mode, "interior-over-stale-prefix")) {
        /* A memalign(32) block freed, then a 48-byte block in the same slot: its bytes
         * at the old block's pointer held the old prefix. */
        char *q = memalign(32, 32);
        do_free(q);
        char *r = malloc(48);
        if (r != q - 16) {
            puts("the slot was not reused");
            return 0;
        }
        do_free(q);
    } else if (!strcmp(mode, "prefix-copied-then-realloc")) {
        /* A larger block's prefix copied over this one's (a bug writing just before the
         * block): realloc must not take the larger size and grow over the neighbour. */
        char *small = malloc(100), *big = malloc(300);
        memcpy(small - 16, big - 16, 16);
        small = realloc(small, 300);
        printf("realloc took the copied prefix: %p\n", (void *)small);
    } else if (!strcmp(mode, "unaligned")) {
        do_free(p + 1);
    } else if (!strcmp(mode, "other-copy-large")) {
        const char *path = getenv("OTHER_COPY");
        void *other = path != NULL ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        if (other == NULL) return 2;
        void *(*other_malloc)(size_t) = (void *(*)(size_t))dlsym(other, "malloc");
        if (other_malloc == NULL) return 2;
        char *q = other_malloc(300000);
        if (q == NULL) return 2;
        q[0] = 1;
        do_free(q);
    } else if (!strcmp(mode, "stack")) {
        char local[64];
        memset(local, 0, sizeof local);
        do_free(local + 16);
    } else if (!strcmp(mode, "wild")) {
        do_free((void *)1);
    } else if (!strcmp(mode, "far")) {
        do_free(p + ((size_t)1 << 30));
    } else if (!strcmp(mode, "fine")) {
        /* Correct use: must run to the end. */
        for (int round = 0; round < 100; round++) {
            void *blocks[64];
            for (int i = 0; i < 64; i++) blocks[i] = do_malloc((size_t)(i * 97 + round) % 5000 + 1);
            for (int i = 0; i < 64; i++) blocks[i] = realloc(blocks[i], (size_t)(i * 31) % 300000 + 1);
            for (int i = 63; i >= 0; i--) do_free(blocks[i]);
        }
        do_free(p);
        puts("fine");
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    puts("NOT CAUGHT");
    return 0;
}
