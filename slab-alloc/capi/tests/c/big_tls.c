/* A library with a large thread-local array. Loaded with dlopen, its TLS is dynamic:
 * glibc mallocs each thread's copy when the thread first touches it, and frees it when
 * the thread's stack goes back (in pthread_join, under glibc's stack-cache lock). */
__thread char big_tls[300000];

void touch_big_tls(void) {
    big_tls[0] = 1;
    big_tls[sizeof big_tls - 1] = 1;
}
