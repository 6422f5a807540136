"""Whole runs: ``run(cfg)`` trains and records; ``restore``/``evaluate`` read
a run directory back.

A run directory holds::

    config.yaml      the resolved config
    run.json         fingerprint, seed, library versions, backend, command
    metrics.jsonl    one JSON object per evaluation (epoch, step, split, ...)
    curves.png       learning curves
    summary.json     status, final and best metrics per split, timings
    vocab.json       text: the character vocabulary (sampling reads it)
    samples.txt      text: generated from the best checkpoint (config ``sample``)
    predictions.png  sine: predictions against the truth on test sequences
    samples/         GAN: epoch_NNNN.png, a grid from one fixed latent batch
    samples.png      GAN: the best checkpoint's grid (see jaxdl.gan_run)
    checkpoints/     Orbax: the latest epoch (resume) and the best (use)
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl import models, optim, parallel, transfer
from jaxdl.algorithms.supervised import Engine, Task, TrainState, default_steps_per_call
from jaxdl.checkpoint import Checkpointer
from jaxdl.compilation_cache import BuiltByShape
from jaxdl.config import Config
from jaxdl.errors import CheckpointError, ConfigError, DataError
from jaxdl.loop import LoopState, Reporter, fit, run_keys
from jaxdl.metrics import MetricsWriter, plot_curves, read_metrics, redact, write_json

__all__ = ["Restored", "RunResult", "SupervisedJob", "build_engine", "checkpoint_dir",
           "default_run_dir", "evaluate", "make_job", "new_state", "one_line", "restore",
           "restore_state", "run", "run_config"]

# Compiled engines by shape (bounded).
_ENGINES = BuiltByShape()


@dataclasses.dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
      status: ``completed``, ``early_stopped``, ``diverged`` or ``stopped``.
      run_dir: where everything was written.
      summary: the content of ``summary.json``.
      state: the final state (a :class:`TrainState`, or a GAN's
        :class:`~jaxdl.algorithms.gan.GANState`; None when nothing was trained).
    """

    status: str
    run_dir: Path
    summary: dict[str, Any]
    state: Any = None

    @property
    def best(self) -> dict[str, dict[str, float]]:
        return self.summary["best"]

    @property
    def final(self) -> dict[str, dict[str, float]]:
        return self.summary["final"]


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    """``runs/<name>-<fingerprint[:8]>``: the same config finds the same
    directory, so ``--resume`` needs no path."""
    return Path(root) / f"{cfg.name}-{config_lib.fingerprint(cfg)[:8]}"


def _shape_key(cfg: Config, dataset: data_lib.Dataset, backend: str,
               layout: parallel.Layout | None = None,
               groups: transfer.ParamGroups | None = None) -> tuple:
    """Everything that changes compiled shapes or structure. Hyperparameter
    *values* (learning rate, momentum, dropout rate, L2, weight decay, seed,
    epochs) are left out: they are data; of the dropout rate only whether
    it is above 0 (the masks compiled in or not)."""
    model = config_lib.to_dict(cfg.model)
    model["dropout"] = cfg.model.dropout > 0   # a rate is data in the state
    return (
        json.dumps(model, sort_keys=True),
        optim.structure_key(cfg.optim),
        (dataset.task, cfg.train.loss, dataset.outputs, dataset.input_shape, len(dataset.train),
         dataset.window, dataset.epoch_examples, dataset.sequence, dataset.vocab is not None),
        (cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.steps_per_call),
        backend,
        cfg.precision,
        None if layout is None else layout.key(),
        groups,
    )


def build_engine(cfg: Config, dataset: data_lib.Dataset,
                 layout: parallel.Layout | None = None) -> Engine:
    """The (cached) :class:`Engine` for this config's shape, on one device or
    over ``layout``'s mesh (see :func:`jaxdl.parallel.layout`). Its train
    step draws dropout masks only when ``model.dropout`` is above 0: runs at
    other rates above 0 share it, a run at 0 gets a step without masks."""
    backend = jax.default_backend()
    model = models.make(cfg.model, dataset.outputs, backend,
                        vocab=len(dataset.vocab) if dataset.vocab is not None else None,
                        sequence_output=dataset.sequence)
    groups = transfer_plan(cfg, model, dataset)[0]

    def build() -> Engine:
        steps = max(1, dataset.epoch_examples // cfg.train.batch_size)
        tx = optim.make(cfg.optim, steps, cfg.train.epochs)
        spc = cfg.train.steps_per_call or default_steps_per_call(
            cfg.model.name, backend, steps, models.conv_impl(cfg.model, backend))
        return Engine(model, tx, Task(dataset.task, cfg.train.loss),
                      batch_size=cfg.train.batch_size, n_train=len(dataset.train),
                      steps_per_call=spc, eval_batch_size=cfg.train.eval_batch_size,
                      scan_eval=spc > 1, window=dataset.window,
                      epoch_examples=dataset.epoch_examples, layout=layout,
                      precision=cfg.precision, groups=groups,
                      dropout=cfg.model.dropout > 0)

    return _ENGINES.get(_shape_key(cfg, dataset, backend, layout, groups), build)


def transfer_plan(cfg: Config, model: Any, dataset: data_lib.Dataset, *,
                  read_source: bool = False
                  ) -> tuple[transfer.ParamGroups | None, transfer.Pretrained | None,
                             list[str]]:
    """``(groups, source, loaded)`` for ``cfg``'s ``init_from`` and
    ``transfer`` section: the engine's frozen parameters and learning-rate
    multipliers (from the config and the model alone, so a transferred run
    resumes and evaluates without its source run); with ``read_source``
    also the pretrained run's arrays and the parameter paths that load from
    it. Checks patterns (and shapes against the checkpoint) on the model's
    abstract parameters: nothing is built.

    Raises:
      ConfigError: a pattern matches nothing, a shape or name does not fit.
      CheckpointError: ``init_from`` is no run directory with a checkpoint.
    """
    t = cfg.transfer
    if cfg.init_from is None and not t.freeze and not t.lr_groups:
        return None, None, []
    sample = jnp.asarray(dataset.sample_input())
    params = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, sample, train=False))["params"]
    groups = transfer.param_groups(t, params, pretrained=cfg.init_from is not None)
    source, loaded = None, []
    if read_source and cfg.init_from is not None:
        source = transfer.read_pretrained(cfg.init_from, t.checkpoint)
        loaded = transfer.plan(t, source, params)
    return groups, source, loaded


def new_state(cfg: Config, engine: Engine, dataset: data_lib.Dataset, *,
              pretrained: bool = True) -> TrainState:
    """A fresh state for ``cfg``: params from the seed's init key (then,
    with ``init_from`` and ``pretrained``, the pretrained run's values where
    ``cfg.transfer`` says), and the config's hyperparameter values injected
    (the engine may have been built for another run of the same shape)."""
    sample = jnp.asarray(dataset.sample_input())
    state = engine.init_state(run_keys(cfg.seed)["init"], sample, dropout=cfg.model.dropout,
                              l2=cfg.train.l2)
    steps = engine.steps_per_epoch
    opt_state = optim.set_hyperparams(state.opt_state,
                                      optim.hyperparams(cfg.optim, steps, cfg.train.epochs))
    state = state.replace(opt_state=opt_state)
    if cfg.init_from is not None and pretrained:
        _, source, loaded = transfer_plan(cfg, engine.model, dataset, read_source=True)
        params, stats = transfer.load_pretrained(source, loaded, state.params,
                                                 state.batch_stats)
        state = state.replace(params=jax.tree_util.tree_map(jnp.asarray, params),
                              batch_stats=jax.tree_util.tree_map(jnp.asarray, stats))
    return engine.place(state)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("jaxdl", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "optuna", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


_FINISHED = ("completed", "early_stopped", "stopped")


def _prepare_dir(cfg: Config, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Check that ``run_dir`` may be trained into; nothing in it is lost.

    Returns:
      The saved summary when resuming a run that already finished, else None.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} exists and is not a directory; choose another --workdir")
    ckpt = run_dir / "checkpoints"
    metrics = run_dir / "metrics.jsonl"
    summary_path = run_dir / "summary.json"
    holds_run = (summary_path.exists()
                 or (metrics.exists() and metrics.stat().st_size > 0)
                 or (ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir())))
    if holds_run and not resume:
        raise CheckpointError(
            f"{run_dir} already holds a run; pass --resume (resume=True) to continue it, "
            "or choose another --workdir")
    if not resume:
        return None
    saved = run_dir / "config.yaml"
    if saved.exists():
        old = config_lib.load(saved)
        if config_lib.fingerprint(old) != config_lib.fingerprint(cfg):
            a, b = config_lib.flatten(config_lib.to_dict(old)), config_lib.flatten(
                config_lib.to_dict(cfg))
            diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k) and k not in config_lib.NOT_FINGERPRINTED]
            raise CheckpointError(
                f"cannot resume {run_dir}: its config differs from this one "
                f"({'; '.join(diff)}); use another --workdir for a new run")
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"{summary_path} is not valid JSON ({e}); move it away to resume the run"
            ) from None
        if summary.get("status") in _FINISHED:
            return summary
    if holds_run and not cfg.checkpoint.enabled:
        raise CheckpointError(
            f"cannot resume {run_dir} with checkpoint.enabled false: there would be no "
            "checkpoint to continue from, and its record would be overwritten")
    return None


class SupervisedJob:
    """A supervised run's data and compiled engine, as :func:`~jaxdl.loop.fit`
    drives them (see :class:`jaxdl.loop.Job`)."""

    divergence_hint = "try a lower optim.learning_rate or optim.clip_norm"

    def __init__(self, cfg: Config, *, layout: parallel.Layout | None | str = "config",
                 resuming: bool = False):
        """Args:
          layout: the device layout; ``"config"`` (default) resolves
            ``cfg.parallel`` (:func:`jaxdl.parallel.layout`), None is one device.
          resuming: the run continues from its own checkpoint: ``init_from``
            is not read (nor checked) now.
        """
        self.cfg = cfg
        self.layout = parallel.layout(cfg) if layout == "config" else layout
        self.dataset = dataset = data_lib.load(cfg.data, cfg.seed)
        if dataset.vocab is not None:
            # Checked before training: a prompt the samples cannot start from.
            try:
                dataset.vocab.encode(cfg.sample.prompt)
            except DataError as e:
                raise ConfigError(f"sample.prompt: {e}", "<config>") from None
        self.engine = engine = build_engine(cfg, dataset, self.layout)
        self.transfer: dict[str, Any] | None = None
        if cfg.init_from is not None and not resuming:
            # Read and checked now, before a run directory is written.
            _, source, loaded = transfer_plan(cfg, engine.model, dataset, read_source=True)
            paths = transfer.param_paths(
                jax.eval_shape(engine.init_state, jax.random.key(0),
                               jnp.asarray(dataset.sample_input())).params)
            self.transfer = {"init_from": str(source.run_dir), "epoch": source.epoch,
                             "loaded": len(loaded),
                             "fresh": [p for p in paths if p not in set(loaded)],
                             **(engine.groups.describe() if engine.groups else {})}
        self.steps_per_epoch = engine.steps_per_epoch
        self._keys = run_keys(cfg.seed)
        self._x, self._y = engine.put_train(dataset.train.x, dataset.train.y)
        self._evals = {}
        if dataset.val is not None:
            self._evals["val"] = engine.put_eval_split(dataset.val.x, dataset.val.y)
        self._test = None

    @property
    def compile_seconds(self) -> float:
        return self.engine.compile_seconds

    def epoch_steps(self, epoch: int) -> int:
        return self.steps_per_epoch

    def run_info(self) -> dict[str, Any]:
        return {"steps_per_epoch": self.engine.steps_per_epoch,
                "steps_per_call": self.engine.steps_per_call,
                "normalizer": self.dataset.normalizer.to_dict(),
                "precision": self.cfg.precision,
                "parallel": None if self.layout is None else self.layout.describe(),
                **({"transfer": self.transfer} if self.transfer else {})}

    def prepare(self, run_dir: Path) -> None:
        if self.dataset.vocab is not None:
            self.dataset.vocab.save(run_dir / "vocab.json")

    def new_state(self, *, pretrained: bool = True) -> TrainState:
        return new_state(self.cfg, self.engine, self.dataset, pretrained=pretrained)

    def compile(self, state: TrainState, *, progress: bool) -> None:
        self.engine.compile(state, self._x, self._y, self._keys["shuffle"],
                            self._keys["dropout"], self._evals, progress=progress)

    def train_epoch(self, state: TrainState, epoch: int, on_progress):
        shuffle = self._keys["shuffle"]
        later = epoch < self.cfg.train.epochs and self.engine.host_input
        return self.engine.train_epoch(
            state, self._x, self._y, jax.random.fold_in(shuffle, epoch), self._keys["dropout"],
            on_progress=on_progress,
            next_shuffle_key=jax.random.fold_in(shuffle, epoch + 1) if later else None)

    def evaluate(self, state: TrainState) -> dict[str, dict[str, float]]:
        return {split: self.engine.evaluate(state, data) for split, data in self._evals.items()}

    def after_epoch(self, epoch: int, state: TrainState) -> None:
        pass

    def test(self, state: TrainState) -> dict[str, float]:
        if self._test is None:
            self._test = self.engine.put_eval_split(self.dataset.test.x, self.dataset.test.y)
        placed = jax.device_put(state) if self.layout is None else self.engine.place(state)
        return self.engine.evaluate(placed, self._test)

    def baselines(self) -> dict[str, dict[str, float]]:
        return self.dataset.baselines or {}

    def artifacts(self, state: TrainState, run_dir: Path, log) -> None:
        if self.dataset.sequence:
            _sequence_artifacts(self.cfg, self.engine, self.dataset,
                                jax.device_get(state).params, run_dir, log)


def make_job(cfg: Config, log=print, *, resume_dir: Path | None = None):
    """The job for ``cfg.algorithm``: data loaded, the program built (from
    the cache when this shape was built before).

    A job is a :class:`jaxdl.loop.Job` (what :func:`~jaxdl.loop.fit` calls)
    that also has what :func:`run` calls: ``compile_seconds``,
    ``run_info() -> dict`` (for ``run.json``), ``prepare(run_dir)``,
    ``new_state()``, ``test(state) -> metrics``, ``baselines() -> {split:
    metrics}`` and ``artifacts(state, run_dir, log)``.

    Args:
      resume_dir: the run directory being resumed (a GAN keeps scoring with
        the scorer it recorded there).
    Raises:
      CheckpointError: a resumed GAN run's scorer is missing.
    """
    if cfg.algorithm in config_lib.RL_ALGORITHMS:
        from jaxdl import rl_run

        return rl_run.RLJob(cfg, log=log)
    if cfg.algorithm == "gan":
        from jaxdl import gan_run

        scorer = (gan_run.run_scorer(resume_dir, cfg, log, strict=True)
                  if resume_dir is not None else None)
        return gan_run.GANJob(cfg, log=log, scorer=scorer)
    return SupervisedJob(cfg, resuming=resume_dir is not None)


def run(cfg: Config, *, workdir: str | Path | None = None, resume: bool = False,
        reporter: Reporter | None = None, progress: bool | None = None,
        quiet: bool = False) -> RunResult:
    """Train ``cfg`` and record everything in a run directory.

    Args:
      cfg: the experiment (``algorithm: supervised``, ``gan``, ``ppo`` or ``dqn``).
      workdir: the run directory (default :func:`default_run_dir`).
      resume: continue from the latest checkpoint in ``workdir``.
      reporter: ``reporter(epoch, metrics) -> stop`` after each evaluation.
      progress: progress bars (default: ``cfg.train.progress`` when stderr is
        a terminal).
      quiet: print nothing.

    Returns:
      A :class:`RunResult`; a diverged run returns normally with status
      ``"diverged"`` and the reason in ``summary["reason"]``.

    Raises:
      ConfigError, DataError, CheckpointError: bad input, explained.
    """
    t_start = time.perf_counter()
    log = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    if progress is None:
        # A bar only where someone watches: not in logs, CI or pipes (and a
        # bar's host callback keeps the epoch out of the persistent cache).
        progress = cfg.train.progress and sys.stderr.isatty()
    if not parallel.is_main():   # a multi-host job's record and output are process 0's
        quiet = True
        log = lambda s: None  # noqa: E731
    progress = progress and not quiet
    run_dir = Path(workdir) if workdir is not None else default_run_dir(cfg)
    finished = _prepare_dir(cfg, run_dir, resume)
    if finished is not None:
        log(f"{run_dir} already finished ({finished['status']}); nothing to resume")
        return RunResult(finished["status"], run_dir, finished)

    job = make_job(cfg, log, resume_dir=run_dir if resume else None)
    compile_before = job.compile_seconds
    opened = open_run(cfg, job, run_dir, resume=resume, log=log)
    try:
        result = fit(cfg, job, opened.state, loop=opened.loop, reporter=reporter,
                     checkpointer=opened.checkpointer, writer=opened.writer,
                     progress=progress, log=log)
    finally:
        if opened.checkpointer is not None:
            opened.checkpointer.wait()
    return close_run(cfg, job, opened, result, compile_seconds=job.compile_seconds -
                     compile_before, t_start=t_start, log=log)


@dataclasses.dataclass
class OpenedRun:
    """A run directory ready for training (see :func:`open_run`)."""

    run_dir: Path
    state: Any
    loop: LoopState
    checkpointer: Checkpointer | None
    writer: MetricsWriter


def open_run(cfg: Config, job: Any, run_dir: Path, *, resume: bool = False, log=print,
             state: Any = None) -> OpenedRun:
    """Write ``config.yaml`` and ``run.json`` and open the checkpoints and
    metric rows of ``run_dir``; on ``resume``, the latest checkpoint's state
    and bookkeeping.

    Args:
      job: the run's job (its ``run_info``, ``prepare`` and ``new_state``).
      state: the fresh state (default ``job.new_state()``).
    """
    main = parallel.is_main()   # other processes of a multi-host job write checkpoints only
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            config_lib.dump(cfg, run_dir / "config.yaml")
    except OSError as e:
        raise CheckpointError(f"cannot write the run directory {run_dir}: {e.strerror}") from None
    if main and not (resume and (run_dir / "run.json").exists()):   # a resume keeps the original
        write_json(run_dir / "run.json", {
            "name": cfg.name, "fingerprint": config_lib.fingerprint(cfg), "seed": cfg.seed,
            "versions": _versions(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "command": [redact(a) for a in sys.argv],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **job.run_info(),
        })
    if main:
        job.prepare(run_dir)

    ckpt = None
    if cfg.checkpoint.enabled:
        ckpt = Checkpointer(run_dir / "checkpoints")
    resuming = resume and ckpt is not None and ckpt.latest_epoch() is not None
    if state is None:
        # Restoring needs only the structure: a transferred run resumes
        # without reading (or still having) its source run.
        state = (job.new_state(pretrained=False) if resuming and isinstance(job, SupervisedJob)
                 else job.new_state())
    writer = MetricsWriter(run_dir / "metrics.jsonl", enabled=main)
    loop = LoopState()
    if resuming:
        state, meta = ckpt.restore(ckpt.latest_epoch(), state)
        loop = LoopState.from_meta(meta)
        log(f"resuming {run_dir} after epoch {loop.epoch}")
    writer.truncate_after(loop.epoch)
    if main:
        (run_dir / "summary.json").unlink(missing_ok=True)
    return OpenedRun(run_dir, state, loop, ckpt, writer)


def close_run(cfg: Config, job: Any, opened: OpenedRun, result: Any, *,
              compile_seconds: float, t_start: float, log=print,
              extra: Mapping[str, Any] | None = None) -> RunResult:
    """Finish a trained run: test metrics of the final and the best state,
    the job's artifacts, ``curves.png``, baselines and ``summary.json``.

    Args:
      result: what :func:`~jaxdl.loop.fit` returned (or a population
        member's equivalent: ``state``, ``best_state``, ``loop``, ``status``,
        ``reason``, ``warnings``).
      extra: more entries for ``summary.json``.
    """
    run_dir, ckpt, writer = opened.run_dir, opened.checkpointer, opened.writer
    loop = result.loop
    warnings = list(result.warnings)   # extras that failed; the run's record says so
    final = _by_split(loop.last_metrics)
    best = _by_split(loop.best_metrics)
    if result.status != "diverged":
        final["test"] = job.test(result.state)
        writer.write(loop.epoch, loop.steps, "test", final["test"])
    best_state = result.best_state
    if best_state is None and ckpt is not None and loop.best_epoch is not None:
        best_state, _ = ckpt.restore(loop.best_epoch, job.new_state())
    if best_state is not None:
        best["test"] = job.test(best_state)
    if ckpt is not None:
        ckpt.close()
    use_state = best_state if best_state is not None else (
        result.state if result.status != "diverged" else None)
    main = parallel.is_main()
    if use_state is not None and main:
        try:
            job.artifacts(use_state, run_dir, log)
        except Exception as e:  # noqa: BLE001 - an extra must not cost the run's record
            warnings.append(f"samples/plots not written: {type(e).__name__}: {e}")
            log(f"warning: {warnings[-1]}")
    rows = read_metrics(run_dir / "metrics.jsonl") if main else []
    if rows:
        plot_curves(rows, run_dir / "curves.png", title=f"{cfg.name} ({result.status})")
    try:
        baselines = job.baselines()
    except Exception as e:  # noqa: BLE001 - a reference must not cost the run's record
        warnings.append(f"baselines not computed: {type(e).__name__}: {e}")
        log(f"warning: {warnings[-1]}")
        baselines = {}
    wall = time.perf_counter() - t_start
    summary = {
        "status": result.status,
        "reason": result.reason,
        "name": cfg.name,
        "fingerprint": config_lib.fingerprint(cfg),
        "epochs": loop.epoch,
        "best_epoch": loop.best_epoch,
        "monitor": cfg.train.monitor,
        "mode": config_lib.monitor_mode(cfg.train),
        "final": final,
        "best": best,
        **({"baselines": baselines} if baselines else {}),
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(compile_seconds, 3),
        "train_seconds": round(loop.train_seconds, 3),
        "eval_seconds": round(loop.eval_seconds, 3),
        "seconds_per_epoch": round(loop.train_seconds / max(1, loop.epoch), 4),
        # RL: environment steps of all agents (loop.steps counts one agent's).
        "steps_per_second": round(loop.steps * getattr(job, "agents", 1)
                                  / max(loop.train_seconds, 1e-9), 2),
        "run_dir": str(run_dir),
        **(dict(extra) if extra else {}),
        **({"warnings": warnings} if warnings else {}),
    }
    if main:
        write_json(run_dir / "summary.json", summary)
    log(one_line(summary))
    return RunResult(result.status, run_dir, summary, result.state)


def _sequence_artifacts(cfg: Config, engine: Engine, dataset: data_lib.Dataset, params: Any,
                        run_dir: Path, log) -> None:
    """Text: ``samples.txt`` (one sample per ``cfg.sample`` temperature).
    Sine: ``predictions.png`` (test sequences: input, truth, prediction)."""
    if dataset.vocab is not None:
        from jaxdl import generate

        sc = cfg.sample
        prompt_ids = dataset.vocab.encode(sc.prompt)
        parts = []
        for i, temperature in enumerate(sc.temperatures):
            ids = generate.generate(engine.model, params, prompt_ids, sc.length,
                                    jax.random.fold_in(jax.random.key(cfg.seed), i),
                                    temperature=temperature, top_k=sc.top_k)
            text = sc.prompt + dataset.vocab.decode(ids[0])
            parts.append(f"=== temperature {temperature:g}"
                         f"{f', top_k {sc.top_k}' if sc.top_k else ''} ===\n{text}\n")
        (run_dir / "samples.txt").write_text("\n".join(parts), encoding="utf-8")
        preview = parts[min(1, len(parts) - 1)].splitlines()[1:6]
        log("sample: " + " / ".join(line for line in preview if line.strip())[:200])
    elif dataset.name == "sine":
        from jaxdl.metrics import plot_sequences

        k = min(4, len(dataset.test))
        pred = engine.model.apply({"params": params}, jnp.asarray(dataset.test.x[:k]))
        plot_sequences(dataset.test.x[:k, :, 0], dataset.test.y[:k, :, 0],
                       np.asarray(pred)[:, :, 0], run_dir / "predictions.png",
                       title=f"{cfg.name}: {cfg.model.name} next-value predictions (test)")


def _by_split(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, v in flat.items():
        split, _, name = k.partition("_")
        out.setdefault(split, {})[name] = v
    return out


def one_line(summary: Mapping[str, Any]) -> str:
    """``completed | 10 epochs 35.2 s (compile 2.1 s) | val_accuracy 0.9812 ...``"""
    parts = [summary["status"],
             f"{summary['epochs']} epochs {summary['wall_seconds']:.1f} s "
             f"(compile {summary['compile_seconds']:.1f} s)"]
    mon = summary["monitor"]
    split, _, name = mon.partition("_")
    best = summary["best"].get(split, {}).get(name)
    if best is not None:
        parts.append(f"best {mon} {best:.4f} @ epoch {summary['best_epoch']}")
    for split in ("val", "test"):
        m = summary["final"].get(split)
        if m:
            parts.append(" ".join(f"{split}_{k} {v:.4f}" for k, v in m.items()))
    for split, refs in summary.get("baselines", {}).items():
        if split == "test":
            parts.append(" ".join(f"baseline {k} {v:.4f}" for k, v in refs.items()))
    if summary["status"] == "diverged":
        parts.append(summary["reason"])
    parts.append(summary["run_dir"])
    return " | ".join(parts)


@dataclasses.dataclass
class Restored:
    """A trained model read back from a run directory.

    Attributes:
      config: the run's config.
      model: the Flax module (``model.apply({"params": params, ...}, x)``).
      params: the Flax params of the chosen checkpoint.
      batch_stats: batch-norm statistics ({} without batch norm).
      state: the whole :class:`TrainState`.
      epoch: which epoch's checkpoint was restored.
      dataset: the loaded dataset (normalised splits, normalizer).
      engine: the compiled engine (for :meth:`Engine.evaluate`).
    """

    config: Config
    model: Any
    params: Any
    batch_stats: Any
    state: TrainState
    epoch: int
    dataset: data_lib.Dataset
    engine: Engine

    def predict(self, x: np.ndarray | jax.Array) -> jax.Array:
        """Model outputs for already-normalised inputs ``x [batch, ...]``."""
        variables = {"params": self.params}
        if jax.tree_util.tree_leaves(self.batch_stats):
            variables["batch_stats"] = self.batch_stats
        return self.model.apply(variables, jnp.asarray(x), train=False)


def run_config(run_dir: str | Path) -> Config:
    """The config saved in a run directory.

    Raises:
      CheckpointError: not a run directory.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    return config_lib.load(path)


def checkpoint_dir(run_dir: str | Path, which: str) -> Path:
    """``run_dir/checkpoints``, checked before anything expensive is built.

    Raises:
      ValueError: ``which`` is not ``"best"`` or ``"latest"``.
      CheckpointError: the run wrote no checkpoints.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.exists():
        raise CheckpointError(f"{run_dir} has no checkpoints (checkpoint.enabled was false?)")
    return ckpt_dir


def restore_state(ckpt_dir: Path, which: str, make_state) -> tuple[Any, int]:
    """``(state, epoch)`` of the best or latest checkpoint in ``ckpt_dir``,
    restored into the structure of ``make_state()`` (only traced, with
    ``jax.eval_shape``: no arrays are built).

    Raises:
      CheckpointError: no finished checkpoint, or one that does not fit.
    """
    with Checkpointer(ckpt_dir, read_only=True) as ckpt:
        epoch = ckpt.best_epoch() if which == "best" else ckpt.latest_epoch()
        if epoch is None:
            raise CheckpointError(f"{ckpt_dir} holds no finished checkpoint")
        state, _ = ckpt.restore(epoch, jax.eval_shape(make_state))
    return state, epoch


def restore(run_dir: str | Path, which: str = "best", *,
            data_dir: str | None = None) -> Restored:
    """Read back a run's model from its best (or latest) checkpoint.

    Args:
      run_dir: a directory written by :func:`run`.
      which: ``"best"`` or ``"latest"``.
      data_dir: override the data directory saved in the config.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if cfg.algorithm != "supervised":
        how = ("jaxdl.gan_run (sample_grid, evaluate)" if cfg.algorithm == "gan"
               else "jaxdl.rl_run.evaluate")
        raise ConfigError(f"{run_dir} is a {cfg.algorithm} run; read it back with {how}",
                          str(run_dir))
    if data_dir is not None:
        cfg = cfg.replace({"data.dir": data_dir})
    ckpt_dir = checkpoint_dir(run_dir, which)
    dataset = data_lib.load(cfg.data, cfg.seed)
    engine = build_engine(cfg, dataset)
    state, epoch = restore_state(ckpt_dir, which,
                                 lambda: new_state(cfg, engine, dataset, pretrained=False))
    return Restored(cfg, engine.model, state.params, state.batch_stats, state, epoch, dataset,
                    engine)


def evaluate(run_dir: str | Path, which: str = "best", splits: tuple[str, ...] = ("test",),
             *, data_dir: str | None = None, episodes: int | None = None,
             seed: int | None = None) -> dict[str, dict[str, float]]:
    """Metrics of a run's best (or latest) checkpoint on the given splits.

    Args:
      episodes, seed: RL runs only: greedy episodes per agent (default the
        config's ``rl.test_episodes``) and their randomness (default: the
        run's own test episodes).
    Returns:
      ``{"test": {"loss": ..., "accuracy": ...}, ...}`` plus ``"epoch"`` (GAN
      runs: ``frechet``, ``confident``, ``class_entropy`` per split, see
      :func:`jaxdl.gan_run.evaluate`; RL runs: ``{"test": {"return", ...},
      "agents": [...]}``, see :func:`jaxdl.rl_run.evaluate`).
    """
    cfg = run_config(run_dir)
    if cfg.algorithm in config_lib.RL_ALGORITHMS:
        from jaxdl import rl_run

        if tuple(splits) != ("test",):
            raise ConfigError("an RL run is evaluated on fresh episodes, not data splits; "
                              "use --episodes N", str(run_dir))
        if data_dir is not None:
            raise ConfigError("--data-dir: an RL run reads no dataset", str(run_dir))
        return rl_run.evaluate(run_dir, which, episodes, seed)
    for name, value in (("--episodes", episodes), ("--seed", seed)):
        if value is not None:
            raise ConfigError(f"{name} is for RL runs; this is a {cfg.algorithm} run",
                              str(run_dir))
    if cfg.algorithm == "gan":
        from jaxdl import gan_run

        return gan_run.evaluate(run_dir, which, splits, data_dir=data_dir)
    r = restore(run_dir, which, data_dir=data_dir)
    out: dict[str, Any] = {"epoch": r.epoch}
    available = r.dataset.splits()
    for split in splits:
        if split not in available:
            raise ConfigError(f"this run has no {split!r} split (data.val_fraction is "
                              f"{r.config.data.val_fraction}); available: "
                              f"{', '.join(available)}", str(run_dir))
        s = available[split]
        out[split] = r.engine.evaluate(r.state, r.engine.put_eval_split(s.x, s.y))
    return out
