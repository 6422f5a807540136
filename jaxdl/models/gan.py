"""GAN networks: a generator (latent vector -> image in [-1, 1]) and a
discriminator (image -> one logit), each as an MLP or a DCGAN-style
convolutional network.

Convolutional generator: ``Dense(7 * 7 * width)`` -> ``[7, 7, width]`` ->
(nearest-neighbour upsample x2, 3x3 conv, norm, ReLU) twice, halving the
channels each time -> 3x3 conv to the image channels -> ``tanh``. Upsample +
convolution instead of a transposed convolution avoids the checkerboard
pattern of strided transposed kernels and keeps to :class:`Conv2D`, whose
im2col lowering is XLA CPU's fast path (``models.conv: auto``).

Convolutional discriminator: (3x3 conv, LeakyReLU(0.2), 2x2 average pool)
twice, doubling the channels (``width / 2`` then ``width``) -> flatten ->
``Dense(1)``. No normalisation: the discriminator sees real and generated
batches in separate calls, and batch statistics would tell them apart.

The MLP variants use ``depth`` hidden layers of ``width`` units (LeakyReLU in
the discriminator, ReLU and optional batch norm in the generator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.cnn import _avg_pool2
from jaxdl.models.layers import Conv2D

__all__ = ["KINDS", "NORMS", "Discriminator", "Generator"]

KINDS = ("mlp", "conv")
NORMS = ("batch", "none")


def _check(kind: str, norm: str = "none") -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown GAN network kind {kind!r}; valid: {', '.join(KINDS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown generator norm {norm!r}; valid: {', '.join(NORMS)}")


def _upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling of ``[B, H, W, C]``."""
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(
        b, 2 * h, 2 * w, c)


class Generator(nn.Module):
    """Latent ``z [batch, latent]`` -> images ``[batch, *image]`` in [-1, 1].

    Attributes:
      kind: ``mlp`` or ``conv``.
      width: MLP hidden units; conv channels at 7x7 (then ``width / 2`` at
        14x14 and ``width / 4`` at 28x28).
      depth: MLP hidden layers (conv: unused).
      norm: ``batch`` (batch norm after each hidden layer; running averages
        in the ``batch_stats`` collection) or ``none``.
      image: output shape ``(height, width, channels)``; conv needs height
        and width divisible by 4.
      conv: :class:`Conv2D` lowering (``xla`` or ``im2col``).

    Call: ``(z, train=False)``; ``train`` uses batch statistics and updates
    the running averages (pass ``mutable=["batch_stats"]``).
    """

    kind: str = "conv"
    width: int = 128
    depth: int = 2
    norm: str = "batch"
    image: Sequence[int] = (28, 28, 1)
    conv: str = "xla"

    def _norm(self, x: jax.Array, train: bool) -> jax.Array:
        if self.norm == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return x

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        _check(self.kind, self.norm)
        h, w, c = self.image
        if self.kind == "mlp":
            x = z
            for _ in range(self.depth):
                x = nn.relu(self._norm(nn.Dense(self.width)(x), train))
            x = nn.Dense(h * w * c)(x)
            return jnp.tanh(x).reshape(z.shape[0], h, w, c)
        if h % 4 or w % 4:
            raise ValueError(f"a conv generator needs height and width divisible by 4, "
                             f"got {h}x{w}")
        x = nn.Dense(h // 4 * w // 4 * self.width)(z)
        x = nn.relu(self._norm(x, train)).reshape(z.shape[0], h // 4, w // 4, self.width)
        for channels in (max(self.width // 2, 1), max(self.width // 4, 1)):
            x = Conv2D(channels, 3, impl=self.conv)(_upsample2(x))
            x = nn.relu(self._norm(x, train))
        return jnp.tanh(Conv2D(c, 3, impl=self.conv)(x))


class Discriminator(nn.Module):
    """Images ``[batch, H, W, C]`` (or ``[batch, H, W]``) -> logits
    ``[batch]`` (real > 0 > fake for the non-saturating loss).

    Attributes:
      kind: ``mlp`` or ``conv``.
      width: MLP hidden units; conv channels of the second block (the first
        has ``width / 2``).
      depth: MLP hidden layers (conv: unused).
      conv: :class:`Conv2D` lowering.
    """

    kind: str = "conv"
    width: int = 128
    depth: int = 2
    conv: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check(self.kind)
        if x.ndim == 3:
            x = x[..., None]
        if self.kind == "mlp":
            x = x.reshape(x.shape[0], -1)
            for _ in range(self.depth):
                x = nn.leaky_relu(nn.Dense(self.width)(x), 0.2)
        else:
            if x.shape[1] % 4 or x.shape[2] % 4:
                raise ValueError(f"a conv discriminator needs height and width divisible "
                                 f"by 4, got {x.shape[1]}x{x.shape[2]}")
            for channels in (max(self.width // 2, 1), self.width):
                x = _avg_pool2(nn.leaky_relu(Conv2D(channels, 3, impl=self.conv)(x), 0.2))
            x = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        return nn.Dense(1)(x)[:, 0]
