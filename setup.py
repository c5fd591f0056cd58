"""Build of uqattr's C extension `uqattr._uqattr`.

Probes what this machine has and builds what it can, saying so:
  * a BLAS for the GEMMs: pkg-config `openblas`, else `cblas.h` with -lopenblas / -lblas;
    none found -> the built-in blocked GEMM only (UQATTR_BLAS=0 forces that);
  * OpenMP for the parallel loops (UQATTR_NUM_THREADS picks the thread count at run time);
  * nvcc (CUDA_HOME, else PATH) for the CUDA backend, csrc/*.cu: compiled for sm_80 and sm_90
    plus PTX, linked with static cudart and cuBLAS; none found -> a CPU-only build.
Knobs (environment): UQATTR_MARCH (default "native"; empty for a portable build),
UQATTR_SANITIZE (e.g. "address,undefined": build with those sanitizers, -O1 -g; any finding aborts;
tests/sanitize.sh builds such an extension in its own venv and runs the test suite under it),
UQATTR_CUDA: unset = CUDA where a toolkit is found, else CPU-only; 0 = CPU-only even where nvcc
exists; 1 = CUDA required (the build fails, saying why, without a toolkit: for CI),
UQATTR_CUDA_ARCHS (default "80;90": the compute capabilities to compile for; PTX is embedded
for the last).
The build log shows every nvcc command ("uqattr build: nvcc ...") and the final link
("uqattr build: link ...") when they run.
"""
import concurrent.futures
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
    # -ffp-contract=fast: ISO C mode (-std=c11) otherwise keeps a * b + c as two roundings, and the
    # GEMM and conv kernels lose their fused multiply-adds
    cflags = ["-std=c11", "-ffp-contract=fast", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Wno-missing-field-initializers"]
    ldflags = []
    macros = []
    sanitize = os.environ.get("UQATTR_SANITIZE", "")
    if sanitize:
        # -fno-sanitize-recover: a UBSan finding aborts (with its report) instead of printing and going on
        cflags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}", "-fno-sanitize-recover=all"]
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
    cuda = find_cuda()
    if cuda:
        macros.append(("UQ_HAVE_CUDA", "1"))
        ldflags += cuda["ldflags"]
        log(f"CUDA: {cuda['nvcc']} ({cuda['version']}), archs {cuda['archs']}, linking {' '.join(cuda['ldflags'])}")
    shown = " ".join(f for f in cflags if not f.startswith("-W"))
    macros.append(("UQ_BUILD_FLAGS", '"' + shown.replace('"', "") + '"'))
    ext = Extension(
        "uqattr._uqattr",
        sources=sources,
        include_dirs=[np.get_include()],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=[os.path.join("csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".h")]
        + [os.path.join(ext_dir, "args.h")] + (cuda["sources"] if cuda else []),
    )
    ext.cuda = cuda
    return ext


# ---- CUDA (csrc/*.cu) ---------------------------------------------------------------------------

def find_cuda():
    """nvcc, flags and sources of the CUDA backend, or None for a CPU-only build (said so)."""
    mode = os.environ.get("UQATTR_CUDA", "").strip()
    if mode == "0":
        log("CUDA: disabled by UQATTR_CUDA=0; building CPU-only")
        return None

    def missing(why):
        if mode:  # UQATTR_CUDA=1: CUDA was asked for, so its absence is an error
            raise RuntimeError(f"uqattr build: UQATTR_CUDA={mode} but {why} (unset UQATTR_CUDA to build CPU-only)")
        log(f"CUDA: {why}; building CPU-only")
        return None

    nvcc = find_nvcc()
    if not nvcc:
        return missing("no nvcc found (set CUDA_HOME or put nvcc on PATH)")
    # the toolkit above bin/nvcc (as named, so /usr/local/cuda stays the symlink it is; else resolved)
    homes = dict.fromkeys(os.path.dirname(os.path.dirname(p)) for p in (nvcc, os.path.realpath(nvcc)))
    lib = next((os.path.join(h, d) for h in homes for d in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"))
                if os.path.exists(os.path.join(h, d, "libcudart_static.a"))), None)
    home = " or ".join(homes)
    if lib is None:
        return missing(f"nvcc at {nvcc} but no libcudart_static.a under {home}")
    if not os.path.exists(os.path.join(lib, "libcublas.so")):
        return missing(f"nvcc at {nvcc} but no cuBLAS (libcublas.so) in {lib}")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    archs = [a.strip() for a in os.environ.get("UQATTR_CUDA_ARCHS", "80;90").replace(",", ";").split(";") if a.strip()]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    sources = sorted(os.path.join("csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc")) if f.endswith(".cu"))
    return {
        "nvcc": nvcc, "version": version[-1] if version else "?", "archs": ";".join(archs), "sources": sources,
        "flags": ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-Icsrc"] + gencode,
        # static cudart (no libcudart needed at run time), cuBLAS found through an rpath; the
        # driver (libcuda) is loaded by cudart on first use, so import works without one
        "ldflags": [f"-L{lib}", "-lcublas", "-lcudart_static", "-ldl", "-lpthread", "-lrt", "-lstdc++",
                    f"-Wl,-rpath,{lib}"],
    }


class BuildExt(build_ext):
    """build_ext that first compiles csrc/*.cu with nvcc into the build temp folder and links the
    objects into the extension (only sources newer than their object are recompiled)."""

    def build_extension(self, ext):
        cuda = getattr(ext, "cuda", None)
        if cuda:
            headers = [os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")]
            jobs = []
            for src in cuda["sources"]:
                obj = os.path.join(self.build_temp, src + ".o")
                newest = max(os.path.getmtime(f) for f in [src] + headers)
                if self.force or not os.path.exists(obj) or os.path.getmtime(obj) < newest:
                    os.makedirs(os.path.dirname(obj), exist_ok=True)
                    jobs.append([cuda["nvcc"], "-c", src, "-o", obj] + cuda["flags"])
                ext.extra_objects.append(obj)
            for cmd in jobs:
                log("nvcc " + " ".join(cmd[1:]))
            with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
                results = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs))
            for cmd, res in zip(jobs, results):
                if res.stdout or res.stderr:  # warnings too
                    sys.stderr.write(res.stdout + res.stderr)
                if res.returncode:
                    raise RuntimeError(f"nvcc failed on {cmd[2]} (set UQATTR_CUDA=0 to build without CUDA)")
            # show the link of the CUDA objects, cudart and cuBLAS into the extension
            spawn = self.compiler.spawn

            def logged_spawn(cmd, *args, **kwargs):
                if any(obj in cmd for obj in ext.extra_objects):
                    log("link " + " ".join(cmd))
                return spawn(cmd, *args, **kwargs)

            self.compiler.spawn = logged_spawn
            try:
                super().build_extension(ext)
            finally:
                self.compiler.spawn = spawn
            return
        super().build_extension(ext)


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExt})
