"""Reinforcement-learning runs (``algorithm: ppo`` or ``dqn``) through
:func:`jaxdl.run` / ``jaxdl train``.

``rl.seeds`` agents train side by side as one program vmapped over a
leading agent axis; agent ``i``'s randomness comes from the config seed
folded with ``i``, so agent 0 of an 8-agent run is the 1-agent run. The run
is cut into ``train.epochs`` chunks of updates (near-equal: at most two
chunk lengths, so at most two compiled training programs); each chunk is
one compiled call, and ends with

* a ``train`` metrics row: ``return`` and ``length`` of the episodes that
  ended during the chunk's rollouts (stochastic policy; mean over agents of
  each agent's mean; an agent with no episode ending in the chunk counts
  with its last chunk's value, and the two are left out until every agent
  has one), ``episodes``, the losses, ``steps_per_second`` (environment
  steps of all agents per second of the chunk's call);
* a ``val`` row (with ``rl.eval_episodes`` > 0): the greedy policy on
  ``eval_episodes`` fresh episodes per agent, the same start states each
  time: ``return`` (mean over agents), ``return_std`` (over all episodes),
  ``length``, and with several agents ``return_seed_std`` / ``_min`` /
  ``_max`` over the agents' means;
* a checkpoint (Orbax: the stacked agents' whole state, environments and
  replay buffer included, so ``--resume`` continues exactly).

At the end: ``test`` metrics of the final and best checkpoints
(``rl.test_episodes`` greedy episodes per agent), ``baselines.test.
return_random`` (a uniformly random policy), ``learning_curve.png``
(per-update training returns of each agent against environment steps) and
``agents.json`` (each agent's greedy test return).

    jaxdl train experiments/cartpole_ppo.yaml [--set rl.seeds=8]
    jaxdl eval RUN_DIR --episodes 100
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import config as config_lib
from jaxdl.compilation_cache import BuiltByShape, Programs
from jaxdl.config import RL_ALGORITHMS, Config
from jaxdl.errors import ConfigError
from jaxdl.loop import chunk_lengths, run_keys

__all__ = ["AgentProgram", "RLJob", "agent_keys", "build_program", "evaluate", "make_agent",
           "new_state",
           "plot_learning_curve", "read_learning_curve", "render", "restore", "test_key"]

# Compiled agent programs by structure (bounded).
_PROGRAMS = BuiltByShape()


def make_agent(cfg: Config):
    """The :class:`~jaxdl.rl.ppo.PPO` or :class:`~jaxdl.rl.dqn.DQN` of an RL config.

    Raises:
      ConfigError: DQN on an environment with continuous actions.
    """
    from jaxdl.rl.dqn import DQN
    from jaxdl.rl.ppo import PPO

    cls = PPO if cfg.algorithm == "ppo" else DQN
    try:
        return cls.from_config(cfg)
    except ValueError as e:
        raise ConfigError(f"rl.env: {e}", "<config>") from None
    except OSError as e:   # an environment that fetches data (MNISTBandit-bsuite) offline
        raise ConfigError(f"rl.env: cannot make {cfg.rl.env}: {e}", "<config>") from None


def _structure_key(cfg: Config) -> tuple:
    """What fixes the compiled programs' shapes and structure; the numbers
    (learning rate, coefficients, discount, schedules, total_steps) are data."""
    rl = cfg.rl
    own = {"ppo": ("num_steps", "update_epochs", "num_minibatches", "clip_value",
                   "normalize_advantages", "shared"),
           "dqn": ("buffer_size", "batch_size", "double", "loss")}[cfg.algorithm]
    section = getattr(cfg, cfg.algorithm)
    return (cfg.algorithm, rl.env, rl.num_envs, rl.width, rl.depth, rl.activation,
            rl.normalize_obs, rl.seeds, tuple(getattr(section, f) for f in own),
            jax.default_backend())


class AgentProgram:
    """``seeds`` agents of one structure: initialisation (one agent at a
    time, see :meth:`jaxdl.rl.ppo.PPO.init`), chunks of updates and greedy
    evaluation vmapped over the agents, compiled ahead of time.

    Attributes:
      agent: the PPO or DQN object (its shapes; numbers come per run as
        ``hparams``).
      seeds: agents side by side.
      programs: the compiled programs (``programs.seconds``: compile time).
    """

    def __init__(self, cfg: Config):
        self.agent = make_agent(cfg)
        self.seeds = cfg.rl.seeds
        self.programs = Programs()
        self._init = jax.jit(self.agent.init)

    @property
    def compile_seconds(self) -> float:
        return self.programs.seconds

    def init(self, keys: list[jax.Array], hparams: dict[str, jax.Array]):
        """The agents' fresh states, stacked on a leading axis."""
        states = [self._init(k, hparams) for k in keys]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def _run_fn(self, updates: int):
        return jax.vmap(lambda s: self.agent.run(s, updates))

    def run(self, state, updates: int):
        """``updates`` updates of every agent (``state`` is donated)."""
        fn = self.programs.get(("run", updates), lambda: self._run_fn(updates), (state,),
                               donate=(0,))
        return fn(state)

    def _evaluate_fn(self, state, keys: jax.Array, episodes: int):
        def make():
            return jax.vmap(lambda s, k: self.agent.evaluate(s, k, episodes))

        return self.programs.get(("evaluate", episodes), make, (state, keys))

    def evaluate(self, state, key: jax.Array, episodes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(returns, lengths)`` ``[seeds, episodes]``: each agent's greedy
        policy on ``episodes`` fresh episodes (agent ``i``'s from ``key``
        folded with ``i``: they depend on ``i`` only, not on how many agents
        there are)."""
        n = jax.tree.leaves(state)[0].shape[0]
        return self.evaluate_keys(state, jnp.stack([jax.random.fold_in(key, i)
                                                    for i in range(n)]), episodes)

    def evaluate_keys(self, state, keys: jax.Array, episodes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`evaluate`, with agent ``i``'s episode key ``keys[i]``."""
        returns, lengths = self._evaluate_fn(state, keys, episodes)(state, keys)
        return np.asarray(returns), np.asarray(lengths)

    def compile(self, state, chunk_lengths: list[int], eval_episodes: int) -> None:
        """Compile the chunk programs and the evaluation ahead of time."""
        for n in sorted(set(chunk_lengths)):
            self.programs.get(("run", n), lambda n=n: self._run_fn(n), (state,), donate=(0,))
        if eval_episodes:
            n = jax.tree.leaves(state)[0].shape[0]
            self._evaluate_fn(state, jax.random.split(jax.random.key(0), n), eval_episodes)

    def random_returns(self, key: jax.Array, episodes: int) -> np.ndarray:
        """Returns ``[episodes]`` of a uniformly random policy."""
        from jaxdl.rl.env import VecEnv, episode_returns

        def make():
            env = VecEnv(self.agent.rl.env, episodes)

            def act(obs, k):
                if env.discrete:
                    return jax.random.randint(k, (episodes,), 0, env.num_actions, jnp.int32)
                return jax.random.uniform(k, (episodes, *env.action_shape),
                                          minval=env.action_low, maxval=env.action_high)

            return lambda k: episode_returns(env, act, k)[0]

        return np.asarray(self.programs.get(("random", episodes), make, (key,))(key))


def build_program(cfg: Config) -> AgentProgram:
    """The (cached) :class:`AgentProgram` for this config's structure."""
    return _PROGRAMS.get(_structure_key(cfg), lambda: AgentProgram(cfg))


def test_key(cfg: Config) -> jax.Array:
    """The key of a run's test episodes (``jaxdl eval`` without ``--seed``
    plays the same episodes)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), 6)


def val_key(cfg: Config) -> jax.Array:
    """The key of a run's evaluation episodes after each chunk."""
    return jax.random.fold_in(jax.random.key(cfg.seed), 5)


def agent_keys(cfg: Config) -> list[jax.Array]:
    """Agent ``i``'s key: the config seed's init key folded with ``i``."""
    init = run_keys(cfg.seed)["init"]
    return [jax.random.fold_in(init, i) for i in range(cfg.rl.seeds)]


def new_state(cfg: Config, program: AgentProgram):
    """Fresh stacked states of ``cfg``'s agents: ``program``'s shapes, this
    config's keys and numbers (the program may have been built for another
    run of the same structure)."""
    return program.init(agent_keys(cfg), make_agent(cfg).hyperparams())


def _return_metrics(returns: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """Greedy-evaluation metrics of ``[agents, episodes]`` returns."""
    means = returns.mean(axis=1)
    out = {"return": float(means.mean()), "return_std": float(returns.std()),
           "length": float(lengths.mean())}
    if len(means) > 1:
        out.update(return_seed_std=float(means.std()), return_seed_min=float(means.min()),
                   return_seed_max=float(means.max()))
    return out


def _chunk_metrics(m: dict[str, np.ndarray], last: dict[str, np.ndarray]
                   ) -> dict[str, float]:
    """A chunk's train metrics from per-update arrays ``[agents, updates]``.

    ``return`` and ``length``: each agent's mean over the episodes that
    ended in the chunk, then the mean over agents. An agent none of whose
    episodes ended in the chunk counts with its value from an earlier chunk
    (``last``, updated here); while some agent has none yet, both are left
    out.
    """
    episodes = m["episodes"].astype(np.float64)
    out: dict[str, float] = {}
    per_agent = episodes.sum(axis=1)
    for name, key in (("return", "episode_return"), ("length", "episode_length")):
        total = np.where(episodes > 0, m[key] * episodes, 0.0).sum(axis=1)
        mean = np.where(per_agent > 0, total / np.maximum(per_agent, 1), np.nan)
        prev = last.get(name, np.full_like(mean, np.nan))
        last[name] = np.where(per_agent > 0, mean, prev)
        if np.isfinite(last[name]).all():
            out[name] = float(last[name].mean())
    out["episodes"] = float(episodes.sum())
    trained = m.get("trained")
    for k, v in m.items():
        if k in ("episode_return", "episode_length", "episodes", "trained"):
            continue
        if trained is not None and k in ("loss", "q_mean"):
            if trained.sum() == 0:
                continue
            out[k] = float((v * trained).sum() / trained.sum())
        elif k == "epsilon":
            out[k] = float(v[:, -1].mean())
        else:
            out[k] = float(v.mean())
    return out


class RLJob:
    """An RL run's agents and compiled programs, as :func:`~jaxdl.loop.fit`
    drives them (see :class:`jaxdl.loop.Job`); the module docstring says
    what each chunk records."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = print):
        if cfg.algorithm not in RL_ALGORITHMS:
            raise ConfigError(f"algorithm: an RL job needs one of {', '.join(RL_ALGORITHMS)}, "
                              f"got {cfg.algorithm!r}")
        self.cfg = cfg
        self.program = build_program(cfg)
        updates, self.steps_per_update = config_lib.rl_updates(cfg)
        self.chunks = chunk_lengths(updates, cfg.train.epochs)
        self.agents = cfg.rl.seeds     # summary.json's steps/s counts all agents' steps
        self.divergence_hint = {
            "ppo": "try a lower ppo.learning_rate or ppo.max_grad_norm",
            "dqn": "try a lower dqn.learning_rate, a larger dqn.target_every or dqn.loss "
                   "mse"}[cfg.algorithm]
        self._val_key = val_key(cfg)
        self._test_key = test_key(cfg)
        self._tested = None
        self._last: dict[str, np.ndarray] = {}   # each agent's last chunk return / length
        self.run_dir: Path | None = None

    @property
    def compile_seconds(self) -> float:
        return self.program.compile_seconds

    def epoch_steps(self, epoch: int) -> int:
        """Environment steps per agent in chunk ``epoch`` (1-based)."""
        return self.chunks[epoch - 1] * self.steps_per_update

    def run_info(self) -> dict[str, Any]:
        return {"agents": self.cfg.rl.seeds, "updates_per_chunk": sorted(set(self.chunks)),
                "env_steps_per_update": self.steps_per_update,
                "env_steps_per_agent": sum(self.chunks) * self.steps_per_update}

    def prepare(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def new_state(self):
        return new_state(self.cfg, self.program)

    def compile(self, state, *, progress: bool) -> None:
        self.program.compile(state, self.chunks, self.cfg.rl.eval_episodes)

    def train_epoch(self, state, epoch: int, on_progress):
        n = self.chunks[epoch - 1]
        t0 = time.perf_counter()
        state, m = self.program.run(state, n)
        m = jax.device_get(m)
        seconds = time.perf_counter() - t0
        metrics = _chunk_metrics(m, self._last)
        metrics["steps_per_second"] = self.cfg.rl.seeds * n * self.steps_per_update / seconds
        self.record_curve(int(np.asarray(jax.device_get(state.update))[0]), m, n)
        if on_progress is not None:
            on_progress(n * self.steps_per_update, metrics)
        return state, metrics

    def evaluate(self, state) -> dict[str, dict[str, float]]:
        if not self.cfg.rl.eval_episodes:
            return {}
        returns, lengths = self.program.evaluate(state, self._val_key,
                                                 self.cfg.rl.eval_episodes)
        return {"val": _return_metrics(returns, lengths)}

    def after_epoch(self, epoch: int, state) -> None:
        pass

    def test_returns(self, state) -> tuple[np.ndarray, np.ndarray]:
        """``(returns, lengths)`` ``[agents, test_episodes]`` of the greedy
        policies (kept for the last state asked about: the run asks for the
        best state's twice, for its test metrics and for ``agents.json``)."""
        if self._tested is None or self._tested[0] is not state:
            self._tested = (state, self.program.evaluate(
                jax.device_put(state), self._test_key, self.cfg.rl.test_episodes))
        return self._tested[1]

    def test(self, state) -> dict[str, float]:
        return _return_metrics(*self.test_returns(state))

    def baselines(self) -> dict[str, dict[str, float]]:
        random = self.program.random_returns(self._test_key, self.cfg.rl.test_episodes)
        return {"test": {"return_random": float(random.mean())}}

    def artifacts(self, state, run_dir: Path, log) -> None:
        returns, _ = self.test_returns(state)
        agents = [{"agent": i, "test_return": float(r.mean()), "test_return_std": float(r.std())}
                  for i, r in enumerate(returns)]
        (run_dir / "agents.json").write_text(json.dumps(agents, indent=1) + "\n")
        path = plot_learning_curve(run_dir, title=f"{self.cfg.name}: {self.cfg.algorithm} on "
                                   f"{self.cfg.rl.env}")
        if path is not None:
            log(f"learning curve: {path}")

    # -- the per-update learning curve

    def record_curve(self, end: int, m: dict[str, np.ndarray], n: int) -> None:
        """Append a chunk's per-update returns (``m`` as the chunk program
        returns it for this run's agents; one column per agent, empty where no
        episode ended) to ``learning_curve.csv``; ``end``: the update count
        after the chunk. A resumed run writes its chunks again; the plot keeps
        the last row per step."""
        if self.run_dir is None:
            return
        first = end - n + 1
        path = self.run_dir / "learning_curve.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["env_steps"] + [f"agent{i}" for i in range(self.cfg.rl.seeds)])
            for j in range(n):
                row = m["episode_return"][:, j]
                w.writerow([(first + j) * self.steps_per_update]
                           + ["" if not math.isfinite(v) else f"{v:.6g}" for v in row])


def read_learning_curve(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(env_steps [n], returns [n, agents])`` from ``learning_curve.csv``
    (NaN where no episode ended), the last row per step kept; None if absent."""
    path = Path(run_dir) / "learning_curve.csv"
    if not path.exists():
        return None
    rows: dict[int, list[float]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for row in reader:
            if row:
                rows[int(row[0])] = [float(v) if v else math.nan for v in row[1:]]
    if not rows:
        return None
    steps = np.array(sorted(rows))
    return steps, np.array([rows[s] for s in steps])


def plot_learning_curve(run_dir: str | Path, title: str = "", window: int = 10) -> Path | None:
    """``learning_curve.png``: each agent's training return (a running mean
    over ``window`` updates) and the mean over agents, against environment
    steps per agent."""
    curve = read_learning_curve(run_dir)
    if curve is None:
        return None
    from jaxdl.metrics import _save, pyplot

    plt = pyplot()

    steps, returns = curve

    def smooth(y):
        ok = np.isfinite(y)
        kernel = np.ones(window)
        num = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
        den = np.convolve(ok.astype(float), kernel, mode="same")
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i in range(returns.shape[1]):
        ax.plot(steps, smooth(returns[:, i]), lw=0.8, alpha=0.5)
    if returns.shape[1] > 1:
        with warnings.catch_warnings():    # updates where no agent finished an episode
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(returns, axis=1)
        ax.plot(steps, smooth(mean), color="black", lw=2, label="mean over agents")
        ax.legend()
    ax.set_xlabel("environment steps per agent")
    ax.set_ylabel("episode return (training policy)")
    ax.grid(alpha=0.3)
    return _save(fig, Path(run_dir) / "learning_curve.png", title)


def restore(run_dir: str | Path, which: str = "best") -> tuple[Config, AgentProgram, Any, int]:
    """``(config, program, state, epoch)`` of an RL run's best (or latest)
    checkpoint: ``state`` holds every agent (leading axis ``rl.seeds``).

    Raises:
      ConfigError: not an RL run. CheckpointError: no checkpoints.
    """
    from jaxdl import experiment

    cfg = experiment.run_config(run_dir)
    if cfg.algorithm not in RL_ALGORITHMS:
        raise ConfigError(f"{run_dir} is not an RL run (algorithm {cfg.algorithm})",
                          str(run_dir))
    ckpt_dir = experiment.checkpoint_dir(run_dir, which)
    program = build_program(cfg)
    state, epoch = experiment.restore_state(ckpt_dir, which, lambda: new_state(cfg, program))
    return cfg, program, jax.device_put(state), epoch


def evaluate(run_dir: str | Path, which: str = "best", episodes: int | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """Greedy returns of a run's agents from its best (or latest) checkpoint.

    Args:
      run_dir: an RL run directory.
      which: ``"best"`` or ``"latest"``.
      episodes: fresh episodes per agent (default ``rl.test_episodes``).
      seed: the episodes' randomness; None: the run's own test episodes,
        so the best checkpoint's numbers are ``summary.json``'s
        ``best.test``.
    Returns:
      ``{"epoch": E, "test": {"return", "return_std", "length", ...},
      "agents": [each agent's mean return]}``.
    """
    if episodes is not None and episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}", str(run_dir))
    cfg, program, state, epoch = restore(run_dir, which)
    key = test_key(cfg) if seed is None else jax.random.fold_in(jax.random.key(seed), 7)
    returns, lengths = program.evaluate(state, key, episodes or cfg.rl.test_episodes)
    return {"epoch": epoch, "test": _return_metrics(returns, lengths),
            "agents": [float(r) for r in returns.mean(axis=1)]}


# gymnax's Visualizer draws these; the classic-control ones through
# gymnasium's renderer, which needs pygame (the `render` extra).
CLASSIC_CONTROL = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                   "MountainCarContinuous-v0")
RENDERABLE = CLASSIC_CONTROL + (
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
    "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc",
    "MetaMaze-misc", "FourRooms-misc")


def render(run_dir: str | Path, out: str | Path, which: str = "best", agent: int = 0,
           seed: int = 0) -> tuple[Path, float]:
    """One greedy episode of agent ``agent`` as an animated GIF (gymnax's
    visualizer; classic-control environments need pygame: ``pip install
    'jaxdl[render]'``).

    Returns:
      ``(path, episode return)``.
    Raises:
      ConfigError: an environment gymnax cannot draw, pygame missing, or no
        such agent.
    """
    from jaxdl import experiment

    cfg = experiment.run_config(run_dir)
    if cfg.algorithm not in RL_ALGORITHMS:
        raise ConfigError(f"{run_dir} is not an RL run (algorithm {cfg.algorithm})",
                          str(run_dir))
    name = cfg.rl.env
    if name not in RENDERABLE:
        raise ConfigError(f"--render: gymnax cannot draw {name}; it draws "
                          f"{', '.join(RENDERABLE)}", str(run_dir))
    if name in CLASSIC_CONTROL:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")   # no banner on stdout
        try:
            import pygame  # noqa: F401
        except ImportError:
            raise ConfigError(f"--render: {name} is drawn by gymnasium's classic-control "
                              "renderer, which needs pygame: pip install 'jaxdl[render]'",
                              str(run_dir)) from None
    if not 0 <= agent < cfg.rl.seeds:
        raise ConfigError(f"--agent: the run has agents 0..{cfg.rl.seeds - 1}, got {agent}",
                          str(run_dir))
    _, program, state, _ = restore(run_dir, which)
    one = jax.tree.map(lambda x: x[agent], state)
    from jaxdl.rl.env import make

    env, params = make(name)
    act = program.agent.act(one)

    @jax.jit
    def step(key, env_state, obs):
        k_act, k_env = jax.random.split(key)
        action = act(obs[None], k_act)[0]
        obs, env_state, reward, term, trunc, _ = env.step(k_env, env_state, action, params)
        return obs, env_state, reward, jnp.logical_or(term, trunc)

    key = jax.random.fold_in(jax.random.key(seed), 8)
    obs, env_state = env.reset(jax.random.fold_in(key, 0), params)
    states, returns, total = [env_state], [0.0], 0.0
    for t in range(int(getattr(params, "max_steps_in_episode", 1000))):
        obs, next_state, reward, done = step(jax.random.fold_in(key, t + 1), env_state, obs)
        total += float(reward)
        if bool(done):          # gymnax has already reset next_state
            break
        env_state = next_state
        states.append(env_state)
        returns.append(total)
    from jaxdl.metrics import pyplot

    pyplot()   # Agg unless the process chose a backend, before gymnax imports pyplot
    from gymnax.visualize import Visualizer

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Visualizer(env, params, states, returns).animate(str(out))
    return out, total
