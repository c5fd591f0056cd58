"""Deep ensembles of small CNNs, trained and run by the C core.

An :class:`Ensemble` holds ``M`` networks of one architecture. Their weights
live in one NumPy array ``params`` of shape ``(M, P)`` (float32), each row a
network's parameters layer by layer in PyTorch's layouts, so that saving,
loading and exchanging weights with PyTorch is a matter of slicing.
"""
import math
import os
import tempfile
import time

import numpy as np

from . import _uqattr
from ._locks import ReadWriteGuard

DEFAULT_ARCH = "conv32-pool-conv64-pool-fc128-fc10"
FORMAT_VERSION = 1
MNIST_SHAPE = (1, 28, 28)


def member_seed(seed, k):
    """Seed of member ``k`` of an ensemble built with ``seed``: each member gets
    its own initialization and its own data order."""
    return int(seed) * 1_000_003 + int(k)


def lr_at(step, total_steps, lr, schedule, warmup_fraction=0.05):
    """Learning rate at 0-based ``step`` of ``total_steps``.

    ``"constant"``: ``lr`` throughout. ``"cosine"`` (default recipe): linear
    warm-up from ``lr / 10`` over the first 5% of steps, then cosine decay from
    ``lr`` to 0 at the last step.
    """
    if schedule == "constant":
        return lr
    warmup = max(1, int(warmup_fraction * total_steps))
    if step < warmup:
        return lr * (0.1 + 0.9 * step / warmup)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return max(lr * 0.5 * (1.0 + math.cos(math.pi * progress)), lr * 1e-3)


class Ensemble:
    """A deep ensemble of ``members`` CNNs described by ``arch``.

    Parameters
    ----------
    arch : str
        Architecture spec, e.g. ``"conv32-pool-conv64-pool-fc128-fc10"`` (default):
        ``convN`` (3x3 conv, pad 1, ReLU; ``convNkK`` for KxK), ``pool`` (2x2
        max-pool), ``fcN`` (dense, ReLU but for the last, whose N is the number
        of classes). A malformed spec raises ``ValueError`` naming the bad token.
    members : int
        Number of networks (default 5). ``members=1`` is the single-model baseline.
    seed : int
        Member ``k`` is initialized and shuffles its data with
        ``member_seed(seed, k)``; same seed, same weights, bit for bit.
    in_shape : tuple
        Shape of one input image, ``(1, 28, 28)`` for MNIST.
    device : str
        ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``: where the weights live and the work
        runs (see :meth:`to`; a missing GPU raises ``RuntimeError``).

    Attributes
    ----------
    params : ndarray (M, P) float32
        All weights; row ``k`` is member ``k``. On a GPU, a host copy: synced from the device
        when read after training, uploaded when assigned (see :mod:`uqattr.cuda`).
    """

    def __init__(self, arch=DEFAULT_ARCH, members=5, seed=0, in_shape=MNIST_SHAPE, device="cpu", *, _params=None):
        if not isinstance(arch, str):
            raise TypeError(f"arch must be a spec string, got {type(arch).__name__}")
        members = int(members)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.arch = arch
        self.in_shape = tuple(int(d) for d in in_shape)
        self.seed = int(seed)
        info = _uqattr.arch_layers(arch, in_shape=self.in_shape)
        self.n_params = info["n_params"]
        self.n_classes = info["n_classes"]
        self.layers = info["layers"]
        if _params is not None:
            self.params = _params
        else:
            self.params = np.stack([_uqattr.init_params(arch, member_seed(seed, k), in_shape=self.in_shape)
                                    for k in range(members)])
        self.history = []
        self._guard = ReadWriteGuard()
        self.to(device)

    @property
    def members(self):
        """Number of networks in the ensemble."""
        return self._params.shape[0]

    # ---- device plumbing (the CUDA side lives in uqattr/cuda.py) ----------------------------------
    _device = "cpu"
    _cuda = None         # an _uqattr.CudaModel while the weights are on a GPU
    _host_stale = False  # the GPU's weights changed since the host copy was made

    @property
    def params(self):
        """All weights, ``(M, P)`` float32 (on a GPU: the host copy, synced on access)."""
        if self._host_stale:
            self._params = self._cuda.get_params()
            self._host_stale = False
        return self._params

    @params.setter
    def params(self, value):
        if self._cuda is not None:  # upload first: a rejected array leaves both copies as they were
            self._cuda.set_params(value)
            self._host_stale = False
        self._params = value

    @property
    def device(self):
        """Where the weights live: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
        return self._device

    def to(self, device):
        """Moves the ensemble to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``) in place and
        returns it, as ``torch.nn.Module.to``. ``"cuda"`` without a usable GPU raises
        ``RuntimeError`` saying why."""
        from . import cuda
        return cuda.move(self, device)

    def __len__(self):
        return self.members

    def __repr__(self):
        return (f"Ensemble(arch={self.arch!r}, members={self.members}, seed={self.seed}, "
                f"params={self.n_params:,} per member)")

    # ---- training ---------------------------------------------------------------

    def fit(self, x, y, epochs=3, batch_size=128, lr=3e-3, optimizer="adam", schedule="cosine",
            weight_decay=0.0, momentum=0.9, progress=True):
        """Train every member on ``(x, y)``; returns ``self``.

        The default recipe is Adam with a cosine learning-rate schedule (peak
        ``lr = 3e-3`` after a 5% linear warm-up, decaying to 0), batch 128,
        3 epochs; each member sees the data in its own seeded order.
        ``schedule="constant"`` trains at a fixed ``lr``; ``optimizer="sgd"``
        uses SGD with ``momentum``.

        Ctrl-C stops training between two minibatch steps with a
        ``KeyboardInterrupt``; the weights then hold the last completed step.
        A per-member, per-epoch record (loss, accuracy, seconds) is appended to
        ``self.history``.
        """
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        epochs, batch_size = int(epochs), int(batch_size)
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        x, y = self._check_xy(x, y)
        if self._cuda is not None:  # device plumbing: lockstep training on the GPU
            from . import cuda
            return cuda.fit(self, x, y, epochs, batch_size, lr, optimizer, schedule, weight_decay, momentum, progress)
        n = x.shape[0]
        steps_per_epoch = math.ceil(n / batch_size)
        total = steps_per_epoch * epochs
        trainer = _uqattr.Trainer(self.arch, min(batch_size, n), optimizer=optimizer, weight_decay=weight_decay,
                                  momentum=momentum, in_shape=self.in_shape)
        bar = _progress(total * self.members, "training", progress)
        try:
            with self._guard.write():
                for k in range(self.members):
                    params = self.params[k]
                    m = np.zeros_like(params)
                    v = np.zeros_like(params)
                    step = 0
                    for epoch in range(epochs):
                        order = _uqattr.permutation(n, member_seed(self.seed, k), stream=epoch + 1)
                        loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
                        for i in range(0, n, batch_size):
                            idx = order[i:i + batch_size]
                            rate = lr_at(step, total, lr, schedule)
                            step += 1
                            batch_loss, batch_correct = trainer.step(params, m, v, step, x[idx], y[idx], rate)
                            loss_sum += batch_loss
                            correct += batch_correct
                            seen += len(idx)
                            if bar is not None:
                                bar.update(1)
                                if step % 20 == 0 or i + batch_size >= n:
                                    bar.set_postfix(member=f"{k + 1}/{self.members}", epoch=epoch + 1,
                                                    loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
                        self.history.append({"member": k, "epoch": epoch + 1, "loss": loss_sum / seen,
                                             "accuracy": correct / seen, "seconds": time.perf_counter() - t0})
        finally:
            if bar is not None:
                bar.close()
        return self

    def _check_xy(self, x, y):
        x = np.asarray(x)
        if x.ndim == 3 and self.in_shape[0] == 1:
            x = x[:, None]
        x = np.ascontiguousarray(x, dtype=np.float32) if np.issubdtype(x.dtype, np.floating) else x
        y = np.asarray(y)
        if x.shape[:1] != y.shape[:1]:
            raise ValueError(f"x has {x.shape[0] if x.ndim else 0} images but y has "
                             f"{y.shape[0] if y.ndim else 0} labels")
        # all of it checked up front, so that a bad image or label fails fit before any weight changes
        return _uqattr.check_data(self.arch, x, y, in_shape=self.in_shape)

    # ---- prediction -------------------------------------------------------------

    def predict_proba(self, x, batch_size=256):
        """Member probabilities, an ``(M, N, C)`` float32 array.

        ``x`` is ``(N, 1, 28, 28)`` or ``(N, 784)`` (a single ``(28, 28)``
        image or ``(N, 28, 28)`` stack is accepted too), floating point,
        finite."""
        with self._guard.read():
            if self._cuda is not None:  # device plumbing
                from . import cuda
                return cuda.predict(self, self._images(x), False, batch_size)
            return _uqattr.predict(self.arch, self.params, self._images(x), in_shape=self.in_shape,
                                   batch_size=batch_size)

    def predict_logits(self, x, batch_size=256):
        """Member logits, an ``(M, N, C)`` float32 array."""
        with self._guard.read():
            if self._cuda is not None:  # device plumbing
                from . import cuda
                return cuda.predict(self, self._images(x), True, batch_size)
            return _uqattr.predict(self.arch, self.params, self._images(x), logits=True, in_shape=self.in_shape,
                                   batch_size=batch_size)

    def predict(self, x, batch_size=256):
        """Predicted class of the ensemble (argmax of the mean probability), ``(N,)`` int64."""
        return self.predict_proba(x, batch_size).mean(axis=0).argmax(axis=1)

    def _images(self, x):
        """Adds the channel axis to (28, 28) / (N, 28, 28) input; the C
        boundary validates everything else."""
        x = np.asarray(x)
        if self.in_shape[0] == 1 and x.shape[-2:] == self.in_shape[1:] and x.ndim in (2, 3):
            x = x.reshape((-1,) + self.in_shape)
        return x

    # ---- members, weights, files ------------------------------------------------

    def member(self, k):
        """Member ``k`` as a one-member :class:`Ensemble` (the single-model
        baseline). Its ``params`` is a view: it shares weights with ``self``, and
        its training guard (fitting one while the other predicts raises)."""
        k = int(k)
        if not -self.members <= k < self.members:
            raise IndexError(f"member {k} out of range for an ensemble of {self.members}")
        k %= self.members
        out = Ensemble(self.arch, 1, member_seed(self.seed, k), self.in_shape, self.device,
                       _params=self.params[k:k + 1])
        out._guard = self._guard  # the same weights: training either one excludes predicting with both
        return out

    def state_dicts(self):
        """One dict per member with PyTorch ``state_dict`` names and layouts
        (``conv1.weight`` (O, I, kh, kw), ``fc1.weight`` (out, in), ...);
        the arrays are views into ``params``."""
        out = []
        for k in range(self.members):
            d = {}
            for layer in self.layers:
                if layer["kind"] == "pool":
                    continue
                for part in ("weight", "bias"):
                    off, shape = layer[f"{part}_offset"], layer[f"{part}_shape"]
                    d[f"{layer['name']}.{part}"] = self.params[k, off:off + int(np.prod(shape))].reshape(shape)
            out.append(d)
        return out

    @classmethod
    def from_state_dicts(cls, state_dicts, arch=DEFAULT_ARCH, in_shape=MNIST_SHAPE, seed=0):
        """Builds an ensemble from per-member dicts of arrays named as
        :meth:`state_dicts` names them (e.g. weights trained in PyTorch,
        converted with ``{k: v.numpy() for k, v in model.state_dict().items()}``).
        Raises ``ValueError`` naming a missing key, a wrong shape or
        non-finite values."""
        state_dicts = list(state_dicts)
        if not state_dicts:
            raise ValueError("from_state_dicts needs at least one state dict")
        if not isinstance(arch, str):
            raise TypeError(f"arch must be a spec string, got {type(arch).__name__}")
        # Everything is checked before any weight array is made, so that an arch / in_shape claiming
        # a huge network (e.g. from a model file) allocates nothing beyond the arrays given.
        info = _uqattr.arch_layers(arch, in_shape=tuple(int(d) for d in in_shape))
        layers = info["layers"]
        for k, sd in enumerate(state_dicts):
            for layer in layers:
                if layer["kind"] == "pool":
                    continue
                for part in ("weight", "bias"):
                    key = f"{layer['name']}.{part}"
                    if key not in sd:
                        raise ValueError(f"state dict of member {k} has no '{key}' (arch {arch!r} needs "
                                         f"{', '.join(_expected_keys(layers))})")
                    value = np.asarray(sd[key])
                    shape = tuple(layer[f"{part}_shape"])
                    if value.shape != shape:
                        raise ValueError(f"state dict of member {k}: '{key}' has shape {value.shape}, "
                                         f"expected {shape}")
                    if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
                        raise ValueError(f"state dict of member {k}: '{key}' must hold finite floats")
        params = np.empty((len(state_dicts), info["n_params"]), dtype=np.float32)
        for k, sd in enumerate(state_dicts):
            for layer in layers:
                if layer["kind"] == "pool":
                    continue
                for part in ("weight", "bias"):
                    value = np.asarray(sd[f"{layer['name']}.{part}"])
                    off = layer[f"{part}_offset"]
                    params[k, off:off + value.size] = value.ravel()
        return cls(arch, len(state_dicts), seed, in_shape, _params=params)

    def save(self, path):
        """Writes the ensemble to ``path`` (``.npz``): per member the
        ``state_dict`` arrays as ``member{k}.{name}``, plus ``arch``,
        ``in_shape``, ``seed`` and ``format_version``. The file is written to
        a temporary name and renamed, so an interrupted save never leaves a
        half-written model (an existing file stays intact)."""
        path = os.fspath(path)
        arrays = {"format_version": np.array(FORMAT_VERSION), "arch": np.array(self.arch),
                  "in_shape": np.array(self.in_shape), "seed": np.array(self.seed)}
        with self._guard.read():
            for k, sd in enumerate(self.state_dicts()):
                arrays.update({f"member{k}.{name}": value for name, value in sd.items()})
            _atomic_savez(path, arrays)
        return path

    @classmethod
    def load(cls, path):
        """Reads an ensemble written by :meth:`save`. A missing file raises
        ``FileNotFoundError``; a corrupt file, a missing key, a wrong shape or a
        newer format version raise ``ValueError`` saying which."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model file at {path!r}")
        try:
            _check_npz_sizes(path)
            with np.load(path, allow_pickle=False) as f:
                data = {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError, KeyError) as e:
            raise ValueError(f"{path!r} is not a readable uqattr model file ({e})") from e
        except Exception as e:  # zipfile.BadZipFile, zlib.error, ...
            raise ValueError(f"{path!r} is not a readable uqattr model file ({type(e).__name__}: {e})") from e
        for key in ("format_version", "arch"):
            if key not in data:
                raise ValueError(f"{path!r} has no '{key}' entry: not a uqattr model file")
        version = _scalar_entry(path, data, "format_version", int)
        if version > FORMAT_VERSION:
            raise ValueError(f"{path!r} was written by a newer uqattr (format version {version}; this "
                             f"version reads up to {FORMAT_VERSION}): upgrade uqattr to load it")
        if data["arch"].ndim != 0 or data["arch"].dtype.kind != "U":
            raise ValueError(f"{path!r}: 'arch' must be a string, got a {data['arch'].dtype} array of shape "
                             f"{data['arch'].shape}")
        arch = str(data["arch"])
        in_shape = MNIST_SHAPE
        if "in_shape" in data:
            v = data["in_shape"]
            if v.shape != (3,) or v.dtype.kind not in "iu":
                raise ValueError(f"{path!r}: 'in_shape' must be 3 integers (C, H, W), got a {v.dtype} array of "
                                 f"shape {v.shape}")
            in_shape = tuple(int(d) for d in v)
        seed = _scalar_entry(path, data, "seed", int) if "seed" in data else 0
        try:
            members = sorted({int(name.split(".")[0][len("member"):]) for name in data if name.startswith("member")})
        except ValueError:
            raise ValueError(f"{path!r}: entries named member<k>.<name> need an integer k; got "
                             f"{sorted(n for n in data if n.startswith('member'))[:5]}") from None
        if not members:
            raise ValueError(f"{path!r} holds no member weights")
        if members != list(range(len(members))):
            raise ValueError(f"{path!r}: member indices {members} are not 0..{len(members) - 1}")
        dicts = [{name.split(".", 1)[1]: value for name, value in data.items() if name.startswith(f"member{k}.")}
                 for k in members]
        try:
            return cls.from_state_dicts(dicts, arch=arch, in_shape=in_shape, seed=seed)
        except (ValueError, TypeError, OverflowError) as e:  # Overflow: an in_shape beyond a C int
            raise ValueError(f"{path!r}: {e}") from e


def _scalar_entry(path, data, key, kind):
    """data[key] as one number of type kind, else ValueError naming the entry."""
    v = data[key]
    if v.ndim != 0 or v.dtype.kind not in "iub":
        raise ValueError(f"{path!r}: '{key}' must be one integer, got a {v.dtype} array of shape {v.shape}")
    return kind(v)


def _check_npz_sizes(path):
    """ValueError if an array in the .npz file declares more data than the file holds: numpy would
    allocate the declared size before finding the file short (a lying header, a huge allocation)."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return  # np.load says what it is not
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                need = math.prod(shape) * dtype.itemsize
                have = info.file_size - f.tell()
                if need > have:
                    raise ValueError(f"entry {info.filename!r} declares shape {shape} of {dtype} ({need} bytes) "
                                     f"but holds {have} bytes")


def _expected_keys(layers):
    return [f"{layer['name']}.{part}" for layer in layers if layer["kind"] != "pool" for part in ("weight", "bias")]


def _atomic_savez(path, arrays):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True)
