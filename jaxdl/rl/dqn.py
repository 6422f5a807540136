"""DQN (Mnih et al., 2015) with the whole training run compiled: each
update steps every environment once with an epsilon-greedy policy, writes
the transitions into a replay buffer held as fixed-size arrays, takes a
gradient step on a sampled batch (every ``train_every`` updates, once
``learning_starts`` steps are in) and moves the target network every
``target_every`` environment steps. Double DQN's target by default.

    from jaxdl.config import DQNConfig, RLConfig
    dqn = DQN(RLConfig(env="CartPole-v1", num_envs=10), DQNConfig())
    state = dqn.init(jax.random.key(0))
    state, metrics = jax.jit(dqn.run, static_argnums=1)(state, dqn.num_updates)

As for :mod:`jaxdl.rl.ppo`, the numbers (learning rate, discount, epsilon
schedule, intervals, tau) are data in ``state.hparams``; shapes (buffer,
batch, network, environments) are fixed when a :class:`DQN` is built.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.config import DQNConfig, RLConfig
from jaxdl.models.agent import QNetwork
from jaxdl.rl.env import (
    EpisodeState,
    ObsStats,
    VecEnv,
    episode_returns,
    init_stats,
    normalize,
    update_stats,
)
from jaxdl.rl.ppo import clip_by_norm

__all__ = ["DQN", "DQNState", "ReplayBuffer"]


class ReplayBuffer(NamedTuple):
    """Transitions in fixed-size arrays (leading axis ``size``), written
    round-robin: ``position`` is the next slot, ``filled`` how many hold
    data. Observations are stored raw (normalised when sampled)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array       # the true next observation (the final one at an episode end)
    terminated: jax.Array
    position: jax.Array
    filled: jax.Array

    @classmethod
    def empty(cls, size: int, obs_shape: tuple[int, ...]) -> ReplayBuffer:
        z = jnp.zeros
        return cls(z((size, *obs_shape), jnp.float32), z((size,), jnp.int32),
                   z((size,), jnp.float32), z((size, *obs_shape), jnp.float32),
                   z((size,), jnp.float32), z((), jnp.int32), z((), jnp.int32))

    def add(self, obs, action, reward, next_obs, terminated) -> ReplayBuffer:
        """The buffer with ``n`` transitions (leading axis ``n``) written at
        ``position`` (wrapping round, the oldest overwritten)."""
        size, n = self.obs.shape[0], obs.shape[0]
        idx = (self.position + jnp.arange(n)) % size
        return ReplayBuffer(self.obs.at[idx].set(obs), self.action.at[idx].set(action),
                            self.reward.at[idx].set(reward),
                            self.next_obs.at[idx].set(next_obs),
                            self.terminated.at[idx].set(terminated.astype(jnp.float32)),
                            (self.position + n) % size, jnp.minimum(self.filled + n, size))

    def sample(self, key: jax.Array, batch: int) -> dict[str, jax.Array]:
        """``batch`` transitions drawn uniformly (with replacement) from the
        filled slots."""
        idx = jax.random.randint(key, (batch,), 0, jnp.maximum(self.filled, 1))
        return dict(obs=self.obs[idx], action=self.action[idx], reward=self.reward[idx],
                    next_obs=self.next_obs[idx], terminated=self.terminated[idx])


class DQNState(NamedTuple):
    """Everything a DQN run carries from update to update (arrays only)."""

    params: Any
    target_params: Any
    opt_state: Any
    buffer: ReplayBuffer
    env_state: EpisodeState
    obs: jax.Array
    obs_stats: ObsStats
    rng: jax.Array           # uint32 key data
    update: jax.Array
    hparams: dict[str, jax.Array]


class DQN:
    """A compiled DQN run's structure (see the module docstring).

    Raises:
      ValueError: the environment's actions are continuous.
    """

    def __init__(self, rl: RLConfig, dqn: DQNConfig):
        self.rl, self.dqn = rl, dqn
        self.env = VecEnv(rl.env, rl.num_envs)
        if not self.env.discrete:
            raise ValueError(f"DQN needs discrete actions; {rl.env} has continuous ones "
                             "(use algorithm: ppo)")
        activation = "relu" if rl.activation == "auto" else rl.activation
        self.net = QNetwork(self.env.num_actions, width=rl.width, depth=rl.depth,
                            activation=activation)
        self.num_updates = rl.total_steps // rl.num_envs
        if self.num_updates < 1:
            raise ValueError(f"total_steps {rl.total_steps} is less than one update's "
                             f"{rl.num_envs} steps (num_envs)")
        self.tx = optax.scale_by_adam()

    @classmethod
    def from_config(cls, cfg) -> DQN:
        """The run of an ``algorithm: dqn`` :class:`~jaxdl.config.Config`."""
        return cls(cfg.rl, cfg.dqn)

    def hyperparams(self) -> dict[str, jax.Array]:
        """The settings that are data in the compiled run (float32 scalars;
        the step counts ``learning_starts``, ``train_every``, ``target_every``
        int32)."""
        d, r = self.dqn, self.rl
        values = dict(learning_rate=d.learning_rate, gamma=r.gamma, tau=d.tau,
                      epsilon_start=d.epsilon_start, epsilon_end=d.epsilon_end,
                      epsilon_steps=d.epsilon_fraction * r.total_steps,
                      max_grad_norm=d.max_grad_norm, reward_scale=r.reward_scale)
        counts = dict(learning_starts=d.learning_starts, train_every=d.train_every,
                      target_every=d.target_every)    # exact steps: int32, not float32
        return ({k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
                | {k: jnp.asarray(v, jnp.int32) for k, v in counts.items()})

    def _obs(self, stats: ObsStats, obs: jax.Array) -> jax.Array:
        return normalize(stats, obs) if self.rl.normalize_obs else obs

    def epsilon(self, hp: dict[str, jax.Array], steps: jax.Array) -> jax.Array:
        """The exploration rate after ``steps`` environment steps: linear
        from ``epsilon_start`` to ``epsilon_end`` over ``epsilon_steps``."""
        frac = jnp.clip(steps.astype(jnp.float32) / hp["epsilon_steps"], 0.0, 1.0)
        return hp["epsilon_start"] + frac * (hp["epsilon_end"] - hp["epsilon_start"])

    def init(self, rng: jax.Array, hparams: dict[str, Any] | None = None) -> DQNState:
        """A fresh run from ``rng`` (online and target networks equal, an
        empty buffer)."""
        k_net, k_env, k_run = jax.random.split(rng, 3)
        obs, env_state = self.env.reset(k_env)
        params = self.net.init(k_net, obs)
        default = self.hyperparams()
        hp = default if hparams is None else {
            k: jnp.asarray(v, default[k].dtype) for k, v in hparams.items()}
        return DQNState(params, params, self.tx.init(params),
                        ReplayBuffer.empty(self.dqn.buffer_size, self.env.observation_shape),
                        env_state, obs, init_stats(self.env.observation_shape),
                        jax.random.key_data(k_run), jnp.zeros((), jnp.int32), hp)

    def _td_loss(self, params, target_params, batch, stats, gamma):
        obs, next_obs = self._obs(stats, batch["obs"]), self._obs(stats, batch["next_obs"])
        q = self.net.apply(params, obs)
        q_taken = jnp.take_along_axis(q, batch["action"][:, None], axis=1)[:, 0]
        q_next_target = self.net.apply(target_params, next_obs)
        if self.dqn.double:
            best = jnp.argmax(self.net.apply(params, next_obs), axis=1)
            q_next = jnp.take_along_axis(q_next_target, best[:, None], axis=1)[:, 0]
        else:
            q_next = q_next_target.max(axis=1)
        target = batch["reward"] + gamma * (1.0 - batch["terminated"]) * q_next
        err = q_taken - jax.lax.stop_gradient(target)
        loss = (optax.huber_loss(err).mean() if self.dqn.loss == "huber"
                else jnp.mean(err**2))
        return loss, q_taken.mean()

    def _update(self, state: DQNState, _):
        hp, n = state.hparams, self.rl.num_envs
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.update)
        k_explore, k_random, k_env, k_sample = jax.random.split(rng, 4)
        steps = state.update * n                     # environment steps before this update
        eps = self.epsilon(hp, steps)
        greedy = jnp.argmax(self.net.apply(state.params, self._obs(state.obs_stats, state.obs)),
                            axis=1).astype(jnp.int32)
        random = jax.random.randint(k_random, (n,), 0, self.env.num_actions, jnp.int32)
        action = jnp.where(jax.random.uniform(k_explore, (n,)) < eps, random, greedy)
        next_obs, env_state, reward, term, trunc, info = self.env.step(
            k_env, state.env_state, action)
        stats = update_stats(state.obs_stats, next_obs) if self.rl.normalize_obs \
            else state.obs_stats
        done = jnp.logical_or(term, trunc)
        true_next = jnp.where(done.reshape(n, *([1] * (next_obs.ndim - 1))),
                              info["final_observation"], next_obs)
        buffer = state.buffer.add(state.obs, action, reward * hp["reward_scale"], true_next,
                                  term)
        steps_after = steps + n
        learn = ((steps_after >= hp["learning_starts"])
                 & ((state.update + 1) % hp["train_every"] == 0))

        def gradient_step(params, opt_state):
            batch = buffer.sample(k_sample, self.dqn.batch_size)
            (loss, q_mean), grads = jax.value_and_grad(self._td_loss, has_aux=True)(
                params, state.target_params, batch, stats, hp["gamma"])
            grads = clip_by_norm(grads, hp["max_grad_norm"])
            updates, opt_state = self.tx.update(grads, opt_state, params)
            params = jax.tree.map(lambda w, u: w - hp["learning_rate"] * u, params, updates)
            return params, opt_state, loss, q_mean

        def skip(params, opt_state):
            zero = jnp.zeros((), jnp.float32)
            return params, opt_state, zero, zero

        params, opt_state, loss, q_mean = jax.lax.cond(learn, gradient_step, skip,
                                                       state.params, state.opt_state)
        every = hp["target_every"]
        move = (steps_after // every > steps // every) & (steps_after >= hp["learning_starts"])
        tau = jnp.where(move, hp["tau"], 0.0)
        target = jax.tree.map(lambda t, o: t + tau * (o - t), state.target_params, params)
        ended = info["episode_done"].sum()
        metrics = {
            "episode_return": info["episode_return"].sum() / ended,
            "episode_length": info["episode_length"].sum() / ended,
            "episodes": ended,
            "loss": loss, "q_mean": q_mean, "trained": learn.astype(jnp.float32),
            "epsilon": eps,
        }
        return DQNState(params, target, opt_state, buffer, env_state, next_obs, stats,
                        state.rng, state.update + 1, hp), metrics

    def run(self, state: DQNState, updates: int) -> tuple[DQNState, dict[str, jax.Array]]:
        """``updates`` updates (each one step of every environment) as one
        ``lax.scan``; returns the state and each update's metrics."""
        return jax.lax.scan(self._update, state, None, length=updates)

    def train(self, rng: jax.Array) -> tuple[DQNState, dict[str, jax.Array]]:
        """The whole run: :meth:`init` then :meth:`run` for ``num_updates``."""
        return self.run(self.init(rng), self.num_updates)

    def act(self, state: DQNState, greedy: bool = True):
        """``act(obs, key) -> actions``: greedy in ``state``'s Q-values (or
        epsilon-greedy at the final epsilon)."""
        def act(obs, key):
            q = self.net.apply(state.params, self._obs(state.obs_stats, obs))
            best = jnp.argmax(q, axis=1).astype(jnp.int32)
            if greedy:
                return best
            k1, k2 = jax.random.split(key)
            random = jax.random.randint(k1, best.shape, 0, self.env.num_actions, jnp.int32)
            explore = jax.random.uniform(k2, best.shape) < state.hparams["epsilon_end"]
            return jnp.where(explore, random, best)
        return act

    def evaluate(self, state: DQNState, rng: jax.Array, episodes: int
                 ) -> tuple[jax.Array, jax.Array]:
        """``(returns, lengths)`` ``[episodes]`` of the greedy policy."""
        return episode_returns(VecEnv(self.rl.env, episodes), self.act(state), rng)
