"""Does an attribution point at what makes the model uncertain? Perturbation tests.

:func:`blur_test` is the blur test of Perez et al. (UAI 2022): for the images
whose target uncertainty is above the median, rank the pixels by an
attribution, replace them, most important first, by the same pixels of a
Gaussian-blurred copy (sigma 1.5 px on MNIST) and record the target ``H_k``
after each of ``k`` pixels. Two summaries, both "higher is better":

* the **uncertainty reduction curve** URC(k) = median over images of the
  running maximum of ``1 - H_k / H_0``, quoted at 1% and 5% of the pixels;
* ``1 - AUC`` of the **entropy information curve**, the mean over images of
  ``H_k / H_0`` against the fraction of pixels removed, the fraction axis
  scaled to [0, 1] (0 when removing pixels changes nothing).

For ``target="max_prob"`` the same machinery is a deletion curve: ``H_k`` is
the ensemble's probability of the class it predicted on the intact image.

:func:`compare_attributions` runs the test for a random ranking and every
attribution method of the package, for each target, and returns a table and
a curve plot.
"""
from dataclasses import dataclass, field

import numpy as np

from .attr import (UNCERTAINTY_TARGETS, BaselineXGradient, IntegratedGradients, InputXGradient, Saliency,
                   SmoothGrad, _images)
from .baselines import gaussian_blur
from .uncertainty import decompose

TARGETS = UNCERTAINTY_TARGETS + ("max_prob",)
#: the fractions of pixels the summaries are quoted at
QUOTED_FRACTIONS = (0.01, 0.05)


@dataclass
class BlurTestResult:
    """What :func:`blur_test` measured.

    ``k``: pixels removed at each evaluation (starts at 0); ``fractions``:
    ``k`` over the pixels per image; ``indices``: the images tested (into the
    ``x`` given); ``values``: ``H_k`` per tested image, ``(n, len(k))``;
    ``ratio``: ``H_k / H_0``; ``urc``: the uncertainty reduction curve;
    ``urc_at``: URC at :data:`QUOTED_FRACTIONS`; ``one_minus_auc``: 1 - AUC
    of the mean ``H_k / H_0`` curve."""

    target: str
    k: np.ndarray
    fractions: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    ratio: np.ndarray = field(repr=False)
    urc: np.ndarray = field(repr=False)
    urc_at: dict = field(default_factory=dict)
    one_minus_auc: float = 0.0

    def summary(self):
        """``{"urc@1%": ..., "urc@5%": ..., "1-auc": ...}``"""
        out = {f"urc@{f:.0%}": v for f, v in self.urc_at.items()}
        out["1-auc"] = self.one_minus_auc
        return out


def _target_values(model, x, target, classes):
    """The target of each image of ``x``: an uncertainty, or the mean
    probability of ``classes`` (for ``"max_prob"``)."""
    u = decompose(model.predict_proba(x))
    if target == "max_prob":
        return u.mean_probs[np.arange(len(x)), classes].astype(np.float64)
    return getattr(u, target).astype(np.float64)


def _ranking(attribution, n, pixels, seed):
    """Pixel order per image (most important first) from an attribution array,
    or a seeded random order for ``"random"``."""
    if isinstance(attribution, str):
        if attribution != "random":
            raise ValueError(f"attribution must be an array or 'random', got {attribution!r}")
        rng = np.random.default_rng(seed)
        return np.argsort(rng.random((n, pixels)), axis=1)
    a = np.asarray(attribution, dtype=np.float64)
    if a.size != n * pixels:
        raise ValueError(f"attribution has shape {a.shape}; expected one value per pixel of the {n} images "
                         f"({pixels} pixels each)")
    a = a.reshape(n, pixels)
    if not np.isfinite(a).all():
        raise ValueError("attribution contains NaN or Inf")
    return np.argsort(-a, axis=1, kind="stable")


def blur_test(model, x, attribution, target="total", sigma=1.5, max_fraction=0.05, steps=None, select="auto",
              seed=0, batch_images=256):
    """The blur test of an attribution for ``target`` (see the module docs).

    Parameters
    ----------
    model : Ensemble
    x : array (N, 1, 28, 28), (N, 28, 28) or (N, 784)
    attribution : array with one value per pixel of each image (e.g. the output
        of any ``.attribute(x, target=...)``), higher = more important; or
        ``"random"`` for a seeded random ranking.
    target : ``"total"``, ``"aleatoric"``, ``"epistemic"`` or ``"max_prob"``.
    sigma : blur of the replacement copy, in pixels.
    max_fraction : the test removes up to this fraction of each image's pixels.
    steps : evaluations between 0 and ``max_fraction`` (``None``: after every
        pixel); the quoted fractions are always evaluated.
    select : ``"auto"`` (images whose target is above the median of ``x`` for
        the uncertainties, every image for ``"max_prob"``), ``"above_median"``,
        ``"all"``, or an array of indices into ``x``.
    seed : seed of the ``"random"`` ranking.

    Returns a :class:`BlurTestResult`.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = _images(model, x)
    if len(x) == 0:
        raise ValueError("x holds no images")
    n, pixels = len(x), int(np.prod(x.shape[1:]))
    ranking = _ranking(attribution, n, pixels, seed)

    u0 = decompose(model.predict_proba(x))
    classes = u0.pred.astype(np.int64)
    h0 = _target_values(model, x, target, classes)
    if isinstance(select, str):
        if select == "auto":
            select = "all" if target == "max_prob" else "above_median"
        if select == "above_median":
            idx = np.flatnonzero(h0 > np.median(h0))
        elif select == "all":
            idx = np.arange(n)
        else:
            raise ValueError(f"select must be 'auto', 'above_median', 'all' or an index array, got {select!r}")
    else:
        idx = np.asarray(select, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"select holds indices outside [0, {n})")
    idx = idx[h0[idx] > 0]  # H_k / H_0 needs H_0 > 0
    if len(idx) == 0:
        raise ValueError(f"no image to test: none has a positive {target} (after select)")

    k_max = max(1, int(round(max_fraction * pixels)))
    quoted = [int(round(f * pixels)) for f in QUOTED_FRACTIONS if f <= max_fraction]
    if steps is None:
        ks = np.arange(k_max + 1)
    else:
        ks = np.unique(np.concatenate([np.round(np.linspace(0, k_max, int(steps) + 1)), quoted]).astype(np.int64))

    blurred = gaussian_blur(x[idx], sigma).reshape(len(idx), pixels)
    flat = x[idx].reshape(len(idx), pixels)
    order = ranking[idx]
    values = np.empty((len(idx), len(ks)))
    values[:, 0] = h0[idx]
    for start in range(0, len(idx), batch_images):
        sl = slice(start, start + batch_images)
        rows = np.arange(len(flat[sl]))[:, None]
        # every k of this batch at once: (B, len(ks) - 1) copies, pixels up to k replaced
        copies = np.repeat(flat[sl][:, None], len(ks) - 1, axis=1)
        for j, k in enumerate(ks[1:]):
            top = order[sl][:, :k]
            copies[rows, j, top] = blurred[sl][rows, top]
        h = _target_values(model, copies.reshape((-1,) + x.shape[1:]), target,
                           np.repeat(classes[idx][sl], len(ks) - 1))
        values[sl, 1:] = h.reshape(-1, len(ks) - 1)

    ratio = values / values[:, :1]
    urc = np.median(np.maximum.accumulate(1.0 - ratio, axis=1), axis=0)
    fractions = ks / pixels
    urc_at = {f: float(urc[np.searchsorted(ks, int(round(f * pixels)))]) for f in QUOTED_FRACTIONS
              if f <= max_fraction}
    mean_ratio = ratio.mean(axis=0)
    span = fractions[-1] - fractions[0]
    auc = float(np.sum(np.diff(fractions) * (mean_ratio[1:] + mean_ratio[:-1]) / 2) / span)
    return BlurTestResult(target=target, k=ks, fractions=fractions, indices=idx, values=values, ratio=ratio, urc=urc,
                          urc_at=urc_at, one_minus_auc=1.0 - auc)


def default_methods(model, sigma=1.5, smoothgrad_samples=50, ig_steps=64, seed=0):
    """The rankings :func:`compare_attributions` compares, name -> method (an
    object with ``.attribute(x, target=[...])``, or ``"random"``)."""
    return {
        "random": "random",
        "gradient (signed)": Saliency(model),
        "|gradient|": _Abs(Saliency(model)),
        "SmoothGrad": SmoothGrad(model, n_samples=smoothgrad_samples, seed=seed),
        "IG (black)": IntegratedGradients(model, baseline="black", steps=ig_steps),
        "IG (blur)": IntegratedGradients(model, baseline="blur", steps=ig_steps, blur_sigma=sigma),
        "input \u00d7 gradient": InputXGradient(model),
        "gradient \u00d7 (x \u2212 blur)": BaselineXGradient(model, baseline="blur", blur_sigma=sigma),
    }


class _Abs:
    """A method's attributions as magnitudes (Captum's ``abs=True``)."""

    def __init__(self, method):
        self.method = method

    def attribute(self, x, target):
        return self.method.attribute(x, target=target, abs=True)


@dataclass
class Comparison:
    """Blur-test results of several rankings: ``results[method][target]`` is a
    :class:`BlurTestResult`. Print it, or ``to_markdown()``, for the table;
    ``plot()`` for the curves."""

    results: dict
    n_images: int

    @property
    def methods(self):
        return list(self.results)

    @property
    def targets(self):
        return list(next(iter(self.results.values())))

    def rows(self):
        """``[method, target, URC@1%, URC@5%, 1-AUC]`` per method and target."""
        return [[m, t] + list(r.summary().values()) for m, by_t in self.results.items() for t, r in by_t.items()]

    def table(self, metric="urc@5%"):
        """``{method: {target: value}}`` of one summary."""
        return {m: {t: r.summary()[metric] for t, r in by_t.items()} for m, by_t in self.results.items()}

    def best(self, target, metric="urc@5%"):
        """The method with the highest ``metric`` for ``target``."""
        return max(self.results, key=lambda m: self.results[m][target].summary()[metric])

    def to_markdown(self):
        keys = list(next(iter(next(iter(self.results.values())).values())).summary())
        lines = ["| method | target | " + " | ".join(k.upper() if k != "1-auc" else "1 \u2212 AUC" for k in keys)
                 + " |", "|" + " --- |" * (2 + len(keys))]
        for row in self.rows():
            lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(f"{v:.4f}" for v in row[2:]) + " |")
        return "\n".join(lines)

    def __repr__(self):
        return f"Comparison of {len(self.results)} rankings on {self.n_images} images\n" + self.to_markdown()

    def plot(self, suptitle=None):
        """One panel per target: URC (median uncertainty reduction; for
        ``max_prob`` the median probability drop) against the percentage of
        pixels replaced by their blurred values, one line per method."""
        import matplotlib.pyplot as plt

        targets = self.targets
        fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.8), squeeze=False)
        for ax, t in zip(axes[0], targets):
            for m in self.methods:
                r = self.results[m][t]
                style = dict(color="black", linestyle="--") if m == "random" else {}
                ax.plot(100 * r.fractions, r.urc, label=m, **style)
            ax.set_title(f"{t} ({len(self.results[self.methods[0]][t].indices)} images)", fontsize=11)
            ax.set_xlabel("pixels replaced by blur (%)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("URC: median reduction of the target")
        axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        if suptitle:
            fig.suptitle(suptitle)
        fig.tight_layout()
        return fig


def compare_attributions(model, x, targets=UNCERTAINTY_TARGETS, methods=None, sigma=1.5, max_fraction=0.05,
                         steps=None, seed=0, progress=True):
    """Blur test of every method in ``methods`` (default:
    :func:`default_methods`) for each target; returns a :class:`Comparison`.
    Each method attributes all targets in one call on the images of ``x``."""
    from tqdm.auto import tqdm

    x = _images(model, x)
    targets = list(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}: use {TARGETS}")
    methods = default_methods(model, sigma=sigma, seed=seed) if methods is None else dict(methods)
    results = {}
    for name, method in tqdm(methods.items(), desc="blur test", disable=not progress, unit="method"):
        if isinstance(method, str):
            maps = dict.fromkeys(targets, method)
        else:
            maps = method.attribute(x, target=targets)
        results[name] = {t: blur_test(model, x, maps[t], target=t, sigma=sigma, max_fraction=max_fraction,
                                      steps=steps, seed=seed) for t in targets}
    return Comparison(results=results, n_images=len(x))
