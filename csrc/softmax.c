#include <math.h>

#include "layers.h"

void softmax_forward(float *probs, const float *logits, int B, int C) {
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *p = probs + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++) { p[c] = expf(z[c] - mx); sum += p[c]; }
        const float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) p[c] *= inv;
    }
}

void log_softmax_forward(float *logp, const float *logits, int B, int C) {
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *l = logp + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp((double)z[c] - mx);
        const float lse = mx + (float)log(sum);
        for (int c = 0; c < C; c++) l[c] = z[c] - lse;
    }
}

void softmax_backward(float *dlogits, const float *dprobs, const float *probs, int B, int C) {
    for (int b = 0; b < B; b++) {
        const float *g = dprobs + (size_t)b * C, *p = probs + (size_t)b * C;
        float *d = dlogits + (size_t)b * C;
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)g[c] * p[c];
        for (int c = 0; c < C; c++) d[c] += p[c] * (g[c] - (float)dot);
    }
}

double crossentropy_softmax(float *dlogits, int *correct, const float *logits, const int32_t *labels,
                            int B, int C, float scale) {
    double loss = 0.0;
    int n_correct = 0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        int arg = 0;
        for (int c = 1; c < C; c++) arg = z[c] > z[arg] ? c : arg;
        n_correct += arg == labels[b];
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp((double)z[c] - z[arg]);
        const double lse = z[arg] + log(sum);
        loss += lse - z[labels[b]];
        if (dlogits) {
            float *d = dlogits + (size_t)b * C;
            for (int c = 0; c < C; c++)
                d[c] += scale * ((float)exp((double)z[c] - lse) - (c == labels[b] ? 1.0f : 0.0f));
        }
    }
    if (correct) *correct = n_correct;
    return loss;
}
