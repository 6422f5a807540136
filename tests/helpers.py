"""Small configs and runners shared by the tests (fast on 2 CPU cores)."""

import os
import subprocess
import sys
from pathlib import Path

from jaxdl import config

REPO = Path(__file__).resolve().parent.parent


def jaxdl(*args, check=True, timeout=300):
    """Run the ``jaxdl`` CLI as a real subprocess in the repository root."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "jaxdl", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_sweep(tmp_path, **overrides):
    """``sweeps/tiny_spiral.yaml`` with its study directory under ``tmp_path``."""
    from jaxdl import sweep

    return sweep.load(REPO / "sweeps" / "tiny_spiral.yaml",
                      {"study_dir": str(tmp_path / "study"), **overrides})


def spiral_cfg(**overrides) -> config.Config:
    """A tiny playground run: 400 spiral points, a 2x16 tanh MLP."""
    base = {
        "name": "tiny_spiral",
        "seed": 0,
        "data": {"name": "spiral", "n_samples": 400, "noise": 0.05, "val_fraction": 0.2},
        "model": {"name": "mlp", "depth": 2, "width": 16, "activation": "tanh"},
        "optim": {"name": "adam", "learning_rate": 0.01},
        "train": {"epochs": 3, "batch_size": 16, "progress": False},
    }
    cfg = config.from_dict(base)
    return cfg.replace(overrides) if overrides else cfg
