/* 2x2 max-pool, stride 2, on the GPU (the CUDA twin of maxpool.c): odd H/W
 * drop the last row/column; ties go to the first maximum in window order
 * (top-left, top-right, bottom-left, bottom-right), as PyTorch. */
#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

/* out, argmax (M, B, C, OH, OW); inp (M, B, C, H, W) with member stride in_ms;
 * argmax is the index in the HxW plane, as maxpool.c */
__global__ void maxpool2_forward_kernel(float *out, int32_t *argmax, const float *inp, int64_t in_ms, int M, int B,
                                        int C, int H, int W) {
    const int OH = H / 2, OW = W / 2, OHW = OH * OW;
    const int64_t per_m = (int64_t)B * C * OHW;
    const int64_t n = per_m * M;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int64_t bc = rem / OHW;
        const int q = (int)(rem - bc * OHW);
        const int y = q / OW, x = q - y * OW;
        const float *plane = inp + m * in_ms + bc * H * W;
        int best = (2 * y) * W + 2 * x;
        const int cand[3] = {best + 1, best + W, best + W + 1};
        for (int k = 0; k < 3; k++)
            if (plane[cand[k]] > plane[best]) best = cand[k];
        out[i] = plane[best];
        argmax[i] = best;
    }
}

/* dinp[m][r][c][iy][ix] = dout[m][r][c][iy/2][ix/2] if the window's argmax
 * (of image r/T) is this element, else 0 (windows do not overlap) */
__global__ void maxpool2_backward_kernel(float *dinp, const float *dout, const int32_t *argmax, int M, int R, int T,
                                         int C, int H, int W) {
    const int OH = H / 2, OW = W / 2, OHW = OH * OW, HW = H * W;
    const int64_t per_m = (int64_t)R * C * HW;
    const int64_t n = per_m * M;
    const int64_t arg_m = (int64_t)(R / T) * C * OHW;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t m = i / per_m;
        const int64_t rem = i - m * per_m;
        const int r = (int)(rem / ((int64_t)C * HW));
        const int cp = (int)(rem - (int64_t)r * C * HW);
        const int c = cp / HW, p = cp - c * HW;
        const int iy = p / W, ix = p - iy * W;
        const int oy = iy / 2, ox = ix / 2;
        float v = 0.0f;
        if (oy < OH && ox < OW) {
            const int q = oy * OW + ox;
            if (argmax[m * arg_m + ((int64_t)(r / T) * C + c) * OHW + q] == p)
                v = dout[m * (int64_t)R * C * OHW + ((int64_t)r * C + c) * OHW + q];
        }
        dinp[i] = v;
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status maxpool2_forward_cuda(float *out, int32_t *argmax, const float *inp, int64_t in_ms, int M, int B, int C,
                                int H, int W, cudaStream_t stream) {
    const int64_t n = (int64_t)M * B * C * (H / 2) * (W / 2);
    maxpool2_forward_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(out, argmax, inp, in_ms, M, B, C, H, W);
    launchCheck();
    return UQ_OK;
}

uq_status maxpool2_backward_cuda(float *dinp, const float *dout, const int32_t *argmax, int M, int R, int T, int C,
                                 int H, int W, cudaStream_t stream) {
    const int64_t n = (int64_t)M * R * C * H * W;
    maxpool2_backward_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(dinp, dout, argmax, M, R, T, C, H, W);
    launchCheck();
    return UQ_OK;
}
