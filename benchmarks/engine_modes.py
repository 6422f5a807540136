"""Which execution mode is fastest, per model and backend?

Question answered: for the MNIST MLP and CNN, how long does one training
step take when the engine runs one step per compiled call, chunks of 10
steps per ``lax.scan``, the whole epoch in one scan, and that scan unrolled
2x and 4x; and, for the CNN, with XLA's convolution versus the im2col
lowering (``model.conv``)? The engine's default
(``default_steps_per_call``, ``models.conv_impl``) is chosen from these
figures; this script is how to re-check them on another machine or backend.

Each variant trains ``--steps`` steps of batch 128 on MNIST images (a
``data.train_limit`` subset, so an "epoch" is exactly those steps) after a
warm-up epoch that compiles; the reported figure is the median over
``--repeats`` timed epochs. XLA convolutions inside a scan are so slow on
CPU that they get ``--slow-steps`` steps only.

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``model``,
``conv``, ``steps_per_call``, ``device``).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/engine_modes.py [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl.experiment import build_engine, new_state
from jaxdl.loop import run_keys

BATCH = 128


def measure(model: str, conv: str, per_call: int, steps: int, repeats: int,
            unroll: int = 1) -> dict:
    """Median seconds per step of one variant (``per_call`` steps per call)."""
    overrides = [f"data.train_limit={steps * BATCH}", "data.val_fraction=0",
                 "train.monitor=train_loss", f"train.batch_size={BATCH}",
                 f"train.steps_per_call={per_call}", "model.dropout=0"]
    if model == "cnn":
        overrides.append(f"model.conv={conv}")
    cfg = config_lib.load(f"experiments/mnist_{model}.yaml", overrides)
    ds = data_lib.load(cfg.data, cfg.seed)
    engine = build_engine(cfg, ds)
    engine.scan_unroll = unroll
    state = new_state(cfg, engine, ds)
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)
    keys = run_keys(cfg.seed)
    times = []
    for epoch in range(repeats + 1):
        t0 = time.perf_counter()
        state, _ = engine.train_epoch(state, x, y, jax.random.fold_in(keys["shuffle"], epoch),
                                      keys["dropout"])
        jax.block_until_ready(state.params)
        if epoch > 0:   # the first epoch compiles
            times.append((time.perf_counter() - t0) / engine.steps_per_epoch)
    return {"value": statistics.median(times), "compile_seconds": engine.compile_seconds,
            "steps": engine.steps_per_epoch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--steps", type=int, default=40, help="steps per timed epoch")
    p.add_argument("--slow-steps", type=int, default=4,
                   help="steps per timed epoch for XLA convolutions in a scan on CPU")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = jax.devices()[0].device_kind
    backend = jax.default_backend()
    for model in args.models.split(","):
        convs = ("im2col", "xla") if model == "cnn" else ("-",)
        for conv in convs:
            slow = model == "cnn" and conv == "xla" and backend == "cpu"
            # (label, steps per call, unroll): per-step jit, chunked scans,
            # the whole epoch in one scan, and that scan unrolled by 2 and 4.
            variants = [("1", 1, 1), ("chunk 10", 10, 1), ("epoch", None, 1),
                        ("epoch unroll 2", None, 2), ("epoch unroll 4", None, 4)]
            for label, per_call, unroll in variants:
                if slow and per_call != 1:
                    # XLA convolutions in a scan: minutes per epoch; a few steps tell.
                    if label != "epoch":
                        continue
                steps = args.slow_steps if slow and per_call != 1 else args.steps
                r = measure(model, conv, per_call or steps, steps, args.repeats, unroll)
                line = {"bench": "engine_modes", "metric": "seconds_per_step",
                        "value": round(r["value"], 5), "unit": "s", "model": model,
                        "conv": conv, "steps_per_call": label, "steps": r["steps"],
                        "batch": BATCH, "device": device,
                        "compile_seconds": round(r["compile_seconds"], 3)}
                print(json.dumps(line), flush=True)
                print(f"{model} conv={conv} steps_per_call={label}: "
                      f"{r['value'] * 1e3:.1f} ms/step", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
