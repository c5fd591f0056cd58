"""The CUDA backend: device selection, build, and CUDA against the CPU core.

Two groups of tests:

* everywhere (this includes CI machines without a GPU): device strings, the
  errors of ``device="cuda"`` where no GPU is usable, ``build_info()``, that a
  toolkit found at build time was compiled and linked in, that the CPU path
  never calls into CUDA, and that ``benchmarks/gpu_check.py`` stops with
  "no GPU" (exit status 2);
* on a GPU only (skipped otherwise): every output of the CUDA backend against
  the CPU core, on random small networks and on the default architecture, with
  the device's workspaces and the returned arrays poisoned with NaN before each
  call (``CudaModel.poison``), so that an element a kernel fails to write
  shows; relative errors ``||gpu - cpu|| / ||cpu||`` must stay below 1e-4.
  Then training (same recipe as the CPU), determinism, ``.to`` round trips,
  and saving on the GPU / loading on the CPU.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import uqattr
from uqattr import DEFAULT_ARCH, Ensemble, _uqattr
from uqattr import cuda as ucuda
from uqattr.ensemble import member_seed

HAVE_GPU = uqattr.cuda_is_available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason="no usable CUDA GPU (uqattr.cuda_is_available() is False)")
no_gpu = pytest.mark.skipif(HAVE_GPU, reason="a CUDA GPU is usable here")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # relative error of every CUDA output against the CPU core


def rel(a, b):
    """||a - b|| / ||b|| in float64 (0 when both are 0); NaN anywhere (an unwritten,
    poisoned element) makes it NaN, which fails every `< TOL`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    nb = np.linalg.norm(b)
    d = np.linalg.norm(a - b)
    return float(d / nb) if nb > 0 else float(d)


def assert_close(a, b, what, tol=TOL):
    assert np.all(np.isfinite(a)), f"{what}: non-finite values (unwritten outputs?)"
    r = rel(a, b)
    assert r < tol, f"{what}: relative error {r:.3g} >= {tol:g}"


# ---------------------------------------------------------------------------------------------
# everywhere: devices, errors, build
# ---------------------------------------------------------------------------------------------

SMALL = "conv4-pool-fc10"


def test_default_device_is_cpu():
    m = Ensemble(SMALL, members=2)
    assert m.device == "cpu"
    assert m.to("cpu") is m and m.device == "cpu"
    assert m._cuda is None


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:0:1", "", "tpu", "cuda0", "mps"])
def test_bad_device_strings_raise_valueerror(device):
    with pytest.raises(ValueError, match="unknown device"):
        Ensemble(SMALL, members=1, device=device)
    m = Ensemble(SMALL, members=1)
    before = m.params.copy()
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        m.to(device)
    assert m.device == "cpu" and np.array_equal(m.params, before)


def test_parse_device():
    assert ucuda.parse_device("cpu") == ("cpu", None)
    assert ucuda.parse_device("cuda") == ("cuda", 0)
    assert ucuda.parse_device("cuda:0") == ("cuda", 0)
    assert ucuda.parse_device("cuda:3") == ("cuda", 3)

    class TorchLikeDevice:  # torch.device prints as "cuda:1"
        def __str__(self):
            return "cuda:1"

    assert ucuda.parse_device(TorchLikeDevice()) == ("cuda", 1)


@no_gpu
def test_cuda_is_available_false_without_gpu():
    assert uqattr.cuda_is_available() is False
    assert ucuda.device_count() == 0
    count, why = _uqattr.cuda_probe()
    assert count == 0 and why, "cuda_probe must say why no device is usable"


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_device_cuda_without_gpu_raises_clear_runtimeerror(device):
    why = _uqattr.cuda_probe()[1]
    with pytest.raises(RuntimeError, match="device='cuda'") as exc:
        Ensemble(SMALL, members=2, device=device)
    assert why in str(exc.value), "the error must carry the reason (CUDA's error string or the build)"


@no_gpu
def test_to_cuda_without_gpu_raises_and_keeps_the_model_on_cpu():
    m = Ensemble(SMALL, members=2, seed=3)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    before, probs = m.params.copy(), m.predict_proba(x)
    with pytest.raises(RuntimeError, match="device='cuda'"):
        m.to("cuda")
    assert m.device == "cpu" and m._cuda is None
    assert np.array_equal(m.params, before)
    np.testing.assert_array_equal(m.predict_proba(x), probs)


def test_build_info_reports_cuda():
    info = uqattr.build_info()
    for key in ("cuda", "cuda_compiled", "cuda_version"):
        assert key in info, key
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_compiled"], bool)
    assert info["cuda"] == HAVE_GPU
    assert info["cuda_compiled"] == ucuda.is_compiled() == hasattr(_uqattr, "CudaModel")
    if info["cuda_compiled"]:
        major, minor = info["cuda_version"].split(".")
        assert int(major) >= 11 and int(minor) >= 0, info["cuda_version"]
    else:
        assert info["cuda_version"] == ""
        assert not info["cuda"]
        assert "without CUDA" in _uqattr.cuda_probe()[1]


def _nvcc_at_build_time():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return True
    return shutil.which("nvcc") is not None


@pytest.mark.skipif(not _nvcc_at_build_time(), reason="no CUDA toolkit (nvcc) here")
@pytest.mark.skipif(os.environ.get("UQATTR_CUDA") == "0", reason="UQATTR_CUDA=0: a CPU-only build was asked for")
def test_cuda_backend_compiled_and_linked_where_a_toolkit_exists():
    """CI runs without a GPU but with the toolkit: the CUDA path must still be compiled and
    linked. Creating a model calls into the CUDA runtime, whose error must come back as a
    Python exception carrying CUDA's own error string."""
    assert uqattr.build_info()["cuda_compiled"], "nvcc is installed but the build has no CUDA backend"
    params = Ensemble(SMALL, members=2).params
    if HAVE_GPU:
        with pytest.raises(ValueError, match="CUDA device 999 does not exist"):
            _uqattr.CudaModel(SMALL, params, device=999)
        return
    with pytest.raises(RuntimeError, match=r"^CUDA error: .+ in cudaGetDeviceCount"):
        _uqattr.CudaModel(SMALL, params)


def test_cpu_path_never_touches_cuda(monkeypatch):
    """The CPU default must not call into the CUDA runtime (not even to probe for a device)."""
    def boom(*args, **kwargs):
        raise AssertionError("the CPU path called into CUDA")

    monkeypatch.setattr(_uqattr, "cuda_probe", boom)
    if hasattr(_uqattr, "CudaModel"):
        monkeypatch.setattr(_uqattr, "CudaModel", boom)
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    m = Ensemble(SMALL, members=2, device="cpu").to("cpu")
    m.fit(x, y, epochs=1, batch_size=8, progress=False)
    m.predict_proba(x)
    m.predict_logits(x)
    uqattr.uncertainty(m, x)
    uqattr.Saliency(m).attribute(x[:2], ["total", "epistemic"])
    uqattr.input_gradients(m, x[:2], member=1)
    m.member(0).predict(x)


@no_gpu
def test_gpu_check_says_no_gpu_and_exits_2():
    res = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "no GPU" in out, out


# ---------------------------------------------------------------------------------------------
# on a GPU: CUDA against the CPU core
# ---------------------------------------------------------------------------------------------

# (spec, in_shape): pools first and last, odd sizes, KxK kernels, fc-only, several channels
RANDOM_NETS = [
    ("conv4-pool-fc10", (1, 28, 28)),
    ("conv3k5-conv5-pool-fc7-fc3", (2, 9, 11)),
    ("pool-conv6k1-pool-fc5", (3, 13, 7)),
    ("fc16-fc8-fc4", (1, 5, 6)),
    ("conv8-pool-conv4k3-pool-pool-fc2", (1, 17, 16)),
]


def _random_setup(spec, in_shape, members=3, n=37, seed=0):
    rng = np.random.default_rng(seed)
    params = np.stack([_uqattr.init_params(spec, member_seed(seed, k), in_shape=in_shape) for k in range(members)])
    # wider weights than the default init so that ReLUs and max-pools see varied values
    params *= np.float32(2.0)
    x = rng.normal(0.5, 0.5, size=(n,) + tuple(in_shape)).astype(np.float32)
    return params, x, rng


def _device_model(spec, params, in_shape):
    dev = _uqattr.CudaModel(spec, params, in_shape=in_shape)
    dev.poison = True
    assert dev.poison
    return dev


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
@pytest.mark.parametrize("chunk", [0, 8])
def test_predict_matches_cpu(spec, in_shape, chunk):
    params, x, _ = _random_setup(spec, in_shape)
    dev = _device_model(spec, params, in_shape)
    for logits in (True, False):
        cpu = _uqattr.predict(spec, params, x, logits=logits, in_shape=in_shape)
        out = dev.predict(x, logits=logits, batch_size=chunk)
        assert out.dtype == np.float32 and out.shape == cpu.shape
        assert_close(out, cpu, f"{spec} predict(logits={logits}, chunk={chunk})")


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
def test_decompose_matches_cpu(spec, in_shape):
    params, x, _ = _random_setup(spec, in_shape)
    dev = _device_model(spec, params, in_shape)
    probs = _uqattr.predict(spec, params, x, in_shape=in_shape)
    cpu = _uqattr.decompose(probs)
    out = dev.decompose(x, batch_size=16)
    assert_close(out["member_probs"], probs, f"{spec} member_probs")
    for key in ("mean_probs", "max_prob", "total", "aleatoric", "epistemic"):
        assert out[key].dtype == np.float32
        assert_close(out[key], cpu[key], f"{spec} {key}")
    np.testing.assert_array_equal(out["pred"], cpu["pred"])


def _targets(n, n_classes, rng):
    classes = rng.integers(0, n_classes, n)
    return [(0, None), (1, None), (2, None), (3, None), (4, classes), (5, classes[::-1].copy())]


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
@pytest.mark.parametrize("chunk", [0, 5])
def test_input_gradients_match_cpu(spec, in_shape, chunk):
    """All six targets at once, through the whole ensemble and through each member alone."""
    params, x, rng = _random_setup(spec, in_shape)
    dev = _device_model(spec, params, in_shape)
    targets = _targets(len(x), _uqattr.arch_layers(spec, in_shape=in_shape)["n_classes"], rng)
    g_cpu, v_cpu = _uqattr.input_gradients(spec, params, x, targets, in_shape=in_shape)
    g, v = dev.input_gradients(x, targets, chunk=chunk)
    assert g.shape == g_cpu.shape and v.shape == v_cpu.shape
    for t in range(len(targets)):
        assert_close(g[:, t], g_cpu[:, t], f"{spec} input gradient of target {targets[t][0]}")
        assert_close(v[:, t], v_cpu[:, t], f"{spec} value of target {targets[t][0]}")
    for k in (0, len(params) - 1, -1):
        g_cpu, v_cpu = _uqattr.input_gradients(spec, params[k:][:1], x, targets, in_shape=in_shape)
        g, v = dev.input_gradients(x, targets, chunk=chunk, member=k)
        for t in range(len(targets)):
            if targets[t][0] == 2:  # epistemic of one network: 0, its gradient 0
                assert np.all(v[:, t] == 0) and np.all(np.abs(g[:, t]) < 1e-6)
                continue
            assert_close(g[:, t], g_cpu[:, t], f"{spec} member {k} input gradient of target {targets[t][0]}")
            assert_close(v[:, t], v_cpu[:, t], f"{spec} member {k} value of target {targets[t][0]}")
    with pytest.raises(IndexError):
        dev.input_gradients(x, targets, member=len(params))


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
def test_vjp_matches_cpu(spec, in_shape):
    params, x, rng = _random_setup(spec, in_shape)
    dev = _device_model(spec, params, in_shape)
    C = _uqattr.arch_layers(spec, in_shape=in_shape)["n_classes"]
    dlogits = rng.normal(size=(len(params), len(x), 2, C)).astype(np.float32)
    cpu = sum(_uqattr.vjp(spec, params[m:m + 1], x, dlogits[m], in_shape=in_shape) for m in range(len(params)))
    assert_close(dev.vjp(x, dlogits, chunk=6), cpu, f"{spec} vjp")


def _member_batches(x, y, members, batch):
    """Member m's batch: rows m*batch ... of x, y (x has at least members * batch rows)."""
    return np.ascontiguousarray(x[:members * batch]), np.ascontiguousarray(y[:members * batch])


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
def test_parameter_gradients_match_cpu(spec, in_shape):
    params, x, rng = _random_setup(spec, in_shape, n=3 * 11)
    C = _uqattr.arch_layers(spec, in_shape=in_shape)["n_classes"]
    y = rng.integers(0, C, len(x))
    dev = _device_model(spec, params, in_shape)
    loss, grads = dev.gradients(x, y)
    trainer = _uqattr.Trainer(spec, 11, in_shape=in_shape)
    for m in range(3):
        l_cpu, g_cpu = trainer.gradients(params[m], x[m * 11:(m + 1) * 11], y[m * 11:(m + 1) * 11])
        assert_close(grads[m], g_cpu, f"{spec} member {m} parameter gradient")
        assert abs(loss[m] - l_cpu) < TOL * abs(l_cpu), (loss[m], l_cpu)


@gpu
@pytest.mark.parametrize("spec,in_shape", RANDOM_NETS)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_train_step_matches_cpu(spec, in_shape, optimizer):
    """One optimizer step of every member (two for the moments), as uq_train_step."""
    params, x, rng = _random_setup(spec, in_shape, n=3 * 9)
    C = _uqattr.arch_layers(spec, in_shape=in_shape)["n_classes"]
    y = rng.integers(0, C, len(x))
    dev = _device_model(spec, params, in_shape)
    dev.set_optimizer(optimizer, weight_decay=1e-3)
    trainer = _uqattr.Trainer(spec, 9, optimizer=optimizer, weight_decay=1e-3, in_shape=in_shape)
    cpu = params.copy()
    m_cpu, v_cpu = np.zeros_like(cpu), np.zeros_like(cpu)
    for step, lr in ((1, 1e-3), (2, 5e-4)):
        loss, correct = dev.train_step(x, y, step, lr)
        for m in range(3):
            sl = slice(m * 9, (m + 1) * 9)
            l_cpu, c_cpu = trainer.step(cpu[m], m_cpu[m], v_cpu[m], step, x[sl], y[sl], lr)
            assert abs(loss[m] - l_cpu) < TOL * abs(l_cpu), (step, m, loss[m], l_cpu)
            assert correct[m] == c_cpu
    assert_close(dev.get_params(), cpu, f"{spec} {optimizer} weights after two steps")
    m_dev, v_dev = dev.optimizer_state()
    assert_close(m_dev, m_cpu, f"{spec} {optimizer} first moment")
    if optimizer == "adam":
        assert_close(v_dev, v_cpu, f"{spec} adam second moment")


@gpu
def test_resident_training_steps_match_single_steps():
    """train_steps (data on the device, gathered by each member's order) = train_step on the
    same rows uploaded from the host, bit for bit; epoch_stats sums what the steps saw."""
    spec, in_shape, M, B = "conv4-pool-fc10", (1, 28, 28), 3, 16
    params, x, rng = _random_setup(spec, in_shape, members=M, n=100)
    y = rng.integers(0, 10, len(x))
    orders = np.stack([_uqattr.permutation(len(x), member_seed(0, k), stream=1) for k in range(M)])
    lrs = np.array([1e-3, 2e-3, 1.5e-3, 1e-3, 5e-4, 1e-4, 1e-4], dtype=np.float32)  # 7 batches of 16, the last 4
    a = _device_model(spec, params, in_shape)
    a.set_optimizer("adam")
    a.set_data(x, y)
    a.set_orders(orders)
    a.train_steps(0, lrs[:3], B, 1)
    a.train_steps(3, lrs[3:], B, 4)
    loss_a, correct_a = a.epoch_stats()
    b = _device_model(spec, params, in_shape)
    b.set_optimizer("adam")
    loss_b, correct_b = np.zeros(M), np.zeros(M, np.int64)
    for s in range(7):
        rows = orders[:, s * B:(s + 1) * B]
        l, c = b.train_step(x[rows.ravel()], y[rows.ravel()], s + 1, float(lrs[s]))
        loss_b += l
        correct_b += c
    np.testing.assert_array_equal(a.get_params(), b.get_params())
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-12)
    np.testing.assert_array_equal(correct_a, correct_b)
    assert np.all(a.epoch_stats()[0] == 0), "epoch_stats resets its sums"


@gpu
def test_default_architecture_on_mnist(small_ensemble, mnist_test):
    """The default architecture, trained, on real MNIST: every output against the CPU, and the
    same predicted class for every test image."""
    x, y = mnist_test
    cpu_model = small_ensemble
    dev = _device_model(DEFAULT_ARCH, cpu_model.params, cpu_model.in_shape)
    probs = dev.predict(x)
    probs_cpu = cpu_model.predict_proba(x)
    assert_close(probs, probs_cpu, "default arch probabilities (10,000 images)")
    np.testing.assert_array_equal(probs.mean(0).argmax(1), probs_cpu.mean(0).argmax(1))
    assert_close(dev.predict(x[:1000], logits=True), cpu_model.predict_logits(x[:1000]), "default arch logits")
    d, d_cpu = dev.decompose(x), _uqattr.decompose(probs_cpu)
    for key in ("mean_probs", "max_prob", "total", "aleatoric", "epistemic"):
        assert_close(d[key], d_cpu[key], f"default arch {key}")
    np.testing.assert_array_equal(d["pred"], d_cpu["pred"])
    xs = np.ascontiguousarray(x[:300])
    targets = _targets(len(xs), 10, np.random.default_rng(1))
    g, v = dev.input_gradients(xs, targets)
    g_cpu, v_cpu = _uqattr.input_gradients(DEFAULT_ARCH, cpu_model.params, xs, targets)
    for t in range(len(targets)):
        assert_close(g[:, t], g_cpu[:, t], f"default arch input gradient of target {targets[t][0]}")
        assert_close(v[:, t], v_cpu[:, t], f"default arch value of target {targets[t][0]}")
    loss, grads = dev.gradients(np.ascontiguousarray(x[:3 * 64]), np.ascontiguousarray(y[:3 * 64]))
    trainer = _uqattr.Trainer(DEFAULT_ARCH, 64)
    for m in range(3):
        l_cpu, g_m = trainer.gradients(cpu_model.params[m], x[m * 64:(m + 1) * 64], y[m * 64:(m + 1) * 64])
        assert_close(grads[m], g_m, f"default arch member {m} parameter gradient")


# ---- the Ensemble API on a GPU --------------------------------------------------------------

@gpu
def test_fit_on_gpu_follows_the_cpu_recipe(mnist_train_small):
    """Same init, same per-member data order, same Adam and cosine schedule: a few steps on the
    GPU land where the CPU lands (float rounding aside), and the history matches."""
    x, y = mnist_train_small
    x, y = x[:600], y[:600]  # 5 steps of 128 (the last one short)
    cpu = Ensemble(DEFAULT_ARCH, members=2, seed=11)
    dev = Ensemble(DEFAULT_ARCH, members=2, seed=11, device="cuda")
    assert dev.device == "cuda"
    np.testing.assert_array_equal(dev.params, cpu.params)
    cpu.fit(x, y, epochs=2, batch_size=128, progress=False)
    dev.fit(x, y, epochs=2, batch_size=128, progress=False)
    assert_close(dev.params, cpu.params, "weights after 10 Adam steps", tol=1e-3)
    assert [(h["member"], h["epoch"]) for h in dev.history] == [(h["member"], h["epoch"]) for h in cpu.history]
    for hd, hc in zip(dev.history, cpu.history):
        assert abs(hd["loss"] - hc["loss"]) < 1e-4 * hc["loss"], (hd, hc)
        assert abs(hd["accuracy"] - hc["accuracy"]) <= 2 / len(x), (hd, hc)


@gpu
def test_gpu_training_is_deterministic(mnist_train_small):
    x, y = mnist_train_small
    x, y = x[:1000], y[:1000]
    a = Ensemble(DEFAULT_ARCH, members=3, seed=2, device="cuda").fit(x, y, epochs=1, batch_size=64, progress=False)
    b = Ensemble(DEFAULT_ARCH, members=3, seed=2, device="cuda").fit(x, y, epochs=1, batch_size=64, progress=False)
    np.testing.assert_array_equal(a.params, b.params)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert not np.array_equal(a.params[0], a.params[1])


@gpu
def test_to_round_trip_and_params():
    m = Ensemble(SMALL, members=3, seed=4)
    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    before, probs = m.params.copy(), m.predict_proba(x)
    assert m.to("cuda") is m and m.device == "cuda" and m._cuda is not None
    assert_close(m.predict_proba(x), probs, "probabilities after .to('cuda')")
    assert m.to("cuda:0") is m and m.device == "cuda:0"
    assert m.to("cpu") is m and m.device == "cpu" and m._cuda is None
    np.testing.assert_array_equal(m.params, before)
    np.testing.assert_array_equal(m.predict_proba(x), probs)
    # assigning params on the GPU uploads them; a rejected array changes nothing
    m.to("cuda")
    new = Ensemble(SMALL, members=3, seed=5).params
    m.params = new
    assert_close(m.predict_proba(x), _uqattr.predict(SMALL, new, x), "probabilities after assigning params")
    with pytest.raises(ValueError):
        m.params = new[:2]
    np.testing.assert_array_equal(m.params, new)
    # a member on the GPU is a one-member ensemble on the GPU
    one = m.member(1)
    assert one.device == m.device and one.members == 1
    assert_close(one.predict_proba(x), _uqattr.predict(SMALL, new[1:2], x), "member 1 on the GPU")


@gpu
def test_save_on_gpu_load_on_cpu(tmp_path, mnist_train_small):
    x, y = mnist_train_small
    m = Ensemble(SMALL, members=2, seed=1, device="cuda").fit(x[:256], y[:256], epochs=1, batch_size=64,
                                                                 progress=False)
    path = m.save(tmp_path / "gpu.npz")
    loaded = Ensemble.load(path)
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.params, m.params)
    assert_close(loaded.predict_proba(x[:100]), m.predict_proba(x[:100]), "CPU-loaded vs GPU predictions")
    again = Ensemble.load(path).to("cuda")
    np.testing.assert_array_equal(again.params, m.params)


@gpu
def test_attribution_and_uncertainty_run_on_the_gpu(monkeypatch, small_ensemble, mnist_test):
    """attr and uncertainty() use the device when the ensemble is on one (no silent CPU fallback)
    and give the CPU's numbers."""
    x = np.ascontiguousarray(mnist_test[0][:64])
    cpu = small_ensemble
    sal_cpu = uqattr.Saliency(cpu).attribute(x, ["total", "epistemic", "aleatoric"])
    sal_member_cpu = uqattr.Saliency(cpu, member=1).attribute(x, "total")
    u_cpu = uqattr.uncertainty(cpu, x)
    dev = Ensemble.from_state_dicts(cpu.state_dicts(), cpu.arch, cpu.in_shape, cpu.seed).to("cuda")

    def no_cpu(*args, **kwargs):
        raise AssertionError("ran on the CPU")

    monkeypatch.setattr(_uqattr, "input_gradients", no_cpu)
    monkeypatch.setattr(_uqattr, "predict", no_cpu)
    monkeypatch.setattr(_uqattr, "decompose", no_cpu)
    sal = uqattr.Saliency(dev).attribute(x, ["total", "epistemic", "aleatoric"])
    for key in sal_cpu:
        assert_close(sal[key], sal_cpu[key], f"saliency of {key}")
    assert_close(uqattr.Saliency(dev, member=1).attribute(x, "total"), sal_member_cpu, "member 1 saliency")
    u = uqattr.uncertainty(dev, x)
    for key in ("total", "aleatoric", "epistemic", "max_prob", "mean_probs"):
        assert_close(getattr(u, key), getattr(u_cpu, key), f"uncertainty {key}")
    np.testing.assert_array_equal(u.pred, u_cpu.pred)
    with pytest.raises(IndexError):
        uqattr.input_gradients(dev, x, member=5)


@gpu
def test_cuda_errors_are_python_exceptions():
    with pytest.raises(RuntimeError, match="only"):
        Ensemble(SMALL, members=1, device=f"cuda:{ucuda.device_count()}")
    params = Ensemble(SMALL, members=1).params
    with pytest.raises(ValueError, match="does not exist"):
        _uqattr.CudaModel(SMALL, params, device=ucuda.device_count())
    dev = _uqattr.CudaModel(SMALL, params)
    with pytest.raises(ValueError, match="no optimizer"):
        dev.train_step(np.zeros((1, 784), np.float32), np.zeros(1, np.int64), 1, 1e-3)
    with pytest.raises(ValueError):
        dev.set_orders(np.zeros((1, 3), np.int64))  # no training set yet
    assert ucuda.get_device_name(0)
