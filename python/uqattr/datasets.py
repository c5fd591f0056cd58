"""Loaders for the MNIST-like image datasets used by uqattr.

Every loader returns ``(x, y)``: ``x`` is float32 of shape ``(N, 1, 28, 28)`` with values in
``[0, 1]``, bright (1) strokes on a dark (0) background as in MNIST, upright; ``y`` is int64 of
shape ``(N,)``.

Datasets (see :data:`DATASETS`, :func:`available`):

==================  ===========================  ================================================
name                splits                       labels
==================  ===========================  ================================================
``mnist``           train, test                  0..9
``fashion-mnist``   train, test                  0..9
``kmnist``          train, test                  0..9 (the shared copy holds only ``test``)
``emnist-letters``  train, test                  **1-based** as stored, 1 = a/A ... 26 = z/Z
``omniglot``        evaluation (alias ``test``),  global character id 1..1623 (file prefix)
                    background
==================  ===========================  ================================================

Files are looked up under ``root/<folder>/`` where ``root`` is the ``root`` argument, else the
environment variable ``UQATTR_DATA``, else ``$XDG_CACHE_HOME/uqattr/datasets`` (default
``~/.cache/uqattr/datasets``). Files are checked against known sha256 digests (``verify=True``)
and may be fetched from the canonical sources with ``download=True`` (never implicitly).

New datasets slot in by adding a :class:`DatasetSpec` to :data:`DATASETS`; its ``format`` selects
a reader in ``_READERS`` (``"idx"`` for gzipped IDX image/label pairs, ``"omniglot"`` for zips of
Omniglot PNGs).

This module depends only on the standard library and NumPy; Pillow is imported lazily to decode
the Omniglot PNGs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "FileSpec",
    "SplitSpec",
    "available",
    "clear_cache",
    "data_root",
    "download_file",
    "load",
    "load_emnist_letters",
    "load_fashion_mnist",
    "load_kmnist",
    "load_mnist",
    "load_omniglot",
    "read_idx_images",
    "read_idx_labels",
    "read_omniglot_zip",
]

ENV_VAR = "UQATTR_DATA"
IMAGE_SIZE = 28
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension
_CHUNK = 1 << 22


class DatasetError(ValueError):
    """A dataset file is corrupt, malformed or fails its checksum."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One data file of a split.

    Attributes
    ----------
    filename : str
        File name inside the dataset folder.
    sha256 : tuple of str
        Accepted sha256 digests of the file as stored (``.gz`` / ``.zip`` bytes). Empty if none
        is known, in which case ``verify=True`` refuses the file.
    content_sha256 : tuple of str
        Accepted sha256 digests of the *decompressed* content of a ``.gz`` file. Used when the
        file digest is not accepted: different gzip containers of the same data (e.g. the
        original MNIST train-images ``.gz`` versus the recompressed shared copy) then still verify.
    url : str or None
        Canonical download URL, or None if the file cannot be downloaded on its own.
    """

    filename: str
    sha256: Tuple[str, ...] = ()
    content_sha256: Tuple[str, ...] = ()
    url: Optional[str] = None


@dataclass(frozen=True)
class SplitSpec:
    """Files of one split, keyed by role (``"images"``, ``"labels"`` or ``"zip0"``, ...)."""

    files: Mapping[str, FileSpec]
    label_range: Tuple[int, int]  # inclusive bounds of valid labels


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry of a dataset.

    Attributes
    ----------
    name : str
        Public name, the key in :data:`DATASETS`.
    folder : str
        Folder under the data root holding the files.
    format : str
        Reader key: ``"idx"`` or ``"omniglot"``.
    splits : mapping of str to SplitSpec
    aliases : mapping of str to str
        Alternative split names, e.g. ``{"test": "evaluation"}``.
    default_split : str
    transpose : bool
        Images are stored transposed (EMNIST) and are transposed back on loading.
    note : str
        Shown in "file not found" errors (what the shared copy holds, how to obtain files).
    download_note : str
        Why ``download=True`` cannot fetch files that have no ``url``, and what to do instead.
    class_names : mapping of int to str
        Optional human-readable class names keyed by label.
    """

    name: str
    folder: str
    format: str
    splits: Mapping[str, SplitSpec]
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_split: str = "test"
    transpose: bool = False
    note: str = ""
    download_note: str = ""
    class_names: Mapping[int, str] = field(default_factory=dict)

    def resolve_split(self, split: Optional[str]) -> str:
        """Canonical split name for ``split`` (None -> default); ValueError if unknown."""
        if split is None:
            return self.default_split
        if split in self.splits:
            return split
        if split in self.aliases:
            return self.aliases[split]
        valid = sorted(self.splits) + [f"{a} (= {c})" for a, c in sorted(self.aliases.items())]
        raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; "
                         f"valid: {', '.join(valid)}")


def _idx_split(prefix: str, base_url: Optional[str], label_range, images_sha=(), labels_sha=(),
               images_content=(), labels_content=()) -> SplitSpec:
    def fs(kind, sha, content):
        fn = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
        return FileSpec(fn, tuple(sha), tuple(content), base_url + fn if base_url else None)

    return SplitSpec({"images": fs("images", images_sha, images_content),
                      "labels": fs("labels", labels_sha, labels_content)}, label_range)


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
_EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"

# Digests: the shared copy's files and the decompressed IDX contents, as listed in
# datasets/MANIFEST.md. Upstream files whose bytes differ from the shared copy are accepted
# through ``content_sha256`` where MANIFEST gives one; no other upstream digest is recorded here.
DATASETS: Dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="mnist", format="idx",
        splits={
            "train": _idx_split(
                "train", _MNIST_URL, (0, 9),
                ["0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971"],
                ["3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"],
                ["ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"],
                ["65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"]),
            "test": _idx_split(
                "t10k", _MNIST_URL, (0, 9),
                ["8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"],
                ["f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"],
                ["0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"],
                ["ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"]),
        },
        class_names={i: str(i) for i in range(10)},
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", folder="fashion-mnist", format="idx",
        splits={
            "train": _idx_split(
                "train", _FASHION_URL, (0, 9),
                ["b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"],
                ["0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"],
                ["c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"],
                ["bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"]),
            "test": _idx_split(
                "t10k", _FASHION_URL, (0, 9),
                ["cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"],
                ["8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"],
                ["5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"],
                ["0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"]),
        },
        class_names=dict(enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])),
    ),
    "kmnist": DatasetSpec(
        name="kmnist", folder="kmnist", format="idx",
        splits={
            # No digest of the train files is known offline: verify=True refuses them.
            "train": _idx_split("train", _KMNIST_URL, (0, 9)),
            "test": _idx_split(
                "t10k", _KMNIST_URL, (0, 9),
                ["edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"],
                ["20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"],
                ["76fbd229ce87db80dd281af5e6670de4ad0e42fb30a7bd643972994c47c1f42e"],
                ["a11dc742be8e781a40a92f53d6a4957e7b7d36df2faa097659131ebfd8fd60c6"]),
        },
        note="The project's shared copy holds only the KMNIST test split; the train split can be "
             "fetched with download=True (no checksum is known for it, so also pass verify=False).",
        class_names=dict(enumerate("おきすつなはまやれを")),
    ),
    "emnist-letters": DatasetSpec(
        name="emnist-letters", folder="emnist", format="idx", transpose=True,
        splits={
            "train": _idx_split("emnist-letters-train", None, (1, 26)),
            # The shared copy is the first 14,800 of the 20,800 official test records (a..s).
            "test": _idx_split(
                "emnist-letters-test", None, (1, 26),
                ["4cbde0426269fb431e4873d25b66e82296309cd597da0ea78ef90e304aa76434"],
                ["d7c4e40fcf7be91a37216976e7602ec5e41d44f5c03b1f6d106f7043379302d6"],
                ["1d86b338cbf52388ca7ab46041a33a94e55b221ff9c3c3097a206e52ce3bfb06"],
                ["4118ec990e27517e3d750ebe9b2044792debc6b0dcddc5c4bc58faddbe968bc2"]),
        },
        note="The project's shared copy holds the first 14,800 records of the EMNIST Letters "
             "test split (letters a..s only).",
        download_note=f"EMNIST is distributed only as one zip of all splits ({_EMNIST_URL}, "
                      "about 560 MB); download it yourself and copy gzip/emnist-letters-*.gz "
                      "into the emnist/ folder (the complete official files differ from the "
                      "shared subset, so load them with verify=False).",
        class_names={i: chr(ord("a") + i - 1) for i in range(1, 27)},
    ),
    "omniglot": DatasetSpec(
        name="omniglot", folder="omniglot", format="omniglot",
        splits={
            "evaluation": SplitSpec({"zip0": FileSpec(
                "images_evaluation.zip",
                ("6f0410897c5b2eb3c7fa7d630db68e1f7efd1cf44e5a0d9f33a6614c1c44ddff",),
                (), _OMNIGLOT_URL + "images_evaluation.zip")}, (965, 1623)),
            "background": SplitSpec({
                "zip0": FileSpec(
                    "images_background_small1.zip",
                    ("f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",),
                    (), _OMNIGLOT_URL + "images_background_small1.zip"),
                "zip1": FileSpec(
                    "images_background_small2.zip",
                    ("3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",),
                    (), _OMNIGLOT_URL + "images_background_small2.zip"),
            }, (1, 964)),
        },
        # The shared images_evaluation.zip was rebuilt pixel-exactly from the canonical one but
        # its bytes differ: a freshly downloaded canonical zip does not match the recorded sha256
        # and must be loaded with verify=False.
        aliases={"test": "evaluation"},
        default_split="evaluation",
    ),
}


def available() -> List[str]:
    """Names of the registered datasets, in registry order."""
    return list(DATASETS)


def _get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


# --------------------------------------------------------------------------------------------
# Paths, checksums, download
# --------------------------------------------------------------------------------------------


def data_root(root=None) -> Path:
    """Resolve the data root: ``root``, else ``$UQATTR_DATA``, else the user cache folder.

    The cache folder is ``$XDG_CACHE_HOME/uqattr/datasets`` or ``~/.cache/uqattr/datasets``.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "uqattr" / "datasets"


def _root_origin(root) -> str:
    if root is not None:
        return "from the root argument"
    if os.environ.get(ENV_VAR):
        return f"from ${ENV_VAR}"
    return f"the default cache folder (${ENV_VAR} is not set)"


def _signature(path: Path) -> Tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(sig: Tuple[str, int, int]) -> str:
    h = hashlib.sha256()
    with open(sig[0], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _content_sha256(sig: Tuple[str, int, int]) -> Optional[str]:
    h = hashlib.sha256()
    try:
        with gzip.open(sig[0], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _verify(path: Path, fspec: FileSpec) -> None:
    """Raise DatasetError unless ``path`` matches one of the accepted digests of ``fspec``.

    Digests are cached per (real path, size, mtime) so repeated loads do not rehash.
    """
    if not fspec.sha256 and not fspec.content_sha256:
        raise DatasetError(
            f"{path}: no sha256 is known for {fspec.filename}, so it cannot be verified; "
            "pass verify=False to load it unverified")
    sig = _signature(path)
    actual = _file_sha256(sig)
    if actual in fspec.sha256:
        return
    if fspec.content_sha256 and _content_sha256(sig) in fspec.content_sha256:
        return
    expected = " or ".join(fspec.sha256
                           + tuple(f"{c} (decompressed)" for c in fspec.content_sha256))
    raise DatasetError(
        f"{path}: sha256 mismatch: expected {expected}, got {actual}. The file is corrupt or a "
        "different version; delete it and re-download, point UQATTR_DATA at a good copy, or "
        "pass verify=False to skip the check")


def _atomic_download(url: str, dest: Path, check: Optional[Callable[[Path], None]] = None,
                     timeout: float = 60.0) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            try:
                check(Path(tmp))
            except DatasetError as exc:
                raise DatasetError(f"{dest}: download from {url} failed verification, nothing "
                                   f"written ({exc})") from None
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def download_file(url: str, dest, *, sha256: Tuple[str, ...] = (), timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically.

    The data go to a temporary file in ``dest``'s folder, which is moved over ``dest`` with
    :func:`os.replace` only after the download completed (and, if ``sha256`` is given, its digest
    is one of ``sha256``); on any failure the temporary file is removed and ``dest`` is untouched.

    Parameters
    ----------
    url : str
        Any URL urllib can open (``https://``, ``http://``, ``file://``).
    dest : path-like
        Final file path; parent folders are created.
    sha256 : tuple of str, optional
        Accepted digests; empty means no check.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.
    """
    check = None
    if sha256:
        check = functools.partial(_verify, fspec=FileSpec(Path(dest).name, tuple(sha256)))
    return _atomic_download(url, Path(dest), check, timeout)


def _resolve_files(spec: DatasetSpec, split: str, root, verify: bool,
                   download: bool) -> Dict[str, Path]:
    base = data_root(root)
    folder = base / spec.folder
    sspec = spec.splits[split]
    paths = {}
    for role, fspec in sspec.files.items():
        path = folder / fspec.filename
        if not path.is_file():
            if download and fspec.url:
                if verify and not (fspec.sha256 or fspec.content_sha256):
                    raise DatasetError(
                        f"{path}: no sha256 is known for {fspec.filename}, so a download from "
                        f"{fspec.url} cannot be verified; pass verify=False together with "
                        "download=True")
                _atomic_download(fspec.url, path,
                                 functools.partial(_verify, fspec=fspec) if verify else None)
            else:
                what = (f"dataset folder {folder} does not exist" if not folder.is_dir()
                        else f"file {path} not found")
                hint = (f"Set {ENV_VAR} to the folder holding {spec.folder}/ (and the other "
                        f"dataset folders) or pass the root argument")
                parts = [f"{what} ({spec.name} {split}; data root {base}, {_root_origin(root)})."]
                if fspec.url:
                    parts.append(f"{hint}, or pass download=True to fetch it from {fspec.url}.")
                else:
                    parts.append(hint + ".")
                    if spec.download_note:
                        parts.append(f"download=True is not supported: {spec.download_note}")
                if spec.note:
                    parts.append(spec.note)
                raise FileNotFoundError(" ".join(parts))
        if verify:
            _verify(path, fspec)
        paths[role] = path
    return paths


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


def _read_idx(path, magic: int, dims: int) -> Tuple[int, bytes]:
    """Return (count, payload) of a gzipped IDX file, checking header and payload length.

    The payload is read in chunks up to the length implied by the header, plus one byte to
    detect trailing data, so a header claiming a huge count never causes a huge allocation.
    """
    path = Path(path)
    raw = open(path, "rb")  # FileNotFoundError propagates unchanged
    try:
        with raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
            head = f.read(4 + 4 * dims)
            if len(head) < 4 + 4 * dims:
                raise DatasetError(f"{path}: truncated IDX header ({len(head)} bytes)")
            got_magic, *shape = struct.unpack(f">I{dims}I", head)
            if got_magic != magic:
                raise DatasetError(f"{path}: bad IDX magic {got_magic} (expected {magic}); "
                                   "wrong file or corrupt")
            count, item_shape = shape[0], shape[1:]
            if dims == 3 and tuple(item_shape) != (IMAGE_SIZE, IMAGE_SIZE):
                raise DatasetError(f"{path}: images are {item_shape[0]}x{item_shape[1]}, "
                                   f"expected {IMAGE_SIZE}x{IMAGE_SIZE}")
            expected = count * int(np.prod(item_shape, dtype=np.int64))
            chunks, got = [], 0
            while got <= expected:
                chunk = f.read(min(_CHUNK, expected + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: corrupt or not a gzip file ({type(exc).__name__}: {exc}); "
                           "delete it and re-download or fix the data root") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if got < expected:
        raise DatasetError(f"{path}: truncated: header says {count} items ({expected} bytes of "
                           f"data) but only {got} bytes follow")
    if got > expected:
        raise DatasetError(f"{path}: oversized: data continue past the {count} items the header "
                           "declares")
    return count, b"".join(chunks)


def read_idx_images(path) -> np.ndarray:
    """Read a gzipped IDX image file (magic 2051, 28x28 uint8).

    Parameters
    ----------
    path : path-like
        The ``*-images-idx3-ubyte.gz`` file.

    Returns
    -------
    numpy.ndarray
        Read-only uint8 array of shape ``(N, 28, 28)``, exactly as stored (no transposition).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DatasetError
        Not gzip / corrupt, wrong magic, not 28x28, payload shorter or longer than the header says.
    """
    count, data = _read_idx(path, _IDX_IMAGES_MAGIC, 3)
    return np.frombuffer(data, dtype=np.uint8).reshape(count, IMAGE_SIZE, IMAGE_SIZE)


def read_idx_labels(path, label_range: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read a gzipped IDX label file (magic 2049, uint8).

    Parameters
    ----------
    path : path-like
        The ``*-labels-idx1-ubyte.gz`` file.
    label_range : (int, int), optional
        Inclusive bounds; labels outside raise DatasetError.

    Returns
    -------
    numpy.ndarray
        Read-only uint8 array of shape ``(N,)``.
    """
    count, data = _read_idx(path, _IDX_LABELS_MAGIC, 1)
    labels = np.frombuffer(data, dtype=np.uint8)
    if label_range is not None and count:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < label_range[0] or hi > label_range[1]:
            raise DatasetError(f"{path}: labels span {lo}..{hi}, outside the valid range "
                               f"{label_range[0]}..{label_range[1]}")
    return labels


def _load_idx(spec: DatasetSpec, split: str, paths: Mapping[str, Path],
              fit) -> Tuple[np.ndarray, np.ndarray]:
    images = read_idx_images(paths["images"])
    labels = read_idx_labels(paths["labels"], spec.splits[split].label_range)
    if len(images) != len(labels):
        raise DatasetError(f"{paths['images']} holds {len(images)} images but {paths['labels']} "
                           f"holds {len(labels)} labels")
    if spec.transpose:
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return images[:, None], labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------------

_OMNIGLOT_NAME = re.compile(r"^(\d{4})_(\d{2})\.png$")
_OMNIGLOT_FITS = ("resize", "mnist")


def _omniglot_members(path: Path, zf: zipfile.ZipFile):
    """(relative path without the top folder, ZipInfo, label) of every PNG, validated."""
    out = []
    for info in zf.infolist():
        if info.is_dir() or not info.filename.lower().endswith(".png"):
            continue
        parts = info.filename.split("/")
        m = _OMNIGLOT_NAME.match(parts[-1])
        if m is None or len(parts) < 2:
            raise DatasetError(f"{path}: unexpected member {info.filename!r} (expected "
                               "<top>/<alphabet>/<character>/XXXX_YY.png)")
        out.append(("/".join(parts[1:]), info, int(m.group(1))))
    return out


def read_omniglot_zip(path) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Decode all Omniglot PNGs of one zip, straight from the archive (no extraction).

    Parameters
    ----------
    path : path-like
        E.g. ``images_evaluation.zip``.

    Returns
    -------
    images : numpy.ndarray
        bool, ``(N, 105, 105)``, as stored: True = white background, False = black stroke.
    labels : numpy.ndarray
        int64 ``(N,)``, the global character id (4-digit file-name prefix).
    names : list of str
        Member paths without the top folder (``<alphabet>/characterNN/XXXX_YY.png``), in the
        order of the arrays: sorted by character id, then drawer.
    """
    images, labels, names, _ = _read_omniglot(Path(path))
    return images, labels, names


def _read_omniglot(path: Path):
    """read_omniglot_zip plus the (CRC32, size) of each member, for duplicate checks."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted(_omniglot_members(path, zf),
                             key=lambda m: (m[2], m[0].rsplit("/", 1)[-1]))
            images = _decode_pngs(path, zf, [m[1] for m in members])
    except DatasetError:
        raise
    except FileNotFoundError:
        raise
    # NotImplementedError: an unknown compression method; RuntimeError: an "encrypted" flag
    # (zipfile's errors for such members); ValueError / OSError: other corrupt headers
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError,
            OSError) as exc:
        raise DatasetError(f"{path}: corrupt zip ({type(exc).__name__}: {exc}); delete it and "
                           "re-download") from exc
    labels = np.array([m[2] for m in members], dtype=np.int64)
    return images, labels, [m[0] for m in members], [(m[1].CRC, m[1].file_size) for m in members]


def _decode_pngs(path: Path, zf: zipfile.ZipFile, infos) -> np.ndarray:
    from PIL import Image  # lazy: only Omniglot needs Pillow

    out = np.empty((len(infos), 105, 105), dtype=bool)
    for i, info in enumerate(infos):
        try:
            with Image.open(io.BytesIO(zf.read(info))) as im:
                a = np.asarray(im.convert("1") if im.mode != "1" else im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot decode {info.filename}: {exc}") from exc
        if a.shape != (105, 105):
            raise DatasetError(f"{path}: {info.filename} is {a.shape[1]}x{a.shape[0]}, "
                               "expected 105x105")
        out[i] = a
    return out


@functools.lru_cache(maxsize=None)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of exact area averaging: overlap of each output pixel's footprint
    [i*s, (i+1)*s) (s = n_in / n_out) with input pixel [j, j+1), divided by s; rows sum to 1."""
    s = n_in / n_out
    edges = np.arange(n_out + 1) * s
    j = np.arange(n_in)
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
    return (np.clip(overlap, 0.0, None) / s).astype(np.float32)


def _fit_resize(background: np.ndarray) -> np.ndarray:
    """Invert (stored True = background) and area-average the whole frame to 28x28."""
    a = _area_matrix(background.shape[-1], IMAGE_SIZE)
    out = np.empty((len(background), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    n = background.shape[-1]
    for s in range(0, len(background), 1024):
        ink = 1.0 - background[s:s + 1024].astype(np.float32)
        cols = (ink.reshape(-1, n) @ a.T).reshape(len(ink), n, IMAGE_SIZE)  # one large GEMM
        out[s:s + 1024] = a @ cols  # = a @ ink @ a.T
    return out


def _fit_mnist(background: np.ndarray) -> np.ndarray:
    """Invert, crop to the ink, area-average into 20x20 and centre by mass in 28x28."""
    out = np.zeros((len(background), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    box, margin = 20, (IMAGE_SIZE - 20) // 2
    for i, bg in enumerate(background):
        img = ~bg
        rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
        if rows.size == 0:
            continue
        crop = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
        h, w = crop.shape
        side = max(h, w)
        sq = np.zeros((side, side), dtype=np.float32)
        sq[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = crop
        a = _area_matrix(side, box)
        small = a @ sq @ a.T
        mass = small.sum()
        cy = (small.sum(1) @ np.arange(box)) / mass
        cx = (small.sum(0) @ np.arange(box)) / mass
        top = int(np.clip(np.rint((IMAGE_SIZE - 1) / 2 - cy), 0, 2 * margin))
        left = int(np.clip(np.rint((IMAGE_SIZE - 1) / 2 - cx), 0, 2 * margin))
        out[i, top:top + box, left:left + box] = small
    return out


def _load_omniglot(spec: DatasetSpec, split: str, paths: Mapping[str, Path],
                   fit) -> Tuple[np.ndarray, np.ndarray]:
    fitter = _fit_resize if fit == "resize" else _fit_mnist
    lo, hi = spec.splits[split].label_range
    seen: Dict[str, Tuple[Path, int, int]] = {}
    xs, ys, keep = [], [], []
    for role in sorted(paths):
        path = paths[role]
        images, labels, names, crcs = _read_omniglot(path)
        if labels.size and (labels.min() < lo or labels.max() > hi):
            raise DatasetError(f"{path}: character ids span {labels.min()}..{labels.max()}, "
                               f"expected {lo}..{hi} for omniglot {split}")
        mask = np.ones(len(names), dtype=bool)
        for k, (name, crc) in enumerate(zip(names, crcs)):
            if name in seen:
                if seen[name][1:] != crc:
                    raise DatasetError(f"{path}: {name} differs from the copy in {seen[name][0]}")
                mask[k] = False
            else:
                seen[name] = (path,) + crc
        if not mask.all():
            images, labels = images[mask], labels[mask]
            names = [n for n, m in zip(names, mask) if m]
        xs.append(fitter(images))
        ys.append(labels)
        keep.extend(names)
    x, y = (xs[0], ys[0]) if len(xs) == 1 else (np.concatenate(xs), np.concatenate(ys))
    # "XXXX_YY.png" file names sort by character id, then drawer
    order = np.argsort(np.array([n.rsplit("/", 1)[-1] for n in keep]), kind="stable")
    if np.any(order != np.arange(len(order))):
        x, y = x[order], y[order]
    np.clip(x, 0.0, 1.0, out=x)
    return x[:, None], y


# format -> (reader, accepted ``fit`` values; the first is the default)
_READERS: Dict[str, Tuple[Callable, Tuple[Optional[str], ...]]] = {
    "idx": (_load_idx, (None,)),
    "omniglot": (_load_omniglot, _OMNIGLOT_FITS),
}


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _cached(name: str, split: str, sigs: Tuple[Tuple[str, Tuple[str, int, int]], ...], fit):
    spec = DATASETS[name]
    paths = {role: Path(sig[0]) for role, sig in sigs}
    x, y = _READERS[spec.format][0](spec, split, paths, fit)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def clear_cache() -> None:
    """Forget cached arrays and cached file digests."""
    _cached.cache_clear()
    _file_sha256.cache_clear()
    _content_sha256.cache_clear()


def load(name: str, split: str = "test", *, root=None, verify: bool = True,
         download: bool = False, fit: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Load a dataset split as MNIST-style float arrays.

    Parameters
    ----------
    name : str
        One of :func:`available`: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``,
        ``"emnist-letters"``, ``"omniglot"``.
    split : str
        ``"train"`` or ``"test"``; for omniglot ``"evaluation"`` (``"test"`` is an alias) or
        ``"background"``.
    root : path-like, optional
        Data root holding ``mnist/``, ``fashion-mnist/``, ``kmnist/``, ``emnist/``, ``omniglot/``.
        Default: ``$UQATTR_DATA``, else ``$XDG_CACHE_HOME/uqattr/datasets`` (``~/.cache/...``).
    verify : bool
        Check each file's sha256 against the accepted digests (cached per path, size and mtime).
    download : bool
        Fetch missing files from the canonical URL into ``root/<folder>/`` (atomic write,
        verified when ``verify``). Never done implicitly. Only missing files are fetched; a
        present file that fails verification is reported, not replaced. Not available for
        EMNIST (one large zip upstream).
    fit : {None, "resize", "mnist"}
        Omniglot only; see :func:`load_omniglot`. Must be None for the 28x28 datasets.

    Returns
    -------
    x : numpy.ndarray
        float32 ``(N, 1, 28, 28)`` in [0, 1], bright strokes on black, upright (EMNIST images,
        stored transposed, are transposed back).
    y : numpy.ndarray
        int64 ``(N,)``. EMNIST Letters labels are returned 1-based as stored (1 = a ... 26 = z);
        Omniglot labels are global character ids.

    Raises
    ------
    ValueError
        Unknown name, split or fit (the message lists the valid ones).
    FileNotFoundError
        Missing data folder or file (the message says where it looked and what to do).
    DatasetError
        Checksum mismatch, corrupt or malformed file.

    Notes
    -----
    Decoded arrays are cached in-process per (dataset, split, files, fit); each call returns
    fresh arrays, so callers may modify them freely.
    """
    spec = _get_spec(name)
    split = spec.resolve_split(split)
    fits = _READERS[spec.format][1]
    if fit is None:
        fit = fits[0]
    elif fit not in fits:
        valid = [f for f in fits if f is not None]
        raise ValueError(f"fit={fit!r} is not supported for {name!r}"
                         + (f"; valid: {', '.join(valid)}" if valid else " (only for omniglot)"))
    paths = _resolve_files(spec, split, root, verify, download)
    sigs = tuple((role, _signature(p)) for role, p in sorted(paths.items()))
    x, y = _cached(name, split, sigs, fit)
    if x.dtype == np.uint8:
        xf = x.astype(np.float32)
        xf /= 255.0
    else:
        xf = x.copy()
    return xf, y.copy()


def load_mnist(split: str = "test", **kwargs):
    """MNIST, splits ``train`` (60,000) / ``test`` (10,000), labels 0..9. See :func:`load`."""
    return load("mnist", split, **kwargs)


def load_fashion_mnist(split: str = "test", **kwargs):
    """Fashion-MNIST, ``train`` (60,000) / ``test`` (10,000), labels 0..9. See :func:`load`."""
    return load("fashion-mnist", split, **kwargs)


def load_kmnist(split: str = "test", **kwargs):
    """Kuzushiji-MNIST, ``train`` / ``test`` (10,000), labels 0..9. See :func:`load`.

    The shared copy holds only ``test``; ``train`` needs ``download=True, verify=False``.
    """
    return load("kmnist", split, **kwargs)


def load_emnist_letters(split: str = "test", **kwargs):
    """EMNIST Letters, transposed to upright. See :func:`load`.

    Labels are 1-based as stored (1 = a/A ... 26 = z/Z; upper and lower case share a label).
    The shared copy is a prefix of the official test split holding only letters a..s, so do not
    assume 26 classes or a fixed count: derive them from the returned labels.
    """
    return load("emnist-letters", split, **kwargs)


def load_omniglot(split: str = "evaluation", *, fit: str = "resize", **kwargs):
    """Omniglot characters as MNIST-style 28x28 images. See :func:`load`.

    Parameters
    ----------
    split : {"evaluation", "test", "background"}
        ``evaluation`` (alias ``test``): 13,180 images, character ids 965..1623.
        ``background``: union of ``images_background_small1.zip`` and ``..._small2.zip``
        (their identical Greek and Latin folders are counted once), ids within 1..964.
    fit : {"resize", "mnist"}
        ``"resize"`` (default): the whole 105x105 frame is downscaled to 28x28, the
        conventional Omniglot-as-OOD preprocessing (as a plain resize would do); characters keep
        their position and relative size in the frame.
        ``"mnist"``: MNIST-style normalisation: crop to the ink's bounding box, pad to a square,
        area-average to 20x20 and place in the 28x28 field with integer shifts that bring the
        centre of mass nearest the centre (kept inside the frame).

    Notes
    -----
    The PNGs are read straight from the zip (no extraction) and are 1-bit, black strokes on
    white. Each image is inverted to ink = 1 on background = 0 and downscaled by exact area
    averaging: output pixel (i, j) is the mean ink over its footprint of
    ``105/28 = 3.75`` x 3.75 input pixels, partially covered pixels weighted by their overlap
    (``x = A @ ink @ A.T`` with a row-stochastic overlap matrix ``A``). Area averaging keeps the
    stroke mass (the mean intensity is unchanged) and acts as an anti-aliasing filter, so thin
    strokes become grey instead of breaking up or vanishing as with point sampling. It is exact
    and independent of the Pillow version (Pillow's ``BOX`` filter with a non-integer factor
    uses whole-pixel weights and differs by up to 0.17). Values are clipped to [0, 1].
    Labels are the global character ids from the 4-digit file-name prefix; images are sorted
    by character id, then drawer.

    The shared ``images_evaluation.zip`` is a pixel-exact rebuild whose bytes differ from the
    canonical zip; the canonical file (e.g. from ``download=True``) fails the sha256 check and
    needs ``verify=False``.
    """
    return load("omniglot", split, fit=fit, **kwargs)
