"""The notebooks: stored without outputs, and each executed top to bottom
(the quickstart, the playground and the sweep here; the others in
tests/test_notebooks_more.py, so pytest-xdist runs the two files side by
side). Executing them is marked ``notebook``: minutes of real training, so
``make test`` leaves them to ``make notebooks`` (``.ci/run`` runs both)."""

import json
import re

import pytest

from tests.helpers import NOTEBOOKS, execute_notebook, notebook_outputs

EXPECTED = ["01_quickstart.ipynb", "02_playground.ipynb", "03_sweep.ipynb",
            "04_sequences_gan_rl.ipynb", "05_transfer.ipynb"]


def test_the_notebooks_are_stored_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        assert nb["nbformat"] == 4, path.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{path.name}: a cell keeps its outputs"
                assert cell["execution_count"] is None, f"{path.name}: an execution count"
        # Walkthroughs of the library, not a second copy of it.
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert "import jaxdl" in code, path.name


@pytest.mark.notebook
def test_quickstart(mnist_dir, monkeypatch, tmp_path):
    nb = execute_notebook("01_quickstart.ipynb", monkeypatch, tmp_path)
    text, figures = notebook_outputs(nb)
    assert figures == 2                                   # learning curves, predictions
    assert "optim.learning_rat: no such key (did you mean 'optim.learning_rate'?)" in text
    accuracy = re.search(r"test accuracy of the best checkpoint: ([0-9.]+)", text)
    assert accuracy and float(accuracy.group(1)) > 0.85
    assert "epoch 3: train loss" in text


@pytest.mark.notebook
def test_playground(monkeypatch, tmp_path):
    nb = execute_notebook("02_playground.ipynb", monkeypatch, tmp_path)
    text, figures = notebook_outputs(nb)
    assert figures == 5
    assert "train_loss became inf" in text                # the too-high learning rate


@pytest.mark.notebook
def test_sweep(monkeypatch, tmp_path):
    nb = execute_notebook("03_sweep.ipynb", monkeypatch, tmp_path)
    text, figures = notebook_outputs(nb)
    assert figures == 3                                   # Optuna's three plots
    assert re.search(r"best trial \d+: val_accuracy [0-9.]+ with", text)
    assert re.search(r"test accuracy 0\.\d+; config", text)
