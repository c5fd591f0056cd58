/* Matrix multiply for the whole core, row-major:
 *   C(M,N) = alpha * op(A)(M,K) @ op(B)(K,N) + beta * C
 * op(X) is X or X^T (trans flag); lda/ldb/ldc are row strides as stored.
 * Two backends: a BLAS (cblas_sgemm) when the build found one, and a built-in
 * blocked C GEMM that always exists. uq_sgemm_naive is the plain reference. */
#ifndef UQ_GEMM_H
#define UQ_GEMM_H

void uq_sgemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc);

/* Same contract; splits the M rows across uq_num_threads() threads, each
 * running a single-threaded uq_sgemm on its block (deterministic: every
 * output element is computed by one thread in one fixed order). */
void uq_sgemm_parallel(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc);

void uq_sgemm_builtin(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb,
                      float beta, float *C, int ldc);

void uq_sgemm_naive(int transA, int transB, int M, int N, int K, float alpha,
                    const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);

/* "blas" or "builtin": the backend uq_sgemm uses now. */
const char *uq_gemm_backend(void);
/* Selects a backend by name; returns 0 on success, -1 if not built in. */
int uq_set_gemm_backend(const char *name);
/* 1 if a BLAS was linked at build time. */
int uq_have_blas(void);

#endif
