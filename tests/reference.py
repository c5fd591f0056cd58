"""An independent float64 NumPy reference of uqattr's networks.

Written from the spec grammar alone (csrc/model.h's header comment), not from
the C code, so that the tests can check the C core against it:

* ``convN`` / ``convNkK``: KxK conv (K odd, default 3) to N channels, stride 1,
  zero padding K//2, then ReLU;
* ``pool``: 2x2 max-pool, stride 2; odd heights/widths drop the last row or
  column (floor); on ties the first maximum in row-major window order wins;
* ``fcN``: dense layer to N units (input flattened in C order), ReLU after
  every fc but the last, whose N is the number of classes.

Parameters are one flat slab, layer by layer: weight (PyTorch layout: conv
``(O, I, K, K)``, dense ``(out, in)``) then bias. Everything is computed in
float64; callers pass float64 copies of the float32 values they test.
"""
from dataclasses import dataclass
import re

import numpy as np


@dataclass
class Layer:
    kind: str            # "conv", "pool" or "fc"
    name: str            # state_dict prefix: "conv1", "pool1", "fc2"
    in_shape: tuple      # (C, H, W) of the input per image; fc: (features,)
    out_shape: tuple
    k: int = 0           # conv kernel size
    relu: bool = False
    w_shape: tuple = ()
    b_shape: tuple = ()
    w_off: int = 0
    b_off: int = 0

    @property
    def n_w(self):
        return int(np.prod(self.w_shape)) if self.w_shape else 0

    @property
    def n_b(self):
        return int(np.prod(self.b_shape)) if self.b_shape else 0


_CONV = re.compile(r"conv([1-9][0-9]*)(?:k([1-9][0-9]*))?")
_FC = re.compile(r"fc([1-9][0-9]*)")


def parse(spec, in_shape):
    """The layers of ``spec`` for images of shape ``in_shape`` (C, H, W), and the
    total number of parameters. Raises ValueError on a malformed spec."""
    if not spec:
        raise ValueError("empty spec")
    c, h, w = (int(d) for d in in_shape)
    layers, off = [], 0
    counts = {"conv": 0, "pool": 0, "fc": 0}
    flat = None  # features after the first fc
    for tok in spec.split("-"):
        m_conv, m_fc = _CONV.fullmatch(tok), _FC.fullmatch(tok)
        if m_conv:
            if flat is not None:
                raise ValueError(f"conv after fc: {tok!r}")
            oc = int(m_conv.group(1))
            k = int(m_conv.group(2) or 3)
            if k % 2 == 0:
                raise ValueError(f"even kernel: {tok!r}")
            counts["conv"] += 1
            L = Layer("conv", f"conv{counts['conv']}", (c, h, w), (oc, h, w), k=k, relu=True,
                      w_shape=(oc, c, k, k), b_shape=(oc,))
            c = oc
        elif tok == "pool":
            if flat is not None:
                raise ValueError("pool after fc")
            if h < 2 or w < 2:
                raise ValueError("nothing to pool")
            counts["pool"] += 1
            L = Layer("pool", f"pool{counts['pool']}", (c, h, w), (c, h // 2, w // 2))
            h, w = h // 2, w // 2
        elif m_fc:
            n_in = c * h * w if flat is None else flat
            n_out = int(m_fc.group(1))
            counts["fc"] += 1
            L = Layer("fc", f"fc{counts['fc']}", (n_in,), (n_out,), relu=True,
                      w_shape=(n_out, n_in), b_shape=(n_out,))
            flat = n_out
        else:
            raise ValueError(f"unknown token {tok!r}")
        if L.kind != "pool":
            L.w_off = off
            L.b_off = off + L.n_w
            off += L.n_w + L.n_b
        layers.append(L)
    if layers[-1].kind != "fc" or layers[-1].out_shape[0] < 2:
        raise ValueError("spec must end with fcN, N >= 2")
    layers[-1].relu = False
    return layers, off


def unpack(layers, params):
    """Per-layer (weight, bias) views of the flat slab (None for pools)."""
    out = []
    for L in layers:
        if L.kind == "pool":
            out.append(None)
        else:
            out.append((params[L.w_off:L.w_off + L.n_w].reshape(L.w_shape),
                        params[L.b_off:L.b_off + L.n_b].reshape(L.b_shape)))
    return out


def conv2d(x, weight, bias):
    """x (B, C, H, W), weight (O, C, K, K), bias (O,): stride 1, zero padding K//2."""
    B, C, H, W = x.shape
    O, _, K, _ = weight.shape
    p = K // 2
    xp = np.zeros((B, C, H + 2 * p, W + 2 * p), dtype=np.float64)
    xp[:, :, p:p + H, p:p + W] = x
    # patches[b, c, i, j, y, x] = x[b, c, y + i - p, x + j - p] (zero outside the image)
    patches = np.empty((B, C, K, K, H, W), dtype=np.float64)
    for i in range(K):
        for j in range(K):
            patches[:, :, i, j] = xp[:, :, i:i + H, j:j + W]
    # out[b, o, y, x] = sum_{c, i, j} weight[o, c, i, j] * patches[b, c, i, j, y, x]
    out = np.tensordot(patches, weight, axes=([1, 2, 3], [1, 2, 3]))  # (B, H, W, O)
    out = out.transpose(0, 3, 1, 2)
    return out + bias[None, :, None, None]


def maxpool2(x):
    """2x2 max-pool, stride 2, floor on odd sizes, first max (row-major in the
    window: top-left, top-right, bottom-left, bottom-right) wins."""
    B, C, H, W = x.shape
    OH, OW = H // 2, W // 2
    x = x[:, :, :2 * OH, :2 * OW]
    cand = np.stack([x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2],
                     x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]])  # (4, B, C, OH, OW)
    first = np.argmax(cand, axis=0)  # numpy's argmax returns the first maximum
    return np.take_along_axis(cand, first[None], axis=0)[0]


def relu(z):
    return np.maximum(z, 0.0)


def forward_logits(spec, params64, x64, in_shape):
    """Logits (N, n_classes) of the network ``spec`` with parameters ``params64``
    (flat slab) on images ``x64`` (N, C, H, W) or (N, C*H*W), all float64."""
    layers, n_params = parse(spec, in_shape)
    params64 = np.asarray(params64, dtype=np.float64)
    if params64.shape != (n_params,):
        raise ValueError(f"params must have shape ({n_params},), got {params64.shape}")
    a = np.asarray(x64, dtype=np.float64).reshape((-1,) + tuple(in_shape))
    for L, wb in zip(layers, unpack(layers, params64)):
        if L.kind == "conv":
            a = conv2d(a, *wb)
        elif L.kind == "pool":
            a = maxpool2(a)
        else:
            w, b = wb
            a = a.reshape(a.shape[0], -1) @ w.T + b
        if L.relu:
            a = relu(a)
    return a


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def loss(spec, params64, x64, y, in_shape):
    """Mean cross-entropy of softmax(logits) against integer labels ``y``."""
    logp = log_softmax(forward_logits(spec, params64, x64, in_shape))
    y = np.asarray(y, dtype=np.int64)
    return float(-logp[np.arange(len(y)), y].mean())


def probabilities(spec, params64, x64, in_shape):
    """Softmax probabilities (N, n_classes)."""
    return softmax(forward_logits(spec, params64, x64, in_shape))
