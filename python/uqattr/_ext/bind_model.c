/* _uqattr: architectures, initialization, shuffling, prediction and the
 * training step. Parameters are NumPy slabs owned by Python: (M, P) float32,
 * one row per ensemble member, laid out as model.h describes. */
#include "args.h"

#include <math.h>
#include <string.h>

#include "../../../csrc/layers.h"
#include "../../../csrc/rng.h"

static PyObject *py_arch_layers(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "in_shape", NULL};
    const char *spec;
    PyObject *in_shape = NULL;
    uq_arch arch;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O:arch_layers", kwlist, &spec, &in_shape)) return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    PyObject *layers = PyList_New(0);
    if (!layers) return NULL;
    static const char *kinds[] = {"conv", "pool", "dense"};
    for (int l = 0; l < arch.n_layers; l++) {
        const uq_layer *L = &arch.layer[l];
        PyObject *w_shape, *b_shape;
        if (L->kind == UQ_LAYER_CONV) w_shape = Py_BuildValue("(iiii)", L->out_c, L->in_c, L->k, L->k);
        else if (L->kind == UQ_LAYER_DENSE) w_shape = Py_BuildValue("(ii)", L->out_c, L->in_c);
        else w_shape = Py_BuildValue("()");
        b_shape = L->kind == UQ_LAYER_POOL ? Py_BuildValue("()") : Py_BuildValue("(i)", L->out_c);
        PyObject *d = (w_shape && b_shape) ? Py_BuildValue(
            "{s:s,s:s,s:O,s:(iii),s:(iii),s:n,s:O,s:n,s:O}", "name", L->name, "kind", kinds[L->kind], "relu",
            L->relu ? Py_True : Py_False, "in_shape", L->in_c, L->in_h, L->in_w, "out_shape", L->out_c, L->out_h,
            L->out_w, "weight_offset", (Py_ssize_t)L->w_off, "weight_shape", w_shape, "bias_offset",
            (Py_ssize_t)L->b_off, "bias_shape", b_shape) : NULL;
        Py_XDECREF(w_shape);
        Py_XDECREF(b_shape);
        if (!d || PyList_Append(layers, d)) {
            Py_XDECREF(d);
            Py_DECREF(layers);
            return NULL;
        }
        Py_DECREF(d);
    }
    PyObject *res = Py_BuildValue("{s:n,s:i,s:O}", "n_params", (Py_ssize_t)arch.n_params, "n_classes",
                                  arch.n_classes, "layers", layers);
    Py_DECREF(layers);
    return res;
}

static PyObject *py_init_params(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "seed", "in_shape", NULL};
    const char *spec;
    unsigned long long seed;
    PyObject *in_shape = NULL;
    uq_arch arch;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sK|O:init_params", kwlist, &spec, &seed, &in_shape)) return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    npy_intp dims[1] = {(npy_intp)arch.n_params};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    if (!out) return NULL;
    uq_arch_init_params(&arch, (float *)PyArray_DATA(out), (uint64_t)seed);
    return (PyObject *)out;
}

static PyObject *py_permutation(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"n", "seed", "stream", NULL};
    Py_ssize_t n;
    unsigned long long seed, stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nK|K:permutation", kwlist, &n, &seed, &stream)) return NULL;
    if (n < 0 || n > (Py_ssize_t)UINT32_MAX) return PyErr_Format(PyExc_ValueError, "n must be in [0, 2**32), got %zd", n);
    npy_intp dims[1] = {n};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (!out) return NULL;
    int64_t *idx = (int64_t *)PyArray_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) idx[i] = i;
    uq_rng rng;
    uq_rng_seed(&rng, seed, stream);
    uq_rng_shuffle(&rng, idx, (size_t)n);
    return (PyObject *)out;
}

/* check_data(spec, x, y, in_shape) -> (x, y): the training-data checks of Trainer.step run once over
 * the whole set (float32 C-contiguous finite images, int32 labels in range), so that fit fails before
 * any weight changes rather than at a bad batch halfway through. */
static PyObject *py_check_data(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "x", "y", "in_shape", NULL};
    const char *spec;
    PyObject *x_obj, *y_obj, *in_shape = NULL;
    PyArrayObject *x = NULL, *y = NULL;
    uq_arch arch;
    npy_intp N;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOO|O:check_data", kwlist, &spec, &x_obj, &y_obj, &in_shape))
        return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    if (!(x = uq_images_arg(x_obj, &arch, "x", &N))) return NULL;
    if (!(y = uq_labels_arg(y_obj, N, arch.n_classes, "y"))) { Py_DECREF(x); return NULL; }
    return Py_BuildValue("(NN)", (PyObject *)x, (PyObject *)y);
}

/* Member outputs for N images: (M, N, C) probabilities or logits. */
static PyObject *py_predict(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "params", "x", "logits", "in_shape", "batch_size", NULL};
    const char *spec;
    PyObject *params_obj, *x_obj, *in_shape = NULL;
    int want_logits = 0, batch_size = 256;
    uq_arch arch;
    PyArrayObject *params = NULL, *x = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOO|pOi:predict", kwlist, &spec, &params_obj, &x_obj, &want_logits,
                                     &in_shape, &batch_size))
        return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    if (batch_size < 1) return PyErr_Format(PyExc_ValueError, "batch_size must be >= 1, got %d", batch_size);
    npy_intp M, N;
    if (!(params = uq_slab_arg(params_obj, arch.n_params, 0, "params", &M))) goto fail;
    if (!(x = uq_images_arg(x_obj, &arch, "x", &N))) goto fail;
    npy_intp dims[3] = {M, N, arch.n_classes};
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT32))) goto fail;
    uq_workspace ws;
    uq_status st;
    const int cap = N < batch_size ? (int)N : batch_size;
    Py_BEGIN_ALLOW_THREADS
    st = uq_workspace_alloc(&ws, &arch, cap, 1);
    for (npy_intp m = 0; st == UQ_OK && m < M; m++) {
        float *o = (float *)PyArray_DATA(out) + (size_t)m * N * arch.n_classes;
        st = uq_model_logits_batched(&arch, (const float *)PyArray_DATA(params) + (size_t)m * arch.n_params,
                                     (const float *)PyArray_DATA(x), N, o, &ws);
        if (st == UQ_OK && !want_logits) softmax_forward(o, o, (int)N, arch.n_classes);
    }
    uq_workspace_free(&ws);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(params);
    Py_DECREF(x);
    return (PyObject *)out;
fail:
    Py_XDECREF(params);
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

/* vjp(spec, params, x, dlogits) -> dx: back-propagates T upstream gradients
 * per image, dlogits (N, T, C), through one network to its input:
 * dx (N, T, C_in, H, W), the vector-Jacobian products d<dlogits, logits>/dx. */
static PyObject *py_vjp(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "params", "x", "dlogits", "in_shape", NULL};
    const char *spec;
    PyObject *p_obj, *x_obj, *g_obj, *in_shape = NULL;
    uq_arch arch;
    PyArrayObject *params = NULL, *x = NULL, *g = NULL, *out = NULL;
    npy_intp rows, N;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOOO|O:vjp", kwlist, &spec, &p_obj, &x_obj, &g_obj, &in_shape))
        return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    if (!(params = uq_slab_arg(p_obj, arch.n_params, 0, "params", &rows))) goto fail;
    if (rows != 1) { PyErr_SetString(PyExc_ValueError, "params must hold one network"); goto fail; }
    if (!(x = uq_images_arg(x_obj, &arch, "x", &N))) goto fail;
    if (!(g = uq_float_arg(g_obj, 3, "dlogits"))) goto fail;
    if (PyArray_DIM(g, 0) != N || PyArray_DIM(g, 2) != arch.n_classes || PyArray_DIM(g, 1) < 1) {
        PyErr_Format(PyExc_ValueError, "dlogits must have shape (%zd, T, %d) with T >= 1", (Py_ssize_t)N, arch.n_classes);
        goto fail;
    }
    const int T = (int)PyArray_DIM(g, 1);
    npy_intp dims[5] = {N, T, arch.in_c, arch.in_h, arch.in_w};
    if (!(out = (PyArrayObject *)PyArray_ZEROS(5, dims, NPY_FLOAT32, 0))) goto fail;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    uq_workspace ws;
    const int cap = N < 64 ? (int)N : 64;
    const size_t in_size = (size_t)arch.in_c * arch.in_h * arch.in_w;
    st = uq_workspace_alloc(&ws, &arch, cap, T);
    for (npy_intp i = 0; st == UQ_OK && i < N; i += cap) {
        const int B = (int)(N - i < cap ? N - i : cap);
        const float *xb = (const float *)PyArray_DATA(x) + (size_t)i * in_size;
        st = uq_model_forward(&arch, (const float *)PyArray_DATA(params), xb, B, &ws);
        if (st == UQ_OK)
            st = uq_model_backward(&arch, (const float *)PyArray_DATA(params), NULL,
                                   (float *)PyArray_DATA(out) + (size_t)i * T * in_size, xb,
                                   (const float *)PyArray_DATA(g) + (size_t)i * T * arch.n_classes, B, T, &ws);
    }
    uq_workspace_free(&ws);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(params); Py_DECREF(x); Py_DECREF(g);
    return (PyObject *)out;
fail:
    Py_XDECREF(params); Py_XDECREF(x); Py_XDECREF(g); Py_XDECREF(out);
    return NULL;
}

/* ---- Trainer: one network's training state that persists across steps ---- */

typedef struct {
    PyObject_HEAD
    uq_arch arch;
    uq_workspace ws;
    uq_optimizer opt;
    float *grads;
    int busy; /* set while a step runs without the GIL */
} TrainerObject;

static void Trainer_dealloc(TrainerObject *self) {
    uq_workspace_free(&self->ws);
    uq_free(self->grads);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Trainer_init(TrainerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "batch_size", "optimizer", "beta1", "beta2", "eps", "momentum",
                             "weight_decay", "in_shape", NULL};
    const char *spec, *optimizer = "adam";
    int batch_size;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, momentum = 0.9f, weight_decay = 0.0f;
    PyObject *in_shape = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "si|sfffffO:Trainer", kwlist, &spec, &batch_size, &optimizer, &beta1,
                                     &beta2, &eps, &momentum, &weight_decay, &in_shape))
        return -1;
    if (self->grads) {
        PyErr_SetString(PyExc_RuntimeError, "Trainer is already initialized");
        return -1;
    }
    if (uq_arch_arg(spec, in_shape, &self->arch)) return -1;
    if (batch_size < 1) {
        PyErr_Format(PyExc_ValueError, "batch_size must be >= 1, got %d", batch_size);
        return -1;
    }
    if (strcmp(optimizer, "adam") == 0) self->opt.kind = UQ_OPT_ADAM;
    else if (strcmp(optimizer, "sgd") == 0) self->opt.kind = UQ_OPT_SGD;
    else {
        PyErr_Format(PyExc_ValueError, "optimizer must be 'adam' or 'sgd', got '%s'", optimizer);
        return -1;
    }
    self->opt.beta1 = beta1, self->opt.beta2 = beta2, self->opt.eps = eps;
    self->opt.momentum = momentum, self->opt.weight_decay = weight_decay;
    uq_status st = uq_workspace_alloc(&self->ws, &self->arch, batch_size, 1);
    if (st) { uq_raise_status(st); return -1; }
    self->grads = uq_malloc(sizeof(float) * self->arch.n_params);
    if (!self->grads) { PyErr_NoMemory(); return -1; }
    return 0;
}

/* step(params, m, v, step, x, y, lr) -> (loss_sum, n_correct); updates params, m, v in place */
static PyObject *Trainer_step(TrainerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"params", "m", "v", "step", "x", "y", "lr", NULL};
    PyObject *p_obj, *m_obj, *v_obj, *x_obj, *y_obj;
    long long step;
    float lr;
    PyArrayObject *params = NULL, *m = NULL, *v = NULL, *x = NULL, *y = NULL;
    npy_intp rows, B;
    if (!self->grads) return PyErr_Format(PyExc_RuntimeError, "Trainer is not initialized");
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOLOOf:step", kwlist, &p_obj, &m_obj, &v_obj, &step, &x_obj, &y_obj, &lr))
        return NULL;
    if (step < 1) return PyErr_Format(PyExc_ValueError, "step must be >= 1 (1-based), got %lld", step);
    if (!(lr > 0.0f) || isinf(lr)) { /* "f" turns a double beyond float range into inf */
        char msg[64];
        PyOS_snprintf(msg, sizeof msg, "lr must be finite and > 0, got %g", (double)lr); /* PyErr_Format has no %g */
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    }
    const size_t P = self->arch.n_params;
    if (!(params = uq_slab_arg(p_obj, P, 1, "params", &rows))) goto fail;
    if (rows != 1) { PyErr_SetString(PyExc_ValueError, "params must hold one network"); goto fail; }
    if (!(m = uq_slab_arg(m_obj, P, 1, "m", &rows))) goto fail;
    if (rows != 1) { PyErr_SetString(PyExc_ValueError, "m must hold one network's state, as params"); goto fail; }
    if (!(v = uq_slab_arg(v_obj, P, 1, "v", &rows))) goto fail;
    if (rows != 1) { PyErr_SetString(PyExc_ValueError, "v must hold one network's state, as params"); goto fail; }
    if (!(x = uq_images_arg(x_obj, &self->arch, "x", &B))) goto fail;
    if (B > self->ws.capacity) {
        PyErr_Format(PyExc_ValueError, "batch of %zd images exceeds the Trainer's batch_size %d", (Py_ssize_t)B, self->ws.capacity);
        goto fail;
    }
    if (!(y = uq_labels_arg(y_obj, B, self->arch.n_classes, "y"))) goto fail;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this Trainer is running a step in another thread");
        goto fail;
    }
    self->busy = 1;
    uq_optimizer opt = self->opt;
    opt.lr = lr;
    double loss = 0.0;
    int correct = 0;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_train_step(&self->arch, (float *)PyArray_DATA(params), self->grads, (float *)PyArray_DATA(m),
                       (float *)PyArray_DATA(v), step, &opt, (const float *)PyArray_DATA(x),
                       (const int32_t *)PyArray_DATA(y), (int)B, &self->ws, &loss, &correct);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(params); Py_DECREF(m); Py_DECREF(v); Py_DECREF(x); Py_DECREF(y);
    return Py_BuildValue("(di)", loss, correct);
fail:
    Py_XDECREF(params); Py_XDECREF(m); Py_XDECREF(v); Py_XDECREF(x); Py_XDECREF(y);
    return NULL;
}

/* gradients(params, x, y) -> (mean loss, dparams): one network's parameter
 * gradient of the mean cross-entropy, without an update (for checks). */
static PyObject *Trainer_gradients(TrainerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"params", "x", "y", NULL};
    PyObject *p_obj, *x_obj, *y_obj;
    PyArrayObject *params = NULL, *x = NULL, *y = NULL, *out = NULL;
    npy_intp rows, B;
    if (!self->grads) return PyErr_Format(PyExc_RuntimeError, "Trainer is not initialized");
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:gradients", kwlist, &p_obj, &x_obj, &y_obj)) return NULL;
    const size_t P = self->arch.n_params;
    if (!(params = uq_slab_arg(p_obj, P, 0, "params", &rows))) goto fail;
    if (rows != 1) { PyErr_SetString(PyExc_ValueError, "params must hold one network"); goto fail; }
    if (!(x = uq_images_arg(x_obj, &self->arch, "x", &B))) goto fail;
    if (B > self->ws.capacity) {
        PyErr_Format(PyExc_ValueError, "batch of %zd images exceeds the Trainer's batch_size %d", (Py_ssize_t)B, self->ws.capacity);
        goto fail;
    }
    if (!(y = uq_labels_arg(y_obj, B, self->arch.n_classes, "y"))) goto fail;
    npy_intp dims[1] = {(npy_intp)P};
    if (!(out = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_FLOAT32, 0))) goto fail;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this Trainer is running a step in another thread");
        goto fail;
    }
    self->busy = 1;
    double loss = 0.0;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    const int C = self->arch.n_classes;
    st = uq_model_forward(&self->arch, (const float *)PyArray_DATA(params), (const float *)PyArray_DATA(x), (int)B, &self->ws);
    if (st == UQ_OK) {
        float *dlogits = self->ws.grad[1];
        memset(dlogits, 0, sizeof(float) * B * C);
        loss = crossentropy_softmax(dlogits, NULL, uq_model_logits(&self->arch, &self->ws),
                                    (const int32_t *)PyArray_DATA(y), (int)B, C, 1.0f / B) / B;
        st = uq_model_backward(&self->arch, (const float *)PyArray_DATA(params), (float *)PyArray_DATA(out), NULL,
                               (const float *)PyArray_DATA(x), dlogits, (int)B, 1, &self->ws);
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(params); Py_DECREF(x); Py_DECREF(y);
    return Py_BuildValue("(dN)", loss, (PyObject *)out);
fail:
    Py_XDECREF(params); Py_XDECREF(x); Py_XDECREF(y); Py_XDECREF(out);
    return NULL;
}

static PyMethodDef Trainer_methods[] = {
    {"step", (PyCFunction)(void (*)(void))Trainer_step, METH_VARARGS | METH_KEYWORDS,
     "step(params, m, v, step, x, y, lr) -> (loss_sum, n_correct): one optimizer step, in place."},
    {"gradients", (PyCFunction)(void (*)(void))Trainer_gradients, METH_VARARGS | METH_KEYWORDS,
     "gradients(params, x, y) -> (mean_loss, dparams) of the mean cross-entropy, no update."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject uq_TrainerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uqattr._uqattr.Trainer",
    .tp_basicsize = sizeof(TrainerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Trainer(spec, batch_size, optimizer='adam', beta1=0.9, beta2=0.999, eps=1e-8, momentum=0.9,\n"
              "        weight_decay=0.0, in_shape=(1, 28, 28))\n\n"
              "Training state of one network kept across steps (activations, gradient scratch).\n"
              "Not for use from two threads at once.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Trainer_init,
    .tp_dealloc = (destructor)Trainer_dealloc,
    .tp_methods = Trainer_methods,
};

PyMethodDef uq_model_methods[] = {
    {"check_data", (PyCFunction)(void (*)(void))py_check_data, METH_VARARGS | METH_KEYWORDS,
     "check_data(spec, x, y, in_shape=(1, 28, 28)) -> (x, y) as float32 images and int32 labels, validated"},
    {"arch_layers", (PyCFunction)(void (*)(void))py_arch_layers, METH_VARARGS | METH_KEYWORDS,
     "arch_layers(spec, in_shape=(1, 28, 28)) -> dict(n_params, n_classes, layers=[...])"},
    {"init_params", (PyCFunction)(void (*)(void))py_init_params, METH_VARARGS | METH_KEYWORDS,
     "init_params(spec, seed, in_shape=(1, 28, 28)) -> (P,) float32, PyTorch's default init"},
    {"permutation", (PyCFunction)(void (*)(void))py_permutation, METH_VARARGS | METH_KEYWORDS,
     "permutation(n, seed, stream=0) -> int64 array: a seeded shuffle of range(n)"},
    {"predict", (PyCFunction)(void (*)(void))py_predict, METH_VARARGS | METH_KEYWORDS,
     "predict(spec, params, x, logits=False, in_shape=(1, 28, 28), batch_size=256) -> (M, N, C)"},
    {"vjp", (PyCFunction)(void (*)(void))py_vjp, METH_VARARGS | METH_KEYWORDS,
     "vjp(spec, params, x, dlogits, in_shape=(1, 28, 28)) -> dx (N, T, C, H, W): input gradients of\n"
     "<dlogits[:, t], logits> for T upstream vectors per image, through one network"},
    {NULL, NULL, 0, NULL},
};
