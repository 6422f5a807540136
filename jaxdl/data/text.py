"""Character corpora for language models: download, vocabulary, splits.

Tiny Shakespeare (Karpathy's char-rnn corpus, 1,115,394 characters) lives
in ``<data dir>/tinyshakespeare/input.txt``; it is downloaded on first use
and verified by SHA-256 like every other file (``$JAXDL_MIRROR`` replaces
the download URL's base, for tests and air-gapped machines).

The corpus is split *contiguously* (train, then validation, then test at the
end), so no validation window overlaps a training one. The vocabulary is
built from the training split only and saved with each run
(``vocab.json``): sampling from a restored run uses the very mapping it
was trained with, even if the corpus changes later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxdl.data.download import default_data_dir, fetch, mirror_urls
from jaxdl.errors import DataError

__all__ = ["CORPORA", "UNKNOWN", "Vocab", "load_corpus", "windows"]

# name -> folder, file, SHA-256, base URLs (the file name is appended).
CORPORA: dict[str, dict] = {
    "shakespeare": {
        "folder": "tinyshakespeare",
        "file": "input.txt",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "mirrors": ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                    "tinyshakespeare/",),
    },
}

UNKNOWN = "\ufffd"
"""Stands for characters of the validation/test text that the training
split never showed (added to the vocabulary only when needed)."""


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A character <-> id mapping. Ids follow the sorted characters.

    Attributes:
      chars: the characters, id order.
      source_sha256: SHA-256 of the corpus file it was built from.
    """

    chars: tuple[str, ...]
    source_sha256: str = ""

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise DataError("a vocabulary must hold distinct single characters")

    @classmethod
    def build(cls, text: str, source_sha256: str = "") -> Vocab:
        """The vocabulary of the characters in ``text``."""
        return cls(tuple(sorted(set(text))), source_sha256)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str, *, unknown: str = "error") -> np.ndarray:
        """Ids ``int32 [len(text)]``.

        Args:
          unknown: ``"error"`` raises on a character outside the vocabulary;
            ``"map"`` maps it to :data:`UNKNOWN` (which must be in it).
        Raises:
          DataError: a character is not in the vocabulary (``"error"``).
        """
        index = self.index
        table = np.full(max(map(ord, text), default=0) + 1, -1, np.int64)
        for c, i in index.items():
            if ord(c) < table.size:
                table[ord(c)] = i
        try:
            codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        except UnicodeEncodeError as e:   # undecodable bytes from a command line
            raise DataError(f"text is not valid Unicode: {e}") from None
        ids = table[codes]
        missing = ids < 0
        if missing.any():
            if unknown == "map" and UNKNOWN in index:
                ids[missing] = index[UNKNOWN]
            else:
                bad = sorted({text[i] for i in np.flatnonzero(missing)[:1000]})
                raise DataError(
                    f"characters not in the vocabulary: {', '.join(map(repr, bad[:10]))}; "
                    f"the vocabulary holds {len(self)}: {''.join(self.chars)!r}")
        return ids.astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars), "size": len(self),
                "source_sha256": self.source_sha256}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(tuple(d["chars"]), d.get("source_sha256", ""))

    def save(self, path: str | Path) -> None:
        from jaxdl.metrics import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a ``vocab.json``.

        Raises:
          DataError: missing, unreadable, or not a vocabulary.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            vocab = cls.from_dict(d)
        except FileNotFoundError:
            raise DataError(f"{path} is missing: the run was not a language model, or its "
                            "directory is incomplete") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path} is not a vocabulary file: {e}") from None
        if d.get("size") is not None and d["size"] != len(vocab):
            raise DataError(f"{path}: says {d['size']} characters but holds {len(vocab)}")
        return vocab


def load_corpus(name: str, data_dir: str | os.PathLike[str] | None = None, *,
                urls: Sequence[str] | None = None, timeout: float = 30.0) -> tuple[str, str]:
    """The text of a corpus and its (verified) SHA-256, downloading it if needed.

    Raises:
      DataError: unknown corpus, no verified copy obtainable, or not UTF-8.
    """
    if name not in CORPORA:
        raise DataError(f"unknown text corpus {name!r}; valid: {', '.join(CORPORA)}")
    spec = CORPORA[name]
    directory = default_data_dir(data_dir) / spec["folder"]
    path = fetch(spec["file"], spec["sha256"], directory,
                 mirror_urls(spec["file"], spec["mirrors"], urls), timeout=timeout)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:   # only with a digest that was changed by hand
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    return text, spec["sha256"]   # fetch returns only a file that matched it


def windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (input, next-character target) windows of a split.

    Returns:
      ``x [n, length]`` and ``y [n, length]`` int32, ``y`` shifted by one
      character, with ``n = (len(ids) - 1) // length``; the tail that does
      not fill a window is dropped.
    """
    n = (len(ids) - 1) // length
    x = ids[: n * length].reshape(n, length)
    y = ids[1: n * length + 1].reshape(n, length)
    return x.astype(np.int32), y.astype(np.int32)
