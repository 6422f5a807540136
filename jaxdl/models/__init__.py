"""Model families (Flax Linen) and the config-name -> factory registry.

``make(cfg.model, outputs)`` builds the module a config names; the module's
``init``/``apply`` are pure, so params are plain pytrees that vmap, shard and
checkpoint like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jaxdl.config import GANConfig, ModelConfig
from jaxdl.models.cnn import CNN
from jaxdl.models.layers import ACTIVATIONS, Conv2D, Dropout
from jaxdl.models.mlp import MLP
from jaxdl.models.rnn import RNN, Recurrent

__all__ = ["ACTIVATIONS", "CNN", "MLP", "REGISTRY", "RNN", "Conv2D", "Dropout", "Recurrent",
           "conv_impl", "make", "mlp_widths"]


def mlp_widths(cfg: ModelConfig) -> tuple[int, ...]:
    """Hidden widths of an MLP config: ``widths`` if given, else depth x width."""
    return tuple(cfg.widths) if cfg.widths is not None else (cfg.width,) * cfg.depth


def conv_impl(cfg: ModelConfig | GANConfig, backend: str | None = None) -> str:
    """The convolution lowering of a config section's ``conv`` for a backend:
    ``auto`` is im2col on CPU (measured faster there: benchmarks/engine_modes.py
    for the CNN, benchmarks/gan_step.py for the GAN) and XLA's own
    convolution elsewhere (cuDNN / TPU convolutions)."""
    if cfg.conv != "auto":
        return cfg.conv
    return "im2col" if (backend or jax.default_backend()) == "cpu" else "xla"


def _make_mlp(cfg: ModelConfig, outputs: int, backend: str | None, **_) -> nn.Module:
    return MLP(widths=mlp_widths(cfg), outputs=outputs, activation=cfg.activation)


def _make_rnn(cfg: ModelConfig, outputs: int, backend: str | None, *, vocab: int | None = None,
              sequence_output: bool = False) -> nn.Module:
    return RNN(cell=cfg.name, hidden=cfg.width, layers=cfg.depth, outputs=outputs,
               bidirectional=cfg.bidirectional, sequence_output=sequence_output, vocab=vocab,
               embed=cfg.embed, activation=cfg.activation, unroll=cfg.unroll)


def _make_cnn(cfg: ModelConfig, outputs: int, backend: str | None, **_) -> nn.Module:
    return CNN(channels=tuple(cfg.channels), outputs=outputs, kernel=cfg.kernel, pool=cfg.pool,
               dense=tuple(cfg.dense), activation=cfg.activation, batch_norm=cfg.batch_norm,
               conv=conv_impl(cfg, backend))


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": _make_mlp,
    "cnn": _make_cnn,
    "rnn": _make_rnn,
    "lstm": _make_rnn,
}


def make(cfg: ModelConfig, outputs: int, backend: str | None = None, *,
         vocab: int | None = None, sequence_output: bool = False) -> nn.Module:
    """The Flax module described by ``cfg`` with ``outputs`` output units.

    Args:
      cfg: the model section of a config.
      outputs: classes (vocabulary size for a language model), or 1 for
        binary classification / scalar regression.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; default: JAX's default backend.
      vocab: rnn/lstm: inputs are token ids of this vocabulary (embedded).
      sequence_output: rnn/lstm: an output per time step (next-step
        prediction) instead of one per sequence (classification).
    """
    try:
        factory = REGISTRY[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r}; valid: {', '.join(REGISTRY)}") from None
    return factory(cfg, outputs, backend, vocab=vocab, sequence_output=sequence_output)
