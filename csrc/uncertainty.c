#include "uncertainty.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "layers.h"

/* log that stays finite at p = 0; every use multiplies it by a probability
 * that is then 0 too, so 0 log 0 = 0 holds. */
static inline double safe_log(double p) { return log(p > (double)FLT_MIN ? p : (double)FLT_MIN); }

static double entropy(const float *p, int C) {
    double h = 0.0;
    for (int c = 0; c < C; c++)
        if (p[c] > 0.0f) h -= p[c] * log((double)p[c]);
    return h;
}

uq_status uq_decompose(float *mean, int32_t *pred, float *max_prob, float *total, float *aleatoric, float *epistemic,
                       const float *member_probs, int M, int N, int C) {
    /* on the heap: C is the caller's (any size), a stack array of C floats could overflow the stack */
    float *pbar = uq_malloc(sizeof(float) * (size_t)C);
    if (!pbar) return uq_fail(UQ_ERR_NOMEM, "out of memory for the mean of %d class probabilities", C);
    for (int n = 0; n < N; n++) {
        double ale = 0.0;
        for (int c = 0; c < C; c++) pbar[c] = 0.0f;
        for (int m = 0; m < M; m++) {
            const float *p = member_probs + ((size_t)m * N + n) * C;
            for (int c = 0; c < C; c++) pbar[c] += p[c];
            ale += entropy(p, C);
        }
        int arg = 0;
        for (int c = 0; c < C; c++) {
            pbar[c] /= (float)M;
            if (pbar[c] > pbar[arg]) arg = c;
        }
        const double tot = entropy(pbar, C);
        ale /= M;
        if (mean) memcpy(mean + (size_t)n * C, pbar, sizeof(float) * C);
        if (pred) pred[n] = arg;
        if (max_prob) max_prob[n] = pbar[arg];
        if (total) total[n] = (float)tot;
        if (aleatoric) aleatoric[n] = (float)ale;
        /* mutual information is >= 0 (Jensen); clamp float rounding below 0 */
        if (epistemic) epistemic[n] = (float)(tot - ale > 0.0 ? tot - ale : 0.0);
    }
    uq_free(pbar);
    return UQ_OK;
}

uq_status uq_target_gradients(float *dlogits, float *values, float *probs, const float *logits,
                              const uq_target *targets, int T, int M, int N, int C) {
    for (int m = 0; m < M; m++) softmax_forward(probs + (size_t)m * N * C, logits + (size_t)m * N * C, N, C);
    float *mean = uq_malloc(sizeof(float) * N * (C + 4));
    int32_t *pred = uq_malloc(sizeof(int32_t) * N);
    float *dtotal = uq_malloc(sizeof(float) * 2 * (size_t)C); /* heap, not the stack: C may be large */
    if (!mean || !pred || !dtotal) {
        uq_free(mean);
        uq_free(pred);
        uq_free(dtotal);
        return uq_fail(UQ_ERR_NOMEM, "out of memory for target gradients of %d images", N);
    }
    float *dprob = dtotal + C;
    float *max_prob = mean + (size_t)N * C, *total = max_prob + N, *ale = total + N, *epi = ale + N;
    uq_status st = uq_decompose(mean, pred, max_prob, total, ale, epi, probs, M, N, C);
    for (int n = 0; st == UQ_OK && n < N; n++) {
        const float *pbar = mean + (size_t)n * C;
        /* dH[p̄]/dp_m,c = -(log p̄_c + 1) / M; the constant cancels through the softmax */
        for (int c = 0; c < C; c++) dtotal[c] = (float)(-safe_log(pbar[c]) / M);
        for (int t = 0; t < T; t++) {
            const uq_target *tg = &targets[t];
            const int cls = tg->classes ? tg->classes[n] : pred[n];
            float value = 0.0f;
            switch (tg->kind) {
            case UQ_TARGET_TOTAL: value = total[n]; break;
            case UQ_TARGET_ALEATORIC: value = ale[n]; break;
            case UQ_TARGET_EPISTEMIC: value = epi[n]; break;
            case UQ_TARGET_MAX_PROB: value = max_prob[n]; break;
            case UQ_TARGET_PROB: value = pbar[cls]; break;
            case UQ_TARGET_LOGIT: {
                double s = 0.0;
                for (int m = 0; m < M; m++) s += logits[((size_t)m * N + n) * C + cls];
                value = (float)(s / M);
                break;
            }
            }
            values[(size_t)n * T + t] = value;
            for (int m = 0; m < M; m++) {
                const float *p = probs + ((size_t)m * N + n) * C;
                float *d = dlogits + (((size_t)m * N + n) * T + t) * C;
                memset(d, 0, sizeof(float) * C);
                if (tg->kind == UQ_TARGET_LOGIT) {
                    d[cls] = 1.0f / M;
                    continue;
                }
                /* gradient with respect to p_m, then through member m's softmax */
                switch (tg->kind) {
                case UQ_TARGET_TOTAL: memcpy(dprob, dtotal, sizeof(float) * C); break;
                case UQ_TARGET_ALEATORIC:
                case UQ_TARGET_EPISTEMIC:
                    for (int c = 0; c < C; c++) {
                        const float dale = (float)(-safe_log(p[c]) / M);
                        dprob[c] = tg->kind == UQ_TARGET_ALEATORIC ? dale : dtotal[c] - dale;
                    }
                    break;
                default: /* MAX_PROB, PROB */
                    memset(dprob, 0, sizeof(float) * C);
                    dprob[cls] = 1.0f / M;
                    break;
                }
                softmax_backward(d, dprob, p, 1, C);
            }
        }
    }
    uq_free(mean);
    uq_free(pred);
    uq_free(dtotal);
    return st;
}

uq_status uq_input_gradients(float *grads, float *values, const uq_arch *arch, const float *params, int M,
                             const float *x, int N, const uq_target *targets, int T, int chunk) {
    const int C = arch->n_classes;
    const size_t in_size = (size_t)arch->in_c * arch->in_h * arch->in_w;
    if (chunk > N) chunk = N;
    uq_status st = UQ_OK;
    uq_workspace *ws = uq_calloc(sizeof(uq_workspace) * M);
    float *logits = uq_malloc(sizeof(float) * M * chunk * C);
    float *probs = uq_malloc(sizeof(float) * M * chunk * C);
    float *dlogits = uq_malloc(sizeof(float) * M * chunk * T * C);
    float *grad_scratch = uq_malloc(sizeof(float) * 2 * (size_t)chunk * T * arch->max_size);
    if (!ws || !logits || !probs || !dlogits || !grad_scratch) {
        st = uq_fail(UQ_ERR_NOMEM, "out of memory for input gradients of %d images x %d targets", chunk, T);
        goto done;
    }
    for (int m = 0; m < M; m++)
        if ((st = uq_workspace_alloc(&ws[m], arch, chunk, 0))) goto done;
    for (int i = 0; i < N; i += chunk) {
        const int B = N - i < chunk ? N - i : chunk;
        const float *xb = x + (size_t)i * in_size;
        for (int m = 0; m < M; m++) {
            if ((st = uq_model_forward(arch, params + (size_t)m * arch->n_params, xb, B, &ws[m]))) goto done;
            memcpy(logits + (size_t)m * B * C, uq_model_logits(arch, &ws[m]), sizeof(float) * B * C);
        }
        /* per-image class arrays are indexed from this chunk's first image */
        uq_target chunk_targets[T];
        for (int t = 0; t < T; t++) {
            chunk_targets[t] = targets[t];
            if (targets[t].classes) chunk_targets[t].classes = targets[t].classes + i;
        }
        if ((st = uq_target_gradients(dlogits, values + (size_t)i * T, probs, logits, chunk_targets, T, M, B, C)))
            goto done;
        float *gb = grads + (size_t)i * T * in_size;
        memset(gb, 0, sizeof(float) * B * T * in_size);
        for (int m = 0; m < M; m++) {
            st = uq_model_backward_into(arch, params + (size_t)m * arch->n_params, NULL, gb, xb,
                                        dlogits + (size_t)m * B * T * C, B, T, &ws[m], grad_scratch,
                                        grad_scratch + (size_t)chunk * T * arch->max_size);
            if (st) goto done;
        }
    }
done:
    if (ws)
        for (int m = 0; m < M; m++) uq_workspace_free(&ws[m]);
    uq_free(ws);
    uq_free(logits);
    uq_free(probs);
    uq_free(dlogits);
    uq_free(grad_scratch);
    return st;
}
