"""GAN training step: milliseconds per two-player step for each convolution
lowering and execution mode.

Question answered: which ``gan.conv`` lowering (im2col or XLA's own
convolution) and which execution (the epoch as one ``lax.scan``, or one
jitted step per Python call) trains the DCGAN-style GAN fastest on this
backend? ``gan.conv: auto`` follows the answer (im2col on CPU). Random
images stand in for MNIST (the step's cost does not depend on pixel values).
Output: JSON lines.

Run::

    python benchmarks/gan_step.py [--width 64 --batch 64 --steps 20]
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
import optax  # noqa: E402

from jaxdl.algorithms.gan import GAN  # noqa: E402
from jaxdl.models.gan import Discriminator, Generator  # noqa: E402


def ms_per_step(width: int, batch: int, conv: str, mode: str, steps: int) -> float:
    gan = GAN(Generator("conv", width=width, conv=conv), Discriminator("conv", width=width,
                                                                       conv=conv),
              optax.adam(2e-4, b1=0.5), optax.adam(2e-4, b1=0.5), latent=64)
    state = gan.init(jax.random.key(0), (28, 28, 1))
    images = jax.random.uniform(jax.random.key(1), (batch * steps, 28, 28, 1), minval=-1.0,
                                maxval=1.0)
    rng = jax.random.key(2)
    if mode == "scan":
        epoch = jax.jit(gan.train_epoch, static_argnums=3, donate_argnums=0)
        state, _ = epoch(state, images, rng, batch)            # compile + warm-up
        jax.block_until_ready(state)
        t = time.perf_counter()
        state, _ = epoch(state, images, rng, batch)
        jax.block_until_ready(state)
    else:
        step = jax.jit(gan.train_step, donate_argnums=0)
        batches = images.reshape(steps, batch, 28, 28, 1)
        state, _ = step(state, batches[0], rng)
        jax.block_until_ready(state)
        t = time.perf_counter()
        for i in range(steps):
            state, _ = step(state, batches[i], rng)
        jax.block_until_ready(state)
    return (time.perf_counter() - t) / steps * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    args = p.parse_args(argv)
    common = {"bench": "gan_step", "width": args.width, "batch": args.batch,
              "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "cpus": os.cpu_count(), "machine": platform.machine()}
    times = {}
    for conv, mode in (("im2col", "scan"), ("im2col", "step"), ("xla", "scan"),
                       ("xla", "step")):
        times[conv, mode] = ms_per_step(args.width, args.batch, conv, mode, args.steps)
        print(json.dumps({**common, "conv": conv, "mode": mode, "metric": "ms_per_step",
                          "value": round(times[conv, mode], 1), "unit": "ms"}), flush=True)
    best_xla = min(times["xla", "scan"], times["xla", "step"])
    print(json.dumps({**common, "metric": "xla_over_im2col_ratio",
                      "value": round(best_xla / times["im2col", "scan"], 2), "unit": "x"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
