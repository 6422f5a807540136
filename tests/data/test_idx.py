"""Tests for jaxdl.data.idx: the IDX reader and the MNIST-style loader."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxdl.data import idx
from jaxdl.errors import DataError

# Written independently of the reader so a shared mistake cannot hide.
_TYPE_CODES = {
    "uint8": 0x08,
    "int8": 0x09,
    "int16": 0x0B,
    "int32": 0x0C,
    "float32": 0x0D,
    "float64": 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (big-endian values, C order)."""
    array = np.asarray(array)
    header = bytes([0, 0, _TYPE_CODES[array.dtype.name], array.ndim])
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, -1, 0, 1, 127], dtype=np.int8),
        np.array([[-30000, 5], [7, 30000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1, 12345], dtype=np.int32),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 2, 2),
        np.array([np.pi, -np.e, 1e300], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=lambda a: f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else None,
)
def test_round_trip(tmp_path, array, suffix):
    path = write(tmp_path / f"a.idx{suffix}", idx_bytes(array))
    out = idx.read_idx(path)
    assert out.dtype == array.dtype.newbyteorder("=")
    assert out.dtype.isnative
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    out[...] = 0  # the result must be writable, not a view of read-only bytes


def test_mnist_magic_numbers(tmp_path):
    images = idx_bytes(np.zeros((1, 28, 28), np.uint8))
    labels = idx_bytes(np.zeros(1, np.uint8))
    assert images[:4] == (0x803).to_bytes(4, "big")
    assert labels[:4] == (0x801).to_bytes(4, "big")


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_truncated_payload(tmp_path, suffix):
    data = idx_bytes(np.ones((3, 28, 28), np.uint8))
    path = write(tmp_path / f"t.idx{suffix}", data[:-10])
    with pytest.raises(DataError, match="truncated") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_header(tmp_path):
    path = write(tmp_path / "h.idx", idx_bytes(np.ones((3, 28, 28), np.uint8))[:9])
    with pytest.raises(DataError, match="truncated IDX header"):
        idx.read_idx(path)


def test_trailing_garbage(tmp_path):
    path = write(tmp_path / "g.idx.gz", idx_bytes(np.ones(5, np.uint8)) + b"junk")
    with pytest.raises(DataError, match="4 bytes of trailing garbage"):
        idx.read_idx(path)


@pytest.mark.parametrize(
    "header",
    [b"\x12\x34\x08\x03", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"\x00\x01\x08\x01"],
)
def test_bad_magic(tmp_path, header):
    data = header + idx_bytes(np.ones(5, np.uint8))[4:]
    path = write(tmp_path / "m.idx", data)
    with pytest.raises(DataError, match="bad IDX magic number") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_too_short(tmp_path):
    with pytest.raises(DataError, match="too short"):
        idx.read_idx(write(tmp_path / "s.idx", b"\x00\x00"))


def test_not_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(idx_bytes(np.ones(5, np.uint8)))  # raw data under a .gz name
    with pytest.raises(DataError, match="corrupt gzip") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_cut_short(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)), mtime=0)
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        idx.read_idx(path)


def test_gzip_bad_crc(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)), mtime=0))
    compressed[-8] ^= 0xFF  # CRC32 of the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="corrupt gzip"):
        idx.read_idx(path)


def test_gzip_bad_deflate_stream(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)), mtime=0))
    compressed[10:20] = b"\xff" * 10  # inside the deflate data
    path = tmp_path / "z.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="corrupt gzip"):
        idx.read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        idx.read_idx(tmp_path / "nope.gz")


# --- load_idx_dataset on small generated files -------------------------------------------


def _make_dataset(directory: Path, n_train=6, n_test=4, train_labels=None) -> dict[str, str]:
    """Write four small MNIST-style files; return {filename: sha256}."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (
            train_labels
            if train_labels is not None
            else rng.integers(0, 10, n_train, dtype=np.uint8)
        ),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, array in arrays.items():
        path = write(directory / name, idx_bytes(array))
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture
def offline(monkeypatch):
    """Make any accidental download fail fast instead of reaching the internet."""
    monkeypatch.setenv("JAXDL_MIRROR", "http://127.0.0.1:9/")


def _use_digests(monkeypatch, name, digests):
    monkeypatch.setitem(idx.DATASETS, name, {"mirrors": (), "files": digests})


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_load_local_files(tmp_path, monkeypatch, offline, name):
    _use_digests(monkeypatch, name, _make_dataset(tmp_path / name))
    data = idx.load_idx_dataset(name, tmp_path)
    assert set(data) == {"x_train", "y_train", "x_test", "y_test"}
    assert data["x_train"].shape == (6, 28, 28) and data["x_train"].dtype == np.uint8
    assert data["y_train"].shape == (6,) and data["y_train"].dtype == np.uint8
    assert data["x_test"].shape == (4, 28, 28)
    assert data["y_test"].shape == (4,)


def test_load_accepts_hyphenated_name_and_str_dir(tmp_path, monkeypatch, offline):
    _use_digests(monkeypatch, "fashion_mnist", _make_dataset(tmp_path / "fashion_mnist"))
    data = idx.load_idx_dataset("Fashion-MNIST", str(tmp_path))
    assert data["x_test"].shape == (4, 28, 28)


def test_load_uses_default_data_dir(tmp_path, monkeypatch, offline):
    _use_digests(monkeypatch, "mnist", _make_dataset(tmp_path / "mnist"))
    monkeypatch.setenv("JAXDL_DATA_DIR", str(tmp_path))
    assert idx.load_idx_dataset("mnist")["y_train"].shape == (6,)


def test_count_mismatch(tmp_path, monkeypatch, offline):
    labels = np.zeros(5, np.uint8)  # 6 images, 5 labels
    _use_digests(monkeypatch, "mnist", _make_dataset(tmp_path / "mnist", train_labels=labels))
    with pytest.raises(DataError, match="train has 6 images but 5 labels"):
        idx.load_idx_dataset("mnist", tmp_path)


def test_label_out_of_range(tmp_path, monkeypatch, offline):
    labels = np.array([0, 1, 2, 10, 11, 3], np.uint8)
    _use_digests(monkeypatch, "mnist", _make_dataset(tmp_path / "mnist", train_labels=labels))
    with pytest.raises(DataError, match=r"2 train labels are outside 0\.\.9"):
        idx.load_idx_dataset("mnist", tmp_path)


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="valid names: fashion_mnist, mnist"):
        idx.load_idx_dataset("cifar10", tmp_path)


def test_dataset_table():
    files = {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    for spec in idx.DATASETS.values():
        assert set(spec["files"]) == files
        assert all(len(d) == 64 and int(d, 16) >= 0 for d in spec["files"].values())
        assert len(spec["mirrors"]) >= 2 and all(m.endswith("/") for m in spec["mirrors"])


# --- the real MNIST, when a data directory holding it is configured ----------------------


def _real_mnist_dir() -> Path | None:
    root = os.environ.get("JAXDL_DATA_DIR")
    if root and (Path(root) / "mnist").is_dir():
        return Path(root)
    return None


@pytest.mark.skipif(_real_mnist_dir() is None, reason="JAXDL_DATA_DIR has no mnist/ directory")
def test_real_mnist(monkeypatch):
    # A failed checksum must not fall back to the internet in a test.
    monkeypatch.setenv("JAXDL_MIRROR", "http://127.0.0.1:9/")
    data = idx.load_idx_dataset("mnist", _real_mnist_dir())
    assert data["x_train"].shape == (60000, 28, 28)
    assert data["x_test"].shape == (10000, 28, 28)
    assert data["x_train"].dtype == np.uint8 and data["y_train"].dtype == np.uint8
    train_hist = np.bincount(data["y_train"], minlength=10)
    test_hist = np.bincount(data["y_test"], minlength=10)
    assert train_hist.shape == test_hist.shape == (10,)
    assert train_hist.sum() == 60000 and test_hist.sum() == 10000
    # Published class counts of MNIST: every digit has between 5421 and 6742 training images.
    assert train_hist.min() == 5421 and train_hist.max() == 6742
    assert test_hist.min() == 892 and test_hist.max() == 1135


def test_dataset_arrays_are_parsed_once_per_process(tmp_path, monkeypatch):
    """jaxdl.data.load reuses parsed IDX arrays while the files are unchanged."""
    from jaxdl import data as data_lib
    from jaxdl.config import DataConfig

    calls = []
    fake = {"x_train": np.zeros((50, 28, 28), np.uint8), "y_train": np.arange(50) % 10,
            "x_test": np.zeros((20, 28, 28), np.uint8), "y_test": np.arange(20) % 10}

    def loader(name, data_dir):
        calls.append(name)
        return {k: v.copy() for k, v in fake.items()}

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    monkeypatch.setattr(data_lib.idx, "load_idx_dataset", loader)
    cfg = DataConfig(name="mnist", dir=str(tmp_path), val_fraction=0.2)
    a = data_lib.load(cfg)
    b = data_lib.load(cfg, seed=1)
    assert calls == ["mnist"]
    assert len(a.train) == len(b.train) == 40
    # A changed file is read again.
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"xy")
    data_lib.load(cfg)
    assert calls == ["mnist", "mnist"]
