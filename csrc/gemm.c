#include "gemm.h"

#include <string.h>

#include "common.h"
#include "simd.h"

#ifdef UQ_HAVE_CBLAS
#include <cblas.h>
/* OpenBLAS spawns its own threads unless told not to; we thread above it.
 * Weak, so other BLAS libraries (reference, BLIS) link without it. */
extern void openblas_set_num_threads(int) __attribute__((weak));
#endif

/* The built-in GEMM is the default: at this core's shapes it beat the BLAS
 * found on the development machine (benchmarks/bench_train.py prints both).
 * UQATTR_GEMM=blas or set_gemm_backend("blas") selects the BLAS. */
static int use_blas = 0;

int uq_have_blas(void) {
#ifdef UQ_HAVE_CBLAS
    return 1;
#else
    return 0;
#endif
}

const char *uq_gemm_backend(void) { return use_blas ? "blas" : "builtin"; }

int uq_set_gemm_backend(const char *name) {
    if (strcmp(name, "builtin") == 0) { use_blas = 0; return 0; }
    if (strcmp(name, "blas") == 0 && uq_have_blas()) { use_blas = 1; return 0; }
    return -1;
}

#define AT(X, ld, trans, r, c) ((trans) ? (X)[(size_t)(c) * (ld) + (r)] : (X)[(size_t)(r) * (ld) + (c)])

void uq_sgemm_naive(int transA, int transB, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb, float beta,
                    float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) acc += (double)AT(A, lda, transA, i, k) * AT(B, ldb, transB, k, j);
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : beta * *c));
        }
    }
}

static void scale_rows(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

/* Built-in GEMM, BLIS-style: op(B) is packed into panels NR columns wide and
 * op(A) (times alpha) into panels MR rows tall, both zero-padded at the edges;
 * a register-blocked micro-kernel multiplies one MR x NR tile of C over a
 * KC-long slice, in the vectors of simd.h. */
#define VL UQ_VL
#if UQ_VL == 16
#define MR 8
#else
#define MR 6
#endif
#define NR (2 * VL)
enum { KC = 384, MC = 96, NC = 1024 };
typedef uq_vfloat vfloat;

/* C tile (MR x NR at c, row stride ldc) += a_panel (kc x MR) @ b_panel (kc x NR) */
static void micro_kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c, int ldc) {
    vfloat acc[MR][2];
    for (int r = 0; r < MR; r++) {
        memcpy(&acc[r][0], c + (size_t)r * ldc, sizeof(vfloat));
        memcpy(&acc[r][1], c + (size_t)r * ldc + VL, sizeof(vfloat));
    }
    for (int k = 0; k < kc; k++) {
        const vfloat b0 = *(const vfloat *)(b + (size_t)k * NR);
        const vfloat b1 = *(const vfloat *)(b + (size_t)k * NR + VL);
        const float *ak = a + (size_t)k * MR;
        for (int r = 0; r < MR; r++) {
            acc[r][0] += ak[r] * b0;
            acc[r][1] += ak[r] * b1;
        }
    }
    for (int r = 0; r < MR; r++) {
        memcpy(c + (size_t)r * ldc, &acc[r][0], sizeof(vfloat));
        memcpy(c + (size_t)r * ldc + VL, &acc[r][1], sizeof(vfloat));
    }
}

static void pack_a(float *restrict dst, const float *A, int lda, int transA, int i0, int mc, int k0, int kc,
                   int M, float alpha) {
    for (int p = 0; p < mc; p += MR)
        for (int k = 0; k < kc; k++)
            for (int r = 0; r < MR; r++) {
                const int i = i0 + p + r;
                *dst++ = (p + r < mc && i < M) ? alpha * AT(A, lda, transA, i, k0 + k) : 0.0f;
            }
}

static void pack_b(float *restrict dst, const float *B, int ldb, int transB, int k0, int kc, int j0, int nc) {
    for (int q = 0; q < nc; q += NR) {
        const int nr = nc - q < NR ? nc - q : NR;
        for (int k = 0; k < kc; k++, dst += NR) {
            if (!transB) {
                memcpy(dst, B + (size_t)(k0 + k) * ldb + j0 + q, sizeof(float) * nr);
            } else {
                const float *col = B + (size_t)(j0 + q) * ldb + k0 + k;
                for (int j = 0; j < nr; j++) dst[j] = col[(size_t)j * ldb];
            }
            for (int j = nr; j < NR; j++) dst[j] = 0.0f;
        }
    }
}

void uq_sgemm_builtin(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    scale_rows(M, N, beta, C, ldc);
    if (K <= 0 || alpha == 0.0f) return;
    const size_t b_floats = (size_t)KC * ((NC + NR - 1) / NR * NR);
    const size_t a_floats = (size_t)KC * ((MC + MR - 1) / MR * MR);
    float *bpack = uq_malloc(sizeof(float) * (b_floats + a_floats + MR * NR));
    if (!bpack) { /* keep the contract even when memory is short */
        uq_sgemm_naive(transA, transB, M, N, K, alpha, A, lda, B, ldb, 1.0f, C, ldc);
        return;
    }
    float *apack = bpack + b_floats;
    float *tile = apack + a_floats;
    for (int j0 = 0; j0 < N; j0 += NC) {
        const int nc = N - j0 < NC ? N - j0 : NC;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int kc = K - k0 < KC ? K - k0 : KC;
            pack_b(bpack, B, ldb, transB, k0, kc, j0, nc);
            for (int i0 = 0; i0 < M; i0 += MC) {
                const int mc = M - i0 < MC ? M - i0 : MC;
                pack_a(apack, A, lda, transA, i0, mc, k0, kc, M, alpha);
                for (int q = 0; q < nc; q += NR) {
                    const int nr = nc - q < NR ? nc - q : NR;
                    for (int p = 0; p < mc; p += MR) {
                        const int mr = mc - p < MR ? mc - p : MR;
                        float *c = C + (size_t)(i0 + p) * ldc + j0 + q;
                        if (mr == MR && nr == NR) {
                            micro_kernel(kc, apack + (size_t)p * kc, bpack + (size_t)q * kc, c, ldc);
                            continue;
                        }
                        /* edge tile: through a zero-padded copy */
                        memset(tile, 0, sizeof(float) * MR * NR);
                        for (int r = 0; r < mr; r++) memcpy(tile + r * NR, c + (size_t)r * ldc, sizeof(float) * nr);
                        micro_kernel(kc, apack + (size_t)p * kc, bpack + (size_t)q * kc, tile, NR);
                        for (int r = 0; r < mr; r++) memcpy(c + (size_t)r * ldc, tile + r * NR, sizeof(float) * nr);
                    }
                }
            }
        }
    }
    uq_free(bpack);
}

void uq_sgemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef UQ_HAVE_CBLAS
    if (use_blas) {
        if (openblas_set_num_threads) {
            static int blas_single_threaded = 0;
            if (!blas_single_threaded) { openblas_set_num_threads(1); blas_single_threaded = 1; }
        }
        if (K <= 0) { scale_rows(M, N, beta, C, ldc); return; }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    uq_sgemm_builtin(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void uq_sgemm_parallel(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta,
                       float *C, int ldc) {
    int nt = uq_num_threads();
    if (nt > M) nt = M;
    if (nt <= 1 || (double)M * N * K < 1e5) {
        uq_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        const int i0 = (int)((long long)M * t / nt), i1 = (int)((long long)M * (t + 1) / nt);
        /* row block i0..i1 of op(A): offset by rows of A, or by columns if transposed */
        const float *a = transA ? A + i0 : A + (size_t)i0 * lda;
        uq_sgemm(transA, transB, i1 - i0, N, K, alpha, a, lda, B, ldb, beta, C + (size_t)i0 * ldc, ldc);
    }
}
