"""PPO (Schulman et al., 2017) with the whole training run compiled: rollouts
of vmapped gymnax environments, GAE and minibatch updates inside one
``lax.scan`` over updates (the PureJaxRL recipe).

    from jaxdl.config import PPOConfig, RLConfig
    ppo = PPO(RLConfig(env="CartPole-v1", total_steps=500_000), PPOConfig())
    state = ppo.init(jax.random.key(0))
    state, metrics = jax.jit(ppo.run, static_argnums=1)(state, ppo.num_updates)
    # metrics: [updates] arrays (episode_return, episode_length, losses, ...)
    returns, lengths = jax.jit(ppo.evaluate, static_argnums=2)(state, jax.random.key(1), 100)

Shapes and structure (environment, counts, network) are fixed when a
:class:`PPO` is built; the numbers (learning rate, clip range, coefficients,
discount, lambda) are data in ``state.hparams``, so one compiled program
serves every value of them, and seeds or trials can be vmapped over them.
``run(state, n)`` continues for ``n`` updates: a caller trains in chunks
(progress, checkpoints) with the numbers of one long call. Initialise
outside a seed-vmapped program (see :meth:`PPO.init`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.config import PPOConfig, RLConfig
from jaxdl.models.agent import ActorCritic
from jaxdl.rl import distributions as dist
from jaxdl.rl.env import (
    EpisodeState,
    ObsStats,
    VecEnv,
    episode_returns,
    init_stats,
    normalize,
    update_stats,
)
from jaxdl.rl.gae import gae
from jaxdl.rl.losses import ppo_loss

__all__ = ["PPO", "PPOState", "clip_by_norm"]


class PPOState(NamedTuple):
    """Everything a run carries from update to update (arrays only, so it
    checkpoints with Orbax and stacks over seeds)."""

    params: Any
    opt_state: Any           # Adam's moments (the learning rate is applied by hand)
    env_state: EpisodeState
    obs: jax.Array           # the raw observations the next rollout starts from
    obs_stats: ObsStats      # running observation statistics (rl.normalize_obs)
    rng: jax.Array           # uint32 key data (jax.random.key_data)
    update: jax.Array        # updates done
    hparams: dict[str, jax.Array]


def clip_by_norm(grads: Any, max_norm: jax.Array) -> Any:
    """``grads`` scaled to global norm ``max_norm`` when above it (as
    ``optax.clip_by_global_norm``, with the bound as data)."""
    norm = optax.tree.norm(grads)
    scale = jnp.where(norm <= max_norm, 1.0, max_norm / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda g: g * scale, grads)


class PPO:
    """A compiled PPO run's structure (see the module docstring).

    Args:
      rl: environment, counts, network and evaluation settings.
      ppo: PPO's own settings (shapes and switches are read here; the
        numbers become :meth:`hyperparams`).
    """

    def __init__(self, rl: RLConfig, ppo: PPOConfig):
        self.rl, self.ppo = rl, ppo
        self.env = VecEnv(rl.env, rl.num_envs)
        activation = "tanh" if rl.activation == "auto" else rl.activation
        self.net = ActorCritic(actions=(self.env.num_actions if self.env.discrete
                                        else self.env.action_shape[0]),
                               continuous=not self.env.discrete, width=rl.width,
                               depth=rl.depth, shared=ppo.shared, activation=activation)
        self.batch = rl.num_envs * ppo.num_steps
        if self.batch % ppo.num_minibatches:
            raise ValueError(f"num_envs x num_steps = {self.batch} is not divisible by "
                             f"num_minibatches {ppo.num_minibatches}")
        self.num_updates = rl.total_steps // self.batch
        if self.num_updates < 1:
            raise ValueError(f"total_steps {rl.total_steps} is less than one update's "
                             f"{self.batch} steps (num_envs x num_steps)")
        self.tx = optax.scale_by_adam(eps=1e-5)

    @classmethod
    def from_config(cls, cfg) -> PPO:
        """The run of an ``algorithm: ppo`` :class:`~jaxdl.config.Config`."""
        return cls(cfg.rl, cfg.ppo)

    def hyperparams(self) -> dict[str, jax.Array]:
        """The settings that are data in the compiled run (float32 scalars)."""
        p, r = self.ppo, self.rl
        minibatch_updates = self.num_updates * p.update_epochs * p.num_minibatches
        values = dict(learning_rate=p.learning_rate, anneal=float(p.anneal_lr),
                      anneal_steps=float(minibatch_updates), gamma=r.gamma,
                      gae_lambda=p.gae_lambda, clip_eps=p.clip_eps, vf_coef=p.vf_coef,
                      ent_coef=p.ent_coef, max_grad_norm=p.max_grad_norm,
                      reward_scale=r.reward_scale)
        return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}

    # -- policy

    def _obs(self, stats: ObsStats, obs: jax.Array) -> jax.Array:
        return normalize(stats, obs) if self.rl.normalize_obs else obs

    def policy(self, params: Any, obs: jax.Array, key: jax.Array | None = None):
        """``(action, log_prob, value)`` for (normalised) ``obs``; greedy (the
        mode) when ``key`` is None."""
        out, value = self.net.apply(params, obs)
        if self.env.discrete:
            action = (jnp.argmax(out, -1).astype(jnp.int32) if key is None
                      else dist.categorical_sample(key, out))
            return action, dist.categorical_log_prob(out, action), value
        mean, log_std = out
        action = mean if key is None else dist.gaussian_sample(key, mean, log_std)
        return action, dist.gaussian_log_prob(mean, log_std, action), value

    def env_action(self, action: jax.Array) -> jax.Array:
        """What the environment is given: continuous actions clipped to its
        bounds (the log-probability is of the unclipped sample)."""
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

    def init(self, rng: jax.Array, hparams: dict[str, Any] | None = None) -> PPOState:
        """A fresh run from ``rng`` (network, optimizer, environments).

        Call it once per seed (jitted, not vmapped over seeds): the
        orthogonal initialiser's batched QR decomposition was seen to
        deadlock XLA's CPU thread pool inside a seed-vmapped program (two
        batched QR calls each waiting for pool threads the other holds).
        """
        k_net, k_env, k_run = jax.random.split(rng, 3)
        obs, env_state = self.env.reset(k_env)
        params = self.net.init(k_net, obs)
        hp = self.hyperparams() if hparams is None else {
            k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
        return PPOState(params, self.tx.init(params), env_state, obs,
                        init_stats(self.env.observation_shape), jax.random.key_data(k_run),
                        jnp.zeros((), jnp.int32), hp)

    def _update(self, state: PPOState, _):
        p, hp = self.ppo, state.hparams
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.update)
        k_roll, k_perm = jax.random.split(rng)
        params = state.params

        def step(carry, t):
            env_state, obs, stats = carry
            k_act, k_env = jax.random.split(jax.random.fold_in(k_roll, t))
            seen = self._obs(stats, obs)
            action, logp, value = self.policy(params, seen, k_act)
            next_obs, env_state, reward, term, trunc, info = self.env.step(
                k_env, env_state, self.env_action(action))
            if self.rl.normalize_obs:
                stats = update_stats(stats, next_obs)
            tr = dict(obs=seen, action=action, log_prob=logp, value=value,
                      reward=reward * hp["reward_scale"], terminated=term,
                      done=jnp.logical_or(term, trunc),
                      final_obs=self._obs(stats, info["final_observation"]),
                      episode_done=info["episode_done"],
                      episode_return=info["episode_return"],
                      episode_length=info["episode_length"])
            return (env_state, next_obs, stats), tr

        (env_state, last_obs, stats), traj = jax.lax.scan(
            step, (state.env_state, state.obs, state.obs_stats), jnp.arange(p.num_steps))
        # The value of each step's true next observation: the next step's
        # value, or the final observation's where an episode ended there.
        last_value = self.net.apply(params, self._obs(stats, last_obs))[1]
        final_values = jax.vmap(lambda o: self.net.apply(params, o)[1])(traj["final_obs"])
        next_values = jnp.concatenate([traj["value"][1:], last_value[None]])
        next_values = jnp.where(traj["done"], final_values, next_values)
        adv, returns = gae(traj["reward"], traj["value"], next_values, traj["terminated"],
                           traj["done"], hp["gamma"], hp["gae_lambda"])

        flat = jax.tree.map(lambda x: x.reshape(self.batch, *x.shape[2:]),
                            dict(obs=traj["obs"], action=traj["action"],
                                 log_prob=traj["log_prob"], value=traj["value"],
                                 adv=adv, returns=returns))

        def loss_fn(params, mb):
            logp, entropy, value = self._log_prob_entropy(params, mb["obs"], mb["action"])
            a = mb["adv"]
            if p.normalize_advantages:
                a = (a - a.mean()) / (a.std() + 1e-8)
            return ppo_loss(logp, mb["log_prob"], a, value, mb["value"], mb["returns"],
                            entropy, clip_eps=hp["clip_eps"], vf_coef=hp["vf_coef"],
                            ent_coef=hp["ent_coef"],
                            clip_value=p.clip_value)

        def minibatch(carry, mb):
            params, opt_state = carry
            (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            grads = clip_by_norm(grads, hp["max_grad_norm"])
            frac = 1.0 - hp["anneal"] * opt_state.count.astype(jnp.float32) / hp["anneal_steps"]
            updates, opt_state = self.tx.update(grads, opt_state, params)
            lr = hp["learning_rate"] * frac
            params = jax.tree.map(lambda w, u: w - lr * u, params, updates)
            return (params, opt_state), parts

        def epoch(carry, k):
            perm = jax.random.permutation(k, self.batch)
            mbs = jax.tree.map(lambda x: x[perm].reshape(p.num_minibatches, -1, *x.shape[1:]),
                               flat)
            return jax.lax.scan(minibatch, carry, mbs)

        (params, opt_state), parts = jax.lax.scan(
            epoch, (params, state.opt_state), jax.random.split(k_perm, p.update_epochs))
        ended = traj["episode_done"].sum()
        metrics = {
            # Means over the episodes that ended in this update's rollout
            # (NaN when none did; `episodes` says how many).
            "episode_return": traj["episode_return"].sum() / ended,
            "episode_length": traj["episode_length"].sum() / ended,
            "episodes": ended,
            **jax.tree.map(jnp.mean, parts),
        }
        return state._replace(params=params, opt_state=opt_state, env_state=env_state,
                              obs=last_obs, obs_stats=stats, update=state.update + 1), metrics

    def run(self, state: PPOState, updates: int) -> tuple[PPOState, dict[str, jax.Array]]:
        """``updates`` PPO updates as one ``lax.scan`` (``updates`` static).
        Returns the state and each update's metrics (``[updates]`` arrays)."""
        return jax.lax.scan(self._update, state, None, length=updates)

    def train(self, rng: jax.Array) -> tuple[PPOState, dict[str, jax.Array]]:
        """The whole run: :meth:`init` then :meth:`run` for ``num_updates``
        (one seed; to vmap seeds, vmap :meth:`run` over states initialised
        one by one, see :meth:`init`)."""
        return self.run(self.init(rng), self.num_updates)

    def act(self, state: PPOState, greedy: bool = True):
        """``act(obs, key) -> env actions`` of ``state``'s policy, with its
        frozen observation statistics (greedy: the mode)."""
        def act(obs, key):
            action = self.policy(state.params, self._obs(state.obs_stats, obs),
                                 None if greedy else key)[0]
            return self.env_action(action)
        return act

    def evaluate(self, state: PPOState, rng: jax.Array, episodes: int
                 ) -> tuple[jax.Array, jax.Array]:
        """``(returns, lengths)`` ``[episodes]`` of the greedy policy, one
        episode per fresh environment copy."""
        return episode_returns(VecEnv(self.rl.env, episodes), self.act(state), rng)
