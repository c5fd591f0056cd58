/* The _uqattr extension: the only Python/C boundary of uqattr. Each bind_*.c
 * file contributes a method table; this file assembles the module. */
#define UQ_ARGS_IMPORT_ARRAY
#include "args.h"

#include "../../../csrc/gemm.h"
#include "../../../csrc/layers.h"

extern PyMethodDef uq_model_methods[];
extern PyMethodDef uq_metrics_methods[];
extern PyMethodDef uq_uncertainty_methods[];
extern PyTypeObject uq_TrainerType;
/* bind_cuda.c (CUDA backend; stubs in a CPU-only build) */
extern PyMethodDef uq_cuda_methods[];
int uq_cuda_add_types(PyObject *m);
void uq_cuda_build_info(int *compiled, int *usable, int *version);

#ifndef UQ_BUILD_FLAGS
#define UQ_BUILD_FLAGS ""
#endif
#ifndef UQ_BLAS_NAME
#define UQ_BLAS_NAME ""
#endif

static PyObject *py_build_info(PyObject *self, PyObject *unused) {
    /* cuda: a device is usable now; cuda_compiled: the backend is built in; cuda_version: "13.0" or "" */
    int cuda_compiled, cuda_usable, cuda_version;
    char cuda_version_str[16] = "";
    cuda_compiled = cuda_usable = cuda_version = 0;
    Py_BEGIN_ALLOW_THREADS
    uq_cuda_build_info(&cuda_compiled, &cuda_usable, &cuda_version);
    Py_END_ALLOW_THREADS
    if (cuda_compiled)
        PyOS_snprintf(cuda_version_str, sizeof cuda_version_str, "%d.%d", cuda_version / 1000, cuda_version % 1000 / 10);
    return Py_BuildValue("{s:s,s:s,s:s,s:O,s:O,s:i,s:O,s:s,s:s}", "gemm", uq_gemm_backend(), "conv_backward",
                         uq_conv_backward(), "blas", UQ_BLAS_NAME,
                         "openmp", uq_have_openmp() ? Py_True : Py_False, "cuda", cuda_usable ? Py_True : Py_False,
                         "num_threads", uq_num_threads(), "cuda_compiled", cuda_compiled ? Py_True : Py_False,
                         "cuda_version", cuda_version_str, "cflags", UQ_BUILD_FLAGS);
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > 65536) /* (int) of a larger long wrapped around: 2**32 + 5 became 5 threads */
        return PyErr_Format(PyExc_ValueError, "number of threads must be in [0, 65536] (0 = all processors), got %ld", n);
    uq_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) { return PyLong_FromLong(uq_num_threads()); }

static PyObject *py_set_gemm_backend(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (uq_set_gemm_backend(name))
        return PyErr_Format(PyExc_ValueError, "GEMM backend must be 'builtin'%s, got '%s'",
                            uq_have_blas() ? " or 'blas'" : " (no BLAS was built in)", name);
    Py_RETURN_NONE;
}

static PyObject *py_set_conv_backward(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    if (uq_set_conv_backward(name))
        return PyErr_Format(PyExc_ValueError, "conv backward must be 'auto', 'dense' or 'sparse', got '%s'", name);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"build_info", py_build_info, METH_NOARGS, "build_info() -> dict: GEMM backend, BLAS, OpenMP, CUDA, flags"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n): threads of the core (0 = all processors)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"set_gemm_backend", py_set_gemm_backend, METH_O, "set_gemm_backend('blas' | 'builtin')"},
    {"set_conv_backward", py_set_conv_backward, METH_O,
     "set_conv_backward('auto' | 'dense' | 'sparse'): how conv layers back-propagate (auto: sparse where the gradient is)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_uqattr", "C core of uqattr: layers, training, uncertainty, attribution, metrics.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__uqattr(void) {
    import_array();
    if (PyType_Ready(&uq_TrainerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    if (PyModule_AddFunctions(m, uq_model_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, uq_metrics_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, uq_uncertainty_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, uq_cuda_methods) < 0 || uq_cuda_add_types(m) < 0) goto fail;
    Py_INCREF(&uq_TrainerType);
    if (PyModule_AddObject(m, "Trainer", (PyObject *)&uq_TrainerType) < 0) {
        Py_DECREF(&uq_TrainerType);
        goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
