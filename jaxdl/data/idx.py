"""IDX files (the MNIST format) and the MNIST / Fashion-MNIST loaders.

IDX layout: two zero bytes, a type byte, a byte giving the number of
dimensions, then one big-endian uint32 per dimension, then the values in
C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxdl.data.download import ENV_MIRROR, default_data_dir, fetch, mirror_urls
from jaxdl.errors import DataError

__all__ = ["ENV_MIRROR", "DATASETS", "read_idx", "load_idx_dataset"]


# IDX type byte -> numpy dtype of the stored (big-endian) values.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

# Per dataset: "mirrors" is a tuple of base URLs (the file name is appended),
# "files" maps each file name to its SHA-256 (None would mean "unknown": such a
# file is refused rather than used unverified).
DATASETS: dict[str, dict] = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        # Verified against the original LeCun files (whose MD5s are the
        # published f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...).
        "files": {
            _TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            _TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            _TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            _TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion_mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        # SHA-256s as listed in pytorch/vision
        # (torchvision/prototype/datasets/_builtin/mnist.py, FashionMNIST._CHECKSUMS)
        # and Britefury/batchup (batchup/datasets/fashion_mnist.py); other public
        # code pairs them with the official MD5s 8d4fb7e6..., 25c81989...,
        # bef4ecab..., bb300cfd.... (An older batchup revision lists different
        # digests, 08dc20ab... etc., from before the files were re-uploaded.)
        "files": {
            _TRAIN_IMAGES: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            _TRAIN_LABELS: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            _TEST_IMAGES: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            _TEST_LABELS: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}

_NUM_CLASSES = 10


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed when its name ends in ``.gz``.

    Args:
      path: the file.

    Returns:
      An array with the shape in the header and the native-endian dtype of the
      type byte (uint8, int8, int16, int32, float32 or float64); writable.

    Raises:
      DataError: the file cannot be read, is not valid gzip, has a bad magic
        number, or its payload is shorter or longer than the header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, shape, offset = _parse_header(data, path)
    need = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    have = len(data) - offset
    if have < need:
        raise DataError(
            f"{path}: truncated IDX file: header says shape {shape} of {dtype.name} "
            f"({need} bytes of data) but only {have} bytes follow the header"
        )
    if have > need:
        raise DataError(
            f"{path}: {have - need} bytes of trailing garbage after the {need} bytes of "
            f"data for shape {shape}"
        )
    values = np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize, offset=offset)
    # astype copies into native byte order, which also makes the array writable.
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _parse_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Return (stored dtype, shape, offset of the first value)."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    type_byte, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_byte not in _IDX_TYPES or ndim == 0:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}; expected 0x0000TTNN with type "
            f"byte TT in {{{', '.join(f'0x{t:02x}' for t in _IDX_TYPES)}}} and NN >= 1 "
            "dimensions (e.g. 0x00000803 for MNIST images, 0x00000801 for labels)"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {offset} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return _IDX_TYPES[type_byte], shape, offset


def _normalise_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown IDX dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return key


def _check_split(images: np.ndarray, labels: np.ndarray, split: str, where: Path) -> None:
    """Raise DataError unless images [n, h, w] uint8 and labels [n] in 0..9 agree."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{where}: {split} images should be uint8 [n, rows, cols], got "
            f"{images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{where}: {split} labels should be uint8 [n], got {labels.dtype} {list(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{where}: {split} has {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        bad = int(np.count_nonzero(labels >= _NUM_CLASSES))
        raise DataError(
            f"{where}: {bad} {split} labels are outside 0..{_NUM_CLASSES - 1} "
            f"(max {int(labels.max())})"
        )


def load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    urls: Sequence[str] | str | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Load MNIST or Fashion-MNIST, downloading and verifying the files if needed.

    Files live in ``<data_dir>/<name>/`` (e.g. ``<data_dir>/mnist/*.gz``) under
    their original names.

    Args:
      name: "mnist" or "fashion_mnist" ("fashion-mnist" is accepted too).
      data_dir: the data directory; None means ``default_data_dir()``.
      urls: base URLs to download from instead of the built-in mirrors. When
        None, ``$JAXDL_MIRROR`` (a single base URL) is used alone if set.
      timeout: seconds per connection and read.
      progress: show download progress on stderr.

    Returns:
      {"x_train": uint8 [60000, 28, 28], "y_train": uint8 [60000],
       "x_test": uint8 [10000, 28, 28], "y_test": uint8 [10000]}.

    Raises:
      DataError: unknown name, a file that cannot be fetched or verified, or
        files whose contents do not fit together.
    """
    key = _normalise_name(name)
    spec = DATASETS[key]
    directory = (default_data_dir() if data_dir is None else Path(data_dir).expanduser()) / key
    arrays = {}
    for out_key, filename in (
        ("x_train", _TRAIN_IMAGES),
        ("y_train", _TRAIN_LABELS),
        ("x_test", _TEST_IMAGES),
        ("y_test", _TEST_LABELS),
    ):
        path = fetch(
            filename,
            spec["files"][filename],
            directory,
            mirror_urls(filename, spec["mirrors"], urls),
            timeout=timeout,
            progress=progress,
        )
        arrays[out_key] = read_idx(path)
    _check_split(arrays["x_train"], arrays["y_train"], "train", directory)
    _check_split(arrays["x_test"], arrays["y_test"], "test", directory)
    return arrays
