/* A peak of 400 MiB of 4000-byte blocks is freed; resident memory must come back within
 * 10 % of its level before the peak while the program keeps working in other size
 * classes ("work"), while it also keeps one block of the peak's class in use at a time
 * (so that class stays busy: "busy"), or while it does nothing at all after the freeing thread exited
 * ("idle", under SLAB_DECAY_THREAD=1). "idle-large": a program that never used the size
 * classes frees a peak of 16 blocks of 6 MiB (which the heap keeps for reuse) and does
 * nothing more, under SLAB_DECAY_THREAD=1. Polls up to 5 s; prints the figures. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "measure.h"
#include "work.h"

static void *(*volatile do_malloc)(size_t) = malloc;

static size_t peak_blocks = 100 * 1024;

/* 16 blocks of 6 MiB, written, then freed. */
static void *large_peak(void *unused) {
    (void)unused;
    void *blocks[16];
    for (int i = 0; i < 16; i++) {
        blocks[i] = do_malloc(6 << 20);
        if (!blocks[i]) exit(4);
        memset(blocks[i], 0xA5, 6 << 20);
    }
    for (int i = 0; i < 16; i++) free(blocks[i]);
    return NULL;
}

static void *peak(void *unused) {
    (void)unused;
    char **blocks = do_malloc(peak_blocks * sizeof *blocks);
    for (size_t i = 0; i < peak_blocks; i++) {
        blocks[i] = do_malloc(4000);
        memset(blocks[i], 0xA5, 4000);
    }
    for (size_t i = 0; i < peak_blocks; i++) free(blocks[i]);
    free(blocks);
    return NULL;
}

int main(int argc, char **argv) {
    int large = argc > 1 && !strcmp(argv[1], "idle-large");
    int idle = large || (argc > 1 && !strcmp(argv[1], "idle"));
    int busy = argc > 1 && !strcmp(argv[1], "busy");
    if (argc > 2) peak_blocks = strtoul(argv[2], NULL, 10);
    if (!large)
        for (int i = 0; i < 100; i++) small_class_work();
    long before = resident_kib();
    if (large) {
        large_peak(NULL);
    } else if (idle) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, peak, NULL) || pthread_join(thread, NULL)) return 3;
    } else {
        peak(NULL);
    }
    long after_free = resident_kib();
    double start = now();
    long rss = after_free;
    /* 10 %, or 1 MiB for a small process (glibc itself stays about 250 KiB above). */
    long bound = before + (before / 10 > 1024 ? before / 10 : 1024);
    while (rss > bound && now() - start < 5.0) {
        if (idle) usleep(20000);
        else for (int i = 0; i < 20; i++) {
            small_class_work();
            if (busy) {
                char *block = do_malloc(4000);
                if (!block) return 3;
                memset(block, 0x5A, 4000);
                free(block);
            }
        }
        rss = resident_kib();
    }
    printf("%s: before the peak %ld KiB, after the frees %ld KiB, %.2f s later %ld KiB\n",
           large ? "idle-large" : idle ? "idle" : busy ? "busy" : "work", before, after_free, now() - start, rss);
    return rss <= bound ? 0 : 1;
}
