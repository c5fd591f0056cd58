"""uqattr: uncertainty attribution for deep ensembles.

How uncertain is a deep ensemble on an image, of which kind (aleatoric,
epistemic), and which pixels make it so? The numbers come from a C core
(``uqattr._uqattr``); this package holds the Python face: models, datasets,
attribution methods, plots and the report.
"""
import os

from . import _uqattr, cuda
from .attr import BaselineXGradient, IntegratedGradients, InputXGradient, Saliency, SmoothGrad, input_gradients
from .ensemble import DEFAULT_ARCH, Ensemble
from .uncertainty import Uncertainty, decompose, uncertainty

if os.environ.get("UQATTR_GEMM"):
    _uqattr.set_gemm_backend(os.environ["UQATTR_GEMM"])
if os.environ.get("UQATTR_CONV_BACKWARD"):
    _uqattr.set_conv_backward(os.environ["UQATTR_CONV_BACKWARD"])

__version__ = "0.1.0"


def build_info():
    """What the C core was built with: ``gemm`` (the backend in use: "builtin",
    the default, or "blas", chosen with ``UQATTR_GEMM=blas``), ``conv_backward`` (how conv
    layers back-propagate: "auto", the default, "dense" or "sparse", chosen with
    ``UQATTR_CONV_BACKWARD``), ``blas`` (library found at build time, "" if none), ``openmp``,
    ``num_threads``, ``cuda`` / ``cuda_compiled`` and the compiler ``cflags``."""
    return _uqattr.build_info()


def set_num_threads(n):
    """Threads used by the C core (0 = all processors). The environment
    variable ``UQATTR_NUM_THREADS`` sets the default. BLAS always runs
    single-threaded inside these threads, so the two never oversubscribe."""
    _uqattr.set_num_threads(int(n))


def get_num_threads():
    """Threads used by the C core."""
    return _uqattr.get_num_threads()


def cuda_is_available():
    """True if ``Ensemble(..., device="cuda")`` can be used: uqattr was built with CUDA and a
    GPU is usable now (as ``torch.cuda.is_available()``). See :mod:`uqattr.cuda`."""
    return cuda.is_available()


__all__ = ["Ensemble", "DEFAULT_ARCH", "Uncertainty", "uncertainty", "decompose", "input_gradients", "Saliency",
           "SmoothGrad", "IntegratedGradients", "InputXGradient", "BaselineXGradient", "build_info", "set_num_threads",
           "get_num_threads", "cuda_is_available"]
