"""Building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "Conv2D", "Dropout", "GatedRate", "activation"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (see :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}") from None


@flax.struct.dataclass
class GatedRate:
    """A dropout rate with a gate that says whether any mask is drawn.

    Under ``jax.vmap`` (a population of trials, each with its own rate) the
    rate is batched, and a ``lax.cond`` on a batched predicate runs both
    branches: every member would draw its masks even when all rates are 0
    (measured: half of a vmapped playground step). A population passes
    ``on = any(rates > 0)``, computed outside the vmap, so the cond stays a
    branch. A member at rate 0 inside a drawing population gets ``x``
    unchanged (its mask keeps everything and ``x / 1 == x``).

    Attributes:
      rate: scalar probability of zeroing a unit (batched under vmap).
      on: scalar bool, unbatched: draw masks at all (Python ``False``:
        never; no mask is compiled).
    """

    rate: jax.Array
    on: jax.Array | bool


class Dropout(nn.Module):
    """Inverted dropout whose rate is an input, not a module attribute.

    ``flax.linen.Dropout`` fixes the rate at construction, so every rate would
    be a new program. Here the rate is an array passed to ``__call__``: a sweep
    over dropout (0 included), or a vmapped population of trials with
    different rates, reuses one compiled step. At rate 0 a ``lax.cond`` skips
    the random mask at run time, so the op costs nothing when unused (in a
    vmapped population, pass a :class:`GatedRate`).

    Args (call):
      x: activations, any shape.
      rate: scalar probability of zeroing a unit, in [0, 1), or a
        :class:`GatedRate`.
      deterministic: identity when True (evaluation).
    Draws from the ``"dropout"`` RNG stream.
    """

    @nn.compact
    def __call__(self, x: jax.Array, rate: jax.Array | float | GatedRate,
                 deterministic: bool) -> jax.Array:
        if deterministic:
            return x
        if isinstance(rate, (int, float)) and rate == 0 and not self.has_rng("dropout"):
            return x   # a plain 0 needs no "dropout" rng
        if isinstance(rate, GatedRate):
            if rate.on is False:   # statically off: no masks compiled
                return x
            rate, on = jnp.asarray(rate.rate, jnp.float32), rate.on
        else:
            rate = jnp.asarray(rate, jnp.float32)
            on = rate > 0
        key = self.make_rng("dropout")

        def drop(x):
            keep = (1.0 - rate).astype(x.dtype)
            mask = jax.random.uniform(key, x.shape) < keep
            return jnp.where(mask, x / keep, jnp.zeros_like(x))

        return jax.lax.cond(on, drop, lambda x: x, x)


class Conv2D(nn.Module):
    """2-D convolution, stride 1, SAME padding, NHWC, with a choice of lowering.

    Parameters have ``nn.Conv``'s names and shapes (``kernel [k, k, in, out]``,
    ``bias [out]``), so the lowering can change without touching checkpoints.

    Attributes:
      features: output channels.
      kernel_size: square kernel side k.
      impl: ``"xla"`` uses ``lax.conv_general_dilated``; ``"im2col"`` builds
        the k*k shifted views of the padded input and does one matmul. On XLA
        CPU the convolution's backward pass is off the fast path, while the
        matmul and the slicing transpose to matmuls, pads and adds, which are
        on it (benchmarks/engine_modes.py measures both).
    """

    features: int
    kernel_size: int = 3
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), (1, 1), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        elif self.impl == "im2col":
            lo = (k - 1) // 2
            hi = k - 1 - lo
            h, w = x.shape[1], x.shape[2]
            xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
            # Column order (i, j, c) matches kernel.reshape(k*k*cin, out).
            cols = jnp.concatenate(
                [xp[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)], axis=-1)
            y = cols @ kernel.reshape(k * k * cin, self.features).astype(x.dtype)
        else:
            raise ValueError(f"unknown conv impl {self.impl!r}; valid: xla, im2col")
        return y + bias.astype(y.dtype)
