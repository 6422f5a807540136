"""PPO (Schulman et al., 2017) with the whole training run compiled: rollouts
of vmapped gymnax environments, GAE and minibatch updates inside one
``lax.scan`` over updates (the PureJaxRL recipe).

    ppo = PPO(PPOSettings(env="CartPole-v1", total_steps=500_000))
    state = ppo.init(jax.random.key(0))
    state, metrics = jax.jit(ppo.run, static_argnums=1)(state, ppo.num_updates)
    # metrics: [updates] arrays (episode_return, episode_length, losses, ...)
    states, metrics = jax.jit(jax.vmap(ppo.train))(jax.random.split(key, 8))   # 8 seeds

``run(state, n)`` continues for ``n`` updates, so a caller can train in
chunks (progress display, checkpoints) with the numbers of one long call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.models.agent import ActorCritic
from jaxdl.rl import distributions as dist
from jaxdl.rl.env import EpisodeState, VecEnv
from jaxdl.rl.gae import gae
from jaxdl.rl.losses import ppo_loss

__all__ = ["PPO", "PPOSettings", "PPOState"]


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """PPO's settings (defaults: CleanRL's / PureJaxRL's CartPole values)."""

    env: str = "CartPole-v1"
    num_envs: int = 4
    num_steps: int = 128            # rollout steps per environment per update
    total_steps: int = 500_000      # environment steps in all (over all environments)
    update_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True          # linear decay to 0 over the run
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_value: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    width: int = 64
    depth: int = 2
    shared: bool = False
    activation: str = "tanh"

    def __post_init__(self):
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            raise ValueError(f"num_envs x num_steps = {batch} is not divisible by "
                             f"num_minibatches {self.num_minibatches}")
        if self.total_steps < batch:
            raise ValueError(f"total_steps {self.total_steps} is less than one update's "
                             f"{batch} steps (num_envs x num_steps)")


class PPOState(NamedTuple):
    """Everything a run carries from update to update (arrays only)."""

    params: Any
    opt_state: Any
    env_state: EpisodeState
    obs: jax.Array
    rng: jax.Array
    update: jax.Array


class PPO:
    """A compiled PPO run for one :class:`PPOSettings` (see the module docstring)."""

    def __init__(self, settings: PPOSettings):
        s = self.settings = settings
        self.env = VecEnv(s.env, s.num_envs)
        self.net = ActorCritic(actions=(self.env.num_actions if self.env.discrete
                                        else self.env.action_shape[0]),
                               continuous=not self.env.discrete, width=s.width, depth=s.depth,
                               shared=s.shared, activation=s.activation)
        self.batch = s.num_envs * s.num_steps
        self.num_updates = s.total_steps // self.batch
        minibatch_updates = self.num_updates * s.update_epochs * s.num_minibatches
        lr = (optax.linear_schedule(s.learning_rate, 0.0, minibatch_updates) if s.anneal_lr
              else s.learning_rate)
        self.tx = optax.chain(optax.clip_by_global_norm(s.max_grad_norm),
                              optax.adam(lr, eps=1e-5))

    # -- policy

    def policy(self, params: Any, obs: jax.Array, key: jax.Array | None = None):
        """``(action, log_prob, value)``; greedy (mode) when ``key`` is None."""
        out, value = self.net.apply(params, obs)
        if self.env.discrete:
            action = (jnp.argmax(out, -1).astype(jnp.int32) if key is None
                      else dist.categorical_sample(key, out))
            return action, dist.categorical_log_prob(out, action), value
        mean, log_std = out
        action = mean if key is None else dist.gaussian_sample(key, mean, log_std)
        return action, dist.gaussian_log_prob(mean, log_std, action), value

    def _env_action(self, action: jax.Array) -> jax.Array:
        if self.env.discrete:
            return action
        return jnp.clip(action, self.env.action_low, self.env.action_high)

    def _log_prob_entropy(self, params: Any, obs: jax.Array, action: jax.Array):
        out, value = self.net.apply(params, obs)
        if self.env.discrete:
            return dist.categorical_log_prob(out, action), dist.categorical_entropy(out), value
        mean, log_std = out
        return (dist.gaussian_log_prob(mean, log_std, action),
                dist.gaussian_entropy(mean, log_std), value)

    # -- the run

    def init(self, rng: jax.Array) -> PPOState:
        """A fresh run from ``rng`` (network, optimizer, environments)."""
        k_net, k_env, k_run = jax.random.split(rng, 3)
        obs, env_state = self.env.reset(k_env)
        params = self.net.init(k_net, obs)
        return PPOState(params, self.tx.init(params), env_state, obs, k_run,
                        jnp.zeros((), jnp.int32))

    def _update(self, state: PPOState, _):
        s = self.settings
        rng = jax.random.fold_in(state.rng, state.update)
        k_roll, k_perm = jax.random.split(rng)

        def step(carry, t):
            env_state, obs = carry
            k_act, k_env = jax.random.split(jax.random.fold_in(k_roll, t))
            action, logp, value = self.policy(state.params, obs, k_act)
            next_obs, env_state, reward, term, trunc, info = self.env.step(
                k_env, env_state, self._env_action(action))
            tr = dict(obs=obs, action=action, log_prob=logp, value=value, reward=reward,
                      terminated=term, done=jnp.logical_or(term, trunc),
                      final_obs=info["final_observation"],
                      episode_done=info["episode_done"],
                      episode_return=info["episode_return"],
                      episode_length=info["episode_length"])
            return (env_state, next_obs), tr

        (env_state, last_obs), traj = jax.lax.scan(
            step, (state.env_state, state.obs), jnp.arange(s.num_steps))
        # The value of each step's true next observation: the next step's
        # value, or the final observation's where an episode ended there.
        last_value = self.net.apply(state.params, last_obs)[1]
        final_values = jax.vmap(lambda o: self.net.apply(state.params, o)[1])(traj["final_obs"])
        next_values = jnp.concatenate([traj["value"][1:], last_value[None]])
        next_values = jnp.where(traj["done"], final_values, next_values)
        adv, returns = gae(traj["reward"], traj["value"], next_values, traj["terminated"],
                           traj["done"], s.gamma, s.gae_lambda)

        flat = jax.tree.map(lambda x: x.reshape(self.batch, *x.shape[2:]),
                            dict(obs=traj["obs"], action=traj["action"],
                                 log_prob=traj["log_prob"], value=traj["value"],
                                 adv=adv, returns=returns))

        def loss_fn(params, mb):
            logp, entropy, value = self._log_prob_entropy(params, mb["obs"], mb["action"])
            a = mb["adv"]
            if s.normalize_advantages:
                a = (a - a.mean()) / (a.std() + 1e-8)
            return ppo_loss(logp, mb["log_prob"], a, value, mb["value"], mb["returns"],
                            entropy, clip_eps=s.clip_eps, vf_coef=s.vf_coef,
                            ent_coef=s.ent_coef, clip_value=s.clip_value)

        def minibatch(carry, mb):
            params, opt_state = carry
            (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            updates, opt_state = self.tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), parts

        def epoch(carry, k):
            perm = jax.random.permutation(k, self.batch)
            mbs = jax.tree.map(lambda x: x[perm].reshape(s.num_minibatches, -1, *x.shape[1:]),
                               flat)
            return jax.lax.scan(minibatch, carry, mbs)

        (params, opt_state), parts = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(k_perm, s.update_epochs))
        ended = traj["episode_done"].sum()
        metrics = {
            # Means over the episodes that ended in this update's rollout
            # (NaN when none did).
            "episode_return": traj["episode_return"].sum() / ended,
            "episode_length": traj["episode_length"].sum() / ended,
            "episodes": ended,
            **jax.tree.map(jnp.mean, parts),
        }
        return PPOState(params, opt_state, env_state, last_obs, state.rng,
                        state.update + 1), metrics

    def run(self, state: PPOState, updates: int) -> tuple[PPOState, dict[str, jax.Array]]:
        """``updates`` PPO updates as one ``lax.scan`` (``updates`` static).
        Returns the state and each update's metrics (``[updates]`` arrays)."""
        return jax.lax.scan(self._update, state, None, length=updates)

    def train(self, rng: jax.Array) -> tuple[PPOState, dict[str, jax.Array]]:
        """The whole run: :meth:`init` then :meth:`run` for ``num_updates``."""
        return self.run(self.init(rng), self.num_updates)

    def evaluate(self, params: Any, rng: jax.Array, episodes: int, max_steps: int = 1000
                 ) -> jax.Array:
        """Returns ``[episodes]`` of the greedy policy, one episode per
        environment copy (``episodes`` copies, ``max_steps`` steps at most)."""
        env = VecEnv(self.settings.env, episodes)
        obs, env_state = env.reset(rng)

        def step(carry, t):
            env_state, obs, total, alive = carry
            action = self.policy(params, obs)[0]
            obs, env_state, reward, term, trunc, info = env.step(
                jax.random.fold_in(rng, t), env_state, self._env_action(action))
            total = total + jnp.where(alive, reward, 0.0)
            alive = alive & ~jnp.logical_or(term, trunc)
            return (env_state, obs, total, alive), None

        init = (env_state, obs, jnp.zeros((episodes,)), jnp.ones((episodes,), bool))
        (_, _, total, _), _ = jax.lax.scan(step, init, jnp.arange(max_steps))
        return total
