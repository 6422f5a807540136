"""Small configs shared by the tests (fast on 2 CPU cores)."""

from jaxdl import config


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
