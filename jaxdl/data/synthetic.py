"""Small synthetic datasets: the TensorFlow Playground sets, linear
regression, and noisy multi-frequency sine sequences.

The four 2-D classification sets follow the definitions in the Playground's
``dataset.ts`` (same radii, padding, centres, spiral turns and noise scales),
with labels mapped from the Playground's {+1, -1} to {1, 0}. Each class gets
``n_samples // 2`` generated points (class 0 takes the odd one out) and the
result is shuffled, so minibatches are mixed even without a shuffling loader.

As in the Playground, ``noise`` perturbs the *label* of the circle and xor
sets (the label is taken at a randomly displaced copy of the point, so points
near the boundary may flip) and the *position* of the gaussian and spiral
sets. At ``noise == 0`` every set is exactly separable by its defining rule,
except that the two gaussians (variance 0.5) can rarely overlap.

Everything is numpy and deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["PLAYGROUND", "FEATURES", "playground", "add_features", "linear_regression",
           "sine_sequences"]

PLAYGROUND = ("circle", "xor", "gaussian", "spiral")

FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin(x1)", "sin(x2)")

_CIRCLE_RADIUS = 5.0
_XOR_PADDING = 0.3


def _class_sizes(n_samples: int) -> tuple[int, int]:
    """(class-1 count, class-0 count): the leftover sample goes to class 0."""
    n1 = n_samples // 2
    return n1, n_samples - n1


def _circle(rng: np.random.Generator, n1: int, n0: int, noise: float):
    def ring(n: int, r_lo: float, r_hi: float) -> np.ndarray:
        r = rng.uniform(r_lo, r_hi, n)
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        return np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1)

    r = _CIRCLE_RADIUS
    x = np.concatenate([ring(n1, 0.0, 0.5 * r), ring(n0, 0.7 * r, r)])
    shifted = x + rng.uniform(-r, r, x.shape) * noise
    y = np.hypot(shifted[:, 0], shifted[:, 1]) < 0.5 * r
    return x, y


def _xor(rng: np.random.Generator, n1: int, n0: int, noise: float):
    n = n1 + n0
    # Playground: uniform in [-5, 5]^2, then each coordinate pushed _XOR_PADDING
    # away from its axis. That is |coordinate| uniform in [0.3, 5.3] with a random
    # sign; the quadrant is chosen per class here so the classes are balanced.
    magnitude = rng.uniform(0.0, 5.0, (n, 2)) + _XOR_PADDING
    sign1 = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    sign2 = np.where(np.arange(n) < n1, sign1, -sign1)
    x = magnitude * np.stack([sign1, sign2], axis=1)
    shifted = x + rng.uniform(-5.0, 5.0, x.shape) * noise
    y = shifted[:, 0] * shifted[:, 1] >= 0
    return x, y


def _gaussian(rng: np.random.Generator, n1: int, n0: int, noise: float):
    # Playground: variance scales linearly from 0.5 at noise 0 to 4 at noise 0.5.
    variance = 0.5 + 7.0 * noise
    std = np.sqrt(variance)
    x = np.concatenate([rng.normal(2.0, std, (n1, 2)), rng.normal(-2.0, std, (n0, 2))])
    y = np.arange(n1 + n0) < n1
    return x, y


def _spiral(rng: np.random.Generator, n1: int, n0: int, noise: float):
    def arm(n: int, delta_t: float) -> np.ndarray:
        frac = np.arange(n) / max(n, 1)
        r = 5.0 * frac
        t = 1.75 * 2.0 * np.pi * frac + delta_t
        pts = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
        return pts + rng.uniform(-1.0, 1.0, (n, 2)) * noise

    x = np.concatenate([arm(n1, 0.0), arm(n0, np.pi)])
    y = np.arange(n1 + n0) < n1
    return x, y


_GENERATORS: dict[str, Callable] = {
    "circle": _circle,
    "xor": _xor,
    "gaussian": _gaussian,
    "spiral": _spiral,
}


def playground(name: str, n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate one of the TensorFlow Playground's 2-D classification sets.

    Args:
      name: one of ``PLAYGROUND``: "circle" (1 inside radius 2.5, 0 on the ring
        3.5..5), "xor" (1 where x1*x2 > 0), "gaussian" (1 around (2, 2), 0
        around (-2, -2)) or "spiral" (two interleaved arms).
      n_samples: number of points; ``n_samples // 2`` are generated for class 1
        and the rest for class 0.
      noise: in [0, 1]; 0 is clean. The Playground's slider covers 0..0.5.
      seed: seed for ``np.random.default_rng``.

    Returns:
      x: float32 [n_samples, 2], coordinates roughly within [-6, 6].
      y: int32 [n_samples], labels in {0, 1}.

    Raises:
      ValueError: unknown name, negative n_samples or noise outside [0, 1].
    """
    if name not in _GENERATORS:
        raise ValueError(
            f"unknown playground dataset {name!r}; valid names: {', '.join(PLAYGROUND)}"
        )
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = np.random.default_rng(seed)
    n1, n0 = _class_sizes(int(n_samples))
    x, y = _GENERATORS[name](rng, n1, n0, float(noise))
    order = rng.permutation(n1 + n0)
    return x[order].astype(np.float32), y[order].astype(np.int32)


_FEATURE_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "x1": lambda a, b: a,
    "x2": lambda a, b: b,
    "x1^2": lambda a, b: a * a,
    "x2^2": lambda a, b: b * b,
    "x1*x2": lambda a, b: a * b,
    "sin(x1)": lambda a, b: np.sin(a),
    "sin(x2)": lambda a, b: np.sin(b),
}


def add_features(x2d: np.ndarray, features: Sequence[str] | str) -> np.ndarray:
    """Build the Playground's input features from 2-D points.

    Args:
      x2d: float [n, 2], columns x1 and x2.
      features: names from ``FEATURES``, in the column order wanted (a single
        name is accepted too).

    Returns:
      float32 [n, len(features)].

    Raises:
      ValueError: an unknown feature name, or ``x2d`` not of shape [n, 2].
    """
    if isinstance(features, str):
        features = (features,)
    unknown = [f for f in features if f not in _FEATURE_FNS]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; valid features: {', '.join(FEATURES)}")
    x2d = np.asarray(x2d, dtype=np.float64)
    if x2d.ndim != 2 or x2d.shape[1] != 2:
        raise ValueError(f"x2d must have shape [n, 2], got {list(x2d.shape)}")
    a, b = x2d[:, 0], x2d[:, 1]
    columns = [_FEATURE_FNS[f](a, b) for f in features]
    if not columns:
        return np.zeros((x2d.shape[0], 0), dtype=np.float32)
    return np.stack(columns, axis=1).astype(np.float32)


def linear_regression(
    n_samples: int, n_features: int, noise: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Generate y = x @ w + b + noise * N(0, 1) with a fixed random true w and b.

    Args:
      n_samples: number of rows n.
      n_features: number of input features d.
      noise: standard deviation of the additive Gaussian noise (>= 0).
      seed: seed for ``np.random.default_rng``; w [d, 1] and b (scalar) are
        drawn from it first, so they depend only on the seed and d.

    Returns:
      x: float32 [n, d], standard normal.
      y: float32 [n, 1].

    Raises:
      ValueError: negative sizes or noise.
    """
    if n_samples < 0 or n_features < 0:
        raise ValueError(f"n_samples and n_features must be >= 0, got {n_samples} and {n_features}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_features, 1))
    b = rng.normal()
    # Round x to float32 first so y is exact for the x the caller actually sees.
    x = rng.normal(size=(n_samples, n_features)).astype(np.float32)
    y = x.astype(np.float64) @ w + b + noise * rng.normal(size=(n_samples, 1))
    return x, y.astype(np.float32)


SINE_COMPONENTS = 3
SINE_PERIODS = (6.0, 40.0)      # time steps per cycle, drawn log-uniformly
SINE_AMPLITUDES = (0.1, 0.5)


def sine_sequences(n_sequences: int, steps: int, noise: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sums of sines, for next-value prediction.

    Each sequence is ``s_t = sum_k a_k sin(2 pi t / p_k + phi_k)`` over
    ``SINE_COMPONENTS`` components with its own periods ``p_k`` (log-uniform
    in ``SINE_PERIODS`` steps), amplitudes ``a_k`` and phases. The model sees
    ``s_t + noise * N(0, 1)`` and predicts the clean next value ``s_{t+1}``
    at every step: to beat "repeat the last value" it has to infer the
    frequencies from the past and filter out the noise.

    Args:
      n_sequences: number of sequences n.
      steps: time steps per sequence T.
      noise: standard deviation of the input noise (>= 0).
      seed: seed for ``np.random.default_rng``.

    Returns:
      x: float32 ``[n, T, 1]``, the noisy values ``s_0 .. s_{T-1}`` (+ noise).
      y: float32 ``[n, T, 1]``, the clean next values ``s_1 .. s_T``.
    """
    if n_sequences < 0 or steps < 1:
        raise ValueError(f"need n_sequences >= 0 and steps >= 1, got {n_sequences}, {steps}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    shape = (n_sequences, 1, SINE_COMPONENTS)
    lo, hi = np.log(SINE_PERIODS[0]), np.log(SINE_PERIODS[1])
    period = np.exp(rng.uniform(lo, hi, shape))
    amplitude = rng.uniform(*SINE_AMPLITUDES, shape)
    phase = rng.uniform(0.0, 2.0 * np.pi, shape)
    t = np.arange(steps + 1, dtype=np.float64)[None, :, None]
    clean = np.sum(amplitude * np.sin(2.0 * np.pi * t / period + phase), axis=-1)
    noisy = clean[:, :steps] + noise * rng.normal(size=(n_sequences, steps))
    return (noisy[..., None].astype(np.float32), clean[:, 1:, None].astype(np.float32))
