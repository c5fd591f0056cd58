"""The Ensemble API: seeding, initialization, training, prediction, members,
PyTorch-layout weights, saving and loading, architecture specs."""
import os
import zipfile

import numpy as np
import pytest

import uqattr
from uqattr import DEFAULT_ARCH, Ensemble, _uqattr
from uqattr.ensemble import FORMAT_VERSION, member_seed

DEFAULT_KEYS = {
    "conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
    "fc1.weight": (128, 64 * 7 * 7), "fc1.bias": (128,),
    "fc2.weight": (10, 128), "fc2.bias": (10,),
}
SMALL_ARCH = "conv4-pool-fc10"  # for tests that need an ensemble, not a good one


def small(members=2, seed=0, arch=SMALL_ARCH, in_shape=(1, 28, 28)):
    return Ensemble(arch, members=members, seed=seed, in_shape=in_shape)


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------

def test_same_seed_bit_identical_after_fit(mnist_train_small):
    x, y = mnist_train_small
    x, y = x[:512], y[:512]
    threads = uqattr.get_num_threads()
    a = Ensemble(DEFAULT_ARCH, members=2, seed=7)
    b = Ensemble(DEFAULT_ARCH, members=2, seed=7)
    assert np.array_equal(a.params, b.params)
    init = a.params.copy()
    a.fit(x, y, epochs=1, batch_size=64, progress=False)
    b.fit(x, y, epochs=1, batch_size=64, progress=False)
    assert uqattr.get_num_threads() == threads
    assert not np.array_equal(a.params, init), "fit did not change the weights"
    assert np.array_equal(a.params, b.params), "same seed, same data, same threads: weights must match bit for bit"
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    # different members were initialized and shuffled differently
    assert not np.array_equal(a.params[0], a.params[1])
    assert a.history[0]["loss"] != a.history[1]["loss"]


def test_member_seeds():
    """Member k is init_params(arch, member_seed(seed, k)); members differ from each other,
    ensembles with different seeds share no member, and adding members keeps the first ones."""
    e3 = Ensemble(DEFAULT_ARCH, members=3, seed=5)
    for k in range(3):
        np.testing.assert_array_equal(e3.params[k], _uqattr.init_params(DEFAULT_ARCH, member_seed(5, k)))
    assert len({e3.params[k].tobytes() for k in range(3)}) == 3
    np.testing.assert_array_equal(Ensemble(DEFAULT_ARCH, members=2, seed=5).params, e3.params[:2])
    other = Ensemble(DEFAULT_ARCH, members=3, seed=6)
    for i in range(3):
        for j in range(3):
            assert not np.array_equal(e3.params[i], other.params[j])
    # distinct seeds, distinct streams: not even a shifted copy
    assert abs(np.corrcoef(e3.params[0], other.params[0])[0, 1]) < 0.01


def test_init_matches_pytorch_default():
    """Every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default)."""
    members = 4
    ens = Ensemble(DEFAULT_ARCH, members=members, seed=123)
    fan_in = {"conv1": 1 * 9, "conv2": 32 * 9, "fc1": 3136, "fc2": 128}
    sds = ens.state_dicts()
    for key in DEFAULT_KEYS:
        bound = 1.0 / np.sqrt(fan_in[key.split(".")[0]])
        v = np.concatenate([sd[key].ravel() for sd in sds]).astype(np.float64)
        n = v.size
        assert np.all(np.abs(v) <= bound * (1 + 1e-6)), f"{key}: values outside +-{bound:.4g}"
        # sample statistics of U(-b, b): mean 0 (sd b/sqrt(3n)), std b/sqrt(3) (relative sd sqrt(0.2/n))
        std_tol = 6 * np.sqrt(0.2 / n)
        assert abs(v.std() / (bound / np.sqrt(3)) - 1) < std_tol, f"{key}: std {v.std():.4g}"
        assert abs(v.mean()) < 6 * bound / np.sqrt(3 * n), f"{key}: mean {v.mean():.4g}"
        if n >= 1000:  # uses the whole range, flat histogram
            assert np.abs(v).max() > 0.99 * bound
            counts, _ = np.histogram(v, bins=10, range=(-bound, bound))
            expected = n / 10
            assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected)), f"{key}: histogram {counts}"


# ---------------------------------------------------------------------------------------------
# training and prediction
# ---------------------------------------------------------------------------------------------

def test_fit_learns(small_ensemble, mnist_test):
    """The shared fixture: 3 members, 1 epoch on 2,000 images -> > 85% test accuracy."""
    x, y = mnist_test
    x, y = x[:1000], y[:1000]
    acc = (small_ensemble.predict(x) == y).mean()
    assert acc > 0.85, f"ensemble accuracy {acc:.3f}"
    for k in range(small_ensemble.members):
        acc_k = (small_ensemble.member(k).predict(x) == y).mean()
        assert acc_k > 0.8, f"member {k} accuracy {acc_k:.3f}"
    hist = small_ensemble.history
    assert [(h["member"], h["epoch"]) for h in hist] == [(k, 1) for k in range(small_ensemble.members)]
    for h in hist:
        assert np.isfinite(h["loss"]) and 0 < h["loss"] < 2.3 and 0.3 < h["accuracy"] <= 1 and h["seconds"] > 0


def test_fit_sgd_constant_learns_a_little(mnist_train_small):
    """The other optimizer and schedule run and lower the loss."""
    x, y = mnist_train_small
    ens = small(members=1, seed=3)
    ens.fit(x[:512], y[:512], epochs=2, batch_size=64, lr=0.05, optimizer="sgd", schedule="constant",
            progress=False)
    assert ens.history[1]["loss"] < ens.history[0]["loss"] < 2.3


def test_predict_proba_shapes_and_sums(small_ensemble, mnist_test):
    x = mnist_test[0][:300]
    p = small_ensemble.predict_proba(x)
    assert p.shape == (3, 300, 10) and p.dtype == np.float32
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=2), 1.0, atol=1e-5)
    pred = small_ensemble.predict(x)
    assert pred.shape == (300,) and pred.dtype == np.int64
    np.testing.assert_array_equal(pred, p.mean(axis=0).argmax(axis=1))
    # logits are consistent with the probabilities
    z = small_ensemble.predict_logits(x).astype(np.float64)
    assert z.shape == (3, 300, 10)
    soft = np.exp(z - z.max(axis=2, keepdims=True))
    np.testing.assert_allclose(p, soft / soft.sum(axis=2, keepdims=True), atol=1e-6)
    # other accepted layouts and chunking give the same result
    np.testing.assert_array_equal(small_ensemble.predict_proba(x.reshape(300, 784)), p)
    np.testing.assert_array_equal(small_ensemble.predict_proba(x[:, 0]), p)
    np.testing.assert_array_equal(small_ensemble.predict_proba(x[5, 0]), p[:, 5:6])
    np.testing.assert_allclose(small_ensemble.predict_proba(x, batch_size=7), p, atol=1e-6)


def test_member_is_a_view(small_ensemble, mnist_test):
    x = mnist_test[0][:64]
    full = small_ensemble.predict_proba(x)
    for k in range(small_ensemble.members):
        m = small_ensemble.member(k)
        assert m.members == 1 and m.arch == small_ensemble.arch
        assert np.shares_memory(m.params, small_ensemble.params)
        np.testing.assert_array_equal(m.predict_proba(x)[0], full[k])
    np.testing.assert_array_equal(small_ensemble.member(-1).params, small_ensemble.params[-1:])
    for k in (3, -4):
        with pytest.raises(IndexError):
            small_ensemble.member(k)
    # writes through the view reach the ensemble (on a writable ensemble)
    ens = small(members=3)
    m1 = ens.member(1)
    m1.params[0, :5] = 0.25
    np.testing.assert_array_equal(ens.params[1, :5], 0.25)
    assert not np.all(ens.params[0, :5] == 0.25)


# ---------------------------------------------------------------------------------------------
# PyTorch-layout weights
# ---------------------------------------------------------------------------------------------

def test_state_dict_names_shapes_views():
    ens = Ensemble(DEFAULT_ARCH, members=2, seed=1)
    sds = ens.state_dicts()
    assert len(sds) == 2
    for k, sd in enumerate(sds):
        assert list(sd) == list(DEFAULT_KEYS)
        assert {name: v.shape for name, v in sd.items()} == DEFAULT_KEYS
        for v in sd.values():
            assert v.dtype == np.float32 and np.shares_memory(v, ens.params[k])
    assert sum(v.size for v in sds[0].values()) == ens.n_params == ens.params.shape[1]
    # layout: the slab is each layer's weight then bias, in order
    flat = np.concatenate([sds[1][name].ravel() for name in DEFAULT_KEYS])
    np.testing.assert_array_equal(flat, ens.params[1])


def test_from_state_dicts_round_trip_and_errors():
    ens = Ensemble("conv3-pool-fc6-fc4", members=2, seed=2, in_shape=(2, 9, 7))
    sds = ens.state_dicts()
    back = Ensemble.from_state_dicts(sds, arch=ens.arch, in_shape=ens.in_shape)
    assert np.array_equal(back.params, ens.params) and not np.shares_memory(back.params, ens.params)
    # float64 dicts (e.g. from elsewhere) are converted
    back64 = Ensemble.from_state_dicts([{k: v.astype(np.float64) for k, v in sd.items()} for sd in sds],
                                       arch=ens.arch, in_shape=ens.in_shape)
    assert np.array_equal(back64.params, ens.params)

    def bad(edit):
        d = [dict(sd) for sd in sds]
        edit(d[1])
        return d

    with pytest.raises(ValueError, match=r"member 1 has no 'fc1\.bias'"):
        Ensemble.from_state_dicts(bad(lambda d: d.pop("fc1.bias")), arch=ens.arch, in_shape=ens.in_shape)
    with pytest.raises(ValueError, match=r"member 1: 'conv1\.weight' has shape \(3, 2, 9\), expected \(3, 2, 3, 3\)"):
        Ensemble.from_state_dicts(bad(lambda d: d.update({"conv1.weight": np.zeros((3, 2, 9))})),
                                  arch=ens.arch, in_shape=ens.in_shape)
    with pytest.raises(ValueError, match="finite"):
        Ensemble.from_state_dicts(bad(lambda d: d.update({"fc2.bias": np.array([0, np.nan, 0, 0])})),
                                  arch=ens.arch, in_shape=ens.in_shape)
    with pytest.raises(ValueError, match="finite floats"):
        Ensemble.from_state_dicts(bad(lambda d: d.update({"fc2.bias": np.arange(4)})),
                                  arch=ens.arch, in_shape=ens.in_shape)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble.from_state_dicts([], arch=ens.arch)


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,in_shape", [(DEFAULT_ARCH, (1, 28, 28)), ("conv3k5-pool-fc5-fc3", (3, 7, 9))])
def test_save_load_round_trip(tmp_path, arch, in_shape):
    ens = Ensemble(arch, members=3, seed=11, in_shape=in_shape)
    ens.params += np.float32(1e-3) * np.random.default_rng(0).standard_normal(ens.params.shape, dtype=np.float32)
    path = tmp_path / "model.npz"
    assert ens.save(path) == str(path)  # accepts path-like objects
    back = Ensemble.load(path)
    assert back.arch == arch and back.in_shape == in_shape and back.seed == 11 and back.members == 3
    assert back.params.dtype == np.float32 and np.array_equal(back.params, ens.params)
    x = np.random.default_rng(1).uniform(size=(4,) + in_shape).astype(np.float32)
    np.testing.assert_array_equal(back.predict_proba(x), ens.predict_proba(x))
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary files left behind


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    small(seed=1).save(path)
    before = path.read_bytes()

    def failing_savez(f, **arrays):  # writes part of a file, then the disk "fills up"
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        small(seed=2).save(path)
    assert path.read_bytes() == before, "a failed save damaged the existing file"
    assert os.listdir(tmp_path) == ["model.npz"], "a failed save left a temporary file"
    monkeypatch.undo()
    np.testing.assert_array_equal(Ensemble.load(path).params, small(seed=1).params)


def _rewrite(src, dst, edit):
    with np.load(src) as f:
        data = {k: f[k] for k in f.files}
    edit(data)
    np.savez(dst, **data)
    return dst


def test_load_errors(tmp_path):
    good = small(seed=4).save(tmp_path / "good.npz")

    with pytest.raises(FileNotFoundError):
        Ensemble.load(tmp_path / "missing.npz")

    text = tmp_path / "text.npz"
    text.write_text("this is not a model\n")
    with pytest.raises(ValueError, match="not a readable uqattr model file"):
        Ensemble.load(text)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:600])
    with pytest.raises(ValueError, match="truncated.npz"):
        Ensemble.load(truncated)

    plain_zip = tmp_path / "plain.npz"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError):
        Ensemble.load(plain_zip)

    p = _rewrite(good, tmp_path / "nokey.npz", lambda d: d.pop("member1.fc1.bias"))
    with pytest.raises(ValueError, match=r"nokey\.npz.*member 1 has no 'fc1\.bias'"):
        Ensemble.load(p)

    p = _rewrite(good, tmp_path / "shape.npz", lambda d: d.update({"member0.conv1.weight": np.zeros((4, 1, 3), np.float32)}))
    with pytest.raises(ValueError, match=r"'conv1\.weight' has shape \(4, 1, 3\), expected \(4, 1, 3, 3\)"):
        Ensemble.load(p)

    p = _rewrite(good, tmp_path / "newer.npz", lambda d: d.update({"format_version": np.array(FORMAT_VERSION + 1)}))
    with pytest.raises(ValueError, match=rf"newer uqattr \(format version {FORMAT_VERSION + 1}.*upgrade"):
        Ensemble.load(p)

    p = _rewrite(good, tmp_path / "noarch.npz", lambda d: d.pop("arch"))
    with pytest.raises(ValueError, match="no 'arch' entry"):
        Ensemble.load(p)

    p = _rewrite(good, tmp_path / "badarch.npz", lambda d: d.update({"arch": np.array("conv4-xyz-fc10")}))
    with pytest.raises(ValueError, match="xyz"):
        Ensemble.load(p)

    def no_members(d):
        for k in [k for k in d if k.startswith("member")]:
            d.pop(k)
    p = _rewrite(good, tmp_path / "empty.npz", no_members)
    with pytest.raises(ValueError, match="no member weights"):
        Ensemble.load(p)


# ---------------------------------------------------------------------------------------------
# architecture specs and constructor arguments
# ---------------------------------------------------------------------------------------------

def test_unknown_token_is_named():
    with pytest.raises(ValueError, match="'xyz'"):
        Ensemble("conv32-xyz-fc10")


@pytest.mark.parametrize("spec,named", [
    ("", None),
    ("conv32", None),                          # no fc at the end
    ("fc10-conv3", "conv3"),                   # conv after fc
    ("fc10-pool-fc3", "pool"),                 # pool after fc
    ("conv4k2-fc3", "conv4k2"),                # even kernel
    ("conv3k-fc3", "conv3k"),
    ("fc0", "fc0"),
    ("fc1", None),                             # one class
    ("conv32-pool-fc10-", None),               # trailing '-'
    ("-fc10", None),
    ("conv32--fc10", None),
    ("conv-fc10", "conv"),
    ("fc10 ", "fc10 "),
    ("FC10", "FC10"),
    ("conv1000001-fc3", "conv1000001"),
    ("pool-pool-pool-pool-pool-fc10", "pool"),  # nothing left to pool
    ("-".join(["conv2"] * 40) + "-fc3", None),  # too many layers
])
def test_malformed_specs(spec, named):
    with pytest.raises(ValueError) as info:
        Ensemble(spec, members=1)
    if named is not None:
        assert f"'{named}'" in str(info.value)
    with pytest.raises(ValueError):
        _uqattr.arch_layers(spec)


def test_constructor_arguments():
    with pytest.raises(TypeError, match="spec string"):
        Ensemble(123)
    with pytest.raises(ValueError, match="members"):
        Ensemble(SMALL_ARCH, members=0)
    with pytest.raises(ValueError, match="in_shape"):
        Ensemble(SMALL_ARCH, in_shape=(0, 28, 28))
    with pytest.raises(ValueError):
        Ensemble("conv4-pool-fc10", in_shape=(1, 1, 28))  # nothing to pool
    e = Ensemble("fc5-fc3", members=2, in_shape=(2, 3, 1))
    assert e.params.shape == (2, 2 * 3 * 1 * 5 + 5 + 5 * 3 + 3) and len(e) == 2
    assert "fc5-fc3" in repr(e)


def test_fit_arguments(mnist_train_small):
    x, y = mnist_train_small
    ens = small()
    before = ens.params.copy()
    with pytest.raises(ValueError, match="schedule"):
        ens.fit(x[:64], y[:64], schedule="linear", progress=False)
    with pytest.raises(ValueError, match="epochs"):
        ens.fit(x[:64], y[:64], epochs=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        ens.fit(x[:64], y[:64], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        ens.fit(x[:64], y[:64], optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="64 images but y has 63 labels"):
        ens.fit(x[:64], y[:63], progress=False)
    np.testing.assert_array_equal(ens.params, before)


def test_load_lying_files_allocate_nothing_big(tmp_path):
    """Regressions: a model file whose in_shape / arch claim a huge network, or whose array
    header claims a huge array, raised late, after allocating (and filling) the claimed size:
    8 GB for in_shape (1, 4096, 4096) with "fc64-fc10" (tested with 268 MB a member here). Metadata entries of the wrong type
    (0-d in_shape, several format versions, inf) gave TypeError / OverflowError."""
    import tracemalloc
    good = Ensemble("fc3-fc2", members=2, seed=1, in_shape=(1, 4, 4)).save(tmp_path / "good.npz")
    cases = {
        "huge_in_shape": lambda d: d.update(in_shape=np.array([1, 1024, 1024]), arch=np.array("fc64-fc10")),
        "in_shape_0d": lambda d: d.update(in_shape=np.array(5)),
        "in_shape_beyond_int": lambda d: d.update(in_shape=np.array([1, 2**40, 1])),
        "versions": lambda d: d.update(format_version=np.array([1, 2])),
        "version_inf": lambda d: d.update(format_version=np.array(np.inf)),
        "arch_bytes": lambda d: d.update(arch=np.array(b"fc3-fc2")),
        "member_name": lambda d: d.update({"memberx.fc1.weight": np.zeros(3, np.float32)}),
    }
    paths = {name: _rewrite(good, tmp_path / f"{name}.npz", edit) for name, edit in cases.items()}
    lying = tmp_path / "lying_header.npz"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(lying, "w") as out:
        for n in z.namelist():
            b = z.read(n)
            out.writestr(n, b.replace(b"(3, 16)", b"(300000, 16000)") if n == "member0.fc1.weight.npy" else b)
    paths["lying_header"] = lying
    for name, p in paths.items():
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=f"{name}.npz") as info:
                Ensemble.load(p)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{name}: loading allocated {peak / 2**20:.0f} MiB ({info.value})"
    assert Ensemble.load(good).members == 2
