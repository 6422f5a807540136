"""jaxdl.scorer: the MNIST classifier behind the GAN quality scores is trained
once, cached, restored, and scores real and degenerate image sets sensibly."""

import json

import numpy as np
import pytest

from jaxdl import scorer
from jaxdl.errors import CheckpointError
from tests.conftest import QUICK_SCORER as QUICK
from tests.conftest import _data_dir_holding


@pytest.fixture(scope="module")
def quick_scorer(quick_scorer_cache, mnist_dir_module):
    return scorer.load_scorer("mnist", str(mnist_dir_module), overrides=QUICK,
                              cache=quick_scorer_cache)


@pytest.fixture(scope="module")
def mnist_dir_module():
    return _data_dir_holding("mnist/train-images-idx3-ubyte.gz", "mnist/")


def test_trained_once_then_restored(quick_scorer, mnist_dir_module):
    target = quick_scorer.run_dir
    assert (target / "summary.json").exists() and (target / "checkpoints").exists()
    assert json.loads((target / "summary.json").read_text())["run_dir"] == str(target)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    stamp = (target / "summary.json").stat().st_mtime_ns
    again = scorer.load_scorer("mnist", str(mnist_dir_module), overrides=QUICK,
                               cache=target.parent)
    assert (target / "summary.json").stat().st_mtime_ns == stamp     # not retrained
    assert again.run_dir == target
    assert target == scorer.scorer_dir("mnist", str(mnist_dir_module), QUICK, target.parent)
    assert target != scorer.scorer_dir("mnist", str(mnist_dir_module), None, target.parent)


def test_scores_of_real_and_degenerate_sets(quick_scorer):
    real = quick_scorer.real_test
    assert real.shape == (10_000, 28, 28, 1)
    assert real.min() == -1.0 and real.max() == 1.0
    feats, probs = quick_scorer.features_and_probs(real[:50])
    assert feats.shape == (50, 256) and probs.shape == (50, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    halves = quick_scorer.frechet_between(real[:5000], real[5000:])
    good = quick_scorer.score(real[:5000])
    noise = np.random.default_rng(0).uniform(-1, 1, (2000, 28, 28, 1)).astype(np.float32)
    bad = quick_scorer.score(noise)
    blend = quick_scorer.score((real[:5000] + np.roll(real[:5000], 3, axis=2)) / 2)
    collapsed = quick_scorer.score(np.repeat(real[2:3], 500, axis=0))   # one image
    # Measured with this quick scorer: halves 10.7, good 2.9 (a subset of the
    # reference set), blend 16.0, noise 307; confident 0.57 / 0.32 / 0.01.
    assert good["frechet"] < halves < blend["frechet"] < bad["frechet"] / 10
    assert good["class_entropy"] > 2.2 and blend["class_entropy"] > 2.1
    assert good["confident"] > blend["confident"] > 10 * bad["confident"]
    assert collapsed["class_entropy"] == 0.0 and collapsed["confident"] == 1.0


def test_unfinished_cache_directory_is_a_clear_error(tmp_path):
    target = scorer.scorer_dir("mnist", str(tmp_path), QUICK, tmp_path / "scorers")
    target.mkdir(parents=True)                      # e.g. an interrupted deletion
    with pytest.raises(CheckpointError, match="holds no finished scorer.*delete the directory"):
        scorer.load_scorer("mnist", str(tmp_path), overrides=QUICK, cache=tmp_path / "scorers")
