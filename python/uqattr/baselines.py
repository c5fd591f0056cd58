"""Baseline images for attributions and perturbation tests: what a pixel is
"removed" to.

* ``"black"`` (or a number): every pixel set to that value (0 = black);
* ``"blur"``: a Gaussian-blurred copy of the image (sigma 1.5 px by default),
  the baseline of the blur test of Perez et al. (UAI 2022): a pixel replaced
  by its blurred value loses its fine detail but stays a plausible stroke;
* an array broadcastable to the images.
"""
import numpy as np

NAMED = ("black", "blur")


def gaussian_kernel(sigma, truncate=4.0):
    """The normalized 1-D Gaussian of standard deviation ``sigma`` px, cut at
    ``truncate`` sigmas (as ``scipy.ndimage.gaussian_filter``)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images, sigma=1.5):
    """Gaussian blur over the last two axes (H, W) of ``images``, separable,
    edges mirrored (scipy's "reflect"); equals
    ``scipy.ndimage.gaussian_filter(images, (0, ..., sigma, sigma))``.
    Returns float32 of the same shape; ``sigma=0`` returns a copy."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions (H, W), got shape {x.shape}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.copy()
    k = gaussian_kernel(float(sigma))
    r = len(k) // 2
    out = x.astype(np.float64)
    for axis in (-2, -1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        moved = np.moveaxis(np.pad(out, pad, mode="symmetric"), axis, -1)
        acc = np.zeros(moved.shape[:-1] + (n,))
        for j, w in enumerate(k):
            acc += w * moved[..., j:j + n]
        out = np.moveaxis(acc, -1, axis)
    return out.astype(np.float32)


def baseline_images(x, baseline, sigma=1.5):
    """The baseline for images ``x`` (N, C, H, W): a name of :data:`NAMED`, a
    number, or an array broadcastable to ``x``; float32, contiguous, finite."""
    if isinstance(baseline, str):
        if baseline == "black":
            return np.zeros_like(x, dtype=np.float32)
        if baseline == "blur":
            return gaussian_blur(x, sigma)
        raise ValueError(f"unknown baseline {baseline!r}: use one of {NAMED}, a number or an array")
    b = np.asarray(baseline, dtype=np.float32)
    try:
        b = np.broadcast_to(b, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {b.shape} does not broadcast to the inputs' shape {x.shape}") from None
    if not np.isfinite(b).all():
        raise ValueError("baseline contains NaN or Inf")
    return np.ascontiguousarray(b)
