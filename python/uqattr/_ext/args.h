/* Argument conversion and validation shared by the _uqattr bindings: every
 * array crossing into the C core passes through one of these once. Each
 * returns a new reference (or NULL with a Python exception set that says
 * what was expected and what came). */
#ifndef UQ_ARGS_H
#define UQ_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL uqattr_ARRAY_API
#ifndef UQ_ARGS_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../../../csrc/common.h"
#include "../../../csrc/model.h"
#include "../../../csrc/uncertainty.h"

/* Raises the Python exception matching a core status, with the core's message. */
PyObject *uq_raise_status(uq_status st);

/* Parses an architecture spec for images of shape in_shape, a (C, H, W)
 * tuple or NULL for MNIST's (1, 28, 28) (ValueError naming the bad token). */
int uq_arch_arg(const char *spec, PyObject *in_shape, uq_arch *arch);

/* Images for `arch`: any floating array of shape (N, C, H, W) or (N, C*H*W)
 * with N >= 1 and only finite values, as a C-contiguous float32 array
 * (a copy only when needed). Sets *n. `what` names the argument in messages. */
PyArrayObject *uq_images_arg(PyObject *obj, const uq_arch *arch, const char *what, npy_intp *n);

/* Integer labels of shape (n,) with values in [0, n_classes), as int32. */
PyArrayObject *uq_labels_arg(PyObject *obj, npy_intp n, int n_classes, const char *what);

/* A float32 C-contiguous array used in place (parameters, optimizer state):
 * no conversion is made, since results must land in the caller's array.
 * ndim 1 or 2; the last dimension must equal `last`, a 2-D one has *rows rows. */
PyArrayObject *uq_slab_arg(PyObject *obj, size_t last, int writable, const char *what, npy_intp *rows);

/* Any float array converted to C-contiguous float32 of exactly `ndim` dims, finite. */
PyArrayObject *uq_float_arg(PyObject *obj, int ndim, const char *what);

/* The targets of an input-gradient call: a sequence of 1 to max_targets (kind, classes)
 * pairs (tuples or lists), kinds UQ_TARGET_TOTAL..UQ_TARGET_LOGIT, classes (n,) labels in
 * [0, n_classes) for the probability and logit kinds (ignored otherwise). Fills targets[],
 * classes[] (new references, NULL where a kind takes none; the caller releases them, also
 * on failure) and *count. Returns 0, or -1 with an exception set. */
int uq_targets_arg(PyObject *obj, npy_intp n, int n_classes, int max_targets, uq_target *targets,
                   PyArrayObject **classes, Py_ssize_t *count);

/* The targets of an input-gradient call: a sequence of 1 to max_targets (kind, classes)
 * pairs (tuples or lists), kinds UQ_TARGET_TOTAL..UQ_TARGET_LOGIT, classes (n,) labels in
 * [0, n_classes) for the probability and logit kinds (ignored otherwise). Fills targets[],
 * classes[] (new references, NULL where a kind takes none; the caller releases them, also
 * on failure) and *count. Returns 0, or -1 with an exception set. */
int uq_targets_arg(PyObject *obj, npy_intp n, int n_classes, int max_targets, uq_target *targets,
                   PyArrayObject **classes, Py_ssize_t *count);

#endif
