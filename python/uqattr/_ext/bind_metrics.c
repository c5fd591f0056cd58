/* _uqattr: OOD-detection, calibration and histogram metrics (csrc/metrics.h).
 * Scores cross as float64 (1, n) arrays, probabilities as float32 (N, C). */
#include "args.h"

#include <math.h>
#include <string.h>

#include "../../../csrc/metrics.h"

#define MAX_BINS (1 << 24)

/* A 1-D array of real numbers (bool, int or float; no complex, strings or
 * objects) as C-contiguous float64 with at least min_n values and no NaN. */
static PyArrayObject *double_arg(PyObject *obj, const char *what, npy_intp min_n) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_O(obj), *out = NULL;
    if (!arr) return NULL;
    if (!(PyArray_ISBOOL(arr) || PyArray_ISINTEGER(arr) || PyArray_ISFLOAT(arr)) || PyArray_ISCOMPLEX(arr)) {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError, "%s must be a real numeric array (int or float), got dtype %S", what, dt);
        Py_XDECREF(dt);
        goto done;
    }
    if (PyArray_NDIM(arr) != 1) {
        PyObject *shape = PyObject_GetAttrString((PyObject *)arr, "shape");
        PyErr_Format(PyExc_ValueError, "%s must be 1-dimensional, shape (n,), got shape %S", what, shape);
        Py_XDECREF(shape);
        goto done;
    }
    if (PyArray_DIM(arr, 0) < min_n) {
        PyErr_Format(PyExc_ValueError, "%s must have at least %zd value%s, got %zd%s", what, (Py_ssize_t)min_n,
                     min_n == 1 ? "" : "s", (Py_ssize_t)PyArray_DIM(arr, 0), PyArray_DIM(arr, 0) ? "" : " (empty)");
        goto done;
    }
    out = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)arr, NPY_FLOAT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!out) goto done;
    const double *p = (const double *)PyArray_DATA(out);
    const npy_intp n = PyArray_DIM(out, 0);
    for (npy_intp i = 0; i < n; i++)
        if (isnan(p[i])) {
            PyErr_Format(PyExc_ValueError, "%s contains NaN (first at index %zd)", what, (Py_ssize_t)i);
            Py_CLEAR(out);
            break;
        }
done:
    Py_DECREF(arr);
    return out;
}

/* range=(lo, hi): any sequence of two real numbers */
static int range_arg(PyObject *range, double *lo, double *hi) {
    PyObject *seq = PySequence_Check(range) ? PySequence_Fast(range, "") : NULL;
    if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
        Py_XDECREF(seq);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "range must be a pair (lo, hi) of numbers, got %R", range);
        return -1;
    }
    *lo = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, 0));
    if (!(*lo == -1.0 && PyErr_Occurred())) *hi = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, 1));
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "range must be a pair (lo, hi) of numbers, got %R", range);
        return -1;
    }
    return 0;
}

static int n_bins_arg(Py_ssize_t n_bins) {
    if (n_bins < 1 || n_bins > MAX_BINS) {
        PyErr_Format(PyExc_ValueError, "n_bins must be in [1, %d], got %zd", MAX_BINS, n_bins);
        return -1;
    }
    return 0;
}

static PyObject *py_ood_metrics(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores_in", "scores_out", "fpr_convention", NULL};
    PyObject *in_obj, *out_obj;
    const char *conv_name = "ood_positive";
    PyArrayObject *s_in = NULL, *s_out = NULL;
    uq_fpr_convention conv;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|s:ood_metrics", kwlist, &in_obj, &out_obj, &conv_name)) return NULL;
    if (strcmp(conv_name, "ood_positive") == 0) conv = UQ_FPR_OOD_POSITIVE;
    else if (strcmp(conv_name, "id_positive") == 0) conv = UQ_FPR_ID_POSITIVE;
    else return PyErr_Format(PyExc_ValueError, "fpr_convention must be 'ood_positive' or 'id_positive', got '%s'", conv_name);
    if (!(s_in = double_arg(in_obj, "scores_in", 1))) goto fail;
    if (!(s_out = double_arg(out_obj, "scores_out", 1))) goto fail;
    uq_ood_result res;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_ood_metrics(&res, (const double *)PyArray_DATA(s_in), (size_t)PyArray_DIM(s_in, 0),
                        (const double *)PyArray_DATA(s_out), (size_t)PyArray_DIM(s_out, 0), conv, 0.95);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(s_in);
    Py_DECREF(s_out);
    return Py_BuildValue("{s:d,s:d,s:d,s:d}", "auroc", res.auroc, "aupr_in", res.aupr_in, "aupr_out", res.aupr_out,
                         "fpr95", res.fpr);
fail:
    Py_XDECREF(s_in);
    Py_XDECREF(s_out);
    return NULL;
}

static PyObject *py_calibration(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"probs", "labels", "n_bins", NULL};
    PyObject *p_obj, *y_obj;
    Py_ssize_t n_bins = 15;
    PyArrayObject *probs = NULL, *labels = NULL;
    PyArrayObject *lower = NULL, *upper = NULL, *count = NULL, *conf = NULL, *acc = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|n:calibration", kwlist, &p_obj, &y_obj, &n_bins)) return NULL;
    if (n_bins_arg(n_bins)) return NULL;
    if (!(probs = uq_float_arg(p_obj, 2, "probs"))) goto fail;
    const npy_intp N = PyArray_DIM(probs, 0), C = PyArray_DIM(probs, 1);
    if (N < 1 || C < 1 || C > INT32_MAX) {
        PyObject *shape = PyObject_GetAttrString((PyObject *)probs, "shape");
        PyErr_Format(PyExc_ValueError, "probs must have shape (N, C) with N >= 1 and C >= 1, got %S", shape);
        Py_XDECREF(shape);
        goto fail;
    }
    if (!(labels = uq_labels_arg(y_obj, N, (int)C, "labels"))) goto fail;
    npy_intp dims[1] = {(npy_intp)n_bins};
    if (!(lower = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64))) goto fail;
    if (!(upper = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64))) goto fail;
    if (!(count = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64))) goto fail;
    if (!(conf = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64))) goto fail;
    if (!(acc = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64))) goto fail;
    uq_calib_result res;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_calibration(&res, (double *)PyArray_DATA(lower), (double *)PyArray_DATA(upper),
                        (int64_t *)PyArray_DATA(count), (double *)PyArray_DATA(conf), (double *)PyArray_DATA(acc),
                        (const float *)PyArray_DATA(probs), (const int32_t *)PyArray_DATA(labels), (size_t)N, (int)C,
                        (int)n_bins);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(probs);
    Py_DECREF(labels);
    /* "N" steals the five bin arrays, also when building fails */
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:{s:N,s:N,s:N,s:N,s:N}}", "accuracy", res.accuracy, "nll", res.nll,
                         "brier", res.brier, "ece", res.ece, "bins", "lower", lower, "upper", upper, "count", count,
                         "confidence", conf, "accuracy", acc);
fail:
    Py_XDECREF(probs); Py_XDECREF(labels);
    Py_XDECREF(lower); Py_XDECREF(upper); Py_XDECREF(count); Py_XDECREF(conf); Py_XDECREF(acc);
    return NULL;
}

/* ValueError unless every value of a float64 array is finite (automatic ranges need it) */
static int finite_for_range(PyArrayObject *arr, const char *what) {
    const double *p = (const double *)PyArray_DATA(arr);
    for (npy_intp i = 0; i < PyArray_DIM(arr, 0); i++)
        if (!isfinite(p[i])) {
            PyObject *v = PyFloat_FromDouble(p[i]); /* PyErr_Format has no %g */
            if (v)
                PyErr_Format(PyExc_ValueError, "%s[%zd] = %R: the automatic bin range needs finite values; pass "
                             "range or explicit bin edges", what, (Py_ssize_t)i, v);
            Py_XDECREF(v);
            return -1;
        }
    return 0;
}

/* histogram(scores, bins=10, range=None) -> (counts, edges), as numpy.histogram */
static PyObject *py_histogram(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores", "bins", "range", NULL};
    PyObject *x_obj, *bins = NULL, *range = Py_None;
    PyArrayObject *x = NULL, *edges = NULL, *counts = NULL;
    Py_ssize_t n_bins = 10;
    double lo = 0.0, hi = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO:histogram", kwlist, &x_obj, &bins, &range)) return NULL;
    const int given_edges = bins && !PyLong_Check(bins) && !PyArray_IsScalar(bins, Integer);
    if (given_edges && PyFloat_Check(bins))
        return PyErr_Format(PyExc_TypeError, "bins must be an int (number of bins) or a 1-D array of edges, got %R", bins);
    if (!given_edges) {
        if (bins && (n_bins = PyNumber_AsSsize_t(bins, PyExc_OverflowError)) == -1 && PyErr_Occurred()) return NULL;
        if (n_bins_arg(n_bins)) return NULL;
        if (range != Py_None && range_arg(range, &lo, &hi)) return NULL;
    }
    if (!(x = double_arg(x_obj, "scores", 1))) goto fail;
    if (given_edges) {
        if (!(edges = double_arg(bins, "bins", 2))) goto fail;
        n_bins = PyArray_DIM(edges, 0) - 1;
    } else {
        if (range == Py_None && finite_for_range(x, "scores")) goto fail;
        npy_intp edims[1] = {n_bins + 1};
        if (!(edges = (PyArrayObject *)PyArray_SimpleNew(1, edims, NPY_FLOAT64))) goto fail;
    }
    npy_intp dims[1] = {n_bins};
    if (!(counts = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64))) goto fail;
    const double *xp = (const double *)PyArray_DATA(x);
    const size_t n = (size_t)PyArray_DIM(x, 0);
    double *ep = (double *)PyArray_DATA(edges);
    uq_status st = UQ_OK;
    Py_BEGIN_ALLOW_THREADS
    if (!given_edges) st = range != Py_None ? uq_histogram_edges(ep, lo, hi, (size_t)n_bins)
                                            : uq_histogram_shared_edges(ep, xp, n, NULL, 0, (size_t)n_bins);
    if (st == UQ_OK) st = uq_histogram((int64_t *)PyArray_DATA(counts), xp, n, ep, (size_t)n_bins);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(x);
    return Py_BuildValue("(NN)", counts, edges);
fail:
    Py_XDECREF(x); Py_XDECREF(edges); Py_XDECREF(counts);
    return NULL;
}

/* histogram_edges(scores_in, scores_out, n_bins=50) -> shared edges over the joint min/max */
static PyObject *py_histogram_edges(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"scores_in", "scores_out", "n_bins", NULL};
    PyObject *a_obj, *b_obj;
    Py_ssize_t n_bins = 50;
    PyArrayObject *a = NULL, *b = NULL, *edges = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|n:histogram_edges", kwlist, &a_obj, &b_obj, &n_bins)) return NULL;
    if (n_bins_arg(n_bins)) return NULL;
    if (!(a = double_arg(a_obj, "scores_in", 1)) || finite_for_range(a, "scores_in")) goto fail;
    if (!(b = double_arg(b_obj, "scores_out", 1)) || finite_for_range(b, "scores_out")) goto fail;
    npy_intp dims[1] = {n_bins + 1};
    if (!(edges = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT64))) goto fail;
    uq_status st;
    Py_BEGIN_ALLOW_THREADS
    st = uq_histogram_shared_edges((double *)PyArray_DATA(edges), (const double *)PyArray_DATA(a),
                                   (size_t)PyArray_DIM(a, 0), (const double *)PyArray_DATA(b),
                                   (size_t)PyArray_DIM(b, 0), (size_t)n_bins);
    Py_END_ALLOW_THREADS
    if (st) { uq_raise_status(st); goto fail; }
    Py_DECREF(a);
    Py_DECREF(b);
    return (PyObject *)edges;
fail:
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(edges);
    return NULL;
}

PyMethodDef uq_metrics_methods[] = {
    {"ood_metrics", (PyCFunction)(void (*)(void))py_ood_metrics, METH_VARARGS | METH_KEYWORDS,
     "ood_metrics(scores_in, scores_out, fpr_convention='ood_positive') -> dict(auroc, aupr_in, aupr_out, fpr95)\n"
     "Higher score = more OOD; OOD is the positive class of auroc / aupr_out; fpr95 at TPR >= 0.95 of OOD\n"
     "('ood_positive') or of ID with negated scores ('id_positive')."},
    {"calibration", (PyCFunction)(void (*)(void))py_calibration, METH_VARARGS | METH_KEYWORDS,
     "calibration(probs, labels, n_bins=15) -> dict(accuracy, nll, brier, ece,\n"
     "bins=dict(lower, upper, count, confidence, accuracy)); probs (N, C), labels (N,)"},
    {"histogram", (PyCFunction)(void (*)(void))py_histogram, METH_VARARGS | METH_KEYWORDS,
     "histogram(scores, bins=10, range=None) -> (int64 counts, float64 edges), as numpy.histogram on float64\n"
     "scores: bins is a number of equal-width bins over range (default: min/max) or an array of edges"},
    {"histogram_edges", (PyCFunction)(void (*)(void))py_histogram_edges, METH_VARARGS | METH_KEYWORDS,
     "histogram_edges(scores_in, scores_out, n_bins=50) -> float64 edges (n_bins + 1,): equal-width bins over\n"
     "the joint min/max of both arrays, as numpy.histogram_bin_edges(np.concatenate(...), n_bins)"},
    {NULL, NULL, 0, NULL},
};
