/* The device model (cuda_backend.h): an ensemble of M networks of one spec on
 * one GPU, all members in lockstep, orchestrating the kernels of the other
 * .cu files and cuBLAS the way model.c orchestrates the CPU layers.
 *
 * Memory: the (M, P) parameter slab (plus gradients and optimizer state once
 * training starts), a resident training set if one was uploaded, and a
 * workspace for up to `cap` images (forward) and `rows_cap` backward rows
 * (images x targets) per member, grown on demand and kept between calls.
 * Everything runs on the model's own stream; results reach the host through
 * copies on that stream, and every call but uq_cuda_train_steps waits for
 * them before returning. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_common.h"

enum { MAX_WS = 96 }; /* x, y, act and argmax per layer (<= 2 * UQ_MAX_LAYERS), 12 more */

struct uq_cuda_model {
    uq_arch arch;
    int M, device, poison;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *params;               /* (M, P) */
    float *grads, *opt_m, *opt_v; /* (M, P), allocated when training starts */
    uq_optimizer opt;
    int have_opt;
    double *loss_acc;     /* (2M): [0, M) epoch accumulators, [M, 2M) single-call scratch */
    int64_t *correct_acc; /* (2M) */
    /* workspace (see ensure_workspace for the sizes) */
    int cap, rows_cap;
    void *ws_ptr[MAX_WS];
    size_t ws_bytes[MAX_WS];
    int n_ws;
    size_t ws_total;
    float *x;        /* (M, cap, in_size): per-member batches, or (cap, in_size) shared images */
    int32_t *y;      /* (M, cap) */
    float *act[UQ_MAX_LAYERS];
    int32_t *argmax[UQ_MAX_LAYERS];
    float *col;      /* (M, CKK, cap * HW), the largest conv layer */
    float *tmp;      /* (M, OC, max(cap, rows_cap) * HW) */
    float *probs;    /* (M, cap, C) */
    float *mean;     /* (cap, C) */
    float *stats;    /* (4, cap): max_prob, total, aleatoric, epistemic */
    int32_t *pred;   /* (cap) */
    float *grad[2];  /* (M, rows_cap, max_size) */
    float *dcol;     /* (M, CKK, rows_cap * HW) */
    float *dx;       /* (rows_cap, in_size) */
    float *values;   /* (rows_cap) */
    int32_t *cls;    /* (rows_cap) */
    /* resident training set */
    float *data_x;   /* (data_n, in_size) */
    int32_t *data_y; /* (data_n) */
    int32_t *orders; /* (M, data_n) */
    int64_t data_n;
    int have_orders;
};

/* ---- kernels ----------------------------------------------------------------------------- */

/* x[m][b][j] = data_x[order[m][first + b]][j], y[m][b] = data_y[...] */
__global__ void gather_batch_kernel(float *x, int32_t *y, const float *data_x, const int32_t *data_y,
                                    const int32_t *order, int64_t n_data, int64_t first, int M, int B,
                                    int64_t in_size) {
    const int64_t n = (int64_t)M * B * in_size;
    GRID_STRIDE_LOOP(i, n) {
        const int64_t mb = i / in_size;
        const int64_t j = i - mb * in_size;
        const int m = (int)(mb / B), b = (int)(mb - (int64_t)m * B);
        const int64_t src = order[(int64_t)m * n_data + first + b];
        x[i] = data_x[src * in_size + j];
        if (j == 0) y[mb] = data_y[src];
    }
}

uq_status gather_batch_cuda(float *x, int32_t *y, const float *data_x, const int32_t *data_y, const int32_t *order,
                            int64_t n_data, int64_t first, int M, int B, int64_t in_size, cudaStream_t stream) {
    const int64_t n = (int64_t)M * B * in_size;
    gather_batch_kernel<<<uq_grid(n), UQ_BLOCK, 0, stream>>>(x, y, data_x, data_y, order, n_data, first, M, B,
                                                             in_size);
    launchCheck();
    return UQ_OK;
}

/* ---- sizes and memory -------------------------------------------------------------------- */

static size_t in_size_of(const uq_arch *a) { return (size_t)a->in_c * a->in_h * a->in_w; }

/* largest per-image im2col block and conv output over the conv layers */
static void conv_sizes(const uq_arch *a, size_t *col, size_t *out) {
    *col = 0, *out = 0;
    for (int l = 0; l < a->n_layers; l++) {
        const uq_layer *L = &a->layer[l];
        if (L->kind != UQ_LAYER_CONV) continue;
        const size_t hw = (size_t)L->in_h * L->in_w;
        const size_t c = (size_t)L->in_c * L->k * L->k * hw, o = (size_t)L->out_c * hw;
        if (c > *col) *col = c;
        if (o > *out) *out = o;
    }
}

/* device bytes of a workspace for `cap` images and `rows` backward rows per member */
static size_t workspace_bytes(const uq_cuda_model *md, size_t cap, size_t rows) {
    const uq_arch *a = &md->arch;
    const size_t M = md->M, C = a->n_classes, in = in_size_of(a);
    size_t col, out;
    conv_sizes(a, &col, &out);
    size_t acts = 0;
    for (int l = 0; l < a->n_layers; l++)
        acts += a->layer[l].out_size * (a->layer[l].kind == UQ_LAYER_POOL ? 2 : 1);
    const size_t per_image = M * (in + 1 + acts + col + C) + C + 5;
    const size_t per_row = M * (2 * a->max_size + col) + in + 2;
    const size_t tmp = M * out * (cap > rows ? cap : rows);
    return 4 * (cap * per_image + rows * per_row + tmp);
}

static uq_status ws_alloc(uq_cuda_model *md, void **p, size_t bytes) {
    if (md->n_ws == MAX_WS) return uq_fail(UQ_ERR_VALUE, "CUDA workspace: too many buffers");
    if (bytes == 0) bytes = 256;
    cudaCheck(cudaMalloc(p, bytes));
    md->ws_ptr[md->n_ws] = *p;
    md->ws_bytes[md->n_ws++] = bytes;
    md->ws_total += bytes;
    return UQ_OK;
}

static void free_workspace(uq_cuda_model *md) {
    for (int i = 0; i < md->n_ws; i++) cudaFree(md->ws_ptr[i]);
    md->n_ws = 0;
    md->ws_total = 0;
    md->cap = md->rows_cap = 0;
    md->x = md->col = md->tmp = md->probs = md->mean = md->stats = NULL;
    md->grad[0] = md->grad[1] = md->dcol = md->dx = md->values = NULL;
    md->y = md->pred = md->cls = NULL;
    for (int l = 0; l < UQ_MAX_LAYERS; l++) md->act[l] = NULL, md->argmax[l] = NULL;
}

#define WS(ptr, n, T) uqCheck(ws_alloc(md, (void **)&(ptr), sizeof(T) * (size_t)(n)))

static uq_status alloc_workspace(uq_cuda_model *md, int cap, int rows) {
    const uq_arch *a = &md->arch;
    const size_t M = md->M, C = a->n_classes, in = in_size_of(a);
    size_t col, out;
    conv_sizes(a, &col, &out);
    WS(md->x, M * cap * in, float);
    WS(md->y, M * cap, int32_t);
    for (int l = 0; l < a->n_layers; l++) {
        WS(md->act[l], M * cap * a->layer[l].out_size, float);
        if (a->layer[l].kind == UQ_LAYER_POOL) WS(md->argmax[l], M * cap * a->layer[l].out_size, int32_t);
    }
    WS(md->col, M * cap * col, float);
    WS(md->tmp, M * out * (size_t)(cap > rows ? cap : rows), float);
    WS(md->probs, M * cap * C, float);
    WS(md->mean, (size_t)cap * C, float);
    WS(md->stats, 4 * (size_t)cap, float);
    WS(md->pred, cap, int32_t);
    if (rows > 0) {
        WS(md->grad[0], M * rows * a->max_size, float);
        WS(md->grad[1], M * rows * a->max_size, float);
        WS(md->dcol, M * rows * col, float);
        WS(md->dx, (size_t)rows * in, float);
        WS(md->values, rows, float);
        WS(md->cls, rows, int32_t);
    }
    md->cap = cap, md->rows_cap = rows;
    return UQ_OK;
}

/* a workspace for at least `cap` images and `rows` backward rows; grows, never shrinks */
static uq_status ensure_workspace(uq_cuda_model *md, int cap, int rows) {
    if (cap <= md->cap && rows <= md->rows_cap) return UQ_OK;
    if (md->cap > cap) cap = md->cap;
    if (md->rows_cap > rows) rows = md->rows_cap;
    cudaCheck(cudaStreamSynchronize(md->stream)); /* buffers may still be in use */
    free_workspace(md);
    uq_status st = alloc_workspace(md, cap, rows);
    if (st) {
        char why[400];
        snprintf(why, sizeof why, "%s", uq_last_error()); /* uq_fail writes the buffer it reads */
        free_workspace(md);
        const double gib = workspace_bytes(md, cap, rows) / 1073741824.0;
        return uq_fail(st, "%s (allocating a %.2f GiB workspace for %d images, %d rows; use a smaller chunk)", why,
                       gib, cap, rows);
    }
    return UQ_OK;
}

/* images per chunk: the caller's, else as many as fit in min(free / 2, 2 GiB)
 * (or in the workspace already allocated, if larger) */
static int pick_chunk(uq_cuda_model *md, int64_t N, int chunk, int T) {
    if (chunk <= 0) {
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
            cudaGetLastError();
            free_b = (size_t)2 << 30;
        }
        size_t budget = free_b / 2 < ((size_t)2 << 30) ? free_b / 2 : ((size_t)2 << 30);
        if (md->ws_total > budget) budget = md->ws_total;
        const size_t per = workspace_bytes(md, 1, T);
        int64_t c = (int64_t)(budget / (per ? per : 1));
        if (c > 65536) c = 65536;
        chunk = c < 1 ? 1 : (int)c;
    }
    return (int64_t)chunk < N ? chunk : (int)N;
}

static uq_status poison_workspace(uq_cuda_model *md) {
    if (!md->poison) return UQ_OK;
    for (int i = 0; i < md->n_ws; i++) cudaCheck(cudaMemsetAsync(md->ws_ptr[i], 0xFF, md->ws_bytes[i], md->stream));
    if (md->grads)
        cudaCheck(cudaMemsetAsync(md->grads, 0xFF, sizeof(float) * md->M * md->arch.n_params, md->stream));
    return UQ_OK;
}

/* ---- forward and backward of all members ------------------------------------------------- */

/* Forward of B images through M networks with parameters params (M, P) (the
 * model's slab, or one member's row of it: M <= md->M): x (M, B, in_size) with
 * member stride x_ms (0: the same B images for every member). Logits end in
 * act[n_layers-1], (M, B, C). */
static uq_status forward(uq_cuda_model *md, const float *params, int M, const float *x, int64_t x_ms, int B) {
    const uq_arch *a = &md->arch;
    const int64_t P = (int64_t)a->n_params;
    cudaStream_t s = md->stream;
    const float *inp = x;
    int64_t in_ms = x_ms;
    for (int l = 0; l < a->n_layers; l++) {
        const uq_layer *L = &a->layer[l];
        float *out = md->act[l];
        const float *w = params + L->w_off, *bias = params + L->b_off;
        const int C = L->in_c, H = L->in_h, W = L->in_w;
        switch (L->kind) {
        case UQ_LAYER_CONV: {
            const int K = L->k, OC = L->out_c, HW = H * W, CKK = C * K * K, BHW = B * HW;
            const int nm = in_ms == 0 ? 1 : M;
            uqCheck(im2col_cuda(md->col, inp, in_ms, nm, B, C, H, W, K, s));
            /* tmp_m (OC, B*HW) = W_m (OC, CKK) @ col_m (CKK, B*HW) */
            uqCheck(uq_cuda_sgemm(md->blas, 0, 0, OC, BHW, CKK, 1.0f, w, CKK, P, md->col, BHW,
                                  nm == 1 ? 0 : (int64_t)CKK * BHW, 0.0f, md->tmp, BHW, (int64_t)OC * BHW, M));
            uqCheck(conv_bias_relu_cuda(out, md->tmp, bias, P, M, B, OC, HW, L->relu, s));
            break;
        }
        case UQ_LAYER_POOL:
            uqCheck(maxpool2_forward_cuda(out, md->argmax[l], inp, in_ms, M, B, C, H, W, s));
            break;
        case UQ_LAYER_DENSE: {
            const int n_in = L->in_c, n_out = L->out_c;
            /* out_m (B, n_out) = inp_m (B, n_in) @ W_m^T */
            uqCheck(uq_cuda_sgemm(md->blas, 0, 1, B, n_out, n_in, 1.0f, inp, n_in, in_ms, w, n_in, P, 0.0f, out,
                                  n_out, (int64_t)B * n_out, M));
            uqCheck(dense_bias_relu_cuda(out, bias, P, M, B, n_out, L->relu, s));
            break;
        }
        }
        inp = out;
        in_ms = (int64_t)B * L->out_size;
    }
    return UQ_OK;
}

/* Backward of R = B*T rows per member from dlogits in grad[0], (M, R, C),
 * through the cached forward of B images per member (params, M and x as given
 * to forward). want_dparams (T == 1, the whole slab): parameter gradients into
 * md->grads (assigned). want_dx: input gradients summed over members into
 * md->dx, (R, in_size). */
static uq_status backward(uq_cuda_model *md, const float *params, int M, const float *x, int64_t x_ms, int B, int T,
                          int want_dparams, int want_dx) {
    const uq_arch *a = &md->arch;
    const int R = B * T;
    const int64_t P = (int64_t)a->n_params;
    cudaStream_t s = md->stream;
    if (want_dparams && (T != 1 || params != md->params || M != md->M))
        return uq_fail(UQ_ERR_VALUE, "parameter gradients need one target per image and the whole ensemble");
    int cur = 0;
    for (int l = a->n_layers - 1; l >= 0; l--) {
        const uq_layer *L = &a->layer[l];
        float *g = md->grad[cur], *dinp = md->grad[1 - cur];
        const int need_dinp = l > 0 || want_dx;
        const float *inp = l > 0 ? md->act[l - 1] : x;
        const int64_t in_ms = l > 0 ? (int64_t)B * L->in_size : x_ms;
        const float *w = params + L->w_off;
        float *dw = want_dparams ? md->grads + L->w_off : NULL;
        float *db = want_dparams ? md->grads + L->b_off : NULL;
        const int C = L->in_c, H = L->in_h, W = L->in_w;
        switch (L->kind) {
        case UQ_LAYER_CONV: {
            const int K = L->k, OC = L->out_c, HW = H * W, CKK = C * K * K, RHW = R * HW;
            /* gp_m (OC, R*HW) = relu'(g_m), permuted */
            uqCheck(conv_relu_backward_cuda(md->tmp, g, md->act[l], M, R, T, OC, HW, L->relu, s));
            if (want_dparams) {
                const int nm = in_ms == 0 ? 1 : M;
                uqCheck(conv_bias_backward_cuda(db, md->tmp, P, M, OC, RHW, s));
                uqCheck(im2col_cuda(md->col, inp, in_ms, nm, B, C, H, W, K, s));
                /* dW_m (OC, CKK) = gp_m (OC, B*HW) @ col_m^T (B*HW, CKK) */
                uqCheck(uq_cuda_sgemm(md->blas, 0, 1, OC, CKK, RHW, 1.0f, md->tmp, RHW, (int64_t)OC * RHW, md->col,
                                      RHW, nm == 1 ? 0 : (int64_t)CKK * RHW, 0.0f, dw, CKK, P, M));
            }
            if (need_dinp) {
                /* dcol_m (CKK, R*HW) = W_m^T (CKK, OC) @ gp_m (OC, R*HW) */
                uqCheck(uq_cuda_sgemm(md->blas, 1, 0, CKK, RHW, OC, 1.0f, w, CKK, P, md->tmp, RHW,
                                      (int64_t)OC * RHW, 0.0f, md->dcol, RHW, (int64_t)CKK * RHW, M));
                uqCheck(col2im_cuda(dinp, md->dcol, M, R, C, H, W, K, s));
            }
            break;
        }
        case UQ_LAYER_POOL:
            if (need_dinp) uqCheck(maxpool2_backward_cuda(dinp, g, md->argmax[l], M, R, T, C, H, W, s));
            break;
        case UQ_LAYER_DENSE: {
            const int n_in = L->in_c, n_out = L->out_c;
            if (L->relu) uqCheck(relu_backward_cuda(g, md->act[l], M, R, T, n_out, s));
            if (want_dparams) {
                uqCheck(dense_bias_backward_cuda(db, g, P, M, R, n_out, s));
                /* dW_m (n_out, n_in) = g_m^T (n_out, R) @ inp_m (R, n_in) */
                uqCheck(uq_cuda_sgemm(md->blas, 1, 0, n_out, n_in, R, 1.0f, g, n_out, (int64_t)R * n_out, inp, n_in,
                                      in_ms, 0.0f, dw, n_in, P, M));
            }
            if (need_dinp)
                /* dinp_m (R, n_in) = g_m (R, n_out) @ W_m (n_out, n_in) */
                uqCheck(uq_cuda_sgemm(md->blas, 0, 0, R, n_in, n_out, 1.0f, g, n_out, (int64_t)R * n_out, w, n_in, P,
                                      0.0f, dinp, n_in, (int64_t)R * n_in, M));
            break;
        }
        }
        cur = 1 - cur;
    }
    /* grad[cur] now holds each member's input gradient, (M, R, in_size) */
    if (want_dx) uqCheck(member_sum_cuda(md->dx, md->grad[cur], M, (int64_t)R * in_size_of(a), s));
    return UQ_OK;
}

static uq_status ensure_training(uq_cuda_model *md) {
    const size_t bytes = sizeof(float) * md->M * md->arch.n_params;
    if (!md->grads) cudaCheck(cudaMalloc((void **)&md->grads, bytes));
    if (!md->opt_m) {
        cudaCheck(cudaMalloc((void **)&md->opt_m, bytes));
        cudaCheck(cudaMemsetAsync(md->opt_m, 0, bytes, md->stream));
    }
    if (!md->opt_v) {
        cudaCheck(cudaMalloc((void **)&md->opt_v, bytes));
        cudaCheck(cudaMemsetAsync(md->opt_v, 0, bytes, md->stream));
    }
    return UQ_OK;
}

/* forward, cross-entropy into the accumulators at acc (M each), backward,
 * and (if step > 0) the optimizer update */
static uq_status train_step_dev(uq_cuda_model *md, const float *x, const int32_t *y, int B, int64_t step, float lr,
                                int acc) {
    const uq_arch *a = &md->arch;
    const int M = md->M, C = a->n_classes;
    const int64_t n = (int64_t)M * a->n_params;
    uqCheck(forward(md, md->params, M, x, (int64_t)B * in_size_of(a), B));
    uqCheck(crossentropy_cuda(md->grad[0], md->loss_acc + acc, md->correct_acc + acc, md->act[a->n_layers - 1], y, M,
                              B, C, 1.0f / B, md->stream));
    uqCheck(backward(md, md->params, M, x, (int64_t)B * in_size_of(a), B, 1, 1, 0));
    if (step <= 0) return UQ_OK;
    const uq_optimizer *o = &md->opt;
    if (o->kind == UQ_OPT_ADAM)
        return adam_update_cuda(md->params, md->grads, md->opt_m, md->opt_v, n, lr, o->beta1, o->beta2, o->eps,
                                o->weight_decay, step, md->stream);
    return sgd_update_cuda(md->params, md->grads, md->opt_m, n, lr, o->momentum, o->weight_decay, md->stream);
}

/* ---- the API ----------------------------------------------------------------------------- */

#define ENTER(md) cudaCheck(cudaSetDevice((md)->device))

extern "C" void uq_cuda_model_free(uq_cuda_model *md) {
    if (!md) return;
    cudaSetDevice(md->device);
    if (md->stream) cudaStreamSynchronize(md->stream);
    free_workspace(md);
    cudaFree(md->params);
    cudaFree(md->grads);
    cudaFree(md->opt_m);
    cudaFree(md->opt_v);
    cudaFree(md->loss_acc);
    cudaFree(md->correct_acc);
    cudaFree(md->data_x);
    cudaFree(md->data_y);
    cudaFree(md->orders);
    if (md->blas) cublasDestroy(md->blas);
    if (md->stream) cudaStreamDestroy(md->stream);
    cudaGetLastError(); /* nothing here may leave an error for the next caller */
    free(md);
}

static uq_status create(uq_cuda_model *md) {
    int n = 0;
    cudaCheck(cudaGetDeviceCount(&n));
    if (md->device < 0 || md->device >= n)
        return uq_fail(UQ_ERR_VALUE, "CUDA device %d does not exist (%d device%s found)", md->device, n,
                       n == 1 ? "" : "s");
    ENTER(md);
    cudaCheck(cudaStreamCreateWithFlags(&md->stream, cudaStreamNonBlocking));
    cublasCheck(cublasCreate(&md->blas));
    cublasCheck(cublasSetStream(md->blas, md->stream));
    cublasCheck(cublasSetMathMode(md->blas, CUBLAS_DEFAULT_MATH)); /* FP32, no TF32 */
    const size_t M = md->M;
    cudaCheck(cudaMalloc((void **)&md->params, sizeof(float) * M * md->arch.n_params));
    cudaCheck(cudaMemsetAsync(md->params, 0, sizeof(float) * M * md->arch.n_params, md->stream));
    cudaCheck(cudaMalloc((void **)&md->loss_acc, sizeof(double) * 2 * M));
    cudaCheck(cudaMalloc((void **)&md->correct_acc, sizeof(int64_t) * 2 * M));
    cudaCheck(cudaMemsetAsync(md->loss_acc, 0, sizeof(double) * 2 * M, md->stream));
    cudaCheck(cudaMemsetAsync(md->correct_acc, 0, sizeof(int64_t) * 2 * M, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_model_create(uq_cuda_model **out, const uq_arch *arch, int M, int device) {
    *out = NULL;
    if (M < 1) return uq_fail(UQ_ERR_VALUE, "an ensemble needs at least one member, got %d", M);
    uq_cuda_model *md = (uq_cuda_model *)calloc(1, sizeof *md);
    if (!md) return uq_fail(UQ_ERR_NOMEM, "out of memory for a CUDA model");
    md->arch = *arch;
    md->M = M;
    md->device = device;
    uq_status st = create(md);
    if (st) {
        uq_cuda_model_free(md);
        return st;
    }
    *out = md;
    return UQ_OK;
}

extern "C" int uq_cuda_model_members(const uq_cuda_model *md) { return md->M; }
extern "C" int uq_cuda_model_device(const uq_cuda_model *md) { return md->device; }
extern "C" void uq_cuda_set_poison(uq_cuda_model *md, int on) { md->poison = on; }

extern "C" uq_status uq_cuda_set_tf32(uq_cuda_model *md, int on) {
    ENTER(md);
    cublasCheck(cublasSetMathMode(md->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_upload_params(uq_cuda_model *md, const float *params) {
    ENTER(md);
    cudaCheck(cudaMemcpyAsync(md->params, params, sizeof(float) * md->M * md->arch.n_params, cudaMemcpyHostToDevice,
                              md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_download_params(uq_cuda_model *md, float *params) {
    ENTER(md);
    cudaCheck(cudaMemcpyAsync(params, md->params, sizeof(float) * md->M * md->arch.n_params, cudaMemcpyDeviceToHost,
                              md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

/* logits of M networks (params (M, P)) on a chunk of B host images x (shared
 * by all members) in act[last], (M, B, C) */
static uq_status forward_chunk(uq_cuda_model *md, const float *params, int M, const float *x, int B) {
    uqCheck(poison_workspace(md));
    cudaCheck(cudaMemcpyAsync(md->x, x, sizeof(float) * B * in_size_of(&md->arch), cudaMemcpyHostToDevice,
                              md->stream));
    return forward(md, params, M, md->x, 0, B);
}

extern "C" uq_status uq_cuda_predict(uq_cuda_model *md, float *out, const float *x, int64_t N, int chunk, int logits) {
    ENTER(md);
    const uq_arch *a = &md->arch;
    const int M = md->M, C = a->n_classes;
    if (N < 1) return UQ_OK;
    chunk = pick_chunk(md, N, chunk, 0);
    uqCheck(ensure_workspace(md, chunk, 0));
    for (int64_t i = 0; i < N; i += chunk) {
        const int B = (int)(N - i < chunk ? N - i : chunk);
        uqCheck(forward_chunk(md, md->params, M, x + i * in_size_of(a), B));
        const float *z = md->act[a->n_layers - 1];
        if (!logits) {
            uqCheck(softmax_forward_cuda(md->probs, z, (int64_t)M * B, C, md->stream));
            z = md->probs;
        }
        /* (M, B, C) on the device -> rows [i, i + B) of each member's (N, C) block */
        cudaCheck(cudaMemcpy2DAsync(out + i * C, sizeof(float) * N * C, z, sizeof(float) * B * C,
                                    sizeof(float) * B * C, M, cudaMemcpyDeviceToHost, md->stream));
    }
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_decompose(uq_cuda_model *md, float *member_probs, float *mean, int32_t *pred,
                                       float *max_prob, float *total, float *aleatoric, float *epistemic,
                                       const float *x, int64_t N, int chunk) {
    ENTER(md);
    const uq_arch *a = &md->arch;
    const int M = md->M, C = a->n_classes;
    if (N < 1) return UQ_OK;
    chunk = pick_chunk(md, N, chunk, 0);
    uqCheck(ensure_workspace(md, chunk, 0));
    cudaStream_t s = md->stream;
    for (int64_t i = 0; i < N; i += chunk) {
        const int B = (int)(N - i < chunk ? N - i : chunk);
        uqCheck(forward_chunk(md, md->params, M, x + i * in_size_of(a), B));
        uqCheck(softmax_forward_cuda(md->probs, md->act[a->n_layers - 1], (int64_t)M * B, C, s));
        float *st = md->stats;
        uqCheck(decompose_cuda(md->mean, md->pred, st, st + B, st + 2 * B, st + 3 * B, md->probs, M, B, C, s));
        if (member_probs)
            cudaCheck(cudaMemcpy2DAsync(member_probs + i * C, sizeof(float) * N * C, md->probs, sizeof(float) * B * C,
                                        sizeof(float) * B * C, M, cudaMemcpyDeviceToHost, s));
        if (mean)
            cudaCheck(cudaMemcpyAsync(mean + i * C, md->mean, sizeof(float) * B * C, cudaMemcpyDeviceToHost, s));
        if (pred) cudaCheck(cudaMemcpyAsync(pred + i, md->pred, sizeof(int32_t) * B, cudaMemcpyDeviceToHost, s));
        float *outs[4] = {max_prob, total, aleatoric, epistemic};
        for (int k = 0; k < 4; k++)
            if (outs[k]) cudaCheck(cudaMemcpyAsync(outs[k] + i, st + k * B, sizeof(float) * B, cudaMemcpyDeviceToHost, s));
    }
    cudaCheck(cudaStreamSynchronize(s));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_input_gradients(uq_cuda_model *md, int member, float *grads, float *values,
                                             const float *x, int N, const uq_target *targets, int T, int chunk) {
    ENTER(md);
    const uq_arch *a = &md->arch;
    const int C = a->n_classes;
    const size_t in = in_size_of(a);
    if (T < 1 || T > 16) return uq_fail(UQ_ERR_VALUE, "between 1 and 16 targets per call, got %d", T);
    if (member < -1 || member >= md->M)
        return uq_fail(UQ_ERR_VALUE, "member %d out of range for an ensemble of %d", member, md->M);
    if (N < 1) return UQ_OK;
    /* the whole ensemble, or member k alone (an ensemble of one: its row of the slab) */
    const int M = member < 0 ? md->M : 1;
    const float *params = member < 0 ? md->params : md->params + (size_t)member * a->n_params;
    uq_cuda_targets tg;
    memset(&tg, 0, sizeof tg);
    tg.T = T;
    for (int t = 0; t < T; t++) tg.kind[t] = targets[t].kind, tg.has_cls[t] = targets[t].classes != NULL;
    chunk = pick_chunk(md, N, chunk, T);
    uqCheck(ensure_workspace(md, chunk, chunk * T));
    cudaStream_t s = md->stream;
    for (int i = 0; i < N; i += chunk) {
        const int B = N - i < chunk ? N - i : chunk;
        uqCheck(forward_chunk(md, params, M, x + (size_t)i * in, B));
        for (int t = 0; t < T; t++)
            if (targets[t].classes)
                cudaCheck(cudaMemcpyAsync(md->cls + (size_t)t * B, targets[t].classes + i, sizeof(int32_t) * B,
                                          cudaMemcpyHostToDevice, s));
        uqCheck(target_gradients_cuda(md->grad[0], md->values, md->probs, md->mean, md->act[a->n_layers - 1], md->cls,
                                      tg, M, B, C, s));
        uqCheck(backward(md, params, M, md->x, 0, B, T, 0, 1));
        cudaCheck(cudaMemcpyAsync(values + (size_t)i * T, md->values, sizeof(float) * B * T, cudaMemcpyDeviceToHost, s));
        cudaCheck(cudaMemcpyAsync(grads + (size_t)i * T * in, md->dx, sizeof(float) * B * T * in,
                                  cudaMemcpyDeviceToHost, s));
    }
    cudaCheck(cudaStreamSynchronize(s));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_vjp(uq_cuda_model *md, float *dx, const float *x, const float *dlogits, int N, int T,
                                 int chunk) {
    ENTER(md);
    const uq_arch *a = &md->arch;
    const int M = md->M, C = a->n_classes;
    const size_t in = in_size_of(a);
    if (T < 1) return uq_fail(UQ_ERR_VALUE, "vjp needs T >= 1 upstream vectors per image, got %d", T);
    if (N < 1) return UQ_OK;
    chunk = pick_chunk(md, N, chunk, T);
    uqCheck(ensure_workspace(md, chunk, chunk * T));
    cudaStream_t s = md->stream;
    for (int i = 0; i < N; i += chunk) {
        const int B = N - i < chunk ? N - i : chunk;
        uqCheck(forward_chunk(md, md->params, M, x + (size_t)i * in, B));
        /* dlogits (M, N, T, C): rows [i, i + B) of each member -> grad[0] (M, B*T, C) */
        const size_t row = sizeof(float) * T * C;
        cudaCheck(cudaMemcpy2DAsync(md->grad[0], row * B, dlogits + (size_t)i * T * C, row * N, row * B, M,
                                    cudaMemcpyHostToDevice, s));
        uqCheck(backward(md, md->params, M, md->x, 0, B, T, 0, 1));
        cudaCheck(cudaMemcpyAsync(dx + (size_t)i * T * in, md->dx, sizeof(float) * B * T * in, cudaMemcpyDeviceToHost, s));
    }
    cudaCheck(cudaStreamSynchronize(s));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_set_optimizer(uq_cuda_model *md, const uq_optimizer *opt) {
    ENTER(md);
    uqCheck(ensure_training(md));
    const size_t bytes = sizeof(float) * md->M * md->arch.n_params;
    cudaCheck(cudaMemsetAsync(md->opt_m, 0, bytes, md->stream));
    cudaCheck(cudaMemsetAsync(md->opt_v, 0, bytes, md->stream));
    cudaCheck(cudaMemsetAsync(md->loss_acc, 0, sizeof(double) * md->M, md->stream));
    cudaCheck(cudaMemsetAsync(md->correct_acc, 0, sizeof(int64_t) * md->M, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    md->opt = *opt;
    md->have_opt = 1;
    return UQ_OK;
}

extern "C" uq_status uq_cuda_download_optimizer_state(uq_cuda_model *md, float *m, float *v) {
    ENTER(md);
    if (!md->have_opt) return uq_fail(UQ_ERR_VALUE, "no optimizer state: set an optimizer first");
    const size_t bytes = sizeof(float) * md->M * md->arch.n_params;
    if (m) cudaCheck(cudaMemcpyAsync(m, md->opt_m, bytes, cudaMemcpyDeviceToHost, md->stream));
    if (v) cudaCheck(cudaMemcpyAsync(v, md->opt_v, bytes, cudaMemcpyDeviceToHost, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

/* per-member batches x (M, B, in_size), y (M, B) -> the workspace; scratch accumulators zeroed */
static uq_status upload_batches(uq_cuda_model *md, const float *x, const int32_t *y, int B) {
    const int M = md->M;
    uqCheck(ensure_training(md));
    uqCheck(ensure_workspace(md, B, B));
    uqCheck(poison_workspace(md));
    cudaStream_t s = md->stream;
    cudaCheck(cudaMemcpyAsync(md->x, x, sizeof(float) * M * B * in_size_of(&md->arch), cudaMemcpyHostToDevice, s));
    cudaCheck(cudaMemcpyAsync(md->y, y, sizeof(int32_t) * M * B, cudaMemcpyHostToDevice, s));
    cudaCheck(cudaMemsetAsync(md->loss_acc + M, 0, sizeof(double) * M, s));
    cudaCheck(cudaMemsetAsync(md->correct_acc + M, 0, sizeof(int64_t) * M, s));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_gradients(uq_cuda_model *md, float *dparams, double *loss, const float *x,
                                       const int32_t *y, int B) {
    ENTER(md);
    const int M = md->M;
    if (B < 1) return uq_fail(UQ_ERR_VALUE, "empty batch");
    uqCheck(upload_batches(md, x, y, B));
    uqCheck(train_step_dev(md, md->x, md->y, B, 0, 0.0f, M));
    cudaCheck(cudaMemcpyAsync(dparams, md->grads, sizeof(float) * M * md->arch.n_params, cudaMemcpyDeviceToHost,
                              md->stream));
    cudaCheck(cudaMemcpyAsync(loss, md->loss_acc + M, sizeof(double) * M, cudaMemcpyDeviceToHost, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    for (int m = 0; m < M; m++) loss[m] /= B;
    return UQ_OK;
}

extern "C" uq_status uq_cuda_train_step(uq_cuda_model *md, const float *x, const int32_t *y, int B, int64_t step,
                                        float lr, double *loss_sum, int64_t *n_correct) {
    ENTER(md);
    const int M = md->M;
    if (!md->have_opt) return uq_fail(UQ_ERR_VALUE, "no optimizer: set one before training");
    if (B < 1) return uq_fail(UQ_ERR_VALUE, "empty batch");
    if (step < 1) return uq_fail(UQ_ERR_VALUE, "step must be >= 1 (1-based), got %lld", (long long)step);
    uqCheck(upload_batches(md, x, y, B));
    uqCheck(train_step_dev(md, md->x, md->y, B, step, lr, M));
    cudaCheck(cudaMemcpyAsync(loss_sum, md->loss_acc + M, sizeof(double) * M, cudaMemcpyDeviceToHost, md->stream));
    cudaCheck(cudaMemcpyAsync(n_correct, md->correct_acc + M, sizeof(int64_t) * M, cudaMemcpyDeviceToHost,
                              md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_set_data(uq_cuda_model *md, const float *x, const int32_t *y, int64_t N) {
    ENTER(md);
    if (N < 1) return uq_fail(UQ_ERR_VALUE, "empty training set");
    cudaCheck(cudaStreamSynchronize(md->stream)); /* enqueued steps may still read the old set */
    cudaFree(md->data_x), md->data_x = NULL;
    cudaFree(md->data_y), md->data_y = NULL;
    cudaFree(md->orders), md->orders = NULL;
    md->data_n = 0, md->have_orders = 0;
    const size_t in = in_size_of(&md->arch);
    cudaCheck(cudaMalloc((void **)&md->data_x, sizeof(float) * N * in));
    cudaCheck(cudaMalloc((void **)&md->data_y, sizeof(int32_t) * N));
    cudaCheck(cudaMalloc((void **)&md->orders, sizeof(int32_t) * N * md->M));
    cudaCheck(cudaMemcpyAsync(md->data_x, x, sizeof(float) * N * in, cudaMemcpyHostToDevice, md->stream));
    cudaCheck(cudaMemcpyAsync(md->data_y, y, sizeof(int32_t) * N, cudaMemcpyHostToDevice, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    md->data_n = N;
    return UQ_OK;
}

extern "C" uq_status uq_cuda_set_orders(uq_cuda_model *md, const int32_t *orders) {
    ENTER(md);
    if (!md->data_n) return uq_fail(UQ_ERR_VALUE, "no training set: upload one first");
    /* stream-ordered: steps already enqueued read the old orders first */
    cudaCheck(cudaMemcpyAsync(md->orders, orders, sizeof(int32_t) * md->M * md->data_n, cudaMemcpyHostToDevice,
                              md->stream));
    md->have_orders = 1;
    return UQ_OK;
}

extern "C" uq_status uq_cuda_train_steps(uq_cuda_model *md, int64_t first_batch, int count, int batch_size,
                                         int64_t first_step, const float *lrs) {
    ENTER(md);
    if (!md->have_opt) return uq_fail(UQ_ERR_VALUE, "no optimizer: set one before training");
    if (!md->have_orders) return uq_fail(UQ_ERR_VALUE, "no training set or orders: upload them first");
    if (batch_size < 1 || first_batch < 0 || first_step < 1)
        return uq_fail(UQ_ERR_VALUE, "bad training steps (batch_size %d, first batch %lld, first step %lld)",
                       batch_size, (long long)first_batch, (long long)first_step);
    const int64_t n_batches = (md->data_n + batch_size - 1) / batch_size;
    if (first_batch + count > n_batches)
        return uq_fail(UQ_ERR_VALUE, "batches %lld..%lld exceed the %lld batches of an epoch", (long long)first_batch,
                       (long long)(first_batch + count - 1), (long long)n_batches);
    const int cap = md->data_n < batch_size ? (int)md->data_n : batch_size;
    uqCheck(ensure_training(md));
    uqCheck(ensure_workspace(md, cap, cap));
    const size_t in = in_size_of(&md->arch);
    for (int k = 0; k < count; k++) {
        const int64_t b0 = (first_batch + k) * batch_size;
        const int B = (int)(md->data_n - b0 < batch_size ? md->data_n - b0 : batch_size);
        uqCheck(poison_workspace(md));
        uqCheck(gather_batch_cuda(md->x, md->y, md->data_x, md->data_y, md->orders, md->data_n, b0, md->M, B,
                                  (int64_t)in, md->stream));
        uqCheck(train_step_dev(md, md->x, md->y, B, first_step + k, lrs[k], 0));
    }
    return UQ_OK;
}

extern "C" uq_status uq_cuda_epoch_stats(uq_cuda_model *md, double *loss_sum, int64_t *n_correct) {
    ENTER(md);
    const int M = md->M;
    cudaCheck(cudaMemcpyAsync(loss_sum, md->loss_acc, sizeof(double) * M, cudaMemcpyDeviceToHost, md->stream));
    cudaCheck(cudaMemcpyAsync(n_correct, md->correct_acc, sizeof(int64_t) * M, cudaMemcpyDeviceToHost, md->stream));
    cudaCheck(cudaMemsetAsync(md->loss_acc, 0, sizeof(double) * M, md->stream));
    cudaCheck(cudaMemsetAsync(md->correct_acc, 0, sizeof(int64_t) * M, md->stream));
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}

extern "C" uq_status uq_cuda_synchronize(uq_cuda_model *md) {
    ENTER(md);
    cudaCheck(cudaStreamSynchronize(md->stream));
    return UQ_OK;
}
