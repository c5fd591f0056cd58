/* Shared by the CUDA files of the core (the csrc .cu files), never by C code:
 * error checks, launch sizes, the GEMM wrapper and the launchers each kernel
 * file exports to model.cu. llm.c's llmc/cuda_common.h is the model.
 *
 * Errors: every CUDA and cuBLAS call goes through cudaCheck / cublasCheck,
 * which record "file:line: call: error string" with uq_fail(UQ_ERR_CUDA, ...)
 * and RETURN the status from the enclosing function (which must return
 * uq_status). Nothing here ever exits the process.
 *
 * Layouts. An ensemble of M members runs in lockstep: every activation buffer
 * holds all members, member m's block first-index-major, e.g. an activation
 * (M, B, C, H, W). A member stride of 0 for an input means "all members read
 * the same images" (prediction, attribution). Parameters are the (M, P) slab
 * of model.h, so a layer's weight of member m is at params + m*P + w_off. */
#ifndef UQ_CUDA_COMMON_H
#define UQ_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "common.h"
#include "model.h"
#include "uncertainty.h"
}

/* ---- error checks ------------------------------------------------------------------------- */

uq_status uq_cuda_error(cudaError_t err, const char *call, const char *file, int line);
uq_status uq_cublas_error(cublasStatus_t st, const char *call, const char *file, int line);

#define cudaCheck(call)                                                               \
    do {                                                                              \
        cudaError_t uq_err_ = (call);                                                 \
        if (uq_err_ != cudaSuccess) return uq_cuda_error(uq_err_, #call, __FILE__, __LINE__); \
    } while (0)

#define cublasCheck(call)                                                             \
    do {                                                                              \
        cublasStatus_t uq_st_ = (call);                                               \
        if (uq_st_ != CUBLAS_STATUS_SUCCESS) return uq_cublas_error(uq_st_, #call, __FILE__, __LINE__); \
    } while (0)

/* after every kernel launch: launch-configuration errors show at once, and
 * faults of earlier kernels (sticky) at the latest here */
#define launchCheck() cudaCheck(cudaGetLastError())

/* propagate a uq_status from a launcher */
#define uqCheck(call)                    \
    do {                                 \
        uq_status uq_s_ = (call);        \
        if (uq_s_ != UQ_OK) return uq_s_; \
    } while (0)

/* ---- launch sizes: grid-stride loops over n elements --------------------------------------- */

enum { UQ_BLOCK = 256 };

static inline unsigned uq_grid(int64_t n) {
    int64_t g = (n + UQ_BLOCK - 1) / UQ_BLOCK;
    if (g < 1) g = 1;
    if (g > 16384) g = 16384; /* plenty for 132 SMs; the loop covers the rest */
    return (unsigned)g;
}

#define GRID_STRIDE_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- GEMM (gemm.cu): row-major, like csrc/gemm.h, strided-batched --------------------------
 * For b in [0, batch): C_b(M,N) = alpha op(A_b)(M,K) op(B_b)(K,N) + beta C_b,
 * X_b = X + b * strideX (a stride of 0 shares one matrix across the batch). */
uq_status uq_cuda_sgemm(cublasHandle_t h, int transA, int transB, int M, int N, int K, float alpha,
                        const float *A, int lda, int64_t strideA, const float *B, int ldb, int64_t strideB,
                        float beta, float *C, int ldc, int64_t strideC, int batch);

/* ---- launchers of the kernel files (all on `stream`, all asynchronous) ---------------------- */

/* conv2d.cu. inp (nm, B, C, H, W) with member stride in_ms (nm = 1 if shared);
 * col (nm, C*K*K, B*H*W): one column block per distinct input. */
uq_status im2col_cuda(float *col, const float *inp, int64_t in_ms, int nm, int B, int C, int H, int W, int K,
                      cudaStream_t stream);
/* dinp (M, R, C, H, W) = col2im(dcol (M, C*K*K, R*H*W)); writes every element */
uq_status col2im_cuda(float *dinp, const float *dcol, int M, int R, int C, int H, int W, int K, cudaStream_t stream);
/* out (M, B, OC, HW) = relu?(tmp (M, OC, B*HW) + bias_m), bias_m = bias + m * P */
uq_status conv_bias_relu_cuda(float *out, const float *tmp, const float *bias, int64_t P, int M, int B, int OC, int HW,
                              int relu, cudaStream_t stream);
/* gp (M, OC, R*HW) = g (M, R, OC, HW), zeroed where relu and act (M, R/T, OC, HW) <= 0 */
uq_status conv_relu_backward_cuda(float *gp, const float *g, const float *act, int M, int R, int T, int OC, int HW,
                                  int relu, cudaStream_t stream);
/* dbias_m[oc] = sum_j gp (M, OC, n)[m, oc, j], dbias_m = dbias + m * P (assigned, not accumulated) */
uq_status conv_bias_backward_cuda(float *dbias, const float *gp, int64_t P, int M, int OC, int64_t n,
                                  cudaStream_t stream);

/* maxpool.cu: 2x2, stride 2, first max wins (as maxpool.c). inp member stride in_ms. */
uq_status maxpool2_forward_cuda(float *out, int32_t *argmax, const float *inp, int64_t in_ms, int M, int B, int C,
                                int H, int W, cudaStream_t stream);
/* dinp (M, R, C, H, W) from dout (M, R, C, H/2, W/2) and argmax (M, R/T, ...); writes every element */
uq_status maxpool2_backward_cuda(float *dinp, const float *dout, const int32_t *argmax, int M, int R, int T, int C,
                                 int H, int W, cudaStream_t stream);

/* dense.cu. out (M, B, n) += bias_m, then relu? (in place) */
uq_status dense_bias_relu_cuda(float *out, const float *bias, int64_t P, int M, int B, int n, int relu,
                               cudaStream_t stream);
/* g (M, R, n) zeroed where act (M, R/T, n) <= 0 (in place) */
uq_status relu_backward_cuda(float *g, const float *act, int M, int R, int T, int n, cudaStream_t stream);
/* dbias_m[o] = sum_r g (M, R, n)[m, r, o] (assigned) */
uq_status dense_bias_backward_cuda(float *dbias, const float *g, int64_t P, int M, int R, int n, cudaStream_t stream);

/* softmax.cu. probs (rows, C) = softmax(logits (rows, C)), as softmax.c */
uq_status softmax_forward_cuda(float *probs, const float *logits, int64_t rows, int C, cudaStream_t stream);
/* Per member m (one block each): cross-entropy of logits (M, B, C) against
 * labels (M, B); dlogits (M, B, C) = scale (p - onehot) (assigned);
 * loss_acc[m] += summed loss, correct_acc[m] += correct argmaxes. */
uq_status crossentropy_cuda(float *dlogits, double *loss_acc, int64_t *correct_acc, const float *logits,
                            const int32_t *labels, int M, int B, int C, float scale, cudaStream_t stream);

/* uncertainty.cu */
typedef struct {
    int T;
    int kind[16];    /* uq_target_kind */
    int has_cls[16]; /* classes given: read cls[t * N + n] */
} uq_cuda_targets;
/* From member logits (M, N, C): probs (M, N, C), values (N, T) and dlogits
 * (M, N, T, C), as uq_target_gradients; cls (T, N) per-image classes. */
uq_status target_gradients_cuda(float *dlogits, float *values, float *probs, float *mean, const float *logits,
                                const int32_t *cls, uq_cuda_targets targets, int M, int N, int C,
                                cudaStream_t stream);
/* From member probs (M, N, C): mean (N, C), pred, max_prob, total, aleatoric,
 * epistemic (N), as uq_decompose. */
uq_status decompose_cuda(float *mean, int32_t *pred, float *max_prob, float *total, float *aleatoric,
                         float *epistemic, const float *probs, int M, int N, int C, cudaStream_t stream);
/* out (n) = sum over m in order of in (M, n) */
uq_status member_sum_cuda(float *out, const float *in, int M, int64_t n, cudaStream_t stream);
/* rows gathered per member: x (M, B, in_size) = data_x[order[m, first + b]], y likewise */
uq_status gather_batch_cuda(float *x, int32_t *y, const float *data_x, const int32_t *data_y, const int32_t *order,
                            int64_t n_data, int64_t first, int M, int B, int64_t in_size, cudaStream_t stream);

/* optim.cu: PyTorch's Adam / SGD over n floats (all members' slabs at once) */
uq_status adam_update_cuda(float *params, const float *grads, float *m, float *v, int64_t n, float lr, float beta1,
                           float beta2, float eps, float weight_decay, int64_t step, cudaStream_t stream);
uq_status sgd_update_cuda(float *params, const float *grads, float *momentum_buf, int64_t n, float lr,
                          float momentum, float weight_decay, cudaStream_t stream);

#endif
