"""PPO on gymnax CartPole-v1: the whole training run compiled, seeds vmapped.

Question answered: how fast does the compiled PPO train on this machine, for
how many environments, and do its agents solve CartPole? For each setting it
reports compile and run seconds (apart), environment steps per second, and
per seed the mean return of the last updates' episodes and the greedy
policy's mean return over 100 episodes (solved: >= 475). Output: JSON lines.

Run::

    python benchmarks/ppo_cartpole.py [--seeds 8] [--envs 4,64,512] [--steps 500000]
        [--reuse-freed-memory]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

from jaxdl import allocator

# glibc's default allocator unless asked: the one-arena setting that helps
# the LSTM (benchmarks/allocator.py) makes this program about 1.6x slower.
if "--reuse-freed-memory" in sys.argv:
    allocator.reuse_freed_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl.rl.ppo import PPO, PPOSettings  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--envs", default="4", help="comma-separated environment counts")
    p.add_argument("--steps", type=int, default=500_000, help="environment steps per seed")
    p.add_argument("--reuse-freed-memory", action="store_true",
                   help="jaxdl.allocator's setting, as the jaxdl command uses")
    args = p.parse_args(argv)
    common = {"bench": "ppo_cartpole", "malloc": "reuse" if args.reuse_freed_memory
              else "system", "device": jax.devices()[0].device_kind,
              "cpus": os.cpu_count(), "machine": platform.machine(), "steps": args.steps}

    def emit(**row):
        print(json.dumps({**common, **row}), flush=True)

    for envs in map(int, args.envs.split(",")):
        for seeds in sorted({1, args.seeds}):
            ppo = PPO(PPOSettings(num_envs=envs, total_steps=args.steps))
            keys = jax.random.split(jax.random.key(0), seeds)
            t = time.perf_counter()
            train = jax.jit(jax.vmap(ppo.train)).lower(keys).compile()
            compile_s = time.perf_counter() - t
            t = time.perf_counter()
            state, m = train(keys)
            jax.block_until_ready(state)
            run_s = time.perf_counter() - t
            steps = seeds * ppo.num_updates * ppo.batch
            evaluate = functools.partial(ppo.evaluate, episodes=100, max_steps=500)
            greedy = jax.jit(jax.vmap(evaluate))(state.params,
                                                 jax.random.split(jax.random.key(1), seeds))
            greedy = np.asarray(greedy).mean(axis=1)
            last = np.nanmean(np.asarray(m["episode_return"])[:, -10:], axis=1)
            setting = {"envs": envs, "seeds": seeds}
            emit(metric="compile_seconds", value=round(compile_s, 2), unit="s", **setting)
            emit(metric="run_seconds", value=round(run_s, 2), unit="s", **setting)
            emit(metric="env_steps_per_second", value=round(steps / run_s), unit="steps/s",
                 **setting)
            emit(metric="greedy_return", value=[round(float(g), 1) for g in greedy], unit="",
                 solved=int((greedy >= 475).sum()), last_train_return=[round(float(x), 1)
                                                                       for x in last],
                 **setting)
    return 0


if __name__ == "__main__":
    sys.exit(main())
