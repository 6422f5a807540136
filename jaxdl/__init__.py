"""jaxdl: train neural networks in JAX and search their hyperparameters.

    import jaxdl
    cfg = jaxdl.config.load("experiments/mnist_mlp.yaml", ["optim.learning_rate=3e-4"])
    result = jaxdl.run(cfg)                 # trains, checkpoints, writes metrics
    restored = jaxdl.restore(result.run_dir)  # best checkpoint: params, model, config

    gan = jaxdl.run(jaxdl.config.load("experiments/mnist_gan.yaml"))   # algorithm: gan
    jaxdl.gan_run.sample_grid(gan.run_dir, 64)                          # a PNG grid

    ppo = jaxdl.run(jaxdl.config.load("experiments/cartpole_ppo.yaml"))  # algorithm: ppo
    jaxdl.evaluate(ppo.run_dir, episodes=100)                           # greedy returns

    # transfer: start from a run, the conv layers frozen (jaxdl.transfer)
    jaxdl.run(cfg.replace({"init_from": str(result.run_dir), "transfer.freeze": ["Conv2D_*"]}))
"""

from jaxdl import (
    allocator,
    config,
    data,
    gan_run,
    generate,
    losses,
    models,
    optim,
    parallel,
    transfer,
)
from jaxdl.algorithms.supervised import Engine, Task, TrainState
from jaxdl.errors import CheckpointError, ConfigError, DataError, JaxdlError
from jaxdl.experiment import Restored, RunResult, evaluate, restore, run

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Engine",
    "JaxdlError",
    "Restored",
    "RunResult",
    "Task",
    "TrainState",
    "allocator",
    "config",
    "data",
    "evaluate",
    "gan_run",
    "generate",
    "losses",
    "models",
    "optim",
    "parallel",
    "restore",
    "run",
    "transfer",
]
