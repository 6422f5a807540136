"""Transfer learning: start from a pretrained run, freeze or fine-tune parts.

A run starts from another run's checkpoint with ``init_from: RUN_DIR`` in its
config (``jaxdl train CONFIG --init-from RUN_DIR``). The ``transfer``
section says how, in the three ways researchers use:

* **feature extractor**: ``freeze: ["Conv2D_*"]`` — the matching parameters
  get no updates (they stay bit-identical) and the optimizer keeps no state
  for them (no Adam moments: ``optax.MaskedNode`` in their place);
* **fine-tuning**: everything trains; ``pretrained_lr`` scales the learning
  rate of the pretrained body, every parameter outside the output layer and
  the ``fresh`` patterns (e.g. 0.1: the body moves ten times slower than
  the head) and ``lr_groups`` sets a multiplier per
  name pattern (``["Conv2D_0/*=0.01", "Dense_*=0.5"]``);
* **initialisation only**: ``init_from`` alone.

Parameters are named by their path in the Flax tree, ``/``-joined without
the ``params`` collection: ``Conv2D_0/kernel``, ``Dense_1/bias``, ``head/kernel``
(the recurrent models), ``layer0/ih/kernel``. A pattern is an ``fnmatch``
glob matched against a parameter's path and against each of its parent
modules' paths, so ``Conv2D_*`` selects every leaf of every conv layer. A
pattern that matches nothing is an error that lists the names there are.

The output layer (``transfer.head``): ``auto`` loads it when its shape equals
the checkpoint's and initialises it fresh when it differs (another class
count); ``fresh`` always initialises it fresh, ``load`` always loads it. Any
other parameter whose shape differs from the checkpoint's is an error that
names it and both shapes; ``fresh: [patterns]`` initialises more layers
fresh on purpose.

Freezing and learning-rate groups also work without ``init_from`` (e.g.
training a head on frozen random features).

Batch-norm statistics of a frozen module stay as loaded too; its
normalisation in a training step still uses the batch's own statistics
(the module runs in training mode).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from jaxdl.errors import CheckpointError, ConfigError

__all__ = ["ParamGroups", "Pretrained", "head_name", "load_pretrained", "param_groups",
           "param_paths", "parse_lr_groups", "plan", "read_pretrained"]


# ---------------------------------------------------------------- names


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_paths(tree: Any) -> list[str]:
    """The ``/``-joined path of every leaf of a parameter tree, in tree order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ["/".join(_key_name(k) for k in path) for path, _ in leaves]


def _modules(paths: Iterable[str]) -> list[str]:
    """Every module path above the leaves (``Conv2D_0``, ``layer0/ih``), sorted."""
    out = set()
    for p in paths:
        parts = p.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(out)


def _matches(pattern: str, path: str) -> bool:
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern)
               for i in range(1, len(parts) + 1))


def select(patterns: Sequence[str], paths: Sequence[str], key: str) -> set[str]:
    """The paths any of ``patterns`` matches.

    Raises:
      ConfigError: a pattern matches no parameter (the message lists the
        modules and parameters there are).
    """
    chosen: set[str] = set()
    for pattern in patterns:
        hit = {p for p in paths if _matches(pattern, p)}
        if not hit:
            raise ConfigError(
                f"{key}: {pattern!r} matches no parameter; modules: "
                f"{', '.join(_modules(paths))}; parameters: {', '.join(paths)}", "<config>")
        chosen |= hit
    return chosen


def head_name(params: Mapping[str, Any]) -> str:
    """The output layer's module name: ``head`` (recurrent models) or the
    highest-numbered top-level ``Dense_N`` (MLP, CNN)."""
    if "head" in params:
        return "head"
    dense = [int(m.group(1)) for name in params if (m := re.fullmatch(r"Dense_(\d+)", name))]
    if not dense:
        raise ValueError(f"no output layer among {sorted(params)}")
    return f"Dense_{max(dense)}"


_LR_GROUP = re.compile(r"^\s*(?P<pattern>[^=]+?)\s*=\s*(?P<scale>[^=]+?)\s*$")


def parse_lr_groups(items: Sequence[str]) -> list[tuple[str, float]]:
    """``["Conv2D_*=0.1", ...]`` -> ``[("Conv2D_*", 0.1), ...]``.

    Raises:
      ConfigError: an item is not ``PATTERN=MULTIPLIER`` with a multiplier > 0.
    """
    out, problems = [], []
    for item in items:
        m = _LR_GROUP.match(item)
        scale = None
        if m:
            try:
                scale = float(m.group("scale"))
            except ValueError:
                scale = None
        if scale is None or not np.isfinite(scale) or scale <= 0:
            problems.append(f"transfer.lr_groups: {item!r} is not PATTERN=MULTIPLIER with a "
                            "multiplier > 0 (e.g. 'Conv2D_*=0.1'; to stop a group, freeze it)")
            continue
        out.append((m.group("pattern"), scale))
    if problems:
        raise ConfigError(problems, "<config>")
    return out


# ---------------------------------------------------------------- groups


@dataclasses.dataclass(frozen=True)
class ParamGroups:
    """Which parameters train, and at which learning-rate multiplier.

    Static (hashable): it is part of the compiled program's identity.

    Attributes:
      paths: every parameter path, in tree order.
      frozen: paths that get no updates and no optimizer state.
      scales: ``(path, multiplier)`` for trainable paths whose multiplier is
        not 1.
    """

    paths: tuple[str, ...]
    frozen: frozenset[str] = frozenset()
    scales: tuple[tuple[str, float], ...] = ()

    def _check(self, tree: Any) -> list[str]:
        paths = param_paths(tree)
        if tuple(paths) != self.paths:
            raise ValueError(f"parameter tree {paths} is not the one these groups were made "
                             f"for ({list(self.paths)})")
        return paths

    def trainable(self, tree: Any) -> Any:
        """``tree`` (params, grads or updates) with the frozen leaves replaced
        by ``optax.MaskedNode()``: what the optimizer sees."""
        if not self.frozen:
            return tree
        flat, treedef = jax.tree_util.tree_flatten(tree)
        paths = self._check(tree)
        return treedef.unflatten([optax.MaskedNode() if p in self.frozen else leaf
                                  for p, leaf in zip(paths, flat, strict=True)])

    def scale(self, updates: Any) -> Any:
        """The optimizer's updates (from :meth:`trainable` trees) times each
        leaf's multiplier: every optimizer here ends in ``-lr * direction``,
        so this is exactly a per-group learning rate."""
        if not self.scales:
            return updates
        factor = dict(self.scales)
        flat, treedef = jax.tree_util.tree_flatten(
            updates, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
        return treedef.unflatten([
            leaf if isinstance(leaf, optax.MaskedNode) or p not in factor
            else leaf * np.asarray(factor[p], leaf.dtype)
            for p, leaf in zip(self.paths, flat, strict=True)])

    def merge(self, updated: Any, old: Any) -> Any:
        """Params: the trainable leaves from ``updated`` (a :meth:`trainable`
        tree), the frozen ones from ``old``, untouched (bit-identical)."""
        if not self.frozen:
            return updated
        new_flat = jax.tree_util.tree_flatten(
            updated, is_leaf=lambda x: isinstance(x, optax.MaskedNode))[0]
        old_flat, treedef = jax.tree_util.tree_flatten(old)
        return treedef.unflatten([o if p in self.frozen else n
                                  for p, n, o in zip(self.paths, new_flat, old_flat, strict=True)])

    def keep_frozen_stats(self, new_stats: Any, old_stats: Any) -> Any:
        """Batch-norm statistics: those of frozen modules stay as they were."""
        if not self.frozen or not jax.tree_util.tree_leaves(old_stats):
            return new_stats
        frozen_modules = {p.rsplit("/", 1)[0] for p in self.frozen if "/" in p}
        paths = param_paths(old_stats)
        new_flat = jax.tree_util.tree_leaves(new_stats)
        old_flat, treedef = jax.tree_util.tree_flatten(old_stats)
        return treedef.unflatten([
            o if p.rsplit("/", 1)[0] in frozen_modules else n
            for p, n, o in zip(paths, new_flat, old_flat, strict=True)])

    def describe(self) -> dict[str, Any]:
        """A JSON summary for ``summary.json``."""
        return {"frozen": sorted(self.frozen), "lr_multipliers": dict(self.scales)}


def param_groups(transfer: Any, params: Any, *, pretrained: bool = False
                 ) -> ParamGroups | None:
    """The :class:`ParamGroups` a ``transfer`` config section asks for over
    ``params`` (arrays or shape structs), or None when every parameter
    trains at the base learning rate.

    Args:
      transfer: the config's ``transfer`` section.
      params: the model's parameter tree.
      pretrained: the run starts from ``init_from``: ``pretrained_lr``
        applies to the pretrained body, every parameter outside the output
        layer and the ``fresh`` patterns. (Decided from the config and the
        model alone, so a run resumes without its source run.)

    Raises:
      ConfigError: a pattern matches nothing, or nothing is left to train.
    """
    paths = param_paths(params)
    frozen = select(transfer.freeze, paths, "transfer.freeze")
    if frozen and len(frozen) == len(paths):
        raise ConfigError("transfer.freeze: every parameter is frozen, nothing would train; "
                          f"leave at least the head ({head_name(params)}) out", "<config>")
    factor: dict[str, float] = {}
    if pretrained and transfer.pretrained_lr != 1.0:
        head = head_name(params)
        fresh = select(transfer.fresh, paths, "transfer.fresh")
        factor = {p: transfer.pretrained_lr for p in paths
                  if p not in fresh and p.split("/", 1)[0] != head}
    for pattern, scale in reversed(parse_lr_groups(transfer.lr_groups)):
        for p in select([pattern], paths, "transfer.lr_groups"):
            factor[p] = scale   # earlier items win: applied last
    scales = tuple((p, float(factor[p])) for p in paths
                   if p in factor and p not in frozen and factor[p] != 1.0)
    if not frozen and not scales:
        return None
    return ParamGroups(tuple(paths), frozenset(frozen), scales)


# ---------------------------------------------------------------- loading


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Arrays read from a source run's checkpoint (numpy, host memory).

    Attributes:
      run_dir: the source run directory.
      epoch: the checkpoint's epoch.
      params, batch_stats: flat ``{path: array}``.
      model: the source run's ``model.name``.
    """

    run_dir: Path
    epoch: int
    params: dict[str, np.ndarray]
    batch_stats: dict[str, np.ndarray]
    model: str


_CACHE: dict[tuple, Pretrained] = {}


def read_pretrained(run_dir: str | Path, which: str = "best") -> Pretrained:
    """The params and batch statistics of a run's best (or latest)
    checkpoint, whatever model, optimizer or topology wrote it (read from
    the checkpoint's own metadata; no dataset is loaded). Cached per
    process while the checkpoint directory is unchanged (a sweep starts
    many trials from one run).

    Raises:
      CheckpointError: not a run directory, no checkpoint, unreadable.
      ConfigError: the run is not a supervised run.
    """
    from jaxdl import experiment
    from jaxdl.checkpoint import Checkpointer

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        where = "" if run_dir.is_absolute() else f"; relative to {Path.cwd()}"
        raise CheckpointError(f"init_from: {run_dir} is not a run directory (no config.yaml"
                              f"{where}): train the source run first, or point init_from at "
                              "its run directory")
    cfg = experiment.run_config(run_dir)
    if cfg.algorithm != "supervised":
        raise ConfigError(f"init_from: {run_dir} is a {cfg.algorithm} run; transfer reads "
                          "supervised runs", "<config>")
    ckpt_dir = experiment.checkpoint_dir(run_dir, which)
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in ckpt_dir.iterdir()))
    key = (str(ckpt_dir.resolve()), which, stamp)
    if key in _CACHE:
        return _CACHE[key]
    with Checkpointer(ckpt_dir, read_only=True) as ckpt:
        epoch = ckpt.best_epoch() if which == "best" else ckpt.latest_epoch()
        if epoch is None:
            raise CheckpointError(f"init_from: {ckpt_dir} holds no finished checkpoint")
        state = ckpt.restore_parts(epoch)
    flat = {}
    for part in ("params", "batch_stats"):
        tree = state.get(part) or {}
        flat[part] = {p: np.asarray(a) for p, a in
                      zip(param_paths(tree), jax.tree_util.tree_leaves(tree), strict=True)}
    out = Pretrained(run_dir, epoch, flat["params"], flat["batch_stats"], cfg.model.name)
    _CACHE.clear()
    _CACHE[key] = out
    return out


def plan(transfer: Any, source: Pretrained, params: Any) -> list[str]:
    """The parameter paths of ``params`` (arrays or shape structs) that
    load from ``source``; the others start fresh (the ``fresh`` patterns,
    and the output layer as ``transfer.head`` says).

    Raises:
      ConfigError: a shape differs outside the fresh layers (naming the
        parameter and both shapes), a parameter is missing on either side,
        or a ``fresh`` pattern matches nothing.
    """
    paths = param_paths(params)
    head = head_name(params)
    fresh = select(transfer.fresh, paths, "transfer.fresh")
    in_head = {p for p in paths if p.split("/", 1)[0] == head}
    shapes = {p: tuple(np.shape(a))
              for p, a in zip(paths, jax.tree_util.tree_leaves(params), strict=True)}
    if transfer.head == "fresh":
        fresh |= in_head
    elif transfer.head == "auto" and any(
            p in source.params and source.params[p].shape != shapes[p] for p in in_head):
        fresh |= in_head
    where = f"init_from {source.run_dir} (a {source.model} run, epoch {source.epoch})"
    problems = []
    for p in paths:
        if p in fresh:
            continue
        if p not in source.params:
            problems.append(f"{p}: not in the checkpoint (it has "
                            f"{', '.join(_modules(source.params)) or 'nothing'}); list it in "
                            "transfer.fresh to initialise it fresh")
        elif source.params[p].shape != shapes[p]:
            hint = ("transfer.head: auto (or fresh) initialises the output layer fresh"
                    if p in in_head else "list it in transfer.fresh to initialise it fresh")
            problems.append(f"{p}: shape {shapes[p]} in this model, "
                            f"{tuple(source.params[p].shape)} in the checkpoint; {hint}")
    unused = sorted(set(source.params) - set(paths))
    if unused:
        problems.append(f"the checkpoint has parameters this model lacks: {', '.join(unused)} "
                        "(the architectures differ: compare model.* with the source run's "
                        "config.yaml)")
    if problems:
        raise ConfigError([f"{where}: {m}" for m in problems], "<config>")
    return [p for p in paths if p not in fresh]


def load_pretrained(source: Pretrained, loaded: Sequence[str], params: Any, batch_stats: Any
                    ) -> tuple[Any, Any]:
    """Fresh ``params`` and ``batch_stats`` with the ``loaded`` paths (from
    :func:`plan`) and their modules' batch statistics taken from ``source``."""
    loaded = set(loaded)
    paths = param_paths(params)
    flat, treedef = jax.tree_util.tree_flatten(params)
    new = treedef.unflatten([np.asarray(source.params[p], a.dtype) if p in loaded else a
                             for p, a in zip(paths, flat, strict=True)])
    if not jax.tree_util.tree_leaves(batch_stats):
        return new, batch_stats
    modules = {p.rsplit("/", 1)[0] for p in loaded if "/" in p}
    s_paths = param_paths(batch_stats)
    s_flat, s_def = jax.tree_util.tree_flatten(batch_stats)
    stats = s_def.unflatten([
        np.asarray(source.batch_stats[p], a.dtype)
        if p.rsplit("/", 1)[0] in modules and p in source.batch_stats else a
        for p, a in zip(s_paths, s_flat, strict=True)])
    return new, stats
