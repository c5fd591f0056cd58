/* Optimizers on the GPU (the CUDA twin of optim.c): one flat loop over the
 * (M, P) slab of all members, which all take the same step in lockstep. The
 * bias corrections are computed on the host exactly as optim.c does. */
#include <math.h>

#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

/* PyTorch's Adam: L2 weight decay added to the gradient, bias-corrected moments */
__global__ void adam_kernel(float *params, const float *grads, float *m, float *v, int64_t n, float beta1,
                            float beta2, float eps, float weight_decay, float step_size, float bc2_sqrt) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = grads[i] + weight_decay * params[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

/* PyTorch's SGD with momentum (dampening 0) */
__global__ void sgd_kernel(float *params, const float *grads, float *buf, int64_t n, float lr, float momentum,
                           float weight_decay) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = grads[i] + weight_decay * params[i];
        const float b = momentum * buf[i] + g;
        buf[i] = b;
        params[i] -= lr * (momentum != 0.0f ? b : g);
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status adam_update_cuda(float *params, const float *grads, float *m, float *v, int64_t n, float lr, float beta1,
                           float beta2, float eps, float weight_decay, int64_t step, cudaStream_t stream) {
    const float bc1 = 1.0f - powf(beta1, (float)step);
    const float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = lr / bc1;
    adam_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(params, grads, m, v, n, beta1, beta2, eps, weight_decay,
                                                     step_size, bc2_sqrt);
    launchCheck();
    return UQ_OK;
}

uq_status sgd_update_cuda(float *params, const float *grads, float *momentum_buf, int64_t n, float lr,
                          float momentum, float weight_decay, cudaStream_t stream) {
    sgd_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(params, grads, momentum_buf, n, lr, momentum, weight_decay);
    launchCheck();
    return UQ_OK;
}
