"""How many more trials per hour does a population sweep run?

Question answered: a shipped sweep run from scratch with ``--population P``
for each P asked (1 is the plain sweep, one trial at a time; ``auto``
measures sizes and picks one), same sampler seed and trial budget. For each:
wall time, finished trials, trials per hour, the ratio to population 1,
epochs trained, shape groups and distinct shapes compiled, the fraction of
population slot-epochs that computed an idle slot, compile time, and
the best value found. Then the cost of one vmapped epoch of 1 and of 8
members of the base shape (dropout masks compiled out, and in). Then
whether a member trained in a population equals
the same trial trained alone: 4 configs of the base shape (learning rates
spread over the sweep's range) trained for 1 and for 5 epochs with
``jaxdl.population.train`` and one by one with ``jaxdl.run``: per member,
the largest difference of a final metric and of a parameter (rounding
differs where vmapped matmuls sum in another order; a chaotic trial, such
as Adam at the top of the range, amplifies it epoch by epoch).

Bars (issue 7): on 2 CPU cores the playground sweep runs >= 4x the trials per
hour at population 8 as at population 1, and ``auto`` keeps that; with
``auto`` the MNIST MLP sweep is never slower than population 1 (ratio >=
0.95).

Each sweep runs as ``jaxdl sweep`` in a fresh process with a fresh study
directory (its compilation cache starts empty).

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``population``,
``device``).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/population_sweep.py \\
        [--spec sweeps/playground_spiral.yaml] [--populations 1 4 8 16 auto] [--trials N]
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
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "MPLBACKEND": "Agg"},
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    session = json.loads((study_dir / "sweep.json").read_text())["sessions"][-1]
    trials = [json.loads(line) for line in (study_dir / "trials.jsonl").read_text().splitlines()]
    complete = [t for t in trials if t["state"] == "complete"]
    direction = json.loads((study_dir / "sweep.json").read_text())["direction"]
    pick = max if direction == "maximize" else min
    return {"wall_seconds": wall, "loop_seconds": session.get("wall_seconds"),
            "trials": len(trials), "epochs": session["epochs"],
            "pruned": sum(t["state"] == "pruned" for t in trials),
            "best": pick(t["value"] for t in complete) if complete else None,
            "compile_seconds": session["compile_seconds"],
            "groups": session.get("groups"), "compiled_shapes": session.get("compiled_shapes"),
            "population_used": session.get("population", 1),
            "auto_rates": session.get("auto_rates"),
            "auto_trial_seconds": session.get("auto_trial_seconds"),
            "auto_compile_seconds": session.get("auto_compile_seconds"),
            "idle_slot_fraction": (1 - session["member_epochs"] / session["slot_epochs"]
                                   if session.get("slot_epochs") else None)}


def _equality(spec_path: str, epochs: int) -> list[dict]:
    """Per member: the largest |difference| of final metrics and of
    parameters between 4 population members (learning rates spread over the
    sweep's range) and the same configs trained alone for ``epochs``."""
    import jax
    import numpy as np

    import jaxdl
    from jaxdl import population
    from jaxdl.sweep import load

    spec = load(spec_path)
    lr = next(p for p in spec.space if p.key == "optim.learning_rate")
    rates = [lr.low * (lr.high / lr.low) ** (i / 3) for i in range(4)]
    cfgs = [spec.trial_config({"optim.learning_rate": r}).replace(
        {"checkpoint.enabled": False, "train.epochs": epochs}) for r in rates]
    members = population.train(cfgs)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (cfg, m) in enumerate(zip(cfgs, members, strict=True)):
            alone = jaxdl.run(cfg, workdir=Path(tmp) / f"r{i}", quiet=True)
            metric = max(abs(v - m.final[split][name])
                         for split, values in alone.summary["final"].items()
                         if split in m.final for name, v in values.items())
            params = max(float(np.max(np.abs(a - b))) for a, b in zip(
                jax.tree.leaves(jax.device_get(alone.state).params),
                jax.tree.leaves(m.state.params), strict=True))
            out.append({"learning_rate": cfg.optim.learning_rate, "epochs": epochs,
                        "metric_max_abs_diff": metric, "param_max_abs_diff": params})
    return out


def _epoch_cost(spec_path: str, sizes: tuple[int, ...] = (1, 8)) -> list[dict]:
    """Milliseconds per vmapped training epoch of K members of the spec's
    base shape (median of 20 epochs after one that compiles), with the
    masks compiled out (the base has no dropout) and, for comparison, in
    (``dropout=True``: drawn only when a live member's rate is above 0)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdl import data as data_lib
    from jaxdl import experiment, population
    from jaxdl.sweep import load

    cfg = load(spec_path).trial_config({}).replace({"checkpoint.enabled": False})
    if cfg.algorithm != "supervised":
        return []
    dataset = data_lib.load(cfg.data, cfg.seed)
    engine = experiment.build_engine(cfg, dataset)
    x, y = jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)
    out = []
    for dropout in (False, True):
        for k in sizes:
            pop = population.Population(engine, k, dropout=dropout)
            states = pop.place(population.stack([experiment.new_state(cfg, engine, dataset)] * k))
            keys = jax.random.split(jax.random.key(0), k)
            alive = jnp.ones((k,), bool)
            times = []
            for rep in range(21):
                t0 = time.perf_counter()
                states, alive, _ = pop.train_epoch(states, alive, x, y, keys, keys)
                if rep:
                    times.append(time.perf_counter() - t0)
            out.append({"members": k, "masks_compiled": dropout,
                        "ms_per_epoch": 1e3 * float(np.median(times)),
                        "compile_seconds": pop.compile_seconds,
                        "shape": f"depth {cfg.model.depth}, width {cfg.model.width}, "
                                 f"batch {cfg.train.batch_size}, {engine.steps_per_epoch} steps"})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="sweeps/playground_spiral.yaml")
    p.add_argument("--populations", nargs="*", default=["1", "4", "8", "16", "auto"],
                   help="sizes to sweep with (none: only the epoch cost and equality)")
    p.add_argument("--trials", type=int, help="trial budget (default: the spec's)")
    p.add_argument("--no-equality", action="store_true", help="skip the equality check")
    p.add_argument("--no-epoch-cost", action="store_true",
                   help="skip timing one vmapped epoch of 1 and 8 members")
    p.add_argument("--keep", help="keep the study directories here")
    args = p.parse_args()

    import jax

    device = f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, " \
             f"{os.cpu_count()} cores)"
    name = Path(args.spec).stem
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="popbench-"))
    extra = ["--trials", str(args.trials)] if args.trials else []
    results = {}

    def emit(metric, value, unit, population):
        print(json.dumps({"bench": f"population_sweep/{name}", "metric": metric,
                          "value": value, "unit": unit, "population": population,
                          "device": device}), flush=True)

    for pop in args.populations:
        r = _sweep(args.spec, root / f"pop-{pop}", extra + ["--population", pop])
        r["trials_per_hour"] = r["trials"] / r["wall_seconds"] * 3600
        results[pop] = r
        for metric, unit in (("wall_seconds", "s"), ("loop_seconds", "s"), ("trials", "trials"),
                             ("trials_per_hour", "trials/h"), ("epochs", "epochs"),
                             ("pruned", "trials"), ("best", "value"),
                             ("compile_seconds", "s"), ("groups", "groups"),
                             ("compiled_shapes", "shapes"), ("population_used", "members"),
                             ("auto_rates", "member-epochs/s"),
                             ("auto_trial_seconds", "modelled s per trial"),
                             ("auto_compile_seconds", "s"),
                             ("idle_slot_fraction", "of slot-epochs")):
            if r.get(metric) is not None:
                emit(metric, r[metric], unit, pop)
        if "1" in results:
            emit("speedup_vs_population_1",
                 r["trials_per_hour"] / results["1"]["trials_per_hour"], "x", pop)
    if not args.no_epoch_cost:
        for row in _epoch_cost(args.spec):
            emit("epoch_cost", row, "ms per epoch", row["members"])
    if not args.no_equality:
        for epochs in (1, 5):
            for row in _equality(args.spec, epochs):
                emit("member_vs_alone", row, "max abs diff", "4 members")


if __name__ == "__main__":
    main()
