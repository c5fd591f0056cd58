"""The uncertainty decomposition on real data.

The full-size claims (trained default 5-member ensemble) are `slow`: they run
with ``-m slow`` on the model named by ``UQATTR_MODEL`` (a saved .npz). The
quick versions run on the small shared ensemble of conftest.py."""
import os
import sys

import numpy as np
import pytest

import uqattr

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from uncertainty_check import check  # noqa: E402


def test_small_ensemble_uncertainty_orders_images(small_ensemble, mnist_test):
    x, y = mnist_test
    u = uqattr.uncertainty(small_ensemble, x[:2000])
    yy = y[:2000]
    least, most = u.least_uncertain(10), u.most_uncertain(100)
    assert np.all(u.pred[least] == yy[least])
    assert (u.pred[most] == yy[most]).mean() < (u.pred == yy).mean()
    noise = np.random.default_rng(0).random((500, 1, 28, 28), dtype=np.float32)
    assert uqattr.uncertainty(small_ensemble, noise).epistemic.mean() > 2 * u.epistemic.mean()


@pytest.mark.slow
def test_trained_default_ensemble_claims():
    path = os.environ.get("UQATTR_MODEL")
    if not path or not os.path.exists(path):
        pytest.skip("set UQATTR_MODEL to a saved default ensemble (uqattr train --out model.npz)")
    r = check(uqattr.Ensemble.load(path))
    assert r["ratio_fashion"] >= 5 and r["ratio_noise"] >= 5, r
    assert r["least10_all_right"] and r["least10_min_prob"] >= 0.99, r
    assert r["most100_accuracy"] < r["test_accuracy"], r
