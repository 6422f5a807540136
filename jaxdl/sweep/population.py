"""Population sweeps: ``population: K`` in a sweep spec (``jaxdl sweep SPEC
--population K``) trains up to K trials of one shape side by side, as one
vmapped program (:mod:`jaxdl.population`).

Every trial is still an ordinary Optuna trial: its params, one intermediate
value per epoch, its pruning decision, its value or pruned state, its run
directory (``config.yaml``, ``metrics.jsonl``, checkpoints, ``summary.json``,
``curves.png``) and the same user attrs as a plain sweep's, plus
``population`` (size, group).

How trials are grouped:

* A *shape group* opens with a trial the sampler proposes freely. Its
  *shape* is every config field that is not data in the compiled program
  (depth, width, batch size, activation, optimizer name, ...; see
  :data:`jaxdl.population.DATA_FIELDS`), plus the seed, which draws the data
  the members share.
* The group's other slots, and each slot freed by a member that finished or
  was pruned, get trials asked with the shape parameters fixed
  (:class:`optuna.samplers.PartialFixedSampler`); the sampler proposes the
  rest (learning rate, dropout, ...). Nothing recompiles.
* After ``group_trials`` trials (default 2 x K) the group takes no more; when
  its last member ends, the next free proposal opens the next group. A
  re-queued trial (its worker died) with another shape also waits for the
  next group, and resumes from its checkpoint there.
* The population is ``min(K, remaining budget)`` wide; a shape compiled
  before reuses its programs, so a sweep compiles once per distinct shape.

PPO / DQN sweeps group the same way, and a group's members train in
lockstep (:func:`jaxdl.population.run_agents`): its slots are not refilled.

``population: auto`` times the first shape's epochs (training and the
validation evaluation; estimated from 32 steps when longer) plainly (the
plain engine's own compiled calls) and at population sizes up to 8, and
models each size's seconds per trial: its epochs at the measured
member-epochs per second plus its share of the compiles, which a plain
sweep pays per new shape and a population sweep per group
(:func:`trial_seconds`). It takes a larger size only when that cuts the
cost by more than 15 % (:data:`AUTO_GAIN`); sizes are tried doubling from
1, or, when compiles dominate, 8 first (:func:`choose_size`). If it stays
at 1, the sweep runs plainly (one trial at a time), with the programs the
probe compiled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optuna
from optuna.trial import TrialState

from jaxdl import config as config_lib
from jaxdl import experiment
from jaxdl import population as pop_lib
from jaxdl.config import Config
from jaxdl.errors import DataError
from jaxdl.loop import Book
from jaxdl.sweep import space as space_lib
from jaxdl.sweep import storage as storage_lib
from jaxdl.sweep.driver import _budget, requeue, stop_reason
from jaxdl.sweep.objective import Objective, trial_value
from jaxdl.sweep.reporting import counts as _counts
from jaxdl.sweep.spec import SweepSpec

__all__ = ["AUTO_COMPILE_SHARE", "AUTO_GAIN", "AUTO_MAX", "AutoProbe", "PopulationSweep",
           "choose_size", "distinct_shapes", "shape_key", "shape_params", "trial_seconds"]

AUTO_MAX = 8
# `population: auto` takes a larger size only when it cuts the modelled
# seconds per trial by more than this (see choose_size).
AUTO_GAIN = 0.15
# When compiles are at least this share of a plain trial's modelled
# seconds, `auto` times the largest size right after plain (see choose_size).
AUTO_COMPILE_SHARE = 0.5
_PROBE_SECONDS = 0.25   # timed per size, at least (and at least 2 calls)
_POLL_SECONDS = 1.0


def _data_fields(algorithm: str) -> set[str]:
    """Fields members of one group may differ in. A supervised group shares
    its data, which the seed draws; agents draw nothing shared."""
    if algorithm == "supervised":
        return set(pop_lib.DATA_FIELDS) - {"seed"}
    return set(pop_lib.RL_DATA_FIELDS)


def shape_key(cfg: Config) -> str:
    """What a population's members must share: every config field that is not
    data in the compiled program (for supervised models, the seed too: it
    draws the data members share)."""
    flat = config_lib.flatten(config_lib.to_dict(cfg))
    data = _data_fields(cfg.algorithm)
    return json.dumps({k: v for k, v in flat.items() if k not in data}, sort_keys=True,
                      default=str)


def shape_params(spec: SweepSpec) -> list[str]:
    """The searched keys that set a shape (fixed within a group)."""
    data = _data_fields(spec.base.algorithm)
    return [p.key for p in spec.space if p.key not in data]


@dataclasses.dataclass
class _Ask:
    trial: optuna.Trial
    cfg: Config


@dataclasses.dataclass
class _Live:
    trial: optuna.Trial
    opened: experiment.OpenedRun
    t0: float
    group: int
    slot_size: int


class _CompletedView:
    """What a median or percentile pruner reads of a study: its direction
    and its completed trials (a snapshot)."""

    def __init__(self, direction, trials, tells: int, read_at: float):
        self.direction, self.directions = direction, [direction]
        self._trials, self.tells, self.read_at = trials, tells, read_at

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._trials if states is None or t.state in states]


class _Shape:
    """A shape's job (data, engine, test split) and its populations by size."""

    def __init__(self, cfg: Config, dropout: bool = True):
        # A population splits its trial axis over the devices itself.
        self.job = experiment.SupervisedJob(cfg, layout=None)
        self.dropout = dropout   # may a member's rate be above 0
        self.pops: dict[int, pop_lib.Population] = {}
        self.charged = 0.0   # compile seconds already attributed to trials

    def population(self, size: int) -> pop_lib.Population:
        """A population at least ``size`` wide (one compiled before, if any)."""
        fits = [k for k in self.pops if k >= size]
        if fits:
            return self.pops[min(fits)]
        pop = self.pops[size] = pop_lib.Population(self.job.engine, size,
                                                   dropout=self.dropout)
        return pop

    @property
    def compile_seconds(self) -> float:
        return self.job.engine.compile_seconds + sum(p.compile_seconds
                                                     for p in self.pops.values())


@dataclasses.dataclass
class AutoProbe:
    """What ``population: auto`` measured and chose (:func:`choose_size`).

    Attributes:
      size: the size chosen (1: plain).
      rates: member-epochs per second of each size timed.
      compile_seconds: each size's compile seconds for a new shape (the
        shape's state init, and its epoch and evaluation programs).
      trial_seconds: each size's modelled seconds per trial (see
        :func:`trial_seconds`).
      pops: the populations timed, holding their compiled programs.
    """

    size: int
    rates: dict[int, float]
    compile_seconds: dict[int, float]
    trial_seconds: dict[int, float]
    pops: dict[int, pop_lib.Population]


def distinct_shapes(spec: SweepSpec) -> int | None:
    """How many shapes the searched shape parameters span (None: unbounded,
    a float without a step)."""
    n = 1
    keys = set(shape_params(spec))
    for p in spec.space:
        if p.key not in keys:
            continue
        if p.kind == "categorical":
            n *= len(p.choices)
        elif p.kind == "int" or p.step is not None:
            n *= int(math.floor((p.high - p.low) / (p.step or 1) + 1e-9)) + 1
        else:
            return None
    return n


def trial_seconds(size: int, rate: float, compile_s: float, *, epochs: int, trials: int,
                  shapes: int | None, group_trials: int) -> float:
    """The modelled seconds a trial costs at ``size`` (1: plain): its
    ``epochs`` at ``rate`` member-epochs per second, plus its share of the
    compiles. A plain sweep compiles each distinct shape its ``trials``
    draw; a population sweep each distinct shape its groups draw (one per
    ``group_trials`` trials). Of ``shapes`` equally likely shapes, ``n``
    draws hold ``shapes * (1 - (1 - 1/shapes) ** n)`` distinct ones (``n``
    when the shapes are unbounded); a sampler that settles on a region
    draws fewer, so the compile share is an upper bound, as ``epochs`` (no
    trial pruned) is."""
    draws = trials if size == 1 else trials / group_trials
    distinct = draws if shapes is None else shapes * (1 - (1 - 1 / shapes) ** draws)
    return distinct / trials * compile_s + epochs / rate


def choose_size(job: experiment.SupervisedJob, state: Any, sizes: list[int], *,
                steps: int = 32, dropout: bool = True, trials: int | None = None,
                shapes: int | None = 1, group_trials: int | None = None) -> AutoProbe:
    """The population size for a sweep of ``trials`` trials (None: 100)
    over ``shapes`` distinct shapes (None: unbounded), groups of
    ``group_trials`` trials (None: twice the size). ``sizes`` (ascending,
    from 1) are timed on copies of ``state``, and a size is taken only when
    its modelled seconds per trial (:func:`trial_seconds`) beat the size
    taken before by more than :data:`AUTO_GAIN`:

    * Usually in ascending order, doubling while each size gains; the
      first that does not ends the probe.
    * When compiles are at least :data:`AUTO_COMPILE_SHARE` of a plain
      trial's modelled seconds (small models), the largest size right
      after 1; if it gains, smaller sizes (descending) only while their
      compiles alone could still beat the size taken; if not, the others
      in ascending order. On the playground this skips compiling sizes 2
      and 4 (about 3.5 s of a 28 s sweep), which the ascending probe
      compiled only to go on to 8.

    An epoch is timed as a sweep runs it: training, then the validation
    split's evaluation. Size 1 is the plain engine (its compiled calls,
    which a plain sweep then goes on with); a larger size is a population,
    with dropout masks compiled in or out as ``dropout`` says (see
    :class:`jaxdl.population.Population`). An epoch longer than ``steps``
    steps is estimated from a call of ``steps`` steps (or the plain
    engine's first call of an epoch, when shorter), scaled to the epoch,
    plus the evaluation. Each timing is the fastest of at least 2 calls and
    0.25 s, after one that compiles.

    Why compiles count: a small model's sweep is mostly compiles, and a
    population sweep compiles once per group where a plain sweep compiles
    once per new shape. On the playground spiral (2 CPU cores) a plain
    epoch and its evaluation took 2.7 ms and their programs 2 s to
    compile, while 2 members' epochs ran 0.8-1.3x as many member-epochs
    per second (8 probes); the population-8 sweep ran 2.6x as fast.

    Why the plain engine and not a population of one: on the MNIST MLP the
    plain engine made 222 steps per second where a population of one made
    159-204, so a probe starting from a population of one chose 2 members,
    and the sweep ran at 0.95-0.98x of plain.

    Why a margin: the probe times the first shape only, and a population
    also idles slots at a group's end.

    Returns:
      An :class:`AutoProbe`: the size, and each timed size's rate, compile
      seconds, modelled seconds per trial and population (its compiled
      programs, which a sweep goes on with).
    """
    engine = job.engine
    whole = engine.steps_per_epoch <= steps
    val = job._evals.get("val")
    trials = trials or 100
    base = engine.compile_seconds   # the shape's state init, whichever size runs it
    probe = AutoProbe(sizes[0], {}, {}, {}, {})

    def cost(k: int, rate: float, compiled: float) -> float:
        return trial_seconds(k, rate, compiled, epochs=job.cfg.train.epochs, trials=trials,
                             shapes=shapes, group_trials=group_trials or 2 * k)

    def measure(k: int) -> None:
        if k == 1:
            before = engine.compile_seconds
            seconds = _plain_epoch(job, state, val, None if whole else steps)
            compiled = base + engine.compile_seconds - before
        else:
            pop = probe.pops[k] = pop_lib.Population(engine, k, dropout=dropout)
            seconds = _population_epoch(pop, pop_lib.stack([state] * k), job, val,
                                        None if whole else steps)
            compiled = base + pop.compile_seconds
        probe.rates[k] = k / seconds
        probe.compile_seconds[k] = compiled
        probe.trial_seconds[k] = cost(k, probe.rates[k], compiled)

    def beats(k: int) -> bool:
        return probe.trial_seconds[k] * (1 + AUTO_GAIN) < probe.trial_seconds[probe.size]

    measure(sizes[0])
    rest = list(sizes[1:])
    compiles = cost(sizes[0], math.inf, probe.compile_seconds[sizes[0]])
    if rest and compiles >= AUTO_COMPILE_SHARE * probe.trial_seconds[sizes[0]]:
        # Compiles dominate: the largest size first, then a smaller one only
        # while its compiles alone (at the largest size's compile seconds;
        # they barely depend on the size) leave it a chance.
        top = rest.pop()
        measure(top)
        if beats(top):
            probe.size = top
            for k in reversed(rest):
                if cost(k, math.inf, probe.compile_seconds[top]) * (1 + AUTO_GAIN) >= \
                        probe.trial_seconds[probe.size]:
                    break
                measure(k)
                if beats(k):
                    probe.size = k
            return probe
    for k in rest:
        measure(k)
        if not beats(k):
            break
        probe.size = k
    return probe


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _timed(call: Callable[[], Any]) -> float:
    """Seconds of the fastest of at least 2 calls of ``call`` (after one
    that compiles) and of as many as fit in ``_PROBE_SECONDS`` (50 at
    most): a small model's call takes milliseconds, and one slow call in
    three once decided the size."""
    timed: list[float] = []
    for _ in range(51):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        timed.append(time.perf_counter() - t0)
        if len(timed) > 2 and sum(timed[1:]) >= _PROBE_SECONDS:
            break
    return min(timed[1:])


def _plain_epoch(job: experiment.SupervisedJob, state: Any, val: Any, steps: int | None
                 ) -> float:
    """Seconds of a plain epoch of ``job``, with its engine's compiled calls
    (kept for a plain sweep): timed whole (``steps`` None), or one call of
    the engine's first call length or ``steps``, whichever is shorter,
    scaled to the epoch, plus the validation evaluation. (The MNIST MLP's
    engine runs an epoch in one call of 2.8 s: four of them made the
    probe 11 s.)"""
    engine = job.engine
    shuffle, dropout = job._keys["shuffle"], job._keys["dropout"]
    # Donated, so a copy (``state`` is the populations' template); each call
    # gets the state the last one returned.
    held = [engine.place(jax.device_put(jax.device_get(state)))]
    evaluate = (lambda: engine.evaluate(held[0], val)) if val is not None else None
    if steps is None:
        def epoch():
            held[0], metrics = engine.train_epoch(held[0], job._x, job._y, shuffle, dropout)
            return metrics

        return _epoch_seconds(epoch, evaluate, 1)
    length = min(engine._chunks()[0], steps)
    perm = engine._get(("permutation",), lambda: engine._permutation_fn, (shuffle,))(shuffle)
    start = jnp.zeros((), jnp.int32)

    def call():
        args = (held[0], job._x, job._y, perm, start, dropout)
        held[0], metrics = engine._train_callable(length, False, args)(*args)
        return metrics

    return _epoch_seconds(call, evaluate, engine.steps_per_epoch / length)


def _population_epoch(pop: pop_lib.Population, states: Any, job: experiment.SupervisedJob,
                      val: Any, steps: int | None) -> float:
    """Seconds of an epoch of ``pop``: timed whole (``steps`` None: the
    sweep's own epoch program), or ``steps`` steps scaled to the epoch plus
    the validation evaluation."""
    keys = jnp.stack([jax.random.key(i) for i in range(pop.size)])
    alive = jnp.ones((pop.size,), bool)
    held = [states]
    evaluate = (lambda: pop.evaluate(held[0], val)) if val is not None else None

    def train():
        held[0], _, _ = pop.train_epoch(held[0], alive, job._x, job._y, keys, keys,
                                        steps=steps)
        return held[0]

    return _epoch_seconds(train, evaluate,
                          1 if steps is None else pop.engine.steps_per_epoch / steps)


def _epoch_seconds(train: Callable[[], Any], evaluate: Callable[[], Any] | None,
                   calls: float) -> float:
    """Seconds of an epoch of ``calls`` calls of ``train`` and one of
    ``evaluate`` (None: no validation split): timed together when the epoch
    is one call, else apart (the evaluation once, not ``calls`` times)."""
    if calls == 1:
        return _timed(lambda: (train(), evaluate and evaluate()))
    return _timed(train) * calls + (_timed(evaluate) if evaluate is not None else 0.0)


class PopulationSweep:
    """Runs a study's trials in populations until the budget, the deadline
    or the failure limit (the population counterpart of the plain sweep's
    worker loop; see the module docstring).

    Args:
      spec: the sweep.
      study: the opened study.
      size: members per population (an integer >= 2), or ``"auto"``.
      objective: the plain sweep's objective (run directories, the
        reporter and its ``on_epoch`` hook, cleanup).
      deadline: ``time.time()`` after which no trial starts.
      on_trial: called with each finished trial (the display).
      note: where one-line notices go (the display).
      verbose: print each trial's summary line.
      after_probe: with ``auto``, called once its sizes are timed (the
        driver then starts importing what the final report needs: earlier,
        the imports would compete with the timed steps for the CPU).
    """

    def __init__(self, spec: SweepSpec, study: optuna.Study, objective: Objective, *,
                 size: int | str, deadline: float | None = None,
                 on_trial: Callable[[optuna.Study, Any], None] | None = None,
                 note: Callable[[str], None] | None = None, verbose: bool = False,
                 after_probe: Callable[[], None] | None = None):
        self.spec, self.study, self.objective = spec, study, objective
        self.after_probe = after_probe   # auto: called once its sizes are timed
        self.size, self.deadline = size, deadline
        self.on_trial, self.verbose = on_trial, verbose
        self.note = note or (lambda s: None)
        self.info = storage_lib.resolve(spec.storage, spec.directory)
        self.budget = _budget(spec)
        self.heartbeat = optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)
        self.shapes: OrderedDict[str, _Shape] = OrderedDict()
        self.pending: list[_Ask] = []
        self.live: dict[int, _Live] = {}
        # The trial opening a group, from its ask until it trains (or ends):
        # setting up a shape (data, engine, first compiles) can outlast
        # heartbeat.grace, so it beats (and is re-queued on Ctrl-C) too.
        self.opening: list[_Ask] = []
        self.groups: list[dict[str, Any]] = []
        self.fixed_keys = shape_params(spec)
        self._compiled: set[str] = set()
        self._tells = 0
        self._view: _CompletedView | None = None
        self.auto = size == "auto"
        self.probe: AutoProbe | None = None   # auto: what it measured and chose
        if self.auto:
            self.size = AUTO_MAX

    # ---------------------------------------------------------------- asking

    def _ask(self, fixed: Mapping[str, Any] | None) -> tuple[_Ask | None, str | None, bool]:
        """A new trial (shape params ``fixed``), or why not: ``(ask, why,
        wait)``; ``why`` ends the sweep, ``wait`` means running trials (this
        driver's or other workers') hold the rest of the budget."""
        while True:
            with storage_lib.budget_lock(self.info, self.spec.name):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self.study)
                trials = self.study.get_trials(deepcopy=False)
                # Without heartbeats only this driver's running trials count
                # (a dead process's would hold their slots forever).
                running = _counts(trials)["running"] if self.heartbeat else \
                    len(self.live) + len(self.pending)
                why, wait = stop_reason(self.spec, self.study, trials, self.deadline,
                                        running=running)
                if why is not None or wait:
                    return None, why, wait
                sampler = self.study.sampler
                if fixed:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        self.study.sampler = optuna.samplers.PartialFixedSampler(
                            dict(fixed), sampler)
                # A trial samples when its params are suggested: the fixing
                # sampler stays in place until then.
                try:
                    with warnings.catch_warnings():
                        # Optuna's heartbeat thread belongs to study.optimize;
                        # this driver runs its own (_heartbeats).
                        warnings.filterwarnings("ignore", "Heartbeat of storage")
                        trial = self.study.ask()
                    try:
                        cfg = self.spec.trial_config(space_lib.suggest(trial, self.spec.space))
                    except Exception as e:  # noqa: BLE001 - a bad proposal fails its trial
                        cfg = e
                finally:
                    self.study.sampler = sampler
            if isinstance(cfg, Exception):
                self._fail(trial, cfg)
                continue
            return _Ask(trial, cfg), None, False

    def _remaining(self) -> int:
        """Trials the budget still allows beyond the running ones."""
        if self.budget is None:
            return self.size
        c = _counts(self.study.get_trials(deepcopy=False))
        return max(1, self.budget - c["finished"] - c["running"] + 1)

    # --------------------------------------------------------------- members

    def _start(self, ask: _Ask, shape: _Shape, group: int, size: int
               ) -> pop_lib.Member | None:
        """Open the trial's run directory (resuming a re-queued trial's
        checkpoint) and make its member; None if it failed or had already
        ended."""
        trial, cfg = ask.trial, ask.cfg
        t0 = time.perf_counter()
        try:
            job = shape.job
            run_dir, resume = self.objective.place(trial, cfg)
            opened, book = self._open(ask, job, run_dir, resume,
                                      experiment.new_state(cfg, job.engine, job.dataset))
        except Exception as e:  # noqa: BLE001 - recorded on the trial
            self._fail(trial, e)
            if isinstance(e, DataError):
                raise
            return None
        m = pop_lib.Member(cfg, book, opened.state,
                           tag=_Live(trial, opened, t0, group, size))
        self.live[trial.number] = m.tag
        self._opened(ask)
        if opened.loop.status is not None or opened.loop.epoch >= cfg.train.epochs:
            # Resumed from the checkpoint where it ended: record it as it ended.
            book.status = opened.loop.status or book.status
            book.reason = opened.loop.reason or book.reason
            self._done(m, opened.state, 0.0, shape)
            return None
        return m

    def _opened(self, ask: _Ask) -> None:
        """``ask`` no longer needs the opening group's heartbeat: it is live
        (or runs plainly). A failed one leaves in :meth:`_fail`."""
        if ask in self.opening:
            self.opening.remove(ask)

    def _open(self, ask: _Ask, job: Any, run_dir: Any, resume: bool, state: Any = None
              ) -> tuple[experiment.OpenedRun, Book]:
        """A member's run directory opened (as ``jaxdl.run`` opens one) and
        its bookkeeping, reporting to its trial."""
        cfg = ask.cfg
        opened = experiment.open_run(cfg, job, run_dir, resume=resume, log=self._log,
                                     state=state)
        book = Book(cfg, opened.loop, job.divergence_hint,
                    reporter=self._reporter(ask.trial, cfg.train.epochs),
                    checkpointer=opened.checkpointer, writer=opened.writer)
        return opened, book

    def _ask_same_shape(self, fixed: Mapping[str, Any], key: str) -> _Ask | None:
        """A trial for a group of shape ``key`` (its shape params ``fixed``),
        or None when the budget, the deadline or another worker says no, or
        when the study handed back a re-queued trial of another shape (which
        then waits for the next group)."""
        ask, _, _ = self._ask(fixed)
        if ask is not None and shape_key(ask.cfg) != key:
            self.pending.append(ask)
            return None
        return ask

    def _reporter(self, trial: optuna.Trial, epochs: int):
        """The plain objective's reporter, with median and percentile pruning
        decided from one read of the completed trials per tell (their
        decision reads nothing else)."""
        prune = None
        if self.spec.pruner.name in ("median", "percentile"):
            def prune() -> bool:
                # The values this trial reported (kept by optuna.Trial.report).
                values = trial._cached_frozen_trial.intermediate_values
                frozen = types.SimpleNamespace(last_step=max(values),
                                               intermediate_values=values)
                return bool(self.study.pruner.prune(self._completed(), frozen))

        return self.objective.reporter(trial, epochs, prune)

    @contextlib.contextmanager
    def _heartbeats(self):
        """A thread recording the heartbeat of every running trial this
        driver holds each ``heartbeat.interval`` seconds (what Optuna's thread
        does for ``study.optimize``), however long an epoch or a compile
        takes: without it, a slow population epoch would let the next count
        (``fail_stale_trials``) fail and re-queue live members."""
        if not self.heartbeat:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.spec.heartbeat.interval):
                # Members training, and trials asked that wait for a group.
                trials = [live.trial for live in list(self.live.values())] + \
                    [ask.trial for ask in list(self.pending) + list(self.opening)]
                for trial in trials:
                    with contextlib.suppress(Exception):   # a trial that just ended
                        self.study._storage.record_heartbeat(trial._trial_id)

        thread = threading.Thread(target=beat, name="jaxdl-population-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _completed(self) -> _CompletedView:
        """The study's completed trials, read again after each tell here
        and at least every second (other workers')."""
        now = time.monotonic()
        view = self._view
        if view is None or view.tells != self._tells or now - view.read_at > 1.0:
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            view = self._view = _CompletedView(self.study.direction, trials, self._tells, now)
        return view

    def _done(self, m: pop_lib.Member, state: Any, seconds: float, shape: _Shape) -> None:
        compile_s = shape.compile_seconds - shape.charged
        shape.charged += compile_s
        self._finish(m.tag, m.config, m.book, state, shape.job, compile_s)

    def _finish(self, live: _Live, cfg: Config, book: Book, state: Any, job: Any,
                compile_s: float) -> None:
        """Close a member's run (test metrics, artifacts, summary) and tell
        the study its value, or that it was pruned."""
        trial = live.trial
        self.live.pop(trial.number, None)
        result = types.SimpleNamespace(state=state, best_state=book.best_state, loop=book.loop,
                                       status=book.status, reason=book.reason, warnings=[])
        population = {"size": live.slot_size, "group": live.group}
        try:
            summary = experiment.close_run(
                cfg, job, live.opened, result, compile_seconds=compile_s, t_start=live.t0,
                log=self._log, extra={"population": population}).summary
        except Exception as e:  # noqa: BLE001 - recorded on the trial
            self._fail(trial, e)
            return
        split = self.spec.metric.partition("_")[0]
        attrs = {"status": summary["status"], "reason": summary.get("reason"),
                 "epochs": summary["epochs"], "best_epoch": summary.get("best_epoch"),
                 "final": summary["final"].get(split, {}),
                 "compile_seconds": summary["compile_seconds"],
                 "train_seconds": summary["train_seconds"],
                 "wall_seconds": summary["wall_seconds"], "population": population}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        status = summary["status"]
        value = trial_value(summary, self.spec.metric, self.spec.objective.value)
        if status in ("diverged", "stopped") or not math.isfinite(value):
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, value)
        self._after_tell(trial)

    def _fail(self, trial: optuna.Trial, e: BaseException) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            self.study.tell(trial, state=TrialState.FAIL)
        self.live.pop(trial.number, None)
        self.opening[:] = [a for a in self.opening if a.trial.number != trial.number]
        self._after_tell(trial)

    def _after_tell(self, trial: optuna.Trial) -> None:
        self._tells += 1
        frozen = self.study._storage.get_trial(trial._trial_id)
        self.objective.cleanup(self.study, frozen)
        if self.on_trial is not None:
            self.on_trial(self.study, frozen)

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)

    # ------------------------------------------------------------------ run

    def _shape(self, cfg: Config) -> _Shape:
        key = shape_key(cfg)
        shape = self.shapes.get(key)
        if shape is None:
            while len(self.shapes) >= 8:          # keep the 8 most recent shapes' programs
                self.shapes.popitem(last=False)
            # Masks are compiled in only where a trial can draw them.
            dropout = cfg.model.dropout > 0 or any(p.key == "model.dropout"
                                                   for p in self.spec.space)
            shape = self.shapes[key] = _Shape(cfg, dropout)
        self.shapes.move_to_end(key)
        return shape

    def run(self) -> str | None:
        """Run groups until the budget is met; returns why it stopped (None:
        ``auto`` chose one trial at a time after running the first trial
        plainly; the plain loop goes on)."""
        try:
            with self._heartbeats():
                return self._run()
        except BaseException:
            self._interrupt()
            raise

    def _run(self) -> str | None:
        said_wait = False
        while True:
            if self.pending:
                opener, why, wait = self.pending.pop(0), None, False
            else:
                opener, why, wait = self._ask(None)
            if why is not None:
                return why
            if opener is None:
                if not said_wait:
                    said_wait = True
                    self.note("waiting for running trial(s) elsewhere to finish the budget")
                time.sleep(_POLL_SECONDS)
                continue
            said_wait = False
            self.opening.append(opener)
            if opener.cfg.algorithm in config_lib.RL_ALGORITHMS:
                self._run_agents_group(opener)
                continue
            try:
                shape = self._shape(opener.cfg)
            except Exception as e:  # noqa: BLE001 - recorded on the trial
                self._fail(opener.trial, e)
                if isinstance(e, DataError):
                    raise
                continue
            if self.auto and self.probe is None:
                job = shape.job
                sizes = [k for k in (1, 2, 4, 8, 16, 32) if k <= AUTO_MAX]
                trials = None if self.budget is None else self._remaining()
                self.probe = choose_size(
                    job, experiment.new_state(opener.cfg, job.engine, job.dataset), sizes,
                    dropout=shape.dropout, trials=trials, shapes=distinct_shapes(self.spec),
                    group_trials=self.spec.group_trials)
                self.size = self.probe.size
                if self.after_probe is not None:
                    self.after_probe()
                for k, pop in self.probe.pops.items():   # compiled: a smaller last group reuses one
                    shape.pops.setdefault(k, pop)
                self.note(f"population auto: {self.size} (member-epochs/s "
                          + ", ".join(f"{k}: {_rate(v)}" for k, v in self.probe.rates.items())
                          + "; modelled seconds per trial "
                          + ", ".join(f"{k}: {v:.3g}" for k, v in
                                      self.probe.trial_seconds.items()) + ")")
                if self.size == 1:
                    self._run_plain(opener)
                    return None
            self._run_group(opener, shape, self.spec.group_trials or 2 * self.size)

    def _run_plain(self, ask: _Ask) -> None:
        """One asked trial through the plain objective (``auto`` chose 1)."""
        trial = ask.trial
        self.pending.append(ask)   # re-queued if interrupted
        self._opened(ask)
        try:
            try:
                value = self.objective(trial)
            except optuna.TrialPruned:
                value = None
        except Exception as e:  # noqa: BLE001 - the objective recorded the error
            self.pending.remove(ask)
            self._fail(trial, e)
            if isinstance(e, DataError):
                raise
            return
        self.pending.remove(ask)
        if value is None:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, value)
        self._after_tell(trial)

    def _run_group(self, opener: _Ask, shape: _Shape, quota: int) -> None:
        key = shape_key(opener.cfg)
        size = min(self.size, self._remaining())
        pop = shape.population(size)
        self._compiled.add(key)
        group = len(self.groups)
        params = opener.trial.params
        fixed = {k: params[k] for k in self.fixed_keys if k in params}
        record = {"group": group, "size": pop.size, "shape": {k: params.get(k) for k in fixed},
                  "trials": 1}
        self.groups.append(record)
        queue = [opener]
        closed = [False]

        def source() -> pop_lib.Member | None:
            while True:
                if queue:
                    ask = queue.pop(0)
                elif closed[0] or record["trials"] >= quota:
                    return None
                else:
                    ask = self._ask_same_shape(fixed, key)
                    if ask is None:
                        closed[0] = True
                        return None
                    record["trials"] += 1
                m = self._start(ask, shape, group, pop.size)
                if m is not None:
                    return m

        job = shape.job
        template = experiment.new_state(opener.cfg, job.engine, job.dataset)
        slots, members = pop.slot_epochs, pop.member_epochs
        try:
            pop_lib.run(pop, job._x, job._y, job._evals.get("val"), source,
                        lambda m, state, seconds: self._done(m, state, seconds, shape),
                        template=template)
        finally:
            record["slot_epochs"] = pop.slot_epochs - slots
            record["member_epochs"] = pop.member_epochs - members

    def _run_agents_group(self, opener: _Ask) -> None:
        """PPO / DQN: a group of up to ``size`` trials of one shape trained in
        lockstep (:func:`jaxdl.population.run_agents`); a member that stops
        early leaves its rows computing, unread, until the group ends (chunks
        run in step, so its slot is not refilled). A re-queued trial resumes
        its checkpoint plainly, after the group."""
        from jaxdl import rl_run

        key = shape_key(opener.cfg)
        params = opener.trial.params
        fixed = {k: params[k] for k in self.fixed_keys if k in params}
        asks = [opener]
        while len(asks) < self.size:
            ask = self._ask_same_shape(fixed, key)
            if ask is None:
                break
            asks.append(ask)
        group = len(self.groups)
        self.groups.append({"group": group, "size": len(asks), "trials": len(asks),
                            "shape": {k: params.get(k) for k in fixed}})
        self._compiled.add(key)
        members, resumed = [], []
        for ask in asks:
            trial, cfg = ask.trial, ask.cfg
            t0 = time.perf_counter()
            try:
                run_dir, resume = self.objective.place(trial, cfg)
                if resume:
                    resumed.append(ask)
                    continue
                job = rl_run.RLJob(cfg, log=self._log)
                opened, book = self._open(ask, job, run_dir, False)
            except Exception as e:  # noqa: BLE001 - recorded on the trial
                self._fail(trial, e)
                continue
            live = self.live[trial.number] = _Live(trial, opened, t0, group, len(asks))
            self._opened(ask)
            members.append((live, job, book))
        if members:
            jobs = [job for _, job, _ in members]
            program = rl_run.build_program(
                jobs[0].cfg.replace({"rl.seeds": len(jobs) * jobs[0].cfg.rl.seeds}))
            charged = [program.compile_seconds + jobs[0].compile_seconds]

            def done(i: int, state: Any, seconds: float) -> None:
                live, job, book = members[i]
                total = program.compile_seconds + job.compile_seconds
                self._finish(live, job.cfg, book, state, job, total - charged[0])
                charged[0] = total

            pop_lib.run_agents(jobs, [book for _, _, book in members],
                               [live.opened.state for live, _, _ in members], done)
        for ask in resumed:
            self._run_plain(ask)

    def _interrupt(self) -> None:
        """Ctrl-C or an error mid-group: each running member's trial (and each
        asked one not started, the opener of a group being set up included)
        is failed as interrupted and re-queued, so the next run resumes it
        from its latest checkpoint."""
        for live in list(self.live.values()):
            if live.opened.checkpointer is not None:
                with contextlib.suppress(Exception):
                    live.opened.checkpointer.close()
        trials = {t.number: t for t in [live.trial for live in self.live.values()]
                  + [ask.trial for ask in self.pending + self.opening]}
        for trial in trials.values():
            with contextlib.suppress(Exception):
                trial.set_user_attr("status", "interrupted")
                self.study.tell(trial, state=TrialState.FAIL)
                requeue(self.study, self.study._storage.get_trial(trial._trial_id))
        self.live.clear()
        self.pending.clear()
        self.opening.clear()

    @property
    def slot_use(self) -> tuple[int, int]:
        """``(slot-epochs, member-epochs)`` of the supervised groups: an
        epoch of a population of K computes K slots, the member-epochs are
        those of slots holding a training member (the rest idle while a
        group's last members finish)."""
        return (sum(g.get("slot_epochs", 0) for g in self.groups),
                sum(g.get("member_epochs", 0) for g in self.groups))

    @property
    def compiled_shapes(self) -> int:
        """Distinct shapes whose population programs this sweep compiled."""
        return len(self._compiled)
