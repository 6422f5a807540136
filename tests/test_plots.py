"""Learning-curve PNGs drawn by a helper process (metrics.plots_in_background):
every figure is on disk when the block ends, a failed figure is reported
and not raised, the helper never imports JAX, and without a helper the
caller draws the figure itself."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from jaxdl import metrics
from tests.test_experiment import png_ok


def rows(epochs: int, loss0: float = 1.0) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        out.append({"epoch": e, "step": 10 * e, "split": "train", "loss": loss0 / e,
                    "accuracy": 1 - 0.5 / e})
        out.append({"epoch": e, "step": 10 * e, "split": "val", "loss": 1.2 * loss0 / e,
                    "accuracy": 1 - 0.6 / e})
    return out


def test_figures_are_written_when_the_block_ends(tmp_path):
    paths = [tmp_path / f"run{i}" / "curves.png" for i in range(3)]
    for p in paths:
        p.parent.mkdir()
    lines = []
    with metrics.plots_in_background(lines.append):
        for i, p in enumerate(paths):
            assert metrics.plot_curves(rows(5 + i), p, title=f"run {i}") == p
        with metrics.plots_in_background(lines.append):   # nested: the outer one waits
            metrics.plot_curves(rows(3, math.nan), tmp_path / "run0" / "nan.png")
    assert lines == []
    for p in [*paths, tmp_path / "run0" / "nan.png"]:
        assert png_ok(p), p
    # The same figure as drawn in this process: its size (IHDR width, height).
    metrics.plot_curves(rows(5), tmp_path / "inline.png", title="run 0")
    assert (tmp_path / "inline.png").read_bytes()[16:24] == paths[0].read_bytes()[16:24]


def test_a_failed_figure_is_reported_and_the_others_written(tmp_path):
    lines = []
    with metrics.plots_in_background(lines.append):
        metrics.plot_curves(rows(4), tmp_path / "missing-dir" / "curves.png")
        metrics.plot_curves(rows(4), tmp_path / "ok.png")
    assert png_ok(tmp_path / "ok.png")
    assert len(lines) == 1 and "missing-dir/curves.png not written: FileNotFoundError" in lines[0]


def test_without_a_helper_the_caller_draws(tmp_path, monkeypatch):
    def no_process(*args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    lines = []
    with metrics.plots_in_background(lines.append):
        metrics.plot_curves(rows(4), tmp_path / "a.png")
        metrics.plot_curves(rows(4), tmp_path / "b.png")
    assert png_ok(tmp_path / "a.png") and png_ok(tmp_path / "b.png")
    assert len(lines) == 2 and "plots drawn in this process" in lines[0]


def test_the_helper_does_not_import_jax(tmp_path):
    # The helper's own program, with a probe after the jobs.
    probe = metrics._HELPER + "print('jax' in sys.modules, 'jaxdl' in sys.modules)\n"
    job = json.dumps({"rows": rows(3), "path": str(tmp_path / "c.png"), "title": ""}) + "\n"
    out = subprocess.run([sys.executable, "-c", probe, metrics.__file__], input=job,
                         capture_output=True, text=True, check=True,
                         env={"PATH": "", "MPLBACKEND": "Agg"})
    assert out.stdout.split() == ["False", "False"]
    assert png_ok(tmp_path / "c.png")
