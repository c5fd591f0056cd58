"""Uncertainty of a deep ensemble's predictions, decomposed.

For member probabilities p_m and their mean p̄:

* **total** ``H[p̄]`` — entropy of the mean prediction,
* **aleatoric** ``E_m H[p_m]`` — mean entropy of the members (noise in the data),
* **epistemic** ``total - aleatoric`` — the mutual information between the
  prediction and the member (disagreement: what more data would remove).

All in nats by default (``unit="bits"`` divides by log 2); computed in the C core.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import _uqattr

MEASURES = ("total", "aleatoric", "epistemic")


@dataclass
class Uncertainty:
    """Per-image uncertainty of an ensemble on N images.

    Attributes: ``member_probs`` (M, N, C), ``mean_probs`` (N, C), ``pred``
    (N,) predicted class (argmax of the mean), ``max_prob`` (N,) its mean
    probability, ``total``, ``aleatoric``, ``epistemic`` (N,) and ``unit``.
    """

    member_probs: np.ndarray
    mean_probs: np.ndarray
    pred: np.ndarray
    max_prob: np.ndarray
    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    unit: str = "nats"

    def __len__(self):
        return len(self.pred)

    def __repr__(self):
        return (f"Uncertainty(N={len(self)}, members={self.member_probs.shape[0]}, unit={self.unit!r}, "
                f"mean total={self.total.mean():.4f}, aleatoric={self.aleatoric.mean():.4f}, "
                f"epistemic={self.epistemic.mean():.4f})")

    def score(self, by="total"):
        """The named measure as a score where higher means more uncertain:
        ``total``, ``aleatoric``, ``epistemic``, or ``max_prob`` (as ``-max_prob``)."""
        if by in MEASURES:
            return getattr(self, by)
        if by == "max_prob":
            return -self.max_prob
        raise ValueError(f"unknown uncertainty measure {by!r}; use one of {MEASURES + ('max_prob',)}")

    def most_uncertain(self, k=10, by="total", per_class=None, labels=None):
        """Indices of the ``k`` most uncertain images by ``by``, most uncertain first.

        ``per_class="pred"`` (or ``"label"``, with ``labels``) returns a dict
        ``class -> indices`` with the ``k`` most uncertain images of each class."""
        return _select(self, k, by, per_class, labels, largest=True)

    def least_uncertain(self, k=10, by="total", per_class=None, labels=None):
        """Indices of the ``k`` least uncertain images, least uncertain first
        (same options as :meth:`most_uncertain`)."""
        return _select(self, k, by, per_class, labels, largest=False)


def decompose(member_probs, unit="nats"):
    """:class:`Uncertainty` from member probabilities ``(M, N, C)``."""
    if unit not in ("nats", "bits"):
        raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")
    member_probs = np.asarray(member_probs)
    d = _uqattr.decompose(member_probs)
    scale = 1.0 / math.log(2.0) if unit == "bits" else 1.0
    return Uncertainty(member_probs=np.ascontiguousarray(member_probs, dtype=np.float32), mean_probs=d["mean_probs"],
                       pred=d["pred"].astype(np.int64), max_prob=d["max_prob"],
                       total=d["total"] * np.float32(scale), aleatoric=d["aleatoric"] * np.float32(scale),
                       epistemic=d["epistemic"] * np.float32(scale), unit=unit)


def uncertainty(model, x, unit="nats", batch_size=256):
    """Predicts ``x`` with every member of ``model`` and decomposes the
    uncertainty of each image; returns an :class:`Uncertainty`. An ensemble on
    a GPU does both there (uqattr.cuda), with the same values."""
    if getattr(model, "_cuda", None) is not None:
        if unit not in ("nats", "bits"):
            raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")
        from . import cuda
        with model._guard.read():
            d = cuda.decompose(model, model._images(x), batch_size)
        scale = np.float32(1.0 / math.log(2.0) if unit == "bits" else 1.0)
        return Uncertainty(member_probs=d["member_probs"], mean_probs=d["mean_probs"], pred=d["pred"].astype(np.int64),
                           max_prob=d["max_prob"], total=d["total"] * scale, aleatoric=d["aleatoric"] * scale,
                           epistemic=d["epistemic"] * scale, unit=unit)
    return decompose(model.predict_proba(x, batch_size=batch_size), unit=unit)


def _select(u, k, by, per_class, labels, largest):
    score = np.asarray(u.score(by), dtype=np.float64)
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")

    def top(idx):
        order = np.argsort(-score[idx] if largest else score[idx], kind="stable")
        return idx[order[:k]]

    if per_class is None:
        return top(np.arange(len(score)))
    if per_class == "pred":
        classes = u.pred
    elif per_class == "label":
        if labels is None:
            raise ValueError("per_class='label' needs labels")
        classes = np.asarray(labels)
        if classes.shape != score.shape:
            raise ValueError(f"labels must have shape {score.shape}, got {classes.shape}")
    else:
        raise ValueError(f"per_class must be None, 'pred' or 'label', got {per_class!r}")
    return {int(c): top(np.flatnonzero(classes == c)) for c in np.unique(classes)}
