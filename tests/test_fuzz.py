"""Fuzzing with hypothesis, bounded for CI (the whole file runs in well under a minute on one core).

* The dataset readers (:func:`uqattr.datasets.read_idx_images` / ``read_idx_labels``, the gzipped
  IDX reader behind them, and :func:`uqattr.datasets.read_omniglot_zip`) and the model-file loader
  (:meth:`uqattr.Ensemble.load`) get arbitrary bytes and mutated valid files (flipped bytes,
  truncations, appended junk, IDX headers that lie about their dimensions, npz entries of any
  type): they return a correct result or raise their documented exception (``DatasetError`` /
  ``ValueError`` with a message; never another type, a crash, a hang or a huge allocation, which
  ``tracemalloc`` bounds).
* Every ``_uqattr`` entry point gets generated arrays (dtypes, shapes, strides, zero sizes,
  NaN / Inf, stride-0 views claiming huge N): a clear exception or the result of the same call on
  the contiguous float32 form (or of a NumPy reference).

``COUNTS`` records how many inputs each test tried; the totals are printed at the end of the run
(``pytest_terminal_summary`` in conftest.py).
"""
import collections
import gzip
import io
import os
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from uqattr import Ensemble, _uqattr
from uqattr import datasets as D

COUNTS = collections.Counter()

def fuzz(n):
    """hypothesis settings for n generated inputs: no deadline (no timing), no example database."""
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))

#: what a bad input may raise at the C boundary (always with a message). MemoryError only where an
#: input really asks for that much (a stride-0 view of 10**8 images), never for a small input.
BOUNDARY_ERRORS = (TypeError, ValueError, OverflowError)

#: peak of traced allocations allowed while reading a small fuzzed file
SMALL_FILE_PEAK = 8 << 20


def _count(name):
    COUNTS[name] += 1


def _bounded(fn, *args):
    """fn(*args) with traced allocations; asserts the peak stays small (a lying header must not
    make a reader allocate what it claims)."""
    tracemalloc.start()
    try:
        return fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < SMALL_FILE_PEAK, f"reading a small file allocated {peak / 2**20:.1f} MiB"


def _clear(exc):
    assert str(exc).strip(), f"{type(exc).__name__} without a message"


# ---------------------------------------------------------------------------------------------
# byte mutations
# ---------------------------------------------------------------------------------------------

@st.composite
def mutated(draw, valid: bytes):
    """`valid` with a few flipped / overwritten bytes, a truncation, an insertion or junk appended."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "append", "delete"]))
        if kind in ("flip", "set", "delete") and not data:
            continue
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        else:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# IDX readers
# ---------------------------------------------------------------------------------------------

N_IMAGES = 3
IMAGES = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 28, 28), dtype=np.uint8)
LABELS = np.array([3, 0, 9], np.uint8)
IDX_IMAGES = struct.pack(">IIII", 2051, N_IMAGES, 28, 28) + IMAGES.tobytes()
IDX_LABELS = struct.pack(">II", 2049, N_IMAGES) + LABELS.tobytes()


def _read_images(path):
    try:
        out = _bounded(D.read_idx_images, path)
    except D.DatasetError as e:
        _clear(e)
        assert str(path) in str(e)
        return None
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1:] == (28, 28)
    return out


def _read_labels(path, label_range=None):
    try:
        out = _bounded(D.read_idx_labels, path, label_range)
    except D.DatasetError as e:
        _clear(e)
        return None
    assert out.dtype == np.uint8 and out.ndim == 1
    if label_range is not None and out.size:
        assert label_range[0] <= out.min() and out.max() <= label_range[1]
    return out


@fuzz(450)
@given(data=st.binary(max_size=2048), gzipped=st.booleans())
def test_idx_arbitrary_bytes(tmp_path_factory, data, gzipped):
    path = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte.gz"
    path.write_bytes(_gz(data) if gzipped else data)
    _read_images(path)
    _read_labels(path)
    _count("idx: arbitrary bytes")


@fuzz(600)
@given(st.data())
def test_idx_mutated_file(tmp_path_factory, data):
    """Mutations of the gzip container (CRC, lengths, flags) and of the IDX content under a
    valid gzip container: the result is either an error or exactly what the bytes say."""
    images = data.draw(st.booleans())
    content = IDX_IMAGES if images else IDX_LABELS
    if data.draw(st.booleans()):
        raw = _gz(data.draw(mutated(content)))
    else:
        raw = data.draw(mutated(_gz(content)))
    path = tmp_path_factory.mktemp("idx") / "m.gz"
    path.write_bytes(raw)
    out = _read_images(path) if images else _read_labels(path, (0, 9))
    if out is not None:  # accepted: must be the data as stored
        try:
            plain = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            plain = None  # e.g. trailing junk after the gzip member that GzipFile tolerated
        if plain is not None:
            head = 16 if images else 8
            np.testing.assert_array_equal(out.reshape(-1), np.frombuffer(plain[head:], np.uint8))
    _count("idx: mutated files")


@fuzz(360)
@given(count=st.integers(0, 2**32 - 1), rows=st.integers(0, 2**32 - 1), cols=st.integers(0, 2**32 - 1),
       payload=st.integers(0, 3 * 784 + 5), magic=st.sampled_from([2051, 2049, 2051 ^ 0x100, 0]))
def test_idx_lying_header(tmp_path_factory, count, rows, cols, payload, magic):
    """Header dims claiming up to 2**32 x 2**32 x 2**32 items over a small payload: an error
    (or the exact data when the header is true), never an allocation of the claimed size."""
    path = tmp_path_factory.mktemp("idx") / "lie.gz"
    body = IMAGES.tobytes()[:payload] + bytes(max(0, payload - IMAGES.nbytes))
    path.write_bytes(_gz(struct.pack(">IIII", magic, count, rows, cols) + body))
    out = _read_images(path)
    if out is not None:
        assert magic == 2051 and (rows, cols) == (28, 28) and count * 784 == payload
    path.write_bytes(_gz(struct.pack(">II", magic, count) + body))
    out = _read_labels(path)
    if out is not None:
        assert magic == 2049 and count == payload
    _count("idx: lying headers")


# ---------------------------------------------------------------------------------------------
# Omniglot zips
# ---------------------------------------------------------------------------------------------

def _png_bytes(seed):
    from PIL import Image
    a = np.ones((105, 105), bool)
    a[20 + seed:60, 30:40 + seed] = False
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


VALID_ZIP = _omniglot_zip_bytes([("images_evaluation/Alpha/character01/0965_01.png", _png_bytes(0)),
                                 ("images_evaluation/Alpha/character01/0965_02.png", _png_bytes(3))])


def _read_zip(path):
    try:
        images, labels, names = _bounded(D.read_omniglot_zip, path)
    except D.DatasetError as e:
        _clear(e)
        return None
    assert images.dtype == bool and images.shape[1:] == (105, 105)
    assert labels.shape == (len(images),) and len(names) == len(images)
    return images


@fuzz(450)
@given(st.data())
def test_omniglot_zip_fuzzed(tmp_path_factory, data):
    kind = data.draw(st.sampled_from(["arbitrary", "mutated zip", "mutated png", "odd names"]))
    if kind == "arbitrary":
        raw = data.draw(st.binary(max_size=1024))
    elif kind == "mutated zip":
        raw = data.draw(mutated(VALID_ZIP))
    elif kind == "mutated png":
        raw = _omniglot_zip_bytes([("top/a/c/0965_01.png", data.draw(mutated(_png_bytes(1))))])
    else:
        name = "top/" + data.draw(st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40))
        raw = _omniglot_zip_bytes([(name + data.draw(st.sampled_from([".png", ".PNG", ""])), _png_bytes(2))])
    path = tmp_path_factory.mktemp("omni") / "z.zip"
    path.write_bytes(raw)
    _read_zip(path)
    _count(f"omniglot zip: {kind}")


def test_omniglot_zip_odd_members_are_dataset_errors(tmp_path):
    """Found by the fuzzer (fixed): a member with an unknown compression method or with the
    "encrypted" flag set raised zipfile's NotImplementedError / RuntimeError, not DatasetError."""
    header = VALID_ZIP.index(b"PK\x01\x02")  # first central-directory entry
    for what, offset, value in [("compression", 10, b"\x63\x00"), ("encrypted", 8, b"\x01\x00")]:
        raw = bytearray(VALID_ZIP)
        raw[header + offset:header + offset + 2] = value
        path = tmp_path / f"{what}.zip"
        path.write_bytes(bytes(raw))
        with pytest.raises(D.DatasetError, match="corrupt zip"):
            D.read_omniglot_zip(path)


# ---------------------------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------------------------

MODEL_ARCH, MODEL_SHAPE = "conv2-pool-fc3", (1, 6, 6)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    ens = Ensemble(MODEL_ARCH, members=2, seed=4, in_shape=MODEL_SHAPE)
    path = tmp_path_factory.mktemp("model") / "good.npz"
    ens.save(path)
    with np.load(path) as f:
        entries = {k: f[k] for k in f.files}
    return ens, path.read_bytes(), entries


def _load(path, ens=None):
    """Ensemble.load: a ValueError naming the file, or a usable ensemble."""
    try:
        out = _bounded(Ensemble.load, path)
    except ValueError as e:
        _clear(e)
        assert str(path) in str(e)
        return None
    assert np.isfinite(out.params).all()
    x = np.full((2,) + out.in_shape, 0.5, np.float32)
    if out.n_params < 10**6:
        p = out.predict_proba(x)
        assert p.shape == (out.members, 2, out.n_classes) and np.allclose(p.sum(-1), 1, atol=1e-5)
    return out


@fuzz(450)
@given(st.data())
def test_model_file_bytes(tmp_path_factory, model_file, data):
    ens, valid, _ = model_file
    raw = data.draw(st.one_of(st.binary(max_size=1024), mutated(valid)))
    path = tmp_path_factory.mktemp("m") / "fuzz.npz"
    path.write_bytes(raw)
    out = _load(path)
    if out is not None and raw == valid:
        np.testing.assert_array_equal(out.params, ens.params)
    _count("model file: bytes")


def _odd_value():
    return st.one_of(
        hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
        st.sampled_from([np.array(2**40), np.array(-1), np.array(np.inf), np.array(np.nan), np.array("fc3-fc2"),
                         np.array([1, 2**31, 1]), np.array([1, 4096, 4096]), np.array([0, 6, 6]),
                         np.array(b"conv2"), np.array([1, 6, 6]), np.array(99), np.array(True)]))


@fuzz(450)
@given(st.data())
def test_model_file_entries(tmp_path_factory, model_file, data):
    """Valid npz containers whose entries are dropped, replaced by arbitrary arrays (any dtype and
    shape, huge in_shape / arch claims, versions from the future), or added."""
    ens, _, entries = model_file
    d = dict(entries)
    keys = sorted(d)
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["drop", "replace", "add", "arch", "version"]))
        if what == "drop" and d:
            d.pop(data.draw(st.sampled_from(sorted(d))))
        elif what == "replace":
            d[data.draw(st.sampled_from(keys))] = data.draw(_odd_value())
        elif what == "add":
            name = data.draw(st.sampled_from(["member2.fc1.weight", "memberx.fc1.bias", "member", "member-1.a",
                                              "member0.extra", "format_version2"]))
            d[name] = data.draw(_odd_value())
        elif what == "arch":
            d["arch"] = np.array(data.draw(st.sampled_from(
                ["fc3", "conv2-pool-fc3", "conv2-pool-fc4", "fc64-fc10", "conv1000000-fc3", "pool-pool-pool-fc3",
                 "conv2k7-fc3", "fc1000000-fc2", "conv2-pool-fc3-", ""]) | st.text(max_size=20)))
        else:
            d["format_version"] = np.array(data.draw(st.integers(-2**63, 2**63 - 1)))
    path = tmp_path_factory.mktemp("m") / "entries.npz"
    np.savez(path, **d)
    out = _load(path)
    if out is not None:
        assert int(d["format_version"]) <= 1
    _count("model file: entries")


def test_newer_format_version_is_a_clear_error(tmp_path, model_file):
    _, _, entries = model_file
    for version in (2, 10**6, 2**62):
        path = tmp_path / f"v{version}.npz"
        np.savez(path, **{**entries, "format_version": np.array(version)})
        with pytest.raises(ValueError, match=rf"newer uqattr \(format version {version}; .*upgrade uqattr"):
            Ensemble.load(path)


# ---------------------------------------------------------------------------------------------
# generated arrays at every _uqattr entry point
# ---------------------------------------------------------------------------------------------

SPEC, SHAPE = "conv2-pool-fc3", (1, 6, 6)
NCLS = 3
PARAMS = np.stack([_uqattr.init_params(SPEC, s, in_shape=SHAPE) for s in (1, 2)])
P = PARAMS.shape[1]

DTYPES = st.sampled_from([np.float32, np.float64, np.float16, ">f4", "<f8", np.int32, np.int64, np.uint8,
                          np.bool_, np.complex64, "U2", "O"])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def any_array(draw, shapes, elements=FLOATS, dtypes=DTYPES, huge_n=False):
    """An array of a drawn dtype and shape, then possibly made non-contiguous, reversed, transposed,
    unaligned, read-only, broadcast (stride 0; to 2**31 or 2**40 rows with `huge_n`, only where
    the callee refuses such counts before copying) or a list."""
    dtype = np.dtype(draw(dtypes))
    shape = draw(shapes)
    if dtype.kind in "fc":
        base = draw(hnp.arrays(np.float32, shape, elements=elements))
    else:
        base = draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 9, width=32)))
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float -> int casts of NaN / Inf
            a = base.astype(dtype)
    except (TypeError, ValueError):
        a = base
    layout = draw(st.sampled_from(["plain", "strided", "reversed", "fortran", "unaligned", "read-only",
                                   "broadcast", "list", "scalar"]))
    if layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=0)[::2]
    elif layout == "reversed" and a.ndim:
        a = np.ascontiguousarray(a[::-1])[::-1]
    elif layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "unaligned" and a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        buf = np.empty(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        a = u
    elif layout == "read-only":
        a = a.copy()
        a.flags.writeable = False
    elif layout == "broadcast" and a.ndim and a.shape[0] == 1:
        a = np.broadcast_to(a, (draw(st.sampled_from([2, 5] + ([2**31, 2**40] if huge_n else []))),) + a.shape[1:])
    elif layout == "list" and a.size < 200 and a.dtype != object:
        return a.tolist()
    elif layout == "scalar":
        return a.reshape(-1)[0] if a.size else 0.5
    return a


def image_shapes():
    n = st.sampled_from([0, 1, 2, 3])
    return st.one_of(
        st.tuples(n, st.just(1), st.just(6), st.just(6)),          # right
        st.tuples(n, st.just(36)),                                 # right, flat
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=7))


def _as_f32(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _valid_images(x):
    """x as the core should see it, or None where it must be refused."""
    try:
        a = np.asarray(x)
    except ValueError:
        return None
    if a.dtype.kind != "f" or a.ndim not in (2, 4) or a.shape[0] == 0 or a.shape[0] > 2**30 - 1:
        return None
    if a.shape[1:] not in ((36,), SHAPE):
        return None
    a = a.astype(np.float32)
    return a if np.isfinite(a).all() else None


def _expect(call, want_valid):
    """call(): an allowed exception where the input is invalid, a result where it is valid."""
    try:
        out = call()
    except BOUNDARY_ERRORS as e:
        _clear(e)
        assert not want_valid, f"valid input refused: {type(e).__name__}: {e}"
        return None
    assert want_valid, "invalid input accepted"
    return out


IMAGE_CALLS = {
    "predict": lambda x: _uqattr.predict(SPEC, PARAMS, x, in_shape=SHAPE),
    "predict logits": lambda x: _uqattr.predict(SPEC, PARAMS, x, logits=True, in_shape=SHAPE, batch_size=2),
    "vjp": lambda x: _uqattr.vjp(SPEC, PARAMS[0], x, np.ones((_n(x), 2, NCLS), np.float32), in_shape=SHAPE),
    "input_gradients": lambda x: _uqattr.input_gradients(SPEC, PARAMS, x, [(0, None), (2, None), (4, np.zeros(_n(x), int))],
                                                          in_shape=SHAPE, chunk=2),
    "check_data": lambda x: _uqattr.check_data(SPEC, x, np.zeros(_n(x), int), in_shape=SHAPE)[0],
    "Trainer.gradients": lambda x: _uqattr.Trainer(SPEC, 4, in_shape=SHAPE).gradients(PARAMS[0], x, np.zeros(_n(x), int))[1],
}


def _n(x):
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    return a.shape[0] if a.ndim else 1


@pytest.mark.parametrize("entry", sorted(IMAGE_CALLS))
@fuzz(300)
@given(x=any_array(image_shapes(), huge_n=True))
def test_image_entry_points_generated(x, entry):
    valid = _valid_images(x)
    if entry in ("vjp", "input_gradients", "check_data", "Trainer.gradients") and _n(x) > 2**20:
        entry = "predict"  # their other arguments are sized by N: keep those small
    if entry == "Trainer.gradients" and valid is not None and len(valid) > 4:
        valid = None  # more images than the Trainer's batch_size
    before = np.array(x, copy=True) if isinstance(x, np.ndarray) and x.size < 10**6 else None
    out = _expect(lambda: IMAGE_CALLS[entry](x), valid is not None)
    if out is not None:
        want = IMAGE_CALLS[entry](valid)  # the contiguous float32 form gives the same result
        for got, exp in zip(out if isinstance(out, tuple) else (out,), want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(got, exp)
    if before is not None:
        np.testing.assert_array_equal(x, before)  # inputs are never modified
    _count(f"images: {entry}")


@fuzz(450)
@given(p=any_array(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5), elements=st.floats(0, 1, width=32)
                   | FLOATS))
def test_decompose_generated(p):
    a = np.asarray(p) if not isinstance(p, np.ndarray) else p
    f32 = a.astype(np.float32) if a.dtype.kind == "f" else None
    ok = (f32 is not None and a.ndim == 3 and a.shape[0] >= 1 and a.shape[1] >= 1 and a.shape[2] >= 2
          and np.isfinite(f32).all() and ((f32 >= 0) & (f32 <= 1)).all())
    out = _expect(lambda: _uqattr.decompose(p), bool(ok))
    if out is not None:
        f = f32.astype(np.float64)
        mean = f.mean(0)

        def ent(q):
            return -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)).sum(-1)
        np.testing.assert_allclose(out["mean_probs"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["total"], ent(mean), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["aleatoric"], ent(f).mean(0), rtol=1e-4, atol=1e-5)
        assert (out["epistemic"] >= 0).all()
    _count("decompose")


SCORES = any_array(st.one_of(hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=8),
                             hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
                   elements=st.floats(-1e6, 1e6, width=32) | FLOATS)


def _scores_ok(s, finite=False):
    a = np.asarray(s)
    if not (a.dtype.kind in "biuf") or a.ndim != 1 or a.size == 0:
        return False
    f = a.astype(np.float64)
    return not np.isnan(f).any() and (not finite or np.isfinite(f).all())


@fuzz(450)
@given(a=SCORES, b=SCORES, conv=st.sampled_from(["ood_positive", "id_positive"]))
def test_ood_metrics_generated(a, b, conv):
    out = _expect(lambda: _uqattr.ood_metrics(a, b, fpr_convention=conv), _scores_ok(a) and _scores_ok(b))
    if out is not None:
        sa, sb = np.asarray(a, np.float64), np.asarray(b, np.float64)
        # AUROC = P(score_out > score_in) + P(tie) / 2, OOD positive
        want = ((sb[:, None] > sa[None]).mean() + 0.5 * (sb[:, None] == sa[None]).mean())
        assert out["auroc"] == pytest.approx(want, abs=1e-9)
        assert all(0.0 <= out[k] <= 1.0 for k in ("aupr_in", "aupr_out", "fpr95"))
    _count("ood_metrics")


@fuzz(450)
@given(s=SCORES, bins=st.one_of(st.integers(-2, 40), SCORES, st.just(2**40)),
       rng=st.one_of(st.none(), st.tuples(FLOATS, FLOATS), st.just("ab"), st.just((0.0, 1.0))))
def test_histogram_generated(s, bins, rng):
    """Accepted input must give numpy.histogram's result (on float64); refused input a clear error."""
    try:
        got = _uqattr.histogram(s, bins, rng)
    except BOUNDARY_ERRORS as e:
        _clear(e)
        return _count("histogram: refused")
    sa = np.asarray(s, np.float64)
    counts, edges = got
    assert (edges[1:] >= edges[:-1]).all() and counts.sum() <= sa.size  # np.diff of inf edges is NaN
    try:
        if isinstance(bins, (int, np.integer)):
            want = np.histogram(sa, bins, range=rng)
        else:
            want = np.histogram(sa, np.asarray(bins, np.float64))
    except ValueError as e:  # numpy: "too many bins for data range" (bins below float64 resolution)
        assert "Too many bins" in str(e), e
        return _count("histogram: accepted (bins below float64 resolution)")
    np.testing.assert_array_equal(got[0], want[0])
    _close(got[1], want[1])
    _count("histogram: accepted")


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(want).max())))


@fuzz(300)
@given(a=SCORES, b=SCORES, n_bins=st.integers(-1, 60))
def test_histogram_edges_generated(a, b, n_bins):
    ok = _scores_ok(a, True) and _scores_ok(b, True) and 1 <= n_bins
    out = _expect(lambda: _uqattr.histogram_edges(a, b, n_bins), ok)
    if out is not None:
        both = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
        assert out.shape == (n_bins + 1,) and (np.diff(out) >= 0).all(), out
        try:
            want = np.histogram_bin_edges(both, n_bins)
        except ValueError:  # numpy: "too many bins for data range" (bins below float64 resolution)
            want = None
        if want is not None:
            _close(out, want)
    _count("histogram_edges")


@fuzz(450)
@given(p=any_array(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                   elements=st.floats(0, 1, width=32) | FLOATS),
       y=any_array(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5), elements=st.floats(-2, 7, width=32),
                   dtypes=st.sampled_from([np.int64, np.int8, np.uint64, np.float64, np.bool_])),
       n_bins=st.integers(-1, 20))
def test_calibration_generated(p, y, n_bins):
    a, ya = np.asarray(p), np.asarray(y)
    ok = (a.dtype.kind == "f" and a.ndim == 2 and a.shape[0] >= 1 and a.shape[1] >= 1
          and np.isfinite(a.astype(np.float32)).all() and ya.dtype.kind in "iu" and ya.shape == a.shape[:1]
          and ((ya >= 0) & (ya < a.shape[1])).all() and n_bins >= 1)
    out = _expect(lambda: _uqattr.calibration(p, y, n_bins), bool(ok))
    if out is not None:
        f = a.astype(np.float32)
        assert out["accuracy"] == pytest.approx((f.argmax(1) == ya).mean())
        assert out["bins"]["count"].sum() == len(f)
    _count("calibration")


@fuzz(300)
@given(n=st.integers(-2**63, 2**63 - 1) | st.integers(-3, 2000), seed=st.integers(0, 2**64 - 1),
       stream=st.integers(0, 2**64 - 1))
def test_permutation_generated(n, seed, stream):
    if n > 10**5 and n < 2**32:
        return _count("permutation: skipped (valid but large: an 8n-byte result)")
    ok = 0 <= n < 2**32
    out = _expect(lambda: _uqattr.permutation(n, seed, stream), ok)
    if out is not None:
        np.testing.assert_array_equal(np.sort(out), np.arange(n))
    _count("permutation")


@fuzz(450)
@given(spec=st.one_of(st.text(alphabet="convfcpolk0123456789-", max_size=24), st.text(max_size=12),
                      st.sampled_from(["fc2", "conv3-fc2", "pool-fc2", "conv2k1-pool-fc4", "fc1000000-fc2",
                                       "conv1000000-fc2", "-".join(["pool"] * 40) + "-fc2"])),
       in_shape=st.one_of(st.none(), st.tuples(st.integers(-2, 5), st.integers(-2, 40), st.integers(-2, 40)),
                          st.tuples(st.integers(0, 2**33), st.integers(0, 2**33), st.integers(0, 2**33)),
                          st.lists(st.integers(1, 8), max_size=4)))
def test_arch_specs_generated(spec, in_shape):
    try:
        info = _uqattr.arch_layers(spec, in_shape=in_shape)
    except BOUNDARY_ERRORS as e:
        _clear(e)
        return _count("arch_layers")
    assert info["n_params"] >= 0 and info["n_classes"] >= 2 and info["layers"][-1]["kind"] == "dense"
    if info["n_params"] < 10**6:
        p = _uqattr.init_params(spec, 1, in_shape=in_shape)
        assert p.shape == (info["n_params"],) and np.isfinite(p).all()
        shape = tuple(in_shape) if in_shape is not None else (1, 28, 28)
        if info["n_params"] * int(np.prod(shape)) < 10**8:  # a cheap forward pass
            x = np.full((2,) + tuple(shape), 0.25, np.float32)
            out = _uqattr.predict(spec, p, x, in_shape=in_shape)
            assert out.shape == (1, 2, info["n_classes"]) and np.allclose(out.sum(-1), 1, atol=1e-5)
    _count("arch_layers")


@fuzz(600)
@given(st.data())
def test_trainer_step_generated(data):
    """Trainer.step with generated state arrays and labels: an error leaves params untouched."""
    bad_arg = data.draw(st.sampled_from(["none", "params", "m", "v", "x", "y", "step", "lr"]))
    names = iter(["params", "m", "v", "x", "y"])

    def valid_or(good, bad):  # all arguments valid but (at most) one, so that many calls succeed
        return data.draw(bad) if next(names) == bad_arg else good

    def slab(lo):  # v, Adam's second moment, is >= 0 in any real state
        good = (PARAMS[0] if lo < 0 else np.abs(PARAMS[0])).copy()
        return valid_or(good, any_array(st.sampled_from([(P,), (1, P), (2, P), (P - 1,), (0, P)]),
                                        elements=st.floats(lo, 1, width=32),
                                        dtypes=st.sampled_from([np.float32, np.float32, np.float32, np.float64])))
    params, m, v = slab(-1), slab(-1), slab(0)
    x = valid_or(np.full((2, 1, 6, 6), 0.5, np.float32),
                 any_array(st.sampled_from([(2, 1, 6, 6), (2, 36), (0, 36), (2, 1, 6, 5)]),
                           elements=st.floats(0, 1, width=32) | FLOATS))
    y = valid_or(np.array([0, 2]), any_array(st.sampled_from([(2,), (3,), (1,)]), elements=st.floats(-1, 4, width=32),
                                             dtypes=st.sampled_from([np.int64, np.int32, np.float64])))
    step = data.draw(st.integers(-1, 3) | st.just(2**70)) if bad_arg == "step" else 1
    lr = data.draw(st.floats(-1, 1) | st.sampled_from([1e-3, 0.0, np.nan, np.inf, -np.inf, 1e300])) \
        if bad_arg == "lr" else 1e-3
    before = [a.copy() if isinstance(a, np.ndarray) else None for a in (params, m, v)]
    tr = _uqattr.Trainer(SPEC, 3, in_shape=SHAPE)
    try:
        loss, correct = tr.step(params, m, v, step, x, y, lr)
    except BOUNDARY_ERRORS as e:
        _clear(e)
        for a, b in zip((params, m, v), before):
            if b is not None:
                np.testing.assert_array_equal(a, b)  # a refused step changes nothing
        return _count("Trainer.step: refused")
    assert np.isfinite(loss) and 0 <= correct <= 3
    for a in (params, m, v):  # accepted only for exactly what step documents
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned
        assert a.flags.writeable and a.shape in ((P,), (1, P))
    assert np.isfinite(params).all()
    _count("Trainer.step: accepted")


@fuzz(300)
@given(st.data())
def test_module_functions_generated(data):
    """The small module functions with generated arguments."""
    v = data.draw(st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8), st.none(),
                            st.just(b"blas"), st.sampled_from(["builtin", "blas", "BLAS", "builtin\0"])))
    threads, gemm = _uqattr.get_num_threads(), _uqattr.build_info()["gemm"]
    try:
        for fn in (_uqattr.set_num_threads, _uqattr.set_gemm_backend):
            try:
                fn(v)
            except BOUNDARY_ERRORS as e:
                _clear(e)
            else:
                if fn is _uqattr.set_num_threads:
                    assert 1 <= _uqattr.get_num_threads() <= max(v, os.cpu_count()), v
    finally:
        _uqattr.set_num_threads(threads)
        _uqattr.set_gemm_backend(gemm)
    for fn in (getattr(_uqattr, "cuda_device_info", None),):
        if fn is not None:
            try:
                fn(v)
            except BOUNDARY_ERRORS + (RuntimeError,) as e:
                _clear(e)
    assert isinstance(_uqattr.build_info(), dict)
    _count("module functions")


def test_huge_claims_are_refused_without_allocating():
    """Stride-0 views claiming far more images than exist: a ValueError from the count limit, before
    any copy is attempted (see also test_boundary.py::test_huge_broadcast_batch_refused_before_copying)."""
    one = np.zeros((1, 36), np.float32)
    for n in (2**31, 2**40, 2**50):
        x = np.broadcast_to(one, (n, 36))
        for call in (IMAGE_CALLS["predict"], IMAGE_CALLS["predict logits"]):
            tracemalloc.start()
            try:
                with pytest.raises(ValueError, match="too many images"):
                    call(x)
                assert tracemalloc.get_traced_memory()[1] < 1 << 20
            finally:
                tracemalloc.stop()
