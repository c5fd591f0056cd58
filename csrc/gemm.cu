/* Row-major, strided-batched GEMM through cuBLAS (column-major), the CUDA twin
 * of csrc/gemm.c. The usual transposition trick: a row-major X (r, c) with row
 * stride ld is, read column-major, X^T (c, r) with leading dimension ld, so
 *   C = op(A) op(B)   (row-major)   <=>   C^T = op(B)^T op(A)^T   (column-major)
 * and cuBLAS is called with the operands swapped and the same trans flags. */
#include "cuda_common.h"

uq_status uq_cuda_sgemm(cublasHandle_t h, int transA, int transB, int M, int N, int K, float alpha,
                        const float *A, int lda, int64_t strideA, const float *B, int ldb, int64_t strideB,
                        float beta, float *C, int ldc, int64_t strideC, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return UQ_OK;
    const cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasSgemmStridedBatched(h, opB, opA, N, M, K, &alpha, B, ldb, (long long)strideB, A, lda,
                                          (long long)strideA, &beta, C, ldc, (long long)strideC, batch));
    return UQ_OK;
}
