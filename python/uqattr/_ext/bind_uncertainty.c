/* _uqattr: uncertainty decomposition and input gradients of uncertainty
 * targets through an ensemble (csrc/uncertainty.h). */
#include "args.h"

#include "../../../csrc/uncertainty.h"

static PyObject *py_decompose(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"member_probs", NULL};
    PyObject *p_obj;
    PyArrayObject *probs = NULL, *mean = NULL, *pred = NULL, *maxp = NULL, *total = NULL, *ale = NULL, *epi = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:decompose", kwlist, &p_obj)) return NULL;
    if (!(probs = uq_float_arg(p_obj, 3, "member_probs"))) return NULL;
    const npy_intp M = PyArray_DIM(probs, 0), N = PyArray_DIM(probs, 1), C = PyArray_DIM(probs, 2);
    if (M < 1 || N < 1 || C < 2) {
        PyErr_Format(PyExc_ValueError, "member_probs must have shape (M, N, C) with M, N >= 1 and C >= 2, got (%zd, %zd, %zd)",
                     (Py_ssize_t)M, (Py_ssize_t)N, (Py_ssize_t)C);
        goto fail;
    }
    const float *p = (const float *)PyArray_DATA(probs);
    for (npy_intp i = 0; i < M * N * C; i++)
        if (p[i] < 0.0f || p[i] > 1.0f) {
            char msg[128];
            PyOS_snprintf(msg, sizeof msg, "member_probs must be probabilities in [0, 1]; flat index %zd holds %g",
                          (Py_ssize_t)i, (double)p[i]);
            PyErr_SetString(PyExc_ValueError, msg);
            goto fail;
        }
    npy_intp dims2[2] = {N, C}, dims1[1] = {N};
    if (!(mean = (PyArrayObject *)PyArray_SimpleNew(2, dims2, NPY_FLOAT32))) goto fail;
    if (!(pred = (PyArrayObject *)PyArray_SimpleNew(1, dims1, NPY_INT32))) goto fail;
    if (!(maxp = (PyArrayObject *)PyArray_SimpleNew(1, dims1, NPY_FLOAT32))) goto fail;
    if (!(total = (PyArrayObject *)PyArray_SimpleNew(1, dims1, NPY_FLOAT32))) goto fail;
    if (!(ale = (PyArrayObject *)PyArray_SimpleNew(1, dims1, NPY_FLOAT32))) goto fail;
    if (!(epi = (PyArrayObject *)PyArray_SimpleNew(1, dims1, NPY_FLOAT32))) goto fail;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_decompose((float *)PyArray_DATA(mean), (int32_t *)PyArray_DATA(pred), (float *)PyArray_DATA(maxp),
                 (float *)PyArray_DATA(total), (float *)PyArray_DATA(ale), (float *)PyArray_DATA(epi), p, (int)M,
                 (int)N, (int)C);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(probs);
    return Py_BuildValue("{s:N,s:N,s:N,s:N,s:N,s:N}", "mean_probs", mean, "pred", pred, "max_prob", maxp, "total",
                         total, "aleatoric", ale, "epistemic", epi);
fail:
    Py_XDECREF(probs); Py_XDECREF(mean); Py_XDECREF(pred); Py_XDECREF(maxp);
    Py_XDECREF(total); Py_XDECREF(ale); Py_XDECREF(epi);
    return NULL;
}

enum { MAX_TARGETS = 16 };

/* input_gradients(spec, params, x, targets, in_shape=None, chunk=32) -> (grads, values)
 * targets: sequence of (kind, classes) with kind an int of uq_target_kind and
 * classes None or (N,) integers; grads (N, T, C, H, W), values (N, T). */
static PyObject *py_input_gradients(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "params", "x", "targets", "in_shape", "chunk", NULL};
    const char *spec;
    PyObject *p_obj, *x_obj, *t_obj, *in_shape = NULL;
    int chunk = 32;
    uq_arch arch;
    PyArrayObject *params = NULL, *x = NULL, *grads = NULL, *values = NULL;
    PyArrayObject *classes[MAX_TARGETS] = {NULL};
    uq_target targets[MAX_TARGETS];
    npy_intp M, N;
    Py_ssize_t T = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOOO|Oi:input_gradients", kwlist, &spec, &p_obj, &x_obj, &t_obj,
                                     &in_shape, &chunk))
        return NULL;
    if (uq_arch_arg(spec, in_shape, &arch)) return NULL;
    if (chunk < 1) return PyErr_Format(PyExc_ValueError, "chunk must be >= 1, got %d", chunk);
    if (!(params = uq_slab_arg(p_obj, arch.n_params, 0, "params", &M))) goto fail;
    if (!(x = uq_images_arg(x_obj, &arch, "x", &N))) goto fail;
    if (uq_targets_arg(t_obj, N, arch.n_classes, MAX_TARGETS, targets, classes, &T)) goto fail;
    npy_intp gdims[5] = {N, T, arch.in_c, arch.in_h, arch.in_w}, vdims[2] = {N, T};
    if (!(grads = (PyArrayObject *)PyArray_SimpleNew(5, gdims, NPY_FLOAT32))) goto fail;
    if (!(values = (PyArrayObject *)PyArray_SimpleNew(2, vdims, NPY_FLOAT32))) goto fail;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_input_gradients((float *)PyArray_DATA(grads), (float *)PyArray_DATA(values), &arch,
                            (const float *)PyArray_DATA(params), (int)M, (const float *)PyArray_DATA(x), (int)N,
                            targets, (int)T, chunk);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(params); Py_DECREF(x);
    for (Py_ssize_t t = 0; t < T; t++) Py_XDECREF(classes[t]);
    return Py_BuildValue("(NN)", grads, values);
fail:
    Py_XDECREF(params); Py_XDECREF(x); Py_XDECREF(grads); Py_XDECREF(values);
    for (int t = 0; t < MAX_TARGETS; t++) Py_XDECREF(classes[t]);
    return NULL;
}

PyMethodDef uq_uncertainty_methods[] = {
    {"decompose", (PyCFunction)(void (*)(void))py_decompose, METH_VARARGS | METH_KEYWORDS,
     "decompose(member_probs (M, N, C)) -> dict of mean_probs, pred, max_prob, total, aleatoric, epistemic (nats)"},
    {"input_gradients", (PyCFunction)(void (*)(void))py_input_gradients, METH_VARARGS | METH_KEYWORDS,
     "input_gradients(spec, params (M, P), x, targets, in_shape=None, chunk=32) -> (grads (N, T, C, H, W), values (N, T))\n"
     "targets: [(kind, classes or None), ...], kind 0 total, 1 aleatoric, 2 epistemic, 3 max_prob, 4 prob, 5 logit"},
    {NULL, NULL, 0, NULL},
};
