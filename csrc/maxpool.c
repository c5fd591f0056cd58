#include "layers.h"

void maxpool2_forward(float *out, int32_t *argmax, const float *inp, int B, int C, int H, int W) {
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for num_threads(uq_num_threads()) schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *plane = inp + (size_t)bc * H * W;
        float *o = out + (size_t)bc * OH * OW;
        int32_t *a = argmax + (size_t)bc * OH * OW;
        for (int y = 0; y < OH; y++)
            for (int x = 0; x < OW; x++) {
                int best = (2 * y) * W + 2 * x;
                const int cand[3] = {best + 1, best + W, best + W + 1};
                for (int i = 0; i < 3; i++)
                    if (plane[cand[i]] > plane[best]) best = cand[i]; /* first max wins, as PyTorch */
                o[y * OW + x] = plane[best];
                a[y * OW + x] = best;
            }
    }
}

void maxpool2_backward(float *dinp, const float *dout, const int32_t *argmax,
                       int B, int T, int C, int H, int W) {
    const int OHW = (H / 2) * (W / 2);
#pragma omp parallel for num_threads(uq_num_threads()) schedule(static)
    for (int n = 0; n < B * T; n++) {
        const int b = n / T;
        for (int c = 0; c < C; c++) {
            const float *g = dout + ((size_t)n * C + c) * OHW;
            const int32_t *a = argmax + ((size_t)b * C + c) * OHW;
            float *d = dinp + ((size_t)n * C + c) * H * W;
            for (int i = 0; i < OHW; i++) d[a[i]] += g[i];
        }
    }
}
