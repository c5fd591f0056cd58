#include "args.h"

#include <math.h>

PyObject *uq_raise_status(uq_status st) {
    const char *msg = uq_last_error();
    switch (st) {
    case UQ_ERR_NOMEM: return PyErr_Format(PyExc_MemoryError, "%s", msg && *msg ? msg : "out of memory");
    case UQ_ERR_VALUE: return PyErr_Format(PyExc_ValueError, "%s", msg);
    case UQ_ERR_CUDA: return PyErr_Format(PyExc_RuntimeError, "CUDA error: %s", msg);
    default: return PyErr_Format(PyExc_RuntimeError, "uqattr core error %d: %s", (int)st, msg);
    }
}

int uq_arch_arg(const char *spec, PyObject *in_shape, uq_arch *arch) {
    int c = 1, h = 28, w = 28;
    if (in_shape && in_shape != Py_None) {
        /* PyArg_ParseTuple needs a real tuple (anything else is a SystemError); lists are fine too */
        if (!PyTuple_Check(in_shape) && !PyList_Check(in_shape)) {
            PyErr_Format(PyExc_TypeError, "in_shape must be a tuple (C, H, W) of ints, got %s", Py_TYPE(in_shape)->tp_name);
            return -1;
        }
        PyObject *shape = PySequence_Tuple(in_shape);
        if (!shape) return -1;
        int ok = PyArg_ParseTuple(shape, "iii;in_shape must be a tuple (C, H, W) of ints", &c, &h, &w);
        Py_DECREF(shape);
        if (!ok) return -1;
        /* c * h first: with c, h, w up to 2**31 the triple product overflows even a long long */
        if (c < 1 || h < 1 || w < 1 || (long long)c * h > (1 << 24) || (long long)c * h * w > (1 << 24)) {
            PyErr_Format(PyExc_ValueError, "in_shape (%d, %d, %d) must be positive and at most 2**24 values", c, h, w);
            return -1;
        }
    }
    uq_status st = uq_arch_parse(arch, spec, c, h, w);
    if (st) { uq_raise_status(st); return -1; }
    return 0;
}

static int check_finite(PyArrayObject *arr, const char *what) {
    const float *p = (const float *)PyArray_DATA(arr);
    const npy_intp n = PyArray_SIZE(arr);
    npy_intp bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp i = 0; i < n; i++)
        if (!isfinite(p[i])) { bad = i; break; }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "%s contains NaN or Inf (first at flat index %zd)", what, (Py_ssize_t)bad);
        return -1;
    }
    return 0;
}

/* The argument as an ndarray (as given: no copy of an ndarray) whose dtype is a real floating type,
 * else TypeError. */
static PyArrayObject *float_array_as_given(PyObject *obj, const char *what) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!arr) return NULL;
    if (!PyArray_ISFLOAT(arr) || PyArray_ISCOMPLEX(arr)) {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError, "%s must be a floating-point array (float32 preferred), got dtype %S%s", what, dt,
                     PyArray_ISINTEGER(arr) ? "; for uint8 images use x.astype(np.float32) / 255" : "");
        Py_XDECREF(dt);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* Steals arr: as C-contiguous float32 (a copy only when needed). */
static PyArrayObject *to_float32(PyArrayObject *arr) {
    PyArrayObject *out = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)arr, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(arr);
    return out;
}

static PyArrayObject *as_float_array(PyObject *obj, const char *what) {
    PyArrayObject *arr = float_array_as_given(obj, what);
    return arr ? to_float32(arr) : NULL;
}

PyArrayObject *uq_images_arg(PyObject *obj, const uq_arch *arch, const char *what, npy_intp *n) {
    /* shape and count are checked before the conversion, so that a view claiming a huge N (e.g. a
     * broadcast with stride 0) is refused before a copy of that size is attempted */
    PyArrayObject *arr = float_array_as_given(obj, what);
    if (!arr) return NULL;
    const int nd = PyArray_NDIM(arr);
    const npy_intp *d = PyArray_DIMS(arr);
    const npy_intp size = (npy_intp)arch->in_c * arch->in_h * arch->in_w;
    int ok = (nd == 4 && d[1] == arch->in_c && d[2] == arch->in_h && d[3] == arch->in_w) || (nd == 2 && d[1] == size);
    if (!ok) {
        PyObject *shape = PyObject_GetAttrString((PyObject *)arr, "shape");
        PyErr_Format(PyExc_ValueError, "%s must have shape (N, %d, %d, %d) or (N, %zd), got %S", what, arch->in_c,
                     arch->in_h, arch->in_w, (Py_ssize_t)size, shape);
        Py_XDECREF(shape);
        goto fail;
    }
    if (d[0] == 0) {
        PyErr_Format(PyExc_ValueError, "%s is an empty batch (N = 0)", what);
        goto fail;
    }
    if (d[0] > INT32_MAX / 2) {
        PyErr_Format(PyExc_ValueError, "%s has too many images (%zd)", what, (Py_ssize_t)d[0]);
        goto fail;
    }
    const npy_intp count = d[0]; /* d belongs to the array as given, released by the conversion */
    if (!(arr = to_float32(arr))) return NULL;
    if (check_finite(arr, what)) goto fail;
    *n = count;
    return arr;
fail:
    Py_DECREF(arr);
    return NULL;
}

PyArrayObject *uq_labels_arg(PyObject *obj, npy_intp n, int n_classes, const char *what) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_O(obj), *out = NULL;
    if (!arr) return NULL;
    if (!PyArray_ISINTEGER(arr)) {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError, "%s must be an integer array, got dtype %S", what, dt);
        Py_XDECREF(dt);
        goto done;
    }
    if (PyArray_NDIM(arr) != 1 || PyArray_DIM(arr, 0) != n) {
        PyObject *shape = PyObject_GetAttrString((PyObject *)arr, "shape");
        PyErr_Format(PyExc_ValueError, "%s must have shape (%zd,), got %S", what, (Py_ssize_t)n, shape);
        Py_XDECREF(shape);
        goto done;
    }
    /* through int64 so that out-of-range values are seen before narrowing */
    PyArrayObject *wide = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)arr, NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!wide) goto done;
    const npy_int64 *v = (const npy_int64 *)PyArray_DATA(wide);
    for (npy_intp i = 0; i < n; i++)
        if (v[i] < 0 || v[i] >= n_classes) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld is outside [0, %d)", what, (Py_ssize_t)i, (long long)v[i], n_classes);
            Py_DECREF(wide);
            goto done;
        }
    out = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)wide, NPY_INT32, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(wide);
done:
    Py_DECREF(arr);
    return out;
}

PyArrayObject *uq_slab_arg(PyObject *obj, size_t last, int writable, const char *what, npy_intp *rows) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array, got %s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != NPY_FLOAT32 || !PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr)) {
        PyErr_Format(PyExc_TypeError, "%s must be an aligned C-contiguous float32 array", what);
        return NULL;
    }
    if (writable && !PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be writeable", what);
        return NULL;
    }
    const int nd = PyArray_NDIM(arr);
    if ((nd != 1 && nd != 2) || (size_t)PyArray_DIM(arr, nd - 1) != last || (nd == 2 && PyArray_DIM(arr, 0) < 1)) {
        PyObject *shape = PyObject_GetAttrString(obj, "shape");
        PyErr_Format(PyExc_ValueError, "%s must have shape (%zu,) or (M, %zu) with M >= 1, got %S", what, last, last, shape);
        Py_XDECREF(shape);
        return NULL;
    }
    if (rows) *rows = nd == 2 ? PyArray_DIM(arr, 0) : 1;
    Py_INCREF(arr);
    return arr;
}

PyArrayObject *uq_float_arg(PyObject *obj, int ndim, const char *what) {
    PyArrayObject *arr = as_float_array(obj, what);
    if (!arr) return NULL;
    if (PyArray_NDIM(arr) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-dimensional, got %d dimension(s)", what, ndim, PyArray_NDIM(arr));
        Py_DECREF(arr);
        return NULL;
    }
    if (check_finite(arr, what)) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

int uq_targets_arg(PyObject *obj, npy_intp n, int n_classes, int max_targets, uq_target *targets,
                   PyArrayObject **classes, Py_ssize_t *count) {
    PyObject *seq = PySequence_Fast(obj, "targets must be a sequence of (kind, classes) pairs");
    if (!seq) return -1;
    Py_ssize_t T = PySequence_Fast_GET_SIZE(seq);
    if (T < 1 || T > max_targets) {
        PyErr_Format(PyExc_ValueError, "between 1 and %d targets per call, got %zd", max_targets, T);
        goto fail;
    }
    *count = T;
    for (Py_ssize_t t = 0; t < T; t++) {
        int kind;
        PyObject *cls_obj, *item = PySequence_Fast_GET_ITEM(seq, t), *pair;
        /* PyArg_ParseTuple needs a real tuple: anything else was a SystemError */
        if (!PyTuple_Check(item) && !PyList_Check(item)) {
            PyErr_Format(PyExc_TypeError, "each target must be a (kind, classes) pair, got %s", Py_TYPE(item)->tp_name);
            goto fail;
        }
        if (!(pair = PySequence_Tuple(item))) goto fail;
        int ok = PyArg_ParseTuple(pair, "iO;each target must be a (kind, classes) pair", &kind, &cls_obj);
        Py_DECREF(pair); /* cls_obj stays alive: item (held by seq) holds it */
        if (!ok) goto fail;
        if (kind < UQ_TARGET_TOTAL || kind > UQ_TARGET_LOGIT) {
            PyErr_Format(PyExc_ValueError, "unknown target kind %d", kind);
            goto fail;
        }
        targets[t].kind = (uq_target_kind)kind;
        targets[t].classes = NULL;
        if (kind == UQ_TARGET_PROB || kind == UQ_TARGET_LOGIT) {
            if (!(classes[t] = uq_labels_arg(cls_obj, n, n_classes, "target classes"))) goto fail;
            targets[t].classes = (const int32_t *)PyArray_DATA(classes[t]);
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}
