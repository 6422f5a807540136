"""Transfer learning: does an MNIST CNN help on a few hundred labelled digits?

Question answered: on the same small labelled budget of scikit-learn's
digits (``data.train_limit`` images, shown at 28x28 like MNIST), test
accuracy of the CNN of ``experiments/digits_from_mnist.yaml``

* trained from scratch (``init_from`` removed),
* as a fixed feature extractor (the MNIST run's conv and dense layers
  frozen, only a fresh head trains: ``transfer.freeze``),
* fine-tuned (everything trains, the pretrained body at a tenth of the
  head's learning rate: ``transfer.pretrained_lr: 0.1``, the shipped
  experiment),

each over ``--seeds`` seeds (the seed draws the labelled subset, the
validation split, the fresh layers and the batch order; the test split is
the same 539 images for every seed), reporting the test accuracy of the
epoch with the best validation accuracy. For reference, the MNIST model
itself on the digits test images, no digit seen (``zero_shot``: the
classes are the same ten).

The source run is ``experiments/mnist_cnn.yaml``'s default run directory
(``runs/mnist_cnn-<fingerprint>``, the ``init_from`` of the experiment); it
is trained first when it is missing or unfinished (about 3 minutes on 2
CPU cores), or give another with ``--source``.

Output: JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``mode``,
``labels``, ``seed``, ``device``), then one summary line per mode and
budget (mean and standard deviation over the seeds).

Run::

    JAXDL_DATA_DIR=/path/to/data python benchmarks/transfer_digits.py [--labels 100,200,500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import jax
import numpy as np

import jaxdl
from jaxdl import config as config_lib
from jaxdl import data, experiment

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "digits_from_mnist.yaml"

# What each mode changes in the shipped (fine-tuning) experiment.
MODES = {
    "scratch": {"init_from": None, "transfer.head": "auto", "transfer.pretrained_lr": 1.0},
    "feature_extractor": {"transfer.freeze": ["Conv2D_*", "Dense_0"],
                          "transfer.pretrained_lr": 1.0},
    "fine_tune": {},
}


def source_run(path: str | None) -> Path:
    """The pretrained MNIST CNN, trained (or finished) here when needed."""
    cfg = config_lib.load(REPO / "experiments" / "mnist_cnn.yaml", ["train.progress=false"])
    run_dir = Path(path) if path else experiment.default_run_dir(cfg, REPO / "runs")
    if not (run_dir / "summary.json").exists():
        print(f"# training the source run {run_dir} (experiments/mnist_cnn.yaml)", flush=True)
        jaxdl.run(cfg, workdir=run_dir, resume=(run_dir / "checkpoints").exists(), quiet=True)
    return run_dir


def zero_shot(source: Path) -> float:
    """The source model's accuracy on the digits test split, as it is."""
    restored = experiment.restore(source)
    ds = data.load(config_lib.load(EXPERIMENT).data)
    predicted = np.asarray(restored.predict(ds.test.x)).argmax(-1)
    return float(np.mean(predicted == ds.test.y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default="200", help="comma-separated labelled-image budgets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--source", help="the pretrained run (default: mnist_cnn's run directory)")
    args = p.parse_args()
    device = jax.devices()[0].device_kind
    source = source_run(args.source)
    print(json.dumps({"bench": "transfer_digits", "metric": "test_accuracy",
                      "value": zero_shot(source), "unit": "fraction", "mode": "zero_shot",
                      "labels": 0, "device": device}), flush=True)
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for labels in (int(x) for x in args.labels.split(",")):
            for seed in range(args.seeds):
                for mode in args.modes.split(","):
                    overrides = {"train.progress": False, "seed": seed,
                                 "data.train_limit": labels, **MODES[mode]}
                    if overrides.get("init_from", "keep") is not None:
                        overrides["init_from"] = str(source)
                    cfg = config_lib.load(EXPERIMENT).replace(overrides)
                    r = jaxdl.run(cfg, workdir=Path(tmp) / f"{mode}-{labels}-{seed}",
                                  quiet=True)
                    acc = r.best["test"]["accuracy"]
                    results.setdefault((mode, labels), []).append(acc)
                    print(json.dumps({
                        "bench": "transfer_digits", "metric": "test_accuracy", "value": acc,
                        "unit": "fraction", "mode": mode, "labels": labels, "seed": seed,
                        "epochs": r.summary["epochs"], "status": r.status,
                        "wall_seconds": r.summary["wall_seconds"], "device": device}),
                        flush=True)
    for (mode, labels), accs in results.items():
        print(json.dumps({
            "bench": "transfer_digits", "metric": "test_accuracy_mean",
            "value": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "unit": "fraction",
            "mode": mode, "labels": labels, "seeds": len(accs), "source": str(source),
            "device": device}), flush=True)


if __name__ == "__main__":
    main()
