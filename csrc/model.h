/* A CNN described by a short spec string, e.g. "conv32-pool-conv64-pool-fc128-fc10":
 *   convN[kK]  conv2d to N channels, KxK (default 3, odd), stride 1, pad K/2, then ReLU
 *   pool       2x2 max-pool, stride 2
 *   fcN        dense to N units; ReLU after every fc but the last, whose N is the
 *              number of classes (the network's logits). Flatten is implicit.
 * Parameters of one network live in one flat slab, layer by layer, each layer's
 * weight (PyTorch layout: conv (O,I,kh,kw), dense (out,in)) followed by its bias. */
#ifndef UQ_MODEL_H
#define UQ_MODEL_H

#include "common.h"

#define UQ_MAX_LAYERS 32

typedef enum { UQ_LAYER_CONV, UQ_LAYER_POOL, UQ_LAYER_DENSE } uq_layer_kind;

typedef struct {
    uq_layer_kind kind;
    char name[16];         /* "conv1", "fc2", "pool1": the state_dict prefix */
    int relu;              /* ReLU fused after this layer */
    int in_c, in_h, in_w;  /* input shape per image (dense: in_c = features, h = w = 1) */
    int out_c, out_h, out_w;
    int k;                 /* conv kernel size */
    size_t w_off, n_w;     /* weight: offset into the slab, count */
    size_t b_off, n_b;     /* bias */
    size_t in_size, out_size; /* floats per image */
} uq_layer;

typedef struct {
    int n_layers;
    uq_layer layer[UQ_MAX_LAYERS];
    size_t n_params;
    int in_c, in_h, in_w, n_classes;
    size_t max_size; /* largest per-image activation, input included */
} uq_arch;

/* Parses `spec` for inputs of shape (in_c, in_h, in_w). On a bad spec returns
 * UQ_ERR_VALUE with a message naming the offending token. */
uq_status uq_arch_parse(uq_arch *arch, const char *spec, int in_c, int in_h, int in_w);

/* PyTorch's default init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
 * (Kaiming-uniform with a = sqrt(5)), drawn from PCG32(seed). */
void uq_arch_init_params(const uq_arch *arch, float *params, uint64_t seed);

/* Activations of a forward pass over up to `capacity` images, plus gradient
 * buffers for up to `capacity` x `max_targets` backward rows (none if
 * max_targets is 0: then pass buffers to uq_model_backward_into). Reusable. */
typedef struct {
    int capacity, max_targets;
    float *act[UQ_MAX_LAYERS];
    int32_t *argmax[UQ_MAX_LAYERS];
    float *grad[2];
} uq_workspace;

uq_status uq_workspace_alloc(uq_workspace *ws, const uq_arch *arch, int capacity, int max_targets);
void uq_workspace_free(uq_workspace *ws);

/* Forward B images x (B, in_c, in_h, in_w); logits end in ws->act[n_layers-1]. */
uq_status uq_model_forward(const uq_arch *arch, const float *params, const float *x, int B, uq_workspace *ws);
static inline const float *uq_model_logits(const uq_arch *arch, const uq_workspace *ws) {
    return ws->act[arch->n_layers - 1];
}

/* Back-propagates dlogits (B*T, n_classes) through the cached forward pass.
 * dparams (n_params, accumulated; only with T == 1) and dx (B*T, input size,
 * accumulated) may each be NULL. */
uq_status uq_model_backward(const uq_arch *arch, const float *params, float *dparams, float *dx,
                            const float *x, const float *dlogits, int B, int T, uq_workspace *ws);
/* The same with caller-owned gradient buffers, each of B*T*max_size floats,
 * so that several cached forward passes can share one pair. */
uq_status uq_model_backward_into(const uq_arch *arch, const float *params, float *dparams, float *dx,
                                 const float *x, const float *dlogits, int B, int T, const uq_workspace *ws,
                                 float *grad_a, float *grad_b);

/* Optimizer settings; state arrays m, v (Adam) or m (SGD momentum) of n_params. */
typedef enum { UQ_OPT_ADAM = 0, UQ_OPT_SGD = 1 } uq_opt_kind;
typedef struct {
    uq_opt_kind kind;
    float lr, beta1, beta2, eps, momentum, weight_decay;
} uq_optimizer;

/* One optimizer step on a minibatch: forward, mean cross-entropy, backward,
 * update. grads is scratch of n_params floats. `step` is 1-based (Adam's bias
 * correction). Reports the summed loss and the count of correct predictions. */
uq_status uq_train_step(const uq_arch *arch, float *params, float *grads, float *m, float *v, int64_t step,
                        const uq_optimizer *opt, const float *x, const int32_t *y, int B,
                        uq_workspace *ws, double *loss_sum, int *n_correct);

/* Logits of N images through one network, in chunks of the workspace capacity. */
uq_status uq_model_logits_batched(const uq_arch *arch, const float *params, const float *x, int64_t N,
                                  float *logits, uq_workspace *ws);

#endif
