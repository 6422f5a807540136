"""Experiment configuration: frozen, typed, validated dataclasses.

This module is the only YAML reader in jaxdl. A config file mirrors the
dataclasses below section by section::

    name: mnist_mlp
    seed: 0
    data: {name: mnist, val_fraction: 0.1}
    model: {name: mlp, depth: 2, width: 512}
    optim: {name: adam, learning_rate: 1.0e-3}
    train: {epochs: 10, batch_size: 128}

Every field has a default, so a file states only what differs. Loading is
strict: an unknown key, a wrong type or an out-of-range value raises one
:class:`~jaxdl.errors.ConfigError` naming the file, the dotted key, the bad
value and the valid choices. Configs are never mutated; derive a new one with
:meth:`Config.replace` (dotted keys) or :func:`apply_overrides`
(``key=value`` strings, as ``jaxdl train --set`` takes them).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from jaxdl.errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "ALGORITHMS",
    "DQNConfig",
    "GYMNAX_ENVIRONMENTS",
    "PPOConfig",
    "RL_ALGORITHMS",
    "RLConfig",
    "GAN_LOSSES",
    "GAN_METRICS",
    "GANConfig",
    "GANOptimConfig",
    "GeneratorConfig",
    "DiscriminatorConfig",
    "DATASETS",
    "LOSSES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "CheckpointConfig",
    "RECURRENT_MODELS",
    "SEQUENCE_DATASETS",
    "SampleConfig",
    "TransferConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PRECISIONS",
    "ParallelConfig",
    "TrainConfig",
    "DATASET_TASKS",
    "NOT_FINGERPRINTED",
    "TASK_LOSSES",
    "TASK_METRICS",
    "apply_overrides",
    "default_monitor",
    "dump",
    "fingerprint",
    "flatten",
    "from_dict",
    "load",
    "monitor_direction",
    "monitor_mode",
    "rl_updates",
    "read_yaml",
    "split_sizes",
    "to_dict",
]

# MNIST-format IDX files, downloaded and verified (and what a GAN and its scorer read).
IDX_DATASETS = ("mnist", "fashion_mnist")
# digits: scikit-learn's 1,797 8x8 handwritten digits, shipped with it, shown
# at 28x28 like MNIST (jaxdl.data.digits).
IMAGE_DATASETS = IDX_DATASETS + ("digits",)
PLAYGROUND_DATASETS = ("circle", "xor", "gaussian", "spiral")
TEXT_DATASETS = ("shakespeare",)
# Sequence sets: every example is a sequence with a target per time step.
SEQUENCE_DATASETS = TEXT_DATASETS + ("sine",)
DATASETS = IMAGE_DATASETS + PLAYGROUND_DATASETS + ("linear",) + SEQUENCE_DATASETS
FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin(x1)", "sin(x2)")
RECURRENT_MODELS = ("rnn", "lstm")
MODELS = ("mlp", "cnn") + RECURRENT_MODELS
# Compute precision: float32, or bfloat16 with float32 master weights.
PRECISIONS = ("fp32", "bf16")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu", "identity")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")
LOSSES = ("auto", "cross_entropy", "bce", "mse")
# What `jaxdl.run` trains: a model on (input, target) pairs, a GAN, or a
# reinforcement-learning agent on a gymnax environment.
RL_ALGORITHMS = ("ppo", "dqn")
ALGORITHMS = ("supervised", "gan") + RL_ALGORITHMS
# gymnax 1.0.1's registered environments, named here so that a config is
# checked without importing gymnax (which starts JAX's backends); a test
# compares the list with gymnax.registered_envs.
GYMNAX_ENVIRONMENTS = (
    "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite",
    "UmbrellaChain-bsuite", "DiscountingChain-bsuite", "MNISTBandit-bsuite",
    "SimpleBandit-bsuite", "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc",
    "BernoulliBandit-misc", "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc",
    "FrozenLake-misc")
GAN_LOSSES = ("non_saturating", "least_squares", "hinge")
GAN_NETWORKS = ("mlp", "conv")
# GAN metrics by split: train losses per epoch; sample quality at each
# evaluation (val: against the validation images, test: the test images).
GAN_METRICS = {"train": ("d_loss", "g_loss", "d_real", "d_fake"),
               "val": ("frechet", "confident", "class_entropy")}
# Metrics for which higher is better (train.mode auto, sweep direction auto).
HIGHER_IS_BETTER = ("accuracy", "confident", "class_entropy", "return")
# What each dataset asks of a model, and what fits each task.
DATASET_TASKS = {"mnist": "classification", "fashion_mnist": "classification",
                 "digits": "classification",
                 **{name: "binary" for name in PLAYGROUND_DATASETS}, "linear": "regression",
                 "shakespeare": "classification", "sine": "regression"}
TASK_LOSSES = {
    "classification": ("auto", "cross_entropy", "mse"),
    "binary": ("auto", "bce", "cross_entropy", "mse"),
    "regression": ("auto", "mse"),
}
TASK_METRICS = {"classification": ("loss", "accuracy"), "binary": ("loss", "accuracy"),
                "regression": ("loss",)}
IMAGE_SPLIT_SIZES = {"train": 60_000, "test": 10_000}   # MNIST and Fashion-MNIST
TEXT_CHARS = {"shakespeare": 1_115_394}   # characters in each corpus file
# data.test_fraction: null picks the dataset family's default.
DEFAULT_TEST_FRACTION = {"text": 0.05, "sine": 0.2, "digits": 0.3, "other": 0.5}
DIGITS_EXAMPLES = 1797   # scikit-learn's digits
# Fields that locate things but do not change a single number of a run; they
# are left out of the fingerprint so the same experiment on another machine
# (or with another data directory) has the same identity.
NOT_FINGERPRINTED = ("data.dir", "train.progress", "sample.prompt", "sample.length",
                     "sample.temperatures", "sample.top_k", "gan.grid_every", "gan.grid_size",
                     # How a run is laid out over devices: the same experiment
                     # (equal to float tolerance, tested) on 1 or 8 devices.
                     "parallel.data", "parallel.fsdp", "parallel.input", "parallel.prefetch")
# Sections an algorithm does not read: left out of its fingerprint (and must
# stay at their defaults, so that a setting there is not silently ignored).
_RL_SECTIONS = ("rl",) + RL_ALGORITHMS
UNUSED_SECTIONS = {
    "supervised": ("gan",) + _RL_SECTIONS,
    "gan": ("model", "optim", "sample", "parallel", "transfer") + _RL_SECTIONS,
    **{name: ("data", "model", "optim", "sample", "gan", "parallel", "transfer")
       + tuple(other for other in RL_ALGORITHMS if other != name) for name in RL_ALGORITHMS},
}
# train fields an RL run does not read (it has no dataset or batches).
RL_UNUSED_TRAIN = ("batch_size", "eval_batch_size", "loss", "l2", "steps_per_call")
# Fields added after the first release: left out of the fingerprint while at
# these defaults, so configs written before them keep their identity (their
# run directories and sweep studies stay where they were).
FINGERPRINT_IF_NOT = {"data.seq_len": 100, "model.bidirectional": False, "model.embed": 64,
                      "model.unroll": 1, "precision": "fp32", "init_from": None,
                      "data.classes": None}


def _field(default: Any, doc: str, *, choices: Sequence[Any] | None = None,
           lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False, each: bool = False):
    """A dataclass field carrying its documentation and its valid range.

    Args:
      default: the default value (immutable: tuples, not lists).
      doc: one line for the error messages and the docs.
      choices: valid values (for a tuple field with ``each``: valid items).
      lo, hi: numeric bounds; ``lo_open``/``hi_open`` make them exclusive.
      each: the bounds/choices apply to every item of a tuple field.
    """
    meta = dict(doc=doc, choices=tuple(choices) if choices else None, lo=lo, hi=hi,
                lo_open=lo_open, hi_open=hi_open, each=each)
    return dataclasses.field(default=default, metadata=meta)


class _Section:
    """Coerces field values to their annotated types on construction (an
    int for a float field becomes a float, a list a tuple), so configs built
    in code compare, fingerprint and inject exactly like loaded ones."""

    _key: ClassVar[str] = ""

    def __post_init__(self):
        problems = []
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value, tp = getattr(self, f.name), hints[f.name]
            if dataclasses.is_dataclass(tp):
                continue
            ok, coerced = _coerce(value, tp)
            if not ok:
                problems.append(f"{self._key}{f.name}: expected {_type_name(tp)}, got {value!r}")
            elif coerced is not value:
                object.__setattr__(self, f.name, coerced)
        if problems:
            raise ConfigError(problems)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Which dataset, and how it is split and normalised."""

    _key: ClassVar[str] = "data."

    name: str = _field("mnist", "dataset name", choices=DATASETS)
    dir: str | None = _field(
        None, "data directory (default: $JAXDL_DATA_DIR, else ~/.cache/jaxdl)")
    val_fraction: float = _field(
        0.1, "fraction of the training split held out for validation", lo=0.0, hi=1.0,
        hi_open=True)
    normalize: str = _field(
        "standardize",
        "none | unit (images /255, tables min-max) | standardize (unit, then zero mean and "
        "unit variance fitted on the training split)",
        choices=("none", "unit", "standardize"))
    train_limit: int | None = _field(
        None, "use only the first N training examples (small-label regimes, tests)", lo=1)
    classes: tuple[int, ...] | None = _field(
        None, "image sets: keep only these classes, relabelled 0..K-1 in this order (e.g. "
        "[5, 6, 7, 8, 9]: digits 5-9 as classes 0-4; the model gets K outputs)", lo=0, hi=9,
        each=True)
    n_samples: int = _field(1000, "synthetic sets: number of examples (sine: sequences)", lo=2)
    noise: float = _field(
        0.0, "synthetic sets: noise level (playground: 0..1; sine: standard deviation of the "
        "input noise)", lo=0.0, hi=1.0)
    test_fraction: float | None = _field(
        None, "synthetic sets, digits and text: fraction kept as the test split (text: the "
        "last characters); null: 0.5 for playground/linear, 0.3 for digits, 0.2 for sine, "
        "0.05 for text",
        lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    seq_len: int = _field(
        100, "text and sine: time steps per training window (the truncated-BPTT length)",
        lo=1, hi=100_000)
    features: tuple[str, ...] = _field(
        ("x1", "x2"), "playground sets: input features", choices=FEATURES, each=True)
    n_features: int = _field(3, "linear regression: number of input features", lo=1)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """Architecture. Fields a family does not use are ignored by it."""

    _key: ClassVar[str] = "model."

    name: str = _field("mlp", "model family (rnn: Elman RNN, lstm: LSTM)", choices=MODELS)
    depth: int = _field(
        2, "mlp: hidden layers (0 = linear/logistic regression); rnn/lstm: stacked recurrent "
        "layers (>= 1)", lo=0)
    width: int = _field(128, "mlp: units per hidden layer; rnn/lstm: hidden size", lo=1)
    widths: tuple[int, ...] | None = _field(
        None, "mlp: explicit hidden widths (overrides depth and width)", lo=1, each=True)
    activation: str = _field("relu", "hidden activation (rnn: the Elman nonlinearity; lstm "
                             "gates are fixed)", choices=ACTIVATIONS)
    dropout: float = _field(0.0, "dropout rate on hidden layers (rnn/lstm: between stacked "
                            "layers and before the head)", lo=0.0, hi=1.0, hi_open=True)
    channels: tuple[int, ...] = _field((32, 64), "cnn: channels of each conv block", lo=1,
                                       each=True)
    kernel: int = _field(3, "cnn: square kernel size", lo=1)
    pool: str = _field("avg", "cnn: 2x2 pooling after each block", choices=("avg", "max", "none"))
    batch_norm: bool = _field(False, "cnn: batch normalisation after each convolution")
    dense: tuple[int, ...] = _field((256,), "cnn: hidden widths of the dense head", lo=1,
                                    each=True)
    conv: str = _field(
        "auto", "cnn: convolution lowering (auto picks the fastest measured for the backend)",
        choices=("auto", "xla", "im2col"))
    bidirectional: bool = _field(
        False, "rnn/lstm: each layer also reads the sequence backwards (sequence "
        "classification only: a next-step predictor must not see the future)")
    embed: int = _field(64, "rnn/lstm on text: character embedding size", lo=1)
    unroll: int = _field(1, "rnn/lstm: time steps per scan iteration (speed only; same "
                         "numbers)", lo=1, hi=1000)


@dataclasses.dataclass(frozen=True)
class OptimConfig(_Section):
    """Optimizer, schedule and clipping. Numeric values are injected
    hyperparameters: changing them never recompiles."""

    _key: ClassVar[str] = "optim."

    name: str = _field("adam", "optimizer", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "peak learning rate", lo=0.0, lo_open=True)
    momentum: float = _field(0.9, "momentum / nesterov: momentum coefficient", lo=0.0, hi=1.0,
                             hi_open=True)
    b1: float = _field(0.9, "adam(w): first-moment decay", lo=0.0, hi=1.0, hi_open=True)
    b2: float = _field(0.999, "adam(w): second-moment decay", lo=0.0, hi=1.0, hi_open=True)
    eps: float = _field(1e-8, "adam(w) / rmsprop: denominator epsilon", lo=0.0, lo_open=True)
    decay: float = _field(0.9, "rmsprop: squared-gradient decay", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = _field(
        0.0, "weight decay: coupled L2 in the gradient (decoupled for adamw)", lo=0.0)
    schedule: str = _field("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = _field(0.0, "warmup_cosine: linear warmup length in epochs", lo=0.0)
    decay_rate: float = _field(0.5, "exponential: multiplier per epoch", lo=0.0, hi=1.0,
                               lo_open=True)
    min_lr_ratio: float = _field(0.0, "cosine: final learning rate / peak", lo=0.0, hi=1.0)
    clip_norm: float | str | None = _field(
        "auto", "clip gradients to this global norm (auto: 1.0 for rnn/lstm, off otherwise; "
        "null: off)", lo=0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
    """The training loop."""

    _key: ClassVar[str] = "train."

    epochs: int = _field(10, "number of epochs", lo=1)
    batch_size: int = _field(128, "examples per step", lo=1)
    eval_batch_size: int = _field(1000, "examples per evaluation step", lo=1)
    loss: str = _field("auto", "loss (auto: from the dataset's task)", choices=LOSSES)
    l2: float = _field(0.0, "L2 penalty coefficient on weights (added to the loss)", lo=0.0)
    monitor: str = _field("auto", "metric for early stopping and the best checkpoint "
                          "(<split>_<metric>, e.g. val_accuracy; auto: val_loss, or "
                          "val_frechet for a GAN)")
    mode: str = _field("auto", "whether the monitored metric should go down or up "
                       "(auto: up for accuracy, confident and class_entropy, down otherwise)",
                       choices=("auto", "min", "max"))
    patience: int | None = _field(None, "early stopping: epochs without improvement "
                                  "(null = never stop early)", lo=1)
    min_delta: float = _field(0.0, "early stopping: smallest change that counts", lo=0.0)
    steps_per_call: int | None = _field(
        None, "train steps per compiled call: null = measured choice per model and backend "
        "(the whole epoch in one lax.scan, except a cnn's XLA convolutions on CPU: 1)", lo=1)
    progress: bool = _field(True, "show a progress bar when stderr is a terminal")


@dataclasses.dataclass(frozen=True)
class ParallelConfig(_Section):
    """How a supervised run is laid out over devices (see
    :mod:`jaxdl.parallel`). Not part of the fingerprint: the same experiment
    on 1 or 8 devices trains the same numbers to float tolerance."""

    _key: ClassVar[str] = "parallel."

    data: int | str = _field(
        "auto", "devices the batch is split over (data parallelism; gradients reduced by "
        "XLA): auto = every device of an accelerator, or of all processes of a multi-host "
        "job; 1 on a single CPU process, whose host 'devices' share the same cores")
    fsdp: int = _field(
        1, "devices on a second mesh axis that shards the parameters and optimizer state "
        "of large layers (fully sharded data parallel); the batch is split over both axes",
        lo=1)
    input: str = _field(
        "auto", "where an epoch's batches come from: device (the training set on every "
        "device, batches gathered inside the compiled epoch), host (each process gathers "
        "its devices' rows on the host and transfers them while the previous chunk "
        "trains), auto (host for a multi-process job, else device)",
        choices=("auto", "device", "host"))
    prefetch: int = _field(
        2, "host input: compiled calls (chunks or epochs) prepared ahead of the one "
        "training", lo=1, hi=16)


@dataclasses.dataclass(frozen=True)
class TransferConfig(_Section):
    """How a run uses the pretrained run named by ``init_from``, and which
    parameters train (see :mod:`jaxdl.transfer`). Patterns are ``fnmatch``
    globs over parameter paths such as ``Conv2D_0/kernel``."""

    _key: ClassVar[str] = "transfer."

    checkpoint: str = _field("best", "init_from: which checkpoint of the source run is read",
                             choices=("best", "latest"))
    head: str = _field(
        "auto", "init_from: the output layer: auto (loaded when its shape matches the "
        "checkpoint's, initialised fresh when it differs, e.g. another class count), fresh "
        "(always initialised fresh), load (always loaded; a shape mismatch is an error)",
        choices=("auto", "fresh", "load"))
    fresh: tuple[str, ...] = _field(
        (), "init_from: parameter patterns initialised fresh instead of loaded")
    freeze: tuple[str, ...] = _field(
        (), "parameter patterns that never train: no updates (bit-identical), no optimizer "
        "state (a fixed feature extractor)")
    pretrained_lr: float = _field(
        1.0, "init_from: learning-rate multiplier of the pretrained body (every parameter "
        "outside the output layer and the fresh patterns), e.g. 0.1 to fine-tune it ten "
        "times slower than the head", lo=0.0,
        lo_open=True)
    lr_groups: tuple[str, ...] = _field(
        (), "learning-rate multipliers per parameter pattern, PATTERN=MULTIPLIER (e.g. "
        "'Conv2D_*=0.1'); the first matching item wins over pretrained_lr")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(_Section):
    """Orbax checkpoints in <run dir>/checkpoints."""

    _key: ClassVar[str] = "checkpoint."

    enabled: bool = _field(True, "write checkpoints")
    every: int = _field(1, "save every N epochs (and at the end, and on a new best)", lo=1)


@dataclasses.dataclass(frozen=True)
class SampleConfig(_Section):
    """Text generated into ``samples.txt`` at the end of a language-model run
    (``jaxdl sample`` takes the same settings as options). Not part of the
    fingerprint: it changes no trained number."""

    _key: ClassVar[str] = "sample."

    prompt: str = _field("\n", "text the samples start from")
    length: int = _field(500, "characters generated per sample", lo=1, hi=1_000_000)
    temperatures: tuple[float, ...] = _field(
        (0.5, 0.8, 1.0), "one sample per temperature (0 = always the most likely character)",
        lo=0.0, each=True)
    top_k: int | None = _field(None, "sample among the k most likely characters (null: all)",
                               lo=1)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(_Section):
    """The GAN's generator: latent vector -> image in [-1, 1]."""

    _key: ClassVar[str] = "gan.generator."

    kind: str = _field("conv", "mlp, or conv (DCGAN-style: dense to 7x7, then nearest-neighbour "
                       "upsampling + 3x3 convolution twice)", choices=GAN_NETWORKS)
    width: int = _field(64, "mlp: units per hidden layer; conv: channels at 7x7 (half at "
                        "14x14, a quarter at 28x28)", lo=1, hi=65_536)
    depth: int = _field(2, "mlp: hidden layers (conv: a fixed depth; leave it unset)", lo=1, hi=64)
    norm: str = _field("batch", "batch normalisation after each hidden layer, or none",
                       choices=("batch", "none"))


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig(_Section):
    """The GAN's discriminator: image -> one logit (no normalisation: it sees
    real and generated batches in separate calls)."""

    _key: ClassVar[str] = "gan.discriminator."

    kind: str = _field("conv", "mlp, or conv ((3x3 convolution, LeakyReLU, 2x2 average pool) "
                       "twice, then a linear logit)", choices=GAN_NETWORKS)
    width: int = _field(64, "mlp: units per hidden layer; conv: channels of the second block "
                        "(the first has half)", lo=1, hi=65_536)
    depth: int = _field(2, "mlp: hidden layers (conv: a fixed depth; leave it unset)", lo=1, hi=64)


@dataclasses.dataclass(frozen=True)
class GANOptimConfig(OptimConfig):
    """One GAN player's optimizer: the fields of ``optim``, with the DCGAN
    defaults (Adam, learning rate 2e-4, b1 0.5) and no clipping by default."""

    _key: ClassVar[str] = "gan.g_optim."

    learning_rate: float = _field(2e-4, "peak learning rate", lo=0.0, lo_open=True)
    b1: float = _field(0.5, "adam(w): first-moment decay", lo=0.0, hi=1.0, hi_open=True)
    clip_norm: float | None = _field(None, "clip gradients to this global norm (null: off)",
                                     lo=0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class _DiscriminatorOptimConfig(GANOptimConfig):
    _key: ClassVar[str] = "gan.d_optim."


@dataclasses.dataclass(frozen=True)
class GANConfig(_Section):
    """A generative adversarial network (``algorithm: gan``) on an image set
    (``data.name``; images always scaled to [-1, 1], so ``data.normalize``
    must stay unset). The top-level ``model``, ``optim`` and ``sample``
    sections are not used (a setting there is an error): each player has its
    own network and optimizer here."""

    _key: ClassVar[str] = "gan."

    latent: int = _field(64, "size of the latent vector z ~ N(0, I)", lo=1, hi=65_536)
    loss: str = _field("non_saturating", "non_saturating | least_squares | hinge",
                       choices=GAN_LOSSES)
    n_critic: int = _field(1, "discriminator updates (each on its own real batch) per "
                           "generator update", lo=1, hi=100)
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    g_optim: GANOptimConfig = dataclasses.field(default_factory=GANOptimConfig)
    d_optim: _DiscriminatorOptimConfig = dataclasses.field(
        default_factory=_DiscriminatorOptimConfig)
    conv: str = _field(
        "auto", "convolution lowering (auto: im2col on CPU, measured 10x faster there than "
        "XLA's; XLA's own elsewhere)", choices=("auto", "xla", "im2col"))
    eval_samples: int = _field(
        10_000, "generated images scored at each evaluation (Frechet distance, confident "
        "fraction, class entropy)", lo=100, hi=1_000_000)
    grid_every: int = _field(1, "epochs between sample grids (samples/epoch_NNNN.png, from "
                             "one fixed latent batch)", lo=1)
    grid_size: int = _field(64, "images per sample grid", lo=1, hi=4096)


@dataclasses.dataclass(frozen=True)
class RLConfig(_Section):
    """A reinforcement-learning run (``algorithm: ppo`` or ``dqn``): the
    environment, the agents and how they are evaluated. The run is cut into
    ``train.epochs`` chunks of updates; each chunk is one compiled call and
    ends with a greedy evaluation, a metrics row and a checkpoint."""

    _key: ClassVar[str] = "rl."

    env: str = _field("CartPole-v1", "gymnax environment name", choices=GYMNAX_ENVIRONMENTS)
    seeds: int = _field(1, "independent agents trained side by side in one vmapped program "
                        "(agent i's randomness is seed folded with i)", lo=1, hi=4096)
    total_steps: int = _field(500_000, "environment steps per agent, over all its "
                              "environments (rounded down to whole updates)", lo=1,
                              hi=2**31 - 1)
    num_envs: int = _field(4, "environments each agent steps together (vmapped)", lo=1,
                           hi=1_000_000)
    gamma: float = _field(0.99, "discount factor", lo=0.0, hi=1.0)
    width: int = _field(64, "units per hidden layer of each network", lo=1, hi=65_536)
    depth: int = _field(2, "hidden layers of each network", lo=1, hi=64)
    activation: str = _field("auto", "hidden activation (auto: tanh for ppo, relu for dqn)",
                             choices=("auto",) + ACTIVATIONS)
    normalize_obs: bool = _field(
        False, "normalise observations by running mean and variance (updated while "
        "training, frozen for evaluation; saved in the checkpoint)")
    reward_scale: float = _field(1.0, "rewards are multiplied by this for learning (returns "
                                 "are reported unscaled)", lo=0.0, lo_open=True)
    eval_episodes: int = _field(
        32, "greedy episodes per agent after each chunk (val_return; 0: none, monitor "
        "train_return)", lo=0, hi=100_000)
    test_episodes: int = _field(100, "greedy episodes per agent at the end (test_return)",
                                lo=1, hi=100_000)


@dataclasses.dataclass(frozen=True)
class PPOConfig(_Section):
    """Proximal policy optimisation (``algorithm: ppo``); defaults: the
    CleanRL / PureJaxRL CartPole values. The numbers (learning rate,
    coefficients, clip range, lambda) are data in the compiled run: changing
    them never recompiles."""

    _key: ClassVar[str] = "ppo."

    num_steps: int = _field(128, "rollout steps per environment per update", lo=1,
                            hi=1_000_000)
    update_epochs: int = _field(4, "passes over each rollout", lo=1, hi=1000)
    num_minibatches: int = _field(4, "minibatches per pass (must divide num_envs x "
                                  "num_steps)", lo=1, hi=1_000_000)
    learning_rate: float = _field(2.5e-4, "Adam learning rate", lo=0.0, lo_open=True)
    anneal_lr: bool = _field(True, "decay the learning rate linearly to 0 over the run")
    gae_lambda: float = _field(0.95, "GAE lambda", lo=0.0, hi=1.0)
    clip_eps: float = _field(0.2, "clip range of the probability ratio", lo=0.0, lo_open=True)
    clip_value: bool = _field(True, "clip the value update to clip_eps around the old value")
    vf_coef: float = _field(0.5, "value loss coefficient", lo=0.0)
    ent_coef: float = _field(0.01, "entropy bonus coefficient", lo=0.0)
    max_grad_norm: float = _field(0.5, "clip gradients to this global norm", lo=0.0,
                                  lo_open=True)
    normalize_advantages: bool = _field(True, "standardise advantages per minibatch")
    shared: bool = _field(False, "one torso for the policy and value heads (else two)")


@dataclasses.dataclass(frozen=True)
class DQNConfig(_Section):
    """Deep Q-learning (``algorithm: dqn``) with a replay buffer held as
    fixed-size arrays, a target network and a linear epsilon schedule; the
    numbers are data in the compiled run (changing them never recompiles)."""

    _key: ClassVar[str] = "dqn."

    learning_rate: float = _field(2.5e-4, "Adam learning rate", lo=0.0, lo_open=True)
    buffer_size: int = _field(10_000, "transitions the replay buffer holds (oldest "
                              "replaced first)", lo=1, hi=100_000_000)
    batch_size: int = _field(128, "transitions per gradient step", lo=1, hi=1_000_000)
    learning_starts: int = _field(10_000, "environment steps before the first gradient step",
                                  lo=0)
    train_every: int = _field(1, "updates (each: one step of every environment) between "
                              "gradient steps", lo=1)
    target_every: int = _field(500, "environment steps between target-network updates",
                               lo=1)
    tau: float = _field(1.0, "target update: target <- tau x online + (1 - tau) x target",
                        lo=0.0, hi=1.0, lo_open=True)
    epsilon_start: float = _field(1.0, "exploration rate at the start", lo=0.0, hi=1.0)
    epsilon_end: float = _field(0.05, "exploration rate after the decay", lo=0.0, hi=1.0)
    epsilon_fraction: float = _field(0.5, "fraction of total_steps over which epsilon decays "
                                     "linearly", lo=0.0, hi=1.0, lo_open=True)
    double: bool = _field(True, "double DQN: the online network picks the next action, the "
                          "target network values it")
    loss: str = _field("mse", "TD-error loss (huber: smooth L1; with Adam it let the Q-values "
                       "diverge on CartPole where mse did not)", choices=("mse", "huber"))
    max_grad_norm: float = _field(10.0, "clip gradients to this global norm", lo=0.0,
                                  lo_open=True)


@dataclasses.dataclass(frozen=True)
class Config(_Section):
    """A whole experiment. Build with :func:`load` or :func:`from_dict`."""

    name: str = _field("experiment", "experiment name (names the run directory)")
    seed: int = _field(0, "root of all randomness: init, dropout, shuffling, splits", lo=0,
                       hi=2**32 - 1)
    algorithm: str = _field("supervised", "what is trained: supervised (model on inputs and "
                            "targets), gan (the gan section), or an agent on a gymnax "
                            "environment: ppo or dqn (the rl section and the algorithm's own)",
                            choices=ALGORITHMS)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    precision: str = _field(
        "fp32", "compute precision: fp32, or bf16 (bfloat16 activations and gradients, "
        "float32 master weights and optimizer state; no loss scaling is needed: bfloat16 "
        "has float32's exponent range)", choices=PRECISIONS)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init_from: str | None = _field(
        None, "a run directory whose checkpoint initialises this run's model (transfer "
        "learning; the transfer section says how); read when the run starts, not on resume")
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    gan: GANConfig = dataclasses.field(default_factory=GANConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    dqn: DQNConfig = dataclasses.field(default_factory=DQNConfig)

    def __post_init__(self):
        super().__post_init__()
        problems = _check(self, "")
        if not problems:
            problems = _cross_check(self)
        if problems:
            raise ConfigError(problems)
        _resolve_defaults(self)

    def replace(self, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Config:
        """A new, validated config with dotted keys replaced.

        ``cfg.replace({"optim.learning_rate": 3e-4})`` or
        ``cfg.replace(seed=1)``.
        """
        updates = dict(overrides or {}, **kwargs)
        tree = to_dict(self)
        # Defaults resolved from other sections (clip_norm auto, test_fraction
        # null) are resolved again for the new config unless set here.
        given = set(flatten(updates))
        for key, raw in getattr(self, "_unresolved", {}).items():
            if key not in given:
                _set_dotted(tree, key, raw)
        problems = []
        for key, value in updates.items():
            problems += _set_dotted(tree, key, value)
        if problems:
            raise ConfigError(problems, "<replace>")
        return from_dict(tree, source="<replace>")

    def get(self, dotted: str) -> Any:
        """The value at a dotted key, e.g. ``cfg.get("optim.learning_rate")``."""
        node: Any = self
        for part in dotted.split("."):
            if not dataclasses.is_dataclass(node) or part not in _field_names(type(node)):
                raise ConfigError(f"{dotted}: no such key", "<get>")
            node = getattr(node, part)
        return node


# ---------------------------------------------------------------- building


def from_dict(tree: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a validated :class:`Config` from nested mappings.

    Raises:
      ConfigError: listing every unknown key, wrong type and bad value.
    """
    problems: list[str] = []
    construct = _build(Config, tree, "", problems)
    try:
        # Built even when keys were unknown or mistyped (those fall back to
        # defaults), so one error lists the range problems too.
        cfg = construct()
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load(path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Read a YAML config and apply ``key=value`` (or dotted-mapping) overrides.

    Args:
      path: the YAML file.
      overrides: ``["optim.learning_rate=3e-4", ...]`` or ``{"seed": 1}``.

    Raises:
      ConfigError: the file is missing, is not YAML, or holds a bad config.
    """
    path = Path(path)
    source = str(path)
    tree = read_yaml(path, "config file")
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"top level must be a mapping, got {type(tree).__name__}", source)
    problems: list[str] = []
    for key, value in _parse_overrides(overrides, problems).items():
        problems += _set_dotted(tree, key, value)
    if problems:
        raise ConfigError(problems, source)
    return from_dict(tree, source)


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of a file (None when empty).

    Raises:
      ConfigError: the file (a ``what``, e.g. "sweep file") cannot be read,
        is not UTF-8, or is not YAML; the message names the file.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what}: {e.strerror}", source) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not a UTF-8 text file ({e.reason} at byte {e.start})",
                          source) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source) from None


def monitor_direction(metric: str) -> str:
    """The natural direction of a ``<split>_<metric>`` name: ``max`` for
    accuracy, a GAN's confident fraction and class entropy; ``min`` for
    losses and the Frechet distance."""
    return "max" if metric.partition("_")[2] in HIGHER_IS_BETTER else "min"


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``key=value`` strings applied (values parsed as YAML)."""
    problems: list[str] = []
    parsed = _parse_overrides(overrides, problems)
    if problems:
        raise ConfigError(problems, "<override>")
    return cfg.replace(parsed)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config or config section."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def dump(cfg: Config, path: str | Path | None = None) -> str:
    """The resolved config as YAML (written to ``path`` when given), without
    the sections its algorithm does not read (they are at their defaults)."""
    text = yaml.safe_dump(_used(cfg), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text


def fingerprint(cfg: Config) -> str:
    """A stable 16-hex-digit identity of everything that changes the numbers.

    Equal for configs that train identically, whatever their key order or
    data directory; differs when any other value does.
    """
    tree = _used(cfg)
    if cfg.algorithm == "supervised":   # the only algorithm before the field existed
        del tree["algorithm"]
    for dotted in NOT_FINGERPRINTED:
        _pop_dotted(tree, dotted)
    for dotted, default in FINGERPRINT_IF_NOT.items():
        _pop_dotted(tree, dotted, only_if=default)
    tree = {k: v for k, v in tree.items() if v != {}}
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- internals


def _used(cfg: Config) -> dict[str, Any]:
    """:func:`to_dict` without the sections ``cfg.algorithm`` does not read."""
    tree = to_dict(cfg)
    for section in UNUSED_SECTIONS[cfg.algorithm]:
        del tree[section]
    if cfg.algorithm in RL_ALGORITHMS:
        for name in RL_UNUSED_TRAIN:
            del tree["train"][name]
    if cfg.algorithm != "supervised":   # validation refuses anything else there
        del tree["precision"], tree["init_from"]
    return tree


_MISSING = object()


def _pop_dotted(tree: dict[str, Any], dotted: str, only_if: Any = _MISSING) -> None:
    """Remove ``tree[a][b]...`` for ``dotted == "a.b..."`` if present (and,
    with ``only_if``, equal to it)."""
    *path, key = dotted.split(".")
    node: Any = tree
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and key in node and (only_if is _MISSING
                                                   or node[key] == only_if):
        del node[key]


def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _hints(cls) -> dict[str, Any]:
    """``cls``'s resolved field types (cached: resolving them is most of a
    config's build time: ``Config.replace`` 7.3 ms uncached, 0.96 ms cached)."""
    return typing.get_type_hints(cls)


def _unknown_key(key: Any, names: Sequence[str], label: str | None = None) -> str:
    """``label: unknown key (did you mean ...?); valid keys: ...``, the hint
    matching ``key`` against ``names`` (``label`` defaults to ``key``)."""
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key if label is None else label}: unknown key{hint}; valid keys: {', '.join(names)}"


def _build(cls, tree: Any, prefix: str, problems: list[str]):
    """Coerce ``tree`` into keyword arguments of ``cls`` and return a thunk
    that constructs it; append problems instead of raising."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(tree, Mapping):
        problems.append(f"{where}: expected a mapping, got {tree!r}")
        return lambda: cls()
    names = _field_names(cls)
    for key in tree:
        if key not in names:
            problems.append(_unknown_key(key, names, f"{prefix}{key}"))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    thunks: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        value, tp = tree[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp):
            # An empty YAML section (`optim:` and nothing under it) is None.
            thunks[f.name] = _build(tp, {} if value is None else value, f"{prefix}{f.name}.",
                                    problems)
            continue
        ok, coerced = _coerce(value, tp)
        if not ok:
            problems.append(f"{prefix}{f.name}: expected {_type_name(tp)}, got {value!r}")
            continue
        kwargs[f.name] = coerced

    def construct():
        return cls(**kwargs, **{k: t() for k, t in thunks.items()})

    return construct


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) converting YAML scalars to the annotated type, strictly."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            return False, None
        items = []
        for v in value:
            ok, out = _coerce(v, item_tp)
            if not ok:
                return False, None
            items.append(out)
        return True, tuple(items)
    if tp is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return False, None
        return True, value
    if tp is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; accept numeric text.
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        return (True, value) if isinstance(value, str) else (False, None)
    return False, None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check(obj: Any, prefix: str) -> list[str]:
    """Range and choice checks of every field, recursively."""
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += _check(value, key + ".")
            continue
        meta = f.metadata
        if not meta or value is None:
            continue
        items = value if meta["each"] and isinstance(value, tuple) else (value,)
        for item in items:
            msg = _check_value(item, meta)
            if msg:
                problems.append(f"{key}: {msg}, got {value!r}")
                break
    return problems


def _check_value(v: Any, meta: Mapping[str, Any]) -> str | None:
    if meta["choices"] is not None and v not in meta["choices"]:
        return "must be one of " + ", ".join(map(str, meta["choices"]))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            return "must be finite"
        lo, hi = meta["lo"], meta["hi"]
        if lo is not None and (v < lo or (meta["lo_open"] and v == lo)):
            return f"must be {'>' if meta['lo_open'] else '>='} {lo}"
        if hi is not None and (v > hi or (meta["hi_open"] and v == hi)):
            return f"must be {'<' if meta['hi_open'] else '<='} {hi}"
    return None


def monitor_mode(train: TrainConfig) -> str:
    """``train.mode`` with ``auto`` resolved: ``max`` for accuracy, else ``min``."""
    if train.mode != "auto":
        return train.mode
    return monitor_direction(train.monitor)


def test_fraction(data: DataConfig) -> float:
    """``data.test_fraction`` with null resolved to the dataset family's default."""
    if data.test_fraction is not None:
        return data.test_fraction
    family = ("text" if data.name in TEXT_DATASETS else "sine" if data.name == "sine"
              else "digits" if data.name == "digits" else "other")
    return DEFAULT_TEST_FRACTION[family]


def text_split_chars(n_chars: int, data: DataConfig) -> dict[str, int]:
    """Characters in each contiguous split of a text corpus: train first,
    then validation, then test (the end of the text)."""
    test = int(round(test_fraction(data) * n_chars))
    rest = n_chars - test
    val = int(round(data.val_fraction * rest)) if data.val_fraction > 0 else 0
    train = rest - val
    if data.train_limit is not None:
        train = min(train, data.train_limit * data.seq_len + 1)
    return {"train": train, "val": val, "test": test}


def split_sizes(data: DataConfig) -> dict[str, int]:
    """Examples in each split, as :func:`jaxdl.data.load` will make them
    (same rounding), without loading anything. For text, an example is a
    window of ``seq_len`` characters; the training split's count is the
    windows of one epoch. With ``data.classes`` the counts are upper bounds
    (how many examples each class has is known once the labels are read).

    Raises:
      ConfigError: a fraction leaves a split empty.
    """
    problems = []
    if data.name in TEXT_DATASETS:
        chars = text_split_chars(TEXT_CHARS[data.name], data)
        out = {k: max(0, (v - 1) // data.seq_len) for k, v in chars.items()}
        for split in ("train", "val", "test"):
            if out[split] == 0 and (split != "val" or data.val_fraction > 0):
                problems.append(
                    f"data.seq_len: the {split} split's {chars[split]} characters hold no "
                    f"window of {data.seq_len + 1} (seq_len + 1) characters; lower seq_len or "
                    f"raise the split's fraction")
        if problems:
            raise ConfigError(problems)
        return out
    if data.name in IDX_DATASETS:
        total, test = IMAGE_SPLIT_SIZES["train"], IMAGE_SPLIT_SIZES["test"]
    else:
        n = DIGITS_EXAMPLES if data.name == "digits" else data.n_samples
        tf = test_fraction(data)
        test = int(round(tf * n))
        total = n - test
        if not 0 < test < n:
            problems.append(
                f"data.n_samples: {n} examples with test_fraction {tf} leave an "
                "empty train or test split")
    val = int(round(data.val_fraction * total)) if data.val_fraction > 0 else 0
    if data.val_fraction > 0 and not 0 < val < total:
        problems.append(
            f"data.val_fraction: {data.val_fraction} of {total} training examples leaves an "
            "empty train or validation split")
    if problems:
        raise ConfigError(problems)
    train = total - val
    if data.train_limit is not None:
        train = min(train, data.train_limit)
    return {"train": train, "val": val, "test": test}


def default_monitor(cfg: Config) -> str:
    """What ``train.monitor: auto`` stands for: ``val_frechet`` for a GAN,
    ``val_return`` for an RL agent (``train_return`` without evaluation
    episodes), ``val_loss`` otherwise."""
    if cfg.algorithm in RL_ALGORITHMS:
        return "val_return" if cfg.rl.eval_episodes > 0 else "train_return"
    return "val_frechet" if cfg.algorithm == "gan" else "val_loss"


def _monitor_problems(cfg: Config) -> list[str]:
    monitor = cfg.train.monitor
    if monitor == "auto":
        monitor = default_monitor(cfg)
    split, _, metric = monitor.partition("_")
    if cfg.algorithm == "gan":
        what = "a GAN"
        valid = {"train": ("d_loss", "g_loss"), "val": GAN_METRICS["val"]}.get(split, ())
    elif cfg.algorithm in RL_ALGORITHMS:
        what = f"an RL agent ({cfg.algorithm})"
        valid = ("return",)
    else:
        task = DATASET_TASKS[cfg.data.name]
        what = f"{cfg.data.name} ({task})"
        valid = TASK_METRICS[task]
    if split not in ("train", "val") or not metric:
        return [f"train.monitor: must be <split>_<metric> with split train or val "
                f"(e.g. val_loss, val_accuracy), got {monitor!r}"]
    if metric not in valid:
        return [f"train.monitor: {monitor!r} is not measured for {what}; valid metrics: "
                f"{', '.join(valid)}"]
    if cfg.train.mode != "auto" and cfg.train.mode != monitor_direction(monitor):
        return [f"train.mode: {cfg.train.mode!r} would treat a worse {metric} as better for "
                f"{monitor!r}; use auto (or {monitor_direction(monitor)})"]
    if cfg.algorithm in RL_ALGORITHMS:
        if split == "val" and cfg.rl.eval_episodes == 0:
            return [f"train.monitor: {monitor!r} needs evaluation episodes but "
                    "rl.eval_episodes is 0; monitor train_return or set rl.eval_episodes > 0"]
        return []
    if split == "val" and cfg.data.val_fraction == 0.0:
        return [f"train.monitor: {monitor!r} needs a validation split but data.val_fraction "
                f"is 0; monitor train_{'loss' if cfg.algorithm != 'gan' else 'g_loss'} or set "
                "data.val_fraction > 0"]
    return []


def _unused_section_problems(cfg: Config) -> list[str]:
    """Settings in a section the algorithm does not read (they would be
    silently ignored)."""
    problems = []
    hint = {"gan": "set gan.generator, gan.discriminator, gan.g_optim or gan.d_optim instead",
            "supervised": "the gan, rl, ppo and dqn sections are read only with their "
                          "algorithms",
            **{name: f"an RL run reads the rl and {name} sections (and train, checkpoint)"
               for name in RL_ALGORITHMS}}[cfg.algorithm]
    for section in UNUSED_SECTIONS[cfg.algorithm]:
        value = getattr(cfg, section)
        default = flatten(to_dict(type(value)()))
        if section == "parallel":
            hint = ("data-parallel training is for supervised runs; a GAN trains on one "
                    "device, an RL run trains its agents side by side on one device")
        changed = [f"{section}.{k}" for k, v in flatten(to_dict(value)).items()
                   if v != default[k]]
        if changed:
            problems.append(f"{section}: not used by algorithm {cfg.algorithm} ({hint}); "
                            f"remove {', '.join(changed)}")
    return problems


def _gan_problems(cfg: Config) -> list[str]:
    problems = []
    if cfg.data.name not in IDX_DATASETS:
        problems.append(f"data.name: a GAN needs image data ({', '.join(IDX_DATASETS)}), "
                        f"got {cfg.data.name!r}")
    if cfg.data.normalize != DataConfig.normalize:
        problems.append(f"data.normalize: not used by a GAN (its images are always scaled to "
                        f"[-1, 1]), got {cfg.data.normalize!r}")
    if cfg.gan.conv != GANConfig.conv and "conv" not in (cfg.gan.generator.kind,
                                                         cfg.gan.discriminator.kind):
        problems.append(f"gan.conv: not used by mlp players, got {cfg.gan.conv!r}")
    for player in ("generator", "discriminator"):
        net = getattr(cfg.gan, player)
        if net.kind == "conv" and net.depth != type(net).depth:
            problems.append(f"gan.{player}.depth: a conv {player} has a fixed depth (depth is "
                            f"for kind mlp), got {net.depth}")
    if cfg.train.loss != "auto":
        problems.append(f"train.loss: not used by a GAN (gan.loss picks its losses), got "
                        f"{cfg.train.loss!r}")
    if cfg.train.l2 != 0.0:
        problems.append(f"train.l2: not used by a GAN (use gan.g_optim.weight_decay or "
                        f"gan.d_optim.weight_decay), got {cfg.train.l2!r}")
    return problems


def _rl_problems(cfg: Config) -> list[str]:
    problems = []
    for name in RL_UNUSED_TRAIN:
        value = getattr(cfg.train, name)
        if value != getattr(TrainConfig, name):
            problems.append(f"train.{name}: not used by an RL run (it has no dataset; see "
                            f"the {cfg.algorithm} section), got {value!r}")
    rl = cfg.rl
    if cfg.algorithm == "ppo":
        batch = rl.num_envs * cfg.ppo.num_steps
        if batch % cfg.ppo.num_minibatches:
            problems.append(f"ppo.num_minibatches: {cfg.ppo.num_minibatches} does not divide "
                            f"the {batch} steps of an update (rl.num_envs {rl.num_envs} x "
                            f"ppo.num_steps {cfg.ppo.num_steps})")
        per_update = batch
    else:
        d = cfg.dqn
        per_update = rl.num_envs
        if d.batch_size > d.buffer_size:
            problems.append(f"dqn.batch_size: {d.batch_size} is more than the "
                            f"{d.buffer_size} transitions dqn.buffer_size holds")
        if d.epsilon_end > d.epsilon_start:
            problems.append(f"dqn.epsilon_end: {d.epsilon_end} is above epsilon_start "
                            f"{d.epsilon_start}; epsilon decays")
        steps = (rl.total_steps // rl.num_envs) * rl.num_envs     # what actually runs
        if d.learning_starts >= steps:
            problems.append(f"dqn.learning_starts: {d.learning_starts} leaves no learning in "
                            f"the {steps} steps of rl.total_steps (whole updates of "
                            f"{rl.num_envs} environments)")
        if d.train_every > steps // rl.num_envs:
            problems.append(f"dqn.train_every: {d.train_every} updates is more than the run's "
                            f"{steps // rl.num_envs}; no gradient step would be taken")
        if d.target_every > steps:
            problems.append(f"dqn.target_every: {d.target_every} steps is more than the run's "
                            f"{steps}; the target network would never move")
        if rl.num_envs > d.buffer_size:
            problems.append(f"rl.num_envs: {rl.num_envs} transitions per step do not fit the "
                            f"{d.buffer_size} of dqn.buffer_size")
    updates = rl.total_steps // per_update
    if updates < cfg.train.epochs:
        problems.append(
            f"rl.total_steps: {rl.total_steps} makes {updates} updates of {per_update} "
            f"environment steps, fewer than train.epochs {cfg.train.epochs} (the chunks "
            "the run is cut into); raise total_steps or lower train.epochs")
    return problems


def rl_updates(cfg: Config) -> tuple[int, int]:
    """``(updates, env_steps_per_update)`` of an RL run's agent: PPO's
    update is one rollout of ``num_envs x num_steps`` steps; DQN's is one
    step of every environment."""
    per_update = cfg.rl.num_envs * (cfg.ppo.num_steps if cfg.algorithm == "ppo" else 1)
    return cfg.rl.total_steps // per_update, per_update


def _classes_problems(cfg: Config) -> list[str]:
    classes = cfg.data.classes
    if classes is None:
        return []
    if cfg.algorithm != "supervised" or cfg.data.name not in IMAGE_DATASETS:
        return [f"data.classes: selects classes of an image set ({', '.join(IMAGE_DATASETS)}) "
                f"for a supervised run; remove it here"]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        return [f"data.classes: needs at least 2 distinct classes, got {list(classes)}"]
    return []


def _transfer_problems(cfg: Config) -> list[str]:
    """init_from is for supervised runs; the transfer fields that read a
    checkpoint need one. (Pattern matches and shapes are checked against
    the model and the checkpoint when the run starts: jaxdl.transfer.)"""
    if cfg.algorithm != "supervised":
        if cfg.init_from is not None:
            return [f"init_from: transfer learning is for supervised runs, not "
                    f"{cfg.algorithm} (remove init_from)"]
        return []
    problems = []
    if cfg.init_from is not None and not cfg.init_from.strip():
        problems.append("init_from: empty; give a run directory or null")
    if cfg.init_from is None:
        default = TransferConfig()
        needs = [f"transfer.{k}" for k in ("checkpoint", "head", "fresh", "pretrained_lr")
                 if getattr(cfg.transfer, k) != getattr(default, k)]
        if needs:
            problems.append(f"{', '.join(needs)}: only with init_from (the run to start "
                            "from); transfer.freeze and transfer.lr_groups work without it")
    for item in cfg.transfer.lr_groups:
        pattern, eq, scale = item.rpartition("=")
        try:
            ok = bool(eq) and bool(pattern.strip()) and float(scale) > 0
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"transfer.lr_groups: {item!r} is not PATTERN=MULTIPLIER with a "
                            "multiplier > 0 (e.g. 'Conv2D_*=0.1'; to stop a group, freeze it)")
    for key in ("fresh", "freeze"):
        if any(not p.strip() for p in getattr(cfg.transfer, key)):
            problems.append(f"transfer.{key}: an empty pattern")
    return problems


def _parallel_problems(cfg: Config) -> list[str]:
    """``parallel.data`` is a count or auto; bf16 is for supervised runs."""
    problems = []
    data = cfg.parallel.data
    if isinstance(data, str) and data != "auto":
        problems.append(f"parallel.data: expected a number of devices >= 1 or auto, got {data!r}")
    elif isinstance(data, int) and data < 1:
        problems.append(f"parallel.data: must be >= 1 (or auto), got {data}")
    if cfg.precision != "fp32" and cfg.algorithm != "supervised":
        problems.append(f"precision: {cfg.precision} is for supervised runs; a "
                        f"{cfg.algorithm} run computes in fp32")
    if isinstance(data, int) and data >= 1 and cfg.algorithm == "supervised" and (
            cfg.train.batch_size % (data * cfg.parallel.fsdp)):
        problems.append(
            f"train.batch_size: {cfg.train.batch_size} does not split evenly over "
            f"parallel.data {data} x parallel.fsdp {cfg.parallel.fsdp} devices; use a "
            "multiple of their product")
    return problems


def _cross_check(cfg: Config) -> list[str]:
    """Constraints that involve more than one field."""
    problems = (_monitor_problems(cfg) + _unused_section_problems(cfg)
                + _parallel_problems(cfg) + _transfer_problems(cfg) + _classes_problems(cfg))
    if cfg.algorithm in RL_ALGORITHMS:
        return problems + _rl_problems(cfg)
    if cfg.algorithm == "gan":
        problems += _gan_problems(cfg)
        if problems:
            return problems
        sizes = split_sizes(cfg.data)
        if cfg.data.val_fraction > 0 and sizes["val"] < 2:
            problems.append(f"data.val_fraction: {cfg.data.val_fraction} leaves "
                            f"{sizes['val']} validation image; the Frechet distance needs at "
                            "least 2 (use 0 for none)")
        per_step = cfg.train.batch_size * cfg.gan.n_critic
        if per_step > sizes["train"]:
            problems.append(
                f"train.batch_size: {cfg.train.batch_size} x gan.n_critic {cfg.gan.n_critic} "
                f"real images per step is more than the {sizes['train']} training images")
        return problems
    task = DATASET_TASKS[cfg.data.name]
    if cfg.train.loss not in TASK_LOSSES[task]:
        problems.append(
            f"train.loss: {cfg.train.loss!r} does not fit {cfg.data.name} ({task}); "
            f"valid: {', '.join(TASK_LOSSES[task])}")
    if cfg.data.name in PLAYGROUND_DATASETS and not cfg.data.features:
        problems.append("data.features: must name at least one feature, e.g. [x1, x2]")
    recurrent = cfg.model.name in RECURRENT_MODELS
    sequence_data = cfg.data.name in SEQUENCE_DATASETS
    if sequence_data and not recurrent:
        problems.append(
            f"model.name: {cfg.data.name} is sequence data with a target per time step; use "
            f"one of {', '.join(RECURRENT_MODELS)}, not {cfg.model.name!r}")
    if recurrent and cfg.data.name not in SEQUENCE_DATASETS + IMAGE_DATASETS:
        problems.append(
            f"model.name: {cfg.model.name} needs sequences ({', '.join(SEQUENCE_DATASETS)}) or "
            f"images read row by row ({', '.join(IMAGE_DATASETS)}), but data.name is "
            f"{cfg.data.name!r}")
    if recurrent and cfg.model.depth < 1:
        problems.append(f"model.depth: {cfg.model.name} needs at least 1 recurrent layer, "
                        f"got {cfg.model.depth}")
    if recurrent and cfg.model.bidirectional and sequence_data:
        problems.append(
            f"model.bidirectional: a next-step predictor ({cfg.data.name}) must not read the "
            "future; bidirectional layers are for sequence classification (e.g. mnist rows)")
    if not cfg.sample.prompt:
        problems.append("sample.prompt: must hold at least one character, e.g. \"\\n\"")
    if not cfg.sample.temperatures:
        problems.append("sample.temperatures: must list at least one temperature, e.g. [0.8]")
    if isinstance(cfg.optim.clip_norm, str) and cfg.optim.clip_norm != "auto":
        problems.append(f"optim.clip_norm: expected a number > 0, auto or null, got "
                        f"{cfg.optim.clip_norm!r}")
    if cfg.model.name == "cnn" and cfg.data.name not in IMAGE_DATASETS:
        problems.append(
            f"model.name: cnn needs image data ({', '.join(IMAGE_DATASETS)}), "
            f"but data.name is {cfg.data.name!r}")
    if cfg.model.name == "cnn" and cfg.model.kernel > 28:
        problems.append(f"model.kernel: must be <= 28 for 28x28 images, got {cfg.model.kernel}")
    if cfg.model.name == "cnn" and cfg.model.pool != "none" and 2 ** len(cfg.model.channels) > 28:
        problems.append(
            f"model.channels: {len(cfg.model.channels)} pooled blocks shrink 28x28 images "
            "below 1 pixel; use at most 4 blocks or pool: none")
    try:
        sizes = split_sizes(cfg.data)
    except ConfigError as e:
        problems += e.problems
    else:
        if cfg.train.batch_size > sizes["train"]:
            problems.append(
                f"train.batch_size: {cfg.train.batch_size} is larger than the {sizes['train']} "
                "training examples; lower it or use more data")
    return problems


def _resolve_defaults(cfg: Config) -> None:
    """Replace the ``auto``/null defaults that depend on other sections by
    their values, so the config states (and dumps, and fingerprints) what
    runs: an explicit ``clip_norm: 1.0`` LSTM is the same experiment as
    ``auto``. The unresolved values are kept aside for :meth:`Config.replace`."""
    unresolved = {}
    if cfg.train.monitor == "auto":
        unresolved["train.monitor"] = "auto"
        object.__setattr__(cfg, "train",
                           dataclasses.replace(cfg.train, monitor=default_monitor(cfg)))
    if cfg.data.test_fraction is None and "data" not in UNUSED_SECTIONS[cfg.algorithm]:
        unresolved["data.test_fraction"] = None
        object.__setattr__(cfg, "data",
                           dataclasses.replace(cfg.data, test_fraction=test_fraction(cfg.data)))
    if cfg.algorithm in RL_ALGORITHMS and cfg.rl.activation == "auto":
        unresolved["rl.activation"] = "auto"
        object.__setattr__(cfg, "rl", dataclasses.replace(
            cfg.rl, activation="tanh" if cfg.algorithm == "ppo" else "relu"))
    if cfg.optim.clip_norm == "auto" and "optim" not in UNUSED_SECTIONS[cfg.algorithm]:
        unresolved["optim.clip_norm"] = "auto"
        clip = 1.0 if cfg.model.name in RECURRENT_MODELS else None
        object.__setattr__(cfg, "optim", dataclasses.replace(cfg.optim, clip_norm=clip))
    object.__setattr__(cfg, "_unresolved", unresolved)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"name": "adam"}}`` -> ``{"optim.name": "adam"}`` (dotted leaves)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_overrides(overrides: Sequence[str] | Mapping[str, Any],
                     problems: list[str]) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r}: expected key=value, e.g. optim.learning_rate=3e-4")
            continue
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> list[str]:
    """Set ``tree[a][b] = value`` for ``dotted == "a.b"``, checking each part
    names a real field (so a typo is an error, not a silent new key)."""
    parts = dotted.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts):
        names = _field_names(cls)
        if part not in names:
            where = ".".join(parts[:i]) or "top level"
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {'.'.join(parts[:i] + [close[0]])!r}?)" if close else ""
            return [f"{dotted}: no such key{hint}; keys of {where}: {', '.join(names)}"]
        tp = _hints(cls)[part]
        if i == len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                node[part] = value
                return []
            if not isinstance(value, Mapping):
                return [f"{dotted}: is a section; set one of its keys, e.g. {dotted}."
                        f"{_field_names(tp)[0]}=..."]
            # A mapping for a section updates the keys it names, keeping the rest.
            problems = []
            for key, sub in value.items():
                problems += _set_dotted(tree, f"{dotted}.{key}", sub)
            return problems
        if not dataclasses.is_dataclass(tp):
            return [f"{dotted}: {'.'.join(parts[:i + 1])} is not a section"]
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else child
            if not isinstance(child, dict):
                return [f"{'.'.join(parts[:i + 1])}: expected a mapping, got {child!r}"]
            node[part] = child
        node, cls = child, tp
    return []


# The transfer section came after the first release: at its defaults it
# leaves the fingerprint as it was.
FINGERPRINT_IF_NOT["transfer"] = to_dict(TransferConfig())
