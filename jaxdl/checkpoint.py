"""Orbax checkpoints: keep the latest (to resume) and the best (to use).

One :class:`Checkpointer` per run directory. Each checkpoint step is an
epoch number and holds two items: ``state`` (the whole
:class:`~jaxdl.algorithms.supervised.TrainState` pytree) and ``meta`` (JSON:
the loop's bookkeeping, so a resumed run continues exactly where the
checkpoint left off).

Retention uses a preservation policy rather than ``max_to_keep``: with
``best_fn`` and ``max_to_keep=2`` Orbax can delete the *latest* checkpoint
when it is not among the best, and resume would go back in time
(``../shared/DESIGN.md``). Writes are atomic: a process killed mid-save
leaves only a temporary directory, which is ignored, and the last finished
checkpoint stays intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxdl.errors import CheckpointError

__all__ = ["Checkpointer"]


class Checkpointer:
    """Save and restore the checkpoints of one run.

    Args:
      directory: ``<run dir>/checkpoints`` (created on first save).
      monitor: metric name in the ``metrics`` passed to :meth:`save` that
        ranks checkpoints (e.g. ``"val_loss"``).
      mode: ``"min"`` or ``"max"``: which direction is better.
      read_only: open an existing directory for restoring only.
    """

    def __init__(self, directory: str | Path, *, monitor: str, mode: str,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.monitor, self.mode = monitor, mode
        get = lambda metrics: metrics[monitor]  # noqa: E731
        options = ocp.CheckpointManagerOptions(
            best_fn=get,
            best_mode=mode,
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(1),
                # reverse=True keeps the lowest values.
                policies.BestN(get_metric_fn=get, reverse=(mode == "min"), n=1),
            ]),
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def save(self, epoch: int, state: Any, meta: dict[str, Any],
             metrics: dict[str, float]) -> None:
        """Write epoch ``epoch``'s checkpoint (asynchronously; atomic)."""
        self._mgr.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            metrics={k: float(v) for k, v in metrics.items()},
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
            structure, shapes and dtypes to restore into.
        """
        if epoch not in self._mgr.all_steps():
            raise CheckpointError(
                f"no checkpoint for epoch {epoch} in {self.directory}; have {self.epochs()}")
        target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            out = self._mgr.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(
                f"checkpoint of epoch {epoch} in {self.directory} does not fit this "
                f"config's model/optimizer: {e}") from e
        return out["state"], dict(out["meta"])

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
