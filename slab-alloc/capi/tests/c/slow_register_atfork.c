/* A preload shim: glibc's __register_atfork (behind pthread_atfork) takes 100 ms, to
 * widen the window in which another thread can fork while a library registers its
 * fork handlers. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>

typedef int (*register_atfork_fn)(void (*)(void), void (*)(void), void (*)(void), void *);

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                      void *dso_handle) {
    static register_atfork_fn next;
    if (next == NULL) {
        next = (register_atfork_fn)dlsym(RTLD_NEXT, "__register_atfork");
    }
    usleep(100000);
    return next(prepare, parent, child, dso_handle);
}
