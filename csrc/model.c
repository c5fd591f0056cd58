#include "model.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "layers.h"
#include "rng.h"

/* Reads a positive decimal number at *p (at most 1e6), advancing p; -1 if none. */
static long read_count(const char **p) {
    if (!isdigit((unsigned char)**p)) return -1;
    char *end;
    long v = strtol(*p, &end, 10);
    *p = end;
    return (v > 0 && v <= 1000000) ? v : -1;
}

uq_status uq_arch_parse(uq_arch *arch, const char *spec, int in_c, int in_h, int in_w) {
    memset(arch, 0, sizeof *arch);
    arch->in_c = in_c, arch->in_h = in_h, arch->in_w = in_w;
    if (!spec || !*spec) return uq_fail(UQ_ERR_VALUE, "empty architecture spec");
    int c = in_c, h = in_h, w = in_w, n_conv = 0, n_pool = 0, n_fc = 0;
    size_t off = 0, max_size = (size_t)c * h * w;
    const char *tok = spec;
    while (*tok) {
        const char *end = strchr(tok, '-');
        size_t len = end ? (size_t)(end - tok) : strlen(tok);
        char t[64];
        snprintf(t, sizeof t, "%.*s", (int)(len < 63 ? len : 63), tok);
        if (arch->n_layers == UQ_MAX_LAYERS)
            return uq_fail(UQ_ERR_VALUE, "architecture spec '%s' has more than %d layers", spec, UQ_MAX_LAYERS);
        uq_layer *L = &arch->layer[arch->n_layers];
        L->in_c = c, L->in_h = h, L->in_w = w;
        const char *p = t;
        if (strncmp(t, "conv", 4) == 0) {
            p += 4;
            long oc = read_count(&p), k = 3;
            if (*p == 'k') { p++; k = read_count(&p); }
            if (oc < 0 || k < 0 || *p || k % 2 == 0)
                return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': expected convN or convNkK with odd K", t, spec);
            if (n_fc) return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': conv after fc", t, spec);
            if ((long long)oc * h * w > INT32_MAX)
                return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': %ld channels of %dx%d are "
                               "more than 2**31 values per image", t, spec, oc, h, w);
            L->kind = UQ_LAYER_CONV, L->k = (int)k, L->relu = 1;
            snprintf(L->name, sizeof L->name, "conv%d", ++n_conv);
            L->out_c = (int)oc, L->out_h = h, L->out_w = w;
            L->n_w = (size_t)oc * c * k * k, L->n_b = (size_t)oc;
        } else if (strcmp(t, "pool") == 0) {
            if (n_fc) return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': pool after fc", t, spec);
            if (h < 2 || w < 2)
                return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': nothing left to pool (%dx%d)", t, spec, h, w);
            L->kind = UQ_LAYER_POOL;
            snprintf(L->name, sizeof L->name, "pool%d", ++n_pool);
            L->out_c = c, L->out_h = h / 2, L->out_w = w / 2;
        } else if (strncmp(t, "fc", 2) == 0) {
            p += 2;
            long o = read_count(&p);
            if (o < 0 || *p)
                return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': expected fcN", t, spec);
            if ((long long)c * h * w > INT32_MAX)
                return uq_fail(UQ_ERR_VALUE, "bad token '%s' in architecture spec '%s': its input of %dx%dx%d is "
                               "more than 2**31 values", t, spec, c, h, w);
            L->kind = UQ_LAYER_DENSE, L->relu = 1;
            snprintf(L->name, sizeof L->name, "fc%d", ++n_fc);
            L->in_c = c * h * w, L->in_h = L->in_w = 1;
            L->out_c = (int)o, L->out_h = L->out_w = 1;
            L->n_w = (size_t)o * L->in_c, L->n_b = (size_t)o;
        } else {
            return uq_fail(UQ_ERR_VALUE, "unknown token '%s' in architecture spec '%s' (known: convN, convNkK, pool, fcN)", t, spec);
        }
        L->w_off = off, off += L->n_w;
        L->b_off = off, off += L->n_b;
        L->in_size = (size_t)L->in_c * L->in_h * L->in_w;
        L->out_size = (size_t)L->out_c * L->out_h * L->out_w;
        if (L->out_size > max_size) max_size = L->out_size;
        c = L->out_c, h = L->out_h, w = L->out_w;
        arch->n_layers++;
        if (!end) break;
        tok = end + 1;
        if (!*tok) return uq_fail(UQ_ERR_VALUE, "architecture spec '%s' ends with '-'", spec);
    }
    uq_layer *last = &arch->layer[arch->n_layers - 1];
    if (last->kind != UQ_LAYER_DENSE)
        return uq_fail(UQ_ERR_VALUE, "architecture spec '%s' must end with fcN (the class logits)", spec);
    if (last->out_c < 2)
        return uq_fail(UQ_ERR_VALUE, "architecture spec '%s': the last fc needs at least 2 classes", spec);
    last->relu = 0;
    arch->n_params = off;
    arch->n_classes = last->out_c;
    arch->max_size = max_size;
    return UQ_OK;
}

void uq_arch_init_params(const uq_arch *arch, float *params, uint64_t seed) {
    uq_rng rng;
    uq_rng_seed(&rng, seed, 0);
    for (int l = 0; l < arch->n_layers; l++) {
        const uq_layer *L = &arch->layer[l];
        if (L->kind == UQ_LAYER_POOL) continue;
        const size_t fan_in = L->kind == UQ_LAYER_CONV ? (size_t)L->in_c * L->k * L->k : (size_t)L->in_c;
        const float bound = 1.0f / sqrtf((float)fan_in);
        for (size_t i = 0; i < L->n_w + L->n_b; i++)
            params[L->w_off + i] = bound * (2.0f * uq_rng_uniform(&rng) - 1.0f);
    }
}

void uq_workspace_free(uq_workspace *ws) {
    for (int l = 0; l < UQ_MAX_LAYERS; l++) {
        uq_free(ws->act[l]);
        uq_free(ws->argmax[l]);
    }
    uq_free(ws->grad[0]);
    uq_free(ws->grad[1]);
    memset(ws, 0, sizeof *ws);
}

uq_status uq_workspace_alloc(uq_workspace *ws, const uq_arch *arch, int capacity, int max_targets) {
    memset(ws, 0, sizeof *ws);
    ws->capacity = capacity, ws->max_targets = max_targets;
    const size_t rows = (size_t)capacity * max_targets;
    for (int l = 0; l < arch->n_layers; l++) {
        const uq_layer *L = &arch->layer[l];
        ws->act[l] = uq_malloc(sizeof(float) * capacity * L->out_size);
        if (!ws->act[l]) goto nomem;
        if (L->kind == UQ_LAYER_POOL) {
            ws->argmax[l] = uq_malloc(sizeof(int32_t) * capacity * L->out_size);
            if (!ws->argmax[l]) goto nomem;
        }
    }
    for (int i = 0; i < 2 && max_targets > 0; i++) {
        ws->grad[i] = uq_malloc(sizeof(float) * rows * arch->max_size);
        if (!ws->grad[i]) goto nomem;
    }
    return UQ_OK;
nomem:
    uq_workspace_free(ws);
    return uq_fail(UQ_ERR_NOMEM, "out of memory allocating activations for %d images", capacity);
}

uq_status uq_model_forward(const uq_arch *arch, const float *params, const float *x, int B, uq_workspace *ws) {
    if (B > ws->capacity) return uq_fail(UQ_ERR_VALUE, "batch of %d exceeds workspace capacity %d", B, ws->capacity);
    const float *inp = x;
    for (int l = 0; l < arch->n_layers; l++) {
        const uq_layer *L = &arch->layer[l];
        float *out = ws->act[l];
        const float *wt = params + L->w_off, *bias = params + L->b_off;
        switch (L->kind) {
        case UQ_LAYER_CONV: {
            uq_status st = conv2d_forward(out, inp, wt, bias, B, L->in_c, L->in_h, L->in_w, L->out_c, L->k, L->relu);
            if (st) return st;
            break;
        }
        case UQ_LAYER_POOL:
            maxpool2_forward(out, ws->argmax[l], inp, B, L->in_c, L->in_h, L->in_w);
            break;
        case UQ_LAYER_DENSE:
            dense_forward(out, inp, wt, bias, B, L->in_c, L->out_c, L->relu);
            break;
        }
        inp = out;
    }
    return UQ_OK;
}

uq_status uq_model_backward(const uq_arch *arch, const float *params, float *dparams, float *dx,
                            const float *x, const float *dlogits, int B, int T, uq_workspace *ws) {
    if (T > ws->max_targets)
        return uq_fail(UQ_ERR_VALUE, "backward of %d targets exceeds workspace's %d", T, ws->max_targets);
    return uq_model_backward_into(arch, params, dparams, dx, x, dlogits, B, T, ws, ws->grad[0], ws->grad[1]);
}

uq_status uq_model_backward_into(const uq_arch *arch, const float *params, float *dparams, float *dx,
                                 const float *x, const float *dlogits, int B, int T, const uq_workspace *ws,
                                 float *grad_a, float *grad_b) {
    if (B > ws->capacity) return uq_fail(UQ_ERR_VALUE, "backward of %d images exceeds workspace capacity %d", B, ws->capacity);
    if (dparams && T != 1) return uq_fail(UQ_ERR_VALUE, "parameter gradients need one target per image");
    float *grad[2] = {grad_a, grad_b};
    const int rows = B * T;
    int cur = 0;
    memcpy(grad[cur], dlogits, sizeof(float) * rows * arch->n_classes);
    /* a conv (with its ReLU) and the max-pool after it go back in one step, straight from the
     * pool's gradient (conv2d_pool_backward), unless the dense conv backward is forced */
    const int fuse_pools = strcmp(uq_conv_backward(), "dense") != 0;
    for (int l = arch->n_layers - 1; l >= 0; l--) {
        const uq_layer *L = &arch->layer[l];
        float *g = grad[cur];
        const int pool_after_conv = fuse_pools && L->kind == UQ_LAYER_POOL && l > 0 &&
                                    arch->layer[l - 1].kind == UQ_LAYER_CONV && arch->layer[l - 1].relu;
        if (pool_after_conv) L = &arch->layer[--l];
        else if (L->relu) relu_backward_inplace(g, ws->act[l], B, T, L->out_size);
        float *dinp = NULL;
        if (l > 0) {
            dinp = grad[1 - cur];
            memset(dinp, 0, sizeof(float) * rows * L->in_size);
        } else {
            dinp = dx;
        }
        const float *inp = l > 0 ? ws->act[l - 1] : x;
        const float *wt = params + L->w_off;
        float *dw = dparams ? dparams + L->w_off : NULL;
        float *db = dparams ? dparams + L->b_off : NULL;
        switch (L->kind) {
        case UQ_LAYER_CONV: {
            uq_status st = pool_after_conv
                ? conv2d_pool_backward(dinp, dw, db, g, ws->argmax[l + 1], ws->act[l + 1], inp, wt, B, T, L->in_c,
                                       L->in_h, L->in_w, L->out_c, L->k)
                : conv2d_backward(dinp, dw, db, g, inp, wt, rows, L->in_c, L->in_h, L->in_w, L->out_c, L->k);
            if (st) return st;
            break;
        }
        case UQ_LAYER_POOL:
            if (dinp) maxpool2_backward(dinp, g, ws->argmax[l], B, T, L->in_c, L->in_h, L->in_w);
            break;
        case UQ_LAYER_DENSE:
            dense_backward(dinp, dw, db, g, inp, wt, rows, L->in_c, L->out_c);
            break;
        }
        cur = 1 - cur;
    }
    return UQ_OK;
}

uq_status uq_train_step(const uq_arch *arch, float *params, float *grads, float *m, float *v, int64_t step,
                        const uq_optimizer *opt, const float *x, const int32_t *y, int B,
                        uq_workspace *ws, double *loss_sum, int *n_correct) {
    uq_status st = uq_model_forward(arch, params, x, B, ws);
    if (st) return st;
    const int C = arch->n_classes;
    /* dlogits lives in grad[1]: backward copies it into grad[0] before use */
    float *dlogits = ws->grad[1];
    memset(dlogits, 0, sizeof(float) * B * C);
    *loss_sum = crossentropy_softmax(dlogits, n_correct, uq_model_logits(arch, ws), y, B, C, 1.0f / B);
    memset(grads, 0, sizeof(float) * arch->n_params);
    st = uq_model_backward(arch, params, grads, NULL, x, dlogits, B, 1, ws);
    if (st) return st;
    if (opt->kind == UQ_OPT_ADAM)
        adam_update(params, grads, m, v, arch->n_params, opt->lr, opt->beta1, opt->beta2, opt->eps, opt->weight_decay, step);
    else
        sgd_update(params, grads, m, arch->n_params, opt->lr, opt->momentum, opt->weight_decay);
    return UQ_OK;
}

uq_status uq_model_logits_batched(const uq_arch *arch, const float *params, const float *x, int64_t N,
                                  float *logits, uq_workspace *ws) {
    const size_t in_size = (size_t)arch->in_c * arch->in_h * arch->in_w;
    for (int64_t i = 0; i < N; i += ws->capacity) {
        const int B = (int)(N - i < ws->capacity ? N - i : ws->capacity);
        uq_status st = uq_model_forward(arch, params, x + (size_t)i * in_size, B, ws);
        if (st) return st;
        memcpy(logits + (size_t)i * arch->n_classes, uq_model_logits(arch, ws), sizeof(float) * B * arch->n_classes);
    }
    return UQ_OK;
}
