"""Orbax checkpoints: keep the latest (to resume) and the best (to use).

One :class:`Checkpointer` per run directory. Each checkpoint step is an
epoch number and holds two items: ``state`` (the whole
:class:`~jaxdl.algorithms.supervised.TrainState` pytree) and ``meta`` (JSON:
the loop's bookkeeping, so a resumed run continues exactly where the
checkpoint left off).

"Best" is decided by the training loop (monitor, mode, min_delta), not
re-derived by Orbax from raw metric values: each save carries a rank, the
epoch number when it was a new best and -1 otherwise, and Orbax keeps the
highest rank. Ties (two epochs with the same validation accuracy) thus
resolve exactly as early stopping resolved them.

Retention uses a preservation policy rather than ``max_to_keep``: with
``best_fn`` and ``max_to_keep=2`` Orbax can delete the *latest* checkpoint
when it is not among the best, and resume would go back in time
(``../shared/DESIGN.md``). Writes are atomic: a process killed mid-save
leaves only a temporary directory, which is ignored, and the last finished
checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxdl.errors import CheckpointError

__all__ = ["Checkpointer"]

_RANK = "best_rank"


class Checkpointer:
    """Save and restore the checkpoints of one run.

    Args:
      directory: ``<run dir>/checkpoints`` (created on first save).
      read_only: open an existing directory for restoring only.
    """

    def __init__(self, directory: str | Path, *, read_only: bool = False):
        self.directory = Path(directory).absolute()
        rank = lambda metrics: metrics[_RANK]  # noqa: E731
        with _quiet_absl():
            options = ocp.CheckpointManagerOptions(
                best_fn=rank,
                best_mode="max",
                preservation_policy=policies.AnyPreservationPolicy([
                    policies.LatestN(1),
                    policies.BestN(get_metric_fn=rank, reverse=False, n=1),
                ]),
                create=not read_only,
                read_only=read_only,
                cleanup_tmp_directories=not read_only,
            )
            self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def save(self, epoch: int, state: Any, meta: dict[str, Any],
             metrics: dict[str, float], *, is_best: bool) -> None:
        """Write epoch ``epoch``'s checkpoint (asynchronously; atomic).

        Args:
          epoch: the checkpoint's step number.
          state: the train state pytree.
          meta: JSON-serialisable bookkeeping, restored beside the state.
          metrics: the epoch's metrics (stored for reference).
          is_best: whether the loop judged this epoch a new best.
        """
        ranked = {k: float(v) for k, v in metrics.items()}
        ranked[_RANK] = float(epoch if is_best else -1)
        self._mgr.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            metrics=ranked,
            force=True,
        )

    def latest_epoch(self) -> int | None:
        return self._mgr.latest_step()

    def best_epoch(self) -> int | None:
        return self._mgr.best_step()

    def epochs(self) -> list[int]:
        return list(self._mgr.all_steps())

    def restore(self, epoch: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of ``epoch``'s checkpoint.

        Args:
          abstract_state: a state (or ``jax.ShapeDtypeStruct`` tree) with the
            structure, shapes and dtypes to restore into, and the shardings
            (leaves without one go to this process's first device). A
            checkpoint written over any mesh or number of processes restores
            into any other.
        """
        if epoch not in self._mgr.all_steps():
            raise CheckpointError(
                f"no checkpoint for epoch {epoch} in {self.directory}; have {self.epochs()}")
        target = jax.tree_util.tree_map(_with_sharding, abstract_state)
        try:
            out = self._mgr.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(
                f"checkpoint of epoch {epoch} in {self.directory} does not fit this "
                f"config's model/optimizer: {e}") from e
        return out["state"], dict(out["meta"])

    def restore_parts(self, epoch: int, parts: tuple[str, ...] = ("params", "batch_stats")
                      ) -> dict[str, Any]:
        """Only the named top-level parts of ``epoch``'s saved state (e.g. a
        pretrained run's ``params``), shaped as the checkpoint's own metadata
        says: no target structure is needed, so any model, optimizer or
        topology that wrote it can be read. Parts the state lacks are left
        out; arrays land on this process's first device.
        """
        if epoch not in self._mgr.all_steps():
            raise CheckpointError(
                f"no checkpoint for epoch {epoch} in {self.directory}; have {self.epochs()}")
        path = self.directory / str(epoch) / "state"
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        try:
            with _quiet_absl():
                tree = ocp.StandardCheckpointHandler().metadata(path).tree
            wanted = {k: tree[k] for k in parts
                      if k in tree and jax.tree_util.tree_leaves(tree[k])}
            target = jax.tree_util.tree_map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), wanted)
            restore_args = ocp.checkpoint_utils.construct_restore_args(target)
            with _quiet_absl():
                out = self._mgr.restore(epoch, args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                                 partial_restore=True)))
        except (ValueError, KeyError, FileNotFoundError, OSError) as e:
            raise CheckpointError(f"cannot read epoch {epoch}'s checkpoint in "
                                  f"{self.directory}: {e}") from e
        return dict(out["state"])

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _with_sharding(leaf: Any) -> jax.ShapeDtypeStruct:
    """The restore target of one leaf: its shape, dtype and sharding (one
    device when it has none: Orbax would otherwise try the topology it was
    saved from)."""
    target = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(target, "sharding", None) is None:
        target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(
                                          jax.local_devices()[0]))
    return target


@contextlib.contextmanager
def _quiet_absl():
    """Orbax warns through absl that a read-only manager will not save;
    that is the point of opening it read-only."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
