"""The notebooks on sequences, GANs and RL, and on transfer learning,
executed top to bottom (see tests/test_notebooks.py)."""

import re

import pytest

from tests.helpers import execute_notebook, notebook_outputs

pytestmark = pytest.mark.notebook


def test_sequences_gan_rl(mnist_dir, shakespeare_dir, monkeypatch, tmp_path, xla_defaults):
    # An LSTM, a GAN and PPO: mostly training, so XLA's own optimization level.
    nb = execute_notebook("04_sequences_gan_rl.ipynb", monkeypatch, tmp_path)
    text, figures = notebook_outputs(nb)
    assert figures == 2                                   # the GAN's samples, PPO's curves
    assert text.count("ROMEO:") >= 2                      # two samples from the prompt
    assert "--- temperature 0.5 ---" in text and "--- temperature 1.0 ---" in text
    assert "5 {'d_fake'" in text                          # the GAN's fifth epoch
    assert "completed {'return'" in text                  # the agents' test episodes


def test_transfer(mnist_dir, monkeypatch, tmp_path):
    nb = execute_notebook("05_transfer.ipynb", monkeypatch, tmp_path)
    text, figures = notebook_outputs(nb)
    assert figures == 1
    for mode in ("from scratch", "feature extractor", "fine-tuned"):
        assert re.search(mode + r" +test accuracy \d+\.\d%", text), mode
    assert re.search(r"Conv2D_0/kernel +\(3, 3, 1, 16\) +unchanged", text)
    assert re.search(r"Dense_0/kernel +\(1568, 64\) +unchanged", text)
    assert re.search(r"Dense_1/kernel +\(64, 10\) +trained", text)
    assert "parameters: 105,866; Adam first moments: 650" in text
