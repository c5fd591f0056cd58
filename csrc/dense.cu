/* Dense layer on the GPU (the CUDA twin of dense.c). The GEMMs are issued by
 * model.cu (strided-batched over members, weights (n_out, n_in) in the slab):
 *   forward   out_m (B, n_out)  = inp_m @ W_m^T, then bias + ReLU        [dense_bias_relu]
 *   backward  g_m   (R, n_out) *= relu'(out_m)                            [relu_backward]
 *             dbias_m = column sums of g_m                                [dense_bias_backward]
 *             dW_m (n_out, n_in) = g_m^T @ inp_m,  dinp_m = g_m @ W_m     [GEMMs] */
#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

__global__ void dense_bias_relu_kernel(float *out, const float *bias, int64_t P, int M, int B, int n_out, int relu) {
    const int64_t per_m = (int64_t)B * n_out;
    const int64_t n = per_m * M;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int o = (int)((i - m * per_m) % n_out);
        const float v = out[i] + bias[m * P + o];
        out[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* g[m][r][j] = act[m][r/T][j] > 0 ? g : 0, for rows of n values */
__global__ void relu_backward_kernel(float *g, const float *act, int M, int R, int T, int n_per_row) {
    const int64_t per_m = (int64_t)R * n_per_row;
    const int64_t n = per_m * M;
    const int64_t act_m = (int64_t)(R / T) * n_per_row;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int r = (int)(rem / n_per_row), j = (int)(rem - (int64_t)r * n_per_row);
        if (!(act[m * act_m + (int64_t)(r / T) * n_per_row + j] > 0.0f)) g[i] = 0.0f;
    }
}

/* one thread per (m, o): dbias[m*P + o] = sum over rows r of g[m][r][o] */
__global__ void dense_bias_backward_kernel(float *dbias, const float *g, int64_t P, int M, int R, int n_out) {
    const int64_t n = (int64_t)M * n_out;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / n_out;
        const int o = (int)(i - m * n_out);
        const float *col = g + m * (int64_t)R * n_out + o;
        float s = 0.0f;
        for (int r = 0; r < R; r++) s += col[(int64_t)r * n_out];
        dbias[m * P + o] = s;
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status dense_bias_relu_cuda(float *out, const float *bias, int64_t P, int M, int B, int n, int relu,
                               cudaStream_t stream) {
    const int64_t total = (int64_t)M * B * n;
    dense_bias_relu_kernel<<<uq_grid(total), UQ_BLOCK, 0, stream>>>(out, bias, P, M, B, n, relu);
    launchCheck();
    return UQ_OK;
}

uq_status relu_backward_cuda(float *g, const float *act, int M, int R, int T, int n, cudaStream_t stream) {
    const int64_t total = (int64_t)M * R * n;
    relu_backward_kernel<<<uq_grid(total), UQ_BLOCK, 0, stream>>>(g, act, M, R, T, n);
    launchCheck();
    return UQ_OK;
}

uq_status dense_bias_backward_cuda(float *dbias, const float *g, int64_t P, int M, int R, int n, cudaStream_t stream) {
    const int64_t total = (int64_t)M * n;
    dense_bias_backward_kernel<<<uq_grid(total), UQ_BLOCK, 0, stream>>>(dbias, g, P, M, R, n);
    launchCheck();
    return UQ_OK;
}
