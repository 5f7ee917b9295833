/* Under an address-space limit (RLIMIT_AS: as in a container, or a program that caps
 * itself), freed large blocks that the library keeps mapped for reuse must not make a
 * later request fail: 64 MiB of 8 MiB blocks are freed, then one 100 MiB block is asked
 * for, with room for it only once the 64 MiB are unmapped; then the same with 100 MiB
 * of small blocks, whose slabs are mapped one by one. Prints whether each request
 * succeeded, and whether the successful large one left errno as it was. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Keeps the compiler from pairing the mallocs with the frees and removing both. */
static void *(*volatile do_malloc)(size_t) = malloc;

/* The process's address space in bytes, from /proc/self/statm. */
static size_t address_space(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) exit(3);
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* 64 MiB of 8 MiB blocks, written and freed. */
static void alloc_and_free_64_mib(void) {
    void *blocks[8];
    for (int i = 0; i < 8; i++) {
        blocks[i] = do_malloc(((size_t)8 << 20) - 64);
        if (!blocks[i]) {
            printf("setup: 8 MiB block %d refused\n", i);
            exit(2);
        }
        memset(blocks[i], 1, 4096);
    }
    for (int i = 0; i < 8; i++) free(blocks[i]);
}

int main(void) {
    free(do_malloc(64));
    size_t limit = address_space() + ((size_t)140 << 20);
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }
    alloc_and_free_64_mib();
    errno = 0;
    char *big = do_malloc((size_t)100 << 20);
    printf("malloc(100 MiB) after freeing 64 MiB under the limit: %s, errno %s\n",
           big ? "ok" : "NULL", errno == 0 ? "untouched" : "set");
    if (big) {
        memset(big, 2, 4096);
        free(big);
    }

    alloc_and_free_64_mib();
    enum { SMALL = 2000, COUNT = (100 << 20) / SMALL };
    static void *small[COUNT];
    int got = 0;
    while (got < COUNT && (small[got] = do_malloc(SMALL)) != NULL) {
        memset(small[got], 3, 64);
        got++;
    }
    printf("100 MiB of %d-byte blocks after freeing 64 MiB under the limit: %s\n", SMALL,
           got == COUNT ? "ok" : "NULL");
    for (int i = 0; i < got; i++) free(small[i]);
    return 0;
}
