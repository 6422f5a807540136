"""Do the small shipped experiments reach their bars?

Question answered: test accuracy of ``experiments/playground_spiral.yaml``
(bar >= 95 %) and ``experiments/mnist_keras_intro.yaml`` (bar: within 0.5
points of Keras's ~97.6 %), and how close gradient descent in
``experiments/linear_regression.yaml`` gets to the closed-form
least-squares solution (bar <= 1e-3, max abs difference of weights and
bias). The MNIST MLP and CNN bars are in ``benchmarks/mnist_speed.py``.

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``,
``experiment``, ``wall_seconds``, ``device``).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/accuracy.py [--experiments a,b]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax
import numpy as np

import jaxdl
from jaxdl import config as config_lib

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", default="playground_spiral,linear_regression,mnist_keras_intro")
    args = p.parse_args()
    device = jax.devices()[0].device_kind
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.experiments.split(","):
            cfg = config_lib.load(REPO / "experiments" / f"{name}.yaml", ["train.progress=false"])
            r = jaxdl.run(cfg, workdir=Path(tmp) / name, quiet=True)
            common = {"bench": "accuracy", "experiment": name, "device": device,
                      "status": r.status, "epochs": r.summary["epochs"],
                      "wall_seconds": r.summary["wall_seconds"]}
            if name == "linear_regression":
                restored = jaxdl.restore(r.run_dir, "latest")
                train = restored.dataset.train
                design = np.c_[train.x, np.ones(len(train))].astype(np.float64)
                exact, *_ = np.linalg.lstsq(design, train.y.astype(np.float64), rcond=None)
                dense = restored.params["Dense_0"]
                got = np.r_[np.asarray(dense["kernel"])[:, 0], np.asarray(dense["bias"])]
                value = float(np.abs(got - exact[:, 0]).max())
                line = {"metric": "max_abs_diff_to_lstsq", "value": value, "unit": "abs"}
            else:
                line = {"metric": "test_accuracy", "value": r.final["test"]["accuracy"],
                        "unit": "fraction"}
            print(json.dumps({**common, **line}), flush=True)


if __name__ == "__main__":
    main()
