/* Shared definitions of the uqattr C core: status codes, error messages,
 * aligned allocation and the thread-count knob. Plain C11, no Python. */
#ifndef UQ_COMMON_H
#define UQ_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    UQ_OK = 0,
    UQ_ERR_NOMEM = 1,   /* an allocation failed */
    UQ_ERR_VALUE = 2,   /* bad argument (spec, shape, range) */
    UQ_ERR_CUDA = 3     /* a CUDA / cuBLAS call failed */
} uq_status;

/* Records a message for the calling thread and returns `st`, so error paths
 * read `return uq_fail(UQ_ERR_VALUE, "...", ...);`. */
uq_status uq_fail(uq_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The message of the calling thread's last uq_fail ("" if none). */
const char *uq_last_error(void);

/* 64-byte aligned allocation (NULL on failure, or for n == 0); free with uq_free. */
void *uq_malloc(size_t n);
void *uq_calloc(size_t n);
void uq_free(void *p);

/* Threads used by the parallel loops of the core (OpenMP; 1 without it).
 * Defaults to $UQATTR_NUM_THREADS, else the number of processors.
 * Any BLAS is kept single-threaded so the two never oversubscribe. */
int uq_num_threads(void);
void uq_set_num_threads(int n);
int uq_have_openmp(void);

#endif
