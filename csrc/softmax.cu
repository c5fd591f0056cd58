/* Softmax and cross-entropy on the GPU (the CUDA twin of softmax.c), with the
 * same arithmetic: max subtracted in float, sums and the loss in double. */
#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

/* one thread per row; may run in place (probs == logits) */
__global__ void softmax_forward_kernel(float *probs, const float *logits, int64_t rows, int C) {
    GRID_STRIDE_LOOP(r, rows) {
        const float *z = logits + r * C;
        float *p = probs + r * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++) {
            p[c] = expf(z[c] - mx);
            sum += p[c];
        }
        const float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) p[c] *= inv;
    }
}

/* one block per member m; threads stride over its B rows. Deterministic:
 * fixed per-thread partials, then a fixed tree, then one add per member. */
__global__ void crossentropy_kernel(float *dlogits, double *loss_acc, int64_t *correct_acc, const float *logits,
                                    const int32_t *labels, int B, int C, float scale) {
    __shared__ double part_loss[UQ_BLOCK];
    __shared__ int part_ok[UQ_BLOCK];
    const int m = blockIdx.x;
    double loss = 0.0;
    int ok = 0;
    for (int b = threadIdx.x; b < B; b += blockDim.x) {
        const int64_t row = (int64_t)m * B + b;
        const float *z = logits + row * C;
        const int label = labels[row];
        int arg = 0;
        for (int c = 1; c < C; c++) arg = z[c] > z[arg] ? c : arg;
        ok += arg == label;
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp((double)z[c] - z[arg]);
        const double lse = z[arg] + log(sum);
        loss += lse - z[label];
        float *d = dlogits + row * C;
        for (int c = 0; c < C; c++) d[c] = scale * ((float)exp((double)z[c] - lse) - (c == label ? 1.0f : 0.0f));
    }
    part_loss[threadIdx.x] = loss;
    part_ok[threadIdx.x] = ok;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) {
            part_loss[threadIdx.x] += part_loss[threadIdx.x + w];
            part_ok[threadIdx.x] += part_ok[threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        loss_acc[m] += part_loss[0];
        correct_acc[m] += part_ok[0];
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status softmax_forward_cuda(float *probs, const float *logits, int64_t rows, int C, cudaStream_t stream) {
    softmax_forward_kernel<<<uq_grid(rows), UQ_BLOCK, 0, stream>>>(probs, logits, rows, C);
    launchCheck();
    return UQ_OK;
}

uq_status crossentropy_cuda(float *dlogits, double *loss_acc, int64_t *correct_acc, const float *logits,
                            const int32_t *labels, int M, int B, int C, float scale, cudaStream_t stream) {
    crossentropy_kernel<<<M, UQ_BLOCK, 0, stream>>>(dlogits, loss_acc, correct_acc, logits, labels, B, C, scale);
    launchCheck();
    return UQ_OK;
}
