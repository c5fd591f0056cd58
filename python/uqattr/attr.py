"""Attribution of uncertainty (and of class probabilities) to input pixels.

Captum-shaped: one class per method, each with ``.attribute(inputs, target=...)``.
Targets:

* ``"total"``, ``"aleatoric"``, ``"epistemic"`` — the ensemble's uncertainties
  (see :mod:`uqattr.uncertainty`), in nats;
* ``"max_prob"`` — the ensemble's mean probability of its predicted class
  (the "ensemble saliency map");
* an ``int`` class ``k`` or an ``(N,)`` array of classes — the ensemble's mean
  probability of that class; ``"logit:k"`` — the mean logit of class ``k``.

A list of targets returns a dict ``target -> attribution`` computed with one
forward pass per member. Gradients are analytic (backward through entropy,
softmax and the networks, in the C core). Attributions keep their sign by
default: positive pixels raise the target. ``abs=True`` gives Captum's
saliency convention (magnitudes). Outputs are float32 ``(N, 28, 28)`` for
single-channel images, ``(N, C, H, W)`` otherwise.
"""
import numpy as np

from . import _uqattr
from .baselines import baseline_images

TARGET_KINDS = {"total": 0, "aleatoric": 1, "epistemic": 2, "max_prob": 3}
UNCERTAINTY_TARGETS = ("total", "aleatoric", "epistemic")
_PROB, _LOGIT = 4, 5


def _params(model, member):
    if member is None:
        return model.params
    m = int(member)
    if not -model.members <= m < model.members:
        raise IndexError(f"member {member} out of range for an ensemble of {model.members}")
    m %= model.members
    return model.params[m:m + 1]


def _encode_target(target, n):
    """(kind, classes) for the C core, from a user-facing target."""
    if isinstance(target, str):
        if target in TARGET_KINDS:
            return TARGET_KINDS[target], None
        if target.startswith("logit:"):
            return _LOGIT, np.full(n, int(target[len("logit:"):]), dtype=np.int64)
        raise ValueError(f"unknown target {target!r}: use one of {tuple(TARGET_KINDS)}, a class index, an array "
                         "of classes, or 'logit:k'")
    if isinstance(target, (int, np.integer)):
        return _PROB, np.full(n, int(target), dtype=np.int64)
    classes = np.asarray(target)
    if classes.ndim == 1 and np.issubdtype(classes.dtype, np.integer):
        return _PROB, classes
    raise TypeError(f"target must be a name, a class index or an (N,) integer array, got {target!r}")


def _target_key(target):
    return target if isinstance(target, (str, int, np.integer)) else "classes"


def _images(model, inputs):
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"inputs must be a floating-point array (float32 preferred), got dtype {x.dtype}")
    if model.in_shape[0] == 1 and x.ndim in (2, 3) and x.shape[-2:] == model.in_shape[1:]:
        x = x.reshape((-1,) + model.in_shape)
    if x.ndim == 2 and x.shape[1] == int(np.prod(model.in_shape)):
        x = x.reshape((-1,) + model.in_shape)
    return np.ascontiguousarray(x, dtype=np.float32)


def _shape_out(model, a):
    """(N, C, H, W) -> (N, H, W) for single-channel models."""
    return a[:, 0] if model.in_shape[0] == 1 else a


def _gradients(model, x, targets, member, chunk=32):
    """Gradients (list, one (N, C, H, W) array per target) and values (list of (N,)).
    An ensemble on a GPU computes them there (uqattr.cuda), with the same values."""
    encoded = [_encode_target(t, len(x)) for t in targets]
    with model._guard.read():
        if getattr(model, "_cuda", None) is not None:
            from . import cuda
            _params(model, member)  # validates member as on the CPU
            g, v = cuda.input_gradients(model, x, encoded, member=member)
        else:
            g, v = _uqattr.input_gradients(model.arch, _params(model, member), x, encoded, in_shape=model.in_shape,
                                           chunk=chunk)
    return [g[:, i] for i in range(len(targets))], [v[:, i] for i in range(len(targets))]


def input_gradients(model, inputs, targets=UNCERTAINTY_TARGETS, member=None, chunk=32):
    """Gradients of each target with respect to the input pixels.

    Returns ``(grads, values)``: dicts keyed by target (``"classes"`` for an
    array of classes), ``grads[t]`` of shape ``(N, C, H, W)`` and ``values[t]``
    of shape ``(N,)`` (the target's value at ``inputs``). ``member=k``
    differentiates member ``k`` alone (the single-model baseline; its
    uncertainty is then its own entropy and its epistemic part is 0).
    """
    targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    g, v = _gradients(model, _images(model, inputs), targets, member, chunk)
    keys = [_target_key(t) for t in targets]
    return dict(zip(keys, g)), dict(zip(keys, v))


class _Method:
    """Common face of the attribution methods: targets in, signed maps out."""

    # methods that evaluate the model away from the input fix the class of
    # "max_prob" to the one predicted at the input itself
    _fix_predicted_class = False

    def __init__(self, model, member=None):
        self.model = model
        self.member = member

    def _resolve(self, x, targets):
        if not self._fix_predicted_class or "max_prob" not in [t for t in targets if isinstance(t, str)]:
            return targets
        model = self.model if self.member is None else self.model.member(self.member)
        pred = model.predict(x)
        return [pred if isinstance(t, str) and t == "max_prob" else t for t in targets]

    def attribute(self, inputs, target="total", abs=False, **kwargs):
        """Attribution of ``target`` for ``inputs``; a list of targets returns
        a dict ``target -> attribution``. ``abs=True`` returns magnitudes."""
        many = isinstance(target, (list, tuple))
        targets = list(target) if many else [target]
        x = _images(self.model, inputs)
        maps = self._attribute(x, self._resolve(x, targets), **kwargs)
        maps = [_shape_out(self.model, np.abs(a) if abs else a) for a in maps]
        return dict(zip([_target_key(t) for t in targets], maps)) if many else maps[0]


class Saliency(_Method):
    """Vanilla gradient of the target with respect to each pixel."""

    def _attribute(self, x, targets):
        return _gradients(self.model, x, targets, self.member)[0]


class InputXGradient(_Method):
    """Input times gradient: the first-order effect of setting a pixel to 0."""

    def _attribute(self, x, targets):
        return [x * g for g in _gradients(self.model, x, targets, self.member)[0]]


class BaselineXGradient(_Method):
    """Perturbation-aware attribution: ``g * (x - b)`` for a baseline ``b``,
    the first-order estimate of how much the target *drops* when a pixel is
    replaced by its baseline value (``-g * (b - x)``). Positive pixels are the
    ones whose removal lowers the target. ``baseline`` as in
    :class:`IntegratedGradients`: ``"blur"`` (default: a Gaussian-blurred copy,
    ``blur_sigma`` px, the replacement of :func:`uqattr.evaluate.blur_test`),
    ``"black"`` (which makes this :class:`InputXGradient`), a number or an
    array.

    Unlike the gradient alone, it weighs a pixel's sensitivity by how far the
    pixel would actually move, so it ranks pixels by their effect on the
    target rather than by where the target is steep."""

    def __init__(self, model, baseline="blur", member=None, blur_sigma=1.5):
        super().__init__(model, member)
        self.baseline, self.blur_sigma = baseline, float(blur_sigma)

    def attribute(self, inputs, target="total", abs=False, baseline=None):
        """As :meth:`Saliency.attribute`; ``baseline`` overrides the one given
        at construction for this call."""
        return super().attribute(inputs, target, abs, baseline=self.baseline if baseline is None else baseline)

    def _attribute(self, x, targets, baseline):
        b = baseline_images(x, baseline, self.blur_sigma)
        return [(x - b) * g for g in _gradients(self.model, x, targets, self.member)[0]]


def _repeat_targets(targets, start, stop, times):
    """Per-image class arrays follow their images into repeated copies."""
    return [np.repeat(np.asarray(t)[start:stop], times) if isinstance(t, np.ndarray) else t for t in targets]


class SmoothGrad(_Method):
    """Mean gradient over ``n_samples`` copies of the input with Gaussian noise
    of standard deviation ``sigma`` (in pixel units; MNIST pixels span [0, 1],
    so 0.15 is Smilkov et al.'s 15% noise level). Seeded: same seed, same map.
    ``"max_prob"`` keeps the class predicted on the clean input."""

    _fix_predicted_class = True

    def __init__(self, model, n_samples=50, sigma=0.15, seed=0, member=None, batch_images=16):
        super().__init__(model, member)
        if int(n_samples) < 1 or not sigma >= 0:
            raise ValueError(f"n_samples must be >= 1 and sigma >= 0, got {n_samples} and {sigma}")
        self.n_samples, self.sigma, self.seed = int(n_samples), float(sigma), seed
        self.batch_images = int(batch_images)

    def _attribute(self, x, targets):
        rng = np.random.default_rng(self.seed)
        out = [np.empty_like(x) for _ in targets]
        for i in range(0, len(x), self.batch_images):
            xb = x[i:i + self.batch_images]
            noisy = np.repeat(xb, self.n_samples, axis=0)
            noisy += rng.normal(0.0, self.sigma, size=noisy.shape).astype(np.float32)
            grads, _ = _gradients(self.model, noisy, _repeat_targets(targets, i, i + len(xb), self.n_samples),
                                  self.member)
            for o, g in zip(out, grads):
                o[i:i + len(xb)] = g.reshape((len(xb), self.n_samples) + g.shape[1:]).mean(axis=1)
        return out


class IntegratedGradients(_Method):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - b) * ∫ ∂f/∂x(b + α(x - b)) dα``.

    ``baseline`` is a number (0.0: black image), ``"black"``, ``"blur"`` (a
    Gaussian-blurred copy of each input, ``blur_sigma`` px; see
    :mod:`uqattr.baselines`) or an array broadcastable to the inputs, also
    given per call. ``method="gausslegendre"`` (default, as
    Captum) or ``"riemann_trapezoid"`` with ``steps`` nodes.
    ``attribute(..., return_convergence_delta=True)`` also returns
    ``Σ attributions - (f(x) - f(b))`` per image (completeness: near 0 when
    ``steps`` suffices). ``"max_prob"`` keeps the class predicted at the input."""

    _fix_predicted_class = True

    def __init__(self, model, baseline=0.0, steps=64, method="gausslegendre", member=None, batch_images=16,
                 blur_sigma=1.5):
        super().__init__(model, member)
        if int(steps) < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        if method not in ("gausslegendre", "riemann_trapezoid"):
            raise ValueError(f"method must be 'gausslegendre' or 'riemann_trapezoid', got {method!r}")
        self.baseline, self.steps, self.method = baseline, int(steps), method
        self.batch_images = int(batch_images)
        self.blur_sigma = float(blur_sigma)

    def _nodes(self):
        if self.method == "gausslegendre":
            t, w = np.polynomial.legendre.leggauss(self.steps)
            return (t + 1) / 2, w / 2
        alphas = np.linspace(0.0, 1.0, self.steps)
        w = np.full(self.steps, 1.0 / (self.steps - 1))
        w[[0, -1]] /= 2
        return alphas, w

    def attribute(self, inputs, target="total", abs=False, baseline=None, return_convergence_delta=False):
        x = _images(self.model, inputs)
        b = self.baseline if baseline is None else baseline
        base = baseline_images(x, b, self.blur_sigma)
        result = super().attribute(x, target, abs, base=base)
        if not return_convergence_delta:
            return result
        many = isinstance(target, (list, tuple))
        targets = self._resolve(x, list(target) if many else [target])
        _, fx = _gradients(self.model, x, targets, self.member)
        _, fb = _gradients(self.model, base, targets, self.member)
        maps = list(result.values()) if many else [result]
        deltas = [a.reshape(len(x), -1).sum(1) - (vx - vb) for a, vx, vb in zip(maps, fx, fb)]
        if many:
            return result, dict(zip(result.keys(), deltas))
        return result, deltas[0]

    def _attribute(self, x, targets, base):
        alphas, weights = self._nodes()
        S = len(alphas)
        out = [np.empty_like(x) for _ in targets]
        for i in range(0, len(x), self.batch_images):
            xb, bb = x[i:i + self.batch_images], base[i:i + self.batch_images]
            path = bb[:, None] + alphas.astype(np.float32)[None, :, None, None, None] * (xb - bb)[:, None]
            grads, _ = _gradients(self.model, path.reshape((-1,) + x.shape[1:]),
                                  _repeat_targets(targets, i, i + len(xb), S), self.member)
            for o, g in zip(out, grads):
                g = g.reshape((len(xb), S) + g.shape[1:]).astype(np.float64)
                avg = np.tensordot(weights, g, axes=([0], [1]))
                o[i:i + len(xb)] = ((xb - bb) * avg).astype(np.float32)
        return out
