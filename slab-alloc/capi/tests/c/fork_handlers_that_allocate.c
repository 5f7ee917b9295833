/* pthread_atfork handlers that allocate, registered before the program's first malloc
 * (a constructor of the program or of a library does that), so before the allocator
 * registers its own handlers. glibc runs prepare handlers in the reverse order of
 * registration: an allocator that takes its locks in a prepare handler of its own runs
 * it first, and the program's prepare handler then allocates with every allocator lock
 * held by its own thread. glibc's fork takes its malloc locks after all the handlers,
 * so this works there. The handlers use many size classes (so they leave the
 * per-thread caches) and large blocks; a hang is stopped by a 20 s alarm. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELD 64

static void *held[HELD];

static void allocate_all(size_t base, size_t step) {
    for (int i = 0; i < HELD; i++) {
        held[i] = malloc(base + (size_t)i * step);
        if (!held[i]) abort();
        memset(held[i], i, 16);
    }
}

static void free_all(void) {
    for (int i = 0; i < HELD; i++) {
        free(held[i]);
        held[i] = NULL;
    }
}

static void prepare(void) { allocate_all(1000, 1000); }
static void parent(void) { free_all(); allocate_all(777, 3000); free_all(); }
static void child(void) { free_all(); allocate_all(555, 5000); free_all(); }

__attribute__((constructor)) static void register_before_any_malloc(void) {
    if (pthread_atfork(prepare, parent, child) != 0) abort();
}

/* A thread that allocates, so that the parent is multi-threaded while forking. */
static void *worker(void *unused) {
    for (int i = 0; i < 1000; i++) free(malloc(16 + (size_t)i % 4000));
    return unused;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);
    int failed = 0;
    for (int round = 0; round < 5; round++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) return 2;
        pid_t pid = fork();
        if (pid == 0) {
            void *block = malloc(100000);
            free(block);
            _exit(block ? 0 : 1);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed++;
        pthread_join(thread, NULL);
    }
    printf("fork with allocating atfork handlers registered first: %s\n",
           failed ? "a child failed" : "ok");
    return failed != 0;
}
