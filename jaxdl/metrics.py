"""Metric records: the JSON-lines writer, learning-curve plots, image grids,
progress.

``metrics.jsonl`` holds one JSON object per evaluation::

    {"epoch": 3, "step": 1263, "split": "val", "loss": 0.071, "accuracy": 0.979}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricsWriter", "image_grid", "json_safe", "plot_curves", "plot_sequences",
           "plots_in_background", "read_metrics", "redact", "save_image_grid", "write_json",
           "write_jsonl"]


def redact(text: str) -> str:
    """``postgresql://user:***@host/db``: passwords in URLs never reach a
    record, a log line or the terminal."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary file, then a rename):
    a reader never sees half a file, a killed writer leaves the old one."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2) + "\n")
    os.replace(tmp, path)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write one JSON object per line, atomically (as :func:`write_json`);
    NaN becomes null, and values JSON lacks (datetimes) become text."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(json_safe(r), default=str) + "\n" for r in rows))
    os.replace(tmp, path)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: strict JSON has no NaN, and
    a diverged run's record must stay readable by any JSON parser."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class MetricsWriter:
    """Append evaluation rows to a JSON-lines file, one flushed line each.

    Args:
      enabled: write (False: a multi-host job's other processes, which
        compute the same rows and leave the record to process 0).
    """

    def __init__(self, path: str | Path, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, epoch: int, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"epoch": int(epoch), "step": int(step), "split": split}
        row.update({k: float(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` and the end-of-run ``test``
        rows (a resumed run redoes them).

        Rewrites atomically, so a crash here cannot lose the kept rows.
        """
        if not self.enabled or not self.path.exists():
            return
        write_jsonl(self.path, [r for r in read_metrics(self.path)
                                if r["epoch"] <= epoch and r["split"] != "test"])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` (a torn last line from a killed process
    is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def pyplot():
    """``matplotlib.pyplot`` for writing PNGs: on the Agg backend, unless the
    process chose one already (``$MPLBACKEND``, or pyplot imported, as in a
    notebook: its inline backend stays, and figures written here are closed
    before they could show)."""
    import os
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _Background:
    """One helper process that draws PNGs while the caller goes on (see
    :func:`plots_in_background`): a fresh interpreter (never a fork of one
    that imported JAX, and not ``multiprocessing``'s spawn, which would
    re-run an unguarded calling script) reading one JSON job a line."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.proc: Any = None
        self.errors: list[str] = []
        self.reader: Any = None

    def submit(self, path: Path, rows: list[dict[str, Any]], title: str) -> bool:
        """Queue one learning-curve figure; False when no helper can take it
        (then the caller draws it itself)."""
        import subprocess
        import threading

        try:
            if self.proc is None:
                # This file alone (stdlib, numpy, matplotlib), not the jaxdl
                # package: the helper does not import JAX.
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", _HELPER, __file__],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "MPLBACKEND": "Agg"})
                self.reader = threading.Thread(target=self._read, daemon=True)
                self.reader.start()
            self.proc.stdin.write(json.dumps({"rows": rows, "path": str(path.absolute()),
                                              "title": title}) + "\n")
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError) as e:   # no helper: draw in this process
            self.log(f"warning: plots drawn in this process (helper: {type(e).__name__}: {e})")
            self.close()
            return False

    def _read(self) -> None:
        for line in self.proc.stdout:   # one line per figure that failed
            self.errors.append(line.rstrip("\n"))

    def close(self) -> None:
        """Wait until every queued figure is written; report the failed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        code = proc.wait()
        self.reader.join()
        for line in self.errors:
            self.log(f"warning: {line}")
        if code:
            self.log(f"warning: the plot helper exited with status {code}; some "
                     "curves.png may be missing (metrics.jsonl holds their values)")
        self.errors = []


_HELPER = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("jaxdl_plot_helper", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._serve()
"""


def _serve() -> None:
    """The helper's loop: draw each job read from stdin; say which failed.
    It ends when the caller closes stdin (or dies); a Ctrl-C meant for the
    caller does not cut the queued figures short."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            _plot_curves(job["rows"], job["path"], job["title"])
        except Exception as e:  # noqa: BLE001 - reported to the caller
            print(f"{job['path']} not written: {type(e).__name__}: {e}", flush=True)


_BACKGROUND: _Background | None = None


@contextlib.contextmanager
def plots_in_background(log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Within it, :func:`plot_curves` hands each figure to one helper process
    and returns at once; leaving it waits until every figure is written.

    A sweep draws a learning-curve PNG per trial (about 0.25 s of matplotlib
    each on a CPU): here the helper draws it on another core while the next
    trial trains. A figure that fails is reported through ``log`` (default:
    stderr), not raised; if the process is killed first, the figures still
    queued are lost (``metrics.jsonl`` holds every value they show).
    """
    global _BACKGROUND
    if _BACKGROUND is not None:   # nested: the outer one waits
        yield
        return
    _BACKGROUND = _Background(log or (lambda line: print(line, file=sys.stderr, flush=True)))
    try:
        yield
    finally:
        background, _BACKGROUND = _BACKGROUND, None
        background.close()


def plot_curves(rows: Iterable[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Learning curves (one panel per metric, one line per split) as a PNG
    (drawn by a helper process inside :func:`plots_in_background`)."""
    rows = [dict(r) for r in rows]
    if _BACKGROUND is not None and _BACKGROUND.submit(Path(path), rows, title):
        return Path(path)
    return _plot_curves(rows, path, title)


def _plot_curves(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    plt = pyplot()

    rows = [r for r in rows if r["split"] in ("train", "val")]
    names = sorted({k for r in rows for k in r} - {"epoch", "step", "split"})
    # At most 4 panels a row (a GAN has 7 metrics).
    cols = min(4, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    epochs = len({r["epoch"] for r in rows})
    for ax, name in zip(axes.flat, names, strict=False):
        # Markers only where they can be told apart (drawing them is most
        # of the time a long run's plot takes).
        for split, style in (("train", "-o"), ("val", "-s")):
            pts = [(r["epoch"], r[name]) for r in rows
                   if r["split"] == split and r.get(name) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style if epochs <= 40 else "-", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if name == "loss" and all((r.get(name) or 1) > 0 for r in rows):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:   # a diverged first epoch plots nothing
            ax.legend()
    # Fixed margins (in inches) instead of tight_layout, which took 40 % of
    # the plot's time: a sweep draws one per trial.
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.2 / w, bottom=0.5 / h,
                        top=1 - (0.55 if title else 0.25) / h, wspace=0.35, hspace=0.45)
    return _save(fig, path, title, layout=False)


def _save(fig, path: str | Path, title: str, layout: bool = True) -> Path:
    """Title, lay out (unless the caller did), write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_sequences(inputs, truth, predictions, path: str | Path, title: str = "") -> Path:
    """Next-value predictions against the truth, one panel per sequence.

    Args:
      inputs, truth, predictions: ``[n, T]``; step ``t`` of ``truth`` and
        ``predictions`` is the value at ``t + 1``, so both are drawn one step
        right of the inputs.
    """
    plt = pyplot()

    n = len(inputs)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), squeeze=False, sharex=True)
    for i, ax in enumerate(axes[:, 0]):
        steps = range(len(inputs[i]))
        ax.plot(steps, inputs[i], ".", ms=3, color="0.6", label="input (noisy)")
        ax.plot([t + 1 for t in steps], truth[i], "-", lw=1.5, label="truth (next value)")
        ax.plot([t + 1 for t in steps], predictions[i], "--", lw=1.5, label="prediction")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("time step")
    return _save(fig, path, title)


def image_grid(images, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[n, H, W]`` or ``[n, H, W, C]`` images in [-1, 1] into one
    ``[rows * (H + pad) + pad, cols * (W + pad) + pad(, C)]`` float array in
    [0, 1] on a white background (``cols`` default: ``ceil(sqrt(n))``;
    values outside [-1, 1] are clipped)."""
    x = np.asarray(images, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or x.shape[0] < 1:
        raise ValueError(f"images must be [n, H, W] or [n, H, W, C] with n >= 1, "
                         f"got shape {x.shape}")
    n, h, w = x.shape[:3]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad) + x.shape[3:], np.float32)
    unit = (np.clip(x, -1.0, 1.0) + 1.0) / 2.0
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = unit[i]
    return grid


def save_image_grid(images, path: str | Path, cols: int | None = None) -> Path:
    """Write :func:`image_grid` of ``images`` (in [-1, 1]) as a PNG (grey
    for one channel), atomically (a temporary file, then a rename)."""
    import matplotlib.image

    path = Path(path)
    grid = image_grid(images, cols)
    tmp = path.with_name(path.name + ".tmp.png")
    if grid.ndim == 2:
        matplotlib.image.imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        matplotlib.image.imsave(tmp, grid)
    os.replace(tmp, path)
    return path
