/* The layers of the CPU core, llm.c style: each a *_forward / *_backward pair
 * of plain functions over flat float arrays, outputs first, inputs next,
 * sizes last. Backward functions ACCUMULATE (+=) into every gradient they
 * write (dinp, dweight, dbias); the caller zeroes them. Any gradient pointer
 * may be NULL to skip it. Functions that need scratch memory allocate it and
 * return UQ_ERR_NOMEM on failure; the others cannot fail.
 *
 * Input-gradient passes back-propagate T upstream vectors per image at once
 * (e.g. total, aleatoric and epistemic uncertainty): gradient arrays then hold
 * B*T rows, row n belonging to image n / T of the cached forward pass. */
#ifndef UQ_LAYERS_H
#define UQ_LAYERS_H

#include "common.h"

/* conv2d, stride 1, zero padding K/2 (K odd), optional fused ReLU.
 * inp (B,C,H,W), weight (OC,C,K,K), bias (OC), out (B,OC,H,W) */
uq_status conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int C, int H, int W, int OC, int K, int relu);
/* dout (B,OC,H,W) is the gradient of the conv output (after the ReLU mask).
 * dweight / dbias need inp; dinp (B,C,H,W) needs only weight, so for an
 * input-gradient pass call with dweight = dbias = inp = NULL and B = rows. */
uq_status conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight,
                          int B, int C, int H, int W, int OC, int K);

/* conv2d_backward of a conv whose (ReLU'd) output feeds a 2x2 max-pool, from the pool's side:
 * dpool (B*T, OC, H/2, W/2) the pool's output gradient, max_index and pooled (B, OC, H/2, W/2)
 * what maxpool2_forward made of this conv's output. The same as maxpool2_backward, the ReLU's
 * backward and conv2d_backward in a row, without making the conv's mostly-zero output gradient;
 * always the sparse path. Rows n of dinp (B*T, C, H, W) belong to image n / T; dweight / dbias
 * need T == 1. */
uq_status conv2d_pool_backward(float *dinp, float *dweight, float *dbias, const float *dpool,
                               const int32_t *max_index, const float *pooled, const float *inp,
                               const float *weight, int B, int T, int C, int H, int W, int OC, int K);

/* How conv2d_backward multiplies: "auto" (the default) lists the non-zeros of each row of dout
 * and takes a sparse path when they are few (behind a max-pool and a ReLU they are), else im2col
 * and GEMM; "dense" and "sparse" force one path (for tests and benchmarks). Both give the same
 * gradients up to float rounding. Under "dense" the model does not use conv2d_pool_backward
 * either. Returns 0, or -1 for an unknown name. */
int uq_set_conv_backward(const char *name);
const char *uq_conv_backward(void);

/* 2x2 max-pool, stride 2 (odd H/W: the last row/column is dropped, as PyTorch).
 * inp (B,C,H,W), out (B,C,H/2,W/2), max_index (B,C,H/2,W/2): index in the HxW plane */
void maxpool2_forward(float *out, int32_t *max_index, const float *inp, int B, int C, int H, int W);
/* dout (B*T,C,H/2,W/2) -> dinp (B*T,C,H,W) */
void maxpool2_backward(float *dinp, const float *dout, const int32_t *max_index,
                       int B, int T, int C, int H, int W);

/* dense: inp (B,n_in), weight (n_out,n_in) (PyTorch layout), bias (n_out), out (B,n_out) */
void dense_forward(float *out, const float *inp, const float *weight, const float *bias,
                   int B, int n_in, int n_out, int relu);
/* dout (B,n_out); dweight/dbias need inp; dinp (B,n_in) needs only weight */
void dense_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, const float *weight, int B, int n_in, int n_out);

/* ReLU backward in place: grad (B*T, n) is zeroed where out (B, n) <= 0. */
void relu_backward_inplace(float *grad, const float *out, int B, int T, size_t n);

/* softmax / log-softmax over the last axis: logits (B,C) -> (B,C) */
void softmax_forward(float *probs, const float *logits, int B, int C);
void log_softmax_forward(float *logp, const float *logits, int B, int C);
/* gradient through softmax: dlogits (B,C) += p * (dprobs - <dprobs, p>) */
void softmax_backward(float *dlogits, const float *dprobs, const float *probs, int B, int C);
/* cross-entropy of softmax(logits): returns the summed loss over the batch,
 * counts correct argmax predictions into *correct (may be NULL) and, if
 * dlogits is not NULL, accumulates scale * (p - onehot(label)) into it. */
double crossentropy_softmax(float *dlogits, int *correct, const float *logits, const int32_t *labels,
                            int B, int C, float scale);

/* optimizers over a flat parameter slab of n floats */
void adam_update(float *params, const float *grads, float *m, float *v, size_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step);
void sgd_update(float *params, const float *grads, float *momentum_buf, size_t n, float lr,
                float momentum, float weight_decay);

#endif
