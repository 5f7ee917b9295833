/* The name of an errno value, as the malloc-family programs print it (addresses and
   exact codes differ between allocators; these three are what glibc documents). */
#ifndef SLAB_CAPI_TESTS_ERRNO_NAME_H
#define SLAB_CAPI_TESTS_ERRNO_NAME_H

#include <errno.h>

static inline const char *errno_name(int e) {
    switch (e) {
    case 0: return "0";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

#endif
