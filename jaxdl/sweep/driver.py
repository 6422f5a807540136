"""``run(spec)``: the sweep driver. Opens (or continues) the study, runs
trials in this process or in K spawned worker processes until the budget is
met, keeps the best trial's checkpoint, and ends with the report.

The budget counts *finished* (complete or pruned) trials in the whole study,
so re-running a sweep continues it, and K workers on one or several machines
stop together at exactly ``budget.trials``: a worker counts and starts its next
trial while holding the storage's budget lock
(:func:`jaxdl.sweep.storage.budget_lock`), and when the remaining budget is
taken by running trials it waits for them, so a dead worker's trial (failed
and re-queued by the heartbeat) is still run.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from jaxdl import allocator, compilation_cache
from jaxdl.errors import ConfigError, DataError, JaxdlError
from jaxdl.metrics import plots_in_background, write_json
from jaxdl.sweep import space as space_lib
from jaxdl.sweep import storage as storage_lib
from jaxdl.sweep.objective import Objective
from jaxdl.sweep.reporting import counts as _counts
from jaxdl.sweep.spec import SweepSpec

__all__ = ["format_params", "make_pruner", "make_sampler", "open_study", "run", "worker_env"]

_POLL_SECONDS = 1.0


def make_sampler(spec: SweepSpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. Worker ``k`` of several gets seed ``seed + k`` (the
    same seed would propose the same random start-up trials in every worker)."""
    sc = spec.sampler
    seed = None if sc.seed is None else sc.seed + worker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sc.name == "tpe":
            liar = sc.constant_liar if sc.constant_liar is not None else spec.workers > 1
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sc.n_startup_trials,
                                              multivariate=sc.multivariate, constant_liar=liar)
        if sc.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if sc.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=sc.n_startup_trials)
        if sc.name == "grid":
            return optuna.samplers.GridSampler(space_lib.grid(spec.space)[0], seed=seed)
        # QMC: every worker walks the same sequence (the study holds the position).
        return optuna.samplers.QMCSampler(qmc_type=sc.qmc_type, scramble=True, seed=sc.seed)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; its steps are epochs."""
    pc = spec.pruner
    if pc.name == "median":
        return optuna.pruners.MedianPruner(pc.n_startup_trials, pc.n_warmup_steps,
                                           pc.interval_steps)
    if pc.name == "percentile":
        return optuna.pruners.PercentilePruner(pc.percentile, pc.n_startup_trials,
                                               pc.n_warmup_steps, pc.interval_steps)
    min_resource = "auto" if pc.min_resource is None else pc.min_resource
    if pc.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=pc.reduction_factor,
            min_early_stopping_rate=pc.min_early_stopping_rate)
    if pc.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if min_resource == "auto" else min_resource,
            max_resource=pc.max_resource or spec.base.train.epochs,
            reduction_factor=pc.reduction_factor)
    return optuna.pruners.NopPruner()


def _budget(spec: SweepSpec) -> int | None:
    if spec.budget.trials is not None:
        return spec.budget.trials
    if spec.sampler.name == "grid":
        return math.prod(len(v) for v in space_lib.grid(spec.space)[0].values())
    return None


def open_study(spec: SweepSpec, *, worker: int = 0, create: bool = True,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the spec's study (``load_if_exists``).

    Raises:
      ConfigError: the storage cannot be opened, or the study exists with
        another base config or objective (its trials would not compare).
    """
    info = storage_lib.resolve(spec.storage, spec.directory)
    if storage is None:
        hb = spec.heartbeat
        storage = storage_lib.make(info, interval=hb.interval, grace=hb.grace,
                                   retries=hb.retries)
    sampler, pruner = make_sampler(spec, worker), make_pruner(spec)
    if create:
        study = optuna.create_study(storage=storage, study_name=spec.name, sampler=sampler,
                                    pruner=pruner, direction=spec.direction, load_if_exists=True)
    else:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    attrs = study.user_attrs
    ident = {"jaxdl:base": spec.base_fingerprint(), "jaxdl:metric": spec.metric,
             "jaxdl:direction": spec.direction}
    if "jaxdl:base" not in attrs:
        for k, v in ident.items():
            study.set_user_attr(k, v)
        study.set_user_attr("jaxdl:spec", spec.to_record())
    elif attrs["jaxdl:base"] != ident["jaxdl:base"] or study.direction.name.lower() != \
            spec.direction:
        raise ConfigError(
            f"study {spec.name!r} in {info.display} was run with another base config or "
            f"objective ({attrs.get('jaxdl:metric')}, {attrs.get('jaxdl:direction')}); its "
            "trials would not compare with these. Use another --study name (or study_dir)",
            spec.source)
    return study


class _Handoff:
    """Holds the budget lock from the count until the objective starts (the
    trial exists by then), so two workers never take the same budget slot."""

    def __init__(self, lock_cm):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(lock_cm)

    def release(self) -> None:
        self._stack.close()


def stop_reason(spec: SweepSpec, study: optuna.Study, trials: list[FrozenTrial],
                deadline: float | None, *, running: int) -> tuple[str | None, bool]:
    """Whether a worker may start another trial, counted under the budget
    lock: ``(why, wait)``. ``why`` (one line) ends the worker: the budget is
    met, too many trials failed, the deadline passed, the grid is exhausted.
    ``wait``: ``running`` trials hold the rest of the budget.

    Args:
      trials: the study's trials, just read.
      running: trials running that count against the budget (with
        heartbeats, every running one: a dead worker's is failed and
        re-queued in time).
    """
    budget = _budget(spec)
    max_failed = spec.budget.max_failed or budget
    c = _counts(trials)
    # Failures that count: exceptions, not dead workers or Ctrl-C (those
    # trials are re-queued).
    errors = sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials)
    if budget is not None and c["finished"] >= budget:
        return f"the study holds {c['finished']} finished trials (budget {budget})", False
    if max_failed is not None and errors >= max_failed and c["waiting"] == 0:
        return (f"{errors} trials failed (budget.max_failed {max_failed}); see their errors "
                "with jaxdl report"), False
    if deadline is not None and time.time() >= deadline:
        return f"timeout of {spec.budget.timeout:g} s reached", False
    if isinstance(study.sampler, optuna.samplers.GridSampler) and \
            study.sampler.is_exhausted(study):
        return "the grid is exhausted", False
    # The rest of the budget is running elsewhere (or, in a population, here).
    wait = budget is not None and c["finished"] + running >= budget and c["waiting"] == 0
    return None, wait


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again (a WAITING copy with its params, user attrs
    and reported values), so the next run resumes it from its latest
    checkpoint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=None, inherit_intermediate_values=True)(study, trial)


def _worker_loop(spec: SweepSpec, study: optuna.Study, objective: Objective, *,
                 deadline: float | None, progress: _Display | None) -> str:
    """Run trials until the budget, the deadline or the failure limit.

    Returns:
      Why it stopped (one line).
    """
    info = storage_lib.resolve(spec.storage, spec.directory)
    # Without heartbeats a RUNNING trial of a dead process would hold its
    # budget slot forever: then running trials are not waited for.
    heartbeat = optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)
    current: dict[str, Any] = {}

    def wrapped(trial: optuna.Trial) -> float:
        handoff = current.pop("handoff", None)
        if handoff is not None:
            handoff.release()
        current["trial"] = trial
        try:
            return objective(trial)
        except KeyboardInterrupt:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("status", "interrupted")
            raise
        except DataError as e:
            # Missing or corrupt data fails every trial alike: stop the sweep.
            current["abort"] = e
            raise

    callbacks = [objective.cleanup]
    if progress is not None:
        callbacks.append(progress.trial_done)
    while True:
        handoff = _Handoff(storage_lib.budget_lock(info, spec.name))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            c = _counts(trials)
            why, wait = stop_reason(spec, study, trials, deadline,
                                    running=c["running"] if heartbeat else 0)
        except BaseException:
            handoff.release()
            raise
        if why is not None or wait:
            handoff.release()
            if why is not None:
                return why
            if progress is not None and not current.get("said_wait"):
                current["said_wait"] = True
                grace = spec.heartbeat.grace or 3 * spec.heartbeat.interval
                progress.note(
                    f"waiting for {c['running']} running trial(s) to finish the budget (a dead "
                    f"worker's trial is re-queued after {grace} s without a heartbeat)")
            time.sleep(_POLL_SECONDS)
            continue
        current.pop("said_wait", None)
        current["handoff"] = handoff
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(wrapped, n_trials=1, catch=(Exception,), callbacks=callbacks,
                               gc_after_trial=False, show_progress_bar=False)
        except KeyboardInterrupt:
            trial = current.get("trial")
            if trial is not None:
                # Re-queue the interrupted trial: the next run resumes it from
                # its latest checkpoint.
                frozen = study._storage.get_trial(trial._trial_id)
                if frozen.state == TrialState.FAIL and \
                        frozen.user_attrs.get("status") == "interrupted":
                    requeue(study, frozen)
            raise
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as e:
            # The trial was failed under us (its heartbeats stalled past the
            # grace period) and re-queued: the retry carries on with it.
            trial = current.get("trial")
            if trial is None or study._storage.get_trial(trial._trial_id).state == \
                    TrialState.RUNNING:
                raise
            if progress is not None:
                progress.note(f"trial {trial.number} was taken over after missed heartbeats "
                              f"({e})")
        finally:
            current.pop("trial", None)
            left = current.pop("handoff", None)
            if left is not None:
                left.release()
        if "abort" in current:
            raise current.pop("abort")


def _populations(spec: SweepSpec, study: optuna.Study, objective: Objective, *,
                 deadline: float | None, display: _Display | None, verbose: bool,
                 record: dict[str, Any], after_probe: Callable[[], None] | None = None
                 ) -> str | None:
    """Run the sweep's trials in populations (``jaxdl.sweep.population``);
    None when ``population: auto`` measured that one trial at a time is
    fastest (the plain loop then runs the rest). ``record`` gets the
    figures for ``sweep.json``."""
    from jaxdl.sweep.population import PopulationSweep

    sweep = PopulationSweep(
        spec, study, objective, size=spec.population, deadline=deadline,
        on_trial=display.trial_done if display is not None else None,
        note=display.note if display is not None else None, verbose=verbose,
        after_probe=after_probe)
    try:
        return sweep.run()
    finally:
        slots, members = sweep.slot_use
        record.update({"population": sweep.size, "groups": len(sweep.groups),
                       "compiled_shapes": sweep.compiled_shapes,
                       **({"slot_epochs": slots, "member_epochs": members} if slots else {}),
                       **({"auto_rates": sweep.probe.rates,
                           "auto_trial_seconds": sweep.probe.trial_seconds,
                           "auto_compile_seconds": sweep.probe.compile_seconds}
                          if sweep.probe is not None else {})})


# ------------------------------------------------------------------ display


def format_params(params: dict[str, Any]) -> str:
    """``lr=0.003 batch=64``; a short name two keys share keeps its section
    (``g_optim.lr=0.0002 d_optim.lr=0.0004``)."""
    names = space_lib.short_names(
        list(params), {"learning_rate": "lr", "batch_size": "batch", "weight_decay": "wd"})
    return " ".join(f"{names[k]}={f'{v:.3g}' if isinstance(v, float) else v}"
                    for k, v in params.items())


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


class _Display:
    """The sweep-level progress display: a bar on a terminal, else one line
    per finished trial. Everything shown is read from the storage, so the
    parent of several workers shows the same thing."""

    def __init__(self, spec: SweepSpec, study: optuna.Study, *, tty: bool, quiet: bool = False):
        self.spec, self.study, self.tty, self.quiet = spec, study, tty, quiet
        self.budget = _budget(spec)
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        self.epoch: dict[int, tuple[int, int]] = {}
        self.bar = None
        self._drawn = 0.0
        if quiet:
            return
        c = _counts(trials)
        if trials:
            self._print(f"continuing study {spec.name!r}: {c['finished']} finished "
                        f"({c['complete']} complete, {c['pruned']} pruned), {c['failed']} failed")
        if tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.budget, initial=c["finished"], desc=f"sweep {spec.name}",
                            unit="trial", dynamic_ncols=True, leave=True)

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def note(self, line: str) -> None:
        if not self.quiet:
            self._print(line)

    def epoch_done(self, number: int, epoch: int, epochs: int, value: float) -> None:
        self.epoch[number] = (epoch, epochs)
        # Only a bar shows epochs, and it need not be redrawn more than a few
        # times a second (each redraw reads the storage).
        now = time.monotonic()
        if self.bar is not None and now - self._drawn >= 0.5:
            self._drawn = now
            self.refresh()

    def trial_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.epoch.pop(trial.number, None)
        self.refresh()

    def refresh(self) -> None:
        if self.quiet:
            return
        trials = self.study.get_trials(deepcopy=False)
        c = _counts(trials)
        best = _best(self.study)
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                self._print(f"{self._trial_line(t)} | {self._status(c, best)}")
        if self.bar is not None:
            self.bar.n = c["finished"]
            running = [t for t in trials if t.state == TrialState.RUNNING]
            now = []
            for t in running[:3]:
                ep = self.epoch.get(t.number)
                step = ep[0] if ep else (t.last_step or 0)
                total = ep[1] if ep else self.spec.base.train.epochs
                now.append(f"#{t.number} epoch {step}/{total}")
            post = f"pruned {c['pruned']} failed {c['failed']}"
            if now:
                post += " | " + ", ".join(now)
            if best is not None:
                post += (f" | best {_fmt(best.value)} #{best.number} "
                         f"{format_params(space_lib.decode_params(best.params, self.spec.space))}")
            self.bar.set_postfix_str(post, refresh=False)
            self.bar.refresh()

    def _status(self, c: dict[str, int], best: FrozenTrial | None) -> str:
        total = f"/{self.budget}" if self.budget else ""
        s = (f"{c['finished']}{total} finished ({c['complete']} complete, {c['pruned']} pruned, "
             f"{c['failed']} failed)")
        if best is not None:
            s += (f" | best {self.spec.metric} {_fmt(best.value)} #{best.number} "
                  f"{format_params(space_lib.decode_params(best.params, self.spec.space))}")
        return s

    def _trial_line(self, t: FrozenTrial) -> str:
        params = format_params(space_lib.decode_params(t.params, self.spec.space))
        metric = self.spec.metric
        if t.state == TrialState.COMPLETE:
            what = f"complete {metric} {_fmt(t.value)} ({t.user_attrs.get('epochs', '?')} epochs)"
        elif t.state == TrialState.PRUNED:
            if t.user_attrs.get("status") == "diverged":
                what = f"diverged at epoch {t.user_attrs.get('epochs', '?')}"
            else:
                last = t.intermediate_values.get(t.last_step) if t.last_step else None
                what = (f"pruned at epoch {t.last_step} ({metric} "
                        f"{_fmt(last) if last is not None else '?'})")
        else:
            err = t.user_attrs.get("error") or t.user_attrs.get("status") or "worker died"
            what = f"failed: {str(err).splitlines()[0][:120]}"
        return f"trial {t.number} {what} | {params}"

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


# ------------------------------------------------------------------ workers


def _accelerators() -> list[str]:
    """GPU ids for one-device-per-worker, without starting JAX's backend
    (which would claim every GPU's memory in the parent)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def worker_env(index: int, workers: int, devices: list[str]) -> dict[str, str]:
    """Environment for worker ``index``: its own GPU when there are enough,
    else a fair share of one."""
    if not devices:
        return {}
    env = {"CUDA_VISIBLE_DEVICES": devices[index % len(devices)]}
    sharing = math.ceil(workers / len(devices))
    if sharing > 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.2f}"
    return env


def _worker_main(spec: SweepSpec, index: int, env: dict[str, str], deadline: float | None,
                 verbose: bool) -> None:
    """Entry point of a spawned worker process."""
    os.environ.update(env)
    allocator.reuse_freed_memory()
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    _enable_cache(spec)
    try:
        study = open_study(spec, worker=index, create=False)
        objective = Objective(spec, verbose=verbose)
        why = None
        with plots_in_background():
            if spec.population != 1:
                why = _populations(spec, study, objective, deadline=deadline, display=None,
                                   verbose=verbose, record={})
            if why is None:
                _worker_loop(spec, study, objective, deadline=deadline, progress=None)
    except KeyboardInterrupt:
        sys.exit(130)
    except JaxdlError as e:
        print(f"jaxdl: worker {index}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _enable_cache(spec: SweepSpec) -> Path | None:
    return compilation_cache.enable(spec.directory / "xla_cache")


# ------------------------------------------------------------------ run


def run(spec: SweepSpec, *, verbose: bool = False, progress: bool | None = None,
        quiet: bool = False, report: bool = True,
        storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Run (or continue) the sweep until its budget is met.

    Args:
      spec: the sweep (see :func:`jaxdl.sweep.load`).
      verbose: print each trial's epoch lines.
      progress: a progress bar (default: when stderr is a terminal); else
        one line per finished trial.
      quiet: print nothing (the report's files are still written).
      report: end by printing the ranked table and writing the plots.
      storage: an Optuna storage object to use instead of ``spec.storage``
        (one process only).

    Returns:
      The :class:`optuna.Study`.

    Raises:
      ConfigError: bad spec or storage.
      KeyboardInterrupt: after re-queuing the interrupted trial (re-run to
        continue it).
    """
    t0 = time.time()
    study_dir = spec.directory
    study_dir.mkdir(parents=True, exist_ok=True)
    info = storage_lib.resolve(spec.storage, study_dir)
    if spec.workers > 1 and (info.kind == "memory" or storage is not None):
        raise ConfigError("workers: several worker processes need a shared storage "
                          "(sqlite, journal or postgresql), not memory", spec.source)
    verbosity = optuna.logging.get_verbosity()
    if not verbose:   # the display says what Optuna's log would, one line a trial
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = open_study(spec, storage=storage)
    except BaseException:
        optuna.logging.set_verbosity(verbosity)
        raise
    _write_study_files(spec, info)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    if progress is None:
        progress = sys.stderr.isatty()
    display = _Display(spec, study, tty=progress, quiet=quiet)
    deadline = t0 + spec.budget.timeout if spec.budget.timeout else None
    why = "interrupted"
    pop_record: dict[str, Any] = {}
    # `population: auto` first times training steps: the imports would
    # compete with them for the two cores, so they start after the probe.
    if report and spec.population != "auto":
        _warm_report_imports()
    try:
        if spec.workers == 1:
            _enable_cache(spec)
            objective = Objective(spec, verbose=verbose and not quiet,
                                  on_epoch=display.epoch_done)
            why = None
            with plots_in_background():   # trials' curves drawn while the next trains
                if spec.population != 1:
                    why = _populations(spec, study, objective, deadline=deadline,
                                       display=display, verbose=verbose and not quiet,
                                       record=pop_record,
                                       after_probe=_warm_report_imports if report else None)
                if why is None:
                    why = _worker_loop(spec, study, objective, deadline=deadline,
                                       progress=display)
        else:
            why = _run_workers(spec, study, display, deadline, verbose and not quiet)
    finally:
        optuna.logging.set_verbosity(verbosity)
        display.close()
        s = _record_session(spec, study, t0, before, why, pop_record)
    if not quiet:
        print(f"sweep {spec.name}: {why}")
        if s["trials"]:
            of = "wall time" if spec.workers == 1 else f"{spec.workers} workers' time"
            print(f"this run: {s['trials']} trials, {s['epochs']} epochs in "
                  f"{s['wall_seconds']:.0f} s; compile {s['compile_seconds']:.1f} s = "
                  f"{100 * s['compile_fraction']:.1f} % of {of}")
            if "groups" in s:
                print(f"populations of {s['population']}: {s['groups']} shape groups, "
                      f"{s['compiled_shapes']} distinct shapes compiled")
    if report:
        from jaxdl.sweep.reporting import report as write_report

        write_report(study, study_dir, spec=spec, quiet=quiet)
    return study


def _warm_report_imports() -> None:
    """Import Optuna's importances on a daemon thread while the first trials
    compile: they pull in scikit-learn (about 2 s on 2 CPU cores, most of
    the final report's time), and XLA compiles release the GIL. The report
    imports them again, waiting for this import if it is still running; a
    failure here is left to the report to meet. (Not the plotting modules:
    matplotlib picks its backend in the main thread.)"""
    def load() -> None:
        with contextlib.suppress(Exception):
            import optuna.importance  # noqa: F401

    threading.Thread(target=load, name="jaxdl-report-imports", daemon=True).start()


def _run_workers(spec: SweepSpec, study: optuna.Study, display: _Display,
                 deadline: float | None, verbose: bool) -> str:
    ctx = multiprocessing.get_context("spawn")   # never fork a process that imported JAX
    devices = _accelerators()
    procs = []
    for i in range(spec.workers):
        p = ctx.Process(target=_worker_main, name=f"jaxdl-sweep-worker-{i}",
                        args=(spec, i, worker_env(i, spec.workers, devices), deadline, verbose))
        p.start()
        procs.append(p)
    try:
        while any(p.is_alive() for p in procs):
            display.refresh()
            time.sleep(_POLL_SECONDS)
    except KeyboardInterrupt:
        for p in procs:   # they got the same SIGINT; give them time to re-queue
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    display.refresh()
    codes = [p.exitcode for p in procs]
    c = _counts(study.get_trials(deepcopy=False))
    budget = _budget(spec)
    why = f"{spec.workers} workers finished; {c['finished']} finished trials"
    if budget is not None:
        why += f" (budget {budget})"
    killed = [f"worker {i} was killed by signal {-code}" for i, code in enumerate(codes)
              if code is not None and code < 0]
    if killed:   # its trial was re-queued; the others carried on
        why += "; " + ", ".join(killed)
    failed = [f"worker {i} exited with {code}" for i, code in enumerate(codes)
              if code is not None and code > 0]
    if failed:
        raise JaxdlError(f"{why}; {', '.join(failed)} (its error is printed above)")
    return why


def _write_study_files(spec: SweepSpec, info: storage_lib.StorageInfo) -> None:
    d = spec.directory
    (d / "sweep.yaml").write_text(yaml.safe_dump(spec.to_record(), sort_keys=False))
    meta_path = d / "sweep.json"
    meta = _read_json(meta_path)
    meta.update({"study": spec.name, "storage": info.display, "storage_kind": info.kind,
                 "metric": spec.metric, "direction": spec.direction, "spec": spec.source})
    meta.setdefault("sessions", [])
    write_json(meta_path, meta)


def _record_session(spec: SweepSpec, study: optuna.Study, t0: float, before: set[int],
                    why: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append this invocation's figures to ``sweep.json`` (wall time, trials
    and epochs run, compile time as a fraction of worker time) and return them.

    Args:
      before: numbers of the trials the study held when this run started.
      extra: more figures (a population sweep's groups and compiled shapes).
    """
    wall = time.time() - t0
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.number not in before and t.state.is_finished() and t.datetime_start
              is not None and t.datetime_start.timestamp() >= t0 - 1]
    compile_s = sum(float(t.user_attrs.get("compile_seconds", 0.0)) for t in trials)
    epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t0)),
               "wall_seconds": round(wall, 2), "workers": spec.workers,
               "trials": len(trials), "epochs": epochs,
               "compile_seconds": round(compile_s, 2),
               "compile_fraction": round(compile_s / max(wall * spec.workers, 1e-9), 4),
               "ended": why}
    session.update(extra or {})
    meta_path = spec.directory / "sweep.json"
    meta = _read_json(meta_path)
    meta.setdefault("sessions", []).append(session)
    write_json(meta_path, meta)
    return session


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
