"""Pure losses and metrics.

Every function takes per-example predictions and targets plus optional
per-example ``weights`` (1 = counts, 0 = padding) and returns a float32
scalar: the weighted mean. Weights let evaluation pad the last batch to a
fixed shape without biasing the numbers.

Sequence outputs (``[batch, time, ...]``, a target per step) are averaged
over time within each example first: a language model's loss is then the
mean per character (all windows have the same length).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "accuracy",
    "binary_accuracy",
    "binary_cross_entropy",
    "cross_entropy",
    "l2_penalty",
    "mse",
    "weighted_mean",
]


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean of ``values [batch, ...]`` weighted by ``weights [batch]`` (or
    plain); trailing axes (time steps) are averaged within each example."""
    values = values.astype(jnp.float32)
    if values.ndim > 1:
        values = jnp.mean(jnp.reshape(values, (values.shape[0], -1)), axis=-1)
    if weights is None:
        return jnp.mean(values)
    weights = weights.astype(jnp.float32)
    total = jnp.sum(weights)
    # An all-padding batch (total 0) gives 0 rather than NaN.
    return jnp.sum(values * weights) / jnp.where(total > 0, total, 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
    """Softmax cross-entropy on integer labels, in nats.

    Args:
      logits: ``[batch, classes]`` (or ``[batch, time, classes]``).
      labels: ``[batch]`` (or ``[batch, time]``) integers in ``[0, classes)``.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return weighted_mean(losses, weights)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array,
                         weights: jax.Array | None = None) -> jax.Array:
    """Sigmoid cross-entropy (numerically stable, from logits), in nats.

    Args:
      logits: ``[batch]`` or ``[batch, 1]``.
      labels: ``[batch]`` in {0, 1}.
    """
    logits = jnp.reshape(logits, labels.shape).astype(jnp.float32)
    losses = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
    return weighted_mean(losses, weights)


def mse(predictions: jax.Array, targets: jax.Array,
        weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error; per example, the mean over its output dimensions.

    Args:
      predictions, targets: ``[batch, ...]`` of the same shape.
    """
    if predictions.shape != targets.shape:
        # Broadcasting [B, 1] against [B] would silently give a [B, B] error.
        raise ValueError(f"mse: predictions {predictions.shape} and targets {targets.shape} "
                         "must have the same shape")
    err = jnp.square(predictions.astype(jnp.float32) - targets.astype(jnp.float32))
    return weighted_mean(err, weights)


def accuracy(logits: jax.Array, labels: jax.Array,
             weights: jax.Array | None = None) -> jax.Array:
    """Fraction of ``argmax(logits [batch, (time,) classes]) == labels [batch, (time)]``."""
    return weighted_mean(jnp.argmax(logits, axis=-1) == labels, weights)


def binary_accuracy(logits: jax.Array, labels: jax.Array,
                    weights: jax.Array | None = None) -> jax.Array:
    """Fraction of ``(logits > 0) == labels`` for binary logits."""
    logits = jnp.reshape(logits, labels.shape)
    return weighted_mean((logits > 0) == (labels > 0), weights)


def l2_penalty(params) -> jax.Array:
    """``0.5 * sum of squared weights`` over kernels (biases and
    normalisation scales are not penalised, as is usual)."""
    leaves = [
        leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if getattr(path[-1], "key", None) == "kernel"
    ]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return 0.5 * sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
