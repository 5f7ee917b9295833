/* SLAB_DECAY_THREAD=1 in a child made by fork: the decay thread does not survive fork,
 * and the library starts it again at a decay pass of the child. That start must not
 * happen inside a free that glibc makes holding a lock pthread_create takes:
 * pthread_join frees a finished thread's dynamic TLS (a 300 KB block of a dlopen'ed
 * library, big_tls.c) under glibc's stack-cache lock, and a pthread_create there waits
 * for ever.
 *
 * The parent keeps 8 threads with 8 MiB stacks that touched the library's TLS (so the
 * child's stack cache starts above glibc's 40 MiB limit, and a join frees stacks and
 * their TLS). Each child sleeps past the heap's decay interval, then creates (with a
 * 1 MiB stack: no cached stack fits it) and joins one thread; then it allocates (a large
 * block, whose operations read the decay clock) and, under SLAB_DECAY_THREAD=1, must
 * find the decay thread ("slab-decay") running within 2 s. A child still running after
 * 10 s is killed by its alarm and counted as hung.
 *
 * Usage: decay_thread_after_fork PATH/TO/big_tls.so [children]; exit 1 if a child hung
 * or failed. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_barrier_t started;
static void (*touch_big_tls)(void);

static void *keep_tls(void *unused) {
    (void)unused;
    touch_big_tls();
    pthread_barrier_wait(&started);
    for (;;) pause();
    return NULL;
}

static void *return_at_once(void *argument) { return argument; }

/* Whether one of this process's threads is named `name`. */
static int has_thread_named(const char *name) {
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) return 0;
    int found = 0;
    struct dirent *task;
    while (!found && (task = readdir(tasks)) != NULL) {
        if (task->d_name[0] == '.') continue;
        char path[300], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", task->d_name);
        FILE *file = fopen(path, "r");
        if (file == NULL) continue;
        if (fgets(comm, sizeof comm, file) != NULL) {
            comm[strcspn(comm, "\n")] = 0;
            found = strcmp(comm, name) == 0;
        }
        fclose(file);
    }
    closedir(tasks);
    return found;
}

static int child(void) {
    alarm(10);
    usleep(300 * 1000);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 1 << 20);
    pthread_t thread;
    if (pthread_create(&thread, &attributes, return_at_once, NULL) != 0) return 3;
    pthread_join(thread, NULL);
    char *block = malloc(200 * 1000);
    if (block == NULL) return 4;
    block[0] = 1;
    free(block);
    const char *asked = getenv("SLAB_DECAY_THREAD");
    if (asked == NULL || strcmp(asked, "1") != 0) return 0;
    for (int waited_ms = 0; waited_ms < 2000; waited_ms += 10) {
        if (has_thread_named("slab-decay")) return 0;
        usleep(10 * 1000);
    }
    return 5;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/big_tls.so [children]\n", argv[0]);
        return 2;
    }
    int children = argc > 2 ? atoi(argv[2]) : 5;
    void *library = dlopen(argv[1], RTLD_NOW);
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    touch_big_tls = (void (*)(void))dlsym(library, "touch_big_tls");
    pthread_barrier_init(&started, NULL, 9);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 8 << 20);
    for (int i = 0; i < 8; i++) {
        pthread_t thread;
        if (pthread_create(&thread, &attributes, keep_tls, NULL) != 0) return 2;
    }
    pthread_barrier_wait(&started);
    int hung = 0, failed = 0;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) return 2;
        if (pid == 0) _exit(child());
        int status;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
            hung++;
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    printf("children: %d, hung: %d, failed otherwise: %d\n", children, hung, failed);
    return hung == 0 && failed == 0 ? 0 : 1;
}
