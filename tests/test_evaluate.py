"""Blur test and perturbation-aware attributions (uqattr.evaluate, uqattr.baselines,
BaselineXGradient), on hand-built networks whose uncertainty depends on known pixels."""
import numpy as np
import pytest

import uqattr
from uqattr import BaselineXGradient, InputXGradient, IntegratedGradients, Saliency, evaluate
from uqattr.baselines import baseline_images, gaussian_blur

# two short horizontal strokes; in the networks below, the image's classes are read off them
STROKE_A = [(8, c) for c in range(6, 14)]
STROKE_B = [(19, c) for c in range(14, 22)]


def _pixels(stroke):
    return {r * 28 + c for r, c in stroke}


def _linear_member(weights):
    """A one-layer network ("fc10") with logit_c = sum over strokes of w[c][stroke] * pixels."""
    w = np.zeros((10, 784), np.float32)
    for c, by_stroke in weights.items():
        for stroke, value in by_stroke:
            for r, col in stroke:
                w[c, r * 28 + col] = value
    return {"fc1.weight": w, "fc1.bias": np.zeros(10, np.float32)}


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = (0.05 * rng.random((n, 1, 28, 28))).astype(np.float32)
    for r, c in STROKE_A:
        x[:, 0, r, c] = 1.0
    for r, c in STROKE_B:  # B drawn a little fainter or stronger from image to image
        x[:, 0, r, c] = np.linspace(0.9, 1.0, n)
    return x


@pytest.fixture(scope="module")
def aleatoric_net():
    """Two identical members: stroke A votes for class 0 (weight 1.0 per pixel), stroke B for
    class 1 (0.9 per pixel). With both strokes drawn the net hesitates between 0 and 1 (total =
    aleatoric ~ log 2, epistemic 0). Removing B makes it sure of 0: B's pixels are what make it
    uncertain; removing A first makes it *more* uncertain before it turns to class 1."""
    member = _linear_member({0: [(STROKE_A, 1.0)], 1: [(STROKE_B, 0.9)]})
    return uqattr.Ensemble.from_state_dicts([member, member], arch="fc10")


@pytest.fixture(scope="module")
def epistemic_net():
    """Two members that disagree about stroke A (member 0 reads it as class 2, member 1 as class
    3, both sure); stroke B votes for class 5 in both, weakly. A is what makes them disagree."""
    m0 = _linear_member({2: [(STROKE_A, 1.5)], 5: [(STROKE_B, 0.3)]})
    m1 = _linear_member({3: [(STROKE_A, 1.5)], 5: [(STROKE_B, 0.3)]})
    return uqattr.Ensemble.from_state_dicts([m0, m1], arch="fc10")


def _top(attribution, k):
    return [set(np.argsort(-a.ravel(), kind="stable")[:k]) for a in attribution]


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32)
    for sigma in (0.7, 1.5, 4.0, 12.0):  # 12: the kernel is wider than the image
        want = ndimage.gaussian_filter(x.astype(np.float64), (0, 0, sigma, sigma))
        np.testing.assert_allclose(gaussian_blur(x, sigma), want, atol=1e-6)
    np.testing.assert_array_equal(gaussian_blur(x, 0), x)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        gaussian_blur(x, -1)


def test_baseline_images():
    x = np.random.default_rng(2).random((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(baseline_images(x, "black"), np.zeros_like(x))
    np.testing.assert_array_equal(baseline_images(x, "blur", sigma=2.0), gaussian_blur(x, 2.0))
    np.testing.assert_array_equal(baseline_images(x, 0.5), np.full_like(x, 0.5))
    np.testing.assert_array_equal(baseline_images(x, x[:1]), np.repeat(x[:1], 2, axis=0))
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        baseline_images(x, "grey")
    with pytest.raises(ValueError, match="does not broadcast"):
        baseline_images(x, np.zeros((3, 28, 28)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        baseline_images(x, np.nan)


def test_baseline_x_gradient_is_first_order_removal(aleatoric_net):
    x = _images()
    g = Saliency(aleatoric_net).attribute(x, target="total")
    blurred = gaussian_blur(x)
    np.testing.assert_allclose(BaselineXGradient(aleatoric_net).attribute(x, target="total"),
                               g * (x - blurred)[:, 0], rtol=1e-6, atol=1e-9)
    # a black baseline makes it input x gradient
    np.testing.assert_allclose(BaselineXGradient(aleatoric_net, baseline="black").attribute(x, target="total"),
                               InputXGradient(aleatoric_net).attribute(x, target="total"), rtol=1e-6)
    # the first-order estimate predicts the change of a small removal: move one pixel 1% of the way
    r, c = STROKE_B[3]
    moved = x.copy()
    moved[:, 0, r, c] += 0.01 * (blurred[:, 0, r, c] - x[:, 0, r, c])
    drop = uqattr.uncertainty(aleatoric_net, x).total - uqattr.uncertainty(aleatoric_net, moved).total
    estimate = 0.01 * BaselineXGradient(aleatoric_net).attribute(x, target="total")[:, r, c]
    np.testing.assert_allclose(drop, estimate, rtol=0.05)


def test_integrated_gradients_named_baselines(aleatoric_net):
    x = _images(3)
    ig = IntegratedGradients(aleatoric_net, steps=16)
    np.testing.assert_array_equal(ig.attribute(x, target="total", baseline="blur"),
                                  ig.attribute(x, target="total", baseline=gaussian_blur(x)))
    np.testing.assert_array_equal(ig.attribute(x, target="total", baseline="black"),
                                  ig.attribute(x, target="total", baseline=0.0))
    _, delta = IntegratedGradients(aleatoric_net, baseline="blur").attribute(x, target="total",
                                                                              return_convergence_delta=True)
    assert np.abs(delta).max() < 1e-4  # a linear net: the path integral is smooth


def test_the_right_pixels_score_best(aleatoric_net, epistemic_net):
    x = _images()
    u = uqattr.uncertainty(aleatoric_net, x)
    assert np.all(u.total > 0.4) and np.all(u.epistemic < 1e-6)
    # total / aleatoric: stroke B (the weaker vote) is what keeps the net from being sure of class 0
    for target in ("total", "aleatoric"):
        for top in _top(BaselineXGradient(aleatoric_net).attribute(x, target=target), 8):
            assert top == _pixels(STROKE_B), target
    # epistemic: the stroke the members disagree about
    ue = uqattr.uncertainty(epistemic_net, x)
    assert np.all(ue.epistemic > 0.5)
    for top in _top(BaselineXGradient(epistemic_net).attribute(x, target="epistemic"), 8):
        assert top == _pixels(STROKE_A)


def test_blur_test_ranks_the_known_pixels_over_random(aleatoric_net, epistemic_net):
    x = _images(8)
    for net, target in ((aleatoric_net, "total"), (aleatoric_net, "aleatoric"), (epistemic_net, "epistemic")):
        right = evaluate.blur_test(net, x, BaselineXGradient(net).attribute(x, target=target), target=target,
                                   select="all")
        chance = evaluate.blur_test(net, x, "random", target=target, select="all")
        assert right.urc_at[0.01] > 0.1 and right.urc_at[0.05] > 0.5, right.summary()
        assert right.one_minus_auc > 0.3
        assert chance.urc_at[0.05] < 0.1 and chance.one_minus_auc < 0.1, chance.summary()
    # on the aleatoric net the gradient's magnitude ranks stroke A (the bigger weight) first, and
    # blurring A's first pixels makes the net *more* uncertain (it moves towards a tie of 0 and 1)
    wrong = evaluate.blur_test(aleatoric_net, x, Saliency(aleatoric_net).attribute(x, "total", abs=True),
                               target="total", select="all")
    right = evaluate.blur_test(aleatoric_net, x, BaselineXGradient(aleatoric_net).attribute(x, target="total"),
                               target="total", select="all")
    assert np.all(wrong.ratio[:, 1:3] > 1) and np.all(right.ratio[:, 1:3] < 1)
    assert np.all(wrong.urc[1:3] == 0)


def test_blur_test_mechanics(aleatoric_net):
    """H_k is the target after the k top-ranked pixels are replaced by their blurred values."""
    x = _images(4)
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 28, 28))
    res = evaluate.blur_test(aleatoric_net, x, a, target="total", select="all", max_fraction=0.02, steps=4)
    assert res.k[0] == 0 and res.k[-1] == round(0.02 * 784) and 8 in res.k  # 1% is always evaluated
    np.testing.assert_array_equal(res.indices, np.arange(4))
    blurred = gaussian_blur(x)
    for j, k in enumerate(res.k):
        edited = x.copy().reshape(4, -1)
        top = np.argsort(-a.reshape(4, -1), axis=1, kind="stable")[:, :k]
        rows = np.arange(4)[:, None]
        edited[rows, top] = blurred.reshape(4, -1)[rows, top]
        want = uqattr.uncertainty(aleatoric_net, edited.reshape(x.shape)).total
        np.testing.assert_allclose(res.values[:, j], want, rtol=1e-6)
    np.testing.assert_allclose(res.ratio, res.values / res.values[:, :1])
    np.testing.assert_allclose(res.urc, np.median(np.maximum.accumulate(1 - res.ratio, axis=1), axis=0))
    curve = res.ratio.mean(0)
    auc = np.trapezoid(curve, res.fractions) / (res.fractions[-1] - res.fractions[0])
    assert res.one_minus_auc == pytest.approx(1 - auc)
    # above the median: half of the images, the more uncertain half
    half = evaluate.blur_test(aleatoric_net, x, a, target="total", max_fraction=0.02)
    h = uqattr.uncertainty(aleatoric_net, x).total
    np.testing.assert_array_equal(half.indices, np.flatnonzero(h > np.median(h)))
    # seeded random ranking
    r1 = evaluate.blur_test(aleatoric_net, x, "random", target="total", select="all", seed=5)
    r2 = evaluate.blur_test(aleatoric_net, x, "random", target="total", select="all", seed=5)
    np.testing.assert_array_equal(r1.values, r2.values)


def test_deletion_curve_for_max_prob(aleatoric_net):
    """For "max_prob" the curve follows the probability of the class predicted on the intact image."""
    x = _images(4)
    pred = aleatoric_net.predict(x)
    a = BaselineXGradient(aleatoric_net).attribute(x, target="max_prob")
    res = evaluate.blur_test(aleatoric_net, x, a, target="max_prob")
    assert len(res.indices) == 4  # every image by default
    p0 = aleatoric_net.predict_proba(x).mean(0)[np.arange(4), pred]
    np.testing.assert_allclose(res.values[:, 0], p0, rtol=1e-6)
    assert res.urc_at[0.05] > 0.3  # removing stroke A takes the probability of class 0 away


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target="entropy"), ValueError, "target must be one of"),
    (dict(attribution=np.zeros((4, 27, 28))), ValueError, "attribution has shape"),
    (dict(attribution=np.full((4, 28, 28), np.nan)), ValueError, "NaN or Inf"),
    (dict(attribution="best"), ValueError, "attribution must be an array or 'random'"),
    (dict(max_fraction=0.0), ValueError, "max_fraction must be in"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(select="top"), ValueError, "select must be"),
    (dict(select=[7]), IndexError, "outside"),
])
def test_blur_test_bad_arguments(aleatoric_net, kwargs, error, match):
    args = dict(attribution=np.zeros((4, 28, 28)), target="total")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate.blur_test(aleatoric_net, _images(4), **args)


def test_compare_attributions_on_mnist(small_ensemble, mnist_test):
    """The comparison runs every method for every target on real digits; the signed
    perturbation-aware ranking beats random for each target."""
    x = mnist_test[0][:300]
    xs = x[uqattr.uncertainty(small_ensemble, x).most_uncertain(16)]
    methods = evaluate.default_methods(small_ensemble, smoothgrad_samples=2, ig_steps=4)
    cmp = evaluate.compare_attributions(small_ensemble, xs, targets=["total", "epistemic", "max_prob"],
                                        methods=methods, steps=5, progress=False)
    assert cmp.methods == list(methods) and cmp.targets == ["total", "epistemic", "max_prob"]
    assert len(cmp.rows()) == len(methods) * 3
    pa = "gradient \u00d7 (x \u2212 blur)"
    for t in cmp.targets:
        assert cmp.table()[pa][t] > cmp.table()["random"][t], t
    text = cmp.to_markdown()
    assert text.count("\n") == len(methods) * 3 + 1 and pa in text
    fig = cmp.plot()
    assert len(fig.axes) == 3
    import matplotlib.pyplot as plt
    plt.close(fig)
