/* _uqattr: the CUDA backend (csrc/cuda_backend.h) as the CudaModel type, and
 * cuda_probe(). Compiled in every build: without UQ_HAVE_CUDA (no nvcc at
 * build time, or UQATTR_CUDA=0) only cuda_probe() exists and says why.
 *
 * A CudaModel owns one uq_cuda_model (its stream, cuBLAS handle, weights,
 * optimizer state and workspaces on the GPU). Arrays cross as NumPy; calls
 * run without the GIL, one at a time per model (a lock per object). */
#include "args.h"

#include <string.h>

#include "../../../csrc/cuda_backend.h"

#ifdef UQ_HAVE_CUDA

/* ---- module functions --------------------------------------------------------------------- */

static PyObject *py_cuda_probe(PyObject *self, PyObject *unused) {
    const char *why = "";
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = uq_cuda_device_count(&why);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(is)", n, n > 0 ? "" : why);
}

static PyObject *py_cuda_device_info(PyObject *self, PyObject *arg) {
    long dev = PyLong_AsLong(arg);
    if (dev == -1 && PyErr_Occurred()) return NULL;
    char name[256];
    size_t mem = 0;
    int major = 0, minor = 0;
    uq_status st = uq_cuda_device_info((int)dev, name, sizeof name, &mem, &major, &minor);
    if (st) return uq_raise_status(st);
    return Py_BuildValue("{s:s,s:n,s:(ii)}", "name", name, "total_memory", (Py_ssize_t)mem, "capability", major, minor);
}

/* ---- CudaModel ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uq_arch arch;
    uq_cuda_model *md;
    PyThread_type_lock lock;
    int poison, tf32;
} CudaModelObject;

/* runs `stmt` (pure C, no Python) without the GIL, holding the model's lock */
#define UNLOCKED(self, stmt)                                  \
    do {                                                      \
        Py_BEGIN_ALLOW_THREADS                                \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);       \
        stmt;                                                 \
        PyThread_release_lock((self)->lock);                  \
        Py_END_ALLOW_THREADS                                  \
    } while (0)

static int ready(CudaModelObject *self) {
    if (!self->md) {
        PyErr_SetString(PyExc_RuntimeError, "CudaModel is not initialized");
        return 0;
    }
    return 1;
}

/* a new array, filled with NaN (float) / -1 (int) when the model poisons its outputs */
static PyArrayObject *new_out(CudaModelObject *self, int nd, npy_intp *dims, int type) {
    PyArrayObject *a = (PyArrayObject *)PyArray_SimpleNew(nd, dims, type);
    if (a && self->poison) memset(PyArray_DATA(a), 0xFF, PyArray_NBYTES(a));
    return a;
}

static void CudaModel_dealloc(CudaModelObject *self) {
    if (self->md) {
        uq_cuda_model *md = self->md;
        self->md = NULL;
        Py_BEGIN_ALLOW_THREADS
        uq_cuda_model_free(md);
        Py_END_ALLOW_THREADS
    }
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* params: any float array of shape (M, P) -> a C-contiguous float32 copy (or the array itself) */
static PyArrayObject *params_arg(CudaModelObject *self, PyObject *obj, npy_intp *M) {
    PyArrayObject *p = uq_float_arg(obj, 2, "params");
    if (!p) return NULL;
    if ((size_t)PyArray_DIM(p, 1) != self->arch.n_params || PyArray_DIM(p, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "params must have shape (M, %zu) with M >= 1, got (%zd, %zd)",
                     self->arch.n_params, (Py_ssize_t)PyArray_DIM(p, 0), (Py_ssize_t)PyArray_DIM(p, 1));
        Py_DECREF(p);
        return NULL;
    }
    *M = PyArray_DIM(p, 0);
    return p;
}

static int CudaModel_init(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "params", "in_shape", "device", NULL};
    const char *spec;
    PyObject *p_obj, *in_shape = NULL;
    int device = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sO|Oi:CudaModel", kwlist, &spec, &p_obj, &in_shape, &device))
        return -1;
    if (self->md) {
        PyErr_SetString(PyExc_RuntimeError, "CudaModel is already initialized");
        return -1;
    }
    if (uq_arch_arg(spec, in_shape, &self->arch)) return -1;
    npy_intp M;
    PyArrayObject *params = params_arg(self, p_obj, &M);
    if (!params) return -1;
    if (!self->lock && !(self->lock = PyThread_allocate_lock())) {
        Py_DECREF(params);
        PyErr_NoMemory();
        return -1;
    }
    uq_cuda_model *md = NULL;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_cuda_model_create(&md, &self->arch, (int)M, device);
    if (st == UQ_OK) st = uq_cuda_upload_params(md, (const float *)PyArray_DATA(params));
    if (st && md) {
        uq_cuda_model_free(md);
        md = NULL;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(params);
    if (st) {
        uq_raise_status(st);
        return -1;
    }
    self->md = md;
    return 0;
}

static PyObject *CudaModel_get_params(CudaModelObject *self, PyObject *unused) {
    if (!ready(self)) return NULL;
    npy_intp dims[2] = {uq_cuda_model_members(self->md), (npy_intp)self->arch.n_params};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) return NULL;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_download_params(self->md, (float *)PyArray_DATA(out)));
    if (st) {
        Py_DECREF(out);
        return uq_raise_status(st);
    }
    return (PyObject *)out;
}

static PyObject *CudaModel_set_params(CudaModelObject *self, PyObject *arg) {
    if (!ready(self)) return NULL;
    npy_intp M;
    PyArrayObject *p = params_arg(self, arg, &M);
    if (!p) return NULL;
    if (M != uq_cuda_model_members(self->md)) {
        PyErr_Format(PyExc_ValueError, "params must hold %d members, got %zd", uq_cuda_model_members(self->md),
                     (Py_ssize_t)M);
        Py_DECREF(p);
        return NULL;
    }
    uq_status st;
    UNLOCKED(self, st = uq_cuda_upload_params(self->md, (const float *)PyArray_DATA(p)));
    Py_DECREF(p);
    if (st) return uq_raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *CudaModel_predict(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "logits", "batch_size", NULL};
    PyObject *x_obj;
    int logits = 0, chunk = 0;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pi:predict", kwlist, &x_obj, &logits, &chunk)) return NULL;
    npy_intp N;
    PyArrayObject *x = uq_images_arg(x_obj, &self->arch, "x", &N);
    if (!x) return NULL;
    npy_intp dims[3] = {uq_cuda_model_members(self->md), N, self->arch.n_classes};
    PyArrayObject *out = new_out(self, 3, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(x);
        return NULL;
    }
    uq_status st;
    UNLOCKED(self, st = uq_cuda_predict(self->md, (float *)PyArray_DATA(out), (const float *)PyArray_DATA(x), N, chunk,
                                        logits));
    Py_DECREF(x);
    if (st) {
        Py_DECREF(out);
        return uq_raise_status(st);
    }
    return (PyObject *)out;
}

static PyObject *CudaModel_decompose(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "batch_size", NULL};
    PyObject *x_obj;
    int chunk = 0;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i:decompose", kwlist, &x_obj, &chunk)) return NULL;
    npy_intp N;
    PyArrayObject *x = uq_images_arg(x_obj, &self->arch, "x", &N);
    if (!x) return NULL;
    const int C = self->arch.n_classes;
    npy_intp d3[3] = {uq_cuda_model_members(self->md), N, C}, d2[2] = {N, C}, d1[1] = {N};
    PyArrayObject *probs = new_out(self, 3, d3, NPY_FLOAT32), *mean = new_out(self, 2, d2, NPY_FLOAT32);
    PyArrayObject *pred = new_out(self, 1, d1, NPY_INT32), *maxp = new_out(self, 1, d1, NPY_FLOAT32);
    PyArrayObject *tot = new_out(self, 1, d1, NPY_FLOAT32), *ale = new_out(self, 1, d1, NPY_FLOAT32);
    PyArrayObject *epi = new_out(self, 1, d1, NPY_FLOAT32);
    PyObject *res = NULL;
    if (probs && mean && pred && maxp && tot && ale && epi) {
        uq_status st;
        UNLOCKED(self, st = uq_cuda_decompose(self->md, (float *)PyArray_DATA(probs), (float *)PyArray_DATA(mean),
                                              (int32_t *)PyArray_DATA(pred), (float *)PyArray_DATA(maxp),
                                              (float *)PyArray_DATA(tot), (float *)PyArray_DATA(ale),
                                              (float *)PyArray_DATA(epi), (const float *)PyArray_DATA(x), N, chunk));
        if (st) uq_raise_status(st);
        else
            res = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "member_probs", probs, "mean_probs", mean, "pred",
                                pred, "max_prob", maxp, "total", tot, "aleatoric", ale, "epistemic", epi);
    }
    Py_DECREF(x);
    Py_XDECREF(probs); Py_XDECREF(mean); Py_XDECREF(pred); Py_XDECREF(maxp);
    Py_XDECREF(tot); Py_XDECREF(ale); Py_XDECREF(epi);
    return res;
}

enum { MAX_TARGETS = 16 };

static PyObject *CudaModel_input_gradients(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "targets", "chunk", "member", NULL};
    PyObject *x_obj, *t_obj, *member_obj = Py_None;
    int chunk = 0, member = -1;
    PyArrayObject *x = NULL, *grads = NULL, *values = NULL;
    PyArrayObject *classes[MAX_TARGETS] = {NULL};
    uq_target targets[MAX_TARGETS];
    Py_ssize_t T = 0;
    npy_intp N;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|iO:input_gradients", kwlist, &x_obj, &t_obj, &chunk, &member_obj))
        return NULL;
    if (member_obj != Py_None) {
        const int M = uq_cuda_model_members(self->md);
        long k = PyLong_AsLong(member_obj);
        if (k == -1 && PyErr_Occurred()) return NULL;
        if (k < -M || k >= M)
            return PyErr_Format(PyExc_IndexError, "member %ld out of range for an ensemble of %d", k, M);
        member = (int)(k < 0 ? k + M : k);
    }
    const uq_arch *arch = &self->arch;
    if (!(x = uq_images_arg(x_obj, arch, "x", &N))) goto fail;
    if (uq_targets_arg(t_obj, N, arch->n_classes, MAX_TARGETS, targets, classes, &T)) goto fail;
    npy_intp gdims[5] = {N, T, arch->in_c, arch->in_h, arch->in_w}, vdims[2] = {N, T};
    if (!(grads = new_out(self, 5, gdims, NPY_FLOAT32))) goto fail;
    if (!(values = new_out(self, 2, vdims, NPY_FLOAT32))) goto fail;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_input_gradients(self->md, member, (float *)PyArray_DATA(grads), (float *)PyArray_DATA(values),
                                                (const float *)PyArray_DATA(x), (int)N, targets, (int)T, chunk));
    if (st) {
        uq_raise_status(st);
        goto fail;
    }
    Py_DECREF(x);
    for (Py_ssize_t t = 0; t < T; t++) Py_XDECREF(classes[t]);
    return Py_BuildValue("(NN)", grads, values);
fail:
    Py_XDECREF(x); Py_XDECREF(grads); Py_XDECREF(values);
    for (int t = 0; t < MAX_TARGETS; t++) Py_XDECREF(classes[t]);
    return NULL;
}

static PyObject *CudaModel_vjp(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "dlogits", "chunk", NULL};
    PyObject *x_obj, *g_obj;
    int chunk = 0;
    PyArrayObject *x = NULL, *g = NULL, *out = NULL;
    npy_intp N;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|i:vjp", kwlist, &x_obj, &g_obj, &chunk)) return NULL;
    const uq_arch *arch = &self->arch;
    const int M = uq_cuda_model_members(self->md);
    if (!(x = uq_images_arg(x_obj, arch, "x", &N))) goto fail;
    if (!(g = uq_float_arg(g_obj, 4, "dlogits"))) goto fail;
    if (PyArray_DIM(g, 0) != M || PyArray_DIM(g, 1) != N || PyArray_DIM(g, 2) < 1 ||
        PyArray_DIM(g, 3) != arch->n_classes) {
        PyErr_Format(PyExc_ValueError, "dlogits must have shape (%d, %zd, T, %d) with T >= 1", M, (Py_ssize_t)N,
                     arch->n_classes);
        goto fail;
    }
    const int T = (int)PyArray_DIM(g, 2);
    npy_intp dims[5] = {N, T, arch->in_c, arch->in_h, arch->in_w};
    if (!(out = new_out(self, 5, dims, NPY_FLOAT32))) goto fail;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_vjp(self->md, (float *)PyArray_DATA(out), (const float *)PyArray_DATA(x),
                                    (const float *)PyArray_DATA(g), (int)N, T, chunk));
    if (st) {
        uq_raise_status(st);
        goto fail;
    }
    Py_DECREF(x); Py_DECREF(g);
    return (PyObject *)out;
fail:
    Py_XDECREF(x); Py_XDECREF(g); Py_XDECREF(out);
    return NULL;
}

static PyObject *CudaModel_set_optimizer(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"optimizer", "beta1", "beta2", "eps", "momentum", "weight_decay", NULL};
    const char *name = "adam";
    uq_optimizer opt = {UQ_OPT_ADAM, 0.0f, 0.9f, 0.999f, 1e-8f, 0.9f, 0.0f};
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|sfffff:set_optimizer", kwlist, &name, &opt.beta1, &opt.beta2,
                                     &opt.eps, &opt.momentum, &opt.weight_decay))
        return NULL;
    if (strcmp(name, "adam") == 0) opt.kind = UQ_OPT_ADAM;
    else if (strcmp(name, "sgd") == 0) opt.kind = UQ_OPT_SGD;
    else return PyErr_Format(PyExc_ValueError, "optimizer must be 'adam' or 'sgd', got '%s'", name);
    uq_status st;
    UNLOCKED(self, st = uq_cuda_set_optimizer(self->md, &opt));
    if (st) return uq_raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *CudaModel_optimizer_state(CudaModelObject *self, PyObject *unused) {
    if (!ready(self)) return NULL;
    npy_intp dims[2] = {uq_cuda_model_members(self->md), (npy_intp)self->arch.n_params};
    PyArrayObject *m = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    PyArrayObject *v = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!m || !v) {
        Py_XDECREF(m); Py_XDECREF(v);
        return NULL;
    }
    uq_status st;
    UNLOCKED(self, st = uq_cuda_download_optimizer_state(self->md, (float *)PyArray_DATA(m), (float *)PyArray_DATA(v)));
    if (st) {
        Py_DECREF(m); Py_DECREF(v);
        return uq_raise_status(st);
    }
    return Py_BuildValue("(NN)", m, v);
}

/* x (M*B, ...) and y (M*B,): member m's batch is rows [m*B, (m+1)*B) */
static int member_batches(CudaModelObject *self, PyObject *x_obj, PyObject *y_obj, PyArrayObject **x,
                          PyArrayObject **y, int *B) {
    const int M = uq_cuda_model_members(self->md);
    npy_intp N;
    *x = NULL, *y = NULL;
    if (!(*x = uq_images_arg(x_obj, &self->arch, "x", &N))) return -1;
    if (N % M) {
        PyErr_Format(PyExc_ValueError, "x must hold M * B images (M = %d members), got %zd", M, (Py_ssize_t)N);
        goto fail;
    }
    if (!(*y = uq_labels_arg(y_obj, N, self->arch.n_classes, "y"))) goto fail;
    *B = (int)(N / M);
    return 0;
fail:
    Py_CLEAR(*x);
    Py_CLEAR(*y);
    return -1;
}

static PyObject *CudaModel_gradients(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "y", NULL};
    PyObject *x_obj, *y_obj;
    PyArrayObject *x, *y;
    int B;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:gradients", kwlist, &x_obj, &y_obj)) return NULL;
    if (member_batches(self, x_obj, y_obj, &x, &y, &B)) return NULL;
    const int M = uq_cuda_model_members(self->md);
    npy_intp dims[2] = {M, (npy_intp)self->arch.n_params}, d1[1] = {M};
    PyArrayObject *dp = new_out(self, 2, dims, NPY_FLOAT32), *loss = new_out(self, 1, d1, NPY_FLOAT64);
    PyObject *res = NULL;
    if (dp && loss) {
        uq_status st;
        UNLOCKED(self, st = uq_cuda_gradients(self->md, (float *)PyArray_DATA(dp), (double *)PyArray_DATA(loss),
                                              (const float *)PyArray_DATA(x), (const int32_t *)PyArray_DATA(y), B));
        if (st) uq_raise_status(st);
        else res = Py_BuildValue("(OO)", loss, dp);
    }
    Py_DECREF(x); Py_DECREF(y); Py_XDECREF(dp); Py_XDECREF(loss);
    return res;
}

static PyObject *CudaModel_train_step(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "y", "step", "lr", NULL};
    PyObject *x_obj, *y_obj;
    long long step;
    float lr;
    PyArrayObject *x, *y;
    int B;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOLf:train_step", kwlist, &x_obj, &y_obj, &step, &lr)) return NULL;
    if (step < 1) return PyErr_Format(PyExc_ValueError, "step must be >= 1 (1-based), got %lld", step);
    if (!(lr > 0.0f)) return PyErr_Format(PyExc_ValueError, "lr must be > 0");
    if (member_batches(self, x_obj, y_obj, &x, &y, &B)) return NULL;
    npy_intp d1[1] = {uq_cuda_model_members(self->md)};
    PyArrayObject *loss = new_out(self, 1, d1, NPY_FLOAT64), *ok = new_out(self, 1, d1, NPY_INT64);
    PyObject *res = NULL;
    if (loss && ok) {
        uq_status st;
        UNLOCKED(self, st = uq_cuda_train_step(self->md, (const float *)PyArray_DATA(x),
                                               (const int32_t *)PyArray_DATA(y), B, step, lr,
                                               (double *)PyArray_DATA(loss), (int64_t *)PyArray_DATA(ok)));
        if (st) uq_raise_status(st);
        else res = Py_BuildValue("(OO)", loss, ok);
    }
    Py_DECREF(x); Py_DECREF(y); Py_XDECREF(loss); Py_XDECREF(ok);
    return res;
}

static PyObject *CudaModel_set_data(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "y", NULL};
    PyObject *x_obj, *y_obj;
    PyArrayObject *x = NULL, *y = NULL;
    npy_intp N;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:set_data", kwlist, &x_obj, &y_obj)) return NULL;
    if (!(x = uq_images_arg(x_obj, &self->arch, "x", &N))) return NULL;
    if (!(y = uq_labels_arg(y_obj, N, self->arch.n_classes, "y"))) {
        Py_DECREF(x);
        return NULL;
    }
    uq_status st;
    UNLOCKED(self, st = uq_cuda_set_data(self->md, (const float *)PyArray_DATA(x), (const int32_t *)PyArray_DATA(y), N));
    Py_DECREF(x);
    Py_DECREF(y);
    if (st) return uq_raise_status(st);
    Py_RETURN_NONE;
}

/* orders (M, N): each member's row indices into the training set, validated here */
static PyObject *CudaModel_set_orders(CudaModelObject *self, PyObject *arg) {
    if (!ready(self)) return NULL;
    PyArrayObject *o = (PyArrayObject *)PyArray_FROM_O(arg), *wide = NULL, *narrow = NULL;
    if (!o) return NULL;
    PyObject *res = NULL;
    if (!PyArray_ISINTEGER(o) || PyArray_NDIM(o) != 2 || PyArray_DIM(o, 0) != uq_cuda_model_members(self->md)) {
        PyErr_Format(PyExc_ValueError, "orders must be an integer array of shape (%d, N)",
                     uq_cuda_model_members(self->md));
        goto done;
    }
    if (!(wide = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)o, NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST)))
        goto done;
    const npy_intp n = PyArray_DIM(o, 1);
    const npy_int64 *v = (const npy_int64 *)PyArray_DATA(wide);
    for (npy_intp i = 0; i < PyArray_SIZE(wide); i++)
        if (v[i] < 0 || v[i] >= n) {
            PyErr_Format(PyExc_ValueError, "orders holds %lld, outside [0, %zd)", (long long)v[i], (Py_ssize_t)n);
            goto done;
        }
    if (!(narrow = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)wide, NPY_INT32, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST)))
        goto done;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_set_orders(self->md, (const int32_t *)PyArray_DATA(narrow)));
    if (st) uq_raise_status(st);
    else {
        Py_INCREF(Py_None);
        res = Py_None;
    }
done:
    Py_DECREF(o); Py_XDECREF(wide); Py_XDECREF(narrow);
    return res;
}

/* train_steps(first_batch, lrs, batch_size, first_step): enqueues len(lrs) steps, returns at once */
static PyObject *CudaModel_train_steps(CudaModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"first_batch", "lrs", "batch_size", "first_step", NULL};
    long long first_batch, first_step;
    int batch_size;
    PyObject *lr_obj;
    if (!ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "LOiL:train_steps", kwlist, &first_batch, &lr_obj, &batch_size,
                                     &first_step))
        return NULL;
    PyArrayObject *lrs = uq_float_arg(lr_obj, 1, "lrs");
    if (!lrs) return NULL;
    const npy_intp count = PyArray_DIM(lrs, 0);
    uq_status st;
    UNLOCKED(self, st = uq_cuda_train_steps(self->md, first_batch, (int)count, batch_size, first_step,
                                            (const float *)PyArray_DATA(lrs)));
    Py_DECREF(lrs);
    if (st) return uq_raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *CudaModel_epoch_stats(CudaModelObject *self, PyObject *unused) {
    if (!ready(self)) return NULL;
    npy_intp d1[1] = {uq_cuda_model_members(self->md)};
    PyArrayObject *loss = (PyArrayObject *)PyArray_SimpleNew(1, d1, NPY_FLOAT64);
    PyArrayObject *ok = (PyArrayObject *)PyArray_SimpleNew(1, d1, NPY_INT64);
    if (!loss || !ok) {
        Py_XDECREF(loss); Py_XDECREF(ok);
        return NULL;
    }
    uq_status st;
    UNLOCKED(self, st = uq_cuda_epoch_stats(self->md, (double *)PyArray_DATA(loss), (int64_t *)PyArray_DATA(ok)));
    if (st) {
        Py_DECREF(loss); Py_DECREF(ok);
        return uq_raise_status(st);
    }
    return Py_BuildValue("(NN)", loss, ok);
}

static PyObject *CudaModel_synchronize(CudaModelObject *self, PyObject *unused) {
    if (!ready(self)) return NULL;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_synchronize(self->md));
    if (st) return uq_raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *CudaModel_get_members(CudaModelObject *self, void *c) {
    if (!ready(self)) return NULL;
    return PyLong_FromLong(uq_cuda_model_members(self->md));
}

static PyObject *CudaModel_get_device(CudaModelObject *self, void *c) {
    if (!ready(self)) return NULL;
    return PyLong_FromLong(uq_cuda_model_device(self->md));
}

static PyObject *CudaModel_get_poison(CudaModelObject *self, void *c) { return PyBool_FromLong(self->poison); }

static int CudaModel_set_poison(CudaModelObject *self, PyObject *v, void *c) {
    if (!self->md) return PyErr_SetString(PyExc_RuntimeError, "CudaModel is not initialized"), -1;
    const int on = v ? PyObject_IsTrue(v) : 0;
    if (on < 0) return -1;
    self->poison = on;
    UNLOCKED(self, uq_cuda_set_poison(self->md, on));
    return 0;
}

static PyObject *CudaModel_get_tf32(CudaModelObject *self, void *c) { return PyBool_FromLong(self->tf32); }

static int CudaModel_set_tf32(CudaModelObject *self, PyObject *v, void *c) {
    if (!self->md) return PyErr_SetString(PyExc_RuntimeError, "CudaModel is not initialized"), -1;
    const int on = v ? PyObject_IsTrue(v) : 0;
    if (on < 0) return -1;
    uq_status st;
    UNLOCKED(self, st = uq_cuda_set_tf32(self->md, on));
    if (st) return uq_raise_status(st), -1;
    self->tf32 = on;
    return 0;
}

static PyGetSetDef CudaModel_getset[] = {
    {"members", (getter)CudaModel_get_members, NULL, "number of networks", NULL},
    {"device", (getter)CudaModel_get_device, NULL, "CUDA device index", NULL},
    {"poison", (getter)CudaModel_get_poison, (setter)CudaModel_set_poison,
     "fill workspaces and outputs with NaN before every call (tests: unwritten elements show)", NULL},
    {"tf32", (getter)CudaModel_get_tf32, (setter)CudaModel_set_tf32,
     "TF32 tensor cores for the GEMMs (faster, ~1e-3 relative error); default False (FP32)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) (PyCFunction)(void (*)(void))(f)

static PyMethodDef CudaModel_methods[] = {
    {"get_params", FN(CudaModel_get_params), METH_NOARGS, "get_params() -> (M, P) float32: a host copy of the weights"},
    {"set_params", FN(CudaModel_set_params), METH_O, "set_params(params (M, P)): upload weights"},
    {"predict", FN(CudaModel_predict), KW,
     "predict(x, logits=False, batch_size=0) -> (M, N, C) member probabilities (or logits); batch_size 0: auto"},
    {"decompose", FN(CudaModel_decompose), KW,
     "decompose(x, batch_size=0) -> dict: member_probs, mean_probs, pred, max_prob, total, aleatoric, epistemic"},
    {"input_gradients", FN(CudaModel_input_gradients), KW,
     "input_gradients(x, targets, chunk=0, member=None) -> (grads (N, T, C, H, W), values (N, T)); targets as\n"
     "_uqattr.input_gradients: [(kind, classes or None), ...]; member=k: member k alone (chunk 0: auto)"},
    {"vjp", FN(CudaModel_vjp), KW,
     "vjp(x, dlogits (M, N, T, C), chunk=0) -> dx (N, T, C, H, W), summed over members"},
    {"set_optimizer", FN(CudaModel_set_optimizer), KW,
     "set_optimizer(optimizer='adam', beta1=0.9, beta2=0.999, eps=1e-8, momentum=0.9, weight_decay=0.0);\n"
     "zeroes the optimizer state"},
    {"optimizer_state", FN(CudaModel_optimizer_state), METH_NOARGS, "optimizer_state() -> (m, v), each (M, P)"},
    {"gradients", FN(CudaModel_gradients), KW,
     "gradients(x (M*B, ...), y (M*B,)) -> (mean loss (M,), dparams (M, P)); member m's batch is rows m*B..."},
    {"train_step", FN(CudaModel_train_step), KW,
     "train_step(x (M*B, ...), y (M*B,), step, lr) -> (loss_sum (M,), n_correct (M,)): one step of every member"},
    {"set_data", FN(CudaModel_set_data), KW, "set_data(x, y): upload a training set (kept on the GPU)"},
    {"set_orders", FN(CudaModel_set_orders), METH_O, "set_orders(orders (M, N)): each member's order for one epoch"},
    {"train_steps", FN(CudaModel_train_steps), KW,
     "train_steps(first_batch, lrs, batch_size, first_step): enqueue len(lrs) lockstep steps; returns at once"},
    {"epoch_stats", FN(CudaModel_epoch_stats), METH_NOARGS,
     "epoch_stats() -> (loss_sum (M,), n_correct (M,)) since the last call; waits for the enqueued steps"},
    {"synchronize", FN(CudaModel_synchronize), METH_NOARGS, "synchronize(): wait for the enqueued work"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CudaModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uqattr._uqattr.CudaModel",
    .tp_basicsize = sizeof(CudaModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CudaModel(spec, params (M, P), in_shape=(1, 28, 28), device=0)\n\n"
              "An ensemble on one GPU: weights, optimizer state and workspaces stay on the device;\n"
              "arrays cross as NumPy. Calls from several threads are serialized.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)CudaModel_init,
    .tp_dealloc = (destructor)CudaModel_dealloc,
    .tp_methods = CudaModel_methods,
    .tp_getset = CudaModel_getset,
};

PyMethodDef uq_cuda_methods[] = {
    {"cuda_probe", py_cuda_probe, METH_NOARGS,
     "cuda_probe() -> (device_count, reason): usable CUDA devices, and why none when 0"},
    {"cuda_device_info", py_cuda_device_info, METH_O, "cuda_device_info(index) -> dict(name, total_memory, capability)"},
    {NULL, NULL, 0, NULL},
};

int uq_cuda_add_types(PyObject *m) {
    if (PyType_Ready(&CudaModelType) < 0) return -1;
    Py_INCREF(&CudaModelType);
    if (PyModule_AddObject(m, "CudaModel", (PyObject *)&CudaModelType) < 0) {
        Py_DECREF(&CudaModelType);
        return -1;
    }
    return 0;
}

void uq_cuda_build_info(int *compiled, int *usable, int *version) {
    *compiled = 1;
    *usable = uq_cuda_device_count(NULL) > 0;
    *version = uq_cuda_runtime_version();
}

#else /* no CUDA in this build */

static PyObject *py_cuda_probe(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(is)", 0,
                         "uqattr was built without CUDA (no nvcc found at build time, or UQATTR_CUDA=0); "
                         "rebuild with the CUDA toolkit installed to use device='cuda'");
}

PyMethodDef uq_cuda_methods[] = {
    {"cuda_probe", py_cuda_probe, METH_NOARGS,
     "cuda_probe() -> (device_count, reason): usable CUDA devices, and why none when 0"},
    {NULL, NULL, 0, NULL},
};

int uq_cuda_add_types(PyObject *m) { return 0; }

void uq_cuda_build_info(int *compiled, int *usable, int *version) {
    *compiled = 0;
    *usable = 0;
    *version = 0;
}

#endif
