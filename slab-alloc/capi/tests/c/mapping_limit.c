/* At the process's limit of mappings (vm.max_map_count), unmapping part of a mapping
 * fails: a program churning large blocks there must still get its memory back once the
 * blocks are freed (the heap decommits the pages it cannot unmap), with every block's
 * contents intact and every failure a NULL with ENOMEM, and its mappings back once
 * there is room (the heap releases the ranges it could not unmap at malloc_trim), so
 * that the program can still open a file afterwards. The limit is reached with
 * one-page mappings that cannot merge (every other page of a reservation made
 * readable), leaving 10 free. Prints only properties. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "measure.h"

static void *(*volatile do_malloc)(size_t) = malloc;

/* Counted with read(2) into a buffer on the stack: at the limit, fopen's malloc may
   rightly fail. */
static long mappings(void) {
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) exit(3);
    char buffer[1 << 16];
    long lines = 0;
    for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;)
        for (ssize_t i = 0; i < n; i++) lines += buffer[i] == '\n';
    close(fd);
    return lines;
}

static long limit(void) {
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long value = 0;
    if (!f || fscanf(f, "%ld", &value) != 1) exit(3);
    fclose(f);
    return value;
}

static uint64_t state = 1234567;
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* Linux's default limit is 65,530; some distributions raise it to about a million.
   Above four times the default the program does nothing and says so (the same line
   under glibc and under LD_PRELOAD): a million mappings held at once take hundreds of
   megabytes of kernel records and minutes, and show nothing a lower limit does not. */
enum { MOST_MAPPINGS_FILLED = 262144 };

int main(void) {
    if (limit() > MOST_MAPPINGS_FILLED) {
        printf("skipped: vm.max_map_count is %ld, above the %d mappings this program fills the process to\n",
               limit(), MOST_MAPPINGS_FILLED);
        return 0;
    }
    long before = resident_kib();
    long pages = limit() + 1000;
    char *base = mmap(NULL, pages * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return 3;
    long to_split = limit() - 10 - mappings();
    long start = mappings() + to_split / 2 * 2;
    for (long i = 0; i < to_split / 2; i++) mprotect(base + 2 * i * 4096, 4096, PROT_READ);

    enum { SLOTS = 32 };
    char *blocks[SLOTS] = {0};
    size_t sizes[SLOTS];
    unsigned char bytes[SLOTS];
    int corrupt = 0, bad_errno = 0;
    for (int round = 0; round < 3000; round++) {
        int k = next() % SLOTS;
        size_t size = (130 << 10) + next() % (8 << 20);
        if (!blocks[k]) {
            errno = 0;
            blocks[k] = next() % 5 == 0 ? calloc(1, size) : do_malloc(size);
            if (!blocks[k]) {
                bad_errno += errno != ENOMEM;
                continue;
            }
        } else if (next() % 2) {
            for (size_t i = 0; i < sizes[k]; i += 4093) corrupt += (unsigned char)blocks[k][i] != bytes[k];
            free(blocks[k]);
            blocks[k] = NULL;
            continue;
        } else {
            errno = 0;
            char *moved = realloc(blocks[k], size);
            if (!moved) {
                bad_errno += errno != ENOMEM;
                continue;
            }
            size_t kept = sizes[k] < size ? sizes[k] : size;
            for (size_t i = 0; i < kept; i += 4093) corrupt += (unsigned char)moved[i] != bytes[k];
            blocks[k] = moved;
        }
        sizes[k] = size;
        bytes[k] = (unsigned char)next();
        memset(blocks[k], bytes[k], size);
    }
    for (int k = 0; k < SLOTS; k++) free(blocks[k]);
    malloc_trim(0);
    long mappings_left = mappings() - start;
    long after = resident_kib();
    printf("bytes lost or changed: %d\n", corrupt);
    printf("failures that were not NULL with ENOMEM: %d\n", bad_errno);
    printf("resident after freeing everything at the limit: within 64 MiB of the start: %s\n",
           after - before < 64 * 1024 ? "yes" : "no");
    printf("mappings after freeing everything and malloc_trim: at most 4 more than at the start: %s\n",
           mappings_left <= 4 ? "yes" : "no");
    munmap(base, pages * 4096);
    return 0;
}
