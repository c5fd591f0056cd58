"""The C core's forward pass and analytic gradients against an independent
float64 NumPy reference (tests/reference.py).

Gradients are checked against central finite differences of the *reference*
in float64 (h = 1e-5), never against differences of the float32 C forward:
the C gradients (float32) must agree to a relative error
||g_c - g_fd|| / ||g_fd|| < 1e-3 per layer tensor.

Weights are PyTorch-style random inits (random seed) plus noise on the same
scale, so that biases are not tiny; inputs are uniform random (no exact ties
in max-pool windows, no pre-activation sitting on a ReLU kink).
"""
import zlib

import numpy as np
import pytest

try:  # tests/ is a package (tests/__init__.py) or a plain folder on sys.path
    from . import reference as R
except ImportError:
    import reference as R
from uqattr import DEFAULT_ARCH, Ensemble, _uqattr

H = 1e-5          # finite-difference step (float64)
RTOL = 1e-3       # relative error per tensor, C (float32) vs FD of the reference (float64)

# (spec, in_shape): each layer kind alone and in combination, odd sizes
SPECS = [
    ("fc7-fc3", (1, 5, 5)),                              # dense only
    ("conv3-fc4", (2, 5, 7)),                            # 3x3 conv, 2 input channels, odd H, W
    ("conv2k5-fc3", (1, 7, 6)),                          # 5x5 conv (padding 2)
    ("conv3k1-fc3", (2, 4, 5)),                          # 1x1 conv (no padding)
    ("pool-fc3", (2, 7, 9)),                             # max-pool alone, odd sizes (floor)
    ("conv4-pool-conv3-pool-fc5-fc3", (1, 9, 11)),       # everything, odd sizes, two pools
    ("conv3-conv2k5-pool-fc6-fc5-fc4", (3, 6, 5)),       # conv after conv, three fc
    ("conv5-pool-fc3", (16, 5, 7)),                      # 16 input channels: the sparse path's gather
    ("conv3k5-fc3", (16, 4, 5)),                         # kernels (channels in whole vectors), odd sizes
]
SPEC_IDS = [f"{s}@{'x'.join(map(str, shp))}" for s, shp in SPECS]
BATCHES = [1, 3]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def check_tensor(name, got, want, rtol=RTOL, n_show=5):
    """llm.c-style check: relative error of ``got`` (C) against ``want`` (reference);
    on failure, shows the first entries side by side and the largest difference."""
    got = np.ravel(np.asarray(got, dtype=np.float64))
    want = np.ravel(np.asarray(want, dtype=np.float64))
    assert got.shape == want.shape, f"{name}: shape {got.shape} vs {want.shape}"
    norm = np.linalg.norm(want)
    diff = np.abs(got - want)
    assert norm > 0, f"{name}: the reference is all zero, the check would be vacuous"
    err = np.linalg.norm(got - want) / norm
    if not err < rtol:
        worst = int(diff.argmax())
        lines = [f"{name}: relative error {err:.3e} >= {rtol:g}; ||ref|| = {norm:.3e}, "
                 f"max |diff| = {diff[worst]:.3e} at flat index {worst} "
                 f"(C {got[worst]:.8e} vs ref {want[worst]:.8e})"]
        for i in range(min(n_show, got.size)):
            lines.append(f"  [{i}] C {got[i]: .8e}   ref {want[i]: .8e}")
        pytest.fail("\n".join(lines))
    return err


def check_close(name, got, want, atol):
    """Max-abs check with the first pairs shown on failure."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} vs {want.shape}"
    diff = np.abs(got - want)
    if not diff.max() <= atol:
        g, w, d = got.ravel(), want.ravel(), diff.ravel()
        worst = int(d.argmax())
        lines = [f"{name}: max |diff| = {d[worst]:.3e} > {atol:.1e} at flat index {worst} "
                 f"(C {g[worst]:.8e} vs ref {w[worst]:.8e})"]
        lines += [f"  [{i}] C {g[i]: .8e}   ref {w[i]: .8e}" for i in range(min(5, g.size))]
        pytest.fail("\n".join(lines))
    return diff.max()


def tensors(spec, in_shape):
    """(name, slice) of every weight and bias tensor in the slab, from the reference's parse."""
    layers, _ = R.parse(spec, in_shape)
    out = []
    for L in layers:
        if L.kind != "pool":
            out.append((f"{L.name}.weight", slice(L.w_off, L.w_off + L.n_w)))
            out.append((f"{L.name}.bias", slice(L.b_off, L.b_off + L.n_b)))
    return out


def random_params(spec, in_shape, rng):
    """PyTorch default init from a random seed, plus noise on each tensor's own scale."""
    p = _uqattr.init_params(spec, int(rng.integers(2**63)), in_shape=in_shape).astype(np.float64)
    layers, _ = R.parse(spec, in_shape)
    for L in layers:
        if L.kind == "pool":
            continue
        fan_in = L.w_shape[1] * (L.k * L.k if L.kind == "conv" else 1)
        bound = 1.0 / np.sqrt(fan_in)
        s = slice(L.w_off, L.b_off + L.n_b)
        p[s] += rng.normal(0.0, 0.5 * bound, size=s.stop - s.start)
    return p.astype(np.float32)


def random_problem(spec, in_shape, batch, seed):
    rng = np.random.default_rng(seed)
    params = random_params(spec, in_shape, rng)
    x = rng.uniform(0.05, 1.0, size=(batch,) + tuple(in_shape)).astype(np.float32)
    n_classes = R.parse(spec, in_shape)[0][-1].out_shape[0]
    y = rng.integers(0, n_classes, size=batch)
    return rng, params, x, y, n_classes


def fd_param_grad(spec, params, x, y, in_shape, idx, h=H):
    """Central differences of the reference's mean cross-entropy at the entries ``idx``."""
    p64, x64 = params.astype(np.float64), x.astype(np.float64)
    g = np.empty(len(idx))
    for n, i in enumerate(idx):
        old = p64[i]
        p64[i] = old + h
        lp = R.loss(spec, p64, x64, y, in_shape)
        p64[i] = old - h
        lm = R.loss(spec, p64, x64, y, in_shape)
        p64[i] = old
        g[n] = (lp - lm) / (2 * h)
    return g


def fd_input_jacobian(spec, params, x, in_shape, pixels, h=H, chunk=64):
    """J[n, c, j] = d logits[n, c] / d x[n].flat[pixels[j]] by central differences of the
    reference; the perturbed copies of each chunk of pixels go through it as one batch."""
    p64 = params.astype(np.float64)
    N = x.shape[0]
    xf = x.reshape(N, -1).astype(np.float64)
    n_classes = R.parse(spec, in_shape)[0][-1].out_shape[0]
    J = np.empty((N, n_classes, len(pixels)))
    for s in range(0, len(pixels), chunk):
        part = pixels[s:s + chunk]
        K = len(part)
        xs = np.repeat(xf[None], 2 * K, axis=0)  # (2K, N, D)
        xs[np.arange(K), :, part] += h
        xs[K + np.arange(K), :, part] -= h
        z = R.forward_logits(spec, p64, xs.reshape(2 * K * N, -1), in_shape).reshape(2 * K, N, n_classes)
        J[:, :, s:s + K] = ((z[:K] - z[K:]) / (2 * h)).transpose(1, 2, 0)
    return J


def c_gradients(spec, params, x, y, in_shape):
    trainer = _uqattr.Trainer(spec, len(x), in_shape=in_shape)
    return trainer.gradients(params, x, y)


@pytest.fixture(params=["dense", "sparse"])
def conv_backward(request):
    """Runs a test with each of conv2d_backward's two paths forced: im2col + GEMM ("dense") and
    the list of non-zero output gradients ("sparse"); "auto" picks between them per row."""
    _uqattr.set_conv_backward(request.param)
    yield request.param
    _uqattr.set_conv_backward("auto")


# ---------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,in_shape", SPECS + [(DEFAULT_ARCH, (1, 28, 28))], ids=SPEC_IDS + ["default"])
def test_reference_layout_matches_arch_layers(spec, in_shape):
    """The reference parses specs into the same slab layout as the C core."""
    layers, n_params = R.parse(spec, in_shape)
    info = _uqattr.arch_layers(spec, in_shape=in_shape)
    assert info["n_params"] == n_params
    assert info["n_classes"] == layers[-1].out_shape[0]
    assert [d["name"] for d in info["layers"]] == [L.name for L in layers]
    for d, L in zip(info["layers"], layers):
        assert d["kind"] == {"fc": "dense"}.get(L.kind, L.kind)
        assert d["relu"] == L.relu
        if L.kind != "pool":
            assert (d["weight_offset"], tuple(d["weight_shape"])) == (L.w_off, L.w_shape)
            assert (d["bias_offset"], tuple(d["bias_shape"])) == (L.b_off, L.b_shape)
        else:
            assert tuple(d["out_shape"]) == L.out_shape


def test_reference_pool_rules():
    """Sanity of the reference's max-pool: floor on odd sizes, first max wins on ties."""
    x = np.arange(1, 5 * 7 + 1, dtype=np.float64).reshape(1, 1, 5, 7)
    out = R.maxpool2(x)
    assert out.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [[9, 11, 13], [23, 25, 27]])
    # a tie: the value is the same whichever wins, the gradient is not (see test_pool_ties)
    t = np.zeros((1, 1, 2, 2))
    assert R.maxpool2(t)[0, 0, 0, 0] == 0.0


# ---------------------------------------------------------------------------------------------
# (a) parameter gradients of the mean cross-entropy
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("spec,in_shape", SPECS, ids=SPEC_IDS)
def test_param_gradients(spec, in_shape, batch, conv_backward):
    _, params, x, y, _ = random_problem(spec, in_shape, batch, seed=zlib.crc32(f"{spec} {batch}".encode()))
    loss_c, g_c = c_gradients(spec, params, x, y, in_shape)
    assert g_c.shape == params.shape and g_c.dtype == np.float32
    loss_ref = R.loss(spec, params.astype(np.float64), x.astype(np.float64), y, in_shape)
    assert loss_c == pytest.approx(loss_ref, rel=1e-5)
    g_fd = fd_param_grad(spec, params, x, y, in_shape, np.arange(params.size))
    for name, s in tensors(spec, in_shape):
        check_tensor(f"{spec} batch {batch}: {name}", g_c[s], g_fd[s])


def test_param_gradients_default_arch(conv_backward):
    """The default architecture on MNIST-sized input, batch 2: ~40 entries per layer
    (half where the C gradient is nonzero, half uniformly at random)."""
    spec, in_shape = DEFAULT_ARCH, (1, 28, 28)
    rng, params, x, y, _ = random_problem(spec, in_shape, 2, seed=20240)
    loss_c, g_c = c_gradients(spec, params, x, y, in_shape)
    assert loss_c == pytest.approx(R.loss(spec, params.astype(np.float64), x.astype(np.float64), y, in_shape),
                                   rel=1e-5)
    picks = {}
    for name, s in tensors(spec, in_shape):
        n_pick = 28 if name.endswith("weight") else 12
        nonzero = np.flatnonzero(g_c[s])
        assert len(nonzero) > 0, f"{name}: C gradient is all zero"
        idx = np.concatenate([rng.choice(nonzero, min(n_pick // 2, len(nonzero)), replace=False),
                              rng.choice(s.stop - s.start, n_pick - n_pick // 2, replace=False)])
        picks[name] = s.start + np.unique(idx)
    all_idx = np.concatenate(list(picks.values()))
    g_fd = dict(zip(all_idx, fd_param_grad(spec, params, x, y, in_shape, all_idx)))
    for name, idx in picks.items():
        check_tensor(f"default arch: {name} ({len(idx)} entries)", g_c[idx], [g_fd[i] for i in idx])


def test_param_gradients_accumulate_nothing_between_calls():
    """gradients() returns a fresh gradient each call (no accumulation across calls)."""
    spec, in_shape = "conv3-pool-fc4", (1, 6, 6)
    _, params, x, y, _ = random_problem(spec, in_shape, 2, seed=7)
    trainer = _uqattr.Trainer(spec, 4, in_shape=in_shape)
    l1, g1 = trainer.gradients(params, x, y)
    l2, g2 = trainer.gradients(params, x, y)
    np.testing.assert_array_equal(g1, g2)
    assert l1 == l2
    # a smaller batch than the Trainer's capacity
    _, g_one = trainer.gradients(params, x[:1], y[:1])
    check_tensor("batch 1 in a batch-4 Trainer", g_one,
                 fd_param_grad(spec, params, x[:1], y[:1], in_shape, np.arange(params.size)))


# ---------------------------------------------------------------------------------------------
# (b) input gradients (vector-Jacobian products)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("spec,in_shape", SPECS, ids=SPEC_IDS)
def test_input_gradients(spec, in_shape, T, conv_backward):
    batch = 2
    rng, params, x, _, n_classes = random_problem(spec, in_shape, batch, seed=zlib.crc32(f"{spec} T{T}".encode()))
    dlogits = rng.normal(size=(batch, T, n_classes)).astype(np.float32)
    dx = _uqattr.vjp(spec, params, x, dlogits, in_shape=in_shape)
    assert dx.shape == (batch, T) + tuple(in_shape) and dx.dtype == np.float32
    D = int(np.prod(in_shape))
    J = fd_input_jacobian(spec, params, x, in_shape, np.arange(D))      # (N, C, D)
    want = np.einsum("ntc,ncd->ntd", dlogits.astype(np.float64), J)     # d sum(dlogits * logits) / dx
    for t in range(T):
        check_tensor(f"{spec} vjp target {t} of {T}", dx[:, t].reshape(batch, D), want[:, t])


def test_input_gradients_default_arch(conv_backward):
    """Default architecture, batch 2, T = 1 and 3: 60 pixels (corners and borders included)."""
    spec, in_shape = DEFAULT_ARCH, (1, 28, 28)
    rng, params, x, _, C = random_problem(spec, in_shape, 2, seed=99)
    edge = [0, 27, 27 * 28, 28 * 28 - 1, 13, 14 * 28, 14 * 28 + 27, 27 * 28 + 14]
    pixels = np.unique(np.concatenate([edge, rng.choice(784, 52, replace=False)]))
    J = fd_input_jacobian(spec, params, x, in_shape, pixels)
    for T in (1, 3):
        dlogits = rng.normal(size=(2, T, C)).astype(np.float32)
        dx = _uqattr.vjp(spec, params, x, dlogits, in_shape=in_shape).reshape(2, T, 784)
        want = np.einsum("ntc,ncd->ntd", dlogits.astype(np.float64), J)
        for t in range(T):
            check_tensor(f"default arch vjp target {t} of {T}", dx[:, t, pixels], want[:, t])


def test_vjp_targets_are_independent():
    """Row t of a T = 3 call equals a T = 1 call with dlogits[:, t]."""
    spec, in_shape = "conv4-pool-conv3-pool-fc5-fc3", (1, 9, 11)
    rng, params, x, _, C = random_problem(spec, in_shape, 3, seed=5)
    dlogits = rng.normal(size=(3, 3, C)).astype(np.float32)
    dx = _uqattr.vjp(spec, params, x, dlogits, in_shape=in_shape)
    for t in range(3):
        one = _uqattr.vjp(spec, params, x, np.ascontiguousarray(dlogits[:, t:t + 1]), in_shape=in_shape)
        np.testing.assert_allclose(dx[:, t], one[:, 0], rtol=1e-6, atol=1e-9)


def test_vjp_more_images_than_a_chunk(conv_backward):
    """vjp works through its input in chunks (of 64 images): 67 images, T = 2, all
    checked against the reference, so the chunk offsets of x, dlogits and dx are right."""
    spec, in_shape = "conv3-pool-fc4", (1, 6, 6)
    N, T = 67, 2
    rng, params, x, _, C = random_problem(spec, in_shape, N, seed=11)
    dlogits = rng.normal(size=(N, T, C)).astype(np.float32)
    dx = _uqattr.vjp(spec, params, x, dlogits, in_shape=in_shape).reshape(N, T, -1)
    J = fd_input_jacobian(spec, params, x, in_shape, np.arange(36))
    want = np.einsum("ntc,ncd->ntd", dlogits.astype(np.float64), J)
    for n in (0, 1, 63, 64, 65, 66):
        check_tensor(f"vjp image {n} of {N}", dx[n], want[n])
    check_tensor("vjp all images", dx, want)


def test_pool_ties_first_max_wins():
    """Exact ties in a pool window: the gradient goes to the first maximum (row-major),
    as in PyTorch, in both the forward choice and the backward routing."""
    spec, in_shape = "pool-fc2", (1, 2, 4)
    params = np.zeros(_uqattr.arch_layers(spec, in_shape=in_shape)["n_params"], dtype=np.float32)
    params[:4] = [1.0, 2.0, 0.0, 0.0]  # fc1.weight row 0 -> logit 0 = 1 * pool[0, 0] + 2 * pool[0, 1]
    x = np.array([[[[3.0, 3.0, 1.0, 5.0],
                    [3.0, 3.0, 5.0, 5.0]]]], dtype=np.float32)
    dlogits = np.array([[[1.0, 0.0]]], dtype=np.float32)
    dx = _uqattr.vjp(spec, params, x, dlogits, in_shape=in_shape)[0, 0, 0]
    np.testing.assert_array_equal(dx, [[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    logits = _uqattr.predict(spec, params[None], x, logits=True, in_shape=in_shape)[0, 0]
    np.testing.assert_allclose(logits, R.forward_logits(spec, params.astype(np.float64),
                                                        x.astype(np.float64), in_shape)[0])


# ---------------------------------------------------------------------------------------------
# (c) forward pass
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,in_shape", SPECS + [(DEFAULT_ARCH, (1, 28, 28))], ids=SPEC_IDS + ["default"])
def test_forward_logits_and_probs(spec, in_shape):
    rng = np.random.default_rng(3)
    params = np.stack([random_params(spec, in_shape, rng) for _ in range(2)])
    x = rng.uniform(0.0, 1.0, size=(5,) + tuple(in_shape)).astype(np.float32)
    logits = _uqattr.predict(spec, params, x, logits=True, in_shape=in_shape)
    probs = _uqattr.predict(spec, params, x, in_shape=in_shape)
    for m in range(2):
        ref = R.forward_logits(spec, params[m].astype(np.float64), x.astype(np.float64), in_shape)
        check_close(f"{spec} member {m} logits", logits[m], ref, 1e-5 * max(1.0, np.abs(ref).max()))
        check_close(f"{spec} member {m} probs", probs[m], R.softmax(ref), 1e-6)


def test_forward_chunked_batches():
    """predict's batch_size only chunks the work: any chunking gives the reference result."""
    spec, in_shape = "conv4-pool-conv3-pool-fc5-fc3", (1, 9, 11)
    rng = np.random.default_rng(4)
    params = random_params(spec, in_shape, rng)[None]
    x = rng.uniform(size=(37,) + in_shape).astype(np.float32)
    ref = R.forward_logits(spec, params[0].astype(np.float64), x.astype(np.float64), in_shape)
    for bs in (1, 8, 36, 37, 1000):
        got = _uqattr.predict(spec, params, x, logits=True, in_shape=in_shape, batch_size=bs)[0]
        check_close(f"batch_size {bs}", got, ref, 1e-5 * max(1.0, np.abs(ref).max()))


def _random_state_dict(rng, gain):
    """PyTorch-layout weights of the default arch, on a scale where the logits spread."""
    sd = {}
    for name, w_shape in [("conv1", (32, 1, 3, 3)), ("conv2", (64, 32, 3, 3)),
                          ("fc1", (128, 64 * 7 * 7)), ("fc2", (10, 128))]:
        fan_in = int(np.prod(w_shape[1:]))
        sd[f"{name}.weight"] = (gain * rng.normal(size=w_shape) / np.sqrt(fan_in)).astype(np.float32)
        sd[f"{name}.bias"] = rng.uniform(-0.2, 0.2, size=w_shape[0]).astype(np.float32)
    return sd


def test_from_state_dicts_probabilities_match_reference():
    """The issue's requirement: a default-arch ensemble built from PyTorch-layout dicts
    gives probabilities within 1e-5 of the float64 reference."""
    rng = np.random.default_rng(12345)
    dicts = [_random_state_dict(rng, gain) for gain in (2.0, 3.0)]
    ens = Ensemble.from_state_dicts(dicts)
    x = (rng.uniform(size=(24, 1, 28, 28)) ** 4).astype(np.float32)  # sparse, bright strokes
    probs = ens.predict_proba(x)
    assert probs.shape == (2, 24, 10) and probs.dtype == np.float32
    layers, _ = R.parse(DEFAULT_ARCH, (1, 28, 28))
    for m, sd in enumerate(dicts):
        # the reference slab is laid out from the dicts by the reference's own parse
        slab = np.concatenate([sd[f"{L.name}.{part}"].astype(np.float64).ravel()
                               for L in layers if L.kind != "pool" for part in ("weight", "bias")])
        ref = R.probabilities(DEFAULT_ARCH, slab, x.astype(np.float64), (1, 28, 28))
        assert ref.max() > 0.9 and ref.min() < 0.01, "test weights give too flat probabilities"
        check_close(f"member {m} probabilities", probs[m], ref, 1e-5)


def test_conv_backward_paths_agree_on_real_digits(mnist_test):
    """Real digits through the default network, where a max-pool follows each conv (so the
    sparse path sees only the windows' maxima that passed the ReLU): parameter and input
    gradients of the two paths agree to float rounding, and "auto" is the sparse path there."""
    x, y = mnist_test
    x, y = np.ascontiguousarray(x[:48]), np.ascontiguousarray(y[:48])
    params = Ensemble(members=1, seed=3).params[0]
    dlogits = np.random.default_rng(3).normal(size=(48, 3, 10)).astype(np.float32)
    trainer = _uqattr.Trainer(DEFAULT_ARCH, 48)
    got = {}
    try:
        for mode in ("dense", "sparse", "auto"):
            _uqattr.set_conv_backward(mode)
            got[mode] = (trainer.gradients(params, x, y)[1], _uqattr.vjp(DEFAULT_ARCH, params, x, dlogits))
    finally:
        _uqattr.set_conv_backward("auto")
    for name, sparse, dense in zip(("parameter gradients", "input gradients"), got["sparse"], got["dense"]):
        check_tensor(f"sparse vs dense path: {name}", sparse, dense, rtol=1e-5)
        assert not np.array_equal(sparse, dense), f"{name}: the two paths gave identical bits (same path?)"
    for auto, sparse in zip(got["auto"], got["sparse"]):
        np.testing.assert_array_equal(auto, sparse)
