"""Out-of-distribution detection with a deep ensemble: scores, metrics, tables, plots.

An ensemble trained on MNIST should be less sure of a letter, a kanji, a
garment or an Omniglot character than of a digit. This module turns one
prediction pass of an :class:`~uqattr.Ensemble` into per-image OOD scores,
evaluates how well each score separates in-distribution (ID) from OOD images,
and draws the figures of the study: overlapping ID / OOD histograms and
reliability diagrams.

Sign convention
---------------
Every score is **higher = more likely OOD** (OpenOOD / pytorch-ood), and OOD is
the positive class of every metric (:func:`uqattr.metrics.ood_metrics`):

=================  =====================================================================
score              definition (``p_m``: member probabilities, ``p̄``: their mean)
=================  =====================================================================
``msp_single``     ``1 - max_c p_k[c]`` of one member ``k`` (the single-model baseline)
``msp_ensemble``   ``1 - max_c p̄[c]``, the ensemble's maximum softmax probability (MSP)
``total``          ``H[p̄]``, entropy of the mean prediction (nats)
``aleatoric``      ``E_m H[p_m]``, mean entropy of the members (nats)
``epistemic``      ``H[p̄] - E_m H[p_m]``, mutual information, member disagreement (nats)
=================  =====================================================================

The MSP scores are ``1 - MSP`` (not ``-MSP``), so that they lie in [0, 1 - 1/C].
They are computed in float64 as the summed probability of the non-predicted
classes, which is ``1 - MSP`` but keeps its resolution where a float32 MSP
rounds to exactly 1 (confident predictions would otherwise tie). Rankings, and
so all metrics, are those of ``-MSP``. The histogram figures plot the MSP
itself (high = confident), as the slides do; their AUROC is the score's.

The single-model scores come from member ``member`` (default 0) of the same
prediction pass as the ensemble's: no second forward pass.
"""
from dataclasses import dataclass, field
import math
import numbers

import numpy as np

from . import metrics as _metrics
from .uncertainty import decompose

#: The OOD scores, in table order. Higher = more likely OOD for every one.
SCORES = ("msp_single", "msp_ensemble", "total", "aleatoric", "epistemic")

#: What each score is, for legends and table footnotes.
SCORE_LABELS = {
    "msp_single": "1 - max softmax probability of one member (single-model baseline)",
    "msp_ensemble": "1 - max softmax probability of the ensemble mean",
    "total": "total uncertainty: entropy of the mean prediction (nats)",
    "aleatoric": "aleatoric uncertainty: mean entropy of the members (nats)",
    "epistemic": "epistemic uncertainty: mutual information, total - aleatoric (nats)",
}

#: The metrics of one score, in table order, with their column headers.
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
METRIC_HEADERS = {"auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out", "fpr95": "FPR@95"}
#: Whether a larger value of the metric is better.
HIGHER_IS_BETTER = {"auroc": True, "aupr_in": True, "aupr_out": True, "fpr95": False}

#: ``uqattr.ood.metrics(scores_in, scores_out)`` is :func:`uqattr.metrics.ood_metrics`.
metrics = _metrics.ood_metrics


# ------------------------------------------------------------------------------------ scores

def _check_member(member, n_members):
    if isinstance(member, bool) or not isinstance(member, numbers.Integral):
        raise TypeError(f"member must be an int, got {type(member).__name__}")
    member = int(member)
    if not -n_members <= member < n_members:
        raise IndexError(f"member {member} out of range for an ensemble of {n_members}")
    return member % n_members


def _one_minus_max(probs):
    """``1 - max_c probs[:, c]`` in float64, as the sum of the other classes'
    probabilities, added smallest first (precise when they are tiny)."""
    p = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(p))
    others = p.copy()
    others[rows, p.argmax(axis=1)] = 0.0
    return np.sort(others, axis=1).sum(axis=1)


def scores_from_probs(member_probs, member=0):
    """All :data:`SCORES` from member probabilities.

    Parameters
    ----------
    member_probs : array_like, shape (M, N, C)
        Class probabilities of each of ``M`` members on ``N`` images (rows sum
        to 1; floating point, finite, in [0, 1]).
    member : int
        The member whose MSP is ``msp_single`` (negative counts from the end).

    Returns
    -------
    dict of str to ndarray
        ``name -> (N,)`` for every name in :data:`SCORES`, higher = more
        likely OOD: ``msp_single`` and ``msp_ensemble`` as float64 ``1 - MSP``,
        ``total``, ``aleatoric``, ``epistemic`` (float32, nats) as
        :func:`uqattr.decompose` computes them.

    Raises
    ------
    ValueError
        ``member_probs`` not 3-D, or with no member, image or class.
    IndexError
        ``member`` out of range.
    """
    p = np.asarray(member_probs)
    if p.ndim != 3:
        raise ValueError(f"member_probs must have shape (members, images, classes), got shape {p.shape}")
    if 0 in p.shape:
        raise ValueError(f"member_probs must have at least one member, image and class, got shape {p.shape}")
    member = _check_member(member, p.shape[0])
    u = decompose(p)
    return {
        "msp_single": _one_minus_max(p[member]),
        "msp_ensemble": _one_minus_max(np.asarray(p, dtype=np.float64).mean(axis=0)),
        "total": u.total,
        "aleatoric": u.aleatoric,
        "epistemic": u.epistemic,
    }


def _images(model, x, what):
    """``x`` as a stack of images of the model's input shape, or a clear error."""
    x = np.asarray(x)
    in_shape = tuple(getattr(model, "in_shape", ()))
    if not in_shape:
        return x
    n_pixels = int(np.prod(in_shape))
    if x.ndim == len(in_shape) + 1 and x.shape[1:] == in_shape:
        pass
    elif in_shape[0] == 1 and x.ndim == len(in_shape) and x.shape[1:] == in_shape[1:]:
        x = x.reshape((-1,) + in_shape)
    elif x.ndim == 2 and x.shape[1] == n_pixels:
        x = x.reshape((-1,) + in_shape)
    else:
        image = x.shape[1:] if x.ndim >= 2 else x.shape
        raise ValueError(f"{what} must be a stack of images of shape {in_shape} (or "
                         f"{in_shape[1:] if in_shape[0] == 1 else in_shape}, or flattened to {n_pixels} "
                         f"values), as the model expects; got an array of shape {x.shape} "
                         f"(images of shape {image})")
    if x.shape[0] == 0:
        raise ValueError(f"{what} holds no images")
    return x


def _member_probs(model, x, what, batch_size):
    return model.predict_proba(_images(model, x, what), batch_size=batch_size)


def scores(model, x, member=0, batch_size=256):
    """OOD scores of images ``x`` from one prediction pass of ``model``.

    Parameters
    ----------
    model : Ensemble
        The deep ensemble; member ``member`` is the single-model baseline.
    x : array_like
        Images, ``(N, 1, 28, 28)`` for MNIST (``(N, 28, 28)`` or ``(N, 784)``
        accepted), float, finite.
    member : int
        The member whose MSP is ``msp_single``.
    batch_size : int
        Prediction batch size.

    Returns
    -------
    dict of str to ndarray
        ``name -> (N,)`` for every name in :data:`SCORES` (higher = more
        likely OOD), as :func:`scores_from_probs` computes them.

    Raises
    ------
    ValueError
        Images whose shape is not the model's input shape; no images.
    IndexError
        ``member`` out of range.
    """
    member = _check_member(member, model.members)
    return scores_from_probs(_member_probs(model, x, "x", batch_size), member=member)


# ------------------------------------------------------------------------------------ results

def _check_scores(names):
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError(f"scores must name at least one of {SCORES}")
    unknown = [s for s in names if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown OOD score(s) {unknown}; use names from {SCORES}")
    if len(set(names)) != len(names):
        raise ValueError(f"scores lists a name twice: {names}")
    return names


def _fmt(v):
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _best_index(values, higher):
    vals = [(-v if higher else v) for v in values]
    finite = [v for v in vals if not math.isnan(v)]
    return vals.index(min(finite)) if finite else None


def _markdown(header, rows, bold=None, left=1):
    """Markdown table; ``bold`` is a set of (row, column) cells to embolden;
    the first ``left`` columns are left-aligned, the others right-aligned."""
    bold = bold or set()
    cells = [[f"**{c}**" if (i, j) in bold else str(c) for j, c in enumerate(r)] for i, r in enumerate(rows)]
    widths = [max(len(str(h)), *(len(r[j]) for r in cells)) for j, h in enumerate(header)]
    def line(cs):
        return "| " + " | ".join(c.ljust(w) if j < left else c.rjust(w) for j, (c, w) in enumerate(zip(cs, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if j < left else ("-" * (w + 1) + ":") for j, w in enumerate(widths)) + "|"
    return "\n".join([line([str(h) for h in header]), sep] + [line(r) for r in cells])


@dataclass
class OODResult:
    """How well each score separates ID from OOD images.

    Attributes
    ----------
    name : str
        Name of the OOD set (e.g. ``"KMNIST"``), used in titles and tables.
    metrics : dict
        ``score -> {"auroc", "aupr_in", "aupr_out", "fpr95"}`` (floats) for
        each evaluated score, in evaluation order (see
        :func:`uqattr.metrics.ood_metrics`; OOD positive).
    scores_in, scores_out : dict of ndarray
        The raw scores of the ID and OOD images, every name of
        :data:`SCORES` (higher = more likely OOD), so plots need no new
        prediction.
    member : int
        The member behind ``msp_single``.
    members : int
        Ensemble size.
    id_name : str
        Name of the ID set (``"MNIST"``).
    """

    name: str
    metrics: dict
    scores_in: dict = field(repr=False)
    scores_out: dict = field(repr=False)
    member: int = 0
    members: int = 1
    id_name: str = "MNIST"

    @property
    def score_names(self):
        """The evaluated scores, in order."""
        return tuple(self.metrics)

    @property
    def n_in(self):
        return len(next(iter(self.scores_in.values())))

    @property
    def n_out(self):
        return len(next(iter(self.scores_out.values())))

    def best(self, score_names=None, by="auroc"):
        """Name of the score with the best ``by`` metric (highest AUROC / AUPR,
        lowest FPR@95) among ``score_names`` (default: all evaluated);
        the first in order on ties."""
        if by not in METRICS:
            raise ValueError(f"unknown metric {by!r}; use one of {METRICS}")
        names = self.score_names if score_names is None else _check_scores(score_names)
        missing = [s for s in names if s not in self.metrics]
        if missing:
            raise ValueError(f"score(s) {missing} were not evaluated; evaluated: {self.score_names}")
        i = _best_index([self.metrics[s][by] for s in names], HIGHER_IS_BETTER[by])
        return names[0] if i is None else names[i]

    def _rows(self):
        return [[s] + [_fmt(self.metrics[s][m]) for m in METRICS] for s in self.score_names]

    def _title(self):
        return (f"OOD detection: {self.id_name} (n = {self.n_in}) vs {self.name} (n = {self.n_out}); "
                f"{self.members}-member ensemble, single model = member {self.member}")

    def __repr__(self):
        header = ["score"] + [METRIC_HEADERS[m] for m in METRICS]
        rows = self._rows()
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
        def line(cs):
            return "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cs, widths)))
        return "\n".join([self._title(), line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])

    def to_markdown(self):
        """The metrics as a Markdown table (one row per score), the best
        value of each column in bold."""
        header = ["score"] + [METRIC_HEADERS[m] for m in METRICS]
        bold = set()
        for j, m in enumerate(METRICS):
            i = _best_index([self.metrics[s][m] for s in self.score_names], HIGHER_IS_BETTER[m])
            if i is not None:
                bold.add((i, j + 1))
        return f"{self._title()}\n\n" + _markdown(header, self._rows(), bold)

    def to_dict(self, include_scores=False):
        """JSON-friendly dict: names, sizes, ``metrics`` (plain floats) and,
        with ``include_scores``, the raw score arrays as lists."""
        d = {"name": self.name, "id_name": self.id_name, "n_in": self.n_in, "n_out": self.n_out,
             "member": self.member, "members": self.members,
             "metrics": {s: {m: float(v) for m, v in row.items()} for s, row in self.metrics.items()}}
        if include_scores:
            d["scores_in"] = {s: np.asarray(v, dtype=np.float64).tolist() for s, v in self.scores_in.items()}
            d["scores_out"] = {s: np.asarray(v, dtype=np.float64).tolist() for s, v in self.scores_out.items()}
        return d

    def auroc(self, score):
        """AUROC of ``score`` (from :attr:`metrics`, or computed from the raw scores)."""
        if score in self.metrics:
            return self.metrics[score]["auroc"]
        return metrics(self.scores_in[score], self.scores_out[score])["auroc"]

    def plot_histograms(self, bins=50):
        """The study's slide: three panels in a row, ID vs OOD histograms.

        Panels: "Single Model: OOD Detection via Max Softmax Probability
        (NAME)" and "Ensemble: ..." (x: the MSP itself, bins over [0, 1]),
        then "Epistemic Uncertainty (NAME)" (x: mutual information, nats);
        each histogram pair shares its bins, is normalized to unit area (the
        sets differ in size) and has the score's AUROC in its legend.

        Returns
        -------
        matplotlib.figure.Figure
            Neither shown nor saved; three axes.
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(22, 6.5), layout="constrained")
        axes = fig.subplots(1, 3)
        labels = (f"In-distribution ({self.id_name})", f"OOD ({self.name})")
        msp_edges = np.linspace(0.0, 1.0, bins + 1)
        panels = (
            ("msp_single", f"Single Model: OOD Detection via Max Softmax Probability ({self.name})",
             "Max Softmax Probability", True),
            ("msp_ensemble", f"Ensemble: OOD Detection via Max Softmax Probability ({self.name})",
             "Max Softmax Probability", True),
            ("epistemic", f"Epistemic Uncertainty ({self.name})", "Uncertainty", False),
        )
        for ax, (score, title, xlabel, is_msp) in zip(axes, panels):
            s_in = np.asarray(self.scores_in[score], dtype=np.float64)
            s_out = np.asarray(self.scores_out[score], dtype=np.float64)
            if is_msp:
                s_in, s_out, edges = 1.0 - s_in, 1.0 - s_out, msp_edges
            else:
                edges = bins
            _metrics.plot_ood_histograms(s_in, s_out, title, xlabel, ax=ax, auroc=self.auroc(score),
                                         labels=labels, bins=edges)
            ax.title.set_fontsize(13)
            ax.set_ylabel("Frequency", fontsize=_metrics.FONT + 1)
            ax.legend(title=f"AUROC = {self.auroc(score):.3f}", fontsize=_metrics.FONT - 1,
                      title_fontsize=_metrics.FONT - 1, loc="upper left" if is_msp else "upper right")
        return fig


def _result(name, s_in, s_out, names, member, members, id_name):
    rows = {s: metrics(s_in[s], s_out[s]) for s in names}
    return OODResult(name=name, metrics=rows, scores_in=s_in, scores_out=s_out, member=member,
                     members=members, id_name=id_name)


def evaluate(model, x_in, x_ood, scores=SCORES, member=0, name="OOD", id_name="MNIST", batch_size=256):
    """OOD-detection metrics of every score, ID images against OOD images.

    Parameters
    ----------
    model : Ensemble
    x_in, x_ood : array_like
        ID and OOD images of the model's input shape (``(N, 1, 28, 28)``;
        ``(N, 28, 28)`` and ``(N, 784)`` accepted), at least one each.
    scores : sequence of str
        Scores to evaluate, from :data:`SCORES` (default all). The raw arrays
        of all five are kept either way.
    member : int
        The member that is the single-model baseline (``msp_single``).
    name, id_name : str
        Names of the OOD and ID sets for tables and titles.
    batch_size : int
        Prediction batch size.

    Returns
    -------
    OODResult

    Raises
    ------
    ValueError
        Unknown or repeated score names; images of the wrong shape (the
        message names ``x_in`` or ``x_ood``); an empty set.
    IndexError
        ``member`` out of range.
    """
    names = _check_scores(scores)
    member = _check_member(member, model.members)
    x_in = _images(model, x_in, "x_in")
    x_ood = _images(model, x_ood, "x_ood")
    s_in = scores_from_probs(model.predict_proba(x_in, batch_size=batch_size), member)
    s_out = scores_from_probs(model.predict_proba(x_ood, batch_size=batch_size), member)
    return _result(name, s_in, s_out, names, member, model.members, id_name)


def evaluate_many(model, x_in, ood_sets, scores=SCORES, member=0, id_name="MNIST", batch_size=256):
    """:func:`evaluate` against several OOD sets, predicting ``x_in`` once.

    Parameters
    ----------
    ood_sets : mapping of str to array_like
        ``name -> OOD images``, e.g. ``{"KMNIST": x_kmnist, ...}``.
    Other parameters as in :func:`evaluate`.

    Returns
    -------
    dict of str to OODResult
        In the order of ``ood_sets``.
    """
    names = _check_scores(scores)
    member = _check_member(member, model.members)
    if not ood_sets:
        raise ValueError("ood_sets is empty: give at least one OOD set as {name: images}")
    x_in = _images(model, x_in, "x_in")
    checked = {k: _images(model, v, f"OOD set {k!r}") for k, v in ood_sets.items()}
    s_in = scores_from_probs(model.predict_proba(x_in, batch_size=batch_size), member)
    out = {}
    for k, x in checked.items():
        s_out = scores_from_probs(model.predict_proba(x, batch_size=batch_size), member)
        out[k] = _result(k, s_in, s_out, names, member, model.members, id_name)
    return out


def summary_table(results, metric=None):
    """Markdown table of several :class:`OODResult`.

    Parameters
    ----------
    results : mapping of str to OODResult, or sequence of OODResult
    metric : str, optional
        ``None`` (default): the long table, one row per OOD set and score
        with all four metrics, the best value of each set in bold.
        ``"auroc"`` (or another of :data:`METRICS`): the wide table, one row
        per OOD set and one column per score, best per set in bold.

    Returns
    -------
    str
    """
    res = list(results.values()) if isinstance(results, dict) else list(results)
    if not res:
        raise ValueError("summary_table needs at least one result")
    if metric is None:
        header = ["OOD set", "score"] + [METRIC_HEADERS[m] for m in METRICS]
        rows, bold = [], set()
        for r in res:
            start = len(rows)
            for k, s in enumerate(r.score_names):
                rows.append([f"{r.name} (n = {r.n_out})" if k == 0 else "", s]
                            + [_fmt(r.metrics[s][m]) for m in METRICS])
            for j, m in enumerate(METRICS):
                i = _best_index([r.metrics[s][m] for s in r.score_names], HIGHER_IS_BETTER[m])
                if i is not None:
                    bold.add((start + i, j + 2))
        return _markdown(header, rows, bold, left=2)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS} or None")
    names = []
    for r in res:
        names += [s for s in r.score_names if s not in names]
    header = ["OOD set"] + names
    rows, bold = [], set()
    for i, r in enumerate(res):
        vals = [r.metrics[s][metric] if s in r.metrics else float("nan") for s in names]
        rows.append([r.name] + [_fmt(v) if s in r.metrics else "" for s, v in zip(names, vals)])
        j = _best_index(vals, HIGHER_IS_BETTER[metric])
        if j is not None:
            bold.add((i, j + 1))
    return f"{METRIC_HEADERS[metric]} per OOD set and score\n\n" + _markdown(header, rows, bold)


# ------------------------------------------------------------------------ confident mistakes

def most_confident_ood(model, x_ood, k=5, member=0, batch_size=256):
    """The OOD images the single model is most sure about.

    The study's example: a KMNIST character the single model calls an "8" at
    100%. Images are ranked by the single member's MSP, highest first (ties
    broken by the precise ``msp_single`` score, then by index).

    Parameters
    ----------
    model : Ensemble
    x_ood : array_like
        OOD images of the model's input shape.
    k : int
        How many (at most the number of images).
    member : int
        The single-model member.

    Returns
    -------
    dict of ndarray
        ``indices`` (k,) into ``x_ood``; ``single_pred`` / ``single_prob``:
        the member's predicted class and its probability; ``ensemble_pred`` /
        ``ensemble_prob``: the ensemble mean's predicted class and probability
        (float64 probabilities, int64 classes).
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    member = _check_member(member, model.members)
    p = np.asarray(_member_probs(model, x_ood, "x_ood", batch_size), dtype=np.float64)
    single, mean = p[member], p.mean(axis=0)
    order = np.argsort(_one_minus_max(single), kind="stable")[:int(k)]
    return {"indices": order.astype(np.int64),
            "single_pred": single[order].argmax(axis=1).astype(np.int64),
            "single_prob": single[order].max(axis=1),
            "ensemble_pred": mean[order].argmax(axis=1).astype(np.int64),
            "ensemble_prob": mean[order].max(axis=1)}


# ------------------------------------------------------------------------------ calibration

def calibration_report(model, x, y, member=0, n_bins=15, batch_size=256):
    """Calibration of the single member and of the ensemble on labelled ID data.

    One prediction pass; ``"single"`` is member ``member``'s probabilities,
    ``"ensemble"`` the mean over members.

    Returns
    -------
    dict
        ``{"single": Calibration, "ensemble": Calibration}``
        (:func:`uqattr.metrics.calibration`: accuracy, NLL, Brier, ECE with
        ``n_bins`` equal-width bins, and the reliability bins).
    """
    member = _check_member(member, model.members)
    p = _member_probs(model, x, "x", batch_size)
    y = np.asarray(y)
    if y.shape != (p.shape[1],):
        raise ValueError(f"y must have shape ({p.shape[1]},) to match the images, got {y.shape}")
    return {"single": _metrics.calibration(p[member], y, n_bins=n_bins),
            "ensemble": _metrics.calibration(p.mean(axis=0), y, n_bins=n_bins)}


def calibration_table(report, member=None):
    """Markdown table of a :func:`calibration_report`: accuracy, NLL, ECE and
    Brier (sum over classes, in [0, 2]) of the single member and the ensemble."""
    header = ["model", "accuracy", "NLL", "ECE", "Brier"]
    label = {"single": "single member" + (f" ({member})" if member is not None else ""), "ensemble": "ensemble"}
    rows = [[label.get(k, k), f"{c.accuracy:.4f}", f"{c.nll:.4f}", f"{c.ece:.4f}", f"{c.brier:.4f}"]
            for k, c in report.items()]
    return _markdown(header, rows)


def plot_calibration(report):
    """Reliability diagrams of a :func:`calibration_report` side by side
    (single model left, ensemble right), each titled with its ECE.

    Returns
    -------
    matplotlib.figure.Figure
        Neither shown nor saved; one axes per entry of ``report``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(report), 5.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(report)))
    names = {"single": "Single Model", "ensemble": "Ensemble"}
    for ax, (key, cal) in zip(axes, report.items()):
        _metrics.reliability_diagram(cal, ax=ax)
        ax.set_title(f"{names.get(key, key)}: reliability diagram (ECE = {100 * cal.ece:.2f}%)",
                     fontsize=_metrics.FONT)
    return fig


__all__ = ["SCORES", "SCORE_LABELS", "METRICS", "OODResult", "calibration_report", "calibration_table",
           "evaluate", "evaluate_many", "metrics", "most_confident_ood", "plot_calibration", "scores",
           "scores_from_probs", "summary_table"]
