/* Under an address-space limit (RLIMIT_AS: as in a container, or a program that caps
 * itself), freed large blocks that the library keeps mapped for reuse must not make a
 * later request fail: 64 MiB of 8 MiB blocks are freed, then one 100 MiB block is asked
 * for, with room for it only once the 64 MiB are unmapped. Prints whether it got it. */
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

int main(void) {
    free(do_malloc(64));
    size_t limit = address_space() + ((size_t)140 << 20);
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }
    void *blocks[8];
    for (int i = 0; i < 8; i++) {
        blocks[i] = do_malloc(((size_t)8 << 20) - 64);
        if (!blocks[i]) {
            printf("setup: 8 MiB block %d refused\n", i);
            return 2;
        }
        memset(blocks[i], 1, 4096);
    }
    for (int i = 0; i < 8; i++) free(blocks[i]);
    char *big = do_malloc((size_t)100 << 20);
    printf("malloc(100 MiB) after freeing 64 MiB under the limit: %s\n", big ? "ok" : "NULL");
    if (big) {
        memset(big, 2, 4096);
        free(big);
    }
    return 0;
}
