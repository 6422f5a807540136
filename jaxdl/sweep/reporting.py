"""Study reports: a ranked table of trials, ``trials.jsonl``, and Optuna's
plots (optimization history, parameter importances, parallel coordinates,
intermediate values) as PNG files.

    jaxdl report studies/mnist_mlp                 # a study directory
    jaxdl report postgresql://u:p@host/db --study mnist_mlp --out plots/
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from jaxdl.errors import ConfigError
from jaxdl.metrics import write_jsonl
from jaxdl.sweep import space as space_lib
from jaxdl.sweep import storage as storage_lib

__all__ = ["PLOTS", "counts", "load_study", "rank", "report", "table"]

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate",
         "intermediate_values")


def load_study(target: str | Path, study: str | None = None,
               storage: str | None = None) -> tuple[optuna.Study, Path | None]:
    """Open an existing study from a study directory or a storage URL.

    Args:
      target: a study directory (holding ``sweep.json``), or a storage URL
        (``sqlite:///...``, ``journal:PATH``, ``postgresql://...``).
      study: the study name (needed when the storage holds several).
      storage: the storage URL to use for a study directory whose storage is
        a database with a password (never written to ``sweep.json``).

    Returns:
      ``(study, study_dir)``; ``study_dir`` is None for a URL.

    Raises:
      ConfigError: nothing usable at ``target``, or an unknown study name.
    """
    study_dir: Path | None = None
    path = Path(str(target))
    if path.is_dir():
        study_dir = path
        meta_path = path / "sweep.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} is not a study directory ({meta_path}: "
                              f"{getattr(e, 'strerror', None) or e})") from None
        study = study or meta.get("study")
        if storage is None:
            # The default files of this directory (resolved below), even if
            # the directory moved since.
            if meta.get("storage_kind") == "sqlite" and (path / "study.db").exists():
                storage = "sqlite"
            elif meta.get("storage_kind") == "journal" and (path / "journal.log").exists():
                storage = "journal"
            else:
                storage = meta.get("storage")
            if storage and "***" in storage:
                raise ConfigError(f"{path}: the study lives in {storage}; pass its full URL "
                                  "with --storage")
            if meta.get("storage_kind") == "memory":
                raise ConfigError(f"{path}: the study was kept in memory and is gone")
    elif storage is None:
        storage = str(target)
        if not (re.match(r"^[a-z][a-z0-9+]*:", storage) or storage == "memory"):
            raise ConfigError(f"{target}: no such study directory, and not a storage URL "
                              "(sqlite:///PATH, journal:PATH, postgresql://...)")
    info = storage_lib.resolve(storage, study_dir or Path("."))
    if info.path is not None and not info.path.exists():
        raise ConfigError(f"no study storage at {info.path}")
    backend = storage_lib.make(info)
    names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
    if study is None:
        if len(names) != 1:
            raise ConfigError(f"{info.display} holds {len(names)} studies "
                              f"({', '.join(names) or 'none'}); name one with --study")
        study = names[0]
    if study not in names:
        raise ConfigError(f"no study {study!r} in {info.display}; it holds: "
                          f"{', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study, storage=backend), study_dir


def _last_value(t: FrozenTrial) -> float | None:
    if t.last_step is None:
        return None
    return t.intermediate_values.get(t.last_step)


def rank(study: optuna.Study) -> list[FrozenTrial]:
    """Trials best first: complete by value, then pruned by their last
    reported value, then failed, running and waiting ones."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def key(t: FrozenTrial):
        group = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}.get(t.state, 2)
        v = t.value if t.state == TrialState.COMPLETE else _last_value(t)
        v = sign * v if v is not None and math.isfinite(v) else math.inf
        return (group, v, t.number)

    return sorted(study.get_trials(deepcopy=False), key=key)


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials by state (complete, pruned, failed, running, waiting) and
    ``finished`` (complete + pruned: what the budget counts)."""
    out = {s: 0 for s in ("complete", "pruned", "failed", "running", "waiting")}
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting"}
    for t in trials:
        out[names[t.state]] += 1
    out["finished"] = out["complete"] + out["pruned"]
    return out


def _status(t: FrozenTrial) -> str:
    if t.state == TrialState.PRUNED and t.user_attrs.get("status") == "diverged":
        return "diverged"
    return t.state.name.lower()


def table(study: optuna.Study, top: int | None = 20,
          trials: list[FrozenTrial] | None = None) -> str:
    """The ranked trials as a text table (``trials``: already ranked ones,
    to spare a storage read)."""
    trials = rank(study) if trials is None else trials
    keys: list[str] = []
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    names = space_lib.short_names(keys)
    head = ["rank", "trial", "state", "value", "epochs"] + [names[k] for k in keys] + ["seconds"]
    rows = []
    for i, t in enumerate(trials[:top] if top else trials, 1):
        v = t.value if t.state == TrialState.COMPLETE else _last_value(t)
        row = [str(i), str(t.number), _status(t), "" if v is None else f"{v:.4f}",
               str(t.user_attrs.get("epochs", t.last_step if t.last_step is not None else ""))]
        for k in keys:
            p = t.params.get(k, "")
            row.append(f"{p:.3g}" if isinstance(p, float) else str(p))
        dur = t.duration.total_seconds() if t.duration is not None else None
        row.append("" if dur is None else f"{dur:.1f}")
        rows.append(row)
    widths = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    if top and len(trials) > top:
        lines.append(f"... {len(trials) - top} more trials in trials.jsonl")
    return "\n".join(lines)


def _trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "state": _status(t), "value": t.value,
            "params": t.params, "intermediate_values": t.intermediate_values,
            "datetime_start": str(t.datetime_start) if t.datetime_start else None,
            "duration_seconds": t.duration.total_seconds() if t.duration else None,
            **{k: v for k, v in t.user_attrs.items()}}


def _plot(name: str, study: optuna.Study, trials: list[FrozenTrial], path: Path) -> str | None:
    """Write one plot; return why it was skipped (None when written)."""
    from optuna.visualization import matplotlib as ovm

    from jaxdl.metrics import pyplot

    plt = pyplot()

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if name in ("optimization_history", "parallel_coordinate") and not complete:
        return "no complete trial"
    if name == "param_importances" and len(complete) < 2:
        return "needs at least 2 complete trials"
    if name == "intermediate_values" and not any(
            t.intermediate_values for t in trials):
        return "no reported values"
    fn = getattr(ovm, f"plot_{name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = fn(study)
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(10, 6)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    except Exception as e:   # e.g. importances of a parameter that never varied
        plt.close("all")
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def report(study: optuna.Study, out_dir: str | Path, *, spec: Any = None, top: int | None = 20,
           quiet: bool = False) -> dict[str, Any]:
    """Print the ranked table and write ``trials.jsonl`` and ``plots/*.png``.

    Args:
      study: the study.
      out_dir: where files go (the study directory).
      spec: unused beyond naming the metric (optional).
      top: rows of the printed table (None: all).
      quiet: write the files only.

    Returns:
      ``{"plots": {name: path}, "skipped": {name: reason}, "trials": path,
      "best": {...} or None}``.
    """
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    trials = rank(study)
    trials_path = out_dir / "trials.jsonl"
    write_jsonl(trials_path, [_trial_record(t) for t in trials])
    plots, skipped = {}, {}
    for name in PLOTS:
        path = plots_dir / f"{name}.png"
        why = _plot(name, study, trials, path)
        if why is None:
            plots[name] = path
        else:
            skipped[name] = why
            path.unlink(missing_ok=True)
    best = None
    try:
        bt = study.best_trial
        best = {"number": bt.number, "value": bt.value, "params": bt.params,
                "run_dir": bt.user_attrs.get("run_dir")}
    except ValueError:
        pass
    if not quiet:
        metric = study.user_attrs.get("jaxdl:metric", "value")
        c = counts(trials)
        print(f"study {study.study_name}: {len(trials)} trials ("
              f"{c['complete']} complete, {c['pruned']} pruned, "
              f"{c['failed']} failed, {c['running']} running); "
              f"{study.direction.name.lower()} {metric}")
        print(table(study, top, trials))
        if best is not None:
            print(f"best: trial {best['number']} {metric} {best['value']:.4f} -> "
                  f"jaxdl eval {best['run_dir']}")
        print(f"plots: {', '.join(str(p) for p in plots.values()) or 'none'}"
              + (f" (skipped: {'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
                 if skipped else ""))
    return {"plots": plots, "skipped": skipped, "trials": trials_path, "best": best}
