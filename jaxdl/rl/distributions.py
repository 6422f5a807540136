"""The two policy distributions an actor-critic needs, as plain functions of
the network's outputs (no distribution objects, so everything vmaps and
jits as arrays).

* categorical: ``logits [..., actions]``;
* diagonal Gaussian: ``mean [..., d]`` and ``log_std [d]`` (or broadcastable).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["categorical_entropy", "categorical_log_prob", "categorical_sample",
           "gaussian_entropy", "gaussian_log_prob", "gaussian_sample"]


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """``log p(action)`` for integer ``actions [...]``."""
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    return jax.random.categorical(key, logits).astype(jnp.int32)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """Sum over action dimensions of the diagonal Gaussian's log density."""
    z = (actions - mean) * jnp.exp(-log_std)
    per_dim = -0.5 * z ** 2 - log_std - 0.5 * math.log(2.0 * math.pi)
    return jnp.sum(jnp.broadcast_to(per_dim, jnp.broadcast_shapes(mean.shape, per_dim.shape)),
                   axis=-1)


def gaussian_entropy(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    per_dim = jnp.broadcast_to(log_std + 0.5 * math.log(2.0 * math.pi * math.e), mean.shape)
    return jnp.sum(per_dim, axis=-1)


def gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
