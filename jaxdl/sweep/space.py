"""Search spaces: dotted config keys mapped to distributions, and their
translation into Optuna's ``trial.suggest_*`` calls.

In a sweep file::

    space:
      optim.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.depth:         {type: int, low: 1, high: 3}
      model.width:         {type: int, low: 128, high: 1024, step: 128}
      train.batch_size:    {type: categorical, choices: [64, 128, 256]}
      model.channels:      {type: categorical, choices: [[16, 32], [32, 64]]}

Optuna's parameter names are the dotted keys, so a trial's ``params`` can be
handed straight to :meth:`jaxdl.config.Config.replace`. Categorical choices
that are lists (tuple-valued config fields) are given to Optuna as JSON
strings and decoded back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

__all__ = ["Param", "decode_params", "distributions", "grid", "parse", "short_names", "suggest"]

KINDS = ("float", "int", "categorical")
_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config value.

    Attributes:
      key: the dotted config key (also Optuna's parameter name).
      kind: ``float``, ``int`` or ``categorical``.
      low, high: inclusive bounds (float and int).
      log: sample on a log scale (bounds must be positive).
      step: discretisation (int: default 1; float: default none).
      choices: the candidate values (categorical).
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def values(self) -> list[Any]:
        """The values a config must accept: the bounds, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step is not None else ""
        return f"{self.kind} in [{self.low}, {self.high}]{scale}{step}"


def _number(v: Any, integer: bool) -> bool:
    if isinstance(v, bool):
        return False
    if integer:
        return isinstance(v, int)
    return isinstance(v, (int, float)) and math.isfinite(v)


def _float(v: Any) -> Any:
    # PyYAML reads "1e-4" (no dot) as a string.
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def parse(key: str, tree: Any) -> tuple[Param | None, list[str]]:
    """One ``space`` entry to a :class:`Param`; problems instead of raising.

    Args:
      key: the dotted config key.
      tree: its mapping from the sweep file, e.g. ``{type: int, low: 1, high: 3}``.

    Returns:
      ``(param, problems)``; ``param`` is None when there are problems.
    """
    where = f"space.{key}"
    if not isinstance(tree, Mapping):
        return None, [f"{where}: expected a mapping like {{type: float, low: 1e-4, high: 1e-2, "
                      f"log: true}}, got {tree!r}"]
    kind = tree.get("type")
    if kind not in KINDS:
        return None, [f"{where}.type: must be one of {', '.join(KINDS)}, got {kind!r}"]
    problems = [f"{where}.{k}: unknown key for a {kind} distribution; valid keys: "
                f"{', '.join(_KEYS[kind])}" for k in tree if k not in _KEYS[kind]]
    if kind == "categorical":
        choices = tree.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: must be a non-empty list, got {choices!r}")
            return None, problems
        seen = []
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str, list))):
                problems.append(f"{where}.choices: {c!r} is not a number, string, bool, null "
                                "or list")
            elif c in seen:
                problems.append(f"{where}.choices: {c!r} is listed twice")
            seen.append(c)
        choices = tuple(tuple(c) if isinstance(c, list) else c for c in choices)
        return (None if problems else Param(key, kind, choices=choices)), problems

    integer = kind == "int"
    low, high = _float(tree.get("low")), _float(tree.get("high"))
    log = tree.get("log", False)
    step = _float(tree.get("step"))
    for name, v in (("low", low), ("high", high)):
        if not _number(v, integer):
            problems.append(f"{where}.{name}: expected {'an integer' if integer else 'a number'}, "
                            f"got {v!r}")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}")
        log = False
    if step is not None and not (_number(step, integer) and step > 0):
        problems.append(f"{where}.step: must be a positive {'integer' if integer else 'number'}, "
                        f"got {step!r}")
        step = None
    if problems:
        return None, problems
    if low > high:
        problems.append(f"{where}: empty range, low {low} > high {high}")
    elif low == high:
        problems.append(f"{where}: low == high == {low}; a fixed value belongs under `set:`")
    if log and low <= 0:
        problems.append(f"{where}: log scale needs low > 0, got low {low}")
    if log and step is not None and not (integer and step == 1):
        problems.append(f"{where}: step and log cannot be combined (Optuna samples either)")
    ratio = (high - low) / step if step is not None else 0.0
    if step is not None and not problems and abs(ratio - round(ratio)) > 1e-6:
        problems.append(f"{where}: step {step} does not divide high - low = {high - low}")
    if problems:
        return None, problems
    if integer:
        step = 1 if step is None else step
        if log:
            step = 1
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    return Param(key, kind, low=low, high=high, log=log, step=step), []


def _encode(choice: Any) -> Any:
    return json.dumps(list(choice)) if isinstance(choice, tuple) else choice


def _decode(value: Any, param: Param) -> Any:
    if isinstance(value, str) and any(isinstance(c, tuple) for c in param.choices):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return tuple(decoded) if isinstance(decoded, list) else decoded
    return value


def suggest(trial: optuna.Trial, space: Sequence[Param]) -> dict[str, Any]:
    """Ask ``trial`` for a value of each param.

    Returns:
      ``{dotted key: value}``, ready for :meth:`Config.replace`.
    """
    out = {}
    for p in space:
        if p.kind == "float":
            out[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log, step=p.step)
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.key, p.low, p.high, log=p.log, step=p.step)
        else:
            value = trial.suggest_categorical(p.key, [_encode(c) for c in p.choices])
            out[p.key] = _decode(value, p)
    return out


def decode_params(params: Mapping[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """A finished trial's ``params`` with list-valued choices decoded."""
    by_key = {p.key: p for p in space}
    return {k: _decode(v, by_key[k]) if k in by_key else v for k, v in params.items()}


def distributions(space: Sequence[Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distributions ``suggest`` draws from (for ``study.add_trial``)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in space:
        if p.kind == "float":
            out[p.key] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log,
                                                                step=p.step)
        elif p.kind == "int":
            out[p.key] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log,
                                                              step=p.step)
        else:
            out[p.key] = optuna.distributions.CategoricalDistribution(
                [_encode(c) for c in p.choices])
    return out


def grid(space: Sequence[Param]) -> tuple[dict[str, list[Any]], list[str]]:
    """The finite grid of each param for Optuna's ``GridSampler``.

    Returns:
      ``(search_space, problems)``: a float param without ``step`` or a log
      int param has no grid.
    """
    out, problems = {}, []
    for p in space:
        if p.kind == "categorical":
            out[p.key] = [_encode(c) for c in p.choices]
        elif p.log or (p.kind == "float" and p.step is None):
            problems.append(f"space.{p.key}: the grid sampler needs a finite set of values: "
                            "give a step (without log) or use a categorical")
        else:
            n = int(round((p.high - p.low) / p.step)) + 1
            vals = [p.low + i * p.step for i in range(n)]
            out[p.key] = [int(v) for v in vals] if p.kind == "int" else vals
    return out, problems


def short_names(keys: Sequence[str], abbreviations: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """Display names of dotted keys: the last part (through
    ``abbreviations``), with the part before it kept where two keys would
    share a name (``gan.g_optim.learning_rate`` -> ``g_optim.learning_rate``
    beside ``gan.d_optim.learning_rate``)."""
    abbreviations = abbreviations or {}
    short = {k: abbreviations.get(k.rsplit(".", 1)[-1], k.rsplit(".", 1)[-1]) for k in keys}
    names = list(short.values())
    return {k: f"{k.split('.')[-2]}.{n}" if names.count(n) > 1 and "." in k else n
            for k, n in short.items()}
