"""Evaluation metrics: OOD detection, calibration, histograms and their plots.

The numbers come from the C core (``csrc/metrics.c``); this module is the
Python face. OOD scores follow the OpenOOD / pytorch-ood convention: a higher
score means "more likely OOD", and OOD is the positive class. All metrics
agree with scikit-learn / NumPy as each function's docstring states.
"""
from dataclasses import dataclass, field
import numbers

import numpy as np

from . import _uqattr

FPR_CONVENTIONS = ("ood_positive", "id_positive")
NLL_FLOOR = 1e-12


def ood_metrics(scores_in, scores_out, fpr_convention="ood_positive"):
    """Threshold-free OOD-detection metrics of a score.

    Parameters
    ----------
    scores_in : array_like, shape (n_in,)
        Scores of in-distribution samples (higher = more likely OOD).
    scores_out : array_like, shape (n_out,)
        Scores of OOD samples. Both arrays: real numbers (converted to
        float64), at least one value, no NaN; ``inf`` is allowed (ranks only).
    fpr_convention : {"ood_positive", "id_positive"}
        How ``fpr95`` is defined:

        * ``"ood_positive"`` (default; OpenOOD, pytorch-ood): the fraction of
          ID samples flagged as OOD at the threshold where 95% of the OOD
          samples are detected, i.e. with ``y = 1`` for OOD,
          ``fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)`` and
          ``fpr[np.searchsorted(tpr, 0.95, side="left")]``;
        * ``"id_positive"`` (Hendrycks & Gimpel 2017, ODIN, many papers): the
          fraction of OOD samples accepted as ID at the threshold keeping 95%
          of the ID samples: the same with ``y = 1`` for ID and scores ``-s``.

    Returns
    -------
    dict
        ``auroc``: area under the ROC curve, OOD positive; equals
        ``sklearn.metrics.roc_auc_score(y_ood, s)`` (trapezoidal ROC over
        distinct thresholds = Mann-Whitney with ties counted 1/2);
        ``aupr_out``: ``average_precision_score(y_ood, s)`` (the step-wise sum
        over distinct thresholds, not trapezoidal); ``aupr_in``:
        ``average_precision_score(y_id, -s)``; ``fpr95`` as above. All floats.

    Raises
    ------
    TypeError
        For a non-numeric dtype (strings, objects, complex).
    ValueError
        For arrays that are not 1-D, empty or contain NaN, or an unknown
        ``fpr_convention``.
    """
    return _uqattr.ood_metrics(scores_in, scores_out, fpr_convention=fpr_convention)


@dataclass
class Calibration:
    """Calibration of probabilistic predictions on labelled data.

    Attributes
    ----------
    accuracy : float
        Fraction of samples whose first argmax is the label.
    nll : float
        Mean negative log-likelihood ``-log(max(p[label], 1e-12))``.
    brier : float
        Multi-class Brier score: mean over samples of ``sum_c (p_c - onehot_c)**2``
        (in [0, 2]; divide by C for the per-class mean some papers report).
    ece : float
        Expected calibration error ``sum_b |B_b| / N * |acc_b - conf_b|`` over
        equal-width bins of the confidence ``max_c p_c``.
    bins : dict of ndarray
        The reliability diagram, one entry per bin: ``lower``, ``upper`` (edges,
        ``numpy.linspace(0, 1, n_bins + 1)``; bin = (lower, upper], the first
        including 0), ``count`` (int64), ``confidence`` (mean confidence) and
        ``accuracy``; the last two are NaN for an empty bin.
    """

    accuracy: float
    nll: float
    brier: float
    ece: float
    bins: dict = field(repr=False)

    @property
    def n_bins(self):
        return len(self.bins["count"])


def calibration(probs, labels, n_bins=15):
    """Accuracy, NLL, Brier score and ECE of predicted probabilities.

    Parameters
    ----------
    probs : array_like, shape (N, C)
        Predicted class probabilities (any float dtype, used as float32),
        values in [0, 1]; rows are not checked to sum to 1.
    labels : array_like of int, shape (N,)
        True classes in ``[0, C)``.
    n_bins : int
        Number of equal-width confidence bins of the ECE (default 15, as in
        Guo et al. 2017: bins (lo, hi], the first also holding 0).

    Returns
    -------
    Calibration

    Raises
    ------
    TypeError
        ``probs`` not floating point, ``labels`` not integer.
    ValueError
        Wrong shapes (``labels`` must have shape (N,) to match ``probs``), empty
        input, NaN / Inf or values outside [0, 1] in ``probs``, labels outside
        ``[0, C)``, ``n_bins < 1``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral):
        raise TypeError(f"n_bins must be an int, got {type(n_bins).__name__}")
    r = _uqattr.calibration(probs, labels, n_bins=int(n_bins))
    return Calibration(accuracy=r["accuracy"], nll=r["nll"], brier=r["brier"], ece=r["ece"], bins=r["bins"])


def histogram(scores, bins=10, range=None):
    """Histogram of a score array, as ``numpy.histogram`` on float64 scores.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Real numbers (converted to float64), n >= 1, no NaN.
    bins : int or array_like
        Number of equal-width bins (default 10) over ``range``, or the bin
        edges (nondecreasing, at least 2). Bins are [e_b, e_{b+1}), the last
        one closed; values outside [e_0, e_last] are not counted.
    range : (float, float), optional
        Range of the equal-width bins; default ``(scores.min(), scores.max())``
        (widened by 0.5 each side when equal). Ignored when edges are given.

    Returns
    -------
    counts : ndarray of int64, shape (n_bins,)
    edges : ndarray of float64, shape (n_bins + 1,)
    """
    return _uqattr.histogram(scores, bins=bins, range=range)


def shared_histograms(scores_in, scores_out, bins=50):
    """Histograms of ID and OOD scores over the same bins.

    Parameters
    ----------
    scores_in, scores_out : array_like, shape (n,)
        Score arrays (real, n >= 1, no NaN; finite when ``bins`` is an int).
    bins : int or array_like
        Number of equal-width bins over the joint min / max of both arrays
        (``numpy.histogram_bin_edges(np.concatenate([scores_in, scores_out]), bins)``),
        or explicit edges.

    Returns
    -------
    counts_in, counts_out : ndarray of int64, shape (n_bins,)
    edges : ndarray of float64, shape (n_bins + 1,)
    """
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        edges = _uqattr.histogram_edges(scores_in, scores_out, n_bins=int(bins))
    else:
        edges = bins
    counts_in, edges = _uqattr.histogram(scores_in, bins=edges)
    counts_out, _ = _uqattr.histogram(scores_out, bins=edges)
    return counts_in, counts_out, edges


# ------------------------------------------------------------------------------------- plots

FONT = 13


def _figure_and_axes(ax, figsize):
    """The axes to draw on: ``ax``, or a new Figure's (not registered with
    pyplot: nothing is shown and no backend is selected)."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def reliability_diagram(calibration, ax=None):
    """Reliability diagram of a :class:`Calibration`.

    Bars of the accuracy of each confidence bin against the diagonal of
    perfect calibration, with the gap to the bin's mean confidence shaded;
    titled with the ECE. Empty bins draw as zero-height bars.

    Parameters
    ----------
    calibration : Calibration
        From :func:`calibration`.
    ax : matplotlib Axes, optional
        Where to draw; default a new Figure (5 x 5 in) that is neither shown
        nor saved.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _figure_and_axes(ax, (5.5, 5.5))
    b = calibration.bins
    lower, upper = np.asarray(b["lower"]), np.asarray(b["upper"])
    width = upper - lower
    acc = np.nan_to_num(np.asarray(b["accuracy"], dtype=np.float64))
    conf = np.asarray(b["confidence"], dtype=np.float64)
    conf = np.where(np.isnan(conf), acc, conf)  # empty bins: no gap
    ax.bar(lower, acc, width=width, align="edge", color="#4c72b0", edgecolor="black", linewidth=0.8, label="Accuracy")
    ax.bar(lower, conf - acc, bottom=acc, width=width, align="edge", facecolor=(0.77, 0.31, 0.32, 0.3),
           edgecolor="#c44e52", hatch="//", linewidth=0.8, label="Gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1.5, label="Perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("Confidence", fontsize=FONT)
    ax.set_ylabel("Accuracy", fontsize=FONT)
    ax.set_title(f"Reliability diagram (ECE = {100 * calibration.ece:.2f}%)", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT - 1)
    ax.legend(loc="best", fontsize=FONT - 1)
    return fig


def plot_ood_histograms(scores_in, scores_out, title, xlabel, ax=None, auroc=None,
                        labels=("In-distribution (MNIST)", "OOD"), bins=50):
    """Overlapping density histograms of ID and OOD scores over shared bins.

    Parameters
    ----------
    scores_in, scores_out : array_like, shape (n,)
        Scores (finite); higher = more likely OOD.
    title, xlabel : str
        Axes title and x label (e.g. the score's name).
    ax : matplotlib Axes, optional
        Where to draw; default a new slide-sized Figure (8 x 5 in) that is
        neither shown nor saved.
    auroc : float, optional
        Shown in the legend title; computed with :func:`ood_metrics` if omitted.
    labels : (str, str)
        Legend labels of the ID and OOD histograms.
    bins : int or array_like
        As in :func:`shared_histograms` (default 50).

    Returns
    -------
    matplotlib.figure.Figure
        Two filled step patches (ID, OOD) on one axes.
    """
    counts_in, counts_out, edges = shared_histograms(scores_in, scores_out, bins=bins)
    if auroc is None:
        auroc = ood_metrics(scores_in, scores_out)["auroc"]
    fig, ax = _figure_and_axes(ax, (8, 5))
    width = np.diff(edges)
    width = np.where(width > 0, width, 1.0)
    for counts, n, label, color in ((counts_in, np.size(scores_in), labels[0], "#4c72b0"),
                                    (counts_out, np.size(scores_out), labels[1], "#dd8452")):
        density = counts / (counts.sum() * width) if counts.sum() else counts.astype(np.float64)
        ax.stairs(density, edges, fill=True, alpha=0.5, color=color, label=f"{label} (n = {n})")
    ax.set_title(title, fontsize=FONT + 3)
    ax.set_xlabel(xlabel, fontsize=FONT + 1)
    ax.set_ylabel("Density", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.legend(title=f"AUROC = {auroc:.3f}", fontsize=FONT, title_fontsize=FONT)
    return fig


__all__ = ["Calibration", "FPR_CONVENTIONS", "calibration", "histogram", "ood_metrics", "plot_ood_histograms",
           "reliability_diagram", "shared_histograms"]
