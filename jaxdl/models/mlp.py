"""Multi-layer perceptrons (and, at depth 0, linear/logistic regression)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import Dropout, activation

__all__ = ["MLP"]


class MLP(nn.Module):
    """Dense layers with a nonlinearity and optional dropout between them.

    Attributes:
      widths: hidden layer widths; empty = a single linear layer.
      outputs: size of the last (linear) layer: classes, or 1 for binary
        classification and scalar regression.
      activation: name from :data:`jaxdl.models.layers.ACTIVATIONS`.
      dropout: whether dropout layers follow the hidden layers (default
        yes); the rate is an input to ``__call__``, so any rate, 0 included,
        runs in the same compiled program.

    Call:
      x: ``[batch, ...]`` float; flattened to ``[batch, features]``.
      train: enables dropout (needs a ``"dropout"`` rng).
      dropout_rate: scalar in [0, 1).
    Returns:
      ``[batch, outputs]`` logits / predictions, float32.
    """

    widths: Sequence[int]
    outputs: int
    activation: str = "relu"
    dropout: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 dropout_rate: jax.Array | float = 0.0) -> jax.Array:
        act = activation(self.activation)
        x = jnp.reshape(x, (x.shape[0], -1))
        for width in self.widths:
            x = act(nn.Dense(width)(x))
            if self.dropout:
                x = Dropout()(x, dropout_rate, deterministic=not train)
        return nn.Dense(self.outputs)(x)
