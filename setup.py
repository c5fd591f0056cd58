"""Build of uqattr's C extension `uqattr._uqattr`.

Probes what this machine has and builds what it can, saying so:
  * a BLAS for the GEMMs: pkg-config `openblas`, else `cblas.h` with -lopenblas / -lblas;
    none found -> the built-in blocked GEMM only (UQATTR_BLAS=0 forces that);
  * OpenMP for the parallel loops (UQATTR_NUM_THREADS picks the thread count at run time);
  * nvcc for the CUDA backend (not built yet; reported by build_info()).
Knobs (environment): UQATTR_MARCH (default "native"; empty for a portable build),
UQATTR_SANITIZE (e.g. "address,undefined": build with those sanitizers, -O1 -g).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"uqattr build: {msg}", file=sys.stderr)


def compiles(code, cflags=(), ldflags=()):
    """True if `code` compiles and links with the C compiler."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc + list(cflags) + [src, "-o", os.path.join(tmp, "probe")] + list(ldflags)
        return subprocess.run(cmd, capture_output=True).returncode == 0


def pkg_config(name):
    if not shutil.which("pkg-config"):
        return None
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", name], capture_output=True, text=True, check=True).stdout
        libs = subprocess.run(["pkg-config", "--libs", name], capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError:
        return None
    return cflags.split(), libs.split()


CBLAS_PROBE = """#include <cblas.h>
int main(void) { float a = 1, b = 1, c = 0;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
  return c == 1.0f ? 0 : 1; }
"""


def find_blas():
    """(name, cflags, ldflags) of a usable CBLAS, or None."""
    if os.environ.get("UQATTR_BLAS", "1") == "0":
        return None
    found = pkg_config("openblas")
    if found and compiles(CBLAS_PROBE, found[0], found[1]):
        return "openblas", found[0], found[1]
    for lib in ("openblas", "cblas", "blas"):
        if compiles(CBLAS_PROBE, (), [f"-l{lib}"]):
            return lib, [], [f"-l{lib}"]
    return None


def find_openmp():
    probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    return compiles(probe, ["-fopenmp"], ["-fopenmp"])


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def extension():
    sources = sorted(os.path.join("csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".c"))
    ext_dir = os.path.join("python", "uqattr", "_ext")
    sources += sorted(os.path.join(ext_dir, f) for f in os.listdir(os.path.join(ROOT, ext_dir)) if f.endswith(".c"))
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    ldflags = []
    macros = []
    sanitize = os.environ.get("UQATTR_SANITIZE", "")
    if sanitize:
        cflags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
        ldflags += [f"-fsanitize={sanitize}"]
        log(f"sanitizers: {sanitize}")
    else:
        cflags += ["-O3"]
    march = os.environ.get("UQATTR_MARCH", "native")
    if march and compiles("int main(void){return 0;}\n", [f"-march={march}"]):
        cflags.append(f"-march={march}")
    blas = find_blas()
    if blas:
        name, bcflags, bldflags = blas
        cflags += bcflags
        ldflags += bldflags
        macros += [("UQ_HAVE_CBLAS", "1"), ("UQ_BLAS_NAME", f'"{name}"')]
        log(f"BLAS: {name} ({' '.join(bldflags)})")
    else:
        log("BLAS: none found, using the built-in GEMM")
    if find_openmp():
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
        log("OpenMP: yes")
    else:
        log("OpenMP: no (single-threaded core)")
    nvcc = find_nvcc()
    log(f"nvcc: {nvcc or 'not found'} (CUDA backend not built in this version)")
    shown = " ".join(f for f in cflags if not f.startswith("-W"))
    macros.append(("UQ_BUILD_FLAGS", '"' + shown.replace('"', "") + '"'))
    return Extension(
        "uqattr._uqattr",
        sources=sources,
        include_dirs=[np.get_include()],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=[os.path.join("csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".h")]
        + [os.path.join(ext_dir, "args.h")],
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": build_ext})
