"""The C boundary: every bad input gets a clear Python exception (never a crash),
acceptable inputs in any layout give the same result as their contiguous float32
form, inputs are never modified, and no call leaks a reference."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uqattr import Ensemble, _uqattr

SPEC = "conv4-pool-fc10"           # a small MNIST-shaped network: fast boundary checks
C = 10
P = _uqattr.arch_layers(SPEC)["n_params"]


@pytest.fixture(scope="module")
def net():
    """(params (P,), x (6, 1, 28, 28), y (6,), dlogits (6, 2, 10)) for SPEC."""
    rng = np.random.default_rng(0)
    params = _uqattr.init_params(SPEC, 1)
    x = rng.uniform(size=(6, 1, 28, 28)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 9, 5])
    dlogits = rng.normal(size=(6, 2, C)).astype(np.float32)
    return params, x, y, dlogits


@pytest.fixture(scope="module")
def ens(net):
    e = Ensemble(SPEC, members=2, seed=3)
    e.params.flags.writeable = False  # shared by tests of this module
    return e


def trainer(batch=8):
    return _uqattr.Trainer(SPEC, batch)


# Every entry point that takes images, as f(x) with the other arguments valid.
def image_entry_points(net, ens):
    params, _, y, dlogits = net

    def n(x):  # images in x, as the labels / dlogits passed along must match
        return len(x) if np.ndim(x) else 1

    def step(x):
        p, m, v = params.copy(), np.zeros(P, np.float32), np.zeros(P, np.float32)
        return trainer().step(p, m, v, 1, x, y[:n(x)], 1e-3)

    return {
        "Ensemble.predict_proba": lambda x: ens.predict_proba(x),
        "_uqattr.predict": lambda x: _uqattr.predict(SPEC, ens.params, x),
        "_uqattr.vjp": lambda x: _uqattr.vjp(SPEC, params, x, dlogits[:n(x)]),
        "Trainer.gradients": lambda x: trainer().gradients(params, x, y[:n(x)]),
        "Trainer.step": step,
        "Ensemble.fit": lambda x: Ensemble(SPEC, members=1).fit(x, y[:n(x)], epochs=1, batch_size=4,
                                                                progress=False),
    }


ENTRY_POINTS = ["Ensemble.predict_proba", "_uqattr.predict", "_uqattr.vjp", "Trainer.gradients",
                "Trainer.step", "Ensemble.fit"]


# ---------------------------------------------------------------------------------------------
# images: dtype, shape, values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool", "complex64", "complex128", "<U3", "S3", "object"])
def test_image_dtype_rejected(net, ens, entry, dtype):
    x = net[1][:4]
    bad = (x * 255).astype(dtype) if dtype not in ("<U3", "S3", "object") else x.astype(dtype)
    before = bad.copy()
    with pytest.raises(TypeError, match=r"dtype") as info:
        image_entry_points(net, ens)[entry](bad)
    if dtype in ("int32", "int64", "uint8"):
        assert "astype(np.float32) / 255" in str(info.value)
    np.testing.assert_array_equal(bad, before)


BAD_SHAPES = [(4, 28), (4, 2, 28, 28), (784,), (4, 1, 28, 27), (4, 785), (4, 1, 28, 28, 1), (1, 4, 1, 28, 28), ()]


@pytest.mark.parametrize("entry,shape", [
    (entry, shape) for entry in ENTRY_POINTS for shape in BAD_SHAPES
    # fit first compares the numbers of images and labels: give it 4 "images" for 4 labels
    if entry != "Ensemble.fit" or (len(shape) >= 1 and shape[0] == 4)])
def test_image_shape_rejected(net, ens, entry, shape):
    bad = np.random.default_rng(1).uniform(size=shape).astype(np.float32)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\) or \(N, 784\)"):
        image_entry_points(net, ens)[entry](bad)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_images_rejected(net, ens, entry, value):
    x = net[1][:4].copy()
    x[2, 0, 13, 7] = value
    before = x.copy()
    # fit validates shuffled minibatches, so its index is not one into x (see test_failed_fit_...)
    where = "" if entry == "Ensemble.fit" else rf" \(first at flat index {2 * 784 + 13 * 28 + 7}\)"
    with pytest.raises(ValueError, match=r"NaN or Inf" + where):
        image_entry_points(net, ens)[entry](x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_empty_batch_rejected(net, ens, entry):
    with pytest.raises(ValueError):
        image_entry_points(net, ens)[entry](np.zeros((0, 1, 28, 28), np.float32))


def _unaligned(x):
    buf = np.empty(x.nbytes + 1, dtype=np.uint8)
    out = buf[1:].view(np.float32).reshape(x.shape)
    out[...] = x
    assert not out.flags.aligned
    return out


LAYOUTS = {
    "reversed": lambda x: np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1],  # negative strides
    "fortran": np.asfortranarray,
    "strided": lambda x: np.repeat(x, 2, axis=0)[::2],
    "float64": lambda x: x.astype(np.float64),
    "float16-exact": None,  # below
    "big-endian": lambda x: x.astype(">f4"),
    "unaligned": _unaligned,
    "read-only": lambda x: _read_only(x.copy()),
    "flat (N, 784)": lambda x: x.reshape(len(x), 784),
    "list": lambda x: x.tolist(),
}


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("entry", ["Ensemble.predict_proba", "_uqattr.predict", "_uqattr.vjp", "Trainer.gradients"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_equals_contiguous(net, ens, entry, layout):
    x = net[1][:4]
    if layout == "float16-exact":
        x = x.astype(np.float16).astype(np.float32)  # values float16 holds exactly
        other = x.astype(np.float16)
    else:
        other = LAYOUTS[layout](x)
    if isinstance(other, np.ndarray):
        assert np.array_equal(np.asarray(other, dtype=np.float32).reshape(x.shape), x)
    before = np.array(other, copy=True)
    f = image_entry_points(net, ens)[entry]
    want, got = f(x), f(other)
    if isinstance(want, tuple):  # Trainer.gradients -> (loss, dparams)
        assert want[0] == got[0]
        want, got = want[1], got[1]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.array(other), before)


def test_float64_images_are_rounded_like_astype(net, ens):
    """float64 images (not float32-representable) give the result of x.astype(float32)."""
    x64 = np.random.default_rng(2).uniform(size=(4, 1, 28, 28))
    np.testing.assert_array_equal(ens.predict_proba(x64), ens.predict_proba(x64.astype(np.float32)))


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------

def label_entry_points(net):
    params, x, _, _ = net

    def step(y):
        p, m, v = params.copy(), np.zeros(P, np.float32), np.zeros(P, np.float32)
        return trainer().step(p, m, v, 1, x[:4], y, 1e-3)

    return {
        "Trainer.gradients": lambda y: trainer().gradients(params, x[:4], y),
        "Trainer.step": step,
        "Ensemble.fit": lambda y: Ensemble(SPEC, members=1).fit(x[:4], y, epochs=1, batch_size=4, progress=False),
    }


BAD_LABELS = [
    (np.array([0, 1, 10, 2]), ValueError, r"\[2\] = 10 is outside \[0, 10\)"),
    (np.array([0, -1, 1, 2]), ValueError, r"\[1\] = -1 is outside"),
    (np.array([0, 1, 2, 2**62], dtype=np.int64), ValueError, "outside"),
    (np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64), ValueError, "outside"),
    (np.array([0, 1, 2, 2**31 + 3], dtype=np.int64), ValueError, "outside"),  # would wrap to 3 in int32
    (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, "integer"),
    (np.array([True, False, True, False]), TypeError, "integer"),
    (np.array(["0", "1", "2", "3"]), TypeError, "integer"),
    (np.array([0, 1, 2]), ValueError, r"shape \(4,\)|3 labels"),
    (np.array([0, 1, 2, 3, 4]), ValueError, r"shape \(4,\)|5 labels"),
    (np.array([[0, 1], [2, 3]]), ValueError, r"shape \(4,\)"),
]


@pytest.mark.parametrize("entry,labels,exc,msg", [
    pytest.param(entry, *case, id=f"{entry}-bad{i}")
    for i, case in enumerate(BAD_LABELS) for entry in ["Trainer.gradients", "Trainer.step", "Ensemble.fit"]
    if entry != "Ensemble.fit" or case[0].ndim == 1])  # fit compares counts first: (2, 2) labels are "2 labels"
def test_bad_labels(net, entry, labels, exc, msg):
    if entry == "Ensemble.fit":  # fit checks shuffled minibatches: its index is not one into y
        msg = msg.replace(r"\[2\] = 10", "= 10").replace(r"\[1\] = -1", "= -1")
    before = labels.copy()
    with pytest.raises(exc, match=msg):
        label_entry_points(net)[entry](labels)
    np.testing.assert_array_equal(labels, before)


def test_labels_any_integer_dtype(net):
    params, x, y, _ = net
    tr = trainer()
    want = tr.gradients(params, x, y)
    for dt in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64):
        got = tr.gradients(params, x, y.astype(dt))
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
    got = tr.gradients(params, x, y[::-1].copy()[::-1])  # non-contiguous labels
    np.testing.assert_array_equal(got[1], want[1])
    got = tr.gradients(params, x, list(y))
    np.testing.assert_array_equal(got[1], want[1])


# ---------------------------------------------------------------------------------------------
# parameter slabs, optimizer state, dlogits, small arguments
# ---------------------------------------------------------------------------------------------

def bad_slabs(params):
    return [
        (params.astype(np.float64), TypeError, "float32"),
        (params.astype(np.float16), TypeError, "float32"),
        (np.repeat(params, 2)[::2], TypeError, "C-contiguous"),
        (params.tolist(), TypeError, "numpy array"),
        (params[:-1].copy(), ValueError, rf"shape \({P},\) or \(M, {P}\)"),
        (np.zeros((1, 1, P), np.float32), ValueError, "shape"),
        (np.zeros((0, P), np.float32), ValueError, "M >= 1"),
        (np.float32(1.0), TypeError, "numpy array"),
    ]


def test_bad_params(net):
    params, x, y, dlogits = net
    for bad, exc, msg in bad_slabs(params):
        calls = {
            "predict": lambda: _uqattr.predict(SPEC, bad, x),
            "vjp": lambda: _uqattr.vjp(SPEC, bad, x, dlogits),
            "gradients": lambda: trainer().gradients(bad, x, y),
            "step params": lambda: trainer().step(bad, np.zeros(P, np.float32), np.zeros(P, np.float32), 1, x, y, 1e-3),
            "step m": lambda: trainer().step(params.copy(), bad, np.zeros(P, np.float32), 1, x, y, 1e-3),
            "step v": lambda: trainer().step(params.copy(), np.zeros(P, np.float32), bad, 1, x, y, 1e-3),
        }
        for name, call in calls.items():
            with pytest.raises(exc, match=msg):
                call()
    # one network only where one is expected
    two = np.stack([params, params])
    with pytest.raises(ValueError, match="one network"):
        _uqattr.vjp(SPEC, two, x, dlogits)
    with pytest.raises(ValueError, match="one network"):
        trainer().step(two, np.zeros_like(two), np.zeros_like(two), 1, x, y, 1e-3)
    # step updates in place: it refuses read-only state
    for i in range(3):
        arrs = [params.copy(), np.zeros(P, np.float32), np.zeros(P, np.float32)]
        arrs[i].flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            trainer().step(*arrs, 1, x, y, 1e-3)
    # predict and vjp read only: read-only weights are fine
    ro = _read_only(params.copy())
    np.testing.assert_array_equal(_uqattr.predict(SPEC, ro, x), _uqattr.predict(SPEC, params, x))


def test_gradients_reject_two_networks(net):
    params, x, y, _ = net
    with pytest.raises(ValueError, match="one network"):
        trainer().gradients(np.stack([params, params * 2]), x, y)


def test_bad_dlogits(net):
    params, x, _, dlogits = net
    cases = [
        (dlogits[:, 0], ValueError, "3-dimensional"),
        (dlogits[None], ValueError, "3-dimensional"),
        (dlogits[:5], ValueError, r"shape \(6, T, 10\)"),
        (np.zeros((6, 2, 11), np.float32), ValueError, r"shape \(6, T, 10\)"),
        (np.zeros((6, 0, 10), np.float32), ValueError, "T >= 1"),
        (dlogits.astype(np.int32), TypeError, "dtype"),
        (dlogits.astype(np.complex64), TypeError, "dtype"),
        (np.where(np.arange(C) == 3, np.nan, dlogits), ValueError, "NaN or Inf"),
    ]
    for bad, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            _uqattr.vjp(SPEC, params, x, bad)
    # float64 and non-contiguous upstream gradients are converted
    want = _uqattr.vjp(SPEC, params, x, dlogits)
    np.testing.assert_array_equal(_uqattr.vjp(SPEC, params, x, dlogits.astype(np.float64)), want)
    np.testing.assert_array_equal(_uqattr.vjp(SPEC, params, x, np.asfortranarray(dlogits)), want)


def in_shape_calls(net, in_shape):
    params, x, _, dlogits = net
    return (lambda: _uqattr.arch_layers(SPEC, in_shape=in_shape),
            lambda: _uqattr.init_params(SPEC, 0, in_shape=in_shape),
            lambda: _uqattr.predict(SPEC, params, x, in_shape=in_shape),
            lambda: _uqattr.vjp(SPEC, params, x, dlogits, in_shape=in_shape),
            lambda: _uqattr.Trainer(SPEC, 4, in_shape=in_shape))


@pytest.mark.parametrize("in_shape", [[1, 28, 28], "abc", np.array([1, 28, 28])], ids=["list", "str", "ndarray"])
def test_in_shape_not_a_tuple(net, in_shape):
    for call in in_shape_calls(net, in_shape):
        try:
            call()
        except (TypeError, ValueError):
            pass  # a clear error is fine; accepting a list like a tuple would be fine too


def test_bad_small_arguments(net):
    params, x, y, dlogits = net
    m, v = np.zeros(P, np.float32), np.zeros(P, np.float32)
    for in_shape, exc, msg in [((1, 28), TypeError, "in_shape"), ((1, 28, 28, 1), TypeError, "in_shape"),
                               ((1.5, 28, 28), TypeError, "integer"), ((0, 28, 28), ValueError, "in_shape"),
                               ((1, -28, 28), ValueError, "in_shape"), ((1, 5000, 5000), ValueError, "in_shape")]:
        for call in in_shape_calls(net, in_shape):
            with pytest.raises(exc, match=msg):
                call()
    with pytest.raises(ValueError, match="batch_size"):
        _uqattr.predict(SPEC, params, x, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        _uqattr.Trainer(SPEC, 0)
    with pytest.raises(ValueError, match="optimizer"):
        _uqattr.Trainer(SPEC, 4, optimizer="lbfgs")
    with pytest.raises(ValueError, match="exceeds the Trainer's batch_size 4"):
        _uqattr.Trainer(SPEC, 4).gradients(params, x, y)
    with pytest.raises(ValueError, match="exceeds the Trainer's batch_size 4"):
        _uqattr.Trainer(SPEC, 4).step(params.copy(), m, v, 1, x, y, 1e-3)
    for step, lr, msg in [(0, 1e-3, "step"), (-3, 1e-3, "step"), (1, 0.0, "lr"), (1, -1e-3, "lr"),
                          (1, float("nan"), "lr")]:
        p = params.copy()
        with pytest.raises(ValueError, match=msg):
            trainer().step(p, m, v, step, x, y, lr)
        np.testing.assert_array_equal(p, params)
    with pytest.raises(TypeError):
        _uqattr.predict(123, params, x)
    with pytest.raises(ValueError):
        _uqattr.predict("fc10\0", params, x)  # embedded NUL
    with pytest.raises(ValueError):
        _uqattr.permutation(-1, 0)
    with pytest.raises(RuntimeError, match="not initialized"):
        _uqattr.Trainer.__new__(_uqattr.Trainer).gradients(params, x, y)
    t = trainer()
    with pytest.raises(RuntimeError, match="already initialized"):
        t.__init__(SPEC, 4)


# ---------------------------------------------------------------------------------------------
# inputs unchanged, no leaks
# ---------------------------------------------------------------------------------------------

def test_inputs_unchanged(net, ens):
    params, x, y, dlogits = net
    xs = [x, np.asfortranarray(x), x.astype(np.float64), x[:, :, ::-1]]
    copies = [a.copy() for a in xs] + [params.copy(), y.copy(), dlogits.copy(), ens.params.copy()]
    for xi in xs:
        ens.predict_proba(xi)
        ens.predict_logits(xi)
        _uqattr.predict(SPEC, params, xi)
        _uqattr.vjp(SPEC, params, xi, dlogits)
        trainer().gradients(params, xi, y)
        p = params.copy()
        trainer().step(p, np.zeros(P, np.float32), np.zeros(P, np.float32), 1, xi, y, 1e-3)
        assert not np.array_equal(p, params)  # step works on its own arrays
        Ensemble(SPEC, members=1).fit(xi, y, epochs=1, batch_size=3, progress=False)
    for a, b in zip(xs + [params, y, dlogits, ens.params], copies):
        np.testing.assert_array_equal(a, b)


def _refcounts(arrays):
    return [sys.getrefcount(a) for a in arrays]


def assert_no_leak(call, arrays, n=100):
    call()  # warm-up (first-call caches)
    before = _refcounts(arrays)
    for _ in range(n):
        call()
    after = _refcounts(arrays)
    assert after == before, f"reference counts changed over {n} calls: {before} -> {after}"


def raises(exc, fn, *args, **kw):
    def call():
        try:
            fn(*args, **kw)
        except exc:
            return
        raise AssertionError(f"{fn} did not raise {exc.__name__}")
    return call


def test_no_reference_leaks(net):
    params, x, y, dlogits = net
    x, y, dlogits = x[:2].copy(), y[:2].copy(), dlogits[:2].copy()  # cheap: 100 calls each
    x64, xf, xi = x.astype(np.float64), np.asfortranarray(x), (x * 255).astype(np.uint8)
    xnan = x.copy()
    xnan[-1, 0, -1, -1] = np.nan
    xbad = x.reshape(2, 28, 28)
    yf, ybig, yshort = y.astype(np.float64), y + 10, y[:1].copy()
    p64, two = params.astype(np.float64), np.stack([params, params])
    ps, m, v = params.copy(), np.zeros(P, np.float32), np.zeros(P, np.float32)
    g_bad, g_nan = dlogits[:, :, :5].copy(), dlogits.copy()
    g_nan[0, 0, 0] = np.inf
    tr = trainer()
    arrays = [params, x, y, dlogits, x64, xf, xi, xnan, xbad, yf, ybig, yshort, p64, two, ps, m, v, g_bad, g_nan]
    cases = {
        # valid calls
        "predict": lambda: _uqattr.predict(SPEC, params, x),
        "predict float64/fortran": lambda: (_uqattr.predict(SPEC, params, x64), _uqattr.predict(SPEC, params, xf)),
        "vjp": lambda: _uqattr.vjp(SPEC, params, xf, dlogits),
        "gradients": lambda: tr.gradients(params, x64, y),
        "step": lambda: tr.step(ps, m, v, 1, x, y, 1e-6),
        # invalid calls
        "uint8 images": raises(TypeError, _uqattr.predict, SPEC, params, xi),
        "NaN images": raises(ValueError, _uqattr.predict, SPEC, params, xnan),
        "bad shape": raises(ValueError, _uqattr.vjp, SPEC, params, xbad, dlogits),
        "float params": raises(TypeError, _uqattr.predict, SPEC, p64, x),
        "two networks": raises(ValueError, _uqattr.vjp, SPEC, two, x, dlogits),
        "bad dlogits": raises(ValueError, _uqattr.vjp, SPEC, params, x, g_bad),
        "NaN dlogits": raises(ValueError, _uqattr.vjp, SPEC, params, x64, g_nan),
        "float labels": raises(TypeError, tr.gradients, params, x, yf),
        "labels out of range": raises(ValueError, tr.step, ps, m, v, 1, x, ybig, 1e-3),
        "short labels": raises(ValueError, tr.gradients, params, x64, yshort),
        "bad m": raises(TypeError, tr.step, ps, p64, v, 1, x, y, 1e-3),
        "bad spec": raises(ValueError, _uqattr.predict, "conv4-xyz-fc10", params, x),
    }
    for name, call in cases.items():
        try:
            assert_no_leak(call, arrays)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def test_no_leaks_through_ensemble(ens, net):
    x, y = net[1][:2].copy(), net[2][:2].copy()
    x64 = x.astype(np.float64)
    e = Ensemble(SPEC, members=1)
    arrays = [x, y, x64, ens.params]
    assert_no_leak(lambda: ens.predict_proba(x64), arrays)
    assert_no_leak(lambda: ens.predict(x[:, 0]), arrays)
    assert_no_leak(raises(TypeError, ens.predict_proba, x.astype(np.int16)), arrays)
    assert_no_leak(lambda: e.fit(x, y, epochs=1, batch_size=2, progress=False), arrays, n=20)
    assert_no_leak(raises(ValueError, e.fit, x, y + 10, epochs=1, progress=False), arrays, n=20)


# ---------------------------------------------------------------------------------------------
# regressions: library bugs these tests found (all fixed)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["label", "nan"])
def test_failed_fit_leaves_weights_unchanged(net, what):
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    if what == "label":
        y[-1] = 10
    else:
        x[-1, 0, 0, 0] = np.nan
    e = Ensemble(SPEC, members=2, seed=1)
    before = e.params.copy()
    with pytest.raises(ValueError):
        e.fit(x, y, epochs=1, batch_size=16, schedule="constant", progress=False)
    np.testing.assert_array_equal(e.params, before)


REPO = Path(__file__).resolve().parent.parent

WIDE_KERNEL = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import reference as R
    from uqattr import _uqattr
    spec, shp = "conv2k13-fc3", (1, 5, 5)   # padding 6 > width 5: valid (PyTorch allows it)
    p = _uqattr.init_params(spec, 1, in_shape=shp)
    x = np.random.default_rng(0).uniform(size=(3,) + shp).astype(np.float32)
    try:
        got = _uqattr.predict(spec, p[None], x, logits=True, in_shape=shp)[0]
    except ValueError as e:  # rejecting the spec clearly would be fine too
        print("rejected:", e)
        sys.exit(0)
    want = R.forward_logits(spec, p.astype(np.float64), x.astype(np.float64), shp)
    err = np.abs(got - want).max()
    print("max |C - reference| =", err)
    sys.exit(0 if err < 1e-5 else 3)
""")


def test_kernel_wider_than_image():
    """Run in a subprocess: the bug corrupts memory."""
    res = subprocess.run([sys.executable, "-c", WIDE_KERNEL.format(tests=str(REPO / "tests"))],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"


MANY_CLASSES = textwrap.dedent("""
    import numpy as np
    from uqattr import _uqattr
    # 4M classes: a stack array of C floats (16 MB) overflowed the 8 MB stack
    r = _uqattr.decompose(np.full((2, 1, 4_000_000), 0.25, np.float32))
    assert r["mean_probs"].shape == (1, 4_000_000) and r["pred"][0] == 0, r
    assert abs(r["aleatoric"][0] - 4_000_000 * 0.25 * np.log(4.0)) < 1e3, r["aleatoric"]
    # the most classes a spec allows, through input gradients (two stack arrays of C floats)
    spec, shp = "fc1000000", (1, 1, 1)
    p = _uqattr.init_params(spec, 1, in_shape=shp)
    g, v = _uqattr.input_gradients(spec, np.stack([p, p]), np.ones((2,) + shp, np.float32),
                                   [(0, None), (4, np.array([3, 999_999]))], in_shape=shp)
    assert g.shape == (2, 2, 1, 1, 1) and np.isfinite(g).all() and np.isfinite(v).all(), (g, v)
    print("ok")
""")


def test_many_classes_do_not_overflow_the_stack():
    """Run in a subprocess: the bug was a segfault (stack arrays sized by the class count)."""
    res = subprocess.run([sys.executable, "-c", MANY_CLASSES], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, f"rc {res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e != "Ensemble.fit"])  # fit: counts first
def test_huge_broadcast_batch_refused_before_copying(net, ens, entry):
    """A stride-0 view claiming 2**31 images was copied to contiguous float32 (a 6.7 TB allocation,
    a MemoryError here, a long stall where it fits) before the image count was checked."""
    x = np.broadcast_to(net[1][:1], (2**31, 1, 28, 28))
    with pytest.raises(ValueError, match="too many images"):
        image_entry_points(net, ens)[entry](x)


def test_fuzz_findings(net):
    """Found by tests/test_fuzz.py (all fixed): an int overflow in the spec parser gave a negative
    parameter count; lr = inf (or a double beyond float range) was taken and made the weights
    inf / NaN; m and v of two networks were taken for one; set_num_threads(2**32 + 5) wrapped to 5;
    an in_shape whose C * H * W overflows 64 bits passed the size check."""
    params, x, y, _ = net
    for spec, shp in [("conv1000000-fc2", (1, 5, 430)), ("conv100000-conv100000-fc2", (1, 200, 200)),
                      ("fc2", (1, 4096, 4096))]:
        try:
            info = _uqattr.arch_layers(spec, in_shape=shp)
        except ValueError as e:
            assert "2**31" in str(e) or "2**24" in str(e)
        else:
            assert info["n_params"] > 0, (spec, info["n_params"])
    with pytest.raises(ValueError, match="more than 2\\*\\*31"):
        _uqattr.arch_layers("conv1000000-fc2", in_shape=(1, 5, 430))
    # C * H * W beyond a long long wrapped around and passed the 2**24 check
    with pytest.raises(ValueError, match="in_shape"):
        _uqattr.arch_layers("fc2", in_shape=(43518, 16976535, 16978003))
    m, v = np.zeros(P, np.float32), np.zeros(P, np.float32)
    for lr in (float("inf"), 1e300):
        p = params.copy()
        with pytest.raises(ValueError, match="lr must be finite"):
            trainer().step(p, m, v, 1, x, y, lr)
        np.testing.assert_array_equal(p, params)
    two = np.zeros((2, P), np.float32)
    for state in ((two, v), (m, two)):
        with pytest.raises(ValueError, match="one network's state"):
            trainer().step(params.copy(), *state, 1, x, y, 1e-3)
    threads = _uqattr.get_num_threads()
    for n in (2**32 + 5, 2**40, -1):
        with pytest.raises((ValueError, OverflowError)):
            _uqattr.set_num_threads(n)
        assert _uqattr.get_num_threads() == threads


def test_targets_that_are_not_pairs(net):
    """Found by tests/test_leaks.py (fixed): a target that is not a tuple (e.g. targets=[0]) was a
    SystemError from PyArg_ParseTuple; now a TypeError. A list pair is taken like a tuple."""
    params, x, _, _ = net
    for bad in ([0], [None], ["total"], [np.array([0, 1])], [(0, None), 3]):
        with pytest.raises(TypeError, match=r"\(kind, classes\) pair"):
            _uqattr.input_gradients(SPEC, params, x, bad)
    want = _uqattr.input_gradients(SPEC, params, x, [(0, None), (4, np.arange(6) % C)])
    got = _uqattr.input_gradients(SPEC, params, x, [[0, None], [4, list(np.arange(6) % C)]])
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
