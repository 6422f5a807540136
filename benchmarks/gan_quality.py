"""GAN on MNIST: seconds per epoch and Frechet distance after N epochs,
between a real-data floor and an untrained-generator ceiling.

Question answered: how good do a GAN's samples get, how fast, on this
machine? It trains a GAN config through ``jaxdl.run`` (exactly what ``jaxdl
train`` does) in a temporary run directory and reports from its record.
Scores come from ``jaxdl.scorer`` (an MNIST MLP trained by jaxdl, cached under
the data directory); the test-set floor is the Frechet distance of 10,000
real training images to the real test images, the ceiling that of the
untrained generator's samples, and ``fraction`` places a score between them
(0 = floor, 1 = ceiling). Output: JSON lines.

Run::

    JAXDL_DATA_DIR=../shared/data python benchmarks/gan_quality.py \\
        [--config experiments/mnist_gan_mlp.yaml] [--set train.epochs=30 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from jaxdl import allocator

allocator.reuse_freed_memory()

import jax  # noqa: E402

import jaxdl  # noqa: E402
from jaxdl import config  # noqa: E402
from jaxdl.metrics import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "experiments" / "mnist_gan_mlp.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="config override, e.g. train.epochs=30")
    args = p.parse_args(argv)
    cfg = config.load(args.config, [*args.overrides, "train.progress=false"])
    if cfg.algorithm != "gan":
        p.error(f"{args.config} is not a GAN config")
    g = cfg.gan
    common = {"bench": "gan_quality", "config": Path(args.config).name,
              "overrides": args.overrides, "generator": f"{g.generator.kind}{g.generator.width}",
              "discriminator": f"{g.discriminator.kind}{g.discriminator.width}",
              "batch": cfg.train.batch_size, "epochs": cfg.train.epochs,
              "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
              "machine": platform.machine()}

    def emit(metric, value, unit, **extra):
        print(json.dumps({**common, "metric": metric, "value": value, "unit": unit, **extra}),
              flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        result = jaxdl.run(cfg, workdir=Path(tmp) / "run", quiet=True)
        rows = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    s = result.summary
    if s["status"] != "completed":
        emit("status", s["status"], "", reason=s["reason"])
        return 1
    if "test" not in s.get("baselines", {}):
        emit("status", "no baselines", "", warnings=s.get("warnings"))
        return 1
    floor, ceiling = (s["baselines"]["test"][k] for k in ("frechet_real", "frechet_untrained"))
    emit("frechet_floor", round(floor, 3), "", split="test")
    emit("frechet_ceiling", round(ceiling, 3), "", split="test")
    emit("seconds_per_epoch", round(s["seconds_per_epoch"], 2), "s")
    emit("wall_seconds", round(s["wall_seconds"], 1), "s", compile_seconds=s["compile_seconds"],
         eval_seconds=s["eval_seconds"])
    for r in rows:
        if r["split"] == "val":
            emit("frechet", round(r["frechet"], 3), "", split="val", epoch=r["epoch"],
                 class_entropy=round(r["class_entropy"], 3), confident=round(r["confident"], 3))
    for which in ("best", "final"):
        t = s[which]["test"]
        emit("frechet", round(t["frechet"], 3), "", split="test", checkpoint=which,
             epoch=s["best_epoch"] if which == "best" else s["epochs"],
             fraction=round((t["frechet"] - floor) / (ceiling - floor), 4),
             class_entropy=round(t["class_entropy"], 3), confident=round(t["confident"], 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
