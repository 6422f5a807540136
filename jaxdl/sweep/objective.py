"""The Optuna objective: one trial = one ``jaxdl.run`` of the base config with
the trial's params, pruned from its per-epoch metric.

Usable on its own::

    spec = jaxdl.sweep.load("sweeps/playground_spiral.yaml")
    objective = jaxdl.sweep.Objective(spec)
    study = optuna.create_study(direction=spec.direction)
    study.optimize(objective, n_trials=10, callbacks=[objective.cleanup])
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from jaxdl import config as config_lib
from jaxdl import experiment
from jaxdl.config import Config
from jaxdl.sweep import space as space_lib
from jaxdl.sweep import storage as storage_lib
from jaxdl.sweep.spec import SweepSpec

__all__ = ["Objective", "may_prune", "trial_value"]

EpochHook = Callable[[int, int, int, float], None]
"""``hook(trial_number, epoch, epochs, value)`` after each reported epoch."""


def trial_value(summary: Mapping[str, Any], metric: str, which: str) -> float:
    """A finished run's objective value: its ``best`` or ``final`` ``metric``."""
    split, _, name = metric.partition("_")
    table = summary["best" if which == "best" else "final"]
    return float(table.get(split, {}).get(name, math.nan))   # NaN: never measured


def may_prune(spec: SweepSpec, step: int, previous: int | None) -> bool:
    """False where the spec's pruner cannot prune at ``step`` (``previous``:
    the trial's last reported step): no pruner, or a median/percentile
    pruner's warm-up or a step that is not the first of its interval. Such
    steps skip ``trial.should_prune()`` and the storage reads it makes;
    the decision is Optuna's own rule
    (``optuna.pruners._percentile._is_first_in_interval_step``)."""
    pc = spec.pruner
    if pc.name == "none":
        return False
    if pc.name not in ("median", "percentile"):
        return True
    if step < pc.n_warmup_steps:
        return False
    nearest = (step - pc.n_warmup_steps) // pc.interval_steps * pc.interval_steps + \
        pc.n_warmup_steps
    return (previous if previous is not None else -1) < nearest


class Objective:
    """Trains one trial and returns its objective value.

    Each trial runs in ``<study_dir>/trials/trial-NNNN`` (see :meth:`run_dir`) and records, as user
    attrs: ``run_dir``, ``host``, ``pid``, ``fingerprint``, ``status`` (the run's
    ``completed``/``early_stopped``/``stopped``/``diverged``), ``reason``,
    ``epochs``, ``best_epoch``, the final metrics, ``compile_seconds``,
    ``train_seconds`` and ``wall_seconds``; an exception is recorded in
    ``error`` before Optuna marks the trial failed.

    A pruned trial raises :class:`optuna.TrialPruned`; so does a diverged one
    (NaN/Inf loss), with ``status: diverged`` and the reason, so samplers learn
    that region is bad. A trial re-queued after its worker died resumes from
    the dead trial's latest checkpoint.

    Args:
      spec: the sweep.
      study_dir: where trial run directories go (default ``spec.directory``).
      verbose: print each trial's epoch lines.
      on_epoch: called after each epoch (the sweep's progress display).
    """

    def __init__(self, spec: SweepSpec, study_dir: str | Path | None = None, *,
                 verbose: bool = False, on_epoch: EpochHook | None = None):
        self.spec = spec
        self.study_dir = Path(study_dir) if study_dir is not None else spec.directory
        self.verbose = verbose
        self.on_epoch = on_epoch

    def run_dir(self, number: int, study_name: str | None = None) -> Path:
        """``trials/trial-NNNN``; trials of a study not named as the spec
        (an ``optuna.create_study`` of your own) go under ``trials/<its name>/``."""
        root = self.study_dir / "trials"
        if study_name is not None and study_name != self.spec.name:
            root = root / study_name
        return root / f"trial-{number:04d}"

    def place(self, trial: optuna.Trial, cfg: Config) -> tuple[Path, bool]:
        """``(run_dir, resume)`` of a trial, recorded in its user attrs
        (``run_dir``, ``host``, ``pid``, ``fingerprint``). A re-queued trial
        (its worker died) inherits its attrs and continues its run directory's
        checkpoint on the same host; a fresh one gets a new directory."""
        inherited = trial.user_attrs.get("run_dir")
        if inherited and (Path(inherited) / "checkpoints").is_dir() and \
                trial.user_attrs.get("host") == socket.gethostname():
            run_dir, resume = Path(inherited), True
        else:
            run_dir, resume = self.run_dir(trial.number, trial.study.study_name), False
            k = 1
            while run_dir.exists():   # another study used this directory before
                k += 1
                run_dir = run_dir.with_name(f"trial-{trial.number:04d}-{k}")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("fingerprint", config_lib.fingerprint(cfg))
        return run_dir, resume

    def reporter(self, trial: optuna.Trial, epochs: int,
                 prune: Callable[[], bool] | None = None) -> Callable[
                     [int, Mapping[str, float]], bool]:
        """The run's ``reporter(epoch, metrics) -> stop``: reports the
        objective metric to ``trial`` each epoch and asks the pruner where it
        can act (:func:`may_prune`): ``prune()``, by default
        ``trial.should_prune()``. Unless the sweep keeps every trial's
        checkpoints, a run it stops does not write its last checkpoint
        (``discards_stopped``, :data:`jaxdl.loop.Reporter`): a pruned trial's
        are deleted when it is told."""
        spec, metric = self.spec, self.spec.metric
        last = {"step": None}

        def reporter(epoch: int, metrics: Mapping[str, float]) -> bool:
            if metric not in metrics:    # not measured this epoch (an RL chunk
                return False             # in which no episode ended)
            value = float(metrics[metric])
            with warnings.catch_warnings():
                # A resumed trial repeats the epochs after its last
                # checkpoint; Optuna keeps the first (identical) report.
                warnings.filterwarnings("ignore", "The reported value is ignored")
                trial.report(value, epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, epoch, epochs, value)
            previous, last["step"] = last["step"], epoch
            if not may_prune(spec, epoch, previous):
                return False
            return prune() if prune is not None else trial.should_prune()

        # A pruned trial's checkpoints are deleted when it is told (cleanup):
        # its last one is not worth writing (39 ms a save for the playground).
        reporter.discards_stopped = not spec.keep_all
        return reporter

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        try:
            params = space_lib.suggest(trial, spec.space)
            cfg = spec.trial_config(params)
            run_dir, resume = self.place(trial, cfg)
            metric = spec.metric
            reporter = self.reporter(trial, cfg.train.epochs)
            result = experiment.run(cfg, workdir=run_dir, resume=resume, reporter=reporter,
                                    progress=False, quiet=not self.verbose)
        except Exception as e:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        s = result.summary
        split = metric.partition("_")[0]
        attrs = {"status": s["status"], "reason": s.get("reason"), "epochs": s["epochs"],
                 "best_epoch": s.get("best_epoch"), "final": s["final"].get(split, {}),
                 "compile_seconds": s["compile_seconds"], "train_seconds": s["train_seconds"],
                 "wall_seconds": s["wall_seconds"]}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if s["status"] == "diverged":
            raise optuna.TrialPruned(f"diverged: {s['reason']}")
        if s["status"] == "stopped":
            raise optuna.TrialPruned(f"pruned after epoch {s['epochs']}")
        value = trial_value(s, metric, spec.objective.value)
        if not math.isfinite(value):
            why = ("diverged" if metric.partition("_")[2] in s["final"].get(split, {})
                   else "never measured")
            raise optuna.TrialPruned(f"{why}: {metric} is {value}")
        return value

    def cleanup(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        """Remove checkpoints of finished trials other than the best (a study
        callback; a no-op with ``keep_all``). Run directories of running and
        queued trials (a dead worker's checkpoint that a retry will resume)
        and every file but ``checkpoints/`` are kept."""
        if self.spec.keep_all:
            return
        info = storage_lib.resolve(self.spec.storage, self.study_dir)
        # Under the budget lock: dead trials are failed and re-queued there,
        # in two steps this must not fall between.
        with storage_lib.budget_lock(info, study.study_name):
            cleanup(study, self.study_dir)


def cleanup(study: optuna.Study, study_dir: Path) -> list[Path]:
    """Delete ``checkpoints/`` of every finished trial's run directory on this
    host, except the best trial's and those a running or waiting trial uses.

    Returns:
      The checkpoint directories removed.
    """
    trials = study.get_trials(deepcopy=False)
    keep: set[str] = set()
    try:
        keep.add(study.best_trial.user_attrs.get("run_dir", ""))
    except ValueError:   # no complete trial yet
        pass
    keep |= {t.user_attrs.get("run_dir", "") for t in trials
             if t.state in (TrialState.RUNNING, TrialState.WAITING)}
    # A trial whose worker died or was interrupted (failed without an error)
    # may be resumed from its checkpoint, until a later trial finished in its
    # directory.
    done_later = {}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done_later[t.user_attrs.get("run_dir")] = max(
                t.number, done_later.get(t.user_attrs.get("run_dir"), -1))
    keep |= {t.user_attrs.get("run_dir", "") for t in trials
             if t.state == TrialState.FAIL and "error" not in t.user_attrs
             and done_later.get(t.user_attrs.get("run_dir"), -1) < t.number}
    host = socket.gethostname()
    removed = []
    root = study_dir.resolve()
    for t in trials:
        rd = t.user_attrs.get("run_dir")
        if not rd or rd in keep or not t.state.is_finished() or t.user_attrs.get("host") != host:
            continue
        ckpt = Path(rd) / "checkpoints"
        # Only ever delete inside this study's directory.
        if ckpt.is_dir() and root in ckpt.resolve().parents:
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed
