"""Whole runs: files written, statuses, checkpoints, restore/evaluate."""

import json

import jax
import numpy as np
import pytest

import jaxdl
from jaxdl import config
from jaxdl.checkpoint import Checkpointer
from jaxdl.errors import CheckpointError
from jaxdl.metrics import read_metrics
from tests.helpers import spiral_cfg


def test_run_writes_the_run_directory(tmp_path):
    cfg = spiral_cfg()
    result = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    d = result.run_dir
    assert result.status == "completed"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "curves.png", "summary.json"):
        assert (d / name).exists(), name
    assert config.load(d / "config.yaml") == cfg
    meta = json.loads((d / "run.json").read_text())
    assert meta["fingerprint"] == config.fingerprint(cfg)
    assert {"jax", "flax", "optax", "orbax-checkpoint", "python"} <= set(meta["versions"])
    rows = read_metrics(d / "metrics.jsonl")
    assert [(r["epoch"], r["split"]) for r in rows] == [
        (1, "train"), (1, "val"), (2, "train"), (2, "val"), (3, "train"), (3, "val"),
        (3, "test")]
    assert all({"loss", "accuracy", "step"} <= set(r) for r in rows)
    assert rows[-1]["step"] == 3 * 10
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert set(summary["final"]) == {"train", "val", "test"}
    assert set(summary["best"]) == {"train", "val", "test"}
    # compile_seconds is 0 when an earlier test compiled this shape already.
    assert summary["compile_seconds"] >= 0 and summary["wall_seconds"] > 0
    assert summary["train_seconds"] > 0 and summary["eval_seconds"] > 0
    assert png_ok(d / "curves.png")


def png_ok(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_restore_and_evaluate_give_the_best_checkpoint(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 4, "train.monitor": "val_accuracy"})   # mode auto: max
    result = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    restored = jaxdl.restore(result.run_dir)
    assert restored.epoch == result.summary["best_epoch"]
    assert set(restored.params) == {"Dense_0", "Dense_1", "Dense_2"}
    out = jaxdl.evaluate(result.run_dir, splits=("val", "test"))
    assert out["test"]["accuracy"] == pytest.approx(result.best["test"]["accuracy"], abs=1e-6)
    assert out["val"]["accuracy"] == pytest.approx(result.best["val"]["accuracy"], abs=1e-6)
    logits = restored.predict(restored.dataset.test.x)
    assert logits.shape == (len(restored.dataset.test), 1)
    latest = jaxdl.restore(result.run_dir, "latest")
    assert latest.epoch == 4
    for a, b in zip(jax.tree_util.tree_leaves(latest.params),
                    jax.tree_util.tree_leaves(result.state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_keep_latest_and_best_only(tmp_path):
    # With this seed the validation loss is lowest at epoch 3 of 5, so the
    # best and the latest checkpoints differ.
    cfg = spiral_cfg(**{"train.epochs": 5, "optim.learning_rate": 0.01})
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    with Checkpointer(r.run_dir / "checkpoints", read_only=True) as ck:
        kept = ck.epochs()
        assert ck.latest_epoch() == 5
        assert ck.best_epoch() == r.summary["best_epoch"]
    assert r.summary["best_epoch"] != 5   # else the test would not see two kept epochs
    assert set(kept) == {5, r.summary["best_epoch"]}


def test_diverging_loss_ends_the_run_cleanly(tmp_path):
    cfg = config.load("experiments/linear_regression.yaml", [
        "optim.learning_rate=1e3", "train.epochs=50", "train.progress=false"])
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert r.status == "diverged"
    assert "diverged" in r.summary["reason"] and "learning_rate" in r.summary["reason"]
    assert r.summary["epochs"] < 50
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_early_stopping(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 20, "train.patience": 2, "train.min_delta": 1e9})
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    # Epoch 1 sets the best; no later epoch can beat it by 1e9.
    assert r.status == "early_stopped"
    assert r.summary["epochs"] == 3 and r.summary["best_epoch"] == 1
    assert "did not improve" in r.summary["reason"]


def test_reporter_sees_every_evaluation_and_can_stop(tmp_path):
    seen = []

    def reporter(epoch, metrics):
        seen.append((epoch, sorted(metrics)))
        return epoch == 2

    r = jaxdl.run(spiral_cfg(), workdir=tmp_path / "run", reporter=reporter, quiet=True)
    assert r.status == "stopped" and r.summary["epochs"] == 2
    assert seen == [(e, ["train_accuracy", "train_loss", "val_accuracy", "val_loss"])
                    for e in (1, 2)]


@pytest.mark.parametrize("discards", [False, True])
def test_a_run_stopped_by_a_discarding_reporter_writes_no_last_checkpoint(tmp_path, discards):
    """A sweep deletes a pruned trial's checkpoints: its reporter says so,
    and the stopped run writes neither its last checkpoint nor a best one
    held back (the periodic ones before stay: a killed sweep resumes there)."""
    def reporter(epoch, metrics):
        return epoch == 3

    if discards:
        reporter.discards_stopped = True
    cfg = spiral_cfg(**{"train.epochs": 5, "checkpoint.every": 2})
    r = jaxdl.run(cfg, workdir=tmp_path / "run", reporter=reporter, quiet=True)
    assert r.status == "stopped" and r.summary["epochs"] == 3
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", read_only=True)
    assert (ckpt.latest_epoch() == 2) if discards else (ckpt.latest_epoch() == 3)
    assert "test" in r.summary["best"]   # the best state is held in memory


def test_an_existing_run_is_never_overwritten(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 1})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    with pytest.raises(CheckpointError, match=r"optim.learning_rate: 0.01 -> 0.02"):
        jaxdl.run(cfg.replace({"optim.learning_rate": 0.02}), workdir=tmp_path / "run",
                  resume=True, quiet=True)
    assert (tmp_path / "run" / "summary.json").read_text() == before


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 1})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    r = jaxdl.run(cfg, workdir=tmp_path / "run", resume=True, quiet=True)
    assert r.status == "completed" and r.state is None


def test_restore_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory"):
        jaxdl.restore(tmp_path)
    cfg = spiral_cfg(**{"train.epochs": 1, "checkpoint.enabled": False})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        jaxdl.restore(tmp_path / "run")


def test_linear_regression_recovers_least_squares(tmp_path):
    cfg = config.load("experiments/linear_regression.yaml", ["train.progress=false"])
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    restored = jaxdl.restore(r.run_dir, "latest")
    train = restored.dataset.train
    design = np.c_[train.x, np.ones(len(train))].astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, train.y.astype(np.float64), rcond=None)
    dense = restored.params["Dense_0"]
    got = np.r_[np.asarray(dense["kernel"])[:, 0], np.asarray(dense["bias"])]
    np.testing.assert_allclose(got, solution[:, 0], atol=1e-3)


def test_mnist_mlp_and_cnn_train_end_to_end(tmp_path, mnist_dir):
    base = ["train.epochs=3", "train.progress=false", "data.train_limit=3000",
            "train.eval_batch_size=500"]
    mlp = config.load("experiments/mnist_mlp.yaml", base + ["model.width=64"])
    r = jaxdl.run(mlp, workdir=tmp_path / "mlp", quiet=True)
    assert r.final["test"]["accuracy"] > 0.8
    cnn = config.load("experiments/mnist_cnn.yaml", base + [
        "model.channels=[4,8]", "model.dense=[32]", "optim.learning_rate=0.05"])
    r = jaxdl.run(cnn, workdir=tmp_path / "cnn", quiet=True)
    assert r.final["test"]["accuracy"] > 0.5


def test_diverged_record_is_strict_json(tmp_path):
    cfg = config.load("experiments/linear_regression.yaml", [
        "optim.learning_rate=1e3", "train.epochs=50", "train.progress=false"])
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)

    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    rows = [json.loads(line, parse_constant=reject)
            for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] is None          # the diverged epoch's NaN/Inf
    summary = json.loads((r.run_dir / "summary.json").read_text(), parse_constant=reject)
    assert summary["final"]["train"]["loss"] is None


def test_resume_needs_checkpoints(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 1, "checkpoint.enabled": False})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    # Finished: resuming just reports it.
    assert jaxdl.run(cfg, workdir=tmp_path / "run", resume=True, quiet=True).state is None
    (tmp_path / "run" / "summary.json").unlink()      # as if killed before the end
    with pytest.raises(CheckpointError, match="checkpoint.enabled false"):
        jaxdl.run(cfg, workdir=tmp_path / "run", resume=True, quiet=True)


def test_resume_of_an_early_stopped_checkpoint_stops_again(tmp_path):
    """Killed after its last checkpoint but before summary.json: resuming
    must end where the run ended, not train on."""
    cfg = spiral_cfg(**{"train.epochs": 20, "train.patience": 2, "train.min_delta": 1e9})
    a = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    (tmp_path / "run" / "summary.json").unlink()
    b = jaxdl.run(cfg, workdir=tmp_path / "run", resume=True, quiet=True)
    assert b.status == a.status == "early_stopped"
    assert b.summary["epochs"] == a.summary["epochs"] == 3
    assert b.final["test"] == a.final["test"]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["split"] for r in rows].count("test") == 1


def test_a_run_killed_before_its_first_checkpoint_is_not_overwritten(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 2, "checkpoint.enabled": False})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    (tmp_path / "run" / "summary.json").unlink()      # as if killed before the end
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="already holds a run"):
        jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == rows


def test_mode_auto_follows_the_metric():
    assert config.monitor_mode(spiral_cfg(**{"train.monitor": "val_accuracy"}).train) == "max"
    assert config.monitor_mode(spiral_cfg(**{"train.monitor": "train_loss"}).train) == "min"
    assert config.monitor_mode(spiral_cfg(**{"train.monitor": "val_loss",
                                             "train.mode": "min"}).train) == "min"
    with pytest.raises(jaxdl.ConfigError, match="would treat a worse accuracy as better"):
        spiral_cfg(**{"train.monitor": "val_accuracy", "train.mode": "min"})


def test_evaluating_a_missing_split_is_a_clear_error(tmp_path):
    cfg = spiral_cfg(**{"train.epochs": 1, "data.val_fraction": 0.0,
                        "train.monitor": "train_loss"})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    with pytest.raises(jaxdl.ConfigError, match="no 'val' split"):
        jaxdl.evaluate(tmp_path / "run", splits=("val",))
