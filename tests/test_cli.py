"""The ``jaxdl`` command line, run as a real subprocess."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import jaxdl

REPO = Path(__file__).resolve().parent.parent


def write_cfg(path, **sections):
    cfg = {"name": "cli", "seed": 0,
           "data": {"name": "spiral", "n_samples": 400, "noise": 0.05},
           "model": {"name": "mlp", "depth": 2, "width": 16, "activation": "tanh"},
           "optim": {"name": "adam", "learning_rate": 0.01},
           "train": {"epochs": 3, "batch_size": 16}}
    for k, v in sections.items():
        cfg[k].update(v)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_then_eval(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml")
    out = jaxdl("train", cfg, "--workdir", tmp_path / "run", "--no-progress",
                "--set", "optim.learning_rate=2e-2")
    assert "epoch 3/3" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("completed | 3 epochs") and "test_accuracy" in last
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["learning_rate"] == 0.02
    ev = jaxdl("eval", tmp_path / "run", "--json")
    got = json.loads(ev.stdout)
    assert got["epoch"] == summary["best_epoch"]
    assert got["test"]["accuracy"] == pytest.approx(summary["best"]["test"]["accuracy"])


def test_progress_bar_shows_epoch_step_loss_and_rate(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", train={"epochs": 1})
    out = jaxdl("train", cfg, "--workdir", tmp_path / "run2")
    assert "step/s" not in out.stderr          # not a terminal: no bar by default
    assert "epoch 1/1" in out.stdout
    out = jaxdl("train", cfg, "--workdir", tmp_path / "run", "--progress")
    assert "epoch 1/1" in out.stderr and "step/s" in out.stderr and "loss=" in out.stderr
    assert "acc=" in out.stderr


def test_bad_config_is_one_clear_error_without_traceback(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", optim={"learning_rate": -1.0, "nme": "adam"})
    out = jaxdl("train", cfg, check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert str(cfg) in out.stderr
    assert "optim.learning_rate: must be > 0.0, got -1.0" in out.stderr
    assert "optim.nme: unknown key (did you mean 'name'?)" in out.stderr
    out = jaxdl("train", cfg, "--set", "model.activation=relux", check=False)
    assert "must be one of relu, tanh" in out.stderr


def test_missing_dataset_file_is_a_clear_error(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", data={"name": "mnist", "dir": str(tmp_path / "nodata")})
    env_mirror = "http://127.0.0.1:9/"   # discard port: nothing listens
    proc = subprocess.run([sys.executable, "-m", "jaxdl", "train", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAXDL_MIRROR=env_mirror))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train-images-idx3-ubyte.gz" in proc.stderr and "127.0.0.1:9" in proc.stderr


def test_diverged_run_exits_3_and_keeps_its_record(tmp_path):
    out = jaxdl("train", "experiments/linear_regression.yaml", "--workdir", tmp_path / "run",
                "--set", "optim.learning_rate=1e3", "--no-progress", check=False)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert "diverged" in out.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def _restore_params(run_dir, which):
    code = ("import sys, pickle, jax, jaxdl; r = jaxdl.restore(sys.argv[1], sys.argv[2]); "
            "sys.stdout.buffer.write(pickle.dumps(jax.device_get(r.params)))")
    import pickle
    out = subprocess.run([sys.executable, "-c", code, str(run_dir), which], cwd=REPO,
                         capture_output=True, check=True, timeout=120)
    return pickle.loads(out.stdout)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    # One step per compiled call makes each epoch many dispatches, so the
    # kill lands inside an epoch; dropout makes the test see the rng streams.
    cfg = write_cfg(tmp_path / "c.yaml",
                    data={"n_samples": 4000},
                    model={"dropout": 0.1},
                    train={"epochs": 8, "batch_size": 8, "steps_per_call": 1, "progress": False})
    full = tmp_path / "full"
    jaxdl("train", cfg, "--workdir", full, "--quiet")

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "jaxdl", "train", str(cfg), "--workdir",
                             str(killed)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    metrics = killed / "metrics.jsonl"
    while time.time() < deadline:
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        if sum('"split": "train"' in r for r in rows) >= 3:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("training did not reach epoch 3")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()

    jaxdl("train", cfg, "--workdir", killed, "--resume", "--quiet")
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert b["status"] == "completed" and b["epochs"] == 8
    assert a["final"] == b["final"] and a["best"] == b["best"]
    pa, pb = _restore_params(full, "latest"), _restore_params(killed, "latest")
    for layer in pa:
        for name in pa[layer]:
            np.testing.assert_array_equal(pa[layer][name], pb[layer][name])
    rows = [json.loads(r) for r in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "train"] == list(range(1, 9))


def test_persistent_compilation_cache_is_used_by_a_second_process(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", train={"epochs": 1, "progress": False})
    cache = tmp_path / "xla"
    env = dict(os.environ, JAXDL_CACHE_DIR=str(cache))
    seconds = []
    for i, lr in enumerate(("0.01", "0.02")):
        subprocess.run([sys.executable, "-m", "jaxdl", "train", str(cfg), "--workdir",
                        str(tmp_path / f"r{i}"), "--quiet", "--set", f"optim.learning_rate={lr}"],
                       cwd=REPO, env=env, check=True, timeout=300)
        seconds.append(json.loads((tmp_path / f"r{i}" / "summary.json").read_text())
                       ["compile_seconds"])
    assert any(p.name.startswith("jit_run") for p in cache.iterdir())
    # Measured ~1.1 s cold vs ~0.3 s warm; a generous margin for a busy machine.
    assert seconds[1] < 0.7 * seconds[0], seconds


def test_run_directory_problems_are_clear_errors(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", train={"epochs": 1})
    (tmp_path / "afile").write_text("x")
    out = jaxdl("train", cfg, "--workdir", tmp_path / "afile", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a directory" in out.stderr
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    out = jaxdl("train", bad, check=False)
    assert out.returncode == 2 and "not a UTF-8 text file" in out.stderr


def test_the_compilation_cache_directory_is_absolute(tmp_path, monkeypatch):
    """A sweep names its cache relative to the working directory; JAX must
    keep writing there after the process changes directory."""
    import jax

    from jaxdl import compilation_cache

    before = jax.config.jax_compilation_cache_dir
    monkeypatch.chdir(tmp_path)
    try:
        path = compilation_cache.enable("studies/x/xla_cache")
        assert path == tmp_path / "studies" / "x" / "xla_cache" and path.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(path)
    finally:
        if before:
            compilation_cache.enable(before)
        else:
            from jax._src import compilation_cache as jax_cache

            jax_cache.reset_cache()
            jax.config.update("jax_compilation_cache_dir", None)
