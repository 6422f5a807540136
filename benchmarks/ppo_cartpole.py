"""PPO on gymnax CartPole-v1: speed, time to solve, the cost of vmapped
seeds, and stable-baselines3's PPO on the same machine in the same run.

Question answered: how fast does jaxdl's compiled PPO (the program
``jaxdl train experiments/cartpole_ppo.yaml`` runs) train here, with 4, 64
and 512 environments, how long until it solves CartPole, what do 8 agents
vmapped in one program cost against 1, and how does that compare with
stable-baselines3 (PyTorch) PPO?

For each environment count (its schedule below: more environments take
shorter rollouts and a higher learning rate, since environment count and
update schedule interact):

* 1 agent, trained in chunks of ``--chunk`` updates (a call per chunk, so
  about 6 ms of dispatch each): compile seconds, and the wall-clock seconds
  (compile excluded, and with it) until the mean return of the last 100
  training episodes first reaches 475 (stable-baselines3's criterion: its
  100-episode buffer);
* 1 agent and ``--seeds`` agents as one vmapped program, each in the 8
  chunks ``jaxdl train`` uses: compile and run seconds, env steps/s (the
  1-agent figure is the one compared with stable-baselines3), the cost of
  the agents relative to 1, and each agent's greedy return over 100
  episodes (solved: >= 475).

With ``--sb3``: stable-baselines3 PPO with its defaults on gymnasium
CartPole-v1 with 4 environments (DummyVecEnv), until the same criterion or
``--steps``: env steps/s and time to 475. Output: JSON lines.

Run::

    python benchmarks/ppo_cartpole.py [--seeds 8] [--envs 4,64,512] [--steps 500000]
        [--sb3] [--reuse-freed-memory]

(stable-baselines3 needs ``pip install torch==2.13.0 stable-baselines3==2.9.2``, the
CPU build of torch.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import deque

from jaxdl import allocator

# glibc's default allocator unless asked (as the jaxdl command does for RL
# runs): the one-arena setting made the 8-agent program about 1.6x slower.
if "--reuse-freed-memory" in sys.argv:
    allocator.reuse_freed_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl import config as config_lib  # noqa: E402
from jaxdl import rl_run  # noqa: E402

SOLVED = 475.0
# Rollout steps, minibatches and learning rate per environment count.
SCHEDULES = {4: (128, 4, 2.5e-4), 64: (16, 4, 2.5e-3), 512: (8, 8, 2.5e-3)}


def make_config(envs: int, seeds: int, steps: int, epochs: int) -> config_lib.Config:
    num_steps, minibatches, lr = SCHEDULES.get(envs, (max(1, 512 // envs), 4, 2.5e-3))
    cfg = config_lib.load("experiments/cartpole_ppo.yaml")
    return cfg.replace({"rl.num_envs": envs, "rl.seeds": seeds, "rl.total_steps": steps,
                        "ppo.num_steps": num_steps, "ppo.num_minibatches": minibatches,
                        "ppo.learning_rate": lr, "train.epochs": epochs})


def last_100_mean(window: deque) -> float | None:
    """Mean return of the last 100 episodes from (mean, count) per update."""
    total, count = 0.0, 0
    for mean, n in reversed(window):
        take = min(n, 100 - count)
        total, count = total + mean * take, count + take
        if count >= 100:
            return total / count
    return None


def one_agent(envs: int, steps: int, chunk: int) -> dict:
    """Chunked single-agent run: compile, steps/s, time to 475."""
    updates = config_lib.rl_updates(make_config(envs, 1, steps, 1))[0]
    cfg = make_config(envs, 1, steps, max(1, updates // chunk))
    job = rl_run.RLJob(cfg, log=lambda s: None)
    state = job.new_state()
    t0 = time.perf_counter()
    job.program.compile(state, job.chunks, 0)
    compile_s = time.perf_counter() - t0
    window: deque = deque(maxlen=200)
    solved_at = solved_steps = None
    done_steps, run_s = 0, 0.0
    for n in job.chunks:
        t = time.perf_counter()
        state, m = job.program.run(state, n)
        m = jax.device_get(m)
        run_s += time.perf_counter() - t
        done_steps += n * job.steps_per_update
        for mean, count in zip(m["episode_return"][0], m["episodes"][0], strict=True):
            if count:
                window.append((float(mean), int(count)))
        mean100 = last_100_mean(window)
        if solved_at is None and mean100 is not None and mean100 >= SOLVED:
            solved_at, solved_steps = run_s, done_steps
    returns, _ = job.program.evaluate(state, jax.random.key(1), 100)
    return {"compile_seconds": round(compile_s, 2), "run_seconds": round(run_s, 2),
            "env_steps_per_second": round(done_steps / run_s),
            "seconds_to_475": None if solved_at is None else round(solved_at, 2),
            "seconds_to_475_with_compile": None if solved_at is None
            else round(solved_at + compile_s, 2),
            "steps_to_475": solved_steps, "greedy_return": round(float(returns.mean()), 1)}


def many_agents(envs: int, seeds: int, steps: int) -> dict:
    """The vmapped multi-agent program in jaxdl train's 8 chunks."""
    cfg = make_config(envs, seeds, steps, 8)
    job = rl_run.RLJob(cfg, log=lambda s: None)
    t0 = time.perf_counter()
    state = job.new_state()
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    job.program.compile(state, job.chunks, 0)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for n in job.chunks:
        state, m = job.program.run(state, n)
        jax.block_until_ready(m)
    run_s = time.perf_counter() - t0
    returns, _ = job.program.evaluate(state, jax.random.key(1), 100)
    greedy = returns.mean(axis=1)
    total = seeds * sum(job.chunks) * job.steps_per_update
    return {"init_seconds": round(init_s, 2), "compile_seconds": round(compile_s, 2),
            "run_seconds": round(run_s, 2), "env_steps_per_second": round(total / run_s),
            "greedy_return": [round(float(g), 1) for g in greedy],
            "solved": int((greedy >= SOLVED).sum())}


def sb3(steps: int) -> dict:
    """stable-baselines3 PPO (defaults, 4 DummyVecEnv environments)."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAt475(BaseCallback):
        def __init__(self):
            super().__init__()
            self.start = self.solved_at = self.solved_steps = None

        def _on_training_start(self):
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            buf = self.model.ep_info_buffer
            if len(buf) >= 100 and np.mean([e["r"] for e in buf]) >= SOLVED:
                self.solved_at = time.perf_counter() - self.start
                self.solved_steps = self.num_timesteps
                return False
            return True

    import torch

    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = SB3PPO("MlpPolicy", env, seed=0, device="cpu", verbose=0)
    cb = StopAt475()
    t = time.perf_counter()
    model.learn(total_timesteps=steps, callback=cb)
    wall = time.perf_counter() - t
    return {"env_steps_per_second": round(model.num_timesteps / wall),
            "seconds_to_475": None if cb.solved_at is None else round(cb.solved_at, 2),
            "steps_to_475": cb.solved_steps, "steps_run": model.num_timesteps,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--envs", default="4,64,512", help="comma-separated environment counts")
    p.add_argument("--steps", type=int, default=500_000, help="environment steps per agent")
    p.add_argument("--chunk", type=int, default=8, help="updates per call when timing 1 agent")
    p.add_argument("--sb3", action="store_true", help="also run stable-baselines3's PPO")
    p.add_argument("--reuse-freed-memory", action="store_true",
                   help="jaxdl.allocator's one-arena setting")
    args = p.parse_args(argv)
    common = {"bench": "ppo_cartpole", "malloc": "reuse" if args.reuse_freed_memory
              else "system", "device": jax.devices()[0].device_kind,
              "cpus": os.cpu_count(), "machine": platform.machine(), "steps": args.steps}

    def emit(**row):
        print(json.dumps({**common, **row}), flush=True)

    results = {}
    for envs in map(int, args.envs.split(",")):
        one = one_agent(envs, args.steps, args.chunk)
        emit(what="1 agent, chunked", envs=envs, schedule=SCHEDULES.get(envs), **one)
        many = many_agents(envs, args.seeds, args.steps)
        alone = many_agents(envs, 1, args.steps)
        emit(what="1 agent, as jaxdl train runs it (8 chunks)", envs=envs, **alone)
        emit(what=f"{args.seeds} agents vmapped (8 chunks)", envs=envs, **many,
             cost_vs_one_agent=round(many["run_seconds"] / alone["run_seconds"], 2))
        results[envs] = {**one, "env_steps_per_second": alone["env_steps_per_second"]}
    if args.sb3:
        ref = sb3(args.steps)
        emit(what="stable-baselines3 PPO, 4 envs", **ref)
        for envs, one in results.items():
            row = {"envs": envs,
                   "steps_per_second_ratio": round(one["env_steps_per_second"]
                                                   / ref["env_steps_per_second"], 1)}
            if one["seconds_to_475"] and ref["seconds_to_475"]:
                row["time_to_475_ratio"] = round(ref["seconds_to_475"] / one["seconds_to_475"],
                                                 1)
                row["time_to_475_ratio_with_compile"] = round(
                    ref["seconds_to_475"] / one["seconds_to_475_with_compile"], 1)
            emit(what="jaxdl vs stable-baselines3", **row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
