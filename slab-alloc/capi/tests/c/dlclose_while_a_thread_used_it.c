/* The library loaded with dlopen (a plugin host, or a program that dlopens a library
 * linked with it) rather than LD_PRELOAD: a thread allocates and frees through its
 * malloc and free, the library is dlclose'd while that thread lives, then the thread
 * exits (glibc calls the library's thread-exit hook). The library must stay mapped and
 * the exit must not crash.
 *
 * Usage: dlclose_while_a_thread_used_it PATH/TO/libpagekeep_slab_capi.so */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *(*library_malloc)(size_t);
static void (*library_free)(void *);
static pthread_barrier_t used, closed;

static void *use_the_library(void *unused) {
    (void)unused;
    for (size_t i = 0; i < 10000; i++) {
        char *block = library_malloc(i % 3000 + 1);
        if (block == NULL) return "malloc failed";
        block[0] = 1;
        library_free(block);
    }
    pthread_barrier_wait(&used);
    pthread_barrier_wait(&closed);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/libpagekeep_slab_capi.so\n", argv[0]);
        return 2;
    }
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    library_malloc = (void *(*)(size_t))dlsym(library, "malloc");
    library_free = (void (*)(void *))dlsym(library, "free");
    if (library_malloc == NULL || library_free == NULL) return 2;
    pthread_barrier_init(&used, NULL, 2);
    pthread_barrier_init(&closed, NULL, 2);
    pthread_t thread;
    if (pthread_create(&thread, NULL, use_the_library, NULL) != 0) return 2;
    pthread_barrier_wait(&used);
    if (dlclose(library) != 0) return 2;
    pthread_barrier_wait(&closed);
    void *result;
    pthread_join(thread, &result);
    if (result != NULL) {
        printf("%s\n", (const char *)result);
        return 1;
    }
    printf("the thread exited after dlclose\n");
    return 0;
}
