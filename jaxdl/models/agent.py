"""Reinforcement-learning networks: an actor-critic (discrete or Gaussian
policy head, shared or separate torso) and a Q-network.

Orthogonal initialisation with the usual gains (sqrt(2) in the torso, 0.01
on the policy head, 1 on the value head), as in most PPO implementations
(Andrychowicz et al., 2021, "What matters in on-policy RL").
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import activation as activation_fn

__all__ = ["ActorCritic", "QNetwork"]


def _dense(features: int, gain: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain),
                    bias_init=nn.initializers.zeros)


class _Torso(nn.Module):
    width: int
    depth: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for _ in range(self.depth):
            x = act(_dense(self.width, math.sqrt(2.0))(x))
        return x


class ActorCritic(nn.Module):
    """``obs [B, *obs]`` -> ``(policy, value [B])``.

    ``policy`` is ``logits [B, actions]`` for a discrete head, or ``(mean [B,
    d], log_std [d])`` for a Gaussian one (a state-independent learned log
    standard deviation, initialised at 0).

    Attributes:
      actions: number of discrete actions, or the action dimension.
      continuous: Gaussian head instead of categorical.
      width, depth: each torso's hidden layers.
      shared: one torso for both heads (else separate actor and critic).
      activation: hidden activation (``tanh`` is the PPO default).
    """

    actions: int
    continuous: bool = False
    width: int = 64
    depth: int = 2
    shared: bool = False
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array):
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        actor = _Torso(self.width, self.depth, self.activation, name="actor")(x)
        critic = actor if self.shared else _Torso(self.width, self.depth, self.activation,
                                                  name="critic")(x)
        value = _dense(1, 1.0)(critic)[:, 0]
        out = _dense(self.actions, 0.01)(actor)
        if self.continuous:
            log_std = self.param("log_std", nn.initializers.zeros, (self.actions,))
            return (out, log_std), value
        return out, value


class QNetwork(nn.Module):
    """``obs [B, *obs]`` -> action values ``[B, actions]``."""

    actions: int
    width: int = 64
    depth: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        x = _Torso(self.width, self.depth, self.activation)(x)
        return nn.Dense(self.actions)(x)
