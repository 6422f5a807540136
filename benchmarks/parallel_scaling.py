"""Data parallelism, host input and mixed precision: steps per second.

Questions answered:

1. **Scaling** — MNIST MLP and CNN training steps/s with the batch split
   over 1, 2 and 4 devices (``parallel.data``). On CPU the "devices" are
   XLA's host devices (``--xla_force_host_platform_device_count``) sharing
   the same cores, so the figure is expected flat or falling: the point
   there is that the sharded program is correct (tests/test_parallel.py),
   not fast.
2. **Host input** — seconds per step with batches gathered on the host and
   transferred ahead of the running call (``parallel.input: host``,
   ``parallel.prefetch``; whole MNIST epochs by default, ``--input-steps``)
   against the training set already on the device (``parallel.input:
   device``). The bar: within 5 %. On CPU the host's gathering shares the
   cores with the "device", so this is the harder case.
3. **Precision** (an accelerator, or ``--precision`` to force it) — fp32
   vs bf16 steps/s at batch 1024 and the fraction of the device's peak
   (the step's FLOPs from XLA's cost analysis over the step time).

Each setting runs in its own process (the device count is fixed when JAX
starts): ``--warmup`` epochs compile and warm up, then the median of
``--repeats`` timed epochs of ``--steps`` steps (a ``data.train_limit``
subset, no validation) gives seconds per step.

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``model``,
``devices``, ``input``, ``precision``, ``batch``, ``device``), then the
ratio lines (``*_ratio``).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/parallel_scaling.py
    python benchmarks/parallel_scaling.py --parts precision   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Dense peak FLOP/s by device kind and precision (vendor figures, no
# sparsity): fp32 matmuls run as TF32 on these GPUs under XLA's default.
PEAK = {
    "NVIDIA H100 80GB HBM3": {"fp32": 494.7e12, "bf16": 989.4e12},
    "NVIDIA H200": {"fp32": 494.7e12, "bf16": 989.4e12},
    "NVIDIA A100-SXM4-80GB": {"fp32": 156e12, "bf16": 312e12},
    "NVIDIA A100-SXM4-40GB": {"fp32": 156e12, "bf16": 312e12},
}


def child(setting: dict) -> dict:
    """Seconds per step of one setting (runs in a fresh process)."""
    import jax

    if setting.get("probe"):
        return {"backend": jax.default_backend(), "devices": jax.device_count()}

    from jaxdl import config as config_lib
    from jaxdl import experiment

    model, batch, steps = setting["model"], setting["batch"], setting["steps"]
    overrides = [f"data.train_limit={steps * batch}", "data.val_fraction=0",
                 "train.monitor=train_loss", f"train.batch_size={batch}",
                 f"parallel.data={setting['devices']}", f"parallel.input={setting['input']}",
                 f"precision={setting['precision']}", "model.dropout=0",
                 f"train.epochs={setting['warmup'] + setting['repeats']}"]
    cfg = config_lib.load(REPO / "experiments" / f"mnist_{model}.yaml", overrides)
    job = experiment.SupervisedJob(cfg)
    state = job.new_state()
    job.compile(state, progress=False)
    times = []
    for epoch in range(1, setting["warmup"] + setting["repeats"] + 1):
        t0 = time.perf_counter()
        state, _ = job.train_epoch(state, epoch, None)   # returns once the epoch's metrics are read
        if epoch > setting["warmup"]:
            times.append((time.perf_counter() - t0) / job.steps_per_epoch)
    per_step = statistics.median(times)
    out = {"seconds_per_step": per_step, "steps_per_epoch": job.steps_per_epoch,
           "steps_per_call": job.engine.steps_per_call,
           "compile_seconds": round(job.compile_seconds, 2),
           "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    if setting.get("flops"):
        out["flops_per_step"] = _flops_per_step(job, state)
    return out


def _flops_per_step(job, state) -> float | None:
    """XLA's FLOP count of one training step (a 1-step call compiled apart)."""
    import jax
    import jax.numpy as jnp

    eng = job.engine
    xb = jnp.asarray(job.dataset.train.x[: eng.batch_size])
    yb = jnp.asarray(job.dataset.train.y[: eng.batch_size])
    cost = jax.jit(eng.train_step).lower(state, (xb, yb), jax.random.key(0)).compile()
    analysis = cost.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    return float(analysis.get("flops", 0.0)) or None


def run_child(setting: dict, cpu_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                        + f" --xla_force_host_platform_device_count={cpu_devices}").strip()
    env.setdefault("JAXDL_CACHE_DIR", "off")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(setting)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"setting {setting} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--parts", default="scaling,input",
                   help="comma list of scaling, input, precision (precision: default on an "
                   "accelerator only)")
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--devices", default="1,2,4", help="device counts for the scaling part")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision-batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    p.add_argument("--input-steps", type=int, default=421,
                   help="steps per timed epoch of the host-input part (421: a whole MNIST "
                   "epoch, 54,000 images, so a whole epoch's batches are gathered and moved)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    # The parent never starts JAX (it would hold the accelerator's memory).
    machine = run_child({"probe": True}, cpu_devices=1)
    accel = machine["backend"] != "cpu"
    n_accel = machine["devices"] if accel else 0
    parts = args.parts.split(",")
    if accel and "precision" not in parts:
        parts.append("precision")
    models = args.models.split(",")
    base = {"warmup": args.warmup, "repeats": args.repeats, "steps": args.steps,
            "precision": "fp32", "input": "device", "batch": args.batch}

    def one(bench: str, **s) -> dict:
        setting = {**base, **s}
        devices = setting["devices"]
        r = run_child(setting, cpu_devices=max(devices, 1))
        line = {"bench": bench, "metric": "seconds_per_step", "value": r["seconds_per_step"],
                "unit": "s", "steps_per_second": round(1 / r["seconds_per_step"], 2),
                **{k: setting[k] for k in ("model", "devices", "input", "precision", "batch")},
                "steps_per_call": r["steps_per_call"], "device": r["device"]}
        if r.get("flops_per_step"):
            line["flops_per_step"] = r["flops_per_step"]
            peak = PEAK.get(r["device"], {}).get(setting["precision"])
            if peak:
                line["fraction_of_peak"] = r["flops_per_step"] / r["seconds_per_step"] / peak
        emit(line)
        return line

    if "scaling" in parts:
        counts = [int(c) for c in args.devices.split(",")]
        if accel:
            counts = [c for c in counts if c <= n_accel]
        for model in models:
            lines = [one("parallel_scaling", model=model, devices=c) for c in counts]
            for line in lines[1:]:
                emit({"bench": "parallel_scaling", "metric": "steps_per_second_ratio",
                      "value": lines[0]["value"] / line["value"], "unit": "x",
                      "model": model, "devices": line["devices"], "vs_devices": counts[0],
                      "device": line["device"]})
    if "input" in parts:
        devices = max(1, n_accel) if accel else 1
        for model in models:
            dev = one("host_input", model=model, devices=devices, input="device",
                      steps=args.input_steps)
            host = one("host_input", model=model, devices=devices, input="host",
                       steps=args.input_steps)
            emit({"bench": "host_input", "metric": "step_time_ratio",
                  "value": host["value"] / dev["value"], "unit": "x (host / device input)",
                  "model": model, "devices": devices, "bar": 1.05, "device": dev["device"]})
    if "precision" in parts:
        devices = 1
        for model in models:
            lines = {prec: one("precision", model=model, devices=devices, precision=prec,
                               batch=args.precision_batch, flops=True)
                     for prec in ("fp32", "bf16")}
            emit({"bench": "precision", "metric": "steps_per_second_ratio",
                  "value": lines["fp32"]["value"] / lines["bf16"]["value"],
                  "unit": "x (bf16 / fp32)", "model": model, "batch": args.precision_batch,
                  "bar": 1.5 if model == "cnn" else None, "device": lines["fp32"]["device"]})


if __name__ == "__main__":
    main()
