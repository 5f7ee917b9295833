/* fork, vfork + exec and posix_spawn in a loop while six threads allocate and free
 * blocks of every size up to 200 KB (large blocks included), with pthread_atfork
 * handlers (registered after the first malloc) that allocate 5000 blocks in prepare
 * and free them in parent and child. Each forked child starts four threads that
 * allocate, then forks a grandchild that allocates; each exec'd child allocates. A
 * child that crashes, hangs (30 s alarm) or fails makes the run fail. */
#define _GNU_SOURCE
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define ROUNDS 15
#define HELD 5000

static atomic_int stop;
static void *held[HELD];
static int held_count;

static void *churn(void *arg) {
    uintptr_t seed = (uintptr_t)arg * 77 + 1;
    static _Thread_local void *kept[512];
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        for (int i = 0; i < 512; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            free(kept[i]);
            kept[i] = malloc(8 + (seed >> 33) % 200000);
            if (kept[i]) ((char *)kept[i])[0] = 1;
        }
    for (int i = 0; i < 512; i++) free(kept[i]);
    return NULL;
}

static void prepare(void) {
    for (int i = 0; i < HELD; i++) held[held_count++] = malloc(16 + (size_t)i % 3000);
}
static void parent(void) {
    while (held_count) free(held[--held_count]);
    free(malloc(1 << 20));
}
static void child(void) {
    while (held_count) free(held[--held_count]);
    for (int i = 0; i < HELD; i++) free(malloc((size_t)i * 13 % 5000 + 1));
}

static void *child_thread(void *arg) {
    void *blocks[1000];
    for (int i = 0; i < 1000; i++) blocks[i] = malloc((size_t)i * 7 + 1);
    for (int i = 0; i < 1000; i++) free(blocks[i]);
    return arg;
}

int main(int argc, char **argv) {
    if (argc > 1) { /* an exec'd child */
        char *block = malloc(100);
        free(block);
        return block ? 0 : 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    free(malloc(1)); /* the allocator is set up before the handlers are registered */
    if (pthread_atfork(prepare, parent, child)) return 3;
    pthread_t threads[6];
    for (long i = 0; i < 6; i++)
        if (pthread_create(&threads[i], NULL, churn, (void *)i)) return 3;
    int failed = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pid_t pid;
        if (round % 3 == 0) {
            pid = fork();
            if (pid == 0) {
                alarm(30);
                pthread_t helpers[4];
                for (int i = 0; i < 4; i++) pthread_create(&helpers[i], NULL, child_thread, NULL);
                for (int i = 0; i < 4; i++) pthread_join(helpers[i], NULL);
                pid_t grandchild = fork();
                if (grandchild == 0) {
                    void *block = malloc(1000);
                    free(block);
                    _exit(block ? 0 : 1);
                }
                int status = 0;
                waitpid(grandchild, &status, 0);
                _exit(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 3);
            }
        } else if (round % 3 == 1) {
            pid = vfork();
            if (pid == 0) {
                execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
                _exit(127);
            }
        } else {
            char *args[] = {argv[0], "spawn", NULL};
            if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ)) pid = -1;
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 6; i++) pthread_join(threads[i], NULL);
    printf("fork, vfork and posix_spawn from allocating threads: %s\n",
           failed ? "a child failed" : "ok");
    return failed != 0;
}
