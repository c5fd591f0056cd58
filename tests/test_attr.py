"""Attribution methods: conventions, determinism, batch independence and
Integrated Gradients' completeness, on the small trained ensemble."""
import numpy as np
import pytest

import uqattr
from uqattr import IntegratedGradients, InputXGradient, Saliency, SmoothGrad, input_gradients


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return np.ascontiguousarray(x[:6]), y[:6]


def test_saliency_shapes_sign_and_abs(small_ensemble, digits):
    x, _ = digits
    s = Saliency(small_ensemble)
    signed = s.attribute(x, target="epistemic")
    assert signed.shape == (6, 28, 28) and signed.dtype == np.float32
    assert (signed < 0).any() and (signed > 0).any()
    np.testing.assert_array_equal(s.attribute(x, target="epistemic", abs=True), np.abs(signed))
    g, _ = input_gradients(small_ensemble, x, ["epistemic"])
    np.testing.assert_array_equal(signed, g["epistemic"][:, 0])
    # a (28, 28) image and a (N, 28, 28) stack are accepted too
    np.testing.assert_array_equal(s.attribute(x[0, 0], target="epistemic")[0], signed[0])
    np.testing.assert_array_equal(s.attribute(x[:, 0], target="epistemic"), signed)


def test_many_targets_in_one_call_equal_single_calls(small_ensemble, digits):
    x, y = digits
    s = Saliency(small_ensemble)
    many = s.attribute(x, target=["total", "aleatoric", "epistemic", "max_prob", 3, "logit:7"])
    assert set(many) == {"total", "aleatoric", "epistemic", "max_prob", 3, "logit:7"}
    for t in many:
        np.testing.assert_array_equal(many[t], s.attribute(x, target=t))
    # epistemic = total - aleatoric holds for the gradients too
    np.testing.assert_allclose(many["epistemic"], many["total"] - many["aleatoric"], atol=1e-5)
    per_image = s.attribute(x, target=y)
    for i in range(len(x)):
        np.testing.assert_array_equal(per_image[i], s.attribute(x[i:i + 1], target=int(y[i]))[0])


def test_results_do_not_depend_on_batch(small_ensemble, digits):
    x, _ = digits
    s = Saliency(small_ensemble)
    together = s.attribute(x, target="total")
    alone = np.concatenate([s.attribute(x[i:i + 1], target="total") for i in range(len(x))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-8)


def test_input_x_gradient(small_ensemble, digits):
    x, _ = digits
    ixg = InputXGradient(small_ensemble).attribute(x, target="aleatoric")
    np.testing.assert_allclose(ixg, x[:, 0] * Saliency(small_ensemble).attribute(x, target="aleatoric"),
                               rtol=1e-6)


def test_smoothgrad_is_seeded_and_averages(small_ensemble, digits):
    x, _ = digits
    a = SmoothGrad(small_ensemble, n_samples=8, seed=1).attribute(x[:2], target="total")
    b = SmoothGrad(small_ensemble, n_samples=8, seed=1).attribute(x[:2], target="total")
    np.testing.assert_array_equal(a, b)
    c = SmoothGrad(small_ensemble, n_samples=8, seed=2).attribute(x[:2], target="total")
    assert not np.array_equal(a, c)
    # sigma = 0: every sample is the input itself
    np.testing.assert_allclose(SmoothGrad(small_ensemble, n_samples=3, sigma=0.0).attribute(x[:2], "total"),
                               Saliency(small_ensemble).attribute(x[:2], "total"), rtol=1e-5, atol=1e-9)


def test_smoothgrad_max_prob_keeps_the_clean_prediction(small_ensemble, digits):
    x, _ = digits
    pred = small_ensemble.predict(x[:2])
    a = SmoothGrad(small_ensemble, n_samples=4, seed=0).attribute(x[:2], target="max_prob")
    b = SmoothGrad(small_ensemble, n_samples=4, seed=0).attribute(x[:2], target=pred)
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def uncertain_digits(small_ensemble, mnist_test):
    """The 6 most epistemically uncertain of the first 500 MNIST test images."""
    x = mnist_test[0][:500]
    return np.ascontiguousarray(x[np.argsort(-uqattr.uncertainty(small_ensemble, x).epistemic)[:6]])


@pytest.mark.parametrize("target", ["total", "aleatoric", "epistemic", "max_prob"])
def test_integrated_gradients_completeness(small_ensemble, uncertain_digits, target):
    """Σ attributions within 1% of f(x) - f(baseline) at the default steps.

    On uncertain digits: on confident ones the epistemic part moves by < 0.01 nats
    between the black baseline and the digit, so a relative bound there measures the
    quadrature's absolute error (~1e-3 nats at ReLU kinks) against almost nothing."""
    x = uncertain_digits
    assert np.all(uqattr.uncertainty(small_ensemble, x).epistemic > 0.1)
    ig = IntegratedGradients(small_ensemble)
    attributions, delta = ig.attribute(x, target=target, return_convergence_delta=True)
    base = ig.attribute(x, target=target)
    np.testing.assert_array_equal(attributions, base)
    total = attributions.reshape(len(x), -1).sum(1)
    diff = total - delta  # f(x) - f(b)
    assert np.all(np.abs(delta) <= 0.01 * np.abs(diff) + 1e-6), (delta, diff)


def test_integrated_gradients_array_baseline_and_trapezoid(small_ensemble, digits):
    x, _ = digits
    blurred = np.full_like(x, x.mean())
    ig = IntegratedGradients(small_ensemble, baseline=blurred, steps=32, method="riemann_trapezoid")
    a, delta = ig.attribute(x, target="total", return_convergence_delta=True)
    assert a.shape == (6, 28, 28)
    # at the baseline itself, attributions vanish
    zero = ig.attribute(blurred, target="total")
    assert np.max(np.abs(zero)) == 0.0


def test_member_attribution_is_the_single_model(small_ensemble, digits):
    x, _ = digits
    a = Saliency(small_ensemble, member=2).attribute(x, target="total")
    b = Saliency(small_ensemble.member(2)).attribute(x, target="total")
    np.testing.assert_array_equal(a, b)


def test_bad_targets_and_inputs(small_ensemble, digits):
    x, _ = digits
    s = Saliency(small_ensemble)
    with pytest.raises(ValueError, match="unknown target"):
        s.attribute(x, target="entropy")
    with pytest.raises(ValueError, match="outside"):
        s.attribute(x, target=10)
    with pytest.raises(ValueError, match="shape"):
        s.attribute(x, target=np.zeros(3, dtype=int))
    with pytest.raises(TypeError, match="dtype"):
        s.attribute((x * 255).astype(np.uint8), target="total")
    with pytest.raises(ValueError, match="NaN"):
        s.attribute(np.full_like(x, np.nan), target="total")
    with pytest.raises(IndexError):
        Saliency(small_ensemble, member=7).attribute(x, target="total")
    with pytest.raises(ValueError):
        SmoothGrad(small_ensemble, n_samples=0)
    with pytest.raises(ValueError):
        IntegratedGradients(small_ensemble, method="left")


def test_figures(small_ensemble, digits):
    import matplotlib
    matplotlib.use("Agg")
    from uqattr import plots
    x, y = digits
    u = uqattr.uncertainty(small_ensemble, x[:3])
    maps = Saliency(small_ensemble).attribute(x[:3], target=["total", "epistemic", "aleatoric"])
    titles = [plots.describe(u.pred[i], u.max_prob[i], y[i]) for i in range(3)]
    assert titles[0].startswith(f"Label: {y[0]}\nPrediction: {u.pred[0]} (Prob: ")
    fig = plots.plot_uncertainty_maps(x[:3], maps, titles)
    assert len([a for a in fig.axes if a.get_title()]) == 12  # 3 rows x (image + 3 maps), plus colorbars
    assert fig.axes[1].get_title() == "Total Uncertainty"
    fig2 = plots.plot_saliency(x[:3], Saliency(small_ensemble).attribute(x[:3], "max_prob"), titles, columns=2)
    assert sum(a.get_title() == "Ensemble Saliency Map" for a in fig2.axes) == 3
