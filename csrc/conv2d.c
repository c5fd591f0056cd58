#include <string.h>

#include "gemm.h"
#include "layers.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
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

/* ---------------------------------------------------------------------------------------------
 * Backward. Behind a 2x2 max-pool at most one in four of a conv's output gradients is non-zero
 * (each window's maximum) and the fused ReLU zeroes more, so a dense GEMM over dout multiplies
 * mostly zeros. The sparse path lists each output channel's non-zero gradients and sums, in
 * registers, the weights they reach (dinp) or the input patches they saw (dweight); in
 * channels-last (HWC) layout, zero-padded by K/2, both are K runs of K*C contiguous floats.
 * Where K*C is no whole number of vectors the row kernels below take over. Rows of a dense dout
 * that are dense enough still take the GEMM path (im2col / col2im).
 * ------------------------------------------------------------------------------------------- */

enum { MODE_AUTO, MODE_DENSE, MODE_SPARSE };
static int backward_mode = MODE_AUTO;

int uq_set_conv_backward(const char *name) {
    if (strcmp(name, "auto") == 0) backward_mode = MODE_AUTO;
    else if (strcmp(name, "dense") == 0) backward_mode = MODE_DENSE;
    else if (strcmp(name, "sparse") == 0) backward_mode = MODE_SPARSE;
    else return -1;
    return 0;
}

const char *uq_conv_backward(void) {
    return backward_mode == MODE_DENSE ? "dense" : backward_mode == MODE_SPARSE ? "sparse" : "auto";
}

/* In "auto", a row of a dense dout takes the sparse path when at most this fraction of it is
 * non-zero: at the default network's conv2 shape the sparse path was 3.7x as fast at 25%, 2x at
 * 50%, 1.3x (input gradient) and 1.05x (weight gradient) at 75%, and slower above. */
static const double SPARSE_MAX_DENSITY = 0.75;

/* Positions and values of the non-zeros of g[0..n), in increasing position; returns their
 * count. idx and val need room for n + UQ_VL entries (whole vectors are stored). */
static int compact_nonzeros(int32_t *restrict idx, float *restrict val, const float *restrict g, int n) {
    int count = 0, i = 0;
#if defined(__AVX512F__)
    __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(g + i);
        const __mmask16 nonzero = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(nonzero, pos));
        _mm512_storeu_ps(val + count, _mm512_maskz_compress_ps(nonzero, v));
        count += __builtin_popcount(nonzero);
        pos = _mm512_add_epi32(pos, _mm512_set1_epi32(16));
    }
#endif
    for (; i < n; i++) { /* branch-free: the slot is overwritten unless g[i] is kept */
        idx[count] = i;
        val[count] = g[i];
        count += g[i] != 0.0f;
    }
    return count;
}

/* The same for the gradient that reaches a conv's output through its ReLU and a 2x2 max-pool:
 * over the n pooled values, position max_index[q] (in the conv's plane) gets dpool[q] where the
 * pooled value, the window's maximum, is > 0 (else the ReLU stopped it). */
static int pooled_nonzeros(int32_t *restrict idx, float *restrict val, const float *restrict dpool,
                           const int32_t *restrict max_index, const float *restrict pooled, int n) {
    int count = 0, i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(dpool + i);
        const __mmask16 keep = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ) &
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(pooled + i), _mm512_setzero_ps(), _CMP_GT_OQ);
        _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(keep, _mm512_loadu_si512(max_index + i)));
        _mm512_storeu_ps(val + count, _mm512_maskz_compress_ps(keep, v));
        count += __builtin_popcount(keep);
    }
#endif
    for (; i < n; i++) {
        idx[count] = max_index[i];
        val[count] = dpool[i];
        count += dpool[i] != 0.0f && pooled[i] > 0.0f;
    }
    return count;
}

/* inp (C,H,W) -> interior of hwc (H+2P, W+2P, C); the border is left as it is (zero) */
static void to_hwc(float *restrict hwc, const float *restrict inp, int C, int H, int W, int P) {
    const int Wp = W + 2 * P;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            const float *src = inp + ((size_t)c * H + y) * W;
            float *dst = hwc + ((size_t)(y + P) * Wp + P) * C + c;
            for (int x = 0; x < W; x++) dst[(size_t)x * C] = src[x];
        }
}

/* dinp (C,H,W) += interior of hwc (H+2P, W+2P, C) */
static void add_from_hwc(float *restrict dinp, const float *restrict hwc, int C, int H, int W, int P) {
    const int Wp = W + 2 * P;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            const float *src = hwc + ((size_t)(y + P) * Wp + P) * C + c;
            float *dst = dinp + ((size_t)c * H + y) * W;
            for (int x = 0; x < W; x++) dst[x] += src[(size_t)x * C];
        }
}

typedef struct {
    int C, H, W, OC, K;
    int Wp, KC;               /* padded width; K*C, the length of one contiguous run in HWC */
    const int32_t *pad_off;   /* (HW): offset in a padded HWC plane of output pixel p's patch */
    const float *weight_hwc;  /* (OC, K, K, C): the weights, channels last */
    const float *weight;      /* (OC, C, K, K): as given (row kernels) */
    int Wr;                   /* row kernels: width of a padded plane, ceil(W / VL) vectors + K - 1 */
    const int32_t *plane_off; /* (HW): offset of pixel p in such a plane, (H+K-1, Wr) */
} sparse_shape;

/* One row's non-zero output gradients, listed by channel and, for the gather kernels of the
 * input gradient, by position (channels in increasing order). */
typedef struct {
    int32_t *pos;
    float *val;
    int *chan_start;          /* (OC+1): channel oc's entries are [chan_start[oc], chan_start[oc+1]) */
    int32_t *chan;
    float *chan_val;
    int *pos_start;           /* (HW+1) */
    int *cursor;              /* (HW) scratch of the sort */
} nonzeros;

/* the by-position lists from the by-channel ones: a counting sort, stable in the channel */
static void sort_by_position(nonzeros *nz, int OC, int HW) {
    int *start = nz->pos_start;
    memset(start, 0, sizeof(int) * (HW + 1));
    for (int j = 0; j < nz->chan_start[OC]; j++) start[nz->pos[j] + 1]++;
    for (int p = 0; p < HW; p++) start[p + 1] += start[p];
    memcpy(nz->cursor, start, sizeof(int) * HW);
    for (int oc = 0; oc < OC; oc++)
        for (int j = nz->chan_start[oc]; j < nz->chan_start[oc + 1]; j++) {
            const int slot = nz->cursor[nz->pos[j]]++;
            nz->chan[slot] = oc;
            nz->chan_val[slot] = nz->val[j];
        }
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))
enum { GATHER_MAX_VECTORS = 8 };

/* The gather kernels sum in registers, nv vectors at a time, over one segment of a run of
 * K*C floats (a kernel row ki, channels last): segment `o` of run ki starts at ki*K*C + o*nv*VL. */

/* one row: dpad (padded HWC) += for each position p, the sum of g[oc][p] * weight[oc] over the
 * channels oc listed at p, added where p's patch lies */
ALWAYS_INLINE void gather_dinp_nv(const int nv, float *restrict dpad, const sparse_shape *s, const nonzeros *nz) {
    const size_t row = (size_t)s->Wp * s->C, per_oc = (size_t)s->K * s->KC;
    const int segments = s->KC / (nv * UQ_VL);
    for (int p = 0; p < s->H * s->W; p++) {
        const int j0 = nz->pos_start[p], j1 = nz->pos_start[p + 1];
        if (j0 == j1) continue;
        for (int ki = 0; ki < s->K; ki++)
            for (int o = 0; o < segments; o++) {
                const size_t off = (size_t)ki * s->KC + (size_t)o * nv * UQ_VL;
                uq_vfloat acc[GATHER_MAX_VECTORS] = {0};
                for (int j = j0; j < j1; j++) {
                    const float *w = s->weight_hwc + nz->chan[j] * per_oc + off;
                    for (int u = 0; u < nv; u++) acc[u] += nz->chan_val[j] * uq_vload(w + u * UQ_VL);
                }
                float *d = dpad + s->pad_off[p] + ki * row + (size_t)o * nv * UQ_VL;
                for (int u = 0; u < nv; u++) uq_vstore(d + u * UQ_VL, uq_vload(d + u * UQ_VL) + acc[u]);
            }
    }
}

/* one image: dweight_hwc (OC, K, K, C) += for each channel oc, the sum of g[oc][p] * the patch of
 * pad (padded HWC input) at p over the positions p listed for oc; dbias += g */
ALWAYS_INLINE void gather_dweight_nv(const int nv, float *restrict dweight_hwc, float *restrict dbias,
                                     const sparse_shape *s, const float *pad, const nonzeros *nz) {
    const size_t row = (size_t)s->Wp * s->C, per_oc = (size_t)s->K * s->KC;
    const int segments = s->KC / (nv * UQ_VL);
    for (int oc = 0; oc < s->OC; oc++) {
        const int j0 = nz->chan_start[oc], j1 = nz->chan_start[oc + 1];
        float bias_sum = 0.0f;
        for (int j = j0; j < j1; j++) bias_sum += nz->val[j];
        dbias[oc] += bias_sum;
        if (j0 == j1) continue;
        for (int ki = 0; ki < s->K; ki++)
            for (int o = 0; o < segments; o++) {
                const size_t off = ki * row + (size_t)o * nv * UQ_VL;
                uq_vfloat acc[GATHER_MAX_VECTORS] = {0};
                for (int j = j0; j < j1; j++) {
                    const float *patch = pad + s->pad_off[nz->pos[j]] + off;
                    for (int u = 0; u < nv; u++) acc[u] += nz->val[j] * uq_vload(patch + u * UQ_VL);
                }
                float *d = dweight_hwc + oc * per_oc + (size_t)ki * s->KC + (size_t)o * nv * UQ_VL;
                for (int u = 0; u < nv; u++) uq_vstore(d + u * UQ_VL, uq_vload(d + u * UQ_VL) + acc[u]);
            }
    }
}

/* The same two for any C and K, for channel counts whose K*C runs are no whole vectors (such as
 * a first conv on grey images, C = 1): the listed gradients are written into zeroed planes,
 * gplane (OC, H+K-1, Wr), padded by K/2, and the kernels run along image rows, VL pixels a
 * vector, with ROW_ITEMS independent accumulators. */
enum { ROW_ITEMS = 9 };

static void fill_planes(float *gplane, const sparse_shape *s, const nonzeros *nz, int clear) {
    const size_t plane = (size_t)(s->H + s->K - 1) * s->Wr;
    for (int oc = 0; oc < s->OC; oc++)
        for (int j = nz->chan_start[oc]; j < nz->chan_start[oc + 1]; j++)
            gplane[oc * plane + s->plane_off[nz->pos[j]]] = clear ? 0.0f : nz->val[j];
}

/* dinp (C,H,W) += sum over oc, ki, kj of weight[oc][c][ki][kj] * g[oc][y+P-ki][x+P-kj], over
 * tiles of ROW_ITEMS (row, vector) items; a short last tile repeats its last item */
static void rows_dinp(float *restrict dinp, const sparse_shape *s, const float *gplane) {
    const int K = s->K, P = K / 2, H = s->H, W = s->W, Wr = s->Wr, per_row = (W + UQ_VL - 1) / UQ_VL;
    const int items = H * per_row;
    const size_t plane = (size_t)(H + K - 1) * Wr;
    for (int c = 0; c < s->C; c++)
        for (int t0 = 0; t0 < items; t0 += ROW_ITEMS) {
            const int n = items - t0 < ROW_ITEMS ? items - t0 : ROW_ITEMS;
            size_t off[ROW_ITEMS];
            for (int t = 0; t < ROW_ITEMS; t++) {
                const int item = t0 + (t < n ? t : n - 1);
                off[t] = (size_t)(item / per_row + 2 * P) * Wr + (item % per_row) * UQ_VL + 2 * P;
            }
            uq_vfloat acc[ROW_ITEMS] = {0};
            for (int oc = 0; oc < s->OC; oc++) {
                const float *g = gplane + oc * plane, *w = s->weight + ((size_t)oc * s->C + c) * K * K;
                for (int ki = 0; ki < K; ki++)
                    for (int kj = 0; kj < K; kj++) {
                        const float wk = w[ki * K + kj];
                        const float *gk = g - (size_t)ki * Wr - kj;
                        for (int t = 0; t < ROW_ITEMS; t++) acc[t] += wk * uq_vload(gk + off[t]);
                    }
            }
            for (int t = 0; t < n; t++) {
                const int y = (t0 + t) / per_row, x0 = (t0 + t) % per_row * UQ_VL;
                float *d = dinp + ((size_t)c * H + y) * W + x0;
                for (int l = 0; l < UQ_VL && x0 + l < W; l++) d[l] += acc[t][l];
            }
        }
}

/* dweight_hwc[oc][ki][kj][c] += sum over y, x of g[oc][y][x] * inplane[c][y+ki][x+kj] (inplane:
 * the input padded by K/2, (C, H+K-1, Wr)), ROW_ITEMS kernel taps at a time; dbias += g */
static void rows_dweight(float *restrict dweight_hwc, float *restrict dbias, const sparse_shape *s,
                         const float *gplane, const float *inplane, const nonzeros *nz) {
    const int K = s->K, P = K / 2, H = s->H, Wr = s->Wr, per_row = (s->W + UQ_VL - 1) / UQ_VL;
    const size_t plane = (size_t)(H + K - 1) * Wr;
    for (int oc = 0; oc < s->OC; oc++) {
        float bias_sum = 0.0f;
        for (int j = nz->chan_start[oc]; j < nz->chan_start[oc + 1]; j++) bias_sum += nz->val[j];
        dbias[oc] += bias_sum;
        if (nz->chan_start[oc] == nz->chan_start[oc + 1]) continue;
        const float *g = gplane + oc * plane + (size_t)P * Wr + P;
        for (int c = 0; c < s->C; c++)
            for (int k0 = 0; k0 < K * K; k0 += ROW_ITEMS) {
                const int n = K * K - k0 < ROW_ITEMS ? K * K - k0 : ROW_ITEMS;
                size_t tap[ROW_ITEMS];
                for (int t = 0; t < ROW_ITEMS; t++) {
                    const int k = k0 + (t < n ? t : n - 1);
                    tap[t] = (size_t)(k / K) * Wr + k % K;
                }
                uq_vfloat acc[ROW_ITEMS] = {0};
                for (int y = 0; y < H; y++)
                    for (int v = 0; v < per_row; v++) {
                        const uq_vfloat gv = uq_vload(g + (size_t)y * Wr + v * UQ_VL);
                        const float *in = inplane + c * plane + (size_t)y * Wr + v * UQ_VL;
                        for (int t = 0; t < ROW_ITEMS; t++) acc[t] += gv * uq_vload(in + tap[t]);
                    }
                for (int t = 0; t < n; t++) {
                    float sum = 0.0f;
                    for (int l = 0; l < UQ_VL; l++) sum += acc[t][l];
                    dweight_hwc[((size_t)oc * K * K + k0 + t) * s->C + c] += sum;
                }
            }
    }
}

/* vectors per segment for the gather kernels: the largest divisor of a run's vectors (K*C / VL)
 * that fits the registers; 0 where a run is no whole number of vectors */
static int gather_vectors(const sparse_shape *s) {
    if (s->KC % UQ_VL) return 0;
    const int run = s->KC / UQ_VL;
    int nv = GATHER_MAX_VECTORS;
    while (run % nv) nv--;
    return nv;
}

#define DISPATCH_NV(nv, call_nv)                                                                   \
    switch (nv) {                                                                                  \
    case 1: call_nv(1); break;                                                                     \
    case 2: call_nv(2); break;                                                                     \
    case 3: call_nv(3); break;                                                                     \
    case 4: call_nv(4); break;                                                                     \
    case 5: call_nv(5); break;                                                                     \
    case 6: call_nv(6); break;                                                                     \
    case 7: call_nv(7); break;                                                                     \
    case 8: call_nv(8); break;                                                                     \
    default: break;                                                                                \
    }

/* one row of the sparse path. Gather kernels: dpad and pad are (H+K-1, W+K-1, C) scratch, pad's
 * border zero. Row kernels: gplane (OC, H+K-1, Wr) zero, and left so; inplane (C, H+K-1, Wr)
 * with a zero border. */
static void sparse_row(float *dinp, float *dweight_hwc, float *dbias, const float *inp, const sparse_shape *s,
                       nonzeros *nz, float *dpad, float *pad, float *gplane, float *inplane) {
    const int P = s->K / 2, nv = gather_vectors(s);
    if (!nv) {
        fill_planes(gplane, s, nz, 0);
        if (dweight_hwc) {
            for (int c = 0; c < s->C; c++)
                for (int y = 0; y < s->H; y++)
                    memcpy(inplane + ((size_t)c * (s->H + s->K - 1) + y + P) * s->Wr + P,
                           inp + ((size_t)c * s->H + y) * s->W, sizeof(float) * s->W);
            rows_dweight(dweight_hwc, dbias, s, gplane, inplane, nz);
        }
        if (dinp) rows_dinp(dinp, s, gplane);
        fill_planes(gplane, s, nz, 1);
        return;
    }
    if (dweight_hwc) {
        to_hwc(pad, inp, s->C, s->H, s->W, P);
#define DWEIGHT_NV(n) gather_dweight_nv(n, dweight_hwc, dbias, s, pad, nz)
        DISPATCH_NV(nv, DWEIGHT_NV)
#undef DWEIGHT_NV
    }
    if (dinp) {
        memset(dpad, 0, sizeof(float) * (size_t)(s->H + s->K - 1) * s->Wp * s->C);
        sort_by_position(nz, s->OC, s->H * s->W);
#define DINP_NV(n) gather_dinp_nv(n, dpad, s, nz)
        DISPATCH_NV(nv, DINP_NV)
#undef DINP_NV
        add_from_hwc(dinp, dpad, s->C, s->H, s->W, P);
    }
}

/* Where a row's output gradient comes from: a dense dout (rows, OC, H, W), or the gradient dpool
 * (rows, OC, H/2, W/2) of a 2x2 max-pool after the conv's ReLU, with that pool's max_index and
 * output (rows / T images). */
typedef struct {
    const float *dout;
    const float *dpool;
    const int32_t *max_index;
    const float *pooled;
    int T;
} grad_source;

static uq_status backward_rows(float *dinp, float *dweight, float *dbias, const grad_source *src,
                               const float *inp, const float *weight, int rows, int C, int H, int W, int OC, int K) {
    const int HW = H * W, CKK = C * K * K, nt = threads_for(rows);
    const int want_w = dweight != NULL || dbias != NULL;
    if (!want_w && !dinp) return UQ_OK;
    const size_t col_size = src->dout ? (size_t)CKK * HW : 0, n_w = (size_t)OC * CKK, n_g = (size_t)OC * HW;
    const size_t padded = (size_t)(H + K - 1) * (W + K - 1) * C, list = n_g + UQ_VL;
    const int OHW = (H / 2) * (W / 2);
    /* shared: the weights channels-last and the patch offsets; per thread: col and dcol (dense
     * path), the non-zero lists and two HWC planes (sparse path), and private dweight / dbias
     * partials of both paths, summed in thread order afterwards so that results do not depend
     * on scheduling */
    const int Wr = (W + UQ_VL - 1) / UQ_VL * UQ_VL + K - 1;
    const size_t row_plane = (size_t)(H + K - 1) * Wr;
    const size_t shared = n_w + 2 * (size_t)HW;
    const size_t partials = want_w ? 2 * n_w + OC : 0;
    const size_t per_thread = 2 * col_size + 4 * list + OC + 1 + 2 * (size_t)HW + 1 + 2 * padded +
                              (OC + C) * row_plane + partials;
    float *scratch = uq_malloc(sizeof(float) * (shared + per_thread * nt));
    if (!scratch) return uq_fail(UQ_ERR_NOMEM, "conv2d_backward: out of memory for %d x %zu floats", nt, per_thread);
    float *weight_hwc = scratch;
    int32_t *pad_off = (int32_t *)(weight_hwc + n_w), *plane_off = pad_off + HW;
    const sparse_shape shape = {C, H, W, OC, K, W + K - 1, K * C, pad_off, weight_hwc, weight, Wr, plane_off};
    for (int oc = 0; oc < OC; oc++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K * K; k++) weight_hwc[((size_t)oc * K * K + k) * C + c] = weight[((size_t)oc * C + c) * K * K + k];
    for (int p = 0; p < HW; p++) {
        pad_off[p] = ((p / W) * shape.Wp + p % W) * C;
        plane_off[p] = (p / W + K / 2) * Wr + p % W + K / 2;
    }
    const int max_sparse = backward_mode == MODE_SPARSE ? (int)n_g
                         : backward_mode == MODE_DENSE ? -1 : (int)(SPARSE_MAX_DENSITY * (double)n_g);
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *col = scratch + shared + per_thread * tid;
        float *dcol = col + col_size;
        nonzeros nz;
        nz.pos = (int32_t *)(dcol + col_size);
        nz.val = (float *)(nz.pos + list);
        nz.chan = (int32_t *)(nz.val + list);
        nz.chan_val = (float *)(nz.chan + list);
        nz.chan_start = (int *)(nz.chan_val + list);
        nz.pos_start = nz.chan_start + OC + 1;
        nz.cursor = nz.pos_start + HW + 1;
        float *dpad = (float *)(nz.cursor + HW);
        float *pad = dpad + padded;        /* pad, gplane and inplane: zero, and their borders stay so */
        float *gplane = pad + padded, *inplane = gplane + (size_t)OC * row_plane;
        float *dw = inplane + (size_t)C * row_plane; /* dense path, (OC, C, K, K) */
        float *dw_hwc = dw + n_w;          /* sparse path, (OC, K, K, C) */
        float *db = dw_hwc + n_w;
        memset(pad, 0, sizeof(float) * (padded + (OC + C) * row_plane + partials));
#pragma omp for schedule(static)
        for (int n = 0; n < rows; n++) {
            const float *g = src->dout ? src->dout + (size_t)n * n_g : NULL;
            int count = 0, oc = 0;
            if (g) { /* list the non-zeros channel by channel, giving up once there are too many */
                for (; oc < OC && count <= max_sparse; oc++) {
                    nz.chan_start[oc] = count;
                    count += compact_nonzeros(nz.pos + count, nz.val + count, g + (size_t)oc * HW, HW);
                }
            } else { /* through the pool: at most one in four, always sparse */
                const size_t pooled_row = (size_t)(n / src->T) * OC * OHW;
                for (; oc < OC; oc++) {
                    const size_t q = (size_t)oc * OHW;
                    nz.chan_start[oc] = count;
                    count += pooled_nonzeros(nz.pos + count, nz.val + count, src->dpool + (size_t)n * OC * OHW + q,
                                             src->max_index + pooled_row + q, src->pooled + pooled_row + q, OHW);
                }
            }
            nz.chan_start[oc] = count;
            if (!g || (oc == OC && count <= max_sparse)) {
                sparse_row(dinp ? dinp + (size_t)n * C * HW : NULL, want_w ? dw_hwc : NULL, db,
                           want_w ? inp + (size_t)n * C * HW : NULL, &shape, &nz, dpad, pad, gplane, inplane);
                continue;
            }
            if (want_w) {
                for (int oc = 0; oc < OC; oc++) {
                    float sum = 0.0f;
                    for (int i = 0; i < HW; i++) sum += g[(size_t)oc * HW + i];
                    db[oc] += sum;
                }
                im2col(col, inp + (size_t)n * C * HW, C, H, W, K);
                uq_sgemm(0, 1, OC, CKK, HW, 1.0f, g, HW, col, HW, 1.0f, dw, CKK);
            }
            if (dinp) {
                uq_sgemm(1, 0, CKK, HW, OC, 1.0f, weight, CKK, g, HW, 0.0f, dcol, HW);
                col2im_add(dinp + (size_t)n * C * HW, dcol, C, H, W, K);
            }
        }
    }
    if (want_w) {
        for (int t = 0; t < nt; t++) {
            const float *dw = scratch + shared + per_thread * (t + 1) - partials;
            const float *dw_hwc = dw + n_w, *db = dw_hwc + n_w;
            if (dweight)
                for (int oc = 0; oc < OC; oc++)
                    for (int c = 0; c < C; c++)
                        for (int k = 0; k < K * K; k++) {
                            const size_t i = ((size_t)oc * C + c) * K * K + k;
                            dweight[i] += dw[i] + dw_hwc[((size_t)oc * K * K + k) * C + c];
                        }
            if (dbias) for (int i = 0; i < OC; i++) dbias[i] += db[i];
        }
    }
    uq_free(scratch);
    return UQ_OK;
}

uq_status conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight,
                          int B, int C, int H, int W, int OC, int K) {
    const grad_source src = {dout, NULL, NULL, NULL, 1};
    return backward_rows(dinp, dweight, dbias, &src, inp, weight, B, C, H, W, OC, K);
}

uq_status conv2d_pool_backward(float *dinp, float *dweight, float *dbias, const float *dpool,
                               const int32_t *max_index, const float *pooled, const float *inp,
                               const float *weight, int B, int T, int C, int H, int W, int OC, int K) {
    if (T > 1 && (dweight || dbias)) return uq_fail(UQ_ERR_VALUE, "conv2d_pool_backward: parameter gradients need T == 1");
    const grad_source src = {NULL, dpool, max_index, pooled, T};
    return backward_rows(dinp, dweight, dbias, &src, inp, weight, B * T, C, H, W, OC, K);
}
