"""Datasets: MNIST-style IDX files, scikit-learn's 8x8 digits (shown at
28x28), the 2-D playground, linear regression, character text (tiny
Shakespeare) and sine sequences.

``load(cfg.data, seed)`` returns a :class:`Dataset` of normalised float32
splits on the host; the training engine moves them to the device once.

Data directory: ``data.dir`` in the config, else ``$JAXDL_DATA_DIR``, else
``~/.cache/jaxdl``. MNIST and Fashion-MNIST are downloaded there on first use
and verified by SHA-256; a corrupt copy is re-fetched, never used.

Sequence sets have a target per time step. Text is a stream: its training
split is the whole character sequence (``train.x`` the characters,
``train.y`` the next ones) and each training batch takes random windows of
``data.seq_len`` characters from it (``Dataset.window``); validation and
test are non-overlapping windows. Sequence sets are not normalised (text is
token ids, sine values are already of order 1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxdl import config as config_lib
from jaxdl.config import IMAGE_DATASETS, PLAYGROUND_DATASETS, TEXT_DATASETS, DataConfig
from jaxdl.data import digits, download, idx, synthetic, text
from jaxdl.data.pipeline import Normalizer, Split, fit_normalizer, seeded_rng, split_off
from jaxdl.data.text import Vocab

__all__ = ["Dataset", "Normalizer", "Split", "TASKS", "Vocab", "load", "signed_images"]

TASKS = ("classification", "binary", "regression")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Normalised splits plus what the model and loss need to know.

    Attributes:
      name: dataset name.
      task: ``"classification"`` (integer labels, softmax), ``"binary"``
        (labels in {0, 1}, one logit) or ``"regression"`` (float targets).
      outputs: units of the model's last layer.
      train, val, test: splits; ``val`` is None when ``val_fraction`` is 0.
      normalizer: the transform fitted on ``train`` (apply it to new inputs).
      vocab: text: the character vocabulary (inputs are its ids).
      window: text: training windows of this many steps are cut from the
        ``train`` stream at random offsets (None: ``train`` holds examples).
      sequence: targets per time step (``y [n, T, ...]``).
      baselines: reference metrics per split, e.g. ``{"test": {"repeat_last_mse": ...}}``.
    """

    name: str
    task: str
    outputs: int
    train: Split
    val: Split | None
    test: Split
    normalizer: Normalizer
    vocab: Vocab | None = None
    window: int | None = None
    sequence: bool = False
    baselines: dict = dataclasses.field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input example."""
        if self.window is not None:
            return (self.window, *self.train.x.shape[1:])
        return tuple(self.train.x.shape[1:])

    @property
    def epoch_examples(self) -> int:
        """Training examples per epoch: windows of the stream for text (each
        character is seen about once), else the training split's size."""
        if self.window is not None:
            return len(self.train) // self.window
        return len(self.train)

    def sample_input(self) -> np.ndarray:
        """One input example with a batch axis (for ``model.init``)."""
        if self.window is not None:
            return self.train.x[None, : self.window]
        return self.train.x[:1]

    def splits(self) -> dict[str, Split]:
        """The splits as examples (text: the training stream cut into
        non-overlapping windows, like validation and test)."""
        train = self.train
        if self.window is not None:
            stream = np.concatenate([train.x, train.y[-1:]])
            train = Split(*text.windows(stream, self.window))
        out = {"train": train, "val": self.val, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}


_IDX_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def _file_stamp(directory: Path) -> tuple:
    if not directory.is_dir():
        return ()
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                 for p in sorted(directory.glob("*.gz")))


def _idx_arrays(name: str, data_dir: Path) -> dict[str, np.ndarray]:
    """IDX arrays, parsed once per process while the files stay unchanged
    (a sweep runs many trials on the same data). The cached arrays are
    read-only; every split made from them is a copy."""
    folder = Path(data_dir) / name
    key = (name, str(folder.resolve()), _file_stamp(folder))
    if key[2] and key in _IDX_CACHE:
        return _IDX_CACHE[key]
    arrays = idx.load_idx_dataset(name, data_dir)
    for a in arrays.values():
        a.setflags(write=False)
    _IDX_CACHE.clear()
    _IDX_CACHE[(name, str(folder.resolve()), _file_stamp(folder))] = arrays
    return arrays


def signed_images(x: np.ndarray) -> np.ndarray:
    """Images ``[n, H, W]`` in [0, 1] (``normalize: unit``) as ``[n, H, W, 1]``
    float32 in [-1, 1], the range of a GAN generator's ``tanh``."""
    return (np.asarray(x, np.float32) * 2.0 - 1.0)[..., None]


def keep_classes(split: Split, classes: tuple[int, ...]) -> Split:
    """The examples of ``classes``, relabelled ``0..K-1`` in that order."""
    lut = np.full(max(int(split.y.max(initial=0)), *classes) + 1, -1, np.int32)
    lut[list(classes)] = np.arange(len(classes), dtype=np.int32)
    keep = np.flatnonzero(lut[split.y] >= 0)
    return Split(split.x[keep], lut[split.y[keep]])


def load(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Load, split and normalise the dataset ``cfg`` names.

    Args:
      cfg: the data section of a config.
      seed: the config seed (drives splits and synthetic data).

    Raises:
      DataError: a file is missing, corrupt, or cannot be downloaded.
    """
    if cfg.name in TEXT_DATASETS:
        return _load_text(cfg)
    normalize = cfg.normalize
    if cfg.name == "digits":
        x, y = digits.load_digits()
        # A fixed test split, the same for every seed (as MNIST's).
        train, test = split_off(Split(x, y), config_lib.test_fraction(cfg),
                                seeded_rng(0, "split"))
        task, outputs, image = "classification", 10, True
    elif cfg.name in IMAGE_DATASETS:
        arrays = _idx_arrays(cfg.name, download.default_data_dir(cfg.dir))
        train = Split(arrays["x_train"], arrays["y_train"].astype(np.int32))
        test = Split(arrays["x_test"], arrays["y_test"].astype(np.int32))
        task, outputs, image = "classification", 10, True
    elif cfg.name in PLAYGROUND_DATASETS:
        x, y = synthetic.playground(cfg.name, cfg.n_samples, cfg.noise,
                                    int(seeded_rng(seed, "synthetic").integers(2**31)))
        x = synthetic.add_features(x, cfg.features)
        train, test = split_off(Split(x, y.astype(np.int32)), config_lib.test_fraction(cfg),
                                seeded_rng(seed, "split"))
        task, outputs, image = "binary", 1, False
    elif cfg.name == "linear":
        x, y = synthetic.linear_regression(cfg.n_samples, cfg.n_features, cfg.noise,
                                           int(seeded_rng(seed, "synthetic").integers(2**31)))
        train, test = split_off(Split(x, y), config_lib.test_fraction(cfg),
                                seeded_rng(seed, "split"))
        task, outputs, image = "regression", int(y.shape[-1]), False
    elif cfg.name == "sine":
        x, y = synthetic.sine_sequences(cfg.n_samples, cfg.seq_len, cfg.noise,
                                        int(seeded_rng(seed, "synthetic").integers(2**31)))
        train, test = split_off(Split(x, y), config_lib.test_fraction(cfg),
                                seeded_rng(seed, "split"))
        task, outputs, image, normalize = "regression", 1, False, "none"
    else:
        raise ValueError(f"unknown dataset {cfg.name!r}")
    if cfg.classes is not None:
        train, test = keep_classes(train, cfg.classes), keep_classes(test, cfg.classes)
        outputs = len(cfg.classes)

    val = None
    if cfg.val_fraction > 0:
        train, val = split_off(train, cfg.val_fraction, seeded_rng(seed, "val"))
    if cfg.train_limit is not None and cfg.train_limit < len(train):
        keep = np.sort(seeded_rng(seed, "limit").permutation(len(train))[: cfg.train_limit])
        train = train.take(keep)
    norm = fit_normalizer(train.x, normalize, image)

    def apply(s: Split | None) -> Split | None:
        return None if s is None else Split(norm(s.x), s.y)

    splits = {"train": apply(train), "val": apply(val), "test": apply(test)}
    baselines = {}
    if cfg.name == "sine":
        # "Repeat the last value": predict s_{t+1} as the noisy s_t just seen.
        baselines = {k: {"repeat_last_mse": float(np.mean(np.square(s.x - s.y)))}
                     for k, s in splits.items() if s is not None}
    return Dataset(cfg.name, task, outputs, **splits, normalizer=norm,
                   sequence=cfg.name == "sine", baselines=baselines)


def _load_text(cfg: DataConfig) -> Dataset:
    corpus, sha = text.load_corpus(cfg.name, download.default_data_dir(cfg.dir))
    n = len(corpus)
    region = config_lib.text_split_chars(n, dataclasses.replace(cfg, train_limit=None))
    used = config_lib.text_split_chars(n, cfg)
    train_end = region["train"]
    val_end = train_end + region["val"]
    parts = {"train": corpus[: used["train"]], "val": corpus[train_end:val_end],
             "test": corpus[val_end:]}
    vocab = Vocab.build(parts["train"], sha)
    if not set(parts["val"] + parts["test"]) <= set(vocab.chars):
        vocab = Vocab((*vocab.chars, text.UNKNOWN), sha)
    ids = {k: vocab.encode(v, unknown="map") for k, v in parts.items()}
    train = Split(ids["train"][:-1], ids["train"][1:])
    val = Split(*text.windows(ids["val"], cfg.seq_len)) if cfg.val_fraction > 0 else None
    test = Split(*text.windows(ids["test"], cfg.seq_len))
    norm = fit_normalizer(train.x, "none", False)
    return Dataset(cfg.name, "classification", len(vocab), train, val, test, norm,
                   vocab=vocab, window=cfg.seq_len, sequence=True)
