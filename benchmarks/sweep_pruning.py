"""Does pruning pay, and does the shipped MNIST sweep meet its bars?

Question answered: ``sweeps/mnist_mlp.yaml`` run twice from scratch with the
same sampler seed, once with its median pruner and once with pruning off
(``--set pruner.name=none``). For each: wall time, trials, epochs trained in
total, best validation accuracy, and compile time as a fraction of wall time.
Then the epochs the pruner saved and the gap between the two best values.

Bars (issue 3): best val_accuracy >= 0.980 within 30 minutes on 2 CPU cores;
the pruned sweep trains >= 40 % fewer epochs with a best value within 0.3
points of the unpruned one; compile time < 25 % of wall time.

Each sweep runs as ``jaxdl sweep`` in a fresh process with a fresh study
directory (so its compilation cache starts empty).

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``pruner``,
``device``).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/sweep_pruning.py [--spec sweeps/mnist_mlp.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _sweep(spec: str, study_dir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "jaxdl", "sweep", spec, "--study-dir", str(study_dir),
           "--no-progress", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "MPLBACKEND": "Agg"})
    wall = time.perf_counter() - t0
    meta = json.loads((study_dir / "sweep.json").read_text())
    session = meta["sessions"][-1]
    trials = [json.loads(line) for line in (study_dir / "trials.jsonl").read_text().splitlines()]
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(t["value"] for t in complete) if complete else None
    return {"wall_seconds": wall, "trials": len(trials), "epochs": session["epochs"],
            "pruned": sum(t["state"] == "pruned" for t in trials), "best": best,
            "compile_seconds": session["compile_seconds"],
            "compile_fraction": session["compile_fraction"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="sweeps/mnist_mlp.yaml")
    p.add_argument("--keep", help="keep the study directories here")
    args = p.parse_args()
    device = f"{platform.machine()} cpu x{os.cpu_count()}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        results = {}
        for pruner, extra in (("median", []), ("none", ["--set", "pruner.name=none"])):
            r = _sweep(args.spec, root / pruner, extra)
            results[pruner] = r
            for metric, unit in (("wall_seconds", "s"), ("trials", "trials"),
                                 ("pruned", "trials"), ("epochs", "epochs"),
                                 ("best", "val_accuracy"), ("compile_seconds", "s"),
                                 ("compile_fraction", "fraction")):
                print(json.dumps({"bench": "sweep_pruning", "spec": args.spec, "pruner": pruner,
                                  "metric": metric, "value": r[metric], "unit": unit,
                                  "device": device}), flush=True)
        saved = 1 - results["median"]["epochs"] / results["none"]["epochs"]
        gap = (results["none"]["best"] - results["median"]["best"]) * 100
        print(json.dumps({"bench": "sweep_pruning", "spec": args.spec, "metric": "epochs_saved",
                          "value": round(saved, 4), "unit": "fraction", "device": device}))
        print(json.dumps({"bench": "sweep_pruning", "spec": args.spec,
                          "metric": "best_gap_points", "value": round(gap, 3),
                          "unit": "accuracy points (none - median)", "device": device}))


if __name__ == "__main__":
    main()
