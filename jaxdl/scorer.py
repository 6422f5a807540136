"""Sample-quality scores for image generators, from an MNIST classifier that
jaxdl trains itself.

The scorer is an MLP (784-256-256-10, ReLU, inputs scaled to [0, 1]) trained
by :func:`jaxdl.run` from :data:`SCORER_CONFIG` the first time it is needed,
and cached as an ordinary run directory under the data directory::

    $JAXDL_DATA_DIR/scorers/<dataset>-<config fingerprint>/

(``data.dir`` / ``$JAXDL_DATA_DIR`` / ``~/.cache/jaxdl``, as for datasets).
Later calls, processes and sweep workers restore it from there; a changed
scorer config gets a new fingerprint and so a new directory. Training goes
into a temporary directory that is renamed into place, so concurrent first
uses cannot leave a half-written scorer (the loser's copy is discarded).

Scores of generated images ``[n, 28, 28, 1]`` in [-1, 1]
(:meth:`Scorer.score`):

* ``frechet``: Frechet distance between Gaussian fits of the scorer's last
  hidden layer (256 ReLU features) on the samples and on the real test
  images (the FID recipe of Heusel et al., 2017, with this classifier in
  place of Inception).
* ``confident``: fraction of samples whose top class has probability > 0.9.
* ``class_entropy``: entropy (nats) of the histogram of predicted classes;
  ``ln 10 = 2.30`` when all digits are equally frequent, low under mode
  collapse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import config as config_lib
from jaxdl.algorithms.gan import class_statistics, frechet_distance, gaussian_stats
from jaxdl.data import download, signed_images
from jaxdl.errors import CheckpointError
from jaxdl.metrics import write_json
from jaxdl.models.layers import activation

__all__ = ["SCORER_CONFIG", "Scorer", "load_scorer", "open_scorer", "scorer_dir"]

SCORER_CONFIG: dict[str, Any] = {
    "name": "scorer",
    "seed": 0,
    "data": {"name": "mnist", "val_fraction": 0.1, "normalize": "unit"},
    "model": {"name": "mlp", "depth": 2, "width": 256, "activation": "relu", "dropout": 0.1},
    "optim": {"name": "adam", "learning_rate": 1.0e-3, "schedule": "cosine"},
    "train": {"epochs": 8, "batch_size": 128, "monitor": "val_accuracy"},
}
"""The scorer's training config (``data.name`` and ``data.dir`` are filled in
per call). Measured: see the README's GAN section."""

EVAL_BATCH = 1000


def _scorer_config(dataset: str, data_dir: str | None, overrides: dict[str, Any] | None
                   ) -> config_lib.Config:
    tree = {**SCORER_CONFIG, "data": {**SCORER_CONFIG["data"], "name": dataset}}
    cfg = config_lib.from_dict(tree, "scorer")
    if overrides:
        cfg = cfg.replace(overrides)
    return cfg.replace({"data.dir": data_dir}) if data_dir else cfg


def scorer_dir(dataset: str = "mnist", data_dir: str | None = None,
               overrides: dict[str, Any] | None = None, cache: str | Path | None = None
               ) -> Path:
    """Where the scorer for ``dataset`` is (or will be) cached: under
    ``cache``, by default ``<data directory>/scorers``."""
    return _scorer_dir(_scorer_config(dataset, data_dir, overrides), data_dir, cache)


def _scorer_dir(cfg: config_lib.Config, data_dir: str | None, cache: str | Path | None
                ) -> Path:
    root = Path(cache) if cache is not None else download.default_data_dir(data_dir) / "scorers"
    return root / f"{cfg.data.name}-{config_lib.fingerprint(cfg)}"


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A trained classifier and the real test images' feature statistics.

    Attributes:
      run_dir: the scorer's run directory.
      model, params: the Flax MLP and its parameters.
      real_test: the real test images, ``[n, 28, 28, 1]`` in [-1, 1].
      dataset: the dataset it classifies (``mnist``, ``fashion_mnist``).
    """

    run_dir: Path
    model: nn.Module
    params: Any
    real_test: np.ndarray
    dataset: str = "mnist"

    @cached_property
    def _apply(self):
        act = activation(self.model.activation)

        def run(params, images):
            x = (images.reshape(images.shape[0], -1) + 1.0) / 2.0     # [-1, 1] -> [0, 1]
            logits, inter = self.model.apply(
                {"params": params}, x, capture_intermediates=lambda m, _: isinstance(m, nn.Dense))
            dense = sorted((k for k in inter["intermediates"] if k.startswith("Dense_")),
                           key=lambda k: int(k.split("_")[1]))
            # The last hidden layer: the Dense before the output one, activated.
            features = act(inter["intermediates"][dense[-2]]["__call__"][0])
            return features, jax.nn.softmax(logits)
        return jax.jit(run)

    def features_and_probs(self, images: np.ndarray | jax.Array
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Last-hidden-layer features ``[n, 256]`` and class probabilities
        ``[n, 10]`` of images ``[n, 28, 28, (1)]`` in [-1, 1]."""
        images = jnp.asarray(images, jnp.float32)
        feats, probs = [], []
        for i in range(0, images.shape[0], EVAL_BATCH):
            f, p = self._apply(self.params, images[i:i + EVAL_BATCH])
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)

    @cached_property
    def real_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the real test images' features."""
        return gaussian_stats(self.features_and_probs(self.real_test)[0])

    def score(self, images: np.ndarray | jax.Array) -> dict[str, float]:
        """``frechet``, ``confident``, ``class_entropy`` of generated images
        (see the module docstring)."""
        feats, probs = self.features_and_probs(images)
        mu, cov = gaussian_stats(feats)
        return {"frechet": frechet_distance(mu, cov, *self.real_stats),
                **class_statistics(probs)}

    def frechet_between(self, a: np.ndarray | jax.Array, b: np.ndarray | jax.Array) -> float:
        """Frechet distance between two image sets' features."""
        return frechet_distance(*gaussian_stats(self.features_and_probs(a)[0]),
                                *gaussian_stats(self.features_and_probs(b)[0]))


def load_scorer(dataset: str = "mnist", data_dir: str | None = None, *,
                overrides: dict[str, Any] | None = None, cache: str | Path | None = None,
                quiet: bool = True) -> Scorer:
    """The cached scorer for ``dataset``, trained first when missing.

    Args:
      dataset: ``mnist`` or ``fashion_mnist``.
      data_dir: the data directory (default ``$JAXDL_DATA_DIR``, ...).
      overrides: changes to :data:`SCORER_CONFIG` (tests: fewer epochs); they
        change the fingerprint, so the cache directory too.
      cache: directory of cached scorers (default ``<data directory>/scorers``).
      quiet: no training output.
    Raises:
      DataError: the dataset is missing or corrupt (as for training).
      CheckpointError: the cache directory exists but holds no finished
        scorer (delete it to retrain).
      RuntimeError: the scorer's training did not complete (diverged).
    """
    from jaxdl import experiment

    cfg = _scorer_config(dataset, data_dir, overrides)
    target = _scorer_dir(cfg, data_dir, cache)
    if target.exists() and not (target / "summary.json").exists():
        raise CheckpointError(f"{target} holds no finished scorer (an interrupted copy or "
                              f"deletion?); delete the directory to retrain")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            result = experiment.run(cfg, workdir=tmp / "run", progress=False, quiet=quiet)
            if result.status != "completed":
                raise RuntimeError(f"training the scorer ended with status {result.status}")
            summary = json.loads((tmp / "run" / "summary.json").read_text())
            write_json(tmp / "run" / "summary.json", {**summary, "run_dir": str(target)})
            try:
                os.replace(tmp / "run", target)
            except OSError:
                if not (target / "summary.json").exists():   # not a concurrent winner
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return open_scorer(target, data_dir)


def open_scorer(path: str | Path, data_dir: str | None = None) -> Scorer:
    """The scorer cached in ``path`` (e.g. the one a GAN run recorded in its
    ``run.json``), with its real test images from ``data_dir``.

    Raises:
      CheckpointError: ``path`` holds no finished scorer.
    """
    from jaxdl import experiment

    path = Path(path)
    if not (path / "summary.json").exists():
        raise CheckpointError(f"{path} holds no finished scorer")
    restored = experiment.restore(path, data_dir=str(download.default_data_dir(data_dir)))
    return Scorer(path, restored.model, restored.params,
                  signed_images(restored.dataset.test.x),     # normalize: unit -> [-1, 1]
                  restored.config.data.name)
