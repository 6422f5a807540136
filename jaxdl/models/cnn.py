"""Convolutional networks for small images."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import Conv2D, Dropout, activation

__all__ = ["CNN"]


class CNN(nn.Module):
    """Conv blocks (conv -> [batch norm] -> activation -> 2x2 pool), then a
    dense head.

    With the defaults (channels (32, 64), kernel 3, avg pool, head (256,)) it
    is the network of Flax's MNIST example.

    Attributes:
      channels: output channels of each conv block.
      outputs: size of the final linear layer.
      kernel: square kernel side.
      pool: ``"avg"``, ``"max"`` or ``"none"``.
      dense: hidden widths of the head.
      activation: name from :data:`jaxdl.models.layers.ACTIVATIONS`.
      batch_norm: batch normalisation after each convolution (adds the
        ``batch_stats`` collection).
      dropout: whether dropout layers follow the hidden dense layers (the
        rate is an input to ``__call__``; 0 skips the mask at run time).
      conv: convolution lowering, ``"xla"`` or ``"im2col"`` (see
        :class:`~jaxdl.models.layers.Conv2D`).

    Call:
      x: ``[batch, height, width]`` or ``[batch, height, width, channels]``.
      train: batch statistics and dropout on.
      dropout_rate: scalar in [0, 1).
    Returns:
      ``[batch, outputs]`` float32.
    """

    channels: Sequence[int]
    outputs: int
    kernel: int = 3
    pool: str = "avg"
    dense: Sequence[int] = (256,)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: bool = True
    conv: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 dropout_rate: jax.Array | float = 0.0) -> jax.Array:
        act = activation(self.activation)
        if x.ndim == 3:
            x = x[..., None]
        for c in self.channels:
            x = Conv2D(c, self.kernel, impl=self.conv)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = act(x)
            if self.pool == "avg":
                x = _avg_pool2(x)
            elif self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        for width in self.dense:
            x = act(nn.Dense(width)(x))
            if self.dropout:
                x = Dropout()(x, dropout_rate, deterministic=not train)
        return nn.Dense(self.outputs)(x)


def _avg_pool2(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, VALID (as ``nn.avg_pool``), as a
    reshape and mean: its gradient is a broadcast rather than a windowed
    reduction."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
