"""What ``jaxdl.allocator.reuse_freed_memory`` buys and costs on XLA CPU.

Question answered: for the char-LSTM train step of ``lstm_speed.py`` (batch
64, 100 steps, hidden 256), how many minor page faults does a step take, how
long is a step, and how much memory does the process hold after N steps,
with glibc's default settings (``JAXDL_MALLOC=system``) and with
``reuse_freed_memory``? Each setting runs in a fresh process (the setting
must precede JAX's start). Output: one JSON object per setting.

Run::

    python benchmarks/allocator.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, time
from jaxdl import allocator
applied = allocator.reuse_freed_memory()
sys.path.insert(0, "benchmarks")
import jax, jax.numpy as jnp, numpy as np
from lstm_speed import B, T, V, jaxdl_runner

rng = np.random.default_rng(0)
batches = [(jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32),
            jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)) for _ in range(8)]
run, _ = jaxdl_runner(batches)
steps = int(sys.argv[1])
times, faults = [], []
for _ in range(steps):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times.append(run(1))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
late = faults[steps // 2:]
print(json.dumps({"reuse_freed_memory": applied, "steps": steps,
                  "ms_per_step_median": round(1000 * statistics.median(times), 2),
                  "faults_per_step_median": statistics.median(faults),
                  "faults_per_step_mean_second_half": round(sum(late) / len(late), 1),
                  "steps_faulting_over_1000_second_half": sum(f > 1000 for f in late),
                  "rss_mb_at_end": round(rss), "max_rss_mb": round(
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    for setting in ("system", ""):
        env = {**os.environ, "JAXDL_MALLOC": setting}
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps)], env=env,
                             check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(json.dumps({"bench": "allocator", **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
