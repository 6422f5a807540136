"""Populations: K same-shaped trials trained side by side as one program.

Learning rate, momentum, weight decay, dropout rate, L2 and the seed are data
in a :class:`~jaxdl.algorithms.supervised.TrainState` (injected optimizer
hyperparameters, ``state.hparams``), so the states of K configs that share
shapes (model structure, optimizer structure, data, batch size) stack on a
leading *member* axis and train as one program vmapped over it::

    results = jaxdl.population.train([cfg_a, cfg_b, cfg_c])   # same shapes, other numbers
    results[1].best["val"]["accuracy"]

Each member keeps its own data order (its own shuffle key, as it would
alone), its own dropout stream and its own early stopping. A member whose
loss turns NaN/Inf is frozen at its last finite state and reported
``diverged``; the others go on unaffected. A stopped member's slot can be
refilled with a fresh state of the same shape (:meth:`Population.put`)
without recompiling.

Members equal the same configs trained alone up to float rounding (the
vmapped matmuls may sum in another order): ``tests/test_population.py``
states the tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl.algorithms.supervised import Engine, EvalSplit
from jaxdl.compilation_cache import Programs
from jaxdl.config import Config
from jaxdl.errors import ConfigError
from jaxdl.loop import LoopState, _improved, run_keys

__all__ = ["MemberResult", "Population", "check_same_shape", "member", "stack", "train",
           "unstack"]

# Config fields that are data in the compiled program: members may differ in
# them. Every other field (except names and locations) fixes a shape or the
# program's structure.
DATA_FIELDS = ("name", "seed", "data.dir", "train.epochs", "train.patience", "train.min_delta",
               "train.progress", "train.l2", "model.dropout", "checkpoint.enabled",
               "checkpoint.every", "optim.learning_rate", "optim.momentum", "optim.b1",
               "optim.b2", "optim.eps", "optim.decay", "optim.weight_decay",
               "optim.warmup_epochs", "optim.decay_rate", "optim.min_lr_ratio",
               "optim.clip_norm")


def stack(states: Sequence[Any]) -> Any:
    """States (same structure and shapes) stacked on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def member(states: Any, i: int) -> Any:
    """Member ``i`` of stacked ``states`` (device or host arrays; index host
    copies when taking many: each device index is a dispatch per leaf)."""
    return jax.tree.map(lambda x: x[i], states)


def unstack(states: Any) -> list[Any]:
    """The members of stacked ``states``, in order."""
    n = jax.tree.leaves(states)[0].shape[0]
    return [member(states, i) for i in range(n)]


def check_same_shape(cfgs: Sequence[Config]) -> None:
    """Raise unless every config trains with the first one's program.

    Raises:
      ConfigError: names each field that differs from the first config and
        is not data (e.g. ``model.width``: 128 in config 0, 64 in config 2).
    """
    if not cfgs:
        raise ConfigError("a population needs at least one config", "<population>")
    first = config_lib.flatten(config_lib.to_dict(cfgs[0]))
    problems = []
    for i, cfg in enumerate(cfgs[1:], start=1):
        if cfg.algorithm != "supervised":
            break
        flat = config_lib.flatten(config_lib.to_dict(cfg))
        for key in sorted(set(first) | set(flat)):
            if key in DATA_FIELDS or first.get(key) == flat.get(key):
                continue
            problems.append(f"{key}: {first.get(key)!r} in config 0, {flat.get(key)!r} in "
                            f"config {i} (a shape or structure; members may differ only in "
                            f"data: learning rates, momentum, weight decay, dropout, l2, seed, "
                            f"epochs)")
    for i, cfg in enumerate(cfgs):
        if cfg.algorithm != "supervised":
            problems.insert(0, f"algorithm: config {i} is {cfg.algorithm}; populations train "
                               "supervised models")
    if problems:
        raise ConfigError(problems, "<population>")


class Population:
    """Up to ``size`` members of one :class:`Engine`'s shape, trained as one
    vmapped program (compiled once per chunk length and member count).

    Args:
      engine: the shape's engine (its model, optimizer, task and batching).
      size: members side by side.
      shared_data: all members train and evaluate on the same arrays (else
        each has its own: ``x``, ``y`` and evaluation splits carry a leading
        member axis, as when members' seeds draw different synthetic data
        or splits).
    """

    def __init__(self, engine: Engine, size: int, shared_data: bool = True):
        if size < 1:
            raise ValueError(f"a population needs size >= 1, got {size}")
        self.engine, self.size, self.shared_data = engine, size, shared_data
        self._data_axis = None if shared_data else 0
        self.programs = Programs()
        self.traces: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.traces[name] = self.traces.get(name, 0) + 1

    @property
    def compile_seconds(self) -> float:
        return self.programs.seconds

    def _epoch_fn(self, length: int):
        e, b = self.engine, self.engine.batch_size

        def one(state, alive, x, y, key, start, rng):
            perm = e._permutation_fn(key)

            def body(carry, i):
                state, alive = carry
                idx = jax.lax.dynamic_slice_in_dim(perm, (start + i) * b, b)
                new, metrics = e.train_step(state, e._gather(x, y, idx), rng)
                # A member whose step went non-finite keeps its last finite
                # state and stops; the others are untouched by it.
                ok = alive & jnp.isfinite(metrics["loss"])
                state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
                return (state, ok), metrics

            (state, alive), metrics = jax.lax.scan(body, (state, alive),
                                                   jnp.arange(length, dtype=jnp.int32))
            return state, alive, metrics

        def run(states, alive, x, y, keys, start, rngs):
            self._count(f"epoch[{length}]")
            d = self._data_axis
            return jax.vmap(one, in_axes=(0, 0, d, d, 0, None, 0))(
                states, alive, x, y, keys, start, rngs)

        return run

    def _eval_fn(self, batch: int):
        fn = self.engine._eval_fn(True, batch)

        def run(states, x, y, w):
            self._count("eval")
            d = self._data_axis
            return jax.vmap(fn, in_axes=(0, d, d, d))(states, x, y, w)

        return run

    def train_epoch(self, states: Any, alive: jax.Array, x: jax.Array, y: jax.Array,
                    shuffle_keys: jax.Array, dropout_keys: jax.Array
                    ) -> tuple[Any, jax.Array, list[dict[str, float]]]:
        """One epoch of every member (``states`` donated).

        Args:
          states: stacked member states ``[size, ...]``.
          alive: ``[size]`` bools; a member that is not alive keeps its state.
          shuffle_keys, dropout_keys: ``[size]`` keys: each member's epoch
            permutation key and dropout stream.
        Returns:
          ``(states, alive, metrics)``: ``alive`` is False for members that
          were not alive or diverged during the epoch; ``metrics[i]`` is
          member ``i``'s mean train metrics (NaN when it diverged).
        """
        e = self.engine
        steps = e.steps_per_epoch
        args = (states, alive, x, y, shuffle_keys, jnp.zeros((), jnp.int32), dropout_keys)
        fn = self.programs.get(("epoch", steps), lambda: self._epoch_fn(steps), args,
                               donate=(0,))
        states, alive, metrics = fn(*args)
        host = jax.device_get(metrics)
        out = [{k: float(np.mean(v[i])) for k, v in host.items()} for i in range(self.size)]
        return states, alive, out

    def evaluate(self, states: Any, split: EvalSplit) -> list[dict[str, float]]:
        """Each member's weighted mean metrics on a padded split (arrays with
        a leading member axis unless ``shared_data``)."""
        args = (states, split.x, split.y, split.w)
        total = jax.device_get(self.programs.get(("eval", split.batch),
                                                 lambda: self._eval_fn(split.batch), args)(*args))
        weight = total.pop("weight")
        return [{k: float(v[i]) / float(weight[i]) for k, v in total.items()}
                for i in range(self.size)]

    def put(self, states: Any, i: int, state: Any) -> Any:
        """``states`` with member ``i`` replaced by ``state`` (a slot refill;
        ``states`` is donated, and any ``i`` uses one compiled program)."""
        def put(states, i, state):
            self._count("put")
            return jax.tree.map(lambda a, s: jax.lax.dynamic_update_index_in_dim(a, s, i, 0),
                                states, state)

        args = (states, jnp.asarray(i, jnp.int32), state)
        return self.programs.get(("put",), lambda: put, args, donate=(0,))(*args)


@dataclasses.dataclass
class MemberResult:
    """One member's run, as :func:`train` ends it.

    Attributes:
      config: the member's config.
      status: ``completed``, ``early_stopped``, ``diverged`` or ``stopped``.
      history: per epoch, flat metrics (``train_loss``, ``val_accuracy``, ...).
      best, final: metrics by split at the best and the last epoch.
      best_epoch: the epoch of ``best`` (by the config's ``train.monitor``).
      state: the member's last state (host arrays).
      best_state: its state at ``best_epoch`` (host arrays).
    """

    config: Config
    status: str
    history: list[dict[str, float]]
    best: dict[str, dict[str, float]]
    final: dict[str, dict[str, float]]
    best_epoch: int | None
    state: Any
    best_state: Any


Reporter = Callable[[int, int, Mapping[str, float]], bool]
"""``reporter(member, epoch, metrics) -> stop``: after each evaluation of a
member; True stops that member (its slot is then idle)."""


def train(cfgs: Sequence[Config], reporter: Reporter | None = None) -> list[MemberResult]:
    """Train same-shaped configs as one population (see the module docstring).

    Args:
      cfgs: supervised configs that differ only in data fields (learning
        rates and other optimizer numbers, dropout, L2, seed, epochs,
        patience).
      reporter: optional ``reporter(member, epoch, metrics) -> stop``.
    Returns:
      One :class:`MemberResult` per config, in order.
    Raises:
      ConfigError: the configs do not share a shape (the message names the
        fields that differ).
    """
    from jaxdl import experiment

    check_same_shape(cfgs)
    # The seed also draws synthetic data and splits: members with other
    # seeds get their own copies (loaded once per seed).
    loaded: dict[int, data_lib.Dataset] = {}
    for cfg in cfgs:
        if cfg.seed not in loaded:
            loaded[cfg.seed] = data_lib.load(cfg.data, cfg.seed)
    datasets = [loaded[cfg.seed] for cfg in cfgs]
    engine = experiment.build_engine(cfgs[0], datasets[0])
    k = len(cfgs)
    shared = len(loaded) == 1
    pop = Population(engine, k, shared_data=shared)
    states = stack([experiment.new_state(cfg, engine, ds) for cfg, ds in zip(cfgs, datasets,
                                                                           strict=True)])
    keys = [run_keys(cfg.seed) for cfg in cfgs]
    dropout_keys = jnp.stack([kk["dropout"] for kk in keys])

    def arrays(ds: data_lib.Dataset):
        val = engine.put_eval_split(ds.val.x, ds.val.y) if ds.val is not None else None
        return jnp.asarray(ds.train.x), jnp.asarray(ds.train.y), val

    if shared:
        x, y, val = arrays(datasets[0])
    else:
        per = [arrays(ds) for ds in datasets]
        x, y = jnp.stack([p[0] for p in per]), jnp.stack([p[1] for p in per])
        val = None
        if per[0][2] is not None:
            v0 = per[0][2]
            val = EvalSplit(*(jnp.stack([getattr(p[2], f) for p in per]) for f in "xyw"),
                            v0.n, v0.batch)
    loops = [LoopState() for _ in cfgs]
    status: list[str | None] = [None] * k
    histories: list[list[dict[str, float]]] = [[] for _ in cfgs]
    best_states: list[Any] = [None] * k
    alive = jnp.ones((k,), bool)
    for epoch in range(1, max(cfg.train.epochs for cfg in cfgs) + 1):
        for i, cfg in enumerate(cfgs):
            if status[i] is None and epoch > cfg.train.epochs:
                status[i] = "completed"
        alive = alive & jnp.asarray([s is None for s in status])
        if not bool(alive.any()):
            break
        shuffle = jnp.stack([jax.random.fold_in(kk["shuffle"], epoch) for kk in keys])
        states, alive, train_m = pop.train_epoch(states, alive, x, y, shuffle, dropout_keys)
        val_m = pop.evaluate(states, val) if val is not None else [{}] * k
        host_alive = np.asarray(alive)
        host_states = None     # fetched once per epoch, when some member improved
        for i, cfg in enumerate(cfgs):
            if status[i] is not None:
                continue
            metrics = {f"train_{n}": v for n, v in train_m[i].items()}
            metrics.update({f"val_{n}": v for n, v in val_m[i].items()})
            histories[i].append(metrics)
            loop = loops[i]
            loop.epoch, loop.last_metrics = epoch, metrics
            loop.steps += engine.steps_per_epoch
            if not host_alive[i] or not all(math.isfinite(v) for v in metrics.values()):
                status[i] = "diverged"
                continue
            tc = cfg.train
            value = metrics[tc.monitor]
            if _improved(value, loop.best_value, config_lib.monitor_mode(tc), tc.min_delta):
                loop.best_value, loop.best_epoch, loop.wait = value, epoch, 0
                loop.best_metrics = dict(metrics)
                if host_states is None:
                    host_states = jax.device_get(states)
                best_states[i] = member(host_states, i)
            else:
                loop.wait += 1
            if tc.patience is not None and loop.wait >= tc.patience:
                status[i] = "early_stopped"
            elif reporter is not None and reporter(i, epoch, dict(metrics)):
                status[i] = "stopped"
    finals = unstack(jax.device_get(states))
    by_split = experiment._by_split
    return [MemberResult(cfg, status[i] or "completed", histories[i],
                         by_split(loops[i].best_metrics), by_split(loops[i].last_metrics),
                         loops[i].best_epoch, finals[i], best_states[i])
            for i, cfg in enumerate(cfgs)]
