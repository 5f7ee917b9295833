/* A freed peak must go back to the system whatever the program does next. Four
 * threads each allocate 25 000 blocks of many size classes (about 150 MiB in all),
 * free one another's, and exit; the main thread then keeps working, but only by
 * allocating and freeing one block at a time, which a per-thread cache serves without
 * ever leaving it. Resident memory must come back within 8 MiB (or 10 %) of its level
 * before the peak within 5 s. glibc gives it back as the threads free. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "measure.h"

#define THREADS 4
#define BLOCKS 25000

static void **blocks[THREADS];
static pthread_barrier_t barrier;

static void *peak(void *arg) {
    long id = (long)arg;
    blocks[id] = malloc(sizeof(void *) * BLOCKS);
    if (!blocks[id]) exit(3);
    for (unsigned i = 0; i < BLOCKS; i++) {
        size_t size = 16 + (i * 2654435761u >> 7) % 3000;
        blocks[id][i] = malloc(size);
        if (!blocks[id][i]) exit(3);
        memset(blocks[id][i], 1, size);
    }
    pthread_barrier_wait(&barrier);
    void **other = blocks[(id + 1) % THREADS];
    for (int i = 0; i < BLOCKS; i++) free(other[i]);
    pthread_barrier_wait(&barrier);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Warm up the classes the main thread works in afterwards. */
    for (int i = 0; i < 1000; i++) free(malloc(64 + (size_t)i % 200));
    long before = resident_kib();
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, peak, (void *)i)) return 3;
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++) free(blocks[i]);
    long bound = before + (before / 10 > 8192 ? before / 10 : 8192);
    double start = now();
    long rss = resident_kib();
    while (rss > bound && now() - start < 5.0) {
        for (int i = 0; i < 100000; i++) {
            char *block = malloc(64 + (size_t)i % 200);
            if (!block) return 3;
            block[0] = 1;
            free(block);
        }
        usleep(10000);
        rss = resident_kib();
    }
    printf("freed peak back within 5 s while working one block at a time: %s\n",
           rss <= bound ? "yes" : "no");
    if (rss > bound)
        fprintf(stderr, "before the peak %ld KiB, %.2f s after the frees %ld KiB\n", before,
                now() - start, rss);
    return rss <= bound ? 0 : 1;
}
