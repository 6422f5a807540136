"""Char-LSTM training step: jaxdl against PyTorch ``nn.LSTM`` on the same machine.

Question answered: how many training steps per second does jaxdl's
character LSTM run (embedding 64, one LSTM layer of 256, sequence length
100, batch 64, vocabulary 65, Adam, gradient clipping at 1.0, softmax
cross-entropy over every step), and how does that compare with PyTorch's
``nn.Embedding`` + ``nn.LSTM`` + ``nn.Linear`` with the same sizes, in the
same run?

Variants (all timed round-robin, so background load falls on all alike):

* ``jaxdl``: the engine's own train step (``make_train_step`` of the model
  ``jaxdl.models.make`` builds for ``experiments/shakespeare_lstm.yaml``),
  jitted with the state donated, called once per step on batches already on
  the device. The LSTM layer uses ``lstm_scan`` (hand-written backward).
* ``jaxdl_autodiff`` (``--autodiff``): the same with JAX's autodiff of the
  scan instead of the hand-written backward, to show what that buys.
* ``torch``: eager PyTorch 2.x (if importable), ``batch_first`` LSTM, Adam,
  ``clip_grad_norm_(1.0)``, ``torch.set_num_threads(os.cpu_count())``.

Each variant: warm-up steps (compilation for jaxdl), then ``--rounds``
rounds of ``--steps`` steps; the figure is the median round's ms/step.
Output: one JSON object per line (``bench``, ``metric``, ``value``,
``unit``, ``framework``, ...) on stdout and appended to ``--out``.

Run::

    python benchmarks/lstm_speed.py [--rounds 7 --steps 10 --autodiff]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import allocator, config, models, optim
from jaxdl.algorithms.supervised import Task, init_state, make_train_step

B, T, V, E, H = 64, 100, 65, 64, 256


def jaxdl_runner(batches, autodiff: bool = False):
    import jaxdl.models.rnn as rnn

    cfg = config.from_dict({
        "data": {"name": "shakespeare", "seq_len": T},
        "model": {"name": "lstm", "depth": 1, "width": H, "embed": E},
        "optim": {"name": "adam", "learning_rate": 2e-3, "clip_norm": 1.0},
    })
    original = rnn.lstm_scan
    if autodiff:
        def plain(w_hh, zx, c0, h0, unroll=1, ids=None):   # same scan, same chains
            (c, h), hs, _ = rnn._lstm_forward(w_hh, zx, c0, h0, ids, unroll,
                                              rnn.lstm_chains(h0.shape[0]))
            return hs, (c, h)
        rnn.lstm_scan = plain
    try:
        model = models.make(cfg.model, V, vocab=V, sequence_output=True)
        tx = optim.make(cfg.optim, 100, 1)
        state = init_state(model, tx, jax.random.key(0), batches[0][0])
        step = jax.jit(make_train_step(model, tx, Task("classification")), donate_argnums=0)
        key = jax.random.key(1)
        t0 = time.perf_counter()
        state, _ = step(state, batches[0], key)
        jax.block_until_ready(state)
        compile_s = time.perf_counter() - t0
    finally:
        rnn.lstm_scan = original
    box = {"state": state}

    def run(n: int) -> float:
        s = box["state"]
        t = time.perf_counter()
        for i in range(n):
            s, metrics = step(s, batches[i % len(batches)], key)
        jax.block_until_ready(s)
        box["state"] = s
        return time.perf_counter() - t

    run(3)
    return run, compile_s


def torch_runner(batches):
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)

    class CharLSTM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.embed = tnn.Embedding(V, E)
            self.lstm = tnn.LSTM(E, H, batch_first=True)
            self.head = tnn.Linear(H, V)

        def forward(self, x):
            return self.head(self.lstm(self.embed(x))[0])

    model = CharLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = [(torch.from_numpy(np.asarray(x)).long(), torch.from_numpy(np.asarray(y)).long())
            for x, y in batches]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = tnn.functional.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    def run(n: int) -> float:
        t = time.perf_counter()
        for i in range(n):
            step(*data[i % len(data)])
        return time.perf_counter() - t

    run(3)
    return run, torch.__version__


def main(argv=None) -> int:
    # As the jaxdl command does; PyTorch, in the same process, runs under the
    # same allocator settings.
    allocator_tuned = allocator.reuse_freed_memory()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--autodiff", action="store_true",
                   help="also time the LSTM with JAX's autodiff backward")
    p.add_argument("--out", help="append the JSON lines here too")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    batches = [(jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32),
                jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)) for _ in range(8)]
    runners, extra = {}, {}
    runners["jaxdl"], extra["jaxdl_compile_seconds"] = jaxdl_runner(batches)
    if args.autodiff:
        runners["jaxdl_autodiff"], _ = jaxdl_runner(batches, autodiff=True)
    try:
        runners["torch"], extra["torch_version"] = torch_runner(batches)
    except ImportError:
        print("PyTorch is not importable: jaxdl only", file=sys.stderr)
    times = {name: [] for name in runners}
    for r in range(args.rounds):
        for name, run in runners.items():
            times[name].append(run(args.steps) / args.steps)
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(
            f"{n} {1000 * t[-1]:.1f} ms" for n, t in times.items()), file=sys.stderr)
    common = {"bench": "lstm_speed", "batch": B, "seq_len": T, "hidden": H, "embed": E,
              "vocab": V, "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
              "jax": jax.__version__, "machine": platform.machine(),
              "reuse_freed_memory": allocator_tuned}
    rows = []
    ms = {n: 1000 * statistics.median(t) for n, t in times.items()}
    for name, value in ms.items():
        rows.append({**common, "framework": name, "metric": "ms_per_step",
                     "value": round(value, 2), "unit": "ms"})
        rows.append({**common, "framework": name, "metric": "steps_per_second",
                     "value": round(1000 / value, 3), "unit": "steps/s"})
    if "torch" in ms:
        rows.append({**common, "framework": "jaxdl", "metric": "step_ratio_vs_torch",
                     "value": round(ms["jaxdl"] / ms["torch"], 3), "unit": "x",
                     "torch": extra["torch_version"]})
    if "jaxdl_autodiff" in ms:
        rows.append({**common, "framework": "jaxdl", "metric": "speedup_vs_autodiff_scan",
                     "value": round(ms["jaxdl_autodiff"] / ms["jaxdl"], 3), "unit": "x"})
    rows.append({**common, "framework": "jaxdl", "metric": "compile_seconds",
                 "value": round(extra["jaxdl_compile_seconds"], 2), "unit": "s"})
    for row in rows:
        line = json.dumps(row)
        print(line)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
