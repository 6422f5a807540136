"""MNIST training speed and accuracy: jaxdl against eager PyTorch on the same machine.

Question answered: how many seconds does one MNIST training epoch take with
jaxdl's compiled engine, compared with the same network, optimizer, batch
size and data in eager PyTorch (at its default and at its fastest settings),
and what test accuracy does the shipped jaxdl experiment reach?

For each model (``mlp``: 784-512-512-10 ReLU, Adam 1e-3; ``cnn``: Flax's
MNIST example network, SGD momentum 0.9, lr 0.1; both batch 128):

* jaxdl speed: the experiment config (experiments/mnist_<model>.yaml) with
  dropout 0, through ``build_engine``/``new_state``/``Engine.train_epoch``;
  one warm-up epoch (it compiles: ``compile_seconds``), then the median of
  ``--speed-epochs`` timed epochs (``seconds_per_epoch``, ``steps_per_second``).
  Timed epochs of all frameworks/variants of a model run round-robin, so that
  background load on a shared machine falls on all of them alike.
  By default the speed runs use the whole 60 000-image training split
  (``--speed-val-fraction 0``), i.e. 468 steps per epoch.
* jaxdl accuracy: the shipped config trained end to end with ``jaxdl.run``
  (MLP with its dropout 0.2), its final ``test_accuracy``.
* PyTorch (if installed): the same architecture in eager mode on the same
  normalised arrays, batch 128, last partial batch dropped, ``torch.randperm``
  shuffling, ``torch.set_num_threads(os.cpu_count())``. MLP with Adam and
  Adam(fused=True) ("fastest settings"); CNN with SGD momentum in NCHW and in
  ``channels_last``. Timed the same way. Each speed runner also reports
  ``speed_run_test_accuracy`` (after its warm-up + timed epochs) as a check
  that the frameworks train the same network equally well.
* Ratios measured in the same run (jaxdl seconds/epoch / PyTorch seconds/epoch;
  below 1 means jaxdl is faster): ``mlp_epoch_ratio_vs_torch_fused``,
  ``cnn_epoch_ratio_vs_torch``, ``cnn_epoch_ratio_vs_torch_channels_last``.

Output: one JSON object per line on stdout (``bench``, ``metric``, ``value``,
``unit``, ``model``, ``framework``, ``variant``, ``batch``, ``device``, ...),
also appended to ``--out FILE``; progress goes to stderr.

Run (the full benchmark takes several minutes per model on a small CPU)::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/mnist_speed.py [--models mlp,cnn]

Quick smoke run::

    JAXDL_DATA_DIR=... python benchmarks/mnist_speed.py --models mlp \\
        --speed-epochs 1 --accuracy-epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxdl
from jaxdl import config as config_lib
from jaxdl import data as data_lib
from jaxdl.algorithms.supervised import default_steps_per_call
from jaxdl.experiment import build_engine, new_state
from jaxdl.loop import run_keys

BENCH = "mnist_speed"
MODELS = ("mlp", "cnn")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RATIO_NAMES = {  # (model, torch variant) -> ratio metric name
    ("mlp", "adam_fused"): "mlp_epoch_ratio_vs_torch_fused",
    ("cnn", "nchw"): "cnn_epoch_ratio_vs_torch",
    ("cnn", "channels_last"): "cnn_epoch_ratio_vs_torch_channels_last",
}


def log(msg: str) -> None:
    print(f"[{BENCH}] {msg}", file=sys.stderr, flush=True)


class Emitter:
    """Prints one JSON line per result to stdout (and appends to ``--out``)."""

    def __init__(self, out: str | None):
        self.out = Path(out) if out else None
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, metric: str, value: float, unit: str, **fields: Any) -> None:
        line = json.dumps({"bench": BENCH, "metric": metric, "value": value, "unit": unit,
                           **fields})
        print(line, flush=True)
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(line + "\n")


@dataclasses.dataclass
class Runner:
    """One framework/variant being timed: ``run_epoch`` trains one epoch and
    returns when its work is finished; ``report(seconds)`` emits its lines
    and returns the median seconds per epoch."""

    label: str
    run_epoch: Callable[[], None]
    report: Callable[[list[float]], float]
    steps_per_call: int | None = None
    seconds: list[float] = dataclasses.field(default_factory=list)


def time_interleaved(runners: list[Runner], warmup: int, timed: int) -> None:
    """Warm every runner up, then time ``timed`` rounds of one epoch each,
    round-robin (rotating the order each round), so that background load on
    a shared machine hits all frameworks alike rather than whichever ran
    during a burst."""
    for r in runners:
        for i in range(warmup):
            log(f"{r.label}: warm-up epoch {i + 1}/{warmup}")
            r.run_epoch()
    for rnd in range(timed):
        k = rnd % len(runners)
        for r in runners[k:] + runners[:k]:
            t0 = time.perf_counter()
            r.run_epoch()
            r.seconds.append(time.perf_counter() - t0)
            log(f"{r.label}: timed epoch {rnd + 1}/{timed}: {r.seconds[-1]:.3f} s")


def config_path(model: str) -> Path:
    return EXPERIMENTS / f"mnist_{model}.yaml"


def speed_overrides(model: str, val_fraction: float) -> dict[str, Any]:
    """Overrides that make the timed jaxdl model exactly the benchmark model."""
    o: dict[str, Any] = {"model.dropout": 0.0, "checkpoint.enabled": False,
                         "train.progress": False, "train.batch_size": 128,
                         "data.val_fraction": val_fraction}
    if val_fraction == 0.0:
        o["train.monitor"] = "train_loss"  # val_* needs a validation split
    if model == "mlp":
        o.update({"model.name": "mlp", "model.depth": 2, "model.width": 512,
                  "model.widths": None, "model.activation": "relu",
                  "optim.name": "adam", "optim.learning_rate": 1e-3})
    return o


# ------------------------------------------------------------------ jaxdl


def speed_config(model: str, args: argparse.Namespace,
                 steps_per_call: int | None = None) -> config_lib.Config:
    o = speed_overrides(model, args.speed_val_fraction)
    if steps_per_call is not None:
        o["train.steps_per_call"] = steps_per_call
    return config_lib.load(config_path(model), o)


def jaxdl_runner(model: str, dataset: Any, args: argparse.Namespace,
                 steps_per_call: int | None, emit: Emitter, device: str) -> Runner:
    """A runner timing ``Engine.train_epoch`` of the benchmark model."""
    cfg = speed_config(model, args, steps_per_call)
    engine = build_engine(cfg, dataset)
    compile_before = engine.compile_seconds
    state = new_state(cfg, engine, dataset)
    x = jnp.asarray(dataset.train.x)
    y = jnp.asarray(dataset.train.y)
    keys = run_keys(cfg.seed)
    backend = jax.default_backend()
    auto = default_steps_per_call(cfg.model.name, backend, engine.steps_per_epoch,
                                  jaxdl.models.conv_impl(cfg.model, backend))
    variant = f"steps_per_call={engine.steps_per_call}"
    if steps_per_call is None:
        variant += " (auto)"
    label = f"jaxdl {model} [{variant}]"
    log(f"{label}: {len(dataset.train)} train examples, {engine.steps_per_epoch} steps/epoch "
        "(the first epoch compiles)")
    box: dict[str, Any] = {"state": state, "epoch": 0, "train": {}}

    def run_epoch() -> None:
        box["epoch"] += 1
        shuffle = jax.random.fold_in(keys["shuffle"], box["epoch"])
        box["state"], box["train"] = engine.train_epoch(box["state"], x, y, shuffle,
                                                        keys["dropout"])
        jax.block_until_ready(box["state"].params)

    def report(secs: list[float]) -> float:
        compile_s = engine.compile_seconds - compile_before
        test = engine.evaluate(box["state"],
                               engine.put_eval_split(dataset.test.x, dataset.test.y))
        med = statistics.median(secs)
        common = dict(model=model, framework="jaxdl", variant=variant,
                      batch=cfg.train.batch_size, device=device,
                      steps_per_epoch=engine.steps_per_epoch,
                      steps_per_call=engine.steps_per_call, steps_per_call_auto=auto,
                      n_train=len(dataset.train), dropout=cfg.model.dropout)
        if model == "cnn":
            common["conv"] = jaxdl.models.conv_impl(cfg.model)
        emit("seconds_per_epoch", round(med, 4), "s", **common, epochs_timed=len(secs),
             epoch_seconds=[round(t, 4) for t in secs])
        emit("steps_per_second", round(engine.steps_per_epoch / med, 2), "steps/s", **common)
        emit("compile_seconds", round(compile_s, 3), "s", **common)
        emit("speed_run_test_accuracy", round(test["accuracy"], 5), "fraction", **common,
             epochs_trained=box["epoch"])
        log(f"{label}: {med:.3f} s/epoch ({engine.steps_per_epoch / med:.1f} steps/s), "
            f"compile {compile_s:.2f} s, last train loss {box['train'].get('loss', 0):.4f}, "
            f"test acc after {box['epoch']} epochs {test['accuracy']:.4f}")
        return med

    return Runner(label, run_epoch, report, engine.steps_per_call)


def jaxdl_accuracy(model: str, args: argparse.Namespace, emit: Emitter, device: str) -> None:
    o: dict[str, Any] = {"train.progress": False}
    if args.accuracy_epochs is not None:
        o["train.epochs"] = args.accuracy_epochs
    cfg = config_lib.load(config_path(model), o)
    log(f"jaxdl {model}: accuracy run of {config_path(model).name} for {cfg.train.epochs} "
        f"epochs (dropout {cfg.model.dropout}) ...")
    with tempfile.TemporaryDirectory(prefix="jaxdl_mnist_speed_") as tmp:
        result = jaxdl.run(cfg, workdir=Path(tmp) / "run", progress=False, quiet=True)
    s = result.summary
    acc = s["final"]["test"]["accuracy"]
    emit("test_accuracy", round(acc, 5), "fraction", model=model, framework="jaxdl",
         variant="shipped_config", batch=cfg.train.batch_size, device=device,
         config=config_path(model).name, epochs=s["epochs"], status=s["status"],
         dropout=cfg.model.dropout, wall_seconds=s["wall_seconds"],
         compile_seconds=s["compile_seconds"], seconds_per_epoch=s["seconds_per_epoch"],
         best_val_accuracy=s["best"].get("val", {}).get("accuracy"))
    log(f"jaxdl {model}: test accuracy {acc:.4f} after {s['epochs']} epochs "
        f"({s['wall_seconds']:.1f} s wall, compile {s['compile_seconds']:.1f} s)")


# ---------------------------------------------------------------- PyTorch


def torch_runners(model: str, dataset: Any, args: argparse.Namespace,
                  emit: Emitter) -> dict[str, Runner]:
    """Runners timing eager PyTorch epochs, one per variant."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    batch = 128

    def to_tensor(x: np.ndarray) -> torch.Tensor:
        if model == "cnn":  # [n, 28, 28] or [n, 28, 28, 1] -> NCHW
            x = x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    x_all, x_test = to_tensor(dataset.train.x), to_tensor(dataset.test.x)
    y_all = torch.from_numpy(np.asarray(dataset.train.y, dtype=np.int64))
    y_test = torch.from_numpy(np.asarray(dataset.test.y, dtype=np.int64))
    n = x_all.shape[0]
    steps = n // batch  # drop the last partial batch, as jaxdl does

    def make_model() -> nn.Module:
        if model == "mlp":
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                                 nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))

    if model == "mlp":
        variants = {
            "adam": (False, lambda p: torch.optim.Adam(p, lr=1e-3)),
            "adam_fused": (False, lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)),
        }
    else:
        sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)
        variants = {"nchw": (False, sgd), "channels_last": (True, sgd)}

    def make_runner(variant: str, channels_last: bool, make_opt: Callable) -> Runner:
        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        net = make_model()
        xs, xts = x_all, x_test
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            xs = x_all.contiguous(memory_format=torch.channels_last)
            xts = x_test.contiguous(memory_format=torch.channels_last)
        opt = make_opt(net.parameters())
        label = f"torch {model} [{variant}]"
        box: dict[str, Any] = {"loss": float("nan"), "epoch": 0}

        def run_epoch() -> None:
            net.train()
            perm = torch.randperm(n, generator=gen)
            total = torch.zeros(())
            for i in range(steps):
                idx = perm[i * batch:(i + 1) * batch]
                xb, yb = xs[idx], y_all[idx]
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            box["loss"] = float(total) / steps
            box["epoch"] += 1

        def report(secs: list[float]) -> float:
            net.eval()
            correct = 0
            with torch.no_grad():
                for i in range(0, xts.shape[0], 1000):
                    pred = net(xts[i:i + 1000]).argmax(1)
                    correct += int((pred == y_test[i:i + 1000]).sum())
            acc = correct / xts.shape[0]
            med = statistics.median(secs)
            common = dict(model=model, framework="torch", variant=variant, batch=batch,
                          device="cpu", steps_per_epoch=steps, n_train=n,
                          torch_version=torch.__version__, threads=torch.get_num_threads())
            emit("seconds_per_epoch", round(med, 4), "s", **common, epochs_timed=len(secs),
                 epoch_seconds=[round(t, 4) for t in secs])
            emit("steps_per_second", round(steps / med, 2), "steps/s", **common)
            emit("speed_run_test_accuracy", round(acc, 5), "fraction", **common,
                 epochs_trained=box["epoch"])
            log(f"{label}: {med:.3f} s/epoch ({steps / med:.1f} steps/s), last train loss "
                f"{box['loss']:.4f}, test acc after {box['epoch']} epochs {acc:.4f}")
            return med

        log(f"{label}: {n} train examples, {steps} steps/epoch, "
            f"{torch.get_num_threads()} threads")
        return Runner(label, run_epoch, report)

    return {v: make_runner(v, cl, mk) for v, (cl, mk) in variants.items()}


# ------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="MNIST training speed (s/epoch, steps/s, compile s) and accuracy of "
        "jaxdl, with eager PyTorch on the same data and its ratio, as JSON lines on stdout. "
        "Needs the MNIST files in $JAXDL_DATA_DIR (or ~/.cache/jaxdl).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="mlp,cnn",
                   help="comma-separated models to benchmark: mlp, cnn")
    p.add_argument("--speed-epochs", type=int, default=3,
                   help="timed epochs per framework/variant; the median is reported")
    p.add_argument("--warmup-epochs", type=int, default=1,
                   help="untimed epochs per runner before timing (jaxdl compiles in the "
                   "first; with 0 the first timed jaxdl epoch includes compilation)")
    p.add_argument("--speed-val-fraction", type=float, default=0.0,
                   help="data.val_fraction for the speed runs (0: time epochs over the whole "
                   "60k training split; the shipped configs hold out 0.1)")
    p.add_argument("--steps-per-call", default=None,
                   help="comma-separated train.steps_per_call values to time in addition to "
                   "jaxdl's automatic choice (e.g. '1,468' to compare one step per call with "
                   "a whole-epoch lax.scan); ratios always use the automatic choice; "
                   "None: only the automatic choice")
    p.add_argument("--no-accuracy", action="store_true",
                   help="skip the end-to-end jaxdl accuracy run of the shipped config")
    p.add_argument("--accuracy-epochs", type=int, default=None,
                   help="override train.epochs of the accuracy run (None: as shipped, "
                   "15 for mlp, 10 for cnn)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--seed", type=int, default=0, help="PyTorch init and shuffle seed")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        p.error(f"--models: unknown {', '.join(bad) or '(none)'}; valid: {', '.join(MODELS)}")
    if args.speed_epochs < 1 or args.warmup_epochs < 0:
        p.error("--speed-epochs must be >= 1 and --warmup-epochs >= 0")
    if args.accuracy_epochs is not None and args.accuracy_epochs < 1:
        p.error("--accuracy-epochs must be >= 1")
    try:
        args.steps_per_call = [int(s) for s in (args.steps_per_call or "").split(",")
                               if s.strip()]
    except ValueError:
        p.error("--steps-per-call: expected comma-separated integers")
    if any(s < 1 for s in args.steps_per_call):
        p.error("--steps-per-call: values must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit = Emitter(args.out)
    dev = jax.devices()[0]
    device = getattr(dev, "device_kind", None) or dev.platform
    has_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            has_torch = True
        except ImportError:
            log("PyTorch is not installed: skipping the PyTorch comparison")
    log(f"jax {jax.__version__} on {device} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs; models: {', '.join(args.models)}")

    for model in args.models:
        cfg = speed_config(model, args)
        dataset = data_lib.load(cfg.data, cfg.seed)
        main_runner = jaxdl_runner(model, dataset, args, None, emit, device)
        runners = [main_runner]
        steps = len(dataset.train) // cfg.train.batch_size
        for spc in args.steps_per_call:
            if min(spc, steps) == main_runner.steps_per_call:
                log(f"jaxdl {model}: steps_per_call={spc} is the automatic choice; "
                    "not timed twice")
                continue
            runners.append(jaxdl_runner(model, dataset, args, spc, emit, device))
        torch_rs = torch_runners(model, dataset, args, emit) if has_torch else {}
        time_interleaved(runners + list(torch_rs.values()), args.warmup_epochs,
                         args.speed_epochs)
        jax_s = None
        for r in runners:
            med = r.report(r.seconds)
            if r is main_runner:
                jax_s = med
        for variant, r in torch_rs.items():
            t = r.report(r.seconds)
            name = RATIO_NAMES.get((model, variant))
            if name is not None:
                emit(name, round(jax_s / t, 4), "ratio", model=model, framework="jaxdl",
                     variant=f"vs torch {variant}", batch=cfg.train.batch_size, device=device,
                     jaxdl_seconds_per_epoch=round(jax_s, 4),
                     torch_seconds_per_epoch=round(t, 4))
        del runners, torch_rs, main_runner, dataset
        if not args.no_accuracy:
            jaxdl_accuracy(model, args, emit, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
