#include <string.h>

#include "gemm.h"
#include "layers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* one image: inp (C,H,W) -> col (C*K*K, H*W) */
static void im2col(float *col, const float *inp, int C, int H, int W, int K) {
    const int pad = K / 2, HW = H * W;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                float *row = col + (size_t)((c * K + ki) * K + kj) * HW;
                /* x + kj - pad must lie in [0, W): x in [x0, x1) */
                const int x0 = pad - kj > 0 ? pad - kj : 0;
                const int x1 = W + pad - kj < W ? W + pad - kj : W;
                for (int y = 0; y < H; y++) {
                    const int iy = y + ki - pad;
                    float *dst = row + y * W;
                    /* x1 <= x0 when the padding exceeds the width: the whole row is padding */
                    if (iy < 0 || iy >= H || x1 <= x0) { memset(dst, 0, sizeof(float) * W); continue; }
                    const float *src = inp + ((size_t)c * H + iy) * W + (x0 + kj - pad);
                    for (int x = 0; x < x0; x++) dst[x] = 0.0f;
                    memcpy(dst + x0, src, sizeof(float) * (x1 - x0));
                    for (int x = x1; x < W; x++) dst[x] = 0.0f;
                }
            }
}

/* one image: dinp (C,H,W) += col2im(dcol (C*K*K, H*W)) */
static void col2im_add(float *dinp, const float *dcol, int C, int H, int W, int K) {
    const int pad = K / 2, HW = H * W;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const float *row = dcol + (size_t)((c * K + ki) * K + kj) * HW;
                for (int y = 0; y < H; y++) {
                    const int iy = y + ki - pad;
                    if (iy < 0 || iy >= H) continue;
                    float *dst = dinp + ((size_t)c * H + iy) * W;
                    const float *src = row + y * W;
                    const int x0 = pad - kj > 0 ? pad - kj : 0;
                    const int x1 = W + pad - kj < W ? W + pad - kj : W;
                    for (int x = x0; x < x1; x++) dst[x + kj - pad] += src[x];
                }
            }
}

static int threads_for(int B) {
    int nt = uq_num_threads();
    return nt < B ? nt : (B > 0 ? B : 1);
}

uq_status conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int C, int H, int W, int OC, int K, int relu) {
    const int HW = H * W, CKK = C * K * K, nt = threads_for(B);
    const size_t col_size = (size_t)CKK * HW;
    float *scratch = uq_malloc(sizeof(float) * col_size * nt);
    if (!scratch) return uq_fail(UQ_ERR_NOMEM, "conv2d_forward: out of memory for %d x %zu floats", nt, col_size);
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *col = scratch + col_size * tid;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            float *o = out + (size_t)b * OC * HW;
            im2col(col, inp + (size_t)b * C * HW, C, H, W, K);
            for (int oc = 0; oc < OC; oc++)
                for (int i = 0; i < HW; i++) o[(size_t)oc * HW + i] = bias[oc];
            uq_sgemm(0, 0, OC, HW, CKK, 1.0f, weight, CKK, col, HW, 1.0f, o, HW);
            if (relu)
                for (size_t i = 0; i < (size_t)OC * HW; i++) o[i] = o[i] > 0.0f ? o[i] : 0.0f;
        }
    }
    uq_free(scratch);
    return UQ_OK;
}

uq_status conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight,
                          int B, int C, int H, int W, int OC, int K) {
    const int HW = H * W, CKK = C * K * K, nt = threads_for(B);
    const int want_w = dweight != NULL || dbias != NULL;
    /* per thread: col, dcol, and private dweight/dbias partials that are summed
     * in thread order afterwards, so results do not depend on scheduling */
    const size_t col_size = (size_t)CKK * HW;
    const size_t per_thread = 2 * col_size + (want_w ? (size_t)OC * CKK + OC : 0);
    float *scratch = uq_calloc(sizeof(float) * per_thread * nt);
    if (!scratch) return uq_fail(UQ_ERR_NOMEM, "conv2d_backward: out of memory for %d x %zu floats", nt, per_thread);
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *col = scratch + per_thread * tid;
        float *dcol = col + col_size;
        float *dw = dcol + col_size;
        float *db = dw + (size_t)OC * CKK;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *g = dout + (size_t)b * OC * HW;
            if (want_w) {
                for (int oc = 0; oc < OC; oc++) {
                    float s = 0.0f;
                    for (int i = 0; i < HW; i++) s += g[(size_t)oc * HW + i];
                    db[oc] += s;
                }
                im2col(col, inp + (size_t)b * C * HW, C, H, W, K);
                uq_sgemm(0, 1, OC, CKK, HW, 1.0f, g, HW, col, HW, 1.0f, dw, CKK);
            }
            if (dinp) {
                uq_sgemm(1, 0, CKK, HW, OC, 1.0f, weight, CKK, g, HW, 0.0f, dcol, HW);
                col2im_add(dinp + (size_t)b * C * HW, dcol, C, H, W, K);
            }
        }
    }
    if (want_w) {
        for (int t = 0; t < nt; t++) {
            const float *dw = scratch + per_thread * t + 2 * col_size;
            const float *db = dw + (size_t)OC * CKK;
            if (dweight) for (size_t i = 0; i < (size_t)OC * CKK; i++) dweight[i] += dw[i];
            if (dbias) for (int i = 0; i < OC; i++) dbias[i] += db[i];
        }
    }
    uq_free(scratch);
    return UQ_OK;
}
