"""How fast are single matmuls of the MNIST MLP's shapes, XLA vs PyTorch?

Question answered: the GFLOP/s of each float32 matrix product in one
784-512-512-10 MLP step at batch 128 (forward ``x @ W`` and the backward
weight-gradient products), through XLA (jitted, 100 products in a
``fori_loop`` whose input depends on the previous product, so nothing is
hoisted) and through PyTorch (eager, if installed). It separates the speed
of the GEMM library from the engine around it.

Output: JSON lines (``bench``, ``metric`` = ``gflops``, ``value``, ``unit``,
``shape`` = "MxKxN", ``framework``, ``device``).

Run::

    python benchmarks/matmul.py
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = [(128, 784, 512), (128, 512, 512), (784, 128, 512), (512, 128, 512), (128, 512, 10)]
REPS = 100


def xla_seconds(a: np.ndarray, b: np.ndarray) -> float:
    @jax.jit
    def run(x, y):
        def body(_, acc):
            return acc + ((x + acc) @ y)[0, 0] * 1e-9
        return jax.lax.fori_loop(0, REPS, body, jnp.zeros((), jnp.float32))

    xa, xb = jnp.asarray(a), jnp.asarray(b)
    run(xa, xb).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        run(xa, xb).block_until_ready()
        best = min(best, (time.perf_counter() - t0) / REPS)
    return best


def torch_seconds(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for _ in range(10):
        ta @ tb
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(REPS):
            ta @ tb
        best = min(best, (time.perf_counter() - t0) / REPS)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    device = jax.devices()[0].device_kind
    for m, k, n in SHAPES:
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        flop = 2 * m * k * n
        for framework, seconds in (("xla", xla_seconds(a, b)), ("torch", torch_seconds(a, b))):
            if seconds is None:
                continue
            print(json.dumps({"bench": "matmul", "metric": "gflops",
                              "value": round(flop / seconds / 1e9, 1), "unit": "GFLOP/s",
                              "shape": f"{m}x{k}x{n}", "framework": framework,
                              "device": device}), flush=True)


if __name__ == "__main__":
    main()
