/* Threads that exit while blocks they allocated are still live and freed later by other
 * threads (glibc's tst-malloc-thread-exit): generations of threads each allocate blocks
 * of many classes, free those of the previous generation, and exit. Then threads whose
 * pthread-key destructors allocate and free, over several destructor rounds, after the
 * allocator's own exit hook may already have run. The live blocks must keep their
 * contents, and resident memory and the heap's in-use count must stay bounded (nothing
 * leaks per thread). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "measure.h"

#define BLOCKS 3000
#define GENERATIONS 300
#define KEY_THREADS 500

static int corrupt;

static void *generation(void *previous_blocks) {
    unsigned char **previous = previous_blocks;
    unsigned char **mine = malloc(sizeof *mine * BLOCKS);
    if (!mine) exit(3);
    for (unsigned i = 0; i < BLOCKS; i++) {
        size_t size = 8 + i * 37 % 6000;
        mine[i] = malloc(size);
        if (!mine[i]) exit(3);
        memset(mine[i], (int)(i & 0xFF), size < 64 ? size : 64);
    }
    if (previous) {
        for (unsigned i = 0; i < BLOCKS; i++) {
            if (previous[i][0] != (unsigned char)i) corrupt = 1;
            free(previous[i]);
        }
        free(previous);
    }
    return mine;
}

static pthread_key_t keys[4];

static void destructor(void *value) {
    static __thread int rounds;
    void **blocks = value;
    for (int i = 0; i < 500; i++) {
        free(blocks[i]);
        blocks[i] = malloc(100 + (size_t)i % 900);
        if (!blocks[i]) exit(3);
    }
    if (rounds++ < 3) {
        pthread_setspecific(keys[0], blocks); /* one more destructor round */
    } else {
        for (int i = 0; i < 500; i++) free(blocks[i]);
        free(blocks);
    }
}

static void *keyed(void *arg) {
    void **blocks = malloc(sizeof *blocks * 500);
    if (!blocks) exit(3);
    for (int i = 0; i < 500; i++) blocks[i] = malloc(50 + (size_t)i % 3000);
    pthread_setspecific(keys[(long)arg % 4], blocks);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    void *carried = NULL;
    long resident_early = 0;
    for (int g = 0; g < GENERATIONS; g++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, generation, carried)) return 3;
        pthread_join(thread, &carried);
        if (g == 100) resident_early = resident_kib();
    }
    long resident_late = resident_kib();
    generation(carried); /* frees the last generation's blocks */
    printf("blocks freed by the next generation kept their contents: %d\n", !corrupt);
    printf("resident memory bounded over thread generations: %d\n",
           resident_late <= resident_early + 20000);
    if (resident_late > resident_early + 20000)
        fprintf(stderr, "resident %ld KiB after 100 generations, %ld KiB after %d\n",
                resident_early, resident_late, GENERATIONS);

    for (int i = 0; i < 4; i++)
        if (pthread_key_create(&keys[i], destructor)) return 3;
    for (long t = 0; t < KEY_THREADS; t++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, keyed, (void *)t)) return 3;
        pthread_join(thread, NULL);
    }
    struct mallinfo2 info = mallinfo2();
    printf("key destructors that allocate leave no blocks in use: %d\n",
           info.uordblks < 10 << 20);
    return 0;
}
