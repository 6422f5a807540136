"""scikit-learn's handwritten digits, shown like MNIST.

The set (1,797 images of 8x8 pixels, values 0..16, ten classes; the UCI
"optdigits" test-set images) ships inside scikit-learn, so nothing is
downloaded. MNIST centres each digit in a 20x20 box inside a 28x28 frame;
here each 8x8 image is resized to 20x20 by bilinear interpolation and
padded by 4 pixels on every side, and its values are scaled to 0..255, so
a model trained on MNIST reads it with the same geometry and scale (the
transfer-learning experiment ``experiments/digits_from_mnist.yaml``).
"""

from __future__ import annotations

import numpy as np

from jaxdl.errors import DataError

__all__ = ["BOX", "SIZE", "load_digits", "resize_bilinear"]

SIZE = 28   # output frame, as MNIST
BOX = 20    # the digit's box inside it, as MNIST


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of 1-D linear interpolation with
    pixel-centre alignment (as ``jax.image.resize(..., "linear")`` when
    upsampling): output pixel ``i`` samples input coordinate
    ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the edge pixels."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    w = np.zeros((n_out, n_in), np.float64)
    w[np.arange(n_out), lo] += 1 - frac
    w[np.arange(n_out), hi] += frac
    return w


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """``[n, h, w]`` -> ``[n, size, size]`` by separable linear interpolation."""
    rows = _interp_matrix(images.shape[1], size)
    cols = _interp_matrix(images.shape[2], size)
    return np.einsum("ij,njk,lk->nil", rows, images.astype(np.float64), cols)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(x [1797, 28, 28] float32 in 0..255, y [1797] int32)``.

    Raises:
      DataError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        raise DataError("data.name: digits reads scikit-learn's bundled digits; install "
                        "scikit-learn (pip install scikit-learn)") from None
    bunch = sk_load()
    images = bunch.images.astype(np.float64) * (255.0 / 16.0)
    box = np.clip(resize_bilinear(images, BOX), 0.0, 255.0)
    pad = (SIZE - BOX) // 2
    x = np.zeros((len(box), SIZE, SIZE), np.float32)
    x[:, pad:pad + BOX, pad:pad + BOX] = box
    return x, bunch.target.astype(np.int32)
