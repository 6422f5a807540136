"""gymnax environments, vmapped and with episode statistics.

    env = VecEnv("CartPole-v1", num_envs=8)
    obs, state = env.reset(key)                       # obs [8, 4]
    obs, state, reward, terminated, truncated, info = env.step(key, state, actions)

gymnax 1.0's ``step`` already resets a finished episode (``info
["final_observation"]`` is the observation it ended on). :class:`VecEnv`
keeps each environment's running return and length and reports, per step,
the episodes that ended there: ``info["episode_done"]`` (terminated or
truncated), ``info["episode_return"]`` and ``info["episode_length"]`` (0
where no episode ended). Everything is pure and jit/vmap/scan friendly.

Optional observation normalisation is kept apart from the environment, as
data an agent carries: :class:`ObsStats` (running mean and variance),
:func:`update_stats` while training, :func:`normalize` with frozen
statistics when evaluating. :func:`episode_returns` plays whole episodes
with a given policy (greedy evaluation, random baselines).

gymnax is imported on first use: importing it starts JAX's backends.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["ENVIRONMENTS", "EpisodeState", "ObsStats", "VecEnv", "episode_returns", "init_stats",
           "make", "normalize", "update_stats"]

# Environments jaxdl's agents are tested on (any gymnax name works in make).
ENVIRONMENTS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                "MountainCarContinuous-v0")


def make(name: str) -> tuple[Any, Any]:
    """``(env, params)`` of the gymnax environment ``name``.

    Raises:
      ValueError: an unknown name; the message lists the valid ones.
    """
    import gymnax

    if name not in gymnax.registered_envs:
        raise ValueError(f"unknown environment {name!r}; valid: "
                         f"{', '.join(gymnax.registered_envs)}")
    return gymnax.make(name)


class EpisodeState(NamedTuple):
    """The environments' states plus each one's running episode return and
    length (``[num_envs]``)."""

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class VecEnv:
    """``num_envs`` copies of a gymnax environment stepped as one (vmap).

    Args:
      name: a gymnax environment name (see :func:`make`).
      num_envs: environments stepped together.
      params: environment parameters (default: the environment's own).

    Attributes:
      env, params: the gymnax environment and its parameters.
      discrete: whether actions are integers (``num_actions`` of them) or
        vectors of ``action_shape`` floats in ``[action_low, action_high]``.
    """

    def __init__(self, name: str, num_envs: int, params: Any = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.name, self.num_envs = name, num_envs
        self.env, default = make(name)
        self.params = default if params is None else params
        space = self.env.action_space(self.params)
        self.discrete = hasattr(space, "n")
        self.num_actions = int(space.n) if self.discrete else None
        self.action_shape = () if self.discrete else tuple(space.shape)
        self.action_low = None if self.discrete else jnp.asarray(space.low, jnp.float32)
        self.action_high = None if self.discrete else jnp.asarray(space.high, jnp.float32)
        self.observation_shape = tuple(self.env.observation_space(self.params).shape)
        self.max_steps = int(getattr(self.params, "max_steps_in_episode", 1000))

    def reset(self, key: jax.Array) -> tuple[jax.Array, EpisodeState]:
        """Observations ``[num_envs, *obs]`` and fresh states."""
        obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(
            jax.random.split(key, self.num_envs), self.params)
        zeros = jnp.zeros((self.num_envs,), jnp.float32)
        return obs, EpisodeState(env_state, zeros, jnp.zeros((self.num_envs,), jnp.int32))

    def step(self, key: jax.Array, state: EpisodeState, action: jax.Array
             ) -> tuple[jax.Array, EpisodeState, jax.Array, jax.Array, jax.Array, dict]:
        """One step of every environment (finished episodes restart).

        Returns:
          ``(obs, state, reward, terminated, truncated, info)``, each with a
          leading ``[num_envs]`` axis; ``info`` holds gymnax's
          ``final_observation`` plus ``episode_done``, ``episode_return`` and
          ``episode_length`` of the episodes that ended at this step.
        """
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key, self.num_envs), state.env_state, action, self.params)
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        ret = state.episode_return + reward
        length = state.episode_length + 1
        info = {**info, "episode_done": done,
                "episode_return": jnp.where(done, ret, 0.0),
                "episode_length": jnp.where(done, length, 0)}
        new = EpisodeState(env_state, jnp.where(done, 0.0, ret), jnp.where(done, 0, length))
        return obs, new, reward, terminated, truncated, info


class ObsStats(NamedTuple):
    """Running mean and variance of observations (per feature) and the
    number of observations they summarise."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_stats(shape: tuple[int, ...]) -> ObsStats:
    """Statistics of no observations yet (mean 0, variance 1)."""
    return ObsStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32),
                    jnp.asarray(1e-4, jnp.float32))


def update_stats(stats: ObsStats, batch: jax.Array) -> ObsStats:
    """``stats`` merged with a batch ``[n, *shape]`` (Chan et al.'s parallel
    update: exact mean and variance of all observations seen)."""
    batch = batch.astype(jnp.float32)
    n = jnp.asarray(batch.shape[0], jnp.float32)
    mean, var = batch.mean(0), batch.var(0)
    total = stats.count + n
    delta = mean - stats.mean
    new_mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + var * n + delta**2 * stats.count * n / total
    return ObsStats(new_mean, m2 / total, total)


def normalize(stats: ObsStats, obs: jax.Array, clip: float = 10.0) -> jax.Array:
    """``(obs - mean) / sqrt(var + 1e-8)``, clipped to ``[-clip, clip]``."""
    return jnp.clip((obs - stats.mean) / jnp.sqrt(stats.var + 1e-8), -clip, clip)


def episode_returns(env: VecEnv, act, key: jax.Array, max_steps: int | None = None
                    ) -> tuple[jax.Array, jax.Array]:
    """Plays one episode in each of ``env.num_envs`` copies.

    Args:
      env: the environments (one episode each).
      act: ``act(obs [num_envs, *obs], key) -> actions`` (a greedy policy
        ignores ``key``).
      key: randomness of the resets, the environments and ``act``.
      max_steps: steps at most (default: the environment's episode limit).
    Returns:
      ``(returns, lengths)``, each ``[num_envs]``: the undiscounted return
      and length of each first episode.
    """
    max_steps = env.max_steps if max_steps is None else max_steps
    k_reset, k_run = jax.random.split(key)
    obs, state = env.reset(k_reset)

    def step(carry, t):
        state, obs, total, length, alive = carry
        k_act, k_env = jax.random.split(jax.random.fold_in(k_run, t))
        obs, state, reward, term, trunc, _ = env.step(k_env, state, act(obs, k_act))
        total = total + jnp.where(alive, reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & ~jnp.logical_or(term, trunc)
        return (state, obs, total, length, alive), None

    n = env.num_envs
    init = (state, obs, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32),
            jnp.ones((n,), bool))
    (_, _, total, length, _), _ = jax.lax.scan(step, init, jnp.arange(max_steps))
    return total, length
