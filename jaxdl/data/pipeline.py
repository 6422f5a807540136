"""Host-side pipeline: split, normalise, and lay out splits for the device.

Statistics are fitted on the training split only and applied to every split;
splits and shuffles come from the config seed, so the same seed gives the
same examples in the same order on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Normalizer", "Split", "fit_normalizer", "split_off", "seeded_rng"]

# Purposes of the host-side random streams (numpy), kept apart so changing
# one (say, the validation fraction) leaves the others as they were.
_PURPOSES = {"split": 1, "val": 2, "limit": 3, "synthetic": 4}


def seeded_rng(seed: int, purpose: str) -> np.random.Generator:
    """A numpy generator for one purpose, derived from the config seed."""
    return np.random.default_rng([seed, _PURPOSES[purpose]])


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: inputs ``x [n, ...]`` float32 and targets ``y [n]`` int32
    (classification) or ``[n, d]`` float32 (regression)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> Split:
        return Split(self.x[index], self.y[index])


def split_off(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """Randomly move ``round(fraction * n)`` examples into a second split.

    Returns:
      (kept, held_out); ``held_out`` is empty when ``fraction`` is 0.
    """
    n = len(split)
    n_out = int(round(fraction * n))
    if fraction > 0 and not 0 < n_out < n:
        raise ValueError(f"a fraction of {fraction} of {n} examples leaves an empty split")
    order = rng.permutation(n)
    return split.take(np.sort(order[n_out:])), split.take(np.sort(order[:n_out]))


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """``x -> (x * scale - shift) / std``, fitted on a training split.

    ``scale`` maps raw values into [0, 1] (1/255 for images; 1/(max-min)
    with ``shift`` = min/(max-min) for tables in "unit" mode); ``mean`` and
    ``std`` then standardise. Arrays broadcast against one example.
    """

    scale: np.ndarray
    offset: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) * self.scale - self.offset
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list]:
        return {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(self).items()}


def fit_normalizer(x: np.ndarray, mode: str, image: bool) -> Normalizer:
    """Fit a :class:`Normalizer` on training inputs.

    Args:
      x: training inputs ``[n, ...]`` (raw: uint8 images or float tables).
      mode: ``"none"``, ``"unit"`` or ``"standardize"``.
      image: images use one global scale/mean/std; tables one per feature.
    """
    one = np.ones((), np.float32)
    zero = np.zeros((), np.float32)
    if mode == "none":
        return Normalizer(one, zero, zero, one)
    if image:
        scale, offset = np.float32(1.0 / 255.0), zero
    else:
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
        scale, offset = (1.0 / span).astype(np.float32), (lo / span).astype(np.float32)
    if mode == "unit":
        return Normalizer(np.asarray(scale), np.asarray(offset), zero, one)
    unit = x.astype(np.float32) * scale - offset
    if image:
        mean, std = unit.mean(dtype=np.float64), unit.std(dtype=np.float64)
    else:
        mean, std = unit.mean(axis=0, dtype=np.float64), unit.std(axis=0, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return Normalizer(np.asarray(scale, np.float32), np.asarray(offset, np.float32),
                      np.asarray(mean, np.float32), np.asarray(std, np.float32))
