"""GAN runs: what ``jaxdl train`` does for ``algorithm: gan``, and what
``jaxdl sample`` / ``jaxdl eval`` do with a GAN's run directory.

A GAN run trains :class:`jaxdl.algorithms.gan.GAN` (networks from
``gan.generator`` / ``gan.discriminator``, one optax chain per player from
``gan.g_optim`` / ``gan.d_optim``) on the training images scaled to [-1, 1]:

* each epoch is one compiled ``lax.scan`` over its steps (``train.steps_per_call``
  cuts it into shorter calls); the progress bar shows both players' losses;
* each evaluation generates ``gan.eval_samples`` images from one fixed latent
  batch and scores them with :mod:`jaxdl.scorer` against the *validation*
  images: ``val_frechet`` (Frechet distance of the scorer's features; the
  monitored metric by default, so the best checkpoint is the lowest),
  ``val_confident`` and ``val_class_entropy``;
* every ``gan.grid_every`` epochs (and after the last) ``samples/epoch_NNNN.png`` shows
  ``gan.grid_size`` samples of one fixed latent batch, so progress can be
  watched; ``samples.png`` is the best checkpoint's grid;
* ``summary.json`` adds the best and final checkpoints' scores against the
  *test* images, and two references on the same scale (``baselines.test``):
  ``frechet_real`` (real training images, the floor) and
  ``frechet_untrained`` (the untrained generator, the ceiling).

The scorer (an MLP classifier trained by jaxdl on the run's dataset) is
trained on first use and cached under ``<data dir>/scorers/``; a run records
it in ``run.json`` and keeps scoring with it (:func:`run_scorer`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl import optim
from jaxdl import scorer as scorer_lib
from jaxdl.algorithms.gan import GAN, GANState, class_statistics, frechet_distance, gaussian_stats
from jaxdl.compilation_cache import BuiltByShape, Programs
from jaxdl.config import Config
from jaxdl.data import signed_images
from jaxdl.errors import CheckpointError, ConfigError
from jaxdl.loop import run_keys
from jaxdl.metrics import save_image_grid
from jaxdl.models import conv_impl
from jaxdl.models.gan import Discriminator, Generator

__all__ = ["GANJob", "GANProgram", "build_program", "evaluate", "image_shape", "recorded_scorer",
           "run_scorer", "sample_grid"]

# Compiled programs by shape (bounded, as experiment's engines).
_PROGRAMS = BuiltByShape()
# Train metrics in display order (both players' losses first).
METRICS = config_lib.GAN_METRICS["train"]


def image_shape(cfg: Config) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the config's images."""
    if cfg.data.name not in config_lib.IDX_DATASETS:
        raise ConfigError(f"data.name: a GAN needs image data, got {cfg.data.name!r}")
    return (28, 28, 1)


class GANProgram:
    """Compiled GAN epochs and sampling for one shape (network structure,
    optimizer structures, batch size, training-set size); hyperparameter
    values and the seed are data, so runs that differ only in them share it.

    Args:
      gan: the :class:`GAN`.
      image: ``(H, W, C)``.
      n_train: training images.
      batch_size: real images per discriminator update.
      steps_per_call: steps per compiled call (None: the whole epoch).
      sample_batch: latents per compiled sampling call.
    """

    def __init__(self, gan: GAN, image: tuple[int, int, int], n_train: int, batch_size: int,
                 steps_per_call: int | None, sample_batch: int):
        self.gan, self.image, self.n_train, self.batch_size = gan, image, n_train, batch_size
        self.steps_per_epoch = n_train // (batch_size * gan.n_critic)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{n_train} training images are fewer than one step's "
                             f"{batch_size * gan.n_critic}")
        self.steps_per_call = max(1, min(steps_per_call or self.steps_per_epoch,
                                         self.steps_per_epoch))
        self.sample_batch = sample_batch
        # Progress reports from inside a scanned epoch: about 40 per epoch.
        self.progress_every = max(1, self.steps_per_epoch // 40)
        self._programs = Programs()
        self._listener: Callable[[int, Mapping[str, float]], None] | None = None

    @property
    def compile_seconds(self) -> float:
        return self._programs.seconds

    def init(self, rng: jax.Array) -> GANState:
        return self.gan.init(rng, self.image)

    def _progress(self, done, metrics) -> None:
        listener = self._listener
        if listener is not None:
            listener(int(done), {k: float(metrics[k]) for k in METRICS})

    def _chunks(self) -> list[int]:
        full, tail = divmod(self.steps_per_epoch, self.steps_per_call)
        return [self.steps_per_call] * full + ([tail] if tail else [])

    def _order(self, rng):
        return self.gan.epoch_order(rng, self.n_train, self.batch_size)

    def _chunk_fn(self, length: int, progress: bool):
        def run(state, images, order, start, step_key):
            part = jax.lax.dynamic_slice_in_dim(order, start, length)
            return self.gan.train_steps(state, images, part, step_key,
                                        self._progress if progress else None,
                                        self.progress_every, start)
        return run

    def _order_call(self, rng):
        return self._programs.get(("order",), lambda: self._order, (rng,))

    def _chunk_call(self, length: int, progress: bool, args: tuple):
        return self._programs.get(("train", length, progress),
                                  lambda: self._chunk_fn(length, progress), args, donate=(0,))

    def _sample_call(self, state: GANState):
        z = jax.ShapeDtypeStruct((self.sample_batch, self.gan.latent), jnp.float32)
        return self._programs.get(("sample",), lambda: self.gan.sample, (state, z))

    def compile(self, state: GANState, images: jax.Array, rng: jax.Array, *,
                progress: bool = False) -> None:
        """Compile the epoch's calls and sampling without running them."""
        self._order_call(rng)
        steps = self.steps_per_epoch
        order = jax.ShapeDtypeStruct((steps, self.gan.n_critic, self.batch_size), jnp.int32)
        start = jnp.zeros((), jnp.int32)
        step_key = jax.eval_shape(lambda k: jax.random.split(k)[1], rng)
        for length in sorted(set(self._chunks())):
            self._chunk_call(length, progress, (state, images, order, start, step_key))
        self._sample_call(state)

    def train_epoch(self, state: GANState, images: jax.Array, rng: jax.Array,
                    on_progress: Callable[[int, Mapping[str, float]], None] | None = None
                    ) -> tuple[GANState, dict[str, float]]:
        """One epoch (``state`` donated); mean metrics as host floats."""
        order, step_key = self._order_call(rng)(rng)
        progress = on_progress is not None
        self._listener = on_progress
        parts, done = [], 0
        try:
            for length in self._chunks():
                start = jnp.asarray(done, jnp.int32)
                args = (state, images, order, start, step_key)
                state, metrics = self._chunk_call(length, progress, args)(*args)
                parts.append(metrics)
                done += length
            # Dispatch is asynchronous: wait for the epoch (and so for its
            # progress callbacks) before the listener goes.
            parts = jax.device_get(parts)
        finally:
            self._listener = None
        means = {k: float(np.mean(np.concatenate([np.atleast_1d(p[k]) for p in parts])))
                 for k in METRICS}
        return state, means

    def sample(self, state: GANState, z: jax.Array | np.ndarray) -> np.ndarray:
        """Images ``[n, H, W, C]`` in [-1, 1] for latents ``z [n, latent]``,
        generated in compiled chunks of ``sample_batch``."""
        z = np.asarray(z, np.float32)
        n, b = z.shape[0], self.sample_batch
        pad = -n % b
        z = np.concatenate([z, np.zeros((pad, z.shape[1]), np.float32)])
        fn = self._sample_call(state)
        out = [np.asarray(fn(state, jnp.asarray(z[i:i + b]))) for i in range(0, len(z), b)]
        return np.concatenate(out)[:n]


def _shape_key(cfg: Config, n_train: int, backend: str) -> tuple:
    g = config_lib.to_dict(cfg.gan)
    for name in ("g_optim", "d_optim", "eval_samples", "grid_every", "grid_size"):
        del g[name]
    return (json.dumps(g, sort_keys=True), optim.structure_key(cfg.gan.g_optim),
            optim.structure_key(cfg.gan.d_optim), cfg.data.name, n_train,
            cfg.train.batch_size, cfg.train.steps_per_call, _sample_batch(cfg), backend)


def _sample_batch(cfg: Config) -> int:
    return min(cfg.train.eval_batch_size, cfg.gan.eval_samples)


def build_program(cfg: Config, n_train: int) -> GANProgram:
    """The (cached) :class:`GANProgram` for this config's shape."""
    backend = jax.default_backend()

    def build() -> GANProgram:
        g, conv, shape = cfg.gan, conv_impl(cfg.gan, backend), image_shape(cfg)
        steps = n_train // (cfg.train.batch_size * g.n_critic)
        gan = GAN(
            Generator(g.generator.kind, width=g.generator.width, depth=g.generator.depth,
                      norm=g.generator.norm, image=shape, conv=conv),
            Discriminator(g.discriminator.kind, width=g.discriminator.width,
                          depth=g.discriminator.depth, conv=conv),
            optim.make(g.g_optim, steps, cfg.train.epochs),
            optim.make(g.d_optim, steps, cfg.train.epochs),
            latent=g.latent, loss=g.loss, n_critic=g.n_critic)
        return GANProgram(gan, shape, n_train, cfg.train.batch_size, cfg.train.steps_per_call,
                          _sample_batch(cfg))

    return _PROGRAMS.get(_shape_key(cfg, n_train, backend), build)


def new_state(cfg: Config, program: GANProgram) -> GANState:
    """Fresh parameters from the seed's init key, with this config's
    optimizer hyperparameters injected."""
    state = program.init(run_keys(cfg.seed)["init"])
    steps, epochs = program.steps_per_epoch, cfg.train.epochs
    return state.replace(
        g_opt_state=optim.set_hyperparams(state.g_opt_state,
                                          optim.hyperparams(cfg.gan.g_optim, steps, epochs)),
        d_opt_state=optim.set_hyperparams(state.d_opt_state,
                                          optim.hyperparams(cfg.gan.d_optim, steps, epochs)))


def _latents(cfg: Config, purpose: int, n: int) -> np.ndarray:
    """Fixed latents of the run: ``purpose`` 0 scores, 1 grids."""
    key = jax.random.fold_in(run_keys(cfg.seed)["latents"], purpose)
    return np.asarray(jax.random.normal(key, (n, cfg.gan.latent)))


class GANJob:
    """A GAN run's data, scorer and compiled program, as
    :func:`~jaxdl.loop.fit` drives them (see :class:`jaxdl.loop.Job`).

    Args:
      cfg: a config with ``algorithm: gan``.
      log: where one-line messages go.
      scorer: the scorer's directory (default: the cached scorer for
        ``data.name``, trained first when missing).
    """

    divergence_hint = ("try a lower gan.g_optim.learning_rate / gan.d_optim.learning_rate, "
                       "or a clip_norm")

    def __init__(self, cfg: Config, log: Callable[[str], None] = print,
                 scorer: str | Path | None = None):
        if cfg.algorithm != "gan":
            raise ConfigError(f"algorithm: a GAN job needs algorithm gan, got {cfg.algorithm!r}")
        self.cfg = cfg
        # Pixels / 255, then [-1, 1] (the generator's tanh range).
        dataset = data_lib.load(dataclasses.replace(cfg.data, normalize="unit"), cfg.seed)
        self.splits = {"train": signed_images(dataset.train.x),
                       "test": signed_images(dataset.test.x)}
        if dataset.val is not None:
            self.splits["val"] = signed_images(dataset.val.x)
        self.images = jnp.asarray(self.splits["train"])
        self.program = build_program(cfg, len(self.splits["train"]))
        self.steps_per_epoch = self.program.steps_per_epoch
        self._keys = run_keys(cfg.seed)
        if scorer is not None:
            self.scorer = scorer_lib.open_scorer(scorer, cfg.data.dir)
        else:
            cached = scorer_lib.scorer_dir(cfg.data.name, cfg.data.dir)
            if not cached.exists():
                log(f"training the {cfg.data.name} scorer for quality scores once (about 20 s "
                    f"on 2 CPU cores); cached in {cached}")
            self.scorer = scorer_lib.load_scorer(cfg.data.name, cfg.data.dir)
        self._reference: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._eval_z = _latents(cfg, 0, cfg.gan.eval_samples)
        self._grid_z = _latents(cfg, 1, cfg.gan.grid_size)
        self.run_dir: Path | None = None

    @property
    def compile_seconds(self) -> float:
        return self.program.compile_seconds

    def epoch_steps(self, epoch: int) -> int:
        return self.steps_per_epoch

    def run_info(self) -> dict[str, Any]:
        return {"steps_per_epoch": self.program.steps_per_epoch,
                "steps_per_call": self.program.steps_per_call,
                "images": "pixels / 127.5 - 1, in [-1, 1]",
                "scorer": str(self.scorer.run_dir.resolve())}

    def prepare(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        (run_dir / "samples").mkdir(exist_ok=True)

    def new_state(self) -> GANState:
        return new_state(self.cfg, self.program)

    def compile(self, state: GANState, *, progress: bool) -> None:
        self.program.compile(state, self.images, self._keys["shuffle"], progress=progress)

    def train_epoch(self, state: GANState, epoch: int, on_progress):
        return self.program.train_epoch(state, self.images,
                                        jax.random.fold_in(self._keys["shuffle"], epoch),
                                        on_progress)

    def reference(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean and covariance of a split's real images (the
        training split: its first ``gan.eval_samples``)."""
        if split == "test" and self.scorer.dataset == self.cfg.data.name:
            return self.scorer.real_stats          # the same images, computed once
        if split not in self._reference:
            images = self.splits[split]
            if split == "train":
                images = images[:self.cfg.gan.eval_samples]
            self._reference[split] = gaussian_stats(self.scorer.features_and_probs(images)[0])
        return self._reference[split]

    def score(self, state: GANState, split: str) -> dict[str, float]:
        """``frechet`` (to ``split``'s real images), ``confident`` and
        ``class_entropy`` of ``gan.eval_samples`` samples of fixed latents."""
        samples = self.program.sample(state, self._eval_z)
        if not np.isfinite(samples).all():
            return {"frechet": math.nan, "confident": math.nan, "class_entropy": math.nan}
        feats, probs = self.scorer.features_and_probs(samples)
        return {"frechet": frechet_distance(*gaussian_stats(feats), *self.reference(split)),
                **class_statistics(probs)}

    def evaluate(self, state: GANState) -> dict[str, dict[str, float]]:
        return {"val": self.score(state, "val")} if "val" in self.splits else {}

    def grid(self, state: GANState, path: Path) -> Path:
        """A grid of ``gan.grid_size`` samples of the run's fixed grid latents."""
        return save_image_grid(self.program.sample(state, self._grid_z), path)

    def after_epoch(self, epoch: int, state: GANState) -> None:
        if self.run_dir is not None and (epoch % self.cfg.gan.grid_every == 0
                                         or epoch == self.cfg.train.epochs):
            self.grid(state, self.run_dir / "samples" / f"epoch_{epoch:04d}.png")

    def test(self, state: GANState) -> dict[str, float]:
        return self.score(jax.device_put(state), "test")

    def baselines(self) -> dict[str, dict[str, float]]:
        real = frechet_distance(*self.reference("train"), *self.reference("test"))
        return {"test": {"frechet_real": real,
                         "frechet_untrained": self.score(self.new_state(), "test")["frechet"]}}

    def artifacts(self, state: GANState, run_dir: Path, log) -> None:
        path = self.grid(jax.device_put(state), run_dir / "samples.png")
        log(f"samples: {path}")


def _restore(run_dir: str | Path, which: str) -> tuple[Config, GANProgram, GANState, int]:
    from jaxdl import experiment

    cfg = experiment.run_config(run_dir)
    if cfg.algorithm != "gan":
        raise ConfigError(f"{run_dir} is not a GAN run (algorithm {cfg.algorithm})",
                          str(run_dir))
    ckpt_dir = experiment.checkpoint_dir(run_dir, which)
    n_train = config_lib.split_sizes(cfg.data)["train"]
    program = build_program(cfg, n_train)
    state, epoch = experiment.restore_state(ckpt_dir, which, lambda: new_state(cfg, program))
    return cfg, program, state, epoch


def sample_grid(run_dir: str | Path, n: int = 64, *, seed: int = 0, which: str = "best",
                out: str | Path | None = None) -> Path:
    """Write a grid of ``n`` fresh samples from a GAN run's checkpoint.

    Needs only the run directory (no dataset, no scorer).

    Args:
      run_dir: a directory written by ``jaxdl train`` with ``algorithm: gan``.
      n: images in the grid.
      seed: latent seed (same seed, same images).
      which: ``best`` (lowest Frechet distance) or ``latest``.
      out: the PNG to write (default ``RUN_DIR/sample-<which>-seed<seed>.png``).
    Returns:
      The PNG's path.
    Raises:
      ValueError: ``n`` < 1. ConfigError / CheckpointError: not a GAN run,
        or no checkpoint.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cfg, program, state, _ = _restore(run_dir, which)
    z = jax.random.normal(jax.random.key(seed), (n, cfg.gan.latent))
    path = Path(out) if out is not None else Path(run_dir) / f"sample-{which}-seed{seed}.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror}") from None
    return save_image_grid(program.sample(state, z), path)


def recorded_scorer(run_dir: str | Path) -> Path | None:
    """The scorer directory a GAN run recorded in its ``run.json`` (None if
    it recorded none).

    Raises:
      CheckpointError: ``run.json`` is not valid JSON.
    """
    path = Path(run_dir) / "run.json"
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text()).get("scorer")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a valid run record ({e})") from None
    return Path(recorded) if recorded else None


def run_scorer(run_dir: str | Path, cfg: Config, log: Callable[[str], None], *,
               strict: bool) -> Path | None:
    """The scorer to keep scoring a GAN run with: the one it recorded, or,
    when that directory is gone (the run or the data directory moved), the
    one cached from the same scorer config (same fingerprint, same directory
    name) in this config's data directory. None: the run recorded none (use
    the default).

    Raises:
      CheckpointError: with ``strict``, when neither exists (scores from
        another scorer are not comparable); without, that is logged and
        None returned.
    """
    recorded = recorded_scorer(run_dir)
    if recorded is None or recorded.exists():
        return recorded
    here = scorer_lib.scorer_dir(cfg.data.name, cfg.data.dir)
    if here.name == recorded.name and (here / "summary.json").exists():
        log(f"the run's scorer {recorded} is missing; using {here}, cached from the same "
            "scorer config")
        return here
    msg = (f"{run_dir} was scored with the scorer in {recorded}, which is missing, and "
           f"{here} is another scorer or none")
    if strict:
        raise CheckpointError(f"{msg}; continuing with another scorer would compare the scores "
                              "of two classifiers. Restore that directory, or train into a new "
                              "--workdir")
    log(f"jaxdl: warning: {msg}; these scores come from the data directory's scorer and are "
        "not comparable with the run's own")
    return None


def evaluate(run_dir: str | Path, which: str = "best", splits: tuple[str, ...] = ("test",),
             *, data_dir: str | None = None,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
             ) -> dict[str, Any]:
    """Quality scores of a GAN run's checkpoint against each split's real
    images, with the scorer the run recorded (:func:`run_scorer`; when it is
    gone, the data directory's, with a warning through ``log``): ``{"epoch":
    ..., "test": {"frechet", "confident", "class_entropy"}}``."""
    from jaxdl import experiment

    cfg = experiment.run_config(run_dir)
    if data_dir is not None:
        cfg = cfg.replace({"data.dir": data_dir})
    _, _, state, epoch = _restore(run_dir, which)
    # The scorer the run was scored with: another one gives other numbers.
    job = GANJob(cfg, log=log, scorer=run_scorer(run_dir, cfg, log, strict=False))
    out: dict[str, Any] = {"epoch": epoch}
    for split in splits:
        if split not in job.splits:
            raise ConfigError(f"this run has no {split!r} split (data.val_fraction is "
                              f"{cfg.data.val_fraction}); available: "
                              f"{', '.join(job.splits)}", str(run_dir))
        out[split] = job.score(state, split)
    return out
