#include <math.h>

#include "layers.h"

/* PyTorch's Adam (L2 weight decay added to the gradient, bias-corrected moments). */
void adam_update(float *params, const float *grads, float *m, float *v, size_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    const float bc1 = 1.0f - powf(beta1, (float)step);
    const float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = lr / bc1;
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i] + weight_decay * params[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        params[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

/* PyTorch's SGD with momentum (dampening 0): buf = momentum * buf + g. */
void sgd_update(float *params, const float *grads, float *momentum_buf, size_t n, float lr,
                float momentum, float weight_decay) {
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i] + weight_decay * params[i];
        momentum_buf[i] = momentum * momentum_buf[i] + g;
        params[i] -= lr * (momentum != 0.0f ? momentum_buf[i] : g);
    }
}
