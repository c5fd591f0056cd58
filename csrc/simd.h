/* Vector width of the CPU core's hand-vectorized loops: GCC vector extensions,
 * so the same C compiles to AVX-512, AVX2 or SSE depending on -march. */
#ifndef UQ_SIMD_H
#define UQ_SIMD_H

#include <string.h>

#if defined(__AVX512F__)
#define UQ_VL 16
#else
#define UQ_VL 8
#endif
typedef float uq_vfloat __attribute__((vector_size(UQ_VL * sizeof(float))));

/* unaligned vector load / store */
static inline uq_vfloat uq_vload(const float *p) {
    uq_vfloat v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void uq_vstore(float *p, uq_vfloat v) { memcpy(p, &v, sizeof v); }

/* y[0..n) += a * x[0..n); unaligned pointers are fine */
static inline void uq_axpy(float *restrict y, const float *restrict x, float a, int n) {
    int i = 0;
    for (; i + UQ_VL <= n; i += UQ_VL) {
        uq_vstore(y + i, uq_vload(y + i) + a * uq_vload(x + i));
    }
    for (; i < n; i++) y[i] += a * x[i];
}

#endif
