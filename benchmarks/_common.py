"""Helpers shared by the benchmarks in this folder.

Standard library only at import time: the benchmarks start worker processes
(``multiprocessing`` "spawn") that re-import the main script, and each worker
must be free to set its environment (thread counts, OpenBLAS core type) before
NumPy, uqattr or PyTorch are loaded.
"""
import math
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_uqattr():
    """Imports uqattr: the installed package (``pip install -e .``), else the
    source tree next to this folder (``python/``, with the extension built in
    place by ``python setup.py build_ext --inplace``)."""
    try:
        import uqattr
    except ImportError:
        sys.path.insert(0, os.path.join(REPO, "python"))
        import uqattr
    return uqattr


def load_mnist(n, seed=0):
    """``n`` real MNIST training images (float32, (n, 1, 28, 28), in [0, 1]) and
    int64 labels, in a seeded shuffled order, contiguous. Falls back to random
    images (said so on stderr, and in the returned note) when the data set is
    not installed (set ``UQATTR_DATA`` to the folder holding ``mnist/``)."""
    import numpy as np
    uqattr = import_uqattr()
    from uqattr import datasets
    rng = np.random.default_rng(seed)
    try:
        x, y = datasets.load("mnist", "train")
        note = f"MNIST train ({x.shape[0]} images, first {min(n, x.shape[0])} of a seeded shuffle)"
    except (OSError, ValueError) as e:  # FileNotFoundError, DatasetError
        print(f"note: MNIST not found ({e}); using random images", file=sys.stderr)
        x = rng.random((n, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n)
        note = "random images (MNIST not found; set UQATTR_DATA)"
    idx = rng.permutation(x.shape[0])[:n]
    del uqattr
    return np.ascontiguousarray(x[idx], dtype=np.float32), np.ascontiguousarray(y[idx], dtype=np.int64), note


def layer_flops(layers):
    """Forward FLOPs per image of each layer of ``_uqattr.arch_layers(...)["layers"]``,
    as ``[(name, kind, flops)]``: 2 x multiply-accumulates of the convolutions
    (stride 1, same padding) and dense layers; pooling, ReLU, bias and the loss
    are not counted (they are < 1% here)."""
    out = []
    for L in layers:
        if L["kind"] == "conv":
            oc, ic, kh, kw = L["weight_shape"]
            _, h, w = L["out_shape"]
            out.append((L["name"], "conv", 2 * oc * ic * kh * kw * h * w))
        elif L["kind"] == "dense":
            o, i = L["weight_shape"]
            out.append((L["name"], "dense", 2 * o * i))
        else:
            out.append((L["name"], L["kind"], 0))
    return out


def flops_per_image(layers):
    """(forward, training step) FLOPs per image. A training step is the forward,
    the weight gradient of every layer (as many FLOPs as its forward) and the
    input gradient of every layer but the first (as many again: the first
    layer's input gradient is not computed when training)."""
    fl = layer_flops(layers)
    fwd = sum(f for _, _, f in fl)
    first = next((f for _, _, f in fl if f), 0)
    return fwd, 3 * fwd - first


class Samples:
    """Throughputs (items/s) of repeated timed runs of one contender."""

    def __init__(self):
        self.rates = []

    def add(self, items, seconds):
        self.rates.append(items / seconds)

    @property
    def best(self):
        return max(self.rates) if self.rates else float("nan")

    @property
    def median(self):
        return statistics.median(self.rates) if self.rates else float("nan")

    def __bool__(self):
        return bool(self.rates)


def paired_ratio(a, b):
    """Median over rounds of a's rate / b's rate in the same round (runs
    interleaved round by round, so slow phases of a shared machine hit both)."""
    pairs = [x / y for x, y in zip(a.rates, b.rates) if y > 0]
    return statistics.median(pairs) if pairs else float("nan")


def fmt_rate(x, digits=0):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def fmt_ratio(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}x"


def table(header, rows):
    """Plain-text table, columns right-aligned but the first."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line([str(h) for h in header]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


class Stopwatch:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
