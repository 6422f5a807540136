"""The README's code examples run as written."""

import re

import pytest

from jaxdl import config
from tests.conftest import REPO


def python_blocks():
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_pieces_example_runs(mnist_dir, capsys):
    block = next(b for b in python_blocks() if "make_train_step" in b)
    cfg = config.load(REPO / "experiments" / "mnist_mlp.yaml",
                      ["data.train_limit=1280", "model.width=32"])
    scope = {"cfg": cfg}
    exec(compile(block, "README.md", "exec"), scope)
    assert int(scope["state"].step) == 10
    out = capsys.readouterr().out
    assert "accuracy" in out and "loss" in out


def test_readme_one_call_example_runs(mnist_dir, tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if "jaxdl.run(cfg" in b)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    src = (REPO / "experiments" / "mnist_mlp.yaml").read_text()
    # The same example on a small slice of MNIST, so it runs in seconds.
    src = src.replace("  val_fraction: 0.1", "  val_fraction: 0.1\n  train_limit: 2000")
    (tmp_path / "experiments" / "mnist_mlp.yaml").write_text(src)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["result"].status == "completed"
    assert scope["metrics"]["test"]["accuracy"] == pytest.approx(
        scope["result"].best["test"]["accuracy"])
    assert scope["logits"].shape == (10000, 10)


def test_readme_sweep_script_example_runs(tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if "jaxdl.sweep.load" in b)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    # The example's file, with the tiny sweep's base so it runs in seconds.
    src = (REPO / "sweeps" / "tiny_spiral.yaml").read_text()
    (tmp_path / "sweeps" / "playground_spiral.yaml").write_text(
        src.replace("name: tiny_spiral\nbase:", "name: playground_spiral\nbase:", 1))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    study = scope["study"]
    assert len(study.trials) == 10
    assert scope["restored"].config.name == "tiny_spiral"
    assert (tmp_path / "studies" / "playground_spiral" / "study.db").exists()


def test_readme_rnn_example_runs():
    block = next(b for b in python_blocks() if "from jaxdl.models import RNN" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["logits"].shape == (8, 10)
    assert scope["more"].shape == (8, 1, 65)
    assert scope["tokens"].shape == (1, 50)


def test_readme_gan_example_runs(gan_data_dir, monkeypatch, capsys):
    block = next(b for b in python_blocks() if "GAN(Generator" in b)
    # Smaller players and one epoch, so it runs in seconds; the quick
    # scorer is cached in gan_data_dir where load_scorer looks.
    block = block.replace("width=512", "width=32").replace("range(3)", "range(1)")
    monkeypatch.setenv("JAXDL_DATA_DIR", str(gan_data_dir))
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert int(scope["state"].step) == 54000 // 64
    assert scope["samples"].shape == (2000, 28, 28, 1)
    out = capsys.readouterr().out
    assert "d_loss" in out and "g_loss" in out and "frechet" in out and "class_entropy" in out


def test_readme_rl_example_runs():
    block = next(b for b in python_blocks() if "from jaxdl.rl.ppo import PPO" in b)
    # 16 updates instead of 976, so it runs in seconds.
    block = block.replace("total_steps=500_000", "total_steps=8192")
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["metrics"]["episode_return"].shape == (16,)
    assert scope["returns"].shape == (100,) and int(scope["state"].update) == 16
    assert float(scope["faster"].hparams["learning_rate"]) == pytest.approx(1e-3)


def test_no_placeholder_figures_are_shipped():
    """Every README figure and every shipped file's expected result is a
    measured one."""
    pending = re.compile(r"PLACEHOLDER|\bPENDING\b|\b[A-Z]+_(FIGURES|PENDING)\b|to be measured")
    assert not pending.search((REPO / "README.md").read_text())
    for path in [*REPO.glob("experiments/*.yaml"), *REPO.glob("sweeps/*.yaml")]:
        assert not pending.search(path.read_text()), path.name


def test_readme_population_example_runs(monkeypatch, capsys):
    block = next(b for b in python_blocks() if "population.train(cfgs)" in b)
    monkeypatch.chdir(REPO)
    # The example's PPO part on a tiny run, so it takes seconds.
    tiny = ('{"rl.total_steps": 768, "rl.num_envs": 4, "rl.seeds": 2, "rl.width": 16, '
            '"ppo.num_steps": 16, "ppo.num_minibatches": 2, "ppo.update_epochs": 2, '
            '"train.epochs": 2, "rl.eval_episodes": 2, "rl.test_episodes": 2}')
    path = '"experiments/cartpole_ppo.yaml"'
    block = block.replace(f"{path})", f"{path}, {tiny})")
    block = block.replace('{"train.epochs": 20}', '{"train.epochs": 3}')
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "model.width: 32 in config 0, 64 in config 1" in out
    assert len(scope["results"]) == 4 and len(scope["agents"]) == 2
    assert all(r.status == "completed" for r in scope["results"] + scope["agents"])
