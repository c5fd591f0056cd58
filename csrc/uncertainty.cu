/* Uncertainty of an ensemble and its gradients on the GPU (the CUDA twin of
 * uncertainty.c): total H[p̄], aleatoric E_m H[p_m], epistemic their
 * difference, and the exact gradients of each target with respect to every
 * member's logits. Same arithmetic as the C code: the mean probability in
 * float summed in member order, entropies and logs in double. One thread per
 * image (C and M are small; the work is negligible next to the networks). */
#include <float.h>

#include "cuda_common.h"

/* ---- kernels ----------------------------------------------------------------------------- */

__device__ static double entropy_dev(const float *p, int C) {
    double h = 0.0;
    for (int c = 0; c < C; c++)
        if (p[c] > 0.0f) h -= p[c] * log((double)p[c]);
    return h;
}

/* log that stays finite at p = 0 (multiplied by p = 0 afterwards) */
__device__ static double safe_log_dev(double p) { return log(p > (double)FLT_MIN ? p : (double)FLT_MIN); }

/* softmax of one row, as softmax_forward */
__device__ static void softmax_row(float *p, const float *z, int C) {
    float mx = z[0];
    for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
    double sum = 0.0;
    for (int c = 0; c < C; c++) {
        p[c] = expf(z[c] - mx);
        sum += p[c];
    }
    const float inv = (float)(1.0 / sum);
    for (int c = 0; c < C; c++) p[c] *= inv;
}

typedef struct {
    int pred;
    float max_prob, total, aleatoric, epistemic;
} row_stats;

/* image n of probs (M, N, C): pbar (C) and its statistics, as uq_decompose */
__device__ static row_stats decompose_row(float *pbar, const float *probs, int64_t n, int M, int64_t N, int C) {
    double ale = 0.0;
    for (int c = 0; c < C; c++) pbar[c] = 0.0f;
    for (int m = 0; m < M; m++) {
        const float *p = probs + ((int64_t)m * N + n) * C;
        for (int c = 0; c < C; c++) pbar[c] += p[c];
        ale += entropy_dev(p, C);
    }
    int arg = 0;
    for (int c = 0; c < C; c++) {
        pbar[c] /= (float)M;
        if (pbar[c] > pbar[arg]) arg = c;
    }
    const double tot = entropy_dev(pbar, C);
    ale /= M;
    row_stats s;
    s.pred = arg;
    s.max_prob = pbar[arg];
    s.total = (float)tot;
    s.aleatoric = (float)ale;
    s.epistemic = (float)(tot - ale > 0.0 ? tot - ale : 0.0);
    return s;
}

/* the gradient of a target with respect to p_m[c] (before the softmax), as uq_target_gradients */
__device__ static float dprob_dev(int kind, int c, int cls, const float *p, const float *pbar, int M) {
    switch (kind) {
    case UQ_TARGET_TOTAL: return (float)(-safe_log_dev(pbar[c]) / M);
    case UQ_TARGET_ALEATORIC: return (float)(-safe_log_dev(p[c]) / M);
    case UQ_TARGET_EPISTEMIC: {
        const float dtotal = (float)(-safe_log_dev(pbar[c]) / M);
        const float dale = (float)(-safe_log_dev(p[c]) / M);
        return dtotal - dale;
    }
    default: return c == cls ? 1.0f / M : 0.0f; /* MAX_PROB, PROB */
    }
}

__global__ void target_gradients_kernel(float *dlogits, float *values, float *probs, float *mean, const float *logits,
                                        const int32_t *cls_arr, uq_cuda_targets tg, int M, int N, int C) {
    const int T = tg.T;
    GRID_STRIDE_LOOP(n, (int64_t)N) {
        for (int m = 0; m < M; m++)
            softmax_row(probs + ((int64_t)m * N + n) * C, logits + ((int64_t)m * N + n) * C, C);
        float *pbar = mean + n * C;
        const row_stats s = decompose_row(pbar, probs, n, M, N, C);
        for (int t = 0; t < T; t++) {
            const int kind = tg.kind[t];
            const int cls = tg.has_cls[t] ? cls_arr[(int64_t)t * N + n] : s.pred;
            float value = 0.0f;
            switch (kind) {
            case UQ_TARGET_TOTAL: value = s.total; break;
            case UQ_TARGET_ALEATORIC: value = s.aleatoric; break;
            case UQ_TARGET_EPISTEMIC: value = s.epistemic; break;
            case UQ_TARGET_MAX_PROB: value = s.max_prob; break;
            case UQ_TARGET_PROB: value = pbar[cls]; break;
            case UQ_TARGET_LOGIT: {
                double sum = 0.0;
                for (int m = 0; m < M; m++) sum += logits[((int64_t)m * N + n) * C + cls];
                value = (float)(sum / M);
                break;
            }
            }
            values[n * T + t] = value;
            for (int m = 0; m < M; m++) {
                const float *p = probs + ((int64_t)m * N + n) * C;
                float *d = dlogits + (((int64_t)m * N + n) * T + t) * C;
                if (kind == UQ_TARGET_LOGIT) {
                    for (int c = 0; c < C; c++) d[c] = c == cls ? 1.0f / M : 0.0f;
                    continue;
                }
                /* through member m's softmax: d = p * (dprob - <dprob, p>) */
                double dot = 0.0;
                for (int c = 0; c < C; c++) dot += (double)dprob_dev(kind, c, cls, p, pbar, M) * p[c];
                for (int c = 0; c < C; c++) d[c] = p[c] * (dprob_dev(kind, c, cls, p, pbar, M) - (float)dot);
            }
        }
    }
}

__global__ void decompose_kernel(float *mean, int32_t *pred, float *max_prob, float *total, float *aleatoric,
                                 float *epistemic, const float *probs, int M, int N, int C) {
    GRID_STRIDE_LOOP(n, (int64_t)N) {
        const row_stats s = decompose_row(mean + n * C, probs, n, M, N, C);
        pred[n] = s.pred;
        max_prob[n] = s.max_prob;
        total[n] = s.total;
        aleatoric[n] = s.aleatoric;
        epistemic[n] = s.epistemic;
    }
}

/* out[i] = sum over members, in order, of in[m][i] */
__global__ void member_sum_kernel(float *out, const float *in, int M, int64_t n) {
    GRID_STRIDE_LOOP(i, n) {
        float s = 0.0f;
        for (int m = 0; m < M; m++) s += in[(int64_t)m * n + i];
        out[i] = s;
    }
}

/* ---- launchers --------------------------------------------------------------------------- */

uq_status target_gradients_cuda(float *dlogits, float *values, float *probs, float *mean, const float *logits,
                                const int32_t *cls, uq_cuda_targets targets, int M, int N, int C,
                                cudaStream_t stream) {
    /* small blocks: one thread per image, so that a chunk spreads over the SMs */
    const int block = 64;
    const unsigned grid = (unsigned)((N + block - 1) / block);
    target_gradients_kernel<<<grid, block, 0, stream>>>(dlogits, values, probs, mean, logits, cls, targets, M, N, C);
    launchCheck();
    return UQ_OK;
}

uq_status decompose_cuda(float *mean, int32_t *pred, float *max_prob, float *total, float *aleatoric,
                         float *epistemic, const float *probs, int M, int N, int C, cudaStream_t stream) {
    const int block = 64;
    const unsigned grid = (unsigned)((N + block - 1) / block);
    decompose_kernel<<<grid, block, 0, stream>>>(mean, pred, max_prob, total, aleatoric, epistemic, probs, M, N, C);
    launchCheck();
    return UQ_OK;
}

uq_status member_sum_cuda(float *out, const float *in, int M, int64_t n, cudaStream_t stream) {
    member_sum_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(out, in, M, n);
    launchCheck();
    return UQ_OK;
}
