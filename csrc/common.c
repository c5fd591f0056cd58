#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char last_error[512];

uq_status uq_fail(uq_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *uq_last_error(void) { return last_error; }

void *uq_malloc(size_t n) {
    if (n == 0) return NULL;
    void *p = NULL;
    /* round up: aligned_alloc wants a multiple of the alignment */
    size_t rounded = (n + 63) & ~(size_t)63;
    if (rounded < n) return NULL;
    p = aligned_alloc(64, rounded);
    return p;
}

void *uq_calloc(size_t n) {
    void *p = uq_malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void uq_free(void *p) { free(p); }

/* 0 = not yet resolved from the environment */
static int num_threads = 0;

int uq_have_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int uq_num_threads(void) {
#ifdef _OPENMP
    if (num_threads <= 0) {
        const char *env = getenv("UQATTR_NUM_THREADS");
        int n = env ? atoi(env) : 0;
        num_threads = n > 0 ? n : omp_get_num_procs();
    }
    return num_threads;
#else
    return 1;
#endif
}

void uq_set_num_threads(int n) {
#ifdef _OPENMP
    num_threads = n > 0 ? n : omp_get_num_procs();
#else
    (void)n;
#endif
}
