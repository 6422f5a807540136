"""Supervised learning: train state, pure steps, and compiled epochs.

The pieces, usable on their own in a hand-written loop::

    model = jaxdl.models.make(cfg.model, outputs=10)
    tx = jaxdl.optim.make(cfg.optim, steps_per_epoch, cfg.train.epochs)
    task = Task("classification")
    state = init_state(model, tx, jax.random.key(0), x[:1], dropout=0.1)
    step = jax.jit(make_train_step(model, tx, task), donate_argnums=0)
    state, metrics = step(state, (xb, yb), jax.random.key(1))
    metrics = jax.jit(make_eval_step(model, task))(state, (xb, yb, weights))

:class:`Engine` wraps the same functions into whole epochs with as few
Python round trips as the model and backend allow (see
:func:`default_steps_per_call`), compiles each once, and is cached per
*shape* so runs that differ only in hyperparameter values reuse it.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import losses
from jaxdl.compilation_cache import Programs
from jaxdl.config import TASK_LOSSES, TASK_METRICS
from jaxdl.models.layers import GatedRate
from jaxdl.parallel import Layout, gather
from jaxdl.transfer import ParamGroups

__all__ = [
    "Engine",
    "EvalSplit",
    "Task",
    "TrainState",
    "cast_floating",
    "compute_dtype",
    "default_steps_per_call",
    "init_state",
    "make_eval_step",
    "make_train_step",
]

Batch = tuple[jax.Array, ...]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree of arrays.

    No functions live here (the model and optimizer are closed over by the
    step functions), so states of several trials stack along a leading axis
    and checkpoint as plain arrays.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: the model's ``"params"`` collection.
      opt_state: optax state; injected hyperparameters live in it.
      batch_stats: the ``"batch_stats"`` collection ({} without batch norm).
      hparams: per-run data the step reads: ``dropout`` (rate) and ``l2``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    batch_stats: Any
    hparams: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
    """How outputs meet targets: the loss and the metrics for one task.

    Attributes:
      kind: ``"classification"``, ``"binary"`` or ``"regression"``.
      loss: ``"auto"`` (the task's natural loss), ``"cross_entropy"``,
        ``"bce"`` or ``"mse"`` (on probabilities for classification tasks).
    """

    kind: str
    loss: str = "auto"

    def __post_init__(self):
        if self.kind not in TASK_LOSSES:
            raise ValueError(f"unknown task {self.kind!r}; valid: {', '.join(TASK_LOSSES)}")
        if self.loss not in TASK_LOSSES[self.kind]:
            raise ValueError(f"loss {self.loss!r} does not fit a {self.kind} task; "
                             f"valid: {', '.join(TASK_LOSSES[self.kind])}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return TASK_METRICS[self.kind]

    def loss_fn(self, outputs: jax.Array, targets: jax.Array,
                weights: jax.Array | None = None) -> jax.Array:
        """Scalar loss of ``outputs [batch, outputs]`` against targets."""
        if self.kind == "regression":
            return losses.mse(outputs, targets, weights)
        if self.kind == "binary":
            if self.loss == "mse":
                return losses.mse(nn.sigmoid(outputs[:, 0]), targets, weights)
            return losses.binary_cross_entropy(outputs, targets, weights)
        if self.loss == "mse":
            onehot = jax.nn.one_hot(targets, outputs.shape[-1])
            return losses.mse(nn.softmax(outputs), onehot, weights)
        return losses.cross_entropy(outputs, targets, weights)

    def metrics(self, outputs: jax.Array, targets: jax.Array,
                weights: jax.Array | None = None) -> dict[str, jax.Array]:
        """Metric name -> weighted mean over the batch."""
        out = {"loss": self.loss_fn(outputs, targets, weights)}
        if self.kind == "classification":
            out["accuracy"] = losses.accuracy(outputs, targets, weights)
        elif self.kind == "binary":
            out["accuracy"] = losses.binary_accuracy(outputs, targets, weights)
        return out


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               sample_x: jax.Array, *, dropout: float = 0.0, l2: float = 0.0,
               groups: ParamGroups | None = None) -> TrainState:
    """A fresh :class:`TrainState`.

    Args:
      model: the Flax module.
      tx: the optimizer (from :func:`jaxdl.optim.make`).
      rng: init key.
      sample_x: one batch of inputs, ``[batch, ...]`` (only its shape is used).
      dropout, l2: initial values of the per-run hyperparameters.
      groups: frozen parameters and learning-rate multipliers
        (:func:`jaxdl.transfer.param_groups`); the optimizer state holds
        nothing for frozen parameters.
    """
    variables = model.init({"params": rng}, sample_x, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params if groups is None else groups.trainable(params)),
        batch_stats=variables.get("batch_stats", {}),
        hparams={"dropout": jnp.asarray(dropout, jnp.float32),
                 "l2": jnp.asarray(l2, jnp.float32)},
    )


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype`` (integer
    leaves, e.g. token ids, untouched); ``dtype`` None returns it as is."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def compute_dtype(precision: str) -> Any:
    """``"fp32"`` -> None (compute in the params' float32), ``"bf16"`` ->
    ``jnp.bfloat16``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: valid: fp32, bf16")
    return jnp.bfloat16 if precision == "bf16" else None


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, task: Task, *,
                    dtype: Any = None, groups: ParamGroups | None = None
                    ) -> Callable[[TrainState, Batch, jax.Array],
                                  tuple[TrainState, dict[str, jax.Array]]]:
    """``train_step(state, (x, y), rng) -> (state, metrics)``, pure.

    ``train_step(..., dropout_on=on)`` gates dropout with an unbatched bool
    (a vmapped population: :class:`jaxdl.models.layers.GatedRate`).

    With ``groups`` (:func:`jaxdl.transfer.param_groups`) the optimizer sees
    only the trainable parameters, each group's updates are scaled by its
    learning-rate multiplier, and frozen parameters (and the batch-norm
    statistics of frozen modules) are carried over untouched.

    With ``dtype`` (``jnp.bfloat16``: mixed precision) the forward and
    backward passes run in ``dtype``: the float32 master params, batch-norm
    statistics and inputs are cast on the way in, the outputs back to
    float32 for the loss, and the gradients (through the casts) and the
    optimizer update stay float32. bfloat16 keeps float32's exponent range,
    so no loss scaling is needed.

    The dropout key for a step is ``fold_in(rng, state.step)``: pass the same
    ``rng`` every step (a run's dropout stream), and a resumed run draws
    exactly the masks the uninterrupted run drew.

    Metrics are batch means: ``loss`` (the task loss, without the L2 term)
    and ``accuracy`` for classification.
    """
    def train_step(state: TrainState, batch: Batch, rng: jax.Array,
                   dropout_on: jax.Array | None = None):
        x, y = batch[0], batch[1]
        rate = state.hparams["dropout"]
        if dropout_on is not None:   # a population's unbatched gate (see GatedRate)
            rate = GatedRate(rate, dropout_on)
        has_bn = bool(jax.tree_util.tree_leaves(state.batch_stats))
        key = jax.random.fold_in(rng, state.step)

        def loss_of(params):
            variables = {"params": cast_floating(params, dtype)}
            if has_bn:
                variables["batch_stats"] = cast_floating(state.batch_stats, dtype)
            out = model.apply(variables, cast_floating(x, dtype), train=True,
                              dropout_rate=rate, rngs={"dropout": key},
                              mutable=["batch_stats"] if has_bn else False)
            outputs, updates = out if has_bn else (out, {})
            if dtype is not None:
                outputs = outputs.astype(jnp.float32)
                updates = cast_floating(updates, jnp.float32)
            data_loss = task.loss_fn(outputs, y)
            # Always computed (0 when off), so l2 = 0 and l2 > 0 share one
            # program; measured cheaper than skipping it with a lax.cond,
            # which copies the params into the branch.
            penalty = state.hparams["l2"] * losses.l2_penalty(params)
            return data_loss + penalty, (outputs, data_loss, updates)

        grads, (outputs, data_loss, updates) = jax.grad(loss_of, has_aux=True)(state.params)
        batch_stats = updates.get("batch_stats", state.batch_stats)
        if groups is None:
            step_updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, step_updates)
        else:
            trainable = groups.trainable(state.params)
            step_updates, opt_state = tx.update(groups.trainable(grads), state.opt_state,
                                                trainable)
            step_updates = groups.scale(step_updates)
            params = groups.merge(optax.apply_updates(trainable, step_updates), state.params)
            batch_stats = groups.keep_frozen_stats(batch_stats, state.batch_stats)
        metrics = task.metrics(outputs, y)
        metrics["loss"] = data_loss
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  batch_stats=batch_stats)
        return new_state, metrics

    return train_step


def make_eval_step(model: nn.Module, task: Task, *, dtype: Any = None
                   ) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """``eval_step(state, (x, y[, weights])) -> metrics``: weighted batch
    means plus ``"weight"``, the batch's total weight, so batches combine as
    ``sum(metric * weight) / sum(weight)``. ``dtype`` as for
    :func:`make_train_step`."""

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        x, y = batch[0], batch[1]
        w = batch[2] if len(batch) > 2 else jnp.ones((x.shape[0],), jnp.float32)
        variables = {"params": state.params}
        if jax.tree_util.tree_leaves(state.batch_stats):
            variables["batch_stats"] = state.batch_stats
        outputs = model.apply(cast_floating(variables, dtype), cast_floating(x, dtype),
                              train=False)
        if dtype is not None:
            outputs = outputs.astype(jnp.float32)
        metrics = task.metrics(outputs, y, w)
        metrics["weight"] = jnp.sum(w.astype(jnp.float32))
        return metrics

    return eval_step


def default_steps_per_call(model_name: str, backend: str, steps_per_epoch: int,
                           conv: str = "im2col") -> int:
    """How many train steps one compiled call runs, by measurement.

    The whole epoch in one ``lax.scan`` (one dispatch per epoch) is fastest
    for dense models everywhere and for convolutions lowered to im2col
    matmuls. The exception is XLA's own convolution on CPU: inside a scan
    loop it falls off XLA CPU's fast path (measured 1.73 s/step scanned vs
    72 ms/step called per step, Flax MNIST CNN, batch 128, 2 cores; im2col
    scanned: 39 ms/step), so it gets one step per call.

    Args:
      model_name: ``"mlp"`` or ``"cnn"``.
      backend: ``jax.default_backend()``.
      steps_per_epoch: steps in one epoch.
      conv: the CNN's convolution lowering (``"xla"`` or ``"im2col"``).
    """
    if model_name == "cnn" and conv == "xla" and backend == "cpu":
        return 1
    return max(1, steps_per_epoch)


class Engine:
    """Compiled epochs and evaluation for one experiment *shape*.

    Build one per (model structure, optimizer structure, data shapes, batch
    size) and reuse it: hyperparameter values are data in the state, so a
    second run with another learning rate or dropout rate compiles nothing
    (with ``dropout=False`` no rate draws masks: see below).

    Args:
      model, tx, task: as for :func:`make_train_step`.
      batch_size: examples per train step.
      n_train: training examples (the epoch drops the last partial batch);
        with ``window``, the length of the training stream.
      window: train on windows of this many steps cut from one stream
        ``x [n_train, ...]`` / ``y [n_train, ...]`` (text) at random offsets,
        drawn without replacement each epoch (None: ``x`` holds examples).
      epoch_examples: examples per epoch (default ``n_train``; with
        ``window``, ``n_train // window``, so each step is seen about once).
      steps_per_call: train steps per compiled call (a divisor is not
        required; a shorter tail call compiles once more).
      eval_batch_size: examples per evaluation step.
      scan_eval: evaluate a split in one scanned call (else one call per batch).
      layout: a device mesh to split each batch over (data parallel;
        :func:`jaxdl.parallel.layout`), None for one device. With host
        input, :meth:`train_epoch` gathers each compiled call's batches on
        the host and transfers them ``layout.prefetch`` calls ahead.
      precision: ``"fp32"`` or ``"bf16"`` (see :func:`make_train_step`).
      groups: frozen parameters and per-group learning rates (see
        :func:`make_train_step`), None for all trainable at one rate.
      dropout: compile the dropout masks into the train step (each step
        still skips them at run time while the state's rate is 0). False
        leaves them out, whatever the state's rate: a model trained without
        dropout compiles a smaller step (about 0.3 s less for a small MLP
        on CPU). :func:`jaxdl.experiment.build_engine` passes
        ``model.dropout > 0``.
    """

    def __init__(self, model: nn.Module, tx: optax.GradientTransformation, task: Task, *,
                 batch_size: int, n_train: int, steps_per_call: int, eval_batch_size: int,
                 scan_eval: bool = True, window: int | None = None,
                 epoch_examples: int | None = None, layout: Layout | None = None,
                 precision: str = "fp32", groups: ParamGroups | None = None,
                 dropout: bool = True):
        if window is not None and not 1 <= window <= n_train:
            raise ValueError(f"window {window} needs a training stream at least as long "
                             f"(have {n_train} steps)")
        if epoch_examples is None:
            epoch_examples = n_train if window is None else n_train // window
        if epoch_examples < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the {epoch_examples} "
                             "training examples; lower train.batch_size")
        self.model, self.tx, self.task = model, tx, task
        self.batch_size = batch_size
        self.n_train = n_train
        self.window = window
        # Indices a permutation draws from: examples, or window start offsets.
        self.n_starts = n_train if window is None else n_train - window + 1
        self.steps_per_epoch = min(epoch_examples, self.n_starts) // batch_size
        self.steps_per_call = max(1, min(steps_per_call, self.steps_per_epoch))
        self.eval_batch_size = eval_batch_size
        self.scan_eval = scan_eval
        self.layout = layout
        self.precision = precision
        dtype = compute_dtype(precision)
        self.groups = groups
        self.dropout = dropout
        self.train_step = make_train_step(model, tx, task, dtype=dtype, groups=groups)
        self.eval_step = make_eval_step(model, task, dtype=dtype)
        # Host input: the next epoch's first calls, prepared while this one
        # trains (see train_epoch's next_shuffle_key).
        self._ahead: tuple[bytes, collections.deque] | None = None
        # Steps between progress reports from inside a scanned epoch (about
        # 40 per epoch; a host callback each).
        self.progress_every = max(1, self.steps_per_epoch // 40)
        # Loop unrolling of the scanned epoch (measured no faster on CPU,
        # benchmarks/engine_modes.py); set before the first epoch compiles.
        self.scan_unroll = 1
        self._listener: Callable[[int, Mapping[str, float]], None] | None = None
        self.traces: dict[str, int] = {}
        self._programs = Programs()

    # -- traced functions (each counts its traces: a retrace is a recompile)

    def _count(self, name: str) -> None:
        self.traces[name] = self.traces.get(name, 0) + 1

    def init_state(self, rng: jax.Array, sample_x: jax.Array, *, dropout: float = 0.0,
                   l2: float = 0.0) -> TrainState:
        """:func:`init_state` for this engine's model and optimizer, compiled
        once per shape (initialising op by op compiled each op of a new
        shape: 1.3 s for a small MLP, most of a sweep trial's set-up)."""
        def init(rng, sample_x, dropout, l2):
            self._count("init")
            return init_state(self.model, self.tx, rng, sample_x, dropout=dropout, l2=l2,
                              groups=self.groups)

        args = (rng, jnp.asarray(sample_x), jnp.asarray(dropout, jnp.float32),
                jnp.asarray(l2, jnp.float32))
        if any(isinstance(a, jax.core.Tracer) for a in args):
            return init_state(self.model, self.tx, *args[:2], dropout=args[2], l2=args[3],
                              groups=self.groups)
        return self._get(("init",), lambda: init, args)(*args)

    def _permutation_fn(self, key: jax.Array) -> jax.Array:
        self._count("permutation")
        perm = jax.random.permutation(key, self.n_starts)
        return perm[: self.steps_per_epoch * self.batch_size].astype(jnp.int32)

    def _gather(self, x: jax.Array, y: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The batch at ``idx``: examples, or windows starting there."""
        if self.window is None:
            return x[idx], y[idx]
        pos = idx[:, None] + jnp.arange(self.window, dtype=idx.dtype)[None, :]
        return x[pos], y[pos]

    def _chunk_fn(self, length: int, progress: bool, fed: bool = False):
        """``run(state, x, y, perm, start, rng)``: ``length`` steps on batches
        gathered from the training set at ``perm``; or, ``fed``,
        ``run(state, xb, yb, start, rng)`` on batches ``[length, batch, ...]``
        the host prepared."""
        b = self.batch_size
        lay = self.layout

        def steps(state, batches, start, rng):
            self._count(f"train_chunk[{length}]" + ("+progress" if progress else "")
                        + ("+fed" if fed else ""))

            def body(state, i):
                batch = batches(i)
                if lay is not None:
                    batch = lay.constrain_batch(batch)
                state, metrics = self.train_step(state, batch, rng,
                                                 None if self.dropout else False)
                if lay is not None:
                    state = lay.constrain_state(state)
                    metrics = lay.constrain_replicated(metrics)
                if progress and length > 1:
                    # Live progress from inside a scanned epoch: a host
                    # callback every `progress_every` steps. It only reads
                    # values, so the numbers are those of the program without
                    # it (tested); but programs with host callbacks are not
                    # written to the persistent compilation cache, so it is
                    # compiled in only when a progress bar is showing.
                    done = start + i + 1
                    jax.lax.cond(done % self.progress_every == 0,
                                 lambda: jax.debug.callback(self._progress, done, metrics),
                                 lambda: None)
                return state, metrics

            if length == 1:
                state, metrics = body(state, jnp.zeros((), jnp.int32))
                return state, jax.tree_util.tree_map(lambda m: m[None], metrics)
            return jax.lax.scan(body, state, jnp.arange(length, dtype=jnp.int32),
                                unroll=self.scan_unroll)

        if fed:
            def run_fed(state, xb, yb, start, rng):
                return steps(state, lambda i: (xb[i], yb[i]), start, rng)
            return run_fed

        def run(state, x, y, perm, start, rng):
            def gathered(i):
                return self._gather(x, y, jax.lax.dynamic_slice_in_dim(perm, (start + i) * b, b))
            return steps(state, gathered, start, rng)

        return run

    def _host_take(self, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple]:
        """Host-side :meth:`_gather`: ``take(rows [..., b]) -> (x, y)``."""
        def take(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if self.window is not None:
                rows = rows[..., None] + np.arange(self.window, dtype=rows.dtype)
            return gather(x, rows), gather(y, rows)
        return take

    def _eval_fn(self, scan: bool, batch: int):
        lay = self.layout
        split = (lambda t: t) if lay is None else lay.constrain_batch
        settle = (lambda t: t) if lay is None else lay.constrain_replicated

        def run(state, x, y, w):
            self._count("eval")
            if not scan:
                return settle(self.eval_step(state, split((x, y, w))))

            def body(carry, i):
                sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * batch, batch)  # noqa: E731
                m = _weighted(self.eval_step(state, split((sl(x), sl(y), sl(w)))))
                return settle(jax.tree_util.tree_map(jnp.add, carry, m)), None

            zero = {k: jnp.zeros((), jnp.float32) for k in (*self.task.metric_names, "weight")}
            total, _ = jax.lax.scan(body, zero, jnp.arange(x.shape[0] // batch))
            return settle(total)

        return run

    # -- compilation (ahead of time, so compile seconds are measured apart)

    def _get(self, key: Any, make: Callable[[], Callable], args: tuple, donate: tuple = ()):
        return self._programs.get(key, make, args, donate)

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling, summed over the engine's life (a cached
        engine reused by a later run adds nothing)."""
        return self._programs.seconds

    # -- public API

    def _progress(self, done: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
        listener = self._listener
        if listener is not None:
            listener(int(done), {k: float(v) for k, v in metrics.items()})

    def _chunks(self) -> list[int]:
        """Lengths of the compiled calls that make up one epoch."""
        full, tail = divmod(self.steps_per_epoch, self.steps_per_call)
        return [self.steps_per_call] * full + ([tail] if tail else [])

    def compile(self, state: TrainState, x: jax.Array, y: jax.Array, shuffle_key: jax.Array,
                dropout_key: jax.Array, eval_splits: Mapping[str, EvalSplit] = (), *,
                progress: bool = False) -> float:
        """Compile everything an epoch (and evaluation) will call, without
        running it, so that timings and progress bars exclude compilation.

        Args:
          state: placed as :meth:`place` places it.
          x, y: the training set as :meth:`put_train` returned it.
        Returns:
          The seconds this call spent compiling (0 when already compiled).
        """
        before = self.compile_seconds
        self._get(("permutation",), lambda: self._permutation_fn, (shuffle_key,))
        progress = progress and self.layout is None
        start = jnp.zeros((), jnp.int32)
        dropout_key = self._put_key(dropout_key)
        for length in sorted(set(self._chunks())):
            if self.host_input:
                xb, yb = (jax.ShapeDtypeStruct((length, *a.shape), a.dtype,
                                               sharding=self.layout.batch_sharding(axis=1))
                          for a in self._host_take(x, y)(np.zeros((self.batch_size,), np.int64)))
                self._train_callable(length, progress, (state, xb, yb, start, dropout_key))
            else:
                perm = jax.ShapeDtypeStruct(
                    (self.steps_per_epoch * self.batch_size,), jnp.int32,
                    sharding=None if self.layout is None else self.layout.replicated)
                self._train_callable(length, progress, (state, x, y, perm, start, dropout_key))
        for split in dict(eval_splits).values():
            self._eval_callable(state, split)
        return self.compile_seconds - before

    @property
    def host_input(self) -> bool:
        """Whether batches are gathered on the host (a layout with host input)."""
        return self.layout is not None and self.layout.input == "host"

    def _put_key(self, key: jax.Array) -> jax.Array:
        return key if self.layout is None else self.layout.place(key, self.layout.replicated)

    def place(self, state: Any) -> Any:
        """``state`` (device or host values) on this engine's devices:
        unchanged without a layout; else global arrays, parameters and
        optimizer state replicated (or split on the fsdp axis)."""
        return state if self.layout is None else self.layout.place(state)

    def put_train(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """The training set as :meth:`train_epoch` reads it: on the device
        (replicated over a layout's mesh), or kept on the host for host
        input."""
        if self.host_input:
            return np.asarray(x), np.asarray(y)
        if self.layout is None:
            return jnp.asarray(x), jnp.asarray(y)
        return self.layout.place((np.asarray(x), np.asarray(y)), self.layout.replicated)

    def train_epoch(self, state: TrainState, x: jax.Array, y: jax.Array, shuffle_key: jax.Array,
                    dropout_key: jax.Array,
                    on_progress: Callable[[int, Mapping[str, float]], None] | None = None, *,
                    next_shuffle_key: jax.Array | None = None
                    ) -> tuple[TrainState, dict[str, float]]:
        """One epoch over ``x [n, ...]``, ``y [n, ...]`` (from :meth:`put_train`).

        Args:
          state: donated; do not reuse the argument.
          shuffle_key: this epoch's permutation key.
          dropout_key: the run's dropout stream (folded with the step).
          on_progress: called with (steps done in this epoch, that step's
            metrics as floats) every ``progress_every`` steps inside a scan
            (from a runtime thread; single device only), at most 4 times a
            second between compiled calls, and at the end of the epoch.
          next_shuffle_key: host input: the next epoch's key, so that its
            first calls' batches are prepared while this epoch trains.
        Returns:
          The new state and the epoch's mean train metrics (host floats;
          NaN when a step diverged).
        """
        perm_fn = self._get(("permutation",), lambda: self._permutation_fn, (shuffle_key,))
        progress = on_progress is not None
        dropout_key = self._put_key(dropout_key)
        lengths = self._chunks()
        feed = ahead = None
        if self.host_input:
            take = self._host_take(x, y)
            feed = self._take_ahead(shuffle_key)
            # The next epoch's order is computed now, ahead of this epoch's
            # calls in the device's queue, so reading it later waits for nothing.
            ahead = None if next_shuffle_key is None else perm_fn(next_shuffle_key)
            if feed is None:
                feed = self._feed(take, perm_fn(shuffle_key), lengths)
        else:
            perm = perm_fn(shuffle_key)
            if self.layout is not None:
                perm = self.layout.place(perm, self.layout.replicated)
        done, chunks = 0, []
        self._listener = on_progress if self.layout is None else None
        last_report = time.perf_counter()
        try:
            for i, length in enumerate(lengths):
                start = jnp.asarray(done, jnp.int32)
                if feed is not None:
                    args = (state, *feed.pop(), start, dropout_key)
                else:
                    args = (state, x, y, perm, start, dropout_key)
                fn = self._train_callable(length, progress and self.layout is None, args)
                state, metrics = fn(*args)
                if feed is not None:
                    # While the device runs this call, the host prepares the
                    # next ones: this epoch's, then the next epoch's first.
                    feed.fill()
                    if i == len(lengths) - 1 and ahead is not None:
                        self._ahead = (_key_bytes(next_shuffle_key),
                                       self._feed(take, ahead, lengths))
                chunks.append(metrics)
                done += length
                # Reading a metric waits for the device: with one step per
                # call, do it a few times a second, not every step, so
                # dispatch stays ahead of execution.
                now = time.perf_counter()
                if progress and (done == self.steps_per_epoch or now - last_report >= 0.25):
                    last_report = now
                    last = jax.device_get({k: v[-1] for k, v in metrics.items()})
                    on_progress(done, {k: float(v) for k, v in last.items()})
        finally:
            self._listener = None
        stacked = jax.device_get(chunks)
        means = {k: float(np.mean(np.concatenate([np.asarray(c[k]) for c in stacked])))
                 for k in stacked[0]}
        return state, means

    def _feed(self, take: Callable, perm: jax.Array, lengths: list[int]) -> _Feed:
        """Host input for one epoch in ``perm``'s order, calls of ``lengths``."""
        grid = np.asarray(jax.device_get(perm)).reshape(self.steps_per_epoch, self.batch_size)
        offsets = np.cumsum([0, *lengths])
        return _Feed(lambda i: self.layout.feed(take, grid[offsets[i]:offsets[i + 1]]),
                     len(lengths), self.layout.prefetch)

    def _take_ahead(self, shuffle_key: jax.Array) -> _Feed | None:
        """The feed prepared for this epoch's key during the last epoch."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == _key_bytes(shuffle_key):
            return ahead[1]
        return None

    def _train_callable(self, length: int, progress: bool, args: tuple):
        """The compiled call running ``length`` steps (state donated)."""
        fed = self.host_input
        return self._get(("train", length, progress, fed),
                         lambda: self._chunk_fn(length, progress, fed), args, donate=(0,))

    def _eval_callable(self, state: TrainState, split: EvalSplit):
        b = split.batch
        args = (state, split.x, split.y, split.w) if self.scan_eval else (
            state, split.x[:b], split.y[:b], split.w[:b])
        return self._get(("eval", self.scan_eval, b),
                         lambda: self._eval_fn(self.scan_eval, b), args)

    def evaluate(self, state: TrainState, split: EvalSplit) -> dict[str, float]:
        """Weighted mean metrics of ``state`` on a padded split."""
        fn = self._eval_callable(state, split)
        if self.scan_eval:
            total = fn(state, split.x, split.y, split.w)
        else:
            b = split.batch
            total = None
            for i in range(split.x.shape[0] // b):
                sl = slice(i * b, (i + 1) * b)
                m = _weighted(fn(state, split.x[sl], split.y[sl], split.w[sl]))
                total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
        total = dict(jax.device_get(total))
        weight = float(total.pop("weight"))
        return {k: float(v) / weight for k, v in total.items()}

    def put_eval_split(self, x: np.ndarray, y: np.ndarray) -> EvalSplit:
        """Pad a host split to whole evaluation batches and move it to the
        device once (weights 0 on the padding). A split smaller than
        ``eval_batch_size`` is one batch of its own size."""
        n = x.shape[0]
        eb = max(1, min(self.eval_batch_size, n))
        padded = -(-n // eb) * eb
        pad = padded - n
        w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        yp = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
        if self.layout is not None:
            xp, yp, w = self.layout.place((xp, yp, w), self.layout.replicated)
            return EvalSplit(xp, yp, w, n, eb)
        return EvalSplit(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(w), n, eb)


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """A split on the device, padded to whole evaluation batches."""

    x: jax.Array
    y: jax.Array
    w: jax.Array
    n: int
    batch: int


class _Feed:
    """Host input for one epoch: compiled calls' batches, made by
    ``make(i)`` (gathered on the host, transfers started) up to ``depth``
    calls ahead of the one the device runs."""

    def __init__(self, make: Callable[[int], tuple], n: int, depth: int):
        self._make, self._n, self._depth = make, n, depth
        self._next = 0
        self._ready: collections.deque = collections.deque()
        self.fill()

    def fill(self) -> None:
        while len(self._ready) < self._depth and self._next < self._n:
            self._ready.append(self._make(self._next))
            self._next += 1

    def pop(self) -> tuple:
        if not self._ready:
            self.fill()
        return self._ready.popleft()


def _key_bytes(key: jax.Array) -> bytes:
    return np.asarray(jax.random.key_data(key)).tobytes()


def _weighted(metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Batch means times the batch weight, so batches add up."""
    out = {k: v * metrics["weight"] for k, v in metrics.items() if k != "weight"}
    out["weight"] = metrics["weight"]
    return out
