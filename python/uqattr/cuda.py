"""GPU support: device strings, availability, and the CUDA side of :class:`~uqattr.Ensemble`.

Devices are named as in PyTorch: ``"cpu"`` (the default), ``"cuda"`` (device 0) or
``"cuda:N"``; a ``torch.device`` works too. ::

    uqattr.cuda_is_available()          # False without a driver and a GPU, or in a CPU-only build
    model = Ensemble(members=5, device="cuda")   # or Ensemble(...).to("cuda")
    model.fit(x, y)                     # all members train in lockstep on the GPU
    model.predict_proba(x)              # NumPy in, NumPy out; weights stay on the GPU
    model.to("cpu")                     # weights back to the host

On a GPU the weights live in device memory between calls. ``model.params`` is then a host
copy: downloaded when read after the weights changed on the device (training), uploaded when
assigned (``model.params = new``). Writing *into* that copy (``model.params[0] *= 2``) does not
reach the GPU; assign the array back to upload it. ``save()`` and ``state_dicts()`` read the
synced copy, so saved models are the same files whatever the device.
"""
import math
import time

import numpy as np

from . import _uqattr

#: lockstep steps enqueued per call while training (the progress bar moves this often)
STEPS_PER_CALL = 32


def is_compiled():
    """True if this build of uqattr has the CUDA backend (nvcc was found at build time)."""
    return hasattr(_uqattr, "CudaModel")


def device_count():
    """Number of usable CUDA devices (0 without a driver or GPU, or in a CPU-only build)."""
    return _uqattr.cuda_probe()[0]


def is_available():
    """True if ``device="cuda"`` can be used: the backend is built in and a GPU is usable."""
    return device_count() > 0


def get_device_name(index=0):
    """Name of CUDA device ``index``, e.g. ``"NVIDIA H200"``."""
    _require(index)
    return _uqattr.cuda_device_info(int(index))["name"]


def parse_device(device):
    """``("cpu", None)`` or ``("cuda", index)`` from ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a
    ``torch.device``); anything else raises ``ValueError``."""
    s = str(device).strip().lower()
    if s == "cpu":
        return "cpu", None
    if s == "cuda":
        return "cuda", 0
    if s.startswith("cuda:") and s[5:].isdigit():
        return "cuda", int(s[5:])
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


def _require(index):
    """Raises RuntimeError saying why CUDA device ``index`` cannot be used."""
    count, why = _uqattr.cuda_probe()
    if not is_compiled():
        raise RuntimeError(f"device='cuda' is not available: {why}")
    if count == 0:
        raise RuntimeError(f"device='cuda' requested but no CUDA device is usable ({why}); "
                           "check the NVIDIA driver and `nvidia-smi`, or use device='cpu'")
    if not 0 <= int(index) < count:
        raise RuntimeError(f"CUDA device {index} requested but only {count} device(s) exist")


# ---- the Ensemble's device plumbing --------------------------------------------------------------

def move(model, device):
    """``model.to(device)``: moves the weights, returns ``model``."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if model._cuda is not None:
            with model._guard.write():
                host = model.params  # synced from the device
                model._cuda, model._device, model._host_stale = None, "cpu", False
                model._params = host
        return model
    _require(index)
    name = str(device).strip().lower()
    if model._cuda is not None and model._cuda.device == index:
        model._device = name
        return model
    with model._guard.write():
        host = model.params
        model._cuda = _uqattr.CudaModel(model.arch, host, in_shape=model.in_shape, device=index)
        model._device, model._host_stale = name, False
    return model


def _chunk(batch_size):
    """The device chunk for a CPU-style ``batch_size``: 0 (sized to the device's memory) unless
    the caller asked for more images at a time."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return 0 if batch_size <= 4096 else batch_size


def predict(model, x, logits, batch_size):
    """Member probabilities (or logits) (M, N, C) from the GPU; ``batch_size`` is a lower
    bound on the chunk size (chunks are sized to the device's memory)."""
    return model._cuda.predict(x, logits=logits, batch_size=_chunk(batch_size))


def decompose(model, x, batch_size):
    """The uncertainty decomposition computed on the GPU: a dict of ``member_probs``,
    ``mean_probs``, ``pred``, ``max_prob``, ``total``, ``aleatoric``, ``epistemic`` (nats),
    the same keys and values as ``_uqattr.decompose`` of the member probabilities."""
    return model._cuda.decompose(x, batch_size=_chunk(batch_size))


def input_gradients(model, x, encoded, member=None, chunk=0):
    """``_uqattr.input_gradients`` on the GPU: (grads (N, T, C, H, W), values (N, T)) for
    targets ``encoded`` as attr.py encodes them; ``member=k`` differentiates member k alone
    (on the device, with that member's weights). ``chunk`` 0 sizes chunks to the device."""
    return model._cuda.input_gradients(x, encoded, chunk=int(chunk), member=None if member is None else int(member))


def fit(model, x, y, epochs, batch_size, lr, optimizer, schedule, weight_decay, momentum, progress):
    """``Ensemble.fit`` on the GPU, same recipe as on the CPU (each member's seeded order, the
    same learning-rate schedule, the optimizer of optim.c), but all members in lockstep with
    the training set resident on the device and no host synchronization inside an epoch."""
    from .ensemble import _progress, lr_at, member_seed

    if not lr > 0:  # as the CPU Trainer says at its first step
        raise ValueError(f"lr must be > 0, got {lr:g}")
    dev, M, n = model._cuda, model.members, x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    bar = _progress(total * M, "training", progress)
    try:
        with model._guard.write():
            dev.set_optimizer(optimizer, momentum=momentum, weight_decay=weight_decay)
            dev.set_data(x, y)
            model._host_stale = True
            step = 0
            for epoch in range(epochs):
                dev.set_orders(np.stack([_uqattr.permutation(n, member_seed(model.seed, k), stream=epoch + 1)
                                         for k in range(M)]))
                t0 = time.perf_counter()
                for first in range(0, steps_per_epoch, STEPS_PER_CALL):
                    count = min(STEPS_PER_CALL, steps_per_epoch - first)
                    lrs = np.array([lr_at(step + i, total, lr, schedule) for i in range(count)], dtype=np.float32)
                    dev.train_steps(first, lrs, batch_size, step + 1)
                    step += count
                    if bar is not None:
                        bar.update(count * M)
                loss_sum, correct = dev.epoch_stats()
                seconds = time.perf_counter() - t0
                for k in range(M):
                    model.history.append({"member": k, "epoch": epoch + 1, "loss": float(loss_sum[k]) / n,
                                          "accuracy": int(correct[k]) / n, "seconds": seconds})
                if bar is not None:
                    bar.set_postfix(members=M, epoch=epoch + 1, loss=f"{loss_sum.mean() / n:.4f}",
                                    acc=f"{correct.mean() / n:.4f}")
    finally:
        if bar is not None:
            bar.close()
    return model
