"""GAN on MNIST: seconds per epoch and Frechet distance after N epochs,
between a real-data floor and an untrained-generator ceiling.

Question answered: how good do a GAN's samples get, how fast, on this
machine? Scores come from ``jaxdl.scorer`` (an MNIST MLP trained by jaxdl,
cached under the data directory): the floor is the Frechet distance of
10,000 real training images to the real test set, the ceiling that of the
untrained generator's samples; ``fraction`` places a score between them
(0 = floor, 1 = ceiling). Output: JSON lines.

Run::

    JAXDL_DATA_DIR=../shared/data python benchmarks/gan_quality.py \
        [--kind mlp|conv --width 512 --epochs 30 --batch 64 --lr 2e-4 --evals 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from jaxdl import allocator

allocator.reuse_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxdl import config, data, scorer  # noqa: E402
from jaxdl.algorithms.gan import GAN  # noqa: E402
from jaxdl.models.gan import Discriminator, Generator  # noqa: E402

LATENT, SAMPLES, CHUNK = 64, 10_000, 500


def samples(sample, state, key) -> np.ndarray:
    """``SAMPLES`` images from the jitted ``sample(state, z)``, in chunks."""
    z = jax.random.normal(key, (SAMPLES, LATENT))
    return np.concatenate([np.asarray(sample(state, z[i:i + CHUNK]))
                           for i in range(0, SAMPLES, CHUNK)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--evals", type=int, default=3, help="scored epochs (evenly spaced)")
    args = p.parse_args(argv)

    common = {"bench": "gan_quality", "kind": args.kind, "width": args.width,
              "batch": args.batch, "lr": args.lr, "device": jax.devices()[0].device_kind,
              "cpus": os.cpu_count(), "machine": platform.machine()}

    def emit(**row):
        print(json.dumps({**common, **row}), flush=True)

    t = time.perf_counter()
    sc = scorer.load_scorer("mnist")
    emit(metric="scorer_seconds", value=round(time.perf_counter() - t, 1),
         scorer=str(sc.run_dir))
    cfg = config.from_dict({"data": {"name": "mnist", "normalize": "unit"},
                            "model": {"name": "mlp"}})
    train = np.asarray(data.load(cfg.data).train.x, np.float32)[..., None] * 2.0 - 1.0
    floor = sc.score(train[:SAMPLES])["frechet"]
    conv = "im2col" if jax.default_backend() == "cpu" else "xla"
    gan = GAN(Generator(args.kind, width=args.width, conv=conv),
              Discriminator(args.kind, width=args.width, conv=conv),
              optax.adam(args.lr, b1=0.5), optax.adam(args.lr, b1=0.5), latent=LATENT)
    state = gan.init(jax.random.key(0), (28, 28, 1))
    eval_key, sample = jax.random.key(7), jax.jit(gan.sample)
    ceiling = sc.score(samples(sample, state, eval_key))["frechet"]
    emit(metric="frechet_floor", value=round(floor, 3))
    emit(metric="frechet_ceiling", value=round(ceiling, 3))

    images = jnp.asarray(train)
    epoch_fn = jax.jit(gan.train_epoch, static_argnums=3, donate_argnums=0)
    scored = {round(args.epochs * (i + 1) / args.evals) for i in range(args.evals)}
    train_seconds = 0.0
    for e in range(1, args.epochs + 1):
        t = time.perf_counter()
        state, m = epoch_fn(state, images, jax.random.fold_in(jax.random.key(1), e), args.batch)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t
        train_seconds += dt
        if e == 2:
            emit(metric="seconds_per_epoch", value=round(dt, 2), epoch=e)
        if e in scored:
            s = sc.score(samples(sample, state, eval_key))
            emit(metric="frechet", value=round(s["frechet"], 3), epoch=e,
                 fraction=round((s["frechet"] - floor) / (ceiling - floor), 4),
                 class_entropy=round(s["class_entropy"], 3),
                 confident=round(s["confident"], 3), train_seconds=round(train_seconds, 1),
                 losses={k: round(float(v), 3) for k, v in m.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
