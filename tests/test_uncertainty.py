"""Uncertainty decomposition (C core) against a NumPy float64 reference, its
identities, and the analytic input gradients of every target against central
finite differences of the float64 reference network."""
import math

import numpy as np
import pytest

import uqattr
from uqattr import _uqattr
from uqattr.attr import input_gradients

from . import reference as ref


def entropy64(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)


def targets64(member_logits, target):
    """Float64 value of a target for each image from member logits (M, N, C)."""
    p = ref.softmax(member_logits.reshape(-1, member_logits.shape[-1])).reshape(member_logits.shape)
    pbar = p.mean(axis=0)
    total = entropy64(pbar)
    ale = entropy64(p).mean(axis=0)
    if target == "total":
        return total
    if target == "aleatoric":
        return ale
    if target == "epistemic":
        return total - ale
    kind, cls = target
    if kind == "prob":
        return pbar[np.arange(len(cls)), cls]
    if kind == "logit":
        return member_logits.mean(axis=0)[np.arange(len(cls)), cls]
    raise ValueError(target)


def random_probs(rng, M, N, C, alpha=0.5):
    return rng.dirichlet(np.full(C, alpha), size=(M, N)).astype(np.float32)


def test_decompose_matches_reference_and_identities():
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 5, 300, 10)
    u = uqattr.decompose(probs)
    pbar = probs.astype(np.float64).mean(0)
    np.testing.assert_allclose(u.mean_probs, pbar, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(u.total, entropy64(pbar), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u.aleatoric, entropy64(probs).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(u.pred, pbar.argmax(1))
    np.testing.assert_allclose(u.max_prob, pbar.max(1), rtol=1e-6)
    assert np.all(u.aleatoric >= 0)
    assert np.all(u.aleatoric <= u.total + 1e-6)
    assert np.all(u.total <= math.log(10) + 1e-6)
    assert np.all(u.epistemic >= -1e-6)
    np.testing.assert_allclose(u.epistemic, u.total - u.aleatoric, atol=2e-6)
    bits = uqattr.decompose(probs, unit="bits")
    np.testing.assert_allclose(bits.total, u.total / math.log(2), rtol=1e-6)


def test_identical_members_have_zero_epistemic():
    rng = np.random.default_rng(1)
    one = random_probs(rng, 1, 200, 10)
    u = uqattr.decompose(np.repeat(one, 4, axis=0))
    assert np.max(np.abs(u.epistemic)) <= 1e-6
    np.testing.assert_allclose(u.total, u.aleatoric, atol=1e-6)


def test_zero_probabilities_are_safe():
    probs = np.zeros((2, 3, 4), np.float32)
    probs[:, :, 0] = 1.0          # certain, identical members
    probs[1, 2] = [0, 0, 0.5, 0.5]  # one member moves away on image 2
    u = uqattr.decompose(probs)
    for a in (u.total, u.aleatoric, u.epistemic):
        assert np.all(np.isfinite(a))
    np.testing.assert_allclose(u.total[:2], 0.0, atol=1e-7)
    assert u.epistemic[2] > 0.3


def test_gradients_are_finite_at_saturated_softmax():
    ens = uqattr.Ensemble("fc8-fc4", members=2, seed=0, in_shape=(1, 4, 4))
    ens.params *= 200.0   # logits of hundreds: probabilities underflow to exact 0
    x = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    g, v = input_gradients(ens, x, ["total", "aleatoric", "epistemic", "max_prob"])
    for k in g:
        assert np.all(np.isfinite(g[k])) and np.all(np.isfinite(v[k]))


def test_decompose_rejects_bad_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        uqattr.decompose(np.full((2, 3, 4), 1.5, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        uqattr.decompose(np.full((2, 3, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="3-dimensional"):
        uqattr.decompose(np.full((3, 4), 0.25, np.float32))
    with pytest.raises(ValueError, match="unit"):
        uqattr.decompose(np.full((1, 3, 4), 0.25, np.float32), unit="dits")


CASES = [("conv3-pool-fc5", (1, 8, 8), 3), ("fc6-fc4", (1, 5, 5), 4), ("conv2k5-pool-conv3-fc4", (2, 7, 9), 2)]


def _random_ensemble(spec, in_shape, members, seed):
    ens = uqattr.Ensemble(spec, members=members, seed=seed, in_shape=in_shape)
    rng = np.random.default_rng(seed)
    # larger weights than the init: logits of order 1, probabilities far from uniform
    ens.params[:] = (ens.params * 3 + rng.normal(0, 0.05, ens.params.shape)).astype(np.float32)
    return ens


@pytest.mark.parametrize("spec,in_shape,members", CASES)
def test_input_gradients_match_finite_differences(spec, in_shape, members):
    ens = _random_ensemble(spec, in_shape, members, seed=7)
    rng = np.random.default_rng(3)
    n = 3
    x = rng.random((n,) + in_shape).astype(np.float32)
    cls = rng.integers(0, ens.n_classes, n)
    params64 = ens.params.astype(np.float64)

    def member_logits(x64):
        return np.stack([ref.forward_logits(spec, params64[m], x64, in_shape) for m in range(members)])

    pred = member_logits(x.astype(np.float64)).mean(0).argmax(1)  # noqa: F841 (max_prob's class)
    pbar_pred = ref.softmax(member_logits(x.astype(np.float64)).reshape(-1, ens.n_classes)).reshape(
        members, n, -1).mean(0).argmax(1)
    targets = {"total": "total", "aleatoric": "aleatoric", "epistemic": "epistemic",
               "max_prob": ("prob", pbar_pred), "classes": ("prob", cls), "logit:2": ("logit", np.full(n, 2))}
    grads, values = input_gradients(ens, x, ["total", "aleatoric", "epistemic", "max_prob", cls, "logit:2"])
    h = 1e-5
    x64 = x.astype(np.float64)
    for key, t64 in targets.items():
        np.testing.assert_allclose(values[key], targets64(member_logits(x64), t64), rtol=1e-4, atol=1e-5,
                                   err_msg=f"value of {key}")
        fd = np.zeros_like(x64)
        flat = fd.reshape(n, -1)
        for j in range(flat.shape[1]):
            xp, xm = x64.copy().reshape(n, -1), x64.copy().reshape(n, -1)
            xp[:, j] += h
            xm[:, j] -= h
            fp = targets64(member_logits(xp.reshape(x64.shape)), t64)
            fm = targets64(member_logits(xm.reshape(x64.shape)), t64)
            flat[:, j] = (fp - fm) / (2 * h)
        g = grads[key].astype(np.float64)
        rel = np.linalg.norm(g - fd) / np.linalg.norm(fd)
        assert rel < 1e-3, f"{spec} {key}: relative error {rel:.2e}; first pairs {list(zip(g.ravel()[:4], fd.ravel()[:4]))}"


def test_input_gradients_on_trained_ensemble_at_mnist_digits(small_ensemble, mnist_test):
    """Analytic gradients of the trained default ensemble at real digits, against
    float64 finite differences of the reference network on a sample of pixels.

    The digits get a dither of at most 1e-3: MNIST's background is exactly 0, so
    the first conv's outputs tie exactly inside max-pool windows, where the
    network has a kink and no gradient exists (a central difference there
    averages the two one-sided slopes, whatever h is). The dither moves the
    point off the kinks without changing the digit."""
    x, _ = mnist_test
    ens = small_ensemble
    rng = np.random.default_rng(0)
    xs = x[[0, 8, 247]] + rng.uniform(0, 1e-3, (3,) + x.shape[1:]).astype(np.float32)
    params64 = ens.params.astype(np.float64)
    members = ens.members
    shape = ens.in_shape

    def member_logits(x64):
        return np.stack([ref.forward_logits(ens.arch, params64[m], x64, shape) for m in range(members)])

    grads, _ = input_gradients(ens, xs, ["total", "aleatoric", "epistemic"])
    x64 = xs.astype(np.float64).reshape(len(xs), -1)
    # pixels on and beside the strokes, where the gradient lives
    pixels = rng.choice(np.flatnonzero(x64.max(0) > 0.1), 12, replace=False)
    h = 1e-6
    for key in ("total", "aleatoric", "epistemic"):
        fd = np.zeros((len(xs), len(pixels)))
        for j, p in enumerate(pixels):
            xp, xm = x64.copy(), x64.copy()
            xp[:, p] += h
            xm[:, p] -= h
            fd[:, j] = (targets64(member_logits(xp), key) - targets64(member_logits(xm), key)) / (2 * h)
        g = grads[key].reshape(len(xs), -1)[:, pixels].astype(np.float64)
        rel = np.linalg.norm(g - fd) / np.linalg.norm(fd)
        assert rel < 1e-3, f"{key}: relative error {rel:.2e}"


def test_member_gradient_is_the_single_model(small_ensemble, mnist_test):
    x, _ = mnist_test
    xs = np.ascontiguousarray(x[:4])
    g_member, v_member = input_gradients(small_ensemble, xs, ["total", "epistemic"], member=1)
    g_single, v_single = input_gradients(small_ensemble.member(1), xs, ["total", "epistemic"])
    np.testing.assert_array_equal(g_member["total"], g_single["total"])
    assert np.all(v_single["epistemic"] <= 1e-6)  # one member: no disagreement


def test_selection_helpers():
    rng = np.random.default_rng(2)
    u = uqattr.decompose(random_probs(rng, 3, 100, 10))
    most = u.most_uncertain(5)
    least = u.least_uncertain(5)
    assert list(most) == list(np.argsort(-u.total, kind="stable")[:5])
    assert list(least) == list(np.argsort(u.total, kind="stable")[:5])
    assert u.total[most].min() >= u.total[least].max()
    per = u.most_uncertain(2, by="epistemic", per_class="pred")
    for c, idx in per.items():
        assert np.all(u.pred[idx] == c) and len(idx) <= 2
        others = np.flatnonzero(u.pred == c)
        assert u.epistemic[idx].min() >= np.sort(u.epistemic[others])[-len(idx)]
    labels = rng.integers(0, 10, 100)
    per_label = u.least_uncertain(3, by="max_prob", per_class="label", labels=labels)
    assert set(per_label) == set(np.unique(labels))
    with pytest.raises(ValueError, match="measure"):
        u.most_uncertain(3, by="entropy")
    with pytest.raises(ValueError, match="labels"):
        u.most_uncertain(3, per_class="label")
