#include "gemm.h"
#include "layers.h"

void dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                   int B, int n_in, int n_out, int relu) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n_out; o++) out[(size_t)b * n_out + o] = bias[o];
    uq_sgemm_parallel(0, 1, B, n_out, n_in, 1.0f, inp, n_in, weight, n_in, 1.0f, out, n_out);
    if (relu)
        for (size_t i = 0; i < (size_t)B * n_out; i++) out[i] = out[i] > 0.0f ? out[i] : 0.0f;
}

void dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, const float *weight, int B, int n_in, int n_out) {
    if (dbias)
        for (int b = 0; b < B; b++)
            for (int o = 0; o < n_out; o++) dbias[o] += dout[(size_t)b * n_out + o];
    if (dweight) uq_sgemm_parallel(1, 0, n_out, n_in, B, 1.0f, dout, n_out, inp, n_in, 1.0f, dweight, n_in);
    if (dinp) uq_sgemm_parallel(0, 0, B, n_in, n_out, 1.0f, dout, n_out, weight, n_in, 1.0f, dinp, n_in);
}

void relu_backward_inplace(float *grad, const float *out, int B, int T, size_t n) {
#pragma omp parallel for num_threads(uq_num_threads()) schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float *o = out + (size_t)(r / T) * n;
        float *g = grad + (size_t)r * n;
        for (size_t i = 0; i < n; i++) g[i] = o[i] > 0.0f ? g[i] : 0.0f;
    }
}
