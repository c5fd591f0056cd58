"""Tests of uqattr.metrics (C core csrc/metrics.c) against scikit-learn and
independent NumPy references written here."""
import matplotlib

matplotlib.use("Agg")

import io
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from uqattr import metrics as M

TOL = 1e-6


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------

def sk_ood(s_in, s_out, convention="ood_positive"):
    s_in = np.asarray(s_in, dtype=np.float64)
    s_out = np.asarray(s_out, dtype=np.float64)
    s = np.concatenate([s_in, s_out])
    if not np.isfinite(s).all():  # sklearn rejects inf: swap in finite values of the same ranks
        big = 2 * np.abs(s[np.isfinite(s)]).max() + 1
        s = np.clip(s, -big, big)
    y = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    if convention == "ood_positive":
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    else:
        fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_out": average_precision_score(y, s),
        "aupr_in": average_precision_score(1 - y, -s),
        "fpr95": fpr[np.searchsorted(tpr, 0.95, side="left")],
    }


def ref_calibration(probs, labels, n_bins):
    p = np.asarray(probs, dtype=np.float32).astype(np.float64)
    labels = np.asarray(labels)
    n, c = p.shape
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    onehot = np.eye(c)[labels]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b = (e_b, e_{b+1}], the first also holding 0: count the inner edges below conf
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        bin_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins) / count
    ece = sum(count[b] / n * abs(bin_acc[b] - bin_conf[b]) for b in range(n_bins) if count[b])
    return {
        "accuracy": correct.mean(),
        "nll": -np.log(np.maximum(p[np.arange(n), labels], 1e-12)).mean(),
        "brier": ((p - onehot) ** 2).sum(axis=1).mean(),
        "ece": ece,
        "lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": bin_conf, "accuracy_bins": bin_acc,
    }


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def assert_ood_matches(s_in, s_out):
    for conv in M.FPR_CONVENTIONS:
        got = M.ood_metrics(s_in, s_out, fpr_convention=conv)
        want = sk_ood(s_in, s_out, conv)
        assert set(got) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
        for k in want:
            assert isinstance(got[k], float)
            assert got[k] == pytest.approx(want[k], abs=TOL), (conv, k, got[k], want[k])


# --------------------------------------------------------------------------------------------
# OOD metrics vs scikit-learn
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(12345)

OOD_CASES = {
    "continuous": (RNG.normal(0, 1, 3000), RNG.normal(1, 1.5, 2000)),
    "ties_rounded_10k": (np.round(RNG.normal(0, 1, 10000), 1), np.round(RNG.normal(0.7, 1, 10000), 1)),
    "ties_int_0_3": (RNG.integers(0, 4, 500), RNG.integers(0, 4, 300) + (RNG.random(300) < 0.3)),
    "float32": (RNG.normal(0, 1, 777).astype(np.float32), RNG.normal(0.3, 1, 555).astype(np.float32)),
    "one_vs_one": ([0.2], [0.7]),
    "one_vs_one_tied": ([0.5], [0.5]),
    "one_vs_three": ([0.4], [0.1, 0.4, 0.9]),
    "three_vs_one": ([0.1, 0.4, 0.9], [0.4]),
    "all_equal": (np.full(7, 3.0), np.full(4, 3.0)),
    "separated": (RNG.uniform(0, 1, 100), RNG.uniform(2, 3, 60)),
    "reversed": (RNG.uniform(2, 3, 100), RNG.uniform(0, 1, 60)),
    "infinities": ([-np.inf, 0.0, 1.0, np.inf], [np.inf, 2.0, -np.inf]),
    "lists": ([1, 2, 3, 4], [2.5, 3, 5]),
}


@pytest.mark.parametrize("case", sorted(OOD_CASES))
def test_ood_metrics_match_sklearn(case):
    assert_ood_matches(*OOD_CASES[case])


def test_ood_metrics_random_small_tied():
    rng = np.random.default_rng(7)
    for _ in range(60):
        n_in, n_out = rng.integers(1, 40, size=2)
        k = rng.integers(1, 6)
        assert_ood_matches(rng.integers(0, k, n_in).astype(float), rng.integers(0, k, n_out) + rng.random() * 0.5)


def test_ood_metrics_known_values():
    s_in, s_out = OOD_CASES["separated"]
    r = M.ood_metrics(s_in, s_out)
    assert r == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    assert M.ood_metrics(s_in, s_out, fpr_convention="id_positive")["fpr95"] == 0.0
    r = M.ood_metrics(*OOD_CASES["reversed"])
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0
    r = M.ood_metrics(np.full(7, 3.0), np.full(4, 3.0))
    assert r["auroc"] == 0.5 and r["fpr95"] == 1.0
    assert r["aupr_out"] == pytest.approx(4 / 11) and r["aupr_in"] == pytest.approx(7 / 11)
    # Mann-Whitney with ties counted 1/2: pairs (0.4 vs 0.1, 0.4, 0.9) -> (0 + 0.5 + 1) / 3
    assert M.ood_metrics([0.4], [0.1, 0.4, 0.9])["auroc"] == pytest.approx(0.5)


def test_fpr_conventions_differ():
    # 20 OOD / 20 ID: the two conventions read the ROC curve at different ends
    s_in = np.r_[np.arange(19), 100.0]
    s_out = np.r_[-1.0, np.arange(50, 69)]
    a = M.ood_metrics(s_in, s_out, fpr_convention="ood_positive")
    b = M.ood_metrics(s_in, s_out, fpr_convention="id_positive")
    assert a["fpr95"] == pytest.approx(sk_ood(s_in, s_out)["fpr95"])
    assert b["fpr95"] == pytest.approx(sk_ood(s_in, s_out, "id_positive")["fpr95"])
    assert a["fpr95"] == 0.05 and b["fpr95"] == 0.05
    # two ID outliers above every OOD score: catching 19/20 OOD flags them (FPR 0.1), but keeping
    # 19/20 ID needs a threshold above the outlier at 100, which accepts all OOD (FPR 1.0)
    s_in2 = np.r_[np.arange(18), 100.0, 101.0]
    assert M.ood_metrics(s_in2, s_out)["fpr95"] == 0.1
    assert M.ood_metrics(s_in2, s_out, fpr_convention="id_positive")["fpr95"] == 1.0
    assert_ood_matches(s_in2, s_out)


# --------------------------------------------------------------------------------------------
# calibration vs the NumPy reference
# --------------------------------------------------------------------------------------------

def calib_data(n=2000, c=10, temp=2.0, seed=0):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(0, temp, (n, c)))
    labels = np.where(rng.random(n) < 0.7, probs.argmax(1), rng.integers(0, c, n))
    return probs, labels


def assert_calib_matches(probs, labels, n_bins):
    got = M.calibration(probs, labels, n_bins=n_bins)
    want = ref_calibration(probs, labels, n_bins)
    assert isinstance(got, M.Calibration) and got.n_bins == n_bins
    for k in ("accuracy", "nll", "brier", "ece"):
        assert getattr(got, k) == pytest.approx(want[k], abs=TOL), k
    np.testing.assert_array_equal(got.bins["lower"], want["lower"])
    np.testing.assert_array_equal(got.bins["upper"], want["upper"])
    np.testing.assert_array_equal(got.bins["count"], want["count"])
    assert got.bins["count"].dtype == np.int64
    np.testing.assert_allclose(got.bins["confidence"], want["confidence"], atol=TOL)
    np.testing.assert_allclose(got.bins["accuracy"], want["accuracy_bins"], atol=TOL)
    return got


@pytest.mark.parametrize("n_bins", [1, 10, 15])
@pytest.mark.parametrize("temp", [0.5, 3.0])
def test_calibration_matches_reference(n_bins, temp):
    probs, labels = calib_data(temp=temp, seed=n_bins)
    got = assert_calib_matches(probs, labels, n_bins)
    assert got.bins["count"].sum() == len(labels)


def test_calibration_edges_and_extremes():
    # confidences exactly on bin edges (0.5 = 5 * 0.1, 0.25 and 0.75 for 4 bins), 1.0, a zero probability of the label
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.75, 0.25], [0.0, 1.0], [0.6, 0.4]], np.float32)
    labels = np.array([1, 1, 1, 0, 1, 1])
    for n_bins in (1, 2, 4, 10, 15):
        assert_calib_matches(probs, labels, n_bins)
    c = M.calibration(probs, labels, n_bins=10)
    assert c.bins["count"][4] == 1  # 0.5 lands in (0.4, 0.5]
    assert c.accuracy == pytest.approx(3 / 6)  # ties [0.5, 0.5] predict class 0 (first argmax)
    assert c.nll == pytest.approx(-(np.log(0.5) + np.log(1e-12) + np.log(0.75) + np.log(0.75) + 0 + np.log(0.4)) / 6)
    assert np.isnan(c.bins["confidence"][0]) and c.bins["count"][0] == 0


def test_calibration_perfect():
    probs = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]]
    c = M.calibration(probs, [0, 1, 2, 3, 1])
    assert (c.accuracy, c.nll, c.brier, c.ece) == (1.0, 0.0, 0.0, 0.0)


def test_calibration_float64_and_list_inputs():
    probs, labels = calib_data(n=50, c=3)
    a = M.calibration(probs.astype(np.float64), labels.tolist())
    b = M.calibration(probs, labels.astype(np.int8))
    assert (a.accuracy, a.nll, a.brier, a.ece) == (b.accuracy, b.nll, b.brier, b.ece)


# --------------------------------------------------------------------------------------------
# histograms vs numpy.histogram
# --------------------------------------------------------------------------------------------

def assert_hist_matches(x, bins=10, range=None):
    counts, edges = M.histogram(x, bins=bins, range=range)
    want_c, want_e = np.histogram(np.asarray(x, dtype=np.float64), bins=bins, range=range)
    np.testing.assert_array_equal(edges, want_e)
    np.testing.assert_array_equal(counts, want_c)
    assert counts.dtype == np.int64 and edges.dtype == np.float64


def test_histogram_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=5000)
    for bins in (1, 7, 10, 50, 333):
        assert_hist_matches(x, bins)
        assert_hist_matches(x, bins, range=(-1.0, 0.7))  # values outside the range are ignored
    assert_hist_matches(np.round(x, 1), 20, range=(-2, 2))  # many values on the edges
    assert_hist_matches(x.astype(np.float32), 13)
    assert_hist_matches(rng.uniform(0.1, 0.3, 1000), 30, range=(0.0, 1.0))
    assert_hist_matches(rng.uniform(-1e-9, 1e-9, 100), 9)
    assert_hist_matches(rng.normal(1e6, 1e-3, 100), 9)


def test_histogram_edges_and_outside_values():
    x = np.array([-1, 0, 0, 1, 2, 2.5, 3, 4, 5, 5, 6, np.inf, -np.inf])
    assert_hist_matches(x, 5, range=(0, 5))
    assert_hist_matches(x, [0, 1, 2, 5])
    assert_hist_matches(x, [0.0, 1.0, 1.0, 2.0, 5.0])  # repeated edge
    assert_hist_matches(x, [0, 5, 5])  # last bin of zero width holds the values equal to it
    assert_hist_matches(x, [-np.inf, 0, np.inf])
    assert_hist_matches(x[np.isfinite(x)], 4)
    assert_hist_matches([2.0, 2.0, 2.0], 4)  # equal values: range widened by 0.5
    assert_hist_matches([7.0], 3, range=(7.0, 7.0))
    assert_hist_matches(x, np.int64(4), range=[0, 4])
    counts, _ = M.histogram(x, bins=5, range=(0, 5))
    assert counts.tolist() == [2, 1, 2, 1, 3]


def test_shared_histograms():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 4000), rng.normal(3, 0.5, 1500)
    for bins in (1, 50, 64):
        ca, cb, edges = M.shared_histograms(a, b, bins=bins)
        want_e = np.histogram_bin_edges(np.concatenate([a, b]), bins=bins)
        np.testing.assert_array_equal(edges, want_e)
        np.testing.assert_array_equal(ca, np.histogram(a, bins=want_e)[0])
        np.testing.assert_array_equal(cb, np.histogram(b, bins=want_e)[0])
        assert ca.sum() == len(a) and cb.sum() == len(b)
    ca, cb, edges = M.shared_histograms(a, b, bins=[-1, 0, 1, 2])
    np.testing.assert_array_equal(cb, np.histogram(b, bins=[-1, 0, 1, 2])[0])
    ca, cb, edges = M.shared_histograms([1.0], [1.0], bins=4)
    np.testing.assert_array_equal(edges, np.histogram_bin_edges([1.0, 1.0], bins=4))


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------

GOOD = np.array([0.1, 0.5, 0.9])


@pytest.mark.parametrize("args, exc, match", [
    (([0.1, np.nan], GOOD), ValueError, r"scores_in contains NaN \(first at index 1\)"),
    ((GOOD, [np.nan]), ValueError, r"scores_out contains NaN"),
    (([], GOOD), ValueError, r"scores_in must have at least 1 value, got 0 \(empty\)"),
    ((GOOD, np.zeros(0)), ValueError, r"scores_out must have at least 1 value"),
    ((np.zeros((3, 2)), GOOD), ValueError, r"scores_in must be 1-dimensional, shape \(n,\), got shape \(3, 2\)"),
    ((GOOD, 0.5), ValueError, r"scores_out must be 1-dimensional.*got shape \(\)"),
    ((np.array(["a", "b"]), GOOD), TypeError, r"scores_in must be a real numeric array.*got dtype <U1"),
    ((GOOD, GOOD + 1j), TypeError, r"scores_out must be a real numeric array.*complex128"),
    ((GOOD, [None, 1.0]), TypeError, r"scores_out .* got dtype object"),
])
def test_ood_metrics_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        M.ood_metrics(*args)


def test_ood_metrics_bad_convention():
    with pytest.raises(ValueError, match=r"fpr_convention must be 'ood_positive' or 'id_positive', got 'tpr'"):
        M.ood_metrics(GOOD, GOOD, fpr_convention="tpr")


P3 = softmax(np.random.default_rng(0).normal(size=(5, 3)))


@pytest.mark.parametrize("probs, labels, kw, exc, match", [
    (P3, [0, 1, 2, 0], {}, ValueError, r"labels must have shape \(5,\), got \(4,\)"),
    (P3, [0, 1, 10, 0, 1], {}, ValueError, r"labels\[2\] = 10 is outside \[0, 3\)"),
    (P3, [0, 1, 2, -1, 1], {}, ValueError, r"labels\[3\] = -1 is outside \[0, 3\)"),
    (P3, np.zeros(5), {}, TypeError, r"labels must be an integer array, got dtype float64"),
    (P3[0], [0], {}, ValueError, r"probs must be 2-dimensional, got 1 dimension\(s\)"),
    (np.zeros((0, 3), np.float32), [], {}, ValueError, r"probs must have shape \(N, C\) with N >= 1.*\(0, 3\)"),
    (np.where(np.arange(15).reshape(5, 3) == 4, np.nan, P3), [0] * 5, {}, ValueError, r"probs contains NaN or Inf"),
    (P3 * 2, [0] * 5, {}, ValueError, r"probs\[\d, \d\] = [\d.]+ is not a probability in \[0, 1\]"),
    (-P3, [0] * 5, {}, ValueError, r"is not a probability in \[0, 1\]"),
    (P3.astype(int), [0] * 5, {}, TypeError, r"probs must be a floating-point array"),
    (P3, [0] * 5, {"n_bins": 0}, ValueError, r"n_bins must be in \[1, \d+\], got 0"),
    (P3, [0] * 5, {"n_bins": 2.5}, TypeError, r"n_bins must be an int"),
])
def test_calibration_bad_inputs(probs, labels, kw, exc, match):
    with pytest.raises(exc, match=match):
        M.calibration(probs, labels, **kw)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: M.histogram([1.0, np.nan]), ValueError, r"scores contains NaN \(first at index 1\)"),
    (lambda: M.histogram([]), ValueError, r"scores must have at least 1 value"),
    (lambda: M.histogram(np.ones((2, 2))), ValueError, r"scores must be 1-dimensional"),
    (lambda: M.histogram(["x"]), TypeError, r"scores must be a real numeric array"),
    (lambda: M.histogram([1.0, np.inf]), ValueError, r"scores\[1\] = inf: the automatic bin range needs finite"),
    (lambda: M.histogram(GOOD, bins=[0, 2, 1]), ValueError, r"bin edges must increase monotonically"),
    (lambda: M.histogram(GOOD, bins=[0.0, np.nan]), ValueError, r"bins contains NaN"),
    (lambda: M.histogram(GOOD, bins=[1.0]), ValueError, r"bins must have at least 2 values, got 1"),
    (lambda: M.histogram(GOOD, bins=2.0), TypeError, r"bins must be an int \(number of bins\) or a 1-D array"),
    (lambda: M.histogram(GOOD, bins=0), ValueError, r"n_bins must be in \[1, \d+\], got 0"),
    (lambda: M.histogram(GOOD, bins=3, range=(1, 0)), ValueError, r"range must have lo <= hi, got \[1, 0\]"),
    (lambda: M.histogram(GOOD, bins=3, range=(0, np.inf)), ValueError, r"range \[0, inf\] is not finite"),
    (lambda: M.histogram(GOOD, bins=3, range=5), TypeError, r"range must be a pair \(lo, hi\)"),
    (lambda: M.shared_histograms(GOOD, [np.inf]), ValueError, r"scores_out\[0\] = inf"),
    (lambda: M.shared_histograms(np.zeros((1, 1)), GOOD), ValueError, r"scores_in must be 1-dimensional"),
])
def test_histogram_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------------------------
# no side effects, no leaks
# --------------------------------------------------------------------------------------------

def test_inputs_not_modified():
    rng = np.random.default_rng(5)
    s_in, s_out = rng.normal(size=300), np.round(rng.normal(1, 1, 200), 1)  # float64 C-contiguous: used in place
    strided = rng.normal(size=600)[::2]
    probs, labels = calib_data(n=100, c=4)
    edges = np.linspace(-3, 3, 11)
    saved = [a.copy() for a in (s_in, s_out, strided, probs, labels, edges)]
    M.ood_metrics(s_in, s_out)
    M.ood_metrics(strided, s_out, fpr_convention="id_positive")
    M.calibration(probs, labels)
    M.histogram(s_in, bins=edges)
    M.histogram(strided, bins=7)
    M.shared_histograms(s_in, s_out, bins=20)
    for a, b in zip((s_in, s_out, strided, probs, labels, edges), saved):
        np.testing.assert_array_equal(a, b)


def test_no_reference_leaks():
    s = np.linspace(0, 1, 50)
    bad = np.array([np.nan])
    probs, labels = calib_data(n=20, c=3)
    refs = [sys.getrefcount(a) for a in (s, bad, probs, labels)]
    for _ in range(200):
        M.ood_metrics(s, s)
        M.calibration(probs, labels)
        M.histogram(s, bins=s[:5])
        M.shared_histograms(s, s, bins=5)
        for call in (lambda: M.ood_metrics(s, bad), lambda: M.calibration(probs, labels[:3]),
                     lambda: M.histogram(bad), lambda: M.histogram(s, bins=s[::-1])):
            with pytest.raises(ValueError):
                call()
    assert [sys.getrefcount(a) for a in (s, bad, probs, labels)] == refs


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------

def test_reliability_diagram():
    from matplotlib.figure import Figure

    probs, labels = calib_data(n=500, c=10)
    cal = M.calibration(probs, labels, n_bins=12)
    fig = M.reliability_diagram(cal)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 12  # accuracy bars + gap bars
    assert "ECE" in ax.get_title() and f"{100 * cal.ece:.2f}" in ax.get_title()
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    # drawing into given axes returns their figure
    fig2 = Figure()
    ax2 = fig2.add_subplot(1, 2, 2)
    assert M.reliability_diagram(cal, ax=ax2) is fig2 and len(ax2.patches) == 24


def test_plot_ood_histograms():
    from matplotlib.figure import Figure

    rng = np.random.default_rng(6)
    s_in, s_out = rng.normal(0, 1, 800), rng.normal(2, 1, 500)
    fig = M.plot_ood_histograms(s_in, s_out, "Predictive entropy", "entropy (nats)", labels=("MNIST", "KMNIST"))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 2
    assert ax.get_title() == "Predictive entropy" and ax.get_xlabel() == "entropy (nats)"
    legend = ax.get_legend()
    auroc = M.ood_metrics(s_in, s_out)["auroc"]
    assert legend.get_title().get_text() == f"AUROC = {auroc:.3f}"
    assert [t.get_text() for t in legend.get_texts()] == ["MNIST (n = 800)", "KMNIST (n = 500)"]
    assert min(legend.get_texts()[0].get_fontsize(), ax.title.get_fontsize(), ax.xaxis.label.get_fontsize()) >= 12
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    fig = M.plot_ood_histograms(s_in, s_out, "t", "x", auroc=0.5)
    assert fig.axes[0].get_legend().get_title().get_text() == "AUROC = 0.500"
