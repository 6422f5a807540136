"""Where does an MNIST MLP training step spend its time on this backend?

Question answered: of one 784-512-512-10 MLP step (batch 128, inside a
``lax.scan`` over 200 steps, as the engine runs it), how much is the
gradient (forward + backward matmuls), and how much the optimizer update
(SGD, optax Adam, optax Adam with injected hyperparameters, jaxdl's Adam)?
It bounds what any engine change can gain: the gradient alone is a floor.

Random inputs of MNIST's shape; no data directory needed.

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``variant``,
``gflops``: the step's matmul GFLOP/s).

Run::

    python benchmarks/mlp_breakdown.py
"""

from __future__ import annotations

import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import optim
from jaxdl.config import OptimConfig

B, STEPS, N = 128, 200, 60_000
# Forward 784*512 + 512*512 + 512*10 MACs per example; backward needs the
# weight gradients of all three layers and input gradients of the last two.
MACS = 784 * 512 + 512 * 512 + 512 * 10
FLOP_PER_STEP = 2 * B * (2 * MACS + (512 * 512 + 512 * 10))


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(512)(x))
        x = nn.relu(nn.Dense(512)(x))
        return nn.Dense(10)(x)


def main() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((N, 784), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, N).astype(np.int32))
    model = _MLP()
    params = model.init(jax.random.key(0), x[:1])
    perm = jax.random.permutation(jax.random.key(1), N)[: STEPS * B]

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

    variants = {
        "gradient only": None,
        "sgd": optax.sgd(0.01),
        "adam": optax.adam(1e-3),
        "adam (inject_hyperparams)": optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
        "jaxdl optim.make adam": optim.make(OptimConfig(), 468, 10),
    }
    device = jax.devices()[0].device_kind
    for name, tx in variants.items():
        def body(carry, i, tx=tx):
            p, o = carry
            idx = jax.lax.dynamic_slice_in_dim(perm, i * B, B)
            value, g = jax.value_and_grad(loss)(p, x[idx], y[idx])
            if tx is None:   # keep the gradient live without an optimizer
                return (jax.tree.map(lambda a, b: a + 0 * b, p, g), o), value
            updates, o = tx.update(g, o, p)
            return (optax.apply_updates(p, updates), o), value

        run = jax.jit(lambda c, body=body: jax.lax.scan(body, c, jnp.arange(STEPS)),
                      donate_argnums=0)
        carry = (jax.tree.map(jnp.copy, params), tx.init(params) if tx else None)
        carry, v = run(carry)
        jax.block_until_ready(v)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            carry, v = run(carry)
            jax.block_until_ready(v)
            times.append((time.perf_counter() - t0) / STEPS)
        best = min(times)
        print(json.dumps({"bench": "mlp_breakdown", "metric": "seconds_per_step",
                          "value": round(best, 6), "unit": "s", "variant": name, "batch": B,
                          "device": device, "epoch_seconds_468_steps": round(best * 468, 3),
                          "gflops": round(FLOP_PER_STEP / best / 1e9, 1)}), flush=True)


if __name__ == "__main__":
    main()
