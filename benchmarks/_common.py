"""Helpers shared by the benchmarks in this folder.

Standard library only at import time: the benchmarks start worker processes
(``multiprocessing`` "spawn") that re-import the main script, and each worker
must be free to set its environment (thread counts, OpenBLAS core type) before
NumPy, uqattr or PyTorch are loaded.
"""
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback

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


def load_mnist(n, seed=0, split="train", shuffle=True):
    """``n`` real MNIST images of ``split`` ("train" or "test"; float32,
    (n, 1, 28, 28), in [0, 1]) and int64 labels, contiguous: the first ``n``
    of a seeded shuffle (``shuffle=False``: the first ``n`` in file order).
    Falls back to random images (said so on stderr, and in the returned note)
    when the data set is not installed (set ``UQATTR_DATA`` to the folder
    holding ``mnist/``)."""
    import numpy as np
    uqattr = import_uqattr()
    from uqattr import datasets
    rng = np.random.default_rng(seed)
    try:
        x, y = datasets.load("mnist", split)
        how = "of a seeded shuffle" if shuffle else "in file order"
        note = f"MNIST {split} ({x.shape[0]} images, first {min(n, x.shape[0])} {how})"
    except (OSError, ValueError) as e:  # FileNotFoundError, DatasetError
        print(f"note: MNIST not found ({e}); using random images", file=sys.stderr)
        x = rng.random((n, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, n)
        note = "random images (MNIST not found; set UQATTR_DATA)"
    idx = rng.permutation(x.shape[0])[:n] if shuffle else np.arange(min(n, x.shape[0]))
    del uqattr
    return np.ascontiguousarray(x[idx], dtype=np.float32), np.ascontiguousarray(y[idx], dtype=np.int64), note


def load_line():
    """"load average at start: ..." with a warning when the machine is busy."""
    load = os.getloadavg()
    ncpu = os.cpu_count() or 1
    busy = " (busy machine: expect noise; compare the per-round ratios)" if load[0] > 0.5 * ncpu else ""
    return f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (1/5/15 min) on {ncpu} CPUs{busy}"


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


# ---------------------------------------------------------------------------------------------
# worker processes: each contender lives in its own process (its own OpenMP / BLAS runtimes)
# and answers ("method", kwargs) messages
# ---------------------------------------------------------------------------------------------

def _worker_main(conn, cls, cfg):
    try:
        obj = cls(cfg)
        conn.send(("ok", None))
    except BaseException:
        conn.send(("err", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, kwargs = msg
        try:
            conn.send(("ok", getattr(obj, name)(**kwargs)))
        except BaseException:
            conn.send(("err", traceback.format_exc()))


class Worker:
    """An instance of ``cls(cfg)`` in a "spawn" worker process; ``env`` is
    applied to the environment it starts with (thread counts, BLAS core type,
    set before NumPy / uqattr / PyTorch load). ``worker("method", **kwargs)``
    calls ``method`` there and returns its (picklable) result. ``cls`` must be
    importable by the worker: defined at the top level of the main script or
    of a module."""

    def __init__(self, cls, cfg, env=None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            self.proc = ctx.Process(target=_worker_main, args=(child, cls, cfg), daemon=True)
            self.proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        status, err = self.conn.recv()
        if status != "ok":
            self.proc.join()
            raise RuntimeError(f"{cls.__name__} worker failed to start:\n{err}")

    def __call__(self, name, **kwargs):
        self.conn.send((name, kwargs))
        status, res = self.conn.recv()
        if status != "ok":
            raise RuntimeError(res)
        return res

    def close(self):
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None
