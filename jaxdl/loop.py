"""``fit``: the one Python training loop.

Epochs run through a :class:`Job` (an algorithm compiled for one shape,
with its data); after each evaluation the loop writes metrics, checks for divergence, tracks the
monitored metric (early stopping, best checkpoint), saves checkpoints and
asks the ``reporter`` whether to stop. Everything it needs to continue after
a restart is in the checkpoint's ``meta``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax

from jaxdl.checkpoint import Checkpointer
from jaxdl.config import Config, monitor_mode
from jaxdl.metrics import MetricsWriter

__all__ = ["Book", "FitResult", "Job", "LoopState", "Reporter", "chunk_lengths", "fit", "run_keys"]

Reporter = Callable[[int, Mapping[str, float]], bool]
"""``reporter(epoch, metrics) -> stop``: called after each evaluation with
flat metrics (``train_loss``, ``val_accuracy``, ...); True stops the run.

A reporter whose attribute ``discards_stopped`` is true says that its
caller deletes the checkpoints of a run it stops (a sweep's pruned trial):
such a run's last checkpoint, and a best one held back, are not written."""


@dataclasses.dataclass
class LoopState:
    """The loop's bookkeeping; saved in each checkpoint's ``meta``."""

    epoch: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    best_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    last_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: int = 0
    # Set when the run stopped before its last epoch (early_stopped or
    # stopped), so a resume from that checkpoint ends as the run did.
    status: str | None = None
    reason: str | None = None

    def to_meta(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in names})


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` ends with.

    Attributes:
      state: the final state (on device).
      best_state: host copy of the state at the best epoch (None if no
        epoch was evaluated).
      loop: final bookkeeping (best value/epoch, last metrics, timings).
      status: ``completed``, ``early_stopped``, ``diverged`` or ``stopped``
        (by the reporter).
      reason: one line saying why the run ended.
      warnings: extras that failed without stopping the run (also logged).
    """

    state: Any
    best_state: Any
    loop: LoopState
    status: str
    reason: str
    warnings: list[str] = dataclasses.field(default_factory=list)


def run_keys(seed: int) -> dict[str, jax.Array]:
    """The run's random streams, split by purpose from the config seed
    (``latents``: a GAN's fixed scoring and grid latents)."""
    root = jax.random.key(seed)
    return {"init": jax.random.fold_in(root, 0), "dropout": jax.random.fold_in(root, 1),
            "shuffle": jax.random.fold_in(root, 2), "latents": jax.random.fold_in(root, 3)}


def chunk_lengths(total: int, chunks: int) -> list[int]:
    """``total`` split into ``chunks`` near-equal whole parts, the longer
    first: 10 into 4 is ``[3, 3, 2, 2]``. At most two distinct lengths, so
    a program compiled per length is compiled at most twice."""
    if chunks < 1 or total < chunks:
        raise ValueError(f"cannot split {total} into {chunks} non-empty chunks")
    base, extra = divmod(total, chunks)
    return [base + 1] * extra + [base] * (chunks - extra)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Job(Protocol):
    """What :func:`fit` trains: one algorithm on one dataset, compiled for
    one shape (``jaxdl.experiment.SupervisedJob``, ``jaxdl.gan_run.GANJob``).

    Attributes:
      divergence_hint: what to try when a metric becomes NaN/Inf.
    """

    divergence_hint: str

    def epoch_steps(self, epoch: int) -> int:
        """Steps in epoch ``epoch`` (1-based): optimizer steps (GAN:
        generator updates; RL: environment steps per agent, which differ
        by one update between chunks)."""

    def compile(self, state: Any, *, progress: bool) -> None:
        """Compile what an epoch and an evaluation call, before the clock starts."""

    def train_epoch(self, state: Any, epoch: int,
                    on_progress: Callable[[int, Mapping[str, float]], None] | None
                    ) -> tuple[Any, dict[str, float]]:
        """One epoch (``state`` is donated); the epoch's mean train metrics."""

    def evaluate(self, state: Any) -> dict[str, dict[str, float]]:
        """Metrics per evaluated split (``{"val": {...}}``; ``{}`` for none)."""

    def after_epoch(self, epoch: int, state: Any) -> None:
        """Per-epoch extras (a GAN's sample grid), after the checkpoint; an
        exception here is logged, not raised."""


def fit(cfg: Config, job: Job, state: Any, *, loop: LoopState | None = None,
        reporter: Reporter | None = None, checkpointer: Checkpointer | None = None,
        writer: MetricsWriter | None = None, progress: bool = False,
        log: Callable[[str], None] = print) -> FitResult:
    """Train ``state`` from ``loop.epoch`` to ``cfg.train.epochs``.

    Args:
      cfg: the experiment config (train and checkpoint sections are read).
      job: the compiled algorithm and its data (see :class:`Job`).
      state: the state to continue from (donated).
      loop: bookkeeping to resume from (default: a fresh run).
      reporter: see :data:`Reporter`.
      checkpointer, writer: where checkpoints and metric rows go (optional).
      progress: show a tqdm bar per epoch.
      log: where one-line messages go.
    """
    tc = cfg.train
    loop = loop or LoopState()
    if loop.status is not None:   # resumed from the checkpoint where it stopped
        return FitResult(state, None, loop, loop.status, loop.reason or loop.status)
    warnings: list[str] = []
    book = Book(cfg, loop, job.divergence_hint, reporter=reporter, checkpointer=checkpointer,
                writer=writer)
    # Compile before the clock and the progress bar start.
    job.compile(state, progress=progress)
    try:
        for epoch in range(loop.epoch + 1, tc.epochs + 1):
            epoch_steps = job.epoch_steps(epoch)
            bar = _progress_bar(epoch, tc.epochs, epoch_steps) if progress else None
            t0 = time.perf_counter()
            state, train_m = job.train_epoch(
                state, epoch, _bar_updater(bar) if bar is not None else None)
            t1 = time.perf_counter()
            evaluated = job.evaluate(state)
            loop.train_seconds += t1 - t0
            loop.eval_seconds += time.perf_counter() - t1
            stop = book.record(epoch, epoch_steps, train_m, evaluated,
                               lambda s=state: s)
            if bar is not None:
                bar.set_postfix_str(_fmt(loop.last_metrics), refresh=False)
                bar.close()
            if book.status == "diverged":
                break
            try:
                job.after_epoch(epoch, state)
            except Exception as e:  # noqa: BLE001 - an extra must not cost the run
                warnings.append(f"epoch {epoch}'s extras (sample grid) not written: "
                                f"{type(e).__name__}: {e}")
                log(f"warning: {warnings[-1]}")
            if not progress:
                log(f"epoch {epoch}/{tc.epochs}  {_fmt(loop.last_metrics)}")
            if stop:
                break
    finally:
        book.flush()
    return FitResult(state, book.best_state, loop, book.status, book.reason, warnings)


class Book:
    """One run's bookkeeping after each evaluation, shared by :func:`fit`
    and the members of a population (:mod:`jaxdl.population`): metric rows,
    divergence, the best epoch, early stopping, the reporter, checkpoints.

    A new best epoch's checkpoint is written with the next periodic one
    (``checkpoint.every``, the last epoch, or :meth:`flush`), from a host
    copy: a resume from the periodic checkpoint re-finds it anyway, and a
    save per improvement cost more than the epochs of a small model.

    Attributes:
      status, reason: ``completed`` until the run diverges, stops early or
        is stopped by the reporter.
      best_state: host copy of the state at the best epoch (None before one).
    """

    def __init__(self, cfg: Config, loop: LoopState, divergence_hint: str, *,
                 reporter: Reporter | None = None, checkpointer: Checkpointer | None = None,
                 writer: MetricsWriter | None = None):
        self.cfg, self.loop, self.hint = cfg, loop, divergence_hint
        self.reporter, self.checkpointer, self.writer = reporter, checkpointer, writer
        self.status, self.reason = "completed", f"trained {cfg.train.epochs} epochs"
        self.best_state: Any = None
        self._pending: tuple | None = None   # (epoch, host state, meta, metrics)

    def record(self, epoch: int, epoch_steps: int, train_m: Mapping[str, float],
               evaluated: Mapping[str, Mapping[str, float]], get_state: Callable[[], Any]
               ) -> bool:
        """Book epoch ``epoch``; True when the run ends here (diverged,
        early stopped or stopped by the reporter: see :attr:`status`).

        Args:
          get_state: the state after the epoch (called only for a new best
            or a checkpoint).
        """
        tc, loop = self.cfg.train, self.loop
        metrics = {f"train_{k}": v for k, v in train_m.items()}
        for split, values in evaluated.items():
            metrics.update({f"{split}_{k}": v for k, v in values.items()})
        loop.steps += epoch_steps
        loop.epoch = epoch
        loop.last_metrics = metrics
        if self.writer is not None:
            step = int(loop.steps)
            self.writer.write(epoch, step, "train", train_m)
            for split, values in evaluated.items():
                self.writer.write(epoch, step, split, values)

        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            self.flush()
            last = loop.best_epoch if self.checkpointer is None else \
                self.checkpointer.latest_epoch()
            self.status = "diverged"
            self.reason = (f"{bad[0]} became {metrics[bad[0]]} at epoch {epoch}: the loss "
                           f"diverged ({self.hint}); last good checkpoint: epoch {last}")
            return True

        # An RL chunk in which no episode ended has no train_return yet:
        # such an epoch neither improves nor counts against patience.
        value = metrics.get(tc.monitor)
        is_best = value is not None and _improved(value, loop.best_value, monitor_mode(tc),
                                                  tc.min_delta)
        if is_best:
            loop.best_value, loop.best_epoch, loop.wait = value, epoch, 0
            loop.best_metrics = dict(metrics)
            self.best_state = jax.device_get(get_state())
        elif value is not None:
            loop.wait += 1
        stop_early = tc.patience is not None and loop.wait >= tc.patience
        stop_asked = self.reporter is not None and bool(self.reporter(epoch, dict(metrics)))
        if stop_early:
            self.status = "early_stopped"
            self.reason = (f"{tc.monitor} did not improve by more than {tc.min_delta} for "
                           f"{tc.patience} epochs (best {loop.best_value:.6g} at epoch "
                           f"{loop.best_epoch})")
        elif stop_asked:
            self.status = "stopped"
            self.reason = f"stopped by the reporter after epoch {epoch}"
        if stop_early or stop_asked:
            loop.status, loop.reason = self.status, self.reason
        last_epoch = epoch == tc.epochs or stop_early or stop_asked
        if self.checkpointer is not None:
            if stop_asked and not stop_early and getattr(self.reporter, "discards_stopped",
                                                         False):
                self._pending = None   # deleted once the caller records the stop
            elif last_epoch or epoch % self.cfg.checkpoint.every == 0:
                self.flush()
                self.checkpointer.save(epoch, get_state(), loop.to_meta(), metrics,
                                       is_best=is_best)
            elif is_best:
                self._pending = (epoch, self.best_state, loop.to_meta(), metrics)
        return stop_early or stop_asked

    def flush(self) -> None:
        """Write a best epoch's checkpoint still held back."""
        if self._pending is not None and self.checkpointer is not None:
            self.checkpointer.save(*self._pending, is_best=True)
        self._pending = None


def _fmt(metrics: Mapping[str, float]) -> str:
    short = {"accuracy": "acc"}
    parts = []
    for k, v in metrics.items():
        split, _, name = k.partition("_")
        label = f"{'' if split == 'train' else split + '_'}{short.get(name, name)}"
        parts.append(f"{label}={v:.4f}" if math.isfinite(v) else f"{label}={v}")
    return " ".join(parts)


def _progress_bar(epoch: int, epochs: int, steps: int):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=True,
                dynamic_ncols=True, mininterval=0.25)


def _bar_updater(bar):
    lock = threading.Lock()
    shown = {"done": 0}

    def update(done: int, metrics: Mapping[str, float]) -> None:
        # Called from the runtime's callback thread during a scan and from
        # the main thread between compiled calls.
        with lock:
            if done <= shown["done"]:
                return
            bar.update(done - shown["done"])
            shown["done"] = done
            bar.set_postfix_str(_fmt({f"train_{k}": v for k, v in metrics.items()}),
                                refresh=False)

    return update
