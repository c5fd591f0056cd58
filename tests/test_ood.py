"""uqattr.ood: score conventions, evaluation results, tables and plots."""
import json
import math

import numpy as np
import pytest

from uqattr import DEFAULT_ARCH, Ensemble, ood
from uqattr import metrics as um

N_EVAL = 500


class FixedModel:
    """Stands in for an Ensemble: returns the same member probabilities for any
    input of matching length, and counts its prediction passes."""

    in_shape = (1, 28, 28)

    def __init__(self, member_probs):
        self.probs = np.asarray(member_probs, dtype=np.float32)
        self.calls = 0

    @property
    def members(self):
        return self.probs.shape[0]

    def predict_proba(self, x, batch_size=256):
        self.calls += 1
        assert x.shape[1:] == self.in_shape and x.shape[0] == self.probs.shape[1]
        return self.probs


def entropy(p):
    p = np.asarray(p, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


# Two members, three images, three classes; the answers follow by hand.
P0 = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]]
P1 = [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]
PROBS = np.array([P0, P1], dtype=np.float32)


# ------------------------------------------------------------------------ score conventions

def test_scores_from_probs_known_values():
    s = ood.scores_from_probs(PROBS)
    assert tuple(s) == ood.SCORES
    for v in s.values():
        assert v.shape == (3,)
    np.testing.assert_allclose(s["msp_single"], [0.0, 0.5, 0.4], atol=1e-7)
    # mean: [.5 .5 0], [.5 .5 0], [.35 .2 .45]
    np.testing.assert_allclose(s["msp_ensemble"], [0.5, 0.5, 0.55], atol=1e-7)
    ln2 = math.log(2)
    mean = PROBS.astype(np.float64).mean(axis=0)
    total = entropy(mean)
    aleatoric = entropy(PROBS).mean(axis=0)
    np.testing.assert_allclose(total[:2], [ln2, ln2])
    np.testing.assert_allclose(aleatoric[:2], [0.0, ln2], atol=1e-12)
    np.testing.assert_allclose(s["total"], total, rtol=1e-6)
    np.testing.assert_allclose(s["aleatoric"], aleatoric, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s["epistemic"], total - aleatoric, rtol=1e-5, atol=1e-7)
    # the two kinds of uncertainty: members that disagree confidently (image 0) are epistemic,
    # members that agree on 50/50 (image 1) aleatoric
    assert s["epistemic"][0] > s["epistemic"][1]
    assert s["aleatoric"][1] > s["aleatoric"][0]


def test_scores_from_probs_member_choice():
    np.testing.assert_allclose(ood.scores_from_probs(PROBS, member=1)["msp_single"], [0.0, 0.5, 0.2], atol=1e-7)
    np.testing.assert_array_equal(ood.scores_from_probs(PROBS, member=-1)["msp_single"],
                                  ood.scores_from_probs(PROBS, member=1)["msp_single"])
    with pytest.raises(IndexError, match="member 2 out of range"):
        ood.scores_from_probs(PROBS, member=2)
    with pytest.raises(ValueError, match=r"shape \(members, images, classes\)"):
        ood.scores_from_probs(PROBS[0])


def test_msp_score_keeps_resolution_of_confident_predictions():
    # float32 rounds these MSPs to exactly 1: 1 - MSP would tie them at 0.
    p = np.array([[[1 - 1e-9, 1e-9, 0.0], [1 - 3e-9, 2e-9, 1e-9]]], dtype=np.float32)
    assert np.all(p.max(axis=2) == 1.0)
    s = ood.scores_from_probs(p)
    np.testing.assert_allclose(s["msp_single"], [1e-9, 3e-9], rtol=1e-6)
    assert s["msp_single"][1] > s["msp_single"][0] > 0


def test_higher_score_means_more_ood():
    """Confident, agreeing members (ID-like) score lower than uniform, disagreeing ones on every score."""
    confident = np.array([[[0.98, 0.01, 0.01]], [[0.97, 0.02, 0.01]]], dtype=np.float32)
    confused = np.array([[[0.1, 0.8, 0.1]], [[0.3, 0.3, 0.4]]], dtype=np.float32)
    low, high = ood.scores_from_probs(confident), ood.scores_from_probs(confused)
    for name in ood.SCORES:
        assert high[name][0] > low[name][0], name


def _constant_ensemble(hot_bias):
    """Two members with all weights zero: member 0's output bias is ``hot_bias``
    (so its probabilities are softmax(hot_bias) on any image), member 1 is uniform."""
    dicts = Ensemble(DEFAULT_ARCH, members=2, seed=0).state_dicts()
    for d in dicts:
        for v in d.values():
            v[...] = 0
    dicts[0]["fc2.bias"][...] = hot_bias
    return Ensemble.from_state_dicts(dicts)


def test_scores_of_hand_set_ensemble():
    bias = np.zeros(10, dtype=np.float32)
    bias[3] = 5.0
    model = _constant_ensemble(bias)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    p0 = np.exp(bias - bias.max()) / np.exp(bias - bias.max()).sum()
    p1 = np.full(10, 0.1)
    mean = (p0 + p1) / 2
    s = ood.scores(model, x)
    np.testing.assert_allclose(s["msp_single"], np.full(4, 1 - p0.max()), rtol=1e-6)
    np.testing.assert_allclose(ood.scores(model, x, member=1)["msp_single"], np.full(4, 0.9), rtol=1e-6)
    np.testing.assert_allclose(s["msp_ensemble"], np.full(4, 1 - mean.max()), rtol=1e-6)
    np.testing.assert_allclose(s["total"], np.full(4, entropy(mean)), rtol=1e-5)
    np.testing.assert_allclose(s["aleatoric"], np.full(4, (entropy(p0) + math.log(10)) / 2), rtol=1e-5)
    np.testing.assert_allclose(s["epistemic"], np.full(4, entropy(mean) - (entropy(p0) + math.log(10)) / 2),
                               rtol=1e-4)


def test_scores_use_one_prediction_pass():
    model = FixedModel(PROBS)
    x = np.zeros((3, 1, 28, 28), dtype=np.float32)
    s = ood.scores(model, x, member=1)
    assert model.calls == 1
    for name, v in ood.scores_from_probs(PROBS, member=1).items():
        np.testing.assert_array_equal(s[name], v)


# ------------------------------------------------------------------------------- metrics

def test_metrics_is_the_library_function():
    assert ood.metrics is um.ood_metrics
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(size=200), rng.normal(1.0, size=150)
    m = ood.metrics(s_in, s_out)
    assert set(m) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    assert m == um.ood_metrics(s_in, s_out)
    # Mann-Whitney: AUROC = P(OOD score > ID score)
    assert m["auroc"] == pytest.approx(np.mean(s_out[:, None] > s_in[None, :]), abs=1e-12)


# --------------------------------------------------------------- evaluate on a trained model

@pytest.fixture(scope="module")
def fashion_small():
    from uqattr import datasets
    x, _ = datasets.load("fashion-mnist", "test")
    return np.ascontiguousarray(x[:N_EVAL])


@pytest.fixture(scope="module")
def result(small_ensemble, mnist_test, fashion_small):
    return ood.evaluate(small_ensemble, mnist_test[0][:N_EVAL], fashion_small, name="Fashion-MNIST")


def test_evaluate_separates_mnist_from_fashion(result, small_ensemble):
    assert result.score_names == ood.SCORES
    assert (result.n_in, result.n_out) == (N_EVAL, N_EVAL)
    assert result.members == small_ensemble.members and result.member == 0
    for name in ("msp_ensemble", "total", "epistemic"):
        assert result.metrics[name]["auroc"] > 0.6, (name, result.metrics[name])
    assert result.metrics[result.best()]["auroc"] > 0.75
    for name in ood.SCORES:
        assert result.metrics[name] == um.ood_metrics(result.scores_in[name], result.scores_out[name])


def test_evaluate_subset_of_scores_and_validation():
    model = FixedModel(PROBS)
    x = np.zeros((3, 1, 28, 28), dtype=np.float32)
    r = ood.evaluate(model, x, x, scores=("epistemic", "msp_single"))
    assert r.score_names == ("epistemic", "msp_single")
    assert set(r.scores_in) == set(ood.SCORES)  # raw arrays of all scores kept for the plots
    assert model.calls == 2
    with pytest.raises(ValueError, match="unknown OOD score"):
        ood.evaluate(model, x, x, scores=("msp",))
    with pytest.raises(ValueError, match="twice"):
        ood.evaluate(model, x, x, scores=("total", "total"))
    with pytest.raises(IndexError):
        ood.evaluate(model, x, x, member=5)


def test_evaluate_rejects_mismatched_image_shapes():
    model = FixedModel(PROBS)
    good = np.zeros((3, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"x_ood .*\(1, 28, 28\).*\(3, 1, 32, 32\)"):
        ood.evaluate(model, good, np.zeros((3, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"x_in .*\(3, 3, 28, 28\)"):
        ood.evaluate(model, np.zeros((3, 3, 28, 28), dtype=np.float32), good)
    with pytest.raises(ValueError, match="x_ood holds no images"):
        ood.evaluate(model, good, np.zeros((0, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="OOD set 'bad'"):
        ood.evaluate_many(model, good, {"ok": good, "bad": np.zeros((3, 30, 30), dtype=np.float32)})
    assert model.calls == 0  # checked before predicting anything
    # (N, 28, 28) and (N, 784) are images too
    a = ood.evaluate(model, good, good)
    b = ood.evaluate(model, good[:, 0], good.reshape(3, 784))
    assert a.metrics == b.metrics


def test_tables(result):
    md = result.to_markdown()
    text = repr(result)
    for name in ood.SCORES:
        assert f"| {name} " in md
        assert name in text
    for header in ("AUROC", "AUPR-In", "AUPR-Out", "FPR@95"):
        assert header in md and header in text
    assert "Fashion-MNIST" in md and "MNIST" in text
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(ood.SCORES) and len({len(line) for line in rows}) == 1
    best = result.best()
    assert f"**{result.metrics[best]['auroc']:.4f}**" in md
    table_lines = text.splitlines()[1:]
    assert len({len(line) for line in table_lines}) == 1  # aligned
    d = json.loads(json.dumps(result.to_dict()))
    assert d["name"] == "Fashion-MNIST" and set(d["metrics"]) == set(ood.SCORES)
    assert d["metrics"]["total"]["auroc"] == result.metrics["total"]["auroc"]


def test_best(result):
    aurocs = {s: result.metrics[s]["auroc"] for s in ood.SCORES}
    assert result.best() == max(aurocs, key=aurocs.get)
    assert result.best(("msp_single",)) == "msp_single"
    fpr = {s: result.metrics[s]["fpr95"] for s in ood.SCORES}
    assert result.best(by="fpr95") == min(fpr, key=fpr.get)


def test_plot_histograms(result):
    fig = result.plot_histograms()
    axes = fig.get_axes()
    assert len(axes) == 3
    titles = [ax.get_title() for ax in axes]
    assert titles == ["Single Model: OOD Detection via Max Softmax Probability (Fashion-MNIST)",
                      "Ensemble: OOD Detection via Max Softmax Probability (Fashion-MNIST)",
                      "Epistemic Uncertainty (Fashion-MNIST)"]
    assert [ax.get_xlabel() for ax in axes] == ["Max Softmax Probability", "Max Softmax Probability", "Uncertainty"]
    for ax, score in zip(axes, ("msp_single", "msp_ensemble", "epistemic")):
        assert ax.get_ylabel() == "Frequency"
        legend = ax.get_legend()
        assert legend.get_title().get_text() == f"AUROC = {result.metrics[score]['auroc']:.3f}"
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts[0].startswith("In-distribution (MNIST)") and texts[1].startswith("OOD (Fashion-MNIST)")
        assert len(ax.patches) == 2
    assert axes[0].get_xlim()[0] <= 0 and axes[0].get_xlim()[1] >= 1  # MSP on [0, 1]


def test_evaluate_many_and_summary_table():
    probs = np.concatenate([PROBS, PROBS[:, :2]], axis=1)  # 5 images
    model = FixedModel(probs)
    x = np.zeros((5, 1, 28, 28), dtype=np.float32)
    res = ood.evaluate_many(model, x, {"A": x, "B": x}, scores=("total", "epistemic"))
    assert list(res) == ["A", "B"] and model.calls == 3  # ID predicted once
    assert res["A"].metrics == ood.evaluate(FixedModel(probs), x, x, scores=("total", "epistemic")).metrics
    long = ood.summary_table(res)
    assert "A (n = 5)" in long and "B (n = 5)" in long and long.count("epistemic") == 2
    assert all(h in long for h in ("AUROC", "AUPR-In", "AUPR-Out", "FPR@95"))
    wide = ood.summary_table(res, metric="auroc")
    header = [line for line in wide.splitlines() if line.startswith("| OOD set")][0]
    assert "total" in header and "epistemic" in header and "AUROC" in wide
    assert len([line for line in wide.splitlines() if line.startswith("| A ") or line.startswith("| B ")]) == 2
    with pytest.raises(ValueError):
        ood.summary_table(res, metric="accuracy")


def test_most_confident_ood():
    probs = np.array([[[0.2, 0.8, 0.0], [0.0, 0.0, 1.0], [0.9, 0.1, 0.0], [0.4, 0.3, 0.3]],
                      [[0.5, 0.5, 0.0], [0.0, 0.6, 0.4], [0.9, 0.0, 0.1], [0.4, 0.3, 0.3]]], dtype=np.float32)
    model = FixedModel(probs)
    r = ood.most_confident_ood(model, np.zeros((4, 28, 28), dtype=np.float32), k=3)
    np.testing.assert_array_equal(r["indices"], [1, 2, 0])
    np.testing.assert_array_equal(r["single_pred"], [2, 0, 1])
    np.testing.assert_allclose(r["single_prob"], [1.0, 0.9, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(r["ensemble_pred"], [2, 0, 1])
    np.testing.assert_allclose(r["ensemble_prob"], [0.7, 0.9, 0.65], rtol=1e-6)
    r1 = ood.most_confident_ood(model, np.zeros((4, 28, 28), dtype=np.float32), k=1, member=1)
    np.testing.assert_array_equal(r1["indices"], [2])
    assert model.calls == 2


def test_calibration_report_and_plot():
    probs = np.array([[[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], [[0.7, 0.3], [0.4, 0.6], [0.4, 0.6]]],
                     dtype=np.float32)
    y = np.array([0, 1, 1])
    rep = ood.calibration_report(FixedModel(probs), np.zeros((3, 784), dtype=np.float32), y, member=1)
    assert set(rep) == {"single", "ensemble"}
    single, ens = um.calibration(probs[1], y), um.calibration(probs.mean(axis=0), y)
    for got, want in ((rep["single"], single), (rep["ensemble"], ens)):
        assert (got.accuracy, got.nll, got.ece, got.brier) == pytest.approx((want.accuracy, want.nll, want.ece,
                                                                             want.brier))
    assert rep["single"].accuracy == 1.0 and rep["ensemble"].accuracy == pytest.approx(2 / 3)
    table = ood.calibration_table(rep, member=1)
    assert "single member (1)" in table and "ensemble" in table and "ECE" in table and "Brier" in table
    fig = ood.plot_calibration(rep)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert axes[0].get_title().startswith("Single Model") and axes[1].get_title().startswith("Ensemble")
    with pytest.raises(ValueError, match="y must have shape"):
        ood.calibration_report(FixedModel(probs), np.zeros((3, 784), dtype=np.float32), y[:2])
