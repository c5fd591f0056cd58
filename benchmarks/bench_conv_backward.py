"""conv2d_backward's paths side by side: im2col + GEMM ("dense") and the lists of non-zero
output gradients ("sparse"; "auto", the default, picks per row), at the default network's
two conv shapes.

Each case is a one-conv network on inputs of that conv's shape, timed as
  * vjp: input gradients of T = 3 targets per image, 128 images (what attribution runs), and
  * grad: parameter gradients of a batch of 128 (what training runs),
once as "convN-pool-fc10", where a 2x2 max-pool follows the conv (as in the default network:
the conv and its pool go back in one step, at most one gradient in four is non-zero), and
once as "convN-fc10", where only the ReLU thins the conv's output gradient (about half of it
is non-zero at random weights: the rows are listed from a dense gradient, and "auto" compares
their density with its threshold). The times include the network's other layers, the same for
every path. Run from the repository root:  python benchmarks/bench_conv_backward.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import import_uqattr  # noqa: E402

CASES = [("conv1 + pool", "conv32-pool-fc10", (1, 28, 28)), ("conv2 + pool", "conv64-pool-fc10", (32, 14, 14)),
         ("conv1", "conv32-fc10", (1, 28, 28)), ("conv2", "conv64-fc10", (32, 14, 14))]


def best_time(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    import_uqattr()
    from uqattr import _uqattr
    rng = np.random.default_rng(0)
    print(f"threads: {_uqattr.get_num_threads()}")
    print(f"{'case':12s} {'what':5s} {'dense ms':>9s} {'sparse ms':>10s} {'auto ms':>8s} {'sparse speed-up':>16s}")
    for name, spec, shape in CASES:
        params = _uqattr.init_params(spec, 0, in_shape=shape)
        x = rng.random((128,) + shape, dtype=np.float32)
        y = rng.integers(0, 10, 128)
        dlogits = rng.normal(size=(128, 3, 10)).astype(np.float32)
        trainer = _uqattr.Trainer(spec, 128, in_shape=shape)
        jobs = {"vjp": lambda: _uqattr.vjp(spec, params, x, dlogits, in_shape=shape),
                "grad": lambda: trainer.gradients(params, x, y)}
        for what, fn in jobs.items():
            times = {}
            for mode in ("dense", "sparse", "auto"):
                _uqattr.set_conv_backward(mode)
                times[mode] = best_time(fn)
            _uqattr.set_conv_backward("auto")
            print(f"{name:12s} {what:5s} {times['dense'] * 1e3:9.2f} {times['sparse'] * 1e3:10.2f} "
                  f"{times['auto'] * 1e3:8.2f} {times['dense'] / times['sparse']:15.2f}x")


if __name__ == "__main__":
    main()
