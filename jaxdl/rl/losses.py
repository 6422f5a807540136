"""PPO's loss pieces (Schulman et al., 2017), each pure and tested on its own.

    loss, parts = ppo_loss(log_prob, old_log_prob, advantages, values, old_values,
                           returns, entropy, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["clipped_surrogate", "ppo_loss", "value_loss"]


def clipped_surrogate(ratio: jax.Array, advantages: jax.Array, clip_eps: float | jax.Array
                      ) -> jax.Array:
    """``-mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))``: the
    policy loss (to minimise) with the probability ratio clipped."""
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
               clip_eps: float | jax.Array | None = None) -> jax.Array:
    """``0.5 * mean((V - R)^2)``; with ``clip_eps``, the larger of that and
    the error of ``old_values + clip(V - old_values, -eps, eps)`` (the value
    function moves at most ``eps`` from the rollout's estimate per update)."""
    err = (values - returns) ** 2
    if clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        err = jnp.maximum(err, (clipped - returns) ** 2)
    return 0.5 * jnp.mean(err)


def ppo_loss(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
             values: jax.Array, old_values: jax.Array, returns: jax.Array,
             entropy: jax.Array, *, clip_eps: float | jax.Array, vf_coef: float | jax.Array,
             ent_coef: float | jax.Array, clip_value: bool = True
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``policy + vf_coef * value - ent_coef * mean(entropy)`` over a
    minibatch (each argument ``[batch]``; advantages as given: normalise
    them before if wanted).

    Returns:
      The total loss and its parts: ``policy_loss``, ``value_loss``,
      ``entropy``, ``approx_kl`` (``mean((r - 1) - log r)``, Schulman's
      low-variance estimator) and ``clip_fraction`` (share of ratios outside
      ``1 +- clip_eps``).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    pl = clipped_surrogate(ratio, advantages, clip_eps)
    vl = value_loss(values, old_values, returns, clip_eps if clip_value else None)
    ent = jnp.mean(entropy)
    total = pl + vf_coef * vl - ent_coef * ent
    return total, {"policy_loss": pl, "value_loss": vl, "entropy": ent,
                   "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
                   "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps)
                                             .astype(jnp.float32))}
