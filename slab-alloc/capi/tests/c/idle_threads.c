/* Eight threads allocate and free 1,000 blocks in each of six size classes, so that the
 * last ones freed stay in their per-thread caches, and then block on a barrier. Their
 * cached blocks keep memory resident that must come back all the same: at once after
 * malloc_trim(0) ("trim"), or within the 5 s this polls while the main thread works in
 * other classes ("work") or sleeps under SLAB_DECAY_THREAD=1 ("idle"). The bound is the
 * level before the threads ran plus 10 % (at least 1 MiB). Prints the figures. */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "measure.h"
#include "work.h"

#define THREADS 8
#define BLOCKS 1000

static void *(*volatile do_malloc)(size_t) = malloc;
static pthread_barrier_t ready, finish;

static void *fill_caches(void *unused) {
    (void)unused;
    static const size_t sizes[] = {1000, 1500, 2000, 3000, 4000, 8000};
    static __thread void *blocks[BLOCKS];
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        for (int i = 0; i < BLOCKS; i++) {
            blocks[i] = do_malloc(sizes[s]);
            if (!blocks[i]) exit(3);
            memset(blocks[i], 0x5A, sizes[s]);
        }
        for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    }
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&finish);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "work";
    for (int i = 0; i < 100; i++) small_class_work();
    long before = resident_kib();
    pthread_t threads[THREADS];
    if (pthread_barrier_init(&ready, NULL, THREADS + 1) || pthread_barrier_init(&finish, NULL, THREADS + 1)) return 3;
    for (int t = 0; t < THREADS; t++)
        if (pthread_create(&threads[t], NULL, fill_caches, NULL)) return 3;
    pthread_barrier_wait(&ready);
    long cached = resident_kib();
    double start = now();
    long rss = cached;
    long bound = before + (before / 10 > 1024 ? before / 10 : 1024);
    if (!strcmp(mode, "trim")) {
        malloc_trim(0);
        rss = resident_kib();
    } else {
        while (rss > bound && now() - start < 5.0) {
            if (!strcmp(mode, "idle")) usleep(20000);
            else for (int i = 0; i < 20; i++) small_class_work();
            rss = resident_kib();
        }
    }
    printf("%s: before %ld KiB, threads blocked with their caches %ld KiB, %.2f s later %ld KiB\n",
           mode, before, cached, now() - start, rss);
    pthread_barrier_wait(&finish);
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    /* The measurement is meaningless if the caches did not hold more than the bound. */
    if (cached <= bound) { printf("%s: the caches held too little to tell\n", mode); return 2; }
    return rss <= bound ? 0 : 1;
}
