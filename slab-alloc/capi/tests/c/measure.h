/* What the C programs measure: the process's resident memory and a monotonic clock. */
#ifndef SLAB_CAPI_TESTS_MEASURE_H
#define SLAB_CAPI_TESTS_MEASURE_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Resident memory of this process in KiB, from /proc/self/statm; exits with 3 when it
   cannot be read. */
static inline long resident_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2) exit(3);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Seconds on the monotonic clock. */
static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

#endif
