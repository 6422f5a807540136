"""Generalised advantage estimation (Schulman et al., 2016) as a reverse
``lax.scan`` over a rollout's time axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gae"]


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
        terminated: jax.Array, done: jax.Array, gamma: float | jax.Array,
        lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets of a rollout ``[T, ...]`` (time first).

    With auto-resetting environments the observation after step ``t`` of a
    finished episode belongs to the next episode, so the caller passes the
    value of the *true* next observation (``final_observation`` where the
    episode ended) as ``next_values``:

    * ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t``
      (a time-limit truncation still bootstraps from the last state);
    * ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}`` (no credit
      flows across an episode boundary, terminated or truncated).

    Args:
      rewards, values, next_values: ``[T, ...]`` floats.
      terminated: ``[T, ...]``, the episode reached a terminal state.
      done: ``[T, ...]``, the episode ended (terminated or truncated).
      gamma, lam: discount and GAE lambda.
    Returns:
      ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    deltas = rewards + gamma * (1.0 - terminated.astype(rewards.dtype)) * next_values - values
    carry_mask = gamma * lam * (1.0 - done.astype(rewards.dtype))

    def back(next_adv, inp):
        delta, mask = inp
        adv = delta + mask * next_adv
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, carry_mask), reverse=True)
    return adv, adv + values
