/* fork() from a multi-threaded parent whose threads are allocating and freeing at the
 * moment of the fork (python's multiprocessing, pre-forking servers). Each child
 * allocates, starts a thread with a 32 MiB stack (which makes glibc unmap or reuse the
 * cached stacks of the parent's threads), then four ordinary threads that free each
 * other's blocks and exit, and checks that no block was handed out twice. A child that
 * crashes, hangs (60 s alarm) or finds a shared block fails the run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PARENT_THREADS 8
#define FORKS 10
#define BLOCKS 5000

static atomic_int stop;

/* Allocates and frees blocks of many size classes; keeps some live so that frees fall
 * on full magazines and reach the depot (the slow path) often. */
static void *churn(void *arg) {
    uintptr_t seed = (uintptr_t)arg * 2654435761u + 1;
    void *kept[256] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int i = 0; i < 256; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            size_t size = 8 + (seed >> 33) % 3000;
            free(kept[i]);
            kept[i] = malloc(size);
            memset(kept[i], (int)i, size < 64 ? size : 64);
        }
        for (int i = 0; i < 256; i += 2) {
            free(kept[i]);
            kept[i] = NULL;
        }
    }
    for (int i = 0; i < 256; i++) free(kept[i]);
    return NULL;
}

/* Fills `count` blocks with their own index and checks that every one still holds it:
 * a block handed out twice would hold another index. */
static int distinct_blocks(size_t size, int count) {
    uint32_t **blocks = malloc(sizeof *blocks * (size_t)count);
    if (!blocks) return 0;
    for (int i = 0; i < count; i++) {
        blocks[i] = malloc(size);
        if (!blocks[i]) return 0;
        for (size_t w = 0; w < size / 4; w++) blocks[i][w] = (uint32_t)i;
    }
    int ok = 1;
    for (int i = 0; i < count; i++)
        for (size_t w = 0; w < size / 4; w++) ok &= blocks[i][w] == (uint32_t)i;
    for (int i = 0; i < count; i++) free(blocks[i]);
    free(blocks);
    return ok;
}

static void *child_work(void *arg) {
    (void)arg;
    int ok = distinct_blocks(48, BLOCKS / 4) && distinct_blocks(1000, 200) &&
             distinct_blocks(20000, 20);
    return ok ? (void *)1 : NULL;
}

/* Blocks handed from one child thread to the next, freed by the receiver. */
static void *volatile handoff[4];

static void *child_thread(void *arg) {
    uintptr_t index = (uintptr_t)arg;
    void *mine = malloc(100 + index * 1000);
    memset(mine, 1, 100 + index * 1000);
    handoff[index] = mine;
    void *ok = child_work(NULL);
    return ok;
}

static int run_thread(size_t stack, void *(*body)(void *), void *arg) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack) pthread_attr_setstacksize(&attr, stack);
    pthread_t thread;
    if (pthread_create(&thread, &attr, body, arg) != 0) return 0;
    pthread_attr_destroy(&attr);
    void *result = NULL;
    pthread_join(thread, &result);
    return result != NULL;
}

static int child(void) {
    alarm(60);
    if (!distinct_blocks(48, BLOCKS) || !distinct_blocks(3000, 500)) return 1;
    if (!run_thread((size_t)32 << 20, child_work, NULL)) return 2;
    pthread_t threads[4];
    for (uintptr_t t = 0; t < 4; t++)
        if (pthread_create(&threads[t], NULL, child_thread, (void *)t) != 0) return 3;
    int ok = 1;
    for (int t = 0; t < 4; t++) {
        void *result = NULL;
        pthread_join(threads[t], &result);
        ok &= result != NULL;
    }
    if (!ok) return 4;
    for (int t = 0; t < 4; t++) free(handoff[t]); /* blocks of exited threads */
    if (!run_thread((size_t)32 << 20, child_work, NULL)) return 5;
    if (!distinct_blocks(48, BLOCKS)) return 6;
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t threads[PARENT_THREADS];
    for (uintptr_t t = 0; t < PARENT_THREADS; t++)
        pthread_create(&threads[t], NULL, churn, (void *)t);
    int failures = 0;
    for (int round = 0; round < FORKS; round++) {
        usleep(2000);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) _exit(child());
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failures++;
            if (WIFSIGNALED(status))
                printf("fork %d: child killed by signal %d (%s)\n", round, WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
            else
                printf("fork %d: child exited with status %d\n", round, WEXITSTATUS(status));
        }
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < PARENT_THREADS; t++) pthread_join(threads[t], NULL);
    printf("%d forks from %d allocating threads: %d children failed\n", FORKS, PARENT_THREADS,
           failures);
    return failures != 0;
}
