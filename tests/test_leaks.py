"""Leak checks: every boundary function called many times with valid and with invalid inputs.

Per case, after a warm-up: RSS grows by less than 1 MiB over the calls (see assert_no_leak for
the one-time growth some calls show first), malloc holds less than 64 KiB more (glibc's mallinfo2),
the reference counts of the inputs do not change, and the number of blocks held by Python's allocator (``sys.getallocatedblocks``, which
also counts every leaked array or result object) grows by less than one per 20 calls (at least 20), so that
even one leaked small object per call fails. Cheap calls run 10,000 times; the expensive ones
fewer, as ``N_CALLS`` says. tests/valgrind_leaks.sh checks the C side with memcheck.
"""
import ctypes
import gc
import os
import sys

import numpy as np
import pytest

import uqattr
from uqattr import Ensemble, _uqattr

SPEC, SHAPE = "conv2-pool-fc3", (1, 6, 6)
C = 3
P = _uqattr.arch_layers(SPEC, in_shape=SHAPE)["n_params"]
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20

N_CALLS = {"cheap": 10_000, "fit": 300, "save/load": 300, "attribute": 3_000}


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def raises(exc, fn, *args, **kw):
    def call():
        try:
            fn(*args, **kw)
        except exc as e:
            assert str(e)
            return
        raise AssertionError(f"{fn} did not raise {exc.__name__}")
    return call


def _refcounts(arrays):
    return [sys.getrefcount(a) for a in arrays]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _malloc_in_use_fn():
    """Bytes held by malloc now (glibc >= 2.33: mallinfo2), or None elsewhere."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    fn.restype = _MallInfo2
    return lambda: fn().uordblks + fn().hblkhd


#: under ASan (tests/sanitize.sh) memory is not a leak measure: its allocator replaces glibc's
#: (mallinfo2 sees nothing) and keeps freed blocks in a quarantine of up to 256 MB, so RSS grows
#: by design; the reference counts and Python's allocator blocks are still checked
SANITIZED = "-fsanitize" in uqattr.build_info()["cflags"]
malloc_in_use = None if SANITIZED else _malloc_in_use_fn()
if SANITIZED:  # ASan is ~50x slower here; a leaked object per call still shows in n / 10 calls
    N_CALLS = {k: max(30, n // 10) for k, n in N_CALLS.items()}


def assert_no_leak(name, call, arrays, n, rounds=8):
    for _ in range(max(10, n // 2)):  # warm-up: first-call caches, allocator pools
        call()
    gc.collect()
    refs, blocks, mem = _refcounts(arrays), sys.getallocatedblocks(), rss()
    held = malloc_in_use() if malloc_in_use else 0
    for _ in range(n):
        call()
    gc.collect()
    d_refs = [after - before for after, before in zip(_refcounts(arrays), refs)]
    d_blocks, growth = sys.getallocatedblocks() - blocks, [rss() - mem]
    d_held = (malloc_in_use() - held) if malloc_in_use else 0
    assert not any(d_refs), f"{name}: reference counts of the inputs changed over {n} calls: {d_refs}"
    assert d_blocks < max(n / 20, 20), f"{name}: {d_blocks} more blocks held by Python's allocator after {n} calls"
    assert d_held < 64 << 10, f"{name}: malloc holds {d_held} more bytes after {n} calls"
    # RSS can grow by a few MiB over the first 10,000-40,000 calls of a function returning several
    # small arrays (decompose, calibration) while malloc holds no more bytes and its heap does not
    # grow (pages of the heap touched for the first time as free space is reused), then it stays
    # flat (measured over 60,000 calls). So up to `rounds` rounds of n calls, of which one must grow
    # less than 1 MiB; a leak grows in every round.
    if SANITIZED:
        return growth, d_blocks, d_held
    while growth[-1] >= MIB and len(growth) < rounds:
        mem = rss()
        for _ in range(n):
            call()
        growth.append(rss() - mem)
    assert growth[-1] < MIB, (f"{name}: RSS grew in each of {rounds} rounds of {n} calls: "
                              f"{[round(g / MIB, 2) for g in growth]} MiB")
    return growth, d_blocks, d_held


def _make_data():
    rng = np.random.default_rng(0)
    params = np.stack([_uqattr.init_params(SPEC, s, in_shape=SHAPE) for s in (1, 2)])
    x = rng.uniform(size=(4,) + SHAPE).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    xnan = x.copy()
    xnan[1, 0, 2, 2] = np.nan
    probs = _uqattr.predict(SPEC, params, x, in_shape=SHAPE)
    return dict(params=params, p0=params[0].copy(), x=x, y=y, x64=x.astype(np.float64), xf=np.asfortranarray(x),
                xnan=xnan, xint=(x * 255).astype(np.uint8), xbad=x.reshape(4, 36, 1), ybig=y + 10, yf=y.astype(float),
                dl=rng.normal(size=(4, 2, C)).astype(np.float32), dlbad=np.zeros((4, 2, C + 1), np.float32),
                probs=probs, pbad=probs + 1, s_in=rng.normal(size=50), s_out=rng.normal(size=40) + 1,
                snan=np.array([0.0, np.nan]), sinf=np.array([0.0, np.inf]), cls=np.array([2, 0, 1, 1]),
                m=np.zeros(P, np.float32), v=np.zeros(P, np.float32), ps=params[0].copy(),
                edges=np.linspace(-3, 3, 7))


def cases(d):
    """name -> (call, arrays it uses): valid calls, then invalid ones (which must raise)."""
    sh = dict(in_shape=SHAPE)
    tr = _uqattr.Trainer(SPEC, 4, **sh)
    t_ok = [(0, None), (2, None), (4, d["cls"])]
    out = {
        # ---- valid
        "arch_layers": lambda: _uqattr.arch_layers(SPEC, **sh),
        "init_params": lambda: _uqattr.init_params(SPEC, 3, **sh),
        "permutation": lambda: _uqattr.permutation(100, 1, 2),
        "check_data": lambda: _uqattr.check_data(SPEC, d["x64"], d["y"], **sh),
        "predict": lambda: _uqattr.predict(SPEC, d["params"], d["x"], **sh),
        "predict float64 logits": lambda: _uqattr.predict(SPEC, d["params"], d["x64"], logits=True, batch_size=3, **sh),
        "vjp": lambda: _uqattr.vjp(SPEC, d["p0"], d["xf"], d["dl"], **sh),
        "input_gradients": lambda: _uqattr.input_gradients(SPEC, d["params"], d["x"], t_ok, chunk=3, **sh),
        "decompose": lambda: _uqattr.decompose(d["probs"]),
        "ood_metrics": lambda: _uqattr.ood_metrics(d["s_in"], d["s_out"]),
        "calibration": lambda: _uqattr.calibration(d["probs"][0], d["y"], 5),
        "histogram": lambda: (_uqattr.histogram(d["s_in"], 8), _uqattr.histogram(d["s_in"], d["edges"]),
                              _uqattr.histogram(d["s_in"], 4, (0, 1))),
        "histogram_edges": lambda: _uqattr.histogram_edges(d["s_in"], d["s_out"], 10),
        "Trainer()": lambda: _uqattr.Trainer(SPEC, 4, optimizer="sgd", **sh),
        "Trainer.step": lambda: tr.step(d["ps"], d["m"], d["v"], 1, d["x"], d["y"], 1e-6),
        "Trainer.gradients": lambda: tr.gradients(d["p0"], d["x64"], d["y"]),
        "module functions": lambda: (_uqattr.build_info(), _uqattr.set_num_threads(_uqattr.get_num_threads()),
                                     _uqattr.set_gemm_backend(_uqattr.build_info()["gemm"]), _uqattr.cuda_probe()),
        # ---- invalid
        "arch_layers: bad spec": raises(ValueError, _uqattr.arch_layers, "conv2-xyz-fc3", **sh),
        "arch_layers: bad in_shape": raises(TypeError, _uqattr.arch_layers, SPEC, in_shape=(1, 6)),
        "init_params: bad seed": raises(TypeError, _uqattr.init_params, SPEC, "1", **sh),
        "permutation: n < 0": raises(ValueError, _uqattr.permutation, -1, 0),
        "check_data: labels": raises(ValueError, _uqattr.check_data, SPEC, d["x"], d["ybig"], **sh),
        "predict: uint8": raises(TypeError, _uqattr.predict, SPEC, d["params"], d["xint"], **sh),
        "predict: NaN": raises(ValueError, _uqattr.predict, SPEC, d["params"], d["xnan"], **sh),
        "predict: shape": raises(ValueError, _uqattr.predict, SPEC, d["params"], d["xbad"], **sh),
        "predict: float64 params": raises(TypeError, _uqattr.predict, SPEC, d["x64"], d["x"], **sh),
        "vjp: dlogits": raises(ValueError, _uqattr.vjp, SPEC, d["p0"], d["x"], d["dlbad"], **sh),
        "vjp: two networks": raises(ValueError, _uqattr.vjp, SPEC, d["params"], d["x"], d["dl"], **sh),
        "input_gradients: classes": raises(ValueError, _uqattr.input_gradients, SPEC, d["params"], d["x"],
                                           [(0, None), (4, d["ybig"])], **sh),
        "input_gradients: kind": raises(ValueError, _uqattr.input_gradients, SPEC, d["params"], d["x"], [(9, None)], **sh),
        "input_gradients: not pairs": raises(TypeError, _uqattr.input_gradients, SPEC, d["params"], d["x"], [0], **sh),
        "decompose: not probabilities": raises(ValueError, _uqattr.decompose, d["pbad"]),
        "ood_metrics: NaN": raises(ValueError, _uqattr.ood_metrics, d["s_in"], d["snan"]),
        "calibration: labels": raises(ValueError, _uqattr.calibration, d["probs"][0], d["ybig"]),
        "histogram: range": raises(TypeError, _uqattr.histogram, d["s_in"], 4, "ab"),
        "histogram: Inf": raises(ValueError, _uqattr.histogram, d["sinf"]),
        "histogram_edges: Inf": raises(ValueError, _uqattr.histogram_edges, d["s_in"], d["sinf"]),
        "Trainer(): optimizer": raises(ValueError, _uqattr.Trainer, SPEC, 4, optimizer="lbfgs", **sh),
        "Trainer.step: labels": raises(ValueError, tr.step, d["ps"], d["m"], d["v"], 1, d["x"], d["ybig"], 1e-3),
        "Trainer.step: lr": raises(ValueError, tr.step, d["ps"], d["m"], d["v"], 1, d["x"], d["y"], float("inf")),
        "Trainer.gradients: float labels": raises(TypeError, tr.gradients, d["p0"], d["x"], d["yf"]),
        "set_num_threads: -1": raises(ValueError, _uqattr.set_num_threads, -1),
        "set_gemm_backend: name": raises(ValueError, _uqattr.set_gemm_backend, "mkl"),
    }
    if hasattr(_uqattr, "cuda_device_info"):  # CUDA builds
        out["cuda_device_info: no such device"] = raises((RuntimeError, ValueError), _uqattr.cuda_device_info, 10**6)
    return out


DATA = _make_data()
CASE_NAMES = list(cases(DATA))


@pytest.fixture(scope="module")
def data():
    return DATA


@pytest.mark.parametrize("name", CASE_NAMES)
def test_c_entry_point_does_not_leak(data, name):
    assert_no_leak(name, cases(data)[name], list(data.values()), N_CALLS["cheap"])


@pytest.fixture(scope="module")
def ens():
    return Ensemble(SPEC, members=2, seed=0, in_shape=SHAPE)


def test_ensemble_predict_and_attribute_do_not_leak(ens, data):
    x, arrays = data["x"], [data["x"], data["x64"], data["xnan"], ens.params]
    assert_no_leak("predict_proba", lambda: ens.predict_proba(data["x64"]), arrays, N_CALLS["cheap"])
    assert_no_leak("predict_proba: NaN", raises(ValueError, ens.predict_proba, data["xnan"]), arrays, N_CALLS["cheap"])
    sal = uqattr.Saliency(ens)
    assert_no_leak("Saliency.attribute", lambda: sal.attribute(x, target=["total", "epistemic", 1]), arrays,
                   N_CALLS["attribute"])
    assert_no_leak("Saliency.attribute: bad target", raises(ValueError, sal.attribute, x, target="nope"), arrays,
                   N_CALLS["attribute"])


def test_fit_does_not_leak(data):
    e = Ensemble(SPEC, members=1, seed=1, in_shape=SHAPE)
    arrays = [data["x"], data["y"], data["ybig"]]
    def fit():
        e.fit(data["x"], data["y"], epochs=1, batch_size=2, progress=False)
        e.history.clear()  # one record per call is kept on purpose
    assert_no_leak("fit", fit, arrays, N_CALLS["fit"])
    assert_no_leak("fit: bad labels", raises(ValueError, e.fit, data["x"], data["ybig"], progress=False), arrays,
                   N_CALLS["fit"])


def test_save_load_do_not_leak(ens, tmp_path):
    path = tmp_path / "m.npz"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    assert_no_leak("save + load", lambda: Ensemble.load(ens.save(path)), [ens.params], N_CALLS["save/load"])
    assert_no_leak("load: corrupt", raises(ValueError, Ensemble.load, bad), [ens.params], N_CALLS["save/load"])
