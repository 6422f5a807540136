"""Sweep specs: what to search, how, and for how long.

A sweep file (``sweeps/*.yaml``)::

    name: mnist_mlp                       # the study name (--study overrides)
    base: ../experiments/mnist_mlp.yaml   # path relative to this file, or an inline config
    set: {train.epochs: 8}                # fixed overrides of the base, dotted keys
    space:                                # dotted config key -> distribution
      optim.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.depth: {type: int, low: 1, high: 3}
    objective: {metric: val_accuracy}     # direction auto: maximize accuracy, minimize loss
    sampler: {name: tpe, seed: 0}
    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 2}
    budget: {trials: 20}
    storage: null                         # null: SQLite file in the study directory
    study_dir: null                       # null: studies/<name>

Loading is as strict as experiment configs: unknown keys, empty ranges, log
scales with non-positive bounds, dotted keys the base config lacks, and values
the base config would reject all end in one :class:`~jaxdl.errors.ConfigError`
naming the file and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml

from jaxdl import config as config_lib
from jaxdl.config import (
    Config,
    _build,
    _check,
    _field,
    _Section,
    _set_dotted,
    _unknown_key,
    monitor_direction,
    read_yaml,
)
from jaxdl.errors import ConfigError
from jaxdl.metrics import redact
from jaxdl.sweep import space as space_lib
from jaxdl.sweep.space import Param

__all__ = ["BudgetConfig", "HeartbeatConfig", "ObjectiveConfig", "PrunerConfig",
           "SamplerConfig", "SweepSpec", "from_dict", "load"]

SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
# Keys a search space may not touch: they are the sweep's own business.
_SET_BY_SWEEP = "set by the sweep itself and cannot be searched"
_RESERVED = {
    **dict.fromkeys(("name", "train.monitor", "train.mode", "train.progress", "data.dir"),
                    _SET_BY_SWEEP),
    "algorithm": "trials of one study train the same algorithm; set it in base",
    "gan.eval_samples": "sets how the objective is estimated, which trials must share; set "
                        "it in base or set",
    **dict.fromkeys(("gan.grid_every", "gan.grid_size"),
                    "changes only the sample grids, no trained number; set it in base or set"),
    **dict.fromkeys(("rl.eval_episodes", "rl.test_episodes"),
                    "sets how the objective is estimated, which trials must share; set it in "
                    "base or set"),
    "rl.seeds": "a trial's value is the mean over its agents, which trials must share; set it "
                "in base or set",
}


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig(_Section):
    """What the study optimizes."""

    _key: ClassVar[str] = "objective."

    metric: str | None = _field(
        None, "metric to optimize, <split>_<metric> with split val or train "
        "(null: the base config's train.monitor)")
    direction: str = _field("auto", "maximize | minimize | auto (maximize accuracy, an RL "
                            "return and a GAN's confident / class_entropy, minimize losses and "
                            "frechet)",
                            choices=("auto", "maximize", "minimize"))
    value: str = _field("best", "a trial's value: its best epoch or its last",
                        choices=("best", "last"))


@dataclasses.dataclass(frozen=True)
class SamplerConfig(_Section):
    """Optuna sampler."""

    _key: ClassVar[str] = "sampler."

    name: str = _field("tpe", "tpe | random | cmaes | grid | qmc", choices=SAMPLERS)
    seed: int | None = _field(0, "sampler seed (worker k of a --workers run uses seed + k); "
                              "null: random", lo=0, hi=2**32 - 1)
    n_startup_trials: int = _field(10, "tpe, cmaes: random trials before the model is used",
                                   lo=0)
    multivariate: bool = _field(False, "tpe: model the parameters jointly")
    constant_liar: bool | None = _field(
        None, "tpe: avoid proposing what running trials already try "
        "(null: on with several workers)")
    qmc_type: str = _field("sobol", "qmc: sequence", choices=("sobol", "halton"))


@dataclasses.dataclass(frozen=True)
class PrunerConfig(_Section):
    """Optuna pruner, fed one value per epoch."""

    _key: ClassVar[str] = "pruner."

    name: str = _field("median", "median | percentile | successive_halving | hyperband | none",
                       choices=PRUNERS)
    n_startup_trials: int = _field(5, "median, percentile: finished trials before pruning",
                                   lo=0)
    n_warmup_steps: int = _field(1, "median, percentile: epochs before a trial can be pruned",
                                 lo=0)
    interval_steps: int = _field(1, "median, percentile: epochs between pruning checks", lo=1)
    percentile: float = _field(25.0, "percentile: keep trials above this percentile", lo=0.0,
                               hi=100.0)
    min_resource: int | None = _field(
        1, "successive_halving, hyperband: epochs before the first rung (null: auto)", lo=1)
    max_resource: int | None = _field(
        None, "hyperband: epochs of a full trial (null: the config's train.epochs)", lo=1)
    reduction_factor: int = _field(3, "successive_halving, hyperband: keep 1/factor per rung",
                                   lo=2)
    min_early_stopping_rate: int = _field(0, "successive_halving: rung offset", lo=0)


@dataclasses.dataclass(frozen=True)
class BudgetConfig(_Section):
    """When the study is done. Re-running continues until the budget is met."""

    _key: ClassVar[str] = "budget."

    trials: int | None = _field(
        20, "finished (complete or pruned) trials the study should hold (null: until timeout, "
        "or the whole grid)", lo=1)
    timeout: float | None = _field(
        None, "seconds this invocation may start new trials for (null: no limit)", lo=0.0,
        lo_open=True)
    max_failed: int | None = _field(
        None, "stop after this many failed trials in the study (null: as many as trials)",
        lo=1)


@dataclasses.dataclass(frozen=True)
class HeartbeatConfig(_Section):
    """Detects trials whose worker died (storages other than memory)."""

    _key: ClassVar[str] = "heartbeat."

    interval: int = _field(10, "seconds between a running trial's heartbeats", lo=1)
    grace: int | None = _field(None, "seconds without a heartbeat before a trial counts as "
                               "dead (null: 3 x interval)", lo=1)
    retries: int = _field(1, "times a dead worker's trial is re-queued (it resumes from its "
                          "latest checkpoint); after that it stays failed", lo=0)


_SECTIONS = {"objective": ObjectiveConfig, "sampler": SamplerConfig, "pruner": PrunerConfig,
             "budget": BudgetConfig, "heartbeat": HeartbeatConfig}
_BASE_KEYS = ("seed", "algorithm", "data", "model", "optim", "train", "checkpoint", "gan", "rl",
              "ppo", "dqn")
_TOP = ("name", "base", "set", "space", "objective", "sampler", "pruner", "budget", "storage",
        "study_dir", "workers", "keep_all", "heartbeat", "population")


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. Build with :func:`load` or :func:`from_dict`.

    Attributes:
      name: the Optuna study name.
      base: the base experiment, with ``set`` applied.
      space: the searched params, in file order.
      objective, sampler, pruner, budget, heartbeat: the sections above.
      storage: storage URL (see :func:`jaxdl.sweep.storage.resolve`); None =
        the SQLite file ``study.db`` in the study directory.
      study_dir: where trials' run directories, plots and the default storage
        live; None = ``studies/<name>``.
      workers: worker processes on this machine.
      keep_all: keep every trial's checkpoints (default: only the best trial's).
      population: trials of one shape trained side by side as one vmapped
        program (``jaxdl.sweep.population``): 1 (one trial at a time), an
        integer K, or ``auto`` (the size with the best measured throughput).
      group_trials: trials a shape group admits before the next group opens
        (None: 2 x population).
      source: the file the spec came from.
      base_source: the base config's file (or ``<inline>``).
    """

    name: str
    base: Config
    space: tuple[Param, ...]
    objective: ObjectiveConfig = ObjectiveConfig()
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    budget: BudgetConfig = BudgetConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    storage: str | None = None
    study_dir: str | None = None
    workers: int = 1
    keep_all: bool = False
    population: int | str = 1
    group_trials: int | None = None
    source: str = "<dict>"
    base_source: str = "<inline>"

    @property
    def metric(self) -> str:
        """The optimized metric, e.g. ``val_accuracy``."""
        return self.objective.metric or self.base.train.monitor

    @property
    def direction(self) -> str:
        """``maximize`` or ``minimize``."""
        if self.objective.direction != "auto":
            return self.objective.direction
        return "maximize" if monitor_direction(self.metric) == "max" else "minimize"

    @property
    def directory(self) -> Path:
        """The study directory."""
        return Path(self.study_dir) if self.study_dir else Path("studies") / self.name

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The base config with a trial's params applied and the monitored
        metric set to the objective (so a trial's best checkpoint is its best
        epoch by the objective).

        Raises:
          ConfigError: the params make an invalid config.
        """
        mode = "max" if self.direction == "maximize" else "min"
        return self.base.replace({**params, "train.monitor": self.metric, "train.mode": mode})

    def replace(self, overrides: Mapping[str, Any]) -> SweepSpec:
        """A new, validated spec with dotted keys replaced, e.g.
        ``{"budget.trials": 40, "storage": "journal", "sampler.seed": 1}``
        (what the ``jaxdl sweep`` options do). Keys of the base config
        (``train.epochs``, ``data.dir``, ...) change the base, as ``set:`` does."""
        tree = self.to_dict()
        problems = []
        for key, value in overrides.items():
            head, _, rest = key.partition(".")
            if head in _BASE_KEYS:   # a base config key, like an entry of `set:`
                problems += [f"{p}" for p in _set_dotted(tree["base"], key, value)]
            elif head not in _TOP:
                problems.append(_unknown_key(head, _TOP, key))
            elif rest:
                if head not in _SECTIONS:
                    problems.append(f"{key}: {head} is not a section")
                    continue
                tree.setdefault(head, {})[rest] = value
            else:
                tree[head] = value
        if problems:
            raise ConfigError(problems, "<sweep override>")
        spec = from_dict(tree, source=self.source, base_dir=None)
        return dataclasses.replace(spec, base_source=self.base_source)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the base inline, resolved)."""
        space = {}
        for p in self.space:
            if p.kind == "categorical":
                space[p.key] = {"type": p.kind,
                                "choices": [list(c) if isinstance(c, tuple) else c
                                            for c in p.choices]}
            else:
                d = {"type": p.kind, "low": p.low, "high": p.high}
                if p.log:
                    d["log"] = True
                if p.step is not None and not (p.kind == "int" and p.step == 1):
                    d["step"] = p.step
                space[p.key] = d
        out = {"name": self.name, "base": config_lib.to_dict(self.base), "space": space}
        for name in _SECTIONS:
            out[name] = config_lib.to_dict(getattr(self, name))
        out.update(storage=self.storage, study_dir=self.study_dir, workers=self.workers,
                   keep_all=self.keep_all)
        if self.group_trials is not None:
            out["population"] = {"size": self.population, "group_trials": self.group_trials}
        elif self.population != 1:
            out["population"] = self.population
        return out

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_dict` as plain JSON values (tuples as lists, anything
        else as text) with the storage password redacted: what is written to
        ``sweep.yaml`` and the study's attrs."""
        out = self.to_dict()
        if out["storage"]:
            out["storage"] = redact(out["storage"])
        return json.loads(json.dumps(out, default=str))

    def base_fingerprint(self) -> str:
        """Identity of what every trial shares (base config and objective):
        a study continued with a different one would mix incomparable trials."""
        blob = json.dumps({"base": config_lib.fingerprint(self.base), "metric": self.metric,
                           "direction": self.direction, "value": self.objective.value},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file.

    Args:
      path: the YAML sweep spec.
      overrides: dotted keys replaced after loading, e.g. ``{"budget.trials": 5}``.

    Raises:
      ConfigError: naming the file, the key and the problem.
    """
    path = Path(path)
    tree = read_yaml(path, "sweep file")
    spec = from_dict(tree, source=str(path), base_dir=path.parent)
    return spec.replace(overrides) if overrides else spec


def from_dict(tree: Any, source: str = "<dict>", base_dir: str | Path | None = ".") -> SweepSpec:
    """Build a :class:`SweepSpec` from nested mappings.

    Args:
      tree: the parsed sweep file.
      source: named in error messages.
      base_dir: where a relative ``base`` path is looked up.
    """
    if not isinstance(tree, Mapping):
        raise ConfigError(f"top level must be a mapping, got {type(tree).__name__}", source)
    problems: list[str] = []
    for key in tree:
        if key not in _TOP:
            problems.append(_unknown_key(key, _TOP))

    # The base experiment.
    base_tree = tree.get("base")
    base_source = "<inline>"
    base: Config | None = None
    if isinstance(base_tree, str):
        base_path = Path(base_tree)
        if base_dir is not None and not base_path.is_absolute():
            base_path = Path(base_dir) / base_path
        base_source = str(base_path)
        try:
            base_tree = yaml.safe_load(base_path.read_text())
        except OSError as e:
            problems.append(f"base: cannot read {base_path}: {e.strerror}")
            base_tree = None
        except UnicodeDecodeError as e:
            problems.append(f"base: {base_path} is not a UTF-8 text file ({e.reason} at byte "
                            f"{e.start})")
            base_tree = None
        except yaml.YAMLError as e:
            problems.append(f"base: {base_path} is not valid YAML: {e}")
            base_tree = None
    if base_tree is None and "base" not in tree:
        problems.append("base: missing; give the experiment config's path or an inline config")
    elif isinstance(base_tree, Mapping):
        base_tree = json.loads(json.dumps(base_tree))   # a private copy to set keys in
        fixed = tree.get("set") or {}
        if not isinstance(fixed, Mapping):
            problems.append(f"set: expected a mapping of dotted keys to values, got {fixed!r}")
            fixed = {}
        for key, value in fixed.items():
            problems += [f"set.{p}" for p in _set_dotted(base_tree, str(key), value)]
        try:
            base = config_lib.from_dict(base_tree, source=base_source)
        except ConfigError as e:
            problems += [f"base ({base_source}): {p}" for p in e.problems]
    elif base_tree is not None:
        problems.append(f"base: expected a path or a mapping, got {base_tree!r}")

    # Sections.
    sections = {}
    for name, cls in _SECTIONS.items():
        sub = tree.get(name)
        construct = _build(cls, {} if sub is None else sub, f"{name}.", problems)
        try:
            obj = construct()
        except ConfigError as e:
            problems += e.problems
            obj = cls()
        problems += _check(obj, f"{name}.")
        sections[name] = obj

    # Scalars.
    name = tree.get("name", base.name if base is not None else None)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or \
            name.strip() != name:
        problems.append(f"name: must be a non-empty study name without slashes, got {name!r}")
    storage = tree.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        problems.append(f"storage: expected a URL string or null, got {storage!r}")
    study_dir = tree.get("study_dir")
    if study_dir is not None and (not isinstance(study_dir, str) or not study_dir):
        problems.append(f"study_dir: expected a path string or null, got {study_dir!r}")
    workers = tree.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        problems.append(f"workers: must be an integer >= 1, got {workers!r}")
    keep_all = tree.get("keep_all", False)
    if not isinstance(keep_all, bool):
        problems.append(f"keep_all: expected true or false, got {keep_all!r}")
    population, group_trials = _population(tree.get("population", 1), problems)

    # The search space, checked against the base config.
    params: list[Param] = []
    space_tree = tree.get("space")
    if not isinstance(space_tree, Mapping) or not space_tree:
        problems.append("space: must map at least one dotted config key to a distribution, e.g. "
                        "optim.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    else:
        for key, sub in space_tree.items():
            key = str(key)
            if key in _RESERVED:
                problems.append(f"space.{key}: {_RESERVED[key]}")
                continue
            missing = _set_dotted({}, key, 0)
            if missing and "no such key" in missing[0]:
                problems += [f"space.{m}" for m in missing]
                continue
            param, more = space_lib.parse(key, sub)
            problems += more
            if param is not None:
                params.append(param)
    if problems:
        raise ConfigError(problems, source)

    spec = SweepSpec(name=name, base=base, space=tuple(params), storage=storage,
                     study_dir=study_dir, workers=workers, keep_all=keep_all,
                     population=population, group_trials=group_trials, source=source,
                     base_source=base_source, **sections)
    problems += _cross_check(spec)
    if problems:
        raise ConfigError(problems, source)
    return spec


def _population(value: Any, problems: list[str]) -> tuple[int | str, int | None]:
    """``population: 8``, ``auto`` or ``{size: 8, group_trials: 16}``."""
    group = None
    if isinstance(value, Mapping):
        for key in value:
            if key not in ("size", "group_trials"):
                problems.append(_unknown_key(key, ("size", "group_trials"), f"population.{key}"))
        group = value.get("group_trials")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 1):
            problems.append(f"population.group_trials: must be an integer >= 1 or null, got "
                            f"{group!r}")
            group = None
        value = value.get("size", 1)
    if value == "auto":
        return value, group
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"population: must be an integer >= 1 or auto, got {value!r}")
        return 1, None
    return value, group


def _cross_check(spec: SweepSpec) -> list[str]:
    """Checks that need the base config: the objective metric, each param's
    extreme values, the sampler's needs."""
    problems = []
    try:
        spec.trial_config({})
    except ConfigError as e:
        problems += [f"objective: {p}" for p in e.problems]
        return problems
    split = spec.metric.partition("_")[0]
    if split == "test":
        problems.append("objective.metric: never tune on the test split; use val_*")
    for p in spec.space:
        for value in p.values():
            try:
                spec.trial_config({p.key: value})
            except ConfigError as e:
                problems += [f"space.{p.key}: value {value!r} makes an invalid config: {q}"
                             for q in e.problems]
                break
        field_type = type(spec.base.get(p.key))
        if p.kind == "float" and field_type is int:
            problems.append(f"space.{p.key}: is an integer setting; use type: int")
    if spec.sampler.name == "grid":
        problems += space_lib.grid(spec.space)[1]
    elif spec.budget.trials is None and spec.budget.timeout is None:
        problems.append("budget: set trials or timeout (only a grid sampler ends by itself)")
    hb = spec.heartbeat
    if hb.grace is not None and hb.grace < 2 * hb.interval:
        problems.append(f"heartbeat.grace: {hb.grace} s must be at least 2 x interval "
                        f"({2 * hb.interval} s), or live trials would count as dead")
    if spec.sampler.name == "cmaes" and any(p.kind == "categorical" for p in spec.space):
        problems.append("sampler.name: cmaes cannot sample categorical params "
                        f"({', '.join(p.key for p in spec.space if p.kind == 'categorical')}); "
                        "use tpe, or int/float distributions")
    if spec.population != 1:
        if spec.base.algorithm == "gan":
            problems.append("population: trains supervised models and PPO / DQN agents; this "
                            "sweep's algorithm is gan (use population: 1)")
        elif spec.base.algorithm != "supervised" and spec.population == "auto":
            problems.append(f"population: auto measures supervised programs; give a "
                            f"{spec.base.algorithm} sweep a size (e.g. population: 4)")
        if spec.sampler.name == "grid":
            problems.append("population: fills a shape group's slots with trials the sampler "
                            "proposes; a grid sampler cannot (use population: 1)")
    if spec.pruner.name == "hyperband" and spec.pruner.max_resource is not None and \
            spec.pruner.max_resource > spec.base.train.epochs:
        problems.append(f"pruner.max_resource: {spec.pruner.max_resource} is more than the "
                        f"{spec.base.train.epochs} epochs a trial trains")
    return problems
