/* Uncertainty of a deep ensemble and its gradients.
 *
 * For M member probability vectors p_m (C classes) of one image, with mean
 * p̄ = (1/M) Σ_m p_m:
 *   total      H[p̄]            = -Σ_c p̄_c log p̄_c
 *   aleatoric  E_m H[p_m]       = (1/M) Σ_m H[p_m]
 *   epistemic  total - aleatoric  (the mutual information between the
 *              prediction and the member index)
 * in nats (0 log 0 = 0). The gradients below are exact derivatives of these
 * quantities with respect to each member's logits; model.c carries them on
 * to the input pixels. */
#ifndef UQ_UNCERTAINTY_H
#define UQ_UNCERTAINTY_H

#include "common.h"
#include "model.h"

/* member_probs (M, N, C) -> per image: mean (N, C), pred (N), max_prob (N),
 * total, aleatoric, epistemic (N). Any output may be NULL. UQ_ERR_NOMEM if
 * its scratch row of C floats cannot be allocated. */
uq_status uq_decompose(float *mean, int32_t *pred, float *max_prob, float *total, float *aleatoric, float *epistemic,
                       const float *member_probs, int M, int N, int C);

typedef enum {
    UQ_TARGET_TOTAL = 0,
    UQ_TARGET_ALEATORIC = 1,
    UQ_TARGET_EPISTEMIC = 2,
    UQ_TARGET_MAX_PROB = 3, /* mean probability of the ensemble's predicted class */
    UQ_TARGET_PROB = 4,     /* mean probability of a given class */
    UQ_TARGET_LOGIT = 5     /* mean logit of a given class */
} uq_target_kind;

typedef struct {
    uq_target_kind kind;
    const int32_t *classes; /* (N,) class per image, for PROB and LOGIT; else NULL */
} uq_target;

/* From member logits (M, N, C): values (N, T) of each target and the upstream
 * gradients dlogits (M, N, T, C) of each target with respect to each member's
 * logits. probs is scratch of M*N*C floats. */
uq_status uq_target_gradients(float *dlogits, float *values, float *probs, const float *logits,
                              const uq_target *targets, int T, int M, int N, int C);

/* Gradients of T targets with respect to the input pixels of N images through
 * an ensemble of M networks with parameters params (M, n_params):
 * grads (N, T, input size) and values (N, T). Processes `chunk` images at a
 * time; all members' activations of a chunk are kept for the backward passes,
 * and each member back-propagates the T targets together. */
uq_status uq_input_gradients(float *grads, float *values, const uq_arch *arch, const float *params, int M,
                             const float *x, int N, const uq_target *targets, int T, int chunk);

#endif
