/* The library is loaded with dlopen (no LD_PRELOAD) into a program that already runs a
 * thread; that thread makes the program's first call into it while the main thread
 * forks. Run with LD_PRELOAD of slow_register_atfork.so, which makes pthread_atfork's
 * registration take 100 ms: had the library registered its fork handlers at that first
 * call, holding a lock meanwhile, the child would find the lock held and no handler to
 * free it, and wait for ever at its first malloc. The library registers when it is
 * loaded instead. Usage: fork_while_the_first_call_registers LIBRARY */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
static malloc_fn lib_malloc;
static free_fn lib_free;

static void *first_call(void *unused) {
    (void)unused;
    void *block = lib_malloc(24);
    lib_free(block);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s LIBRARY\n", argv[0]);
        return 2;
    }
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    lib_malloc = (malloc_fn)dlsym(library, "malloc");
    lib_free = (free_fn)dlsym(library, "free");
    if (lib_malloc == NULL || lib_free == NULL) {
        fprintf(stderr, "dlsym failed\n");
        return 1;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, first_call, NULL) != 0) {
        return 1;
    }
    usleep(20000); /* the thread is inside its first call */
    pid_t child = fork();
    if (child == 0) {
        alarm(5);
        void *block = lib_malloc(24);
        lib_free(block);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    pthread_join(thread, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the child did not finish its first malloc (status %#x)\n", status);
        return 1;
    }
    puts("the child allocated after the fork");
    return 0;
}
