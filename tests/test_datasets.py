"""Tests of uqattr.datasets.

Tests on the real data need ``UQATTR_DATA`` pointing at the shared ``datasets/`` folder (see its
MANIFEST.md) and are skipped otherwise; the error-handling tests build their own small files under
``tmp_path`` and always run. Nothing is downloaded (the download tests use local ``file://`` URLs).
"""

import gzip
import hashlib
import importlib.util
import io
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

try:
    import uqattr.datasets as D
except ImportError:  # package __init__ not importable (e.g. C extension not built): load by path
    _path = Path(__file__).resolve().parents[1] / "python" / "uqattr" / "datasets.py"
    _spec = importlib.util.spec_from_file_location("uqattr_datasets_standalone", _path)
    D = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = D
    _spec.loader.exec_module(D)

DATA = os.environ.get("UQATTR_DATA")
HAVE_DATA = bool(DATA) and Path(DATA).is_dir()
needs_data = pytest.mark.skipif(
    not HAVE_DATA,
    reason="UQATTR_DATA is unset or not a folder; set it to the shared datasets/ folder "
           "(holding mnist/, fashion-mnist/, kmnist/, emnist/, omniglot/) to run the data tests")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def idx_bytes(magic, dims, payload):
    return struct.pack(f">I{len(dims)}I", magic, *dims) + bytes(payload)


def write_gz(path, data, mtime=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=mtime) as g:
        g.write(data)
    return path


def fake_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def write_idx_pair(folder, n=5, labels=None, prefix="t10k"):
    imgs = fake_images(n)
    labels = np.arange(n, dtype=np.uint8) % 10 if labels is None else np.asarray(labels, np.uint8)
    ip = write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(2051, (n, 28, 28), imgs.tobytes()))
    lp = write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(2049, (len(labels),), labels.tobytes()))
    return imgs, labels, ip, lp


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def register_fake(monkeypatch, name="fake", files=None, label_range=(0, 9), transpose=False, fmt="idx",
                  split="test", folder="fake"):
    files = files or {"images": D.FileSpec("t10k-images-idx3-ubyte.gz"),
                      "labels": D.FileSpec("t10k-labels-idx1-ubyte.gz")}
    spec = D.DatasetSpec(name=name, folder=folder, format=fmt, transpose=transpose,
                         splits={split: D.SplitSpec(files, label_range)}, default_split=split)
    monkeypatch.setitem(D.DATASETS, name, spec)
    return spec


# --------------------------------------------------------------------------------------------
# registry and API (no data needed)
# --------------------------------------------------------------------------------------------

def test_available_and_registry():
    assert D.available() == ["mnist", "fashion-mnist", "kmnist", "emnist-letters", "omniglot"]
    assert issubclass(D.DatasetError, ValueError)
    for name, spec in D.DATASETS.items():
        assert spec.name == name
        assert spec.default_split in spec.splits
        for split in spec.splits.values():
            for f in split.files.values():
                for h in f.sha256 + f.content_sha256:
                    assert len(h) == 64 and int(h, 16) >= 0
    assert D.DATASETS["mnist"].splits["train"].files["images"].url == \
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"
    assert D.DATASETS["emnist-letters"].splits["test"].files["images"].url is None
    assert D.DATASETS["omniglot"].resolve_split("test") == "evaluation"
    assert D.DATASETS["omniglot"].resolve_split(None) == "evaluation"


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*mnist.*omniglot"):
        D.load("svhn", root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'val'.*test.*train"):
        D.load("mnist", "val", root=tmp_path)
    with pytest.raises(ValueError, match="background.*evaluation.*test"):
        D.load_omniglot("train", root=tmp_path)
    with pytest.raises(ValueError, match="fit"):
        D.load("mnist", fit="mnist", root=tmp_path)
    with pytest.raises(ValueError, match="valid: resize, mnist"):
        D.load("omniglot", fit="crop", root=tmp_path)


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("UQATTR_DATA", str(tmp_path / "env"))
    assert D.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert D.data_root() == tmp_path / "env"
    monkeypatch.delenv("UQATTR_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.data_root() == tmp_path / "xdg" / "uqattr" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert D.data_root() == Path.home() / ".cache" / "uqattr" / "datasets"


# --------------------------------------------------------------------------------------------
# IDX parsing errors (no data needed)
# --------------------------------------------------------------------------------------------

def test_read_idx_roundtrip(tmp_path):
    imgs, labels, ip, lp = write_idx_pair(tmp_path, n=7)
    got = D.read_idx_images(ip)
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, imgs)
    np.testing.assert_array_equal(D.read_idx_labels(lp, (0, 9)), labels)


def test_truncated_payload(tmp_path):
    p = write_gz(tmp_path / "short-images.gz", idx_bytes(2051, (10, 28, 28), fake_images(9).tobytes()))
    with pytest.raises(D.DatasetError, match=r"short-images\.gz.*truncated"):
        D.read_idx_images(p)
    p = write_gz(tmp_path / "short-labels.gz", idx_bytes(2049, (10,), b"\x01" * 9))
    with pytest.raises(D.DatasetError, match=r"short-labels\.gz.*truncated"):
        D.read_idx_labels(p)


def test_oversized_payload(tmp_path):
    p = write_gz(tmp_path / "long-images.gz", idx_bytes(2051, (2, 28, 28), fake_images(3).tobytes()))
    with pytest.raises(D.DatasetError, match=r"long-images\.gz.*oversized"):
        D.read_idx_images(p)


def test_truncated_gzip_stream(tmp_path):
    good = write_gz(tmp_path / "good.gz", idx_bytes(2051, (50, 28, 28), fake_images(50).tobytes()))
    cut = tmp_path / "cut-images.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(D.DatasetError, match=r"cut-images\.gz.*corrupt"):
        D.read_idx_images(cut)


def test_corrupt_crc(tmp_path):
    good = write_gz(tmp_path / "good.gz", idx_bytes(2049, (100,), bytes(100)))
    data = bytearray(good.read_bytes())
    data[-8] ^= 0xFF  # CRC32 in the gzip trailer
    bad = tmp_path / "crc-labels.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(D.DatasetError, match=r"crc-labels\.gz"):
        D.read_idx_labels(bad)


def test_not_gzip(tmp_path):
    p = tmp_path / "plain-images.gz"
    p.write_bytes(idx_bytes(2051, (1, 28, 28), bytes(784)))  # uncompressed IDX
    with pytest.raises(D.DatasetError, match=r"plain-images\.gz.*gzip"):
        D.read_idx_images(p)
    e = tmp_path / "empty-labels.gz"
    e.write_bytes(b"")
    with pytest.raises(D.DatasetError, match=r"empty-labels\.gz.*truncated IDX header"):
        D.read_idx_labels(e)


def test_wrong_magic(tmp_path):
    p = write_gz(tmp_path / "magic-images.gz", idx_bytes(2049, (1, 28, 28), bytes(784)))
    with pytest.raises(D.DatasetError, match=r"magic-images\.gz.*magic 2049.*2051"):
        D.read_idx_images(p)
    p = write_gz(tmp_path / "magic-labels.gz", idx_bytes(2051, (1,), b"\x00"))
    with pytest.raises(D.DatasetError, match=r"magic-labels\.gz.*magic"):
        D.read_idx_labels(p)


def test_wrong_dims(tmp_path):
    p = write_gz(tmp_path / "dims-images.gz", idx_bytes(2051, (1, 32, 32), bytes(1024)))
    with pytest.raises(D.DatasetError, match=r"dims-images\.gz.*32x32"):
        D.read_idx_images(p)


def test_lying_header_no_huge_allocation(tmp_path):
    # claims 10^9 images (784 GB) but holds one: must fail fast as truncated, not MemoryError
    p = write_gz(tmp_path / "liar-images.gz", idx_bytes(2051, (10**9, 28, 28), bytes(784)))
    with pytest.raises(D.DatasetError, match=r"liar-images\.gz.*truncated.*1000000000"):
        D.read_idx_images(p)
    p = write_gz(tmp_path / "liar-labels.gz", idx_bytes(2049, (2**32 - 1,), bytes(10)))
    with pytest.raises(D.DatasetError, match=r"liar-labels\.gz.*truncated"):
        D.read_idx_labels(p)


def test_label_range(tmp_path):
    p = write_gz(tmp_path / "range-labels.gz", idx_bytes(2049, (3,), b"\x00\x05\x0c"))
    with pytest.raises(D.DatasetError, match=r"range-labels\.gz.*0\.\.12.*0\.\.9"):
        D.read_idx_labels(p, (0, 9))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        D.read_idx_images(tmp_path / "nope.gz")


# --------------------------------------------------------------------------------------------
# load() with files under a custom root (no data needed)
# --------------------------------------------------------------------------------------------

def test_load_fake_dataset(tmp_path, monkeypatch):
    imgs, labels, _, _ = write_idx_pair(tmp_path / "fake", n=6)
    register_fake(monkeypatch)
    x, y = D.load("fake", root=tmp_path, verify=False)
    assert x.dtype == np.float32 and x.shape == (6, 1, 28, 28)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x[:, 0] * 255, imgs, atol=1e-4)
    assert x.max() <= 1.0 and x.min() >= 0.0


def test_load_transposes(tmp_path, monkeypatch):
    imgs, _, _, _ = write_idx_pair(tmp_path / "fake", n=3, labels=[1, 2, 3])
    register_fake(monkeypatch, transpose=True, label_range=(1, 26))
    x, y = D.load("fake", root=tmp_path, verify=False)
    np.testing.assert_allclose(x[:, 0] * 255, imgs.transpose(0, 2, 1), atol=1e-4)
    assert y.tolist() == [1, 2, 3]


def test_count_mismatch(tmp_path, monkeypatch):
    write_idx_pair(tmp_path / "fake", n=5, labels=[0, 1, 2, 3])
    register_fake(monkeypatch)
    with pytest.raises(D.DatasetError, match=r"5 images.*t10k-labels-idx1-ubyte\.gz.*4 labels"):
        D.load("fake", root=tmp_path, verify=False)


def test_label_out_of_range_via_load(tmp_path, monkeypatch):
    write_idx_pair(tmp_path / "fake", n=3, labels=[0, 1, 2])
    register_fake(monkeypatch, label_range=(1, 26))
    with pytest.raises(D.DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*outside"):
        D.load("fake", root=tmp_path, verify=False)


def test_bad_checksum_names_both_hashes(tmp_path):
    # real registry entry, fake files: the checksum check must catch them
    _, _, ip, _ = write_idx_pair(tmp_path / "mnist", n=5)
    expected = D.DATASETS["mnist"].splits["test"].files["images"].sha256[0]
    with pytest.raises(D.DatasetError,
                       match=rf"t10k-images-idx3-ubyte\.gz.*sha256 mismatch.*{expected}.*{sha(ip)}"):
        D.load("mnist", "test", root=tmp_path)
    x, _ = D.load("mnist", "test", root=tmp_path, verify=False)  # verify=False skips the check
    assert len(x) == 5


def test_checksum_accepts_listed_hash(tmp_path, monkeypatch):
    _, _, ip, lp = write_idx_pair(tmp_path / "fake", n=4)
    register_fake(monkeypatch, files={
        "images": D.FileSpec(ip.name, ("0" * 64, sha(ip))),
        "labels": D.FileSpec(lp.name, (sha(lp),)),
    })
    D.clear_cache()
    D.load("fake", root=tmp_path)
    misses = D._file_sha256.cache_info().misses
    D.load("fake", root=tmp_path)
    assert D._file_sha256.cache_info().misses == misses  # digests cached, not recomputed
    os.utime(ip, ns=(ip.stat().st_atime_ns, ip.stat().st_mtime_ns + 10**9))
    D.load("fake", root=tmp_path)
    assert D._file_sha256.cache_info().misses == misses + 1  # new mtime -> rehash


def test_checksum_content_fallback(tmp_path, monkeypatch):
    # a different gzip container of the same data passes via the decompressed-content digest
    raw = idx_bytes(2049, (4,), b"\x00\x01\x02\x03")
    other = write_gz(tmp_path / "other.gz", raw, mtime=12345)
    lp = write_gz(tmp_path / "fake" / "t10k-labels-idx1-ubyte.gz", raw, mtime=0)
    write_gz(tmp_path / "fake" / "t10k-images-idx3-ubyte.gz", idx_bytes(2051, (4, 28, 28), bytes(4 * 784)))
    assert sha(lp) != sha(other)
    register_fake(monkeypatch, files={
        "images": D.FileSpec("t10k-images-idx3-ubyte.gz", (sha(tmp_path / "fake" / "t10k-images-idx3-ubyte.gz"),)),
        "labels": D.FileSpec("t10k-labels-idx1-ubyte.gz", (sha(other),), (hashlib.sha256(raw).hexdigest(),)),
    })
    _, y = D.load("fake", root=tmp_path)
    assert y.tolist() == [0, 1, 2, 3]


def test_no_known_checksum(tmp_path, monkeypatch):
    write_idx_pair(tmp_path / "fake", n=2)
    register_fake(monkeypatch)
    with pytest.raises(D.DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*no sha256.*verify=False"):
        D.load("fake", root=tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere.mnist does not exist.*UQATTR_DATA.*download=True"):
        D.load("mnist", root=tmp_path / "nowhere")


def test_missing_file(tmp_path):
    (tmp_path / "kmnist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz not found.*only the KMNIST test"):
        D.load_kmnist("train", root=tmp_path)
    (tmp_path / "emnist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"emnist-letters-test-images.*download=True is not supported"):
        D.load_emnist_letters(root=tmp_path, download=True)


def test_returns_copies(tmp_path, monkeypatch):
    write_idx_pair(tmp_path / "fake", n=3)
    register_fake(monkeypatch)
    x, y = D.load("fake", root=tmp_path, verify=False)
    x[:] = 7
    y[:] = 7
    x2, y2 = D.load("fake", root=tmp_path, verify=False)
    assert x2.max() <= 1.0 and y2.tolist() == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# download helper with local file:// URLs (no network)
# --------------------------------------------------------------------------------------------

def test_download_file_atomic(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "sub" / "dest.bin"
    assert D.download_file(src.as_uri(), dest, sha256=(sha(src),)) == dest
    assert dest.read_bytes() == src.read_bytes()

    dest.write_bytes(b"old")
    with pytest.raises(D.DatasetError, match=r"sha256 mismatch.*" + "1" * 64):
        D.download_file(src.as_uri(), dest, sha256=("1" * 64,))
    assert dest.read_bytes() == b"old"  # untouched on failure
    with pytest.raises(OSError):
        D.download_file((tmp_path / "missing.bin").as_uri(), dest)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest.bin"]  # no temp files left


def test_load_download_from_local_url(tmp_path, monkeypatch):
    imgs, labels, ip, lp = write_idx_pair(tmp_path / "upstream", n=4)
    register_fake(monkeypatch, files={
        "images": D.FileSpec(ip.name, (sha(ip),), url=ip.as_uri()),
        "labels": D.FileSpec(lp.name, (sha(lp),), url=lp.as_uri()),
    })
    root = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.load("fake", root=root)
    x, y = D.load("fake", root=root, download=True)
    assert (root / "fake" / ip.name).read_bytes() == ip.read_bytes()
    np.testing.assert_array_equal(y, labels)


def test_download_refuses_unverifiable(tmp_path, monkeypatch):
    _, _, ip, lp = write_idx_pair(tmp_path / "upstream", n=2)
    register_fake(monkeypatch, files={"images": D.FileSpec(ip.name, url=ip.as_uri()),
                                      "labels": D.FileSpec(lp.name, url=lp.as_uri())})
    with pytest.raises(D.DatasetError, match="no sha256.*verify=False"):
        D.load("fake", root=tmp_path / "cache", download=True)
    assert not (tmp_path / "cache" / "fake" / ip.name).exists()
    D.load("fake", root=tmp_path / "cache", download=True, verify=False)


# --------------------------------------------------------------------------------------------
# Omniglot reader on small synthetic zips (no data needed)
# --------------------------------------------------------------------------------------------

def _png(ink_box):
    from PIL import Image
    a = np.ones((105, 105), dtype=bool)  # True = white background
    r0, r1, c0, c1 = ink_box
    a[r0:r1, c0:c1] = False
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_zip(path, top, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, box in members:
            z.writestr(f"{top}/{name}", _png(box))
    return path


def test_omniglot_synthetic(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    folder = tmp_path / "omni"
    folder.mkdir()
    shared = ("Greek/character01/0394_01.png", (0, 105, 45, 60))  # vertical bar, 15 px wide
    z0 = _omniglot_zip(folder / "a.zip", "small1", [shared, ("Latin/character01/0682_02.png", (40, 70, 0, 105))])
    z1 = _omniglot_zip(folder / "b.zip", "small2", [shared, ("Greek/character02/0395_01.png", (10, 20, 10, 20))])
    register_fake(monkeypatch, name="omni", folder="omni", fmt="omniglot", split="background",
                  label_range=(1, 964),
                  files={"zip0": D.FileSpec("a.zip"), "zip1": D.FileSpec("b.zip")})

    images, labels, names = D.read_omniglot_zip(z0)
    assert images.shape == (2, 105, 105) and images.dtype == bool
    assert labels.tolist() == [394, 682] and names[0] == shared[0]

    x, y = D.load("omni", "background", root=tmp_path, verify=False)
    assert y.tolist() == [394, 395, 682]  # duplicate counted once, sorted by character id
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32
    # inverted (ink bright) and area-averaged: stroke mass is preserved
    ink = np.array([105 * 15, 10 * 10, 30 * 105], dtype=float)
    np.testing.assert_allclose(x.sum(axis=(1, 2, 3)) * (105 / 28) ** 2, ink, rtol=1e-5)
    bar = x[0, 0]
    assert bar[:, 13].min() == pytest.approx(1.0) and bar[:, 0].max() == 0.0
    # fit="mnist": ink fitted in a 20x20 box, near the centre
    xm, _ = D.load("omni", "background", root=tmp_path, verify=False, fit="mnist")
    sq = xm[1, 0]  # 10x10 square scaled up to 20x20
    assert sq.sum() == pytest.approx(400.0, rel=1e-5) and sq[4:24, 4:24].sum() == pytest.approx(400.0, rel=1e-5)

    # conflicting duplicates are an error
    _omniglot_zip(folder / "b.zip", "small2", [(shared[0], (0, 105, 0, 10))])
    D.clear_cache()
    with pytest.raises(D.DatasetError, match=r"b\.zip.*0394_01\.png differs"):
        D.load("omni", "background", root=tmp_path, verify=False)


def test_omniglot_corrupt_zip(tmp_path):
    p = tmp_path / "broken.zip"
    p.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(D.DatasetError, match=r"broken\.zip.*corrupt"):
        D.read_omniglot_zip(p)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------

COUNTS = [("mnist", "train", 60000), ("mnist", "test", 10000),
          ("fashion-mnist", "train", 60000), ("fashion-mnist", "test", 10000),
          ("kmnist", "test", 10000), ("omniglot", "evaluation", 13180)]


@needs_data
@pytest.mark.parametrize("name,split,n", COUNTS)
def test_counts_shapes_dtypes(name, split, n):
    x, y = D.load(name, split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0


@needs_data
def test_mnist_labels_and_mean():
    x, y = D.load_mnist("train")
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(x.mean(dtype=np.float64) * 255 - 33.318) < 1e-3
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xt, yt = D.load_mnist("test")
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(xt.mean(dtype=np.float64) * 255 - 33.791) < 1e-3


@needs_data
def test_fashion_kmnist_stats():
    x, y = D.load_fashion_mnist("train")
    assert np.bincount(y).tolist() == [6000] * 10
    assert abs(x.mean(dtype=np.float64) * 255 - 72.94) < 0.01
    x, y = D.load_kmnist("test")
    assert np.bincount(y).tolist() == [1000] * 10
    assert abs(x.mean(dtype=np.float64) * 255 - 47.06) < 0.01


@needs_data
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist", "emnist-letters", "omniglot"])
def test_polarity(name):
    x, _ = D.load(name)
    img = x[:, 0]
    border = np.concatenate([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], axis=1).mean()
    centre = img[:, 7:21, 7:21].mean()
    assert border < 0.06, border
    assert centre > 3 * border
    # strokes are bright: nearly every image reaches a high value
    assert np.median(img.reshape(len(img), -1).max(axis=1)) > 0.9


@needs_data
def test_emnist_letters():
    root = Path(DATA) / "emnist"
    raw_labels = D.read_idx_labels(root / "emnist-letters-test-labels-idx1-ubyte.gz")
    raw_images = D.read_idx_images(root / "emnist-letters-test-images-idx3-ubyte.gz")
    x, y = D.load_emnist_letters()
    assert len(x) == len(y) == len(raw_labels) == 14800  # 14,800 per MANIFEST (subset of 20,800)
    assert y.min() >= 1 and y.max() <= 26  # 1-based, returned as stored
    np.testing.assert_array_equal(np.unique(y), np.unique(raw_labels))
    np.testing.assert_array_equal(y, raw_labels)
    np.testing.assert_allclose(x[::997, 0] * 255, raw_images[::997].transpose(0, 2, 1), atol=1e-4)


def _upright_vertical_stroke(mean_img):
    """A vertical stroke lights a few columns over all rows: column profile peaked, row profile flat."""
    return mean_img.mean(axis=0).var() > 2 * mean_img.mean(axis=1).var()


@needs_data
def test_emnist_orientation():
    x, y = D.load_emnist_letters()
    for label in (9, 12):  # 'i' and 'l': essentially vertical strokes
        if not np.any(y == label):
            continue
        m = x[y == label, 0].mean(axis=0)
        assert _upright_vertical_stroke(m), label
        assert not _upright_vertical_stroke(m.T), label  # the heuristic rejects transposed data
    # the same heuristic holds for MNIST '1' (stored upright)
    xm, ym = D.load_mnist("test")
    assert _upright_vertical_stroke(xm[ym == 1, 0].mean(axis=0))


@needs_data
def test_omniglot_evaluation():
    x, y = D.load_omniglot()
    assert len(x) == 13180
    assert y.min() >= 965 and y.max() <= 1623
    assert len(np.unique(y)) == 659 and np.all(np.bincount(y)[965:] == 20)
    img = x[:, 0]
    border = np.concatenate([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], axis=1).mean()
    assert border < 0.05 and x.max() > 0.5
    # area averaging keeps the stroke mass of the 105x105 originals
    raw, labels, _ = D.read_omniglot_zip(Path(DATA) / "omniglot" / "images_evaluation.zip")
    np.testing.assert_array_equal(labels, y)
    ink = (~raw[:50]).sum(axis=(1, 2))
    np.testing.assert_allclose(img[:50].sum(axis=(1, 2)) * (105 / 28) ** 2, ink, rtol=1e-4)
    xt, yt = D.load("omniglot", "test")
    np.testing.assert_array_equal(xt, x)


@needs_data
def test_omniglot_background_and_fit():
    x, y = D.load_omniglot("background")
    assert len(x) == 4840  # 2,720 + 3,120 minus the 1,000 shared Greek/Latin images
    assert y.min() >= 1 and y.max() <= 964 and np.all(np.bincount(y)[np.unique(y)] == 20)
    xm, ym = D.load_omniglot(fit="mnist")
    np.testing.assert_array_equal(ym, D.load_omniglot()[1])
    for img in xm[::131, 0]:  # ink fitted into a 20x20 box, centre of mass near the centre
        rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 20
        com = [(img.sum(axis=a) @ np.arange(28)) / img.sum() for a in (1, 0)]
        assert np.all(np.abs(np.array(com) - 13.5) <= 1.0), com


@needs_data
def test_cached_load_is_served_from_the_cache_and_copied(monkeypatch):
    D.load_mnist("train")
    hits = D._cached.cache_info().hits

    def no_read(*args, **kwargs):
        raise AssertionError("a cached load read or hashed the file again")

    hashed = D._file_sha256.cache_info().misses, D._content_sha256.cache_info().misses
    monkeypatch.setitem(D._READERS, "idx", (no_read,) + tuple(D._READERS["idx"][1:]))
    x, _ = D.load_mnist("train")
    assert D._cached.cache_info().hits == hits + 1
    # the digests come from their cache too: no file was hashed again
    assert (D._file_sha256.cache_info().misses, D._content_sha256.cache_info().misses) == hashed
    monkeypatch.undo()
    x[:] = 0
    assert D.load_mnist("train")[0].max() == 1.0
