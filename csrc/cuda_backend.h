/* The CUDA backend of the core: a deep ensemble living on one GPU.
 *
 * Plain C interface (no CUDA types), implemented in the csrc .cu files and used by
 * python/uqattr/_ext/bind_cuda.c. A uq_cuda_model owns everything it uses on
 * the device: its stream, its cuBLAS handle, the (M, P) parameter slab with
 * the optimizer state, and workspaces that grow to the largest batch seen.
 * There is no global state; two models are independent (a model is not for
 * two threads at once: the binding serializes calls per model).
 *
 * All M members run in lockstep: one launch per layer covers every member
 * (strided-batched GEMMs over the slab), so an ensemble costs about as many
 * kernel launches as one network.
 *
 * Every function returns UQ_OK or a status with a message (uq_last_error):
 * UQ_ERR_CUDA carries "file:line: call: CUDA error string". Host pointers are
 * ordinary (pageable) memory; results are complete when a function returns,
 * except uq_cuda_train_steps, which only enqueues. */
#ifndef UQ_CUDA_BACKEND_H
#define UQ_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "common.h"
#include "model.h"
#include "uncertainty.h"

typedef struct uq_cuda_model uq_cuda_model;

/* Usable devices (0 without a driver or a GPU; never fails). With no device,
 * *why (if not NULL) gets the CUDA error string that says why. */
int uq_cuda_device_count(const char **why);
/* The CUDA runtime version compiled in, e.g. 13000 for 13.0. */
int uq_cuda_runtime_version(void);
/* name, memory and compute capability of a device */
uq_status uq_cuda_device_info(int device, char *name, size_t name_len, size_t *total_mem, int *major, int *minor);

/* A model of M members of `arch` on `device`, parameters zero until uploaded. */
uq_status uq_cuda_model_create(uq_cuda_model **out, const uq_arch *arch, int M, int device);
void uq_cuda_model_free(uq_cuda_model *md);
int uq_cuda_model_members(const uq_cuda_model *md);
int uq_cuda_model_device(const uq_cuda_model *md);
/* Fill every workspace with NaN before each call (checks that kernels write
 * every element they are said to; for tests, slower). */
void uq_cuda_set_poison(uq_cuda_model *md, int on);
/* TF32 tensor cores for the GEMMs (faster, ~1e-3 relative error; default off: FP32). */
uq_status uq_cuda_set_tf32(uq_cuda_model *md, int on);

/* parameters (M, P), host <-> device */
uq_status uq_cuda_upload_params(uq_cuda_model *md, const float *params);
uq_status uq_cuda_download_params(uq_cuda_model *md, float *params);

/* Member logits or probabilities out (M, N, C) of N images x (N, in_size),
 * `chunk` images at a time (<= 0: sized to the free device memory). */
uq_status uq_cuda_predict(uq_cuda_model *md, float *out, const float *x, int64_t N, int chunk, int logits);
/* Uncertainty decomposition on the device: member probabilities (M, N, C) and,
 * per image, mean (N, C), pred, max_prob, total, aleatoric, epistemic (N), as
 * uq_decompose. Any output may be NULL. */
uq_status uq_cuda_decompose(uq_cuda_model *md, float *member_probs, float *mean, int32_t *pred, float *max_prob,
                            float *total, float *aleatoric, float *epistemic, const float *x, int64_t N, int chunk);
/* As uq_input_gradients over all members (member -1) or over member `member`
 * alone (the single-model baseline, as uq_input_gradients with that row of
 * the slab and M = 1): grads (N, T, in_size), values (N, T). 1 <= T <= 16. */
uq_status uq_cuda_input_gradients(uq_cuda_model *md, int member, float *grads, float *values, const float *x, int N,
                                  const uq_target *targets, int T, int chunk);
/* dx (N, T, in_size) = sum over members of the vector-Jacobian products of
 * dlogits (M, N, T, C) with each member's logits at x (N, in_size). */
uq_status uq_cuda_vjp(uq_cuda_model *md, float *dx, const float *x, const float *dlogits, int N, int T, int chunk);

/* Optimizer for the training calls; zeroes its state (m, v). */
uq_status uq_cuda_set_optimizer(uq_cuda_model *md, const uq_optimizer *opt);
/* Adam's m and v (SGD: momentum in m, v untouched), each (M, P); either may be NULL. */
uq_status uq_cuda_download_optimizer_state(uq_cuda_model *md, float *m, float *v);

/* Per member m, the parameter gradient dparams (M, P) of the mean
 * cross-entropy on its own batch x (M, B, in_size), y (M, B); loss (M) the
 * mean loss. No update. */
uq_status uq_cuda_gradients(uq_cuda_model *md, float *dparams, double *loss, const float *x, const int32_t *y, int B);
/* One optimizer step of every member on its own batch x (M, B, in_size),
 * y (M, B) (as uq_train_step, 1-based step): summed loss and correct count
 * per member. */
uq_status uq_cuda_train_step(uq_cuda_model *md, const float *x, const int32_t *y, int B, int64_t step, float lr,
                             double *loss_sum, int64_t *n_correct);

/* Training with the data resident on the device: upload a training set
 * once, then per epoch the members' orders (M, N) (indices into the set),
 * then enqueue steps: step s (0-based within the epoch) trains member m on
 * rows order[m, s*batch : s*batch + batch] (the last batch may be short),
 * with 1-based optimizer step first_step + i and learning rate lrs[i].
 * Nothing is copied back and nothing waits: uq_cuda_epoch_stats waits and
 * returns the loss sums and correct counts accumulated since the last call. */
uq_status uq_cuda_set_data(uq_cuda_model *md, const float *x, const int32_t *y, int64_t N);
uq_status uq_cuda_set_orders(uq_cuda_model *md, const int32_t *orders);
uq_status uq_cuda_train_steps(uq_cuda_model *md, int64_t first_batch, int count, int batch_size, int64_t first_step,
                              const float *lrs);
uq_status uq_cuda_epoch_stats(uq_cuda_model *md, double *loss_sum, int64_t *n_correct);
uq_status uq_cuda_synchronize(uq_cuda_model *md);

#ifdef __cplusplus
}
#endif

#endif
