/* conv2d on the GPU (the CUDA twin of conv2d.c): stride 1, zero padding K/2,
 * optional fused ReLU, through im2col + cuBLAS.
 *
 * For all members at once (model.cu issues the GEMMs):
 *   forward   col_m (CKK, B*HW) = im2col(inp_m)                      [im2col]
 *             tmp_m (OC, B*HW)  = W_m (OC, CKK) @ col_m              [strided-batched GEMM over m]
 *             out_m (B, OC, HW) = relu(tmp_m^(b,oc,hw) + bias_m)     [conv_bias_relu: add, clamp, permute]
 *   backward  gp_m  (OC, R*HW)  = relu'(g_m (R, OC, HW))             [conv_relu_backward: mask, permute]
 *             dbias_m           = row sums of gp_m                   [conv_bias_backward]
 *             dW_m  (OC, CKK)   = gp_m @ col_m^T                     [GEMM]
 *             dcol_m (CKK, R*HW)= W_m^T @ gp_m                       [GEMM]
 *             dinp_m            = col2im(dcol_m)                     [col2im: a gather, no atomics]
 * with CKK = C*K*K, R = B*T rows (T upstream vectors per image). */
#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

/* col[m][(c*K + ki)*K + kj][b*HW + y*W + x] = inp[m][b][c][y + ki - pad][x + kj - pad] (0 outside) */
__global__ void im2col_kernel(float *col, const float *inp, int64_t in_ms, int nm, int B, int C, int H, int W,
                              int K) {
    const int HW = H * W, KK = K * K, pad = K / 2;
    const int64_t BHW = (int64_t)B * HW;
    const int64_t per_m = (int64_t)C * KK * BHW;
    const int64_t n = per_m * nm;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t r = i - m * per_m;
        const int k = (int)(r / BHW);
        const int64_t j = r - (int64_t)k * BHW;
        const int b = (int)(j / HW), p = (int)(j - (int64_t)b * HW);
        const int y = p / W, x = p - y * W;
        const int c = k / KK, kk = k - c * KK, ki = kk / K, kj = kk - ki * K;
        const int iy = y + ki - pad, ix = x + kj - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = inp[m * in_ms + ((int64_t)b * C + c) * HW + iy * W + ix];
        col[i] = v;
    }
}

/* dinp[m][r][c][iy][ix] = sum over (ki, kj), in that order (as col2im_add), of
 * dcol[m][(c*K + ki)*K + kj][r*HW + (iy - ki + pad)*W + (ix - kj + pad)] */
__global__ void col2im_kernel(float *dinp, const float *dcol, int M, int R, int C, int H, int W, int K) {
    const int HW = H * W, KK = K * K, pad = K / 2;
    const int64_t RHW = (int64_t)R * HW;
    const int64_t per_m = (int64_t)R * C * HW;
    const int64_t n = per_m * M;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int r = (int)(rem / ((int64_t)C * HW));
        const int cp = (int)(rem - (int64_t)r * C * HW);
        const int c = cp / HW, p = cp - c * HW;
        const int iy = p / W, ix = p - iy * W;
        const float *d = dcol + m * (int64_t)C * KK * RHW + (int64_t)r * HW;
        float s = 0.0f;
        for (int ki = 0; ki < K; ki++) {
            const int oy = iy - ki + pad;
            if (oy < 0 || oy >= H) continue;
            for (int kj = 0; kj < K; kj++) {
                const int ox = ix - kj + pad;
                if (ox < 0 || ox >= W) continue;
                s += d[(int64_t)(c * KK + ki * K + kj) * RHW + oy * W + ox];
            }
        }
        dinp[i] = s;
    }
}

/* out[m][b][oc][p] = relu?(tmp[m][oc][b*HW + p] + bias[m*P + oc]) */
__global__ void conv_bias_relu_kernel(float *out, const float *tmp, const float *bias, int64_t P, int M, int B,
                                      int OC, int HW, int relu) {
    const int64_t per_m = (int64_t)B * OC * HW;
    const int64_t n = per_m * M;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int b = (int)(rem / ((int64_t)OC * HW));
        const int cp = (int)(rem - (int64_t)b * OC * HW);
        const int oc = cp / HW, p = cp - oc * HW;
        float v = tmp[m * per_m + ((int64_t)oc * B + b) * HW + p] + bias[m * P + oc];
        out[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* gp[m][oc][r*HW + p] = g[m][r][oc][p], or 0 where relu and act[m][r/T][oc][p] <= 0 */
__global__ void conv_relu_backward_kernel(float *gp, const float *g, const float *act, int M, int R, int T, int OC,
                                          int HW, int relu) {
    const int64_t per_m = (int64_t)R * OC * HW;
    const int64_t n = per_m * M;
    const int64_t act_m = (int64_t)(R / T) * OC * HW;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int oc = (int)(rem / ((int64_t)R * HW));
        const int64_t j = rem - (int64_t)oc * R * HW;
        const int r = (int)(j / HW), p = (int)(j - (int64_t)r * HW);
        float v = g[m * per_m + ((int64_t)r * OC + oc) * HW + p];
        if (relu && !(act[m * act_m + ((int64_t)(r / T) * OC + oc) * HW + p] > 0.0f)) v = 0.0f;
        gp[i] = v;
    }
}

/* one block per (oc, m): dbias[m*P + oc] = sum of gp[m][oc][0..n) */
__global__ void conv_bias_backward_kernel(float *dbias, const float *gp, int64_t P, int OC, int64_t n) {
    __shared__ float part[UQ_BLOCK];
    const int oc = blockIdx.x, m = blockIdx.y;
    const float *row = gp + ((int64_t)m * OC + oc) * n;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += row[j];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) dbias[(int64_t)m * P + oc] = part[0];
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status im2col_cuda(float *col, const float *inp, int64_t in_ms, int nm, int B, int C, int H, int W, int K,
                      cudaStream_t stream) {
    const int64_t n = (int64_t)nm * C * K * K * B * H * W;
    im2col_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(col, inp, in_ms, nm, B, C, H, W, K);
    launchCheck();
    return UQ_OK;
}

uq_status col2im_cuda(float *dinp, const float *dcol, int M, int R, int C, int H, int W, int K, cudaStream_t stream) {
    const int64_t n = (int64_t)M * R * C * H * W;
    col2im_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(dinp, dcol, M, R, C, H, W, K);
    launchCheck();
    return UQ_OK;
}

uq_status conv_bias_relu_cuda(float *out, const float *tmp, const float *bias, int64_t P, int M, int B, int OC, int HW,
                              int relu, cudaStream_t stream) {
    const int64_t n = (int64_t)M * B * OC * HW;
    conv_bias_relu_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(out, tmp, bias, P, M, B, OC, HW, relu);
    launchCheck();
    return UQ_OK;
}

uq_status conv_relu_backward_cuda(float *gp, const float *g, const float *act, int M, int R, int T, int OC, int HW,
                                  int relu, cudaStream_t stream) {
    const int64_t n = (int64_t)M * R * OC * HW;
    conv_relu_backward_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(gp, g, act, M, R, T, OC, HW, relu);
    launchCheck();
    return UQ_OK;
}

uq_status conv_bias_backward_cuda(float *dbias, const float *gp, int64_t P, int M, int OC, int64_t n,
                                  cudaStream_t stream) {
    conv_bias_backward_kernel<<<dim3(OC, M), UQ_BLOCK, 0, stream>>>(dbias, gp, P, OC, n);
    launchCheck();
    return UQ_OK;
}
