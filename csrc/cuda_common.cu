/* Error reporting and device queries of the CUDA backend. */
#include <string.h>

#include "cuda_backend.h"
#include "cuda_common.h"

uq_status uq_cuda_error(cudaError_t err, const char *call, const char *file, int line) {
    const char *base = strrchr(file, '/');
    /* reset the runtime's last-error state: a failed call that is not sticky (e.g. a
     * cudaMalloc out of memory) would otherwise resurface at the next launchCheck of a
     * later, unrelated call. Sticky errors (a kernel fault) stay and keep failing. */
    cudaGetLastError();
    return uq_fail(UQ_ERR_CUDA, "%s (%s) in %s at %s:%d", cudaGetErrorString(err), cudaGetErrorName(err), call,
                   base ? base + 1 : file, line);
}

uq_status uq_cublas_error(cublasStatus_t st, const char *call, const char *file, int line) {
    const char *base = strrchr(file, '/');
    return uq_fail(UQ_ERR_CUDA, "cuBLAS %s in %s at %s:%d", cublasGetStatusString(st), call, base ? base + 1 : file,
                   line);
}

extern "C" int uq_cuda_device_count(const char **why) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        if (why) *why = cudaGetErrorString(err);
        cudaGetLastError(); /* not sticky: clear it */
        return 0;
    }
    if (n == 0 && why) *why = "no CUDA device found";
    return n;
}

extern "C" int uq_cuda_runtime_version(void) {
    int v = 0;
    if (cudaRuntimeGetVersion(&v) != cudaSuccess) return CUDART_VERSION;
    return v;
}

extern "C" uq_status uq_cuda_device_info(int device, char *name, size_t name_len, size_t *total_mem, int *major,
                                         int *minor) {
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    if (name && name_len) {
        strncpy(name, prop.name, name_len - 1);
        name[name_len - 1] = '\0';
    }
    if (total_mem) *total_mem = prop.totalGlobalMem;
    if (major) *major = prop.major;
    if (minor) *minor = prop.minor;
    return UQ_OK;
}
