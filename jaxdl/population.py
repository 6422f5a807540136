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
loss turns NaN/Inf goes back to its state before that epoch and is reported
``diverged``; the others go on unaffected. A stopped member's slot can be
refilled with a fresh state of the same shape (:meth:`Population.put`)
without recompiling.

Members equal the same configs trained alone up to float rounding (the
vmapped matmuls may sum in another order): ``tests/test_population.py``
states the tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
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
from jaxdl.loop import Book, LoopState, run_keys

__all__ = ["Member", "MemberResult", "Population", "check_same_shape", "member", "run",
           "run_agents", "stack", "train", "unstack"]

# Config fields that are data in the compiled program: members may differ in
# them. Every other field (except names and locations) fixes a shape or the
# program's structure.
DATA_FIELDS = ("name", "seed", "data.dir", "train.epochs", "train.patience", "train.min_delta",
               "train.progress", "train.l2", "model.dropout", "checkpoint.enabled",
               "checkpoint.every", "optim.learning_rate", "optim.momentum", "optim.b1",
               "optim.b2", "optim.eps", "optim.decay", "optim.weight_decay",
               "optim.warmup_epochs", "optim.decay_rate", "optim.min_lr_ratio",
               "optim.clip_norm")


# The same for PPO and DQN agents (``state.hparams`` of jaxdl.rl): members
# may differ in these; the environment, network, rollout and buffer shapes,
# total steps and chunks are the program's.
RL_DATA_FIELDS = ("name", "seed", "train.patience", "train.min_delta", "train.progress",
                  "checkpoint.enabled", "checkpoint.every", "rl.gamma", "rl.reward_scale",
                  "ppo.learning_rate", "ppo.anneal_lr", "ppo.gae_lambda", "ppo.clip_eps",
                  "ppo.vf_coef", "ppo.ent_coef", "ppo.max_grad_norm", "dqn.learning_rate",
                  "dqn.tau", "dqn.epsilon_start", "dqn.epsilon_end", "dqn.epsilon_fraction",
                  "dqn.max_grad_norm", "dqn.learning_starts", "dqn.train_every",
                  "dqn.target_every")


def stack(states: Sequence[Any]) -> Any:
    """States (same structure and shapes) stacked on a new leading axis, on
    the default device.

    The leaves are stacked on the host and put back one by one: an
    eager ``jnp.stack`` compiles a program for each distinct leaf shape
    (0.75 s and 0.26 s of compiles for the playground sweep's two shapes), while
    the copies cost microseconds for the small models populations are for.
    PRNG key leaves are stacked on the device (their bits are not host data).
    """
    return jax.tree.map(_stack_leaf, *states)


def _stack_leaf(*xs: Any) -> Any:
    if _is_key(xs[0]):
        return jnp.stack(xs)
    return jax.device_put(np.stack(jax.device_get(xs)))


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


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
    algorithm = cfgs[0].algorithm
    problems = [f"algorithm: config {i} is {cfg.algorithm}, config 0 {algorithm}; a "
                "population trains one algorithm" for i, cfg in enumerate(cfgs)
                if cfg.algorithm != algorithm]
    if algorithm == "gan":
        problems.insert(0, "algorithm: populations train supervised models and PPO / DQN "
                           "agents, not GANs")
    if problems:
        raise ConfigError(problems, "<population>")
    data = DATA_FIELDS if algorithm == "supervised" else RL_DATA_FIELDS
    first = config_lib.flatten(config_lib.to_dict(cfgs[0]))
    for i, cfg in enumerate(cfgs[1:], start=1):
        flat = config_lib.flatten(config_lib.to_dict(cfg))
        for key in sorted(set(first) | set(flat)):
            if key in data or first.get(key) == flat.get(key):
                continue
            problems.append(f"{key}: {first.get(key)!r} in config 0, {flat.get(key)!r} in "
                            f"config {i} (a shape or structure; members may differ only in "
                            f"data: {_data_hint(algorithm)})")
    if problems:
        raise ConfigError(problems, "<population>")


def _data_hint(algorithm: str) -> str:
    if algorithm == "supervised":
        return "learning rates, momentum, weight decay, dropout, l2, seed, epochs"
    return (f"{algorithm}'s learning rate, coefficients and clip range, gamma, the seed "
            "(see RL_DATA_FIELDS)")


class Population:
    """Up to ``size`` members of one :class:`Engine`'s shape, trained as one
    vmapped program (compiled once per chunk length and member count).

    With several local devices the member axis is split over them (a
    ``trial`` mesh axis: 4 GPUs run 4 x K/4 members), using the most devices
    that divide ``size``; place states with :meth:`place` and data with
    :meth:`place_data`, and XLA partitions the programs.

    Args:
      engine: the shape's engine (its model, optimizer, task and batching).
      size: members side by side.
      shared_data: all members train and evaluate on the same arrays (else
        each has its own: ``x``, ``y`` and evaluation splits carry a leading
        member axis, as when members' seeds draw different synthetic data
        or splits).
      devices: the devices to split members over (default: as many local
        devices as divide ``size``).
      dropout: whether any member may have a dropout rate above 0. False
        compiles the masks out (a smaller program, compiled sooner;
        :meth:`put` then refuses a member with a rate, and states stacked
        by the caller must have none); True draws them in an epoch
        where a live member's rate is above 0, and skips them otherwise.
    """

    def __init__(self, engine: Engine, size: int, shared_data: bool = True,
                 devices: Sequence[jax.Device] | None = None, *, dropout: bool = True):
        if size < 1:
            raise ValueError(f"a population needs size >= 1, got {size}")
        self.engine, self.size, self.shared_data = engine, size, shared_data
        self.dropout = dropout
        self._data_axis = None if shared_data else 0
        self.programs = Programs()
        self.traces: dict[str, int] = {}
        # Epochs :func:`run` trained: slot-epochs (size x population epochs)
        # and the member-epochs among them (the rest computed idle slots).
        self.slot_epochs = self.member_epochs = 0
        if devices is None:
            local = jax.local_devices()
            n = max(d for d in range(1, len(local) + 1) if size % d == 0)
            devices = local[:n]
        devices = list(devices)
        if size % len(devices):
            raise ValueError(f"a population of {size} cannot be split evenly over "
                             f"{len(devices)} devices")
        self.devices = devices
        self.mesh = jax.sharding.Mesh(np.asarray(devices), ("trial",))

    def place(self, tree: Any, *, members: bool = True) -> Any:
        """``tree`` on the population's devices: split over them along the
        leading member axis (``members``), else copied to each."""
        P = jax.sharding.PartitionSpec   # noqa: N806
        split = jax.sharding.NamedSharding(self.mesh, P("trial"))
        copied = jax.sharding.NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: jax.device_put(x, split if members else copied), tree)

    def place_data(self, tree: Any) -> Any:
        """Training or evaluation arrays: copied to every device when
        members share them, else split with the members."""
        return self.place(tree, members=not self.shared_data)

    def _count(self, name: str) -> None:
        self.traces[name] = self.traces.get(name, 0) + 1

    @property
    def compile_seconds(self) -> float:
        return self.programs.seconds

    def _epoch_fn(self, length: int):
        e, b = self.engine, self.engine.batch_size

        def one(state, alive, x, y, key, start, rng, dropout_on):
            perm = e._permutation_fn(key)

            def body(carry, i):
                state, ok = carry
                idx = jax.lax.dynamic_slice_in_dim(perm, (start + i) * b, b)
                new, metrics = e.train_step(state, e._gather(x, y, idx), rng,
                                            dropout_on=dropout_on)
                return (new, ok & jnp.isfinite(metrics["loss"])), metrics

            # A member whose loss went non-finite during the call (or that
            # was not alive) goes back to its state before it, once, after
            # the scan: a select per step held the MNIST MLP at 2 members to
            # 175 member-steps/s, against 248 without it. Members share
            # nothing in the scan, so a NaN stays in its own member.
            (new, ok), metrics = jax.lax.scan(body, (state, alive),
                                              jnp.arange(length, dtype=jnp.int32))
            state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
            return state, ok, metrics

        def run(states, alive, x, y, keys, start, rngs):
            self._count(f"epoch[{length}]")
            d = self._data_axis
            # Unbatched: masks are drawn only when some live member uses
            # dropout (a cond on each member's own rate would run both
            # branches under vmap).
            dropout_on = (jnp.any(alive & (states.hparams["dropout"] > 0)) if self.dropout
                          else False)
            return jax.vmap(functools.partial(one, dropout_on=dropout_on),
                            in_axes=(0, 0, d, d, 0, None, 0))(states, alive, x, y, keys,
                                                               start, rngs)

        return run

    def _eval_fn(self, batch: int):
        fn = self.engine._eval_fn(True, batch)

        def run(states, x, y, w):
            self._count("eval")
            d = self._data_axis
            return jax.vmap(fn, in_axes=(0, d, d, d))(states, x, y, w)

        return run

    def train_epoch(self, states: Any, alive: jax.Array, x: jax.Array, y: jax.Array,
                    shuffle_keys: jax.Array, dropout_keys: jax.Array, *,
                    steps: int | None = None
                    ) -> tuple[Any, jax.Array, list[dict[str, float]]]:
        """One epoch of every member (``states`` donated); with ``steps``,
        only its first ``steps`` steps (what ``population: auto`` times).

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
        steps = steps or self.engine.steps_per_epoch
        alive, shuffle_keys, dropout_keys = self.place((alive, shuffle_keys, dropout_keys))
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
        rate = 0.0 if self.dropout else float(np.asarray(jax.device_get(
            state.hparams["dropout"])))
        if rate:
            raise ConfigError(
                f"model.dropout: {rate:.6g} in a "
                "population built with dropout=False (its masks are compiled out); build it "
                "with dropout=True", "<population>")

        def put(states, i, state):
            self._count("put")
            return jax.tree.map(lambda a, s: jax.lax.dynamic_update_index_in_dim(a, s, i, 0),
                                states, state)

        args = (states, jnp.asarray(i, jnp.int32), self.place(state, members=False))
        return self.programs.get(("put",), lambda: put, args, donate=(0,))(*args)


@dataclasses.dataclass
class Member:
    """One member's run inside a population: its config, its keys, its
    bookkeeping (a :class:`~jaxdl.loop.Book`, which writes its metric rows
    and checkpoints when it has them) and the state it starts from.

    Attributes:
      config: the member's config.
      book: its bookkeeping (``book.loop.epoch`` is its last epoch).
      state: its starting state (host or device; placed into a slot).
      tag: the caller's handle (an Optuna trial, an index).
    """

    config: Config
    book: Book
    state: Any
    tag: Any = None

    def __post_init__(self):
        keys = run_keys(self.config.seed)
        self.shuffle_key, self.dropout_key = keys["shuffle"], keys["dropout"]

    @property
    def loop(self) -> LoopState:
        return self.book.loop


Source = Callable[[], "Member | None"]
"""``source() -> Member | None``: the next member for a free slot (None:
none now)."""
Done = Callable[[Member, Any, float], None]
"""``done(member, state, seconds)``: a member ended (``member.book.status``
says how); ``state`` is its last state (host arrays)."""


def run(pop: Population, x: Any, y: Any, val: EvalSplit | None, source: Source, done: Done,
        *, template: Any) -> int:
    """Train members drawn from ``source`` in ``pop``'s slots until it has
    none left: each epoch trains every occupied slot, evaluates it, and books
    each member's epoch; a member that ends (its epochs done, diverged,
    early-stopped or stopped by its reporter) is handed to ``done`` and its
    slot refilled from ``source`` before the next epoch, in the same compiled
    programs.

    Args:
      pop: the population (its engine and size).
      x, y, val: training arrays and the validation split (with a leading
        member axis unless ``pop.shared_data``).
      template: a state of the members' shape (fills free slots).
    Returns:
      The number of population epochs run.
    """
    e, k = pop.engine, pop.size
    slots: list[Member | None] = [None] * k
    states = pop.place(stack([template] * k))
    x, y = pop.place_data((x, y))
    if val is not None:
        val = EvalSplit(*pop.place_data((val.x, val.y, val.w)), val.n, val.batch)
    started = [0.0] * k
    epochs = 0
    while True:
        for i in range(k):
            if slots[i] is None:
                m = source()
                if m is not None:
                    states = pop.put(states, i, m.state)
                    m.state = None
                    slots[i], started[i] = m, time.perf_counter()
        live = [i for i in range(k) if slots[i] is not None]
        if not live:
            return epochs
        alive = jnp.asarray([m is not None for m in slots])
        shuffle = jnp.stack([jax.random.fold_in(m.shuffle_key, m.loop.epoch + 1)
                             if m is not None else jax.random.key(0) for m in slots])
        dropout = jnp.stack([m.dropout_key if m is not None else jax.random.key(0)
                             for m in slots])
        t0 = time.perf_counter()
        states, alive, train_m = pop.train_epoch(states, alive, x, y, shuffle, dropout)
        pop.slot_epochs += k
        pop.member_epochs += len(live)
        t1 = time.perf_counter()
        val_m = pop.evaluate(states, val) if val is not None else [{}] * k
        t2 = time.perf_counter()
        epochs += 1
        ok = np.asarray(alive)
        get = _HostCopy(states)
        for i in live:
            m = slots[i]
            loop = m.loop
            loop.train_seconds += t1 - t0
            loop.eval_seconds += t2 - t1
            metrics = dict(train_m[i])
            if not ok[i]:   # back at its state before the epoch: report the divergence
                metrics["loss"] = math.nan
            epoch = loop.epoch + 1
            evaluated = {"val": val_m[i]} if val is not None else {}
            stop = m.book.record(epoch, e.steps_per_epoch, metrics, evaluated,
                                 functools.partial(get, i))
            if stop or epoch >= m.config.train.epochs:   # the book has flushed
                done(m, get(i), time.perf_counter() - started[i])
                slots[i] = None


class _HostCopy:
    """Member ``i`` of stacked device states, copied to the host once (on
    the first member that needs its state) and indexed there."""

    def __init__(self, states: Any):
        self._states, self._host = states, None

    def __call__(self, i: int) -> Any:
        return member(self._get(), i)

    def rows(self, rows: slice) -> Any:
        """Rows ``rows`` of every leaf (an RL member's agents)."""
        return jax.tree.map(lambda x: x[rows], self._get())

    def _get(self) -> Any:
        if self._host is None:
            self._host = jax.device_get(self._states)
        return self._host


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
        patience: :data:`DATA_FIELDS`), or PPO / DQN configs that differ
        only in :data:`RL_DATA_FIELDS` (learning rate, entropy and value
        coefficients, clip range, gamma, ...; each member trains its
        ``rl.seeds`` agents, all members' agents in one vmapped program).
      reporter: optional ``reporter(member, epoch, metrics) -> stop``.
    Returns:
      One :class:`MemberResult` per config, in order.
    Raises:
      ConfigError: the configs do not share a shape (the message names the
        fields that differ).
    """
    from jaxdl import experiment

    check_same_shape(cfgs)
    for cfg in cfgs:
        if cfg.parallel.data not in ("auto", 1) or cfg.parallel.fsdp != 1:
            raise ConfigError(
                f"parallel.data {cfg.parallel.data}, parallel.fsdp {cfg.parallel.fsdp}: a "
                "population splits its trial axis over the devices itself; leave parallel "
                "at auto (or 1)", "<population>")
    if cfgs[0].algorithm in config_lib.RL_ALGORITHMS:
        return _train_rl(cfgs, reporter)
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
    pop = Population(engine, k, shared_data=shared,
                     dropout=any(cfg.model.dropout > 0 for cfg in cfgs))

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
    books, histories = _books(cfgs, [experiment.SupervisedJob.divergence_hint] * k, reporter)
    pending = [Member(cfg, book, experiment.new_state(cfg, engine, ds), tag=i)
               for i, (cfg, book, ds) in enumerate(zip(cfgs, books, datasets, strict=True))]
    finals: list[Any] = [None] * k
    run(pop, x, y, val, lambda: pending.pop(0) if pending else None,
        lambda m, state, seconds: finals.__setitem__(m.tag, state), template=pending[0].state)
    return _results(cfgs, books, histories, finals)


def _books(cfgs: Sequence[Config], hints: Sequence[str], reporter: Reporter | None
           ) -> tuple[list[Book], list[list[dict[str, float]]]]:
    """Each member's bookkeeping (no run directory) and the history its
    reports fill, passed on to ``reporter(member, epoch, metrics)``."""
    histories: list[list[dict[str, float]]] = [[] for _ in cfgs]
    books = []
    for i, (cfg, hint) in enumerate(zip(cfgs, hints, strict=True)):
        def report(epoch, metrics, i=i):
            histories[i].append(dict(metrics))
            return reporter is not None and bool(reporter(i, epoch, metrics))

        books.append(Book(cfg, LoopState(), hint, reporter=report))
    return books, histories


def _results(cfgs: Sequence[Config], books: Sequence[Book],
             histories: Sequence[list[dict[str, float]]], finals: Sequence[Any]
             ) -> list[MemberResult]:
    from jaxdl.experiment import _by_split

    return [MemberResult(cfg, book.status, history, _by_split(book.loop.best_metrics),
                         _by_split(book.loop.last_metrics), book.loop.best_epoch, final,
                         book.best_state)
            for cfg, book, history, final in zip(cfgs, books, histories, finals, strict=True)]


def _train_rl(cfgs: Sequence[Config], reporter: Reporter | None) -> list[MemberResult]:
    """PPO / DQN members (see :func:`run_agents`), without run directories."""
    from jaxdl import rl_run

    jobs = [rl_run.RLJob(cfg, log=lambda line: None) for cfg in cfgs]
    books, histories = _books(cfgs, [job.divergence_hint for job in jobs], reporter)
    finals: list[Any] = [None] * len(cfgs)
    run_agents(jobs, books, [job.new_state() for job in jobs],
               lambda i, state, seconds: finals.__setitem__(i, state))
    return _results(cfgs, books, histories, finals)


def run_agents(jobs: Sequence[Any], books: Sequence[Book], states: Sequence[Any],
               done: Callable[[int, Any, float], None]) -> float:
    """Train PPO / DQN members in lockstep as one program: member ``i``'s
    ``rl.seeds`` agents are rows ``i * seeds ...`` of one vmapped program,
    started from ``states[i]`` (its own keys and numbers) and evaluated on the
    episodes its own run would play. Each chunk is booked per member by
    ``books[i]`` (and its learning curve recorded by ``jobs[i]``, when that
    job has a run directory). A member that ends (its chunks done, early
    stopped, stopped by its reporter, diverged) is handed to ``done(i,
    state, seconds)`` with its state at that chunk (host arrays); its rows go
    on computing, unread, until the others end.

    Args:
      jobs: each member's :class:`jaxdl.rl_run.RLJob` (same structure).
      books: each member's bookkeeping.
      states: each member's starting state (its agents stacked).
    Returns:
      Seconds spent compiling the population's programs.
    """
    from jaxdl import rl_run

    cfgs = [job.cfg for job in jobs]
    m_count, seeds = len(cfgs), cfgs[0].rl.seeds
    program = rl_run.build_program(cfgs[0].replace({"rl.seeds": m_count * seeds}))
    compiled = program.compile_seconds
    state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)
    episodes = cfgs[0].rl.eval_episodes
    eval_keys = jnp.stack([jax.random.fold_in(rl_run.val_key(cfg), j)
                           for cfg in cfgs for j in range(seeds)])
    chunks = jobs[0].chunks
    program.compile(state, chunks, episodes)
    lasts: list[dict] = [{} for _ in cfgs]
    ended = [False] * m_count
    t_start = time.perf_counter()
    for epoch, n in enumerate(chunks, start=1):
        live = [i for i in range(m_count) if not ended[i]]
        if not live:
            break
        t0 = time.perf_counter()
        state, m = program.run(state, n)
        m = jax.device_get(m)
        t1 = time.perf_counter()
        returns = lengths = None
        if episodes:
            returns, lengths = program.evaluate_keys(state, eval_keys, episodes)
        t2 = time.perf_counter()
        get = _HostCopy(state)
        end = sum(chunks[:epoch])
        for i in live:
            rows = slice(i * seeds, (i + 1) * seeds)
            mine = {k: v[rows] for k, v in m.items()}
            jobs[i].record_curve(end, mine, n)
            train_m = rl_run._chunk_metrics(mine, lasts[i])
            train_m["steps_per_second"] = seeds * jobs[i].epoch_steps(epoch) / (t1 - t0)
            evaluated = ({"val": rl_run._return_metrics(returns[rows], lengths[rows])}
                         if episodes else {})
            book = books[i]
            book.loop.train_seconds += t1 - t0
            book.loop.eval_seconds += t2 - t1
            stop = book.record(epoch, jobs[i].epoch_steps(epoch), train_m, evaluated,
                               functools.partial(get.rows, rows))
            if stop or epoch == len(chunks):   # the book has flushed
                ended[i] = True
                done(i, get.rows(rows), time.perf_counter() - t_start)
    return program.compile_seconds - compiled
