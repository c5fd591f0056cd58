"""Editing images to test what an attribution says, and to move uncertainty.

Three kinds of edit, each returning new images (inputs are never modified):

* :func:`erase` — set the pixels of a hand-made mask to a value (0: black
  background);
* :func:`erase_salient` — erase a fraction of each image's stroke pixels,
  the ones an attribution ranks highest; :func:`erase_random` erases the
  same number of stroke pixels chosen at random (the baseline);
* :func:`along_gradient` — projected gradient steps on the pixels that raise
  (``direction=+1``) or lower (``direction=-1``) a target such as the total
  uncertainty, inside the box [0, 1] and an L∞ or L2 budget around the
  original (PGD-style; with a proximity penalty, a CLUE-style counterfactual
  in pixel space).

:func:`edit_report` tabulates prediction, probability and uncertainty before
and after an edit; :func:`plot_before_after` draws both images with their
uncertainty maps.

Image shapes
------------
The pixel edits (:func:`erase`, :func:`erase_salient`, :func:`erase_random`)
need no model; they take a single ``(H, W)`` image (any 2-D array is one
image), an ``(N, H, W)`` stack or an ``(N, C, H, W)`` batch, and return an
array of the same shape and dtype. Masks and attributions may come with or
without the channel axis of a single-channel batch, e.g. an ``(N, 28, 28)``
attribution from :mod:`uqattr.attr` for ``(N, 1, 28, 28)`` images.
Functions that take a ``model`` accept what :mod:`uqattr.attr` accepts
(``(28, 28)``, ``(N, 28, 28)``, ``(N, 1, 28, 28)`` or ``(N, 784)`` for
MNIST) and return float32 arrays shaped as the input.
"""
import numbers

import numpy as np

from .attr import _encode_target, _images, input_gradients

NORMS = ("linf", "l2")

__all__ = ["erase", "erase_salient", "erase_random", "erase_counts", "along_gradient", "edit_report",
           "format_report", "plot_before_after", "NORMS"]


# ---- validation helpers -------------------------------------------------------------------------

def _check_images(x, name="x"):
    """``(array, flat)``: the images as given, and an ``(N, P)`` float view of
    their pixels (N = 1 for a single 2-D image)."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array of pixel values, got dtype {a.dtype}")
    if a.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must be a single (H, W) image, an (N, H, W) stack or an (N, C, H, W) batch, "
                         f"got shape {a.shape}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    flat = a.reshape(1, -1) if a.ndim == 2 else a.reshape(a.shape[0], -1)
    return a, flat


def _image_shapes(x):
    """Accepted shapes of one image's map for images ``x``: with and without
    the channel axis of a single-channel image."""
    img = x.shape if x.ndim == 2 else x.shape[1:]
    core = img[1:] if len(img) == 3 and img[0] == 1 else img
    shapes = {tuple(img), tuple(core)}
    if len(core) == 2:
        shapes.add((1,) + tuple(core))
    return shapes, core


def _per_pixel(a, x, n, name, broadcast):
    """``a`` (a per-image map, or one map for every image when ``broadcast``)
    as an ``(N, P)`` array matching the images ``x``."""
    shapes, core = _image_shapes(x)
    a = np.asarray(a)
    if a.shape in {(n,) + s for s in shapes}:
        return a.reshape(n, -1)
    if (broadcast or x.ndim == 2) and a.shape in shapes:
        return np.broadcast_to(a.reshape(1, -1), (n, int(np.prod(core))))
    want = f"(N, ...) with N = {n} and each image {tuple(core)}" + (" (or one map for all images)"
                                                                      if broadcast else "")
    raise ValueError(f"{name} has shape {a.shape}, which does not match the images of shape {x.shape}: "
                     f"expected {want}")


def _real(value, name, finite=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if finite and not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _integer(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def _check_fraction(fraction):
    fraction = _real(fraction, "fraction")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return fraction


def _apply(x, flat_mask, value):
    """Copy of ``x`` with the masked pixels set to ``value``, same shape and dtype."""
    out = np.array(x, copy=True)
    out.reshape(flat_mask.shape)[flat_mask] = value
    return out


# ---- pixel edits ---------------------------------------------------------------------------------

def erase(x, mask, value=0.0):
    """Sets the pixels of ``mask`` to ``value`` (a hand edit).

    Parameters
    ----------
    x : ndarray, float
        A single ``(H, W)`` image, an ``(N, H, W)`` stack or an ``(N, C, H, W)``
        batch; finite.
    mask : ndarray, bool (or integers 0/1)
        Pixels to erase: one mask per image (``x``'s shape, with or without
        the channel axis of single-channel images) or a single image's mask
        applied to every image.
    value : float
        What erased pixels become (default 0.0, MNIST's background).

    Returns
    -------
    ndarray
        A new array of ``x``'s shape and dtype; ``x`` is not modified.

    Raises
    ------
    TypeError
        ``x`` not floating point, ``mask`` neither boolean nor 0/1 integers,
        ``value`` not a real number.
    ValueError
        Wrong shapes, NaN or infinite values.
    """
    a, flat = _check_images(x)
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.integer):
            raise TypeError(f"mask must be a boolean array (or integers 0/1), got dtype {m.dtype}")
        if m.size and not np.all((m == 0) | (m == 1)):
            raise ValueError("an integer mask must hold only 0 and 1")
        m = m.astype(bool)
    value = _real(value, "value")
    return _apply(a, _per_pixel(m, a, flat.shape[0], "mask", broadcast=True), value)


def _stroke(flat, stroke_threshold):
    return flat > _real(stroke_threshold, "stroke_threshold")


def erase_counts(x, fraction=0.2, stroke_threshold=0.1):
    """Number of pixels :func:`erase_salient` and :func:`erase_random` erase in each image.

    ``k = floor(fraction * s + 0.5)`` (rounded half up) where ``s`` is the
    image's number of stroke pixels (``x > stroke_threshold``), and at least 1
    when the image has any stroke pixel; 0 for an image without strokes.

    Returns
    -------
    ndarray, int64, shape (N,)
        (N = 1 for a single image.)
    """
    _, flat = _check_images(x)
    fraction = _check_fraction(fraction)
    s = _stroke(flat, stroke_threshold).sum(axis=1)
    k = np.floor(fraction * s + 0.5).astype(np.int64)
    return np.where(s > 0, np.clip(k, 1, s), 0).astype(np.int64)


def _erase_top(a, flat, score, k, stroke, value, return_mask):
    """Erases, per image, the ``k[i]`` stroke pixels of highest ``score``
    (ties: lower flat pixel index first)."""
    n, p = flat.shape
    key = np.where(stroke, -score, np.inf)        # non-stroke pixels rank last
    order = np.argsort(key, axis=1, kind="stable")
    mask = np.zeros((n, p), dtype=bool)
    np.put_along_axis(mask, order, np.arange(p)[None, :] < k[:, None], axis=1)
    out = _apply(a, mask, value)
    if return_mask:
        return out, mask.reshape(a.shape)
    return out


def erase_salient(x, attribution, fraction=0.2, stroke_threshold=0.1, signed=True, value=0.0,
                  return_mask=False):
    """Erases each image's most salient stroke pixels.

    In each image, the candidates are the stroke pixels (``x >
    stroke_threshold``); the ``k`` of them ranked highest by ``attribution``
    are set to ``value``, with ``k`` as :func:`erase_counts` gives it
    (``fraction`` of the image's stroke pixel count, rounded half up, at least
    1). Ranking: ``signed=True`` (default) — by the attribution itself,
    largest (most positive) first; ``signed=False`` — by ``|attribution|``,
    largest first. Ties go to the lower pixel index (row-major), so the result
    is deterministic.

    The signed rule is the one for input×gradient attributions: with
    ``attribution = x * ∂f/∂x`` (:class:`uqattr.InputXGradient`), a pixel's
    value is, to first order, ``f(x) - f(x with that pixel set to 0)``; so the
    pixels erased first are those whose erasure (to ``value=0``) is predicted
    to lower ``f`` most, e.g. ``f = "max_prob"`` for the predicted class's
    probability. For ``value != 0`` the first-order effect of erasing pixel
    ``i`` is ``(x_i - value) * ∂f/∂x_i``; pass that as ``attribution``.
    ``signed=False`` suits magnitude maps such as the plain gradient's.

    Parameters
    ----------
    x : ndarray, float
        ``(H, W)``, ``(N, H, W)`` or ``(N, C, H, W)``; finite.
    attribution : ndarray, real
        One map per image, shaped as ``x`` (with or without the channel axis
        of single-channel images), finite.
    fraction : float in (0, 1]
        Share of each image's stroke pixels to erase.
    stroke_threshold : float
        Pixels brighter than this are stroke pixels.
    signed : bool
        Rank by signed attribution (True) or by its magnitude (False).
    value : float
        What erased pixels become.
    return_mask : bool
        Also return the boolean mask of erased pixels (``x``'s shape).

    Returns
    -------
    edited : ndarray
        New array of ``x``'s shape and dtype.
    mask : ndarray, bool
        Only with ``return_mask=True``.
    """
    a, flat = _check_images(x)
    k = erase_counts(a, fraction, stroke_threshold)
    att = np.asarray(attribution)
    if att.dtype == np.bool_ or not (np.issubdtype(att.dtype, np.floating) or np.issubdtype(att.dtype, np.integer)):
        raise TypeError(f"attribution must be a real-valued array, got dtype {att.dtype}")
    score = _per_pixel(att, a, flat.shape[0], "attribution", broadcast=False).astype(np.float64)
    if score.size and not np.all(np.isfinite(score)):
        raise ValueError("attribution contains NaN or infinite values")
    if not signed:
        score = np.abs(score)
    value = _real(value, "value")
    return _erase_top(a, flat, score, k, _stroke(flat, stroke_threshold), value, return_mask)


def erase_random(x, fraction=0.2, stroke_threshold=0.1, seed=0, value=0.0, return_mask=False):
    """Erases as many stroke pixels as :func:`erase_salient` per image, chosen
    uniformly at random among the stroke pixels (the baseline).

    ``seed`` is anything :func:`numpy.random.default_rng` takes (an int, a
    ``Generator``, None); the same int seed gives the same pixels. Other
    parameters and the return value as :func:`erase_salient`.
    """
    a, flat = _check_images(x)
    k = erase_counts(a, fraction, stroke_threshold)
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError("seed must be an int, a numpy Generator or None, got a bool")
    rng = np.random.default_rng(seed)
    value = _real(value, "value")
    score = rng.random(flat.shape)
    return _erase_top(a, flat, score, k, _stroke(flat, stroke_threshold), value, return_mask)


# ---- gradient edits ------------------------------------------------------------------------------

def _model_images(model, x, name="x"):
    """``(images (N, C, H, W) float32 copy, original shape)`` for a model's input."""
    a = np.asarray(x)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array (float32 preferred), got dtype {a.dtype}")
    imgs = _images(model, a)
    if imgs.ndim != 4 or imgs.shape[1:] != tuple(model.in_shape):
        shp = model.in_shape
        raise ValueError(f"{name} has shape {a.shape}; the model takes (N,) + {tuple(shp)} images"
                         + (f", (N, {shp[1]}, {shp[2]}), a single ({shp[1]}, {shp[2]}) image or "
                            f"(N, {int(np.prod(shp))})" if shp[0] == 1 else ""))
    if imgs.size and not np.all(np.isfinite(imgs)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.array(imgs, dtype=np.float32, copy=True), a.shape


def _check_target(model, target, n):
    """Validates ``target`` for ``n`` images (raises as :mod:`uqattr.attr` does)."""
    kind, classes = _encode_target(target, n)
    if classes is not None:
        if classes.shape != (n,):
            raise ValueError(f"an array target needs one class per image, shape ({n},), got {classes.shape}")
        if classes.size and (classes.min() < 0 or classes.max() >= model.n_classes):
            raise ValueError(f"target classes must be in [0, {model.n_classes}), got {target!r}")
    return kind


def along_gradient(model, x, target="total", steps=50, step_size=0.02, direction=+1, eps=0.3, norm="linf",
                   proximity=0.0, member=None, bounds=(0.0, 1.0), return_trace=False):
    """Moves the pixels along the gradient of ``target`` within a budget.

    Projected gradient steps (PGD) on the objective
    ``J(x') = direction * f(x') - proximity * ||x' - x||²`` where ``f`` is
    ``target`` (as in :mod:`uqattr.attr`: ``"total"``, ``"aleatoric"``,
    ``"epistemic"``, ``"max_prob"``, a class or ``(N,)`` classes,
    ``"logit:k"``), with its analytic gradient from
    :func:`uqattr.attr.input_gradients`. Each of the ``steps`` steps is

    * ``norm="linf"``: ``x' += step_size * sign(∇J)`` (fast-gradient-sign step);
    * ``norm="l2"``: ``x' += step_size * ∇J / ||∇J||₂`` per image (no move
      where the gradient is 0),

    followed by projection onto the ``eps``-ball around the original ``x`` in
    that norm (L∞: clip each pixel to ``[x - eps, x + eps]``; L2: rescale
    ``x' - x`` to norm ``eps`` when longer) and clipping to ``bounds``
    ([0, 1]). Since ``x`` itself lies in ``bounds``, clipping only shortens
    ``x' - x``: the result is inside both the box and the ball. The last
    iterate is returned.

    ``direction=+1`` raises ``f`` (e.g. the most confident images made
    uncertain); ``direction=-1`` lowers it (an uncertainty-reducing
    counterfactual for the most uncertain images). ``proximity`` > 0 pulls
    towards the original (CLUE-style counterfactual in pixel space); its
    scale is relative to the gradient of ``f`` (for uncertainties in nats,
    typically 0.01 to 1). Note that ``step_size`` and ``eps`` are in the
    chosen norm: an L2 step of 0.02 over 784 pixels is tiny, so L2 edits
    want e.g. ``step_size=0.2, eps=3``.

    Parameters
    ----------
    model : Ensemble
    x : ndarray, float
        Images the model takes (see the module docstring), values in ``bounds``.
    target : str, int or (N,) int array
        What to move; default the total uncertainty.
    steps : int >= 0
    step_size : float > 0
    direction : +1 or -1
    eps : float > 0, or None / inf for no budget
    norm : "linf" or "l2"
    proximity : float >= 0
    member : int or None
        Differentiate member ``member`` alone (``None``: the ensemble).
    bounds : (low, high)
        The box the pixels stay in.
    return_trace : bool
        Also return ``f`` at every iterate, shape ``(steps + 1, N)`` (row 0:
        the original; the proximity penalty not included).

    Returns
    -------
    edited : ndarray, float32
        Shaped as ``x``; ``x`` is not modified.
    trace : ndarray, float64, (steps + 1, N)
        Only with ``return_trace=True``.
    """
    x0, shape = _model_images(model, x)
    n = x0.shape[0]
    steps = _integer(steps, "steps")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    step_size = _real(step_size, "step_size")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if isinstance(direction, (bool, np.bool_)) or direction not in (1, -1):
        raise ValueError(f"direction must be +1 (raise the target) or -1 (lower it), got {direction!r}")
    eps = np.inf if eps is None else _real(eps, "eps", finite=False)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (or None / inf for no budget), got {eps}")
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a string, one of {NORMS}, got {type(norm).__name__}")
    if norm.lower() not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: use one of {NORMS}")
    norm = norm.lower()
    proximity = _real(proximity, "proximity")
    if proximity < 0:
        raise ValueError(f"proximity must be >= 0, got {proximity}")
    try:
        lo, hi = (_real(b, "bounds") for b in bounds)
    except TypeError as e:
        raise TypeError(f"bounds must be a pair of real numbers (low, high), got {bounds!r}") from e
    if not lo < hi:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    if x0.size and (x0.min() < lo or x0.max() > hi):
        raise ValueError(f"x has values in [{x0.min():g}, {x0.max():g}], outside bounds [{lo:g}, {hi:g}]")
    if member is not None:
        member = _integer(member, "member")
        if not -model.members <= member < model.members:
            raise IndexError(f"member {member} out of range for an ensemble of {model.members}")
    _check_target(model, target, n)

    def grad_value(z):
        g, v = input_gradients(model, z, [target], member=member)
        return next(iter(g.values())), next(iter(v.values()))

    xt = x0.copy()
    trace = []
    for _ in range(steps):
        g, v = grad_value(xt)
        trace.append(np.asarray(v, dtype=np.float64))
        delta = xt - x0
        ascent = direction * g.astype(np.float64)
        if proximity:
            ascent -= 2.0 * proximity * delta
        if norm == "linf":
            move = np.sign(ascent)
        else:
            length = np.sqrt((ascent.reshape(n, -1) ** 2).sum(axis=1)).reshape((n,) + (1,) * (xt.ndim - 1))
            move = np.divide(ascent, length, out=np.zeros_like(ascent), where=length > 0)
        delta = delta + step_size * move
        if np.isfinite(eps):
            if norm == "linf":
                delta = np.clip(delta, -eps, eps)
            else:
                length = np.sqrt((delta.reshape(n, -1) ** 2).sum(axis=1)).reshape((n,) + (1,) * (xt.ndim - 1))
                delta = delta * np.minimum(1.0, eps / np.maximum(length, 1e-300))
        xt = np.clip(x0 + delta, lo, hi).astype(np.float32)
        if norm == "l2" and np.isfinite(eps):
            xt = _shrink_l2(xt, x0, eps, lo, hi)
    edited = xt.reshape(shape)
    if not return_trace:
        return edited
    trace.append(np.asarray(grad_value(xt)[1], dtype=np.float64))
    return edited, np.stack(trace) if trace else np.zeros((1, n))


def _shrink_l2(xt, x0, eps, lo, hi):
    """Guards the L2 budget against float32 rounding: pulls images whose
    ``||xt - x0||`` ended up a hair above ``eps`` back inside."""
    n = xt.shape[0]
    d = (xt.astype(np.float64) - x0).reshape(n, -1)
    length = np.sqrt((d ** 2).sum(axis=1))
    over = length > eps
    if np.any(over):
        scale = (eps / length[over]) * (1 - 1e-6)
        d[over] *= scale[:, None]
        xt = np.clip(x0 + d.reshape(xt.shape), lo, hi).astype(np.float32)
    return xt


# ---- reports -------------------------------------------------------------------------------------

def edit_report(model, x, edited, labels=None):
    """Prediction, probability and uncertainty of each image before and after an edit.

    Parameters
    ----------
    model : Ensemble
    x, edited : ndarray, float
        Originals and their edits, the same shape (anything the model takes).
    labels : (N,) ints, optional
        True classes; adds ``label``, ``correct_before`` and ``correct_after``.

    Returns
    -------
    dict of (N,) arrays
        ``pred_before`` / ``pred_after`` (predicted class), ``prob_before`` /
        ``prob_after`` (``max_prob``: mean probability of the predicted class),
        ``orig_class_prob_after`` (mean probability, after the edit, of the
        class predicted before it; ``prob_before - orig_class_prob_after`` is
        the drop in the predicted class's probability), ``total_*``,
        ``aleatoric_*``, ``epistemic_*`` (``_before`` and ``_after``, nats),
        ``changed`` (prediction changed), ``linf`` and ``l2`` (size of the
        edit).
    """
    from .uncertainty import uncertainty

    a, shape = _model_images(model, x, "x")
    b, shape_b = _model_images(model, edited, "edited")
    if shape != shape_b:
        raise ValueError(f"x and edited must have the same shape, got {shape} and {shape_b}")
    n = a.shape[0]
    u0, u1 = uncertainty(model, a), uncertainty(model, b)
    d = (b.astype(np.float64) - a).reshape(n, -1)
    rep = {"pred_before": u0.pred, "pred_after": u1.pred, "prob_before": u0.max_prob, "prob_after": u1.max_prob,
           "orig_class_prob_after": u1.mean_probs[np.arange(n), u0.pred]}
    for m in ("total", "aleatoric", "epistemic"):
        rep[f"{m}_before"], rep[f"{m}_after"] = getattr(u0, m), getattr(u1, m)
    rep["changed"] = u0.pred != u1.pred
    rep["linf"] = np.abs(d).max(axis=1) if d.size else np.zeros(n)
    rep["l2"] = np.sqrt((d ** 2).sum(axis=1))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = labels.reshape(1)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be {n} integer class labels, got an array of shape {labels.shape} "
                             f"and dtype {labels.dtype}")
        rep["label"] = labels
        rep["correct_before"] = u0.pred == labels
        rep["correct_after"] = u1.pred == labels
    return rep


def format_report(report, max_rows=20):
    """A plain-text table of an :func:`edit_report`: one row per image
    (the first ``max_rows``), then the means."""
    cols = [("pred", "pred_before", "pred_after", "d"), ("prob", "prob_before", "prob_after", ".3f"),
            ("total", "total_before", "total_after", ".4f"), ("epist", "epistemic_before", "epistemic_after", ".4f"),
            ("aleat", "aleatoric_before", "aleatoric_after", ".4f")]
    header = ["#"] + (["label"] if "label" in report else []) + [f"{c} {w}" for c, *_ in cols for w in ("before",
                                                                                                        "after")]
    n = len(report["pred_before"])
    rows = []
    for i in range(min(n, max_rows)):
        r = [str(i)] + ([str(int(report["label"][i]))] if "label" in report else [])
        for _, b, a, f in cols:
            r += [format(int(report[b][i]) if f == "d" else float(report[b][i]), f),
                  format(int(report[a][i]) if f == "d" else float(report[a][i]), f)]
        rows.append(r)
    if n:
        r = ["mean"] + ([""] if "label" in report else [])
        for _, b, a, f in cols:
            r += (["", ""] if f == "d" else [format(float(np.mean(report[b])), f), format(float(np.mean(report[a])), f)])
        rows.append(r)
    widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def plot_before_after(model, original, edited, index=0, label=None, order=("total", "epistemic", "aleatoric")):
    """The original and the edited image, each with its uncertainty maps.

    Computes the signed :class:`uqattr.Saliency` maps of ``order`` (total,
    epistemic, aleatoric uncertainty) for image ``index`` of ``original`` and
    of ``edited`` and draws them with :func:`uqattr.plots.plot_edit`, titled
    with :func:`uqattr.plots.describe` (prediction and its probability; the
    edited image's first line says "(edited)").

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .attr import Saliency
    from .plots import describe, plot_edit
    from .uncertainty import uncertainty

    a, shape = _model_images(model, original, "original")
    b, shape_b = _model_images(model, edited, "edited")
    if shape != shape_b:
        raise ValueError(f"original and edited must have the same shape, got {shape} and {shape_b}")
    index = _integer(index, "index")
    if not -len(a) <= index < len(a):
        raise IndexError(f"index {index} out of range for {len(a)} images")
    pair = np.ascontiguousarray(np.concatenate([a[index:index + 1], b[index:index + 1]]))
    u = uncertainty(model, pair)
    maps = Saliency(model).attribute(pair, target=list(order))
    titles = []
    for j, name in enumerate(("original", "edited")):
        t = describe(u.pred[j], u.max_prob[j], label=label, name=None if label is not None else name)
        if label is not None and j == 1:
            first, rest = t.split("\n", 1)
            t = f"{first} (edited)\n{rest}"
        titles.append(t)
    return plot_edit(pair[0], pair[1], {k: maps[k][0] for k in order}, {k: maps[k][1] for k in order},
                     titles[0], titles[1], order=tuple(order))
