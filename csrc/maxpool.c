#include "layers.h"

#if defined(__AVX512F__)
#include <immintrin.h>

/* One output row of the pool from input rows r0, r1 (row r0 starts at index `first` of the
 * plane), 16 outputs a vector: each row's 32 inputs split into even and odd columns, then the
 * window's four values compared in row-major order with the same strict ">" as the scalar code
 * (the first maximum wins; a NaN never replaces). Lanes past the row end are masked. */
static void pool_row_avx512(float *o, int32_t *a, const float *r0, const float *r1, int W, int first) {
    const int OW = W / 2;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int x0 = 0; x0 < OW; x0 += 16) {
        const int n = OW - x0 < 16 ? OW - x0 : 16, n_in = 2 * n;
        const __mmask16 lo = n_in >= 16 ? 0xFFFF : (__mmask16)((1u << n_in) - 1);
        const __mmask16 hi = (__mmask16)((1u << (n_in - 16 > 0 ? n_in - 16 : 0)) - 1);
        const __m512 p0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * x0), p1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * x0 + 16);
        const __m512 q0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * x0), q1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * x0 + 16);
        const __m512 cand[3] = {_mm512_permutex2var_ps(p0, odd, p1), _mm512_permutex2var_ps(q0, even, q1),
                                _mm512_permutex2var_ps(q0, odd, q1)};
        const int32_t step[3] = {1, W, W + 1};
        __m512 best = _mm512_permutex2var_ps(p0, even, p1);
        __m512i at = _mm512_add_epi32(_mm512_set1_epi32(first + 2 * x0), even);
        const __m512i top_left = at;
        for (int k = 0; k < 3; k++) {
            const __mmask16 gt = _mm512_cmp_ps_mask(cand[k], best, _CMP_GT_OQ);
            best = _mm512_mask_mov_ps(best, gt, cand[k]);
            at = _mm512_mask_mov_epi32(at, gt, _mm512_add_epi32(top_left, _mm512_set1_epi32(step[k])));
        }
        const __mmask16 out = n == 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
        _mm512_mask_storeu_ps(o + x0, out, best);
        _mm512_mask_storeu_epi32(a + x0, out, at);
    }
}
#endif

void maxpool2_forward(float *out, int32_t *argmax, const float *inp, int B, int C, int H, int W) {
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for num_threads(uq_num_threads()) schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *plane = inp + (size_t)bc * H * W;
        float *o = out + (size_t)bc * OH * OW;
        int32_t *a = argmax + (size_t)bc * OH * OW;
#if defined(__AVX512F__)
        for (int y = 0; y < OH; y++)
            pool_row_avx512(o + (size_t)y * OW, a + (size_t)y * OW, plane + (size_t)2 * y * W,
                            plane + (size_t)(2 * y + 1) * W, W, 2 * y * W);
#else
        for (int y = 0; y < OH; y++)
            for (int x = 0; x < OW; x++) {
                int best = (2 * y) * W + 2 * x;
                const int cand[3] = {best + 1, best + W, best + W + 1};
                for (int i = 0; i < 3; i++)
                    if (plane[cand[i]] > plane[best]) best = cand[i]; /* first max wins, as PyTorch */
                o[y * OW + x] = plane[best];
                a[y * OW + x] = best;
            }
#endif
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
