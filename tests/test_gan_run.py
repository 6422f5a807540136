"""GAN runs end to end: the ``gan`` config section, ``jaxdl train`` /
``sample`` / ``eval`` on a GAN, resume, determinism and sweeps.

The runs use the quick scorer of ``tests/conftest.py`` (cached in a tmp data
directory, where a GAN run looks for its scorer) and tiny networks.
"""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

import jaxdl
from jaxdl import config, gan_run
from jaxdl.algorithms.gan import LOSSES
from jaxdl.errors import CheckpointError, ConfigError
from tests.helpers import jaxdl as jaxdl_cli

REPO = Path(__file__).resolve().parent.parent


def tiny(data_dir, kind="mlp", **overrides) -> config.Config:
    """A GAN on 1,536 MNIST images that trains in seconds."""
    tree = {
        "name": "tiny_gan", "seed": 0, "algorithm": "gan",
        "data": {"name": "mnist", "dir": str(data_dir), "train_limit": 1536,
                 "val_fraction": 0.1},
        "train": {"epochs": 2, "batch_size": 64, "progress": False},
        "gan": {"generator": {"kind": kind, "width": 32 if kind == "mlp" else 8,
                              **({"depth": 1} if kind == "mlp" else {})},
                "discriminator": {"kind": kind, "width": 32 if kind == "mlp" else 8,
                                  **({"depth": 1} if kind == "mlp" else {})},
                "g_optim": {"learning_rate": 1e-3}, "d_optim": {"learning_rate": 1e-3},
                "eval_samples": 300, "grid_size": 16},
    }
    return config.from_dict(tree).replace(overrides)


# ------------------------------------------------------------------ config


def test_gan_config_defaults_dump_and_fingerprint():
    cfg = config.from_dict({"algorithm": "gan"})
    assert cfg.train.monitor == "val_frechet" and config.monitor_mode(cfg.train) == "min"
    assert cfg.gan.g_optim.learning_rate == 2e-4 and cfg.gan.d_optim.b1 == 0.5
    assert cfg.gan.g_optim.clip_norm is None
    assert set(LOSSES) == set(config.GAN_LOSSES)
    text = config.dump(cfg)
    tree = yaml.safe_load(text)
    assert "model" not in tree and "optim" not in tree and "sample" not in tree
    again = config.from_dict(tree)
    assert again == cfg and config.fingerprint(again) == config.fingerprint(cfg)
    fp = config.fingerprint(cfg)
    # Grids and the data directory change no trained number; the rest does.
    assert config.fingerprint(cfg.replace({"gan.grid_every": 5, "gan.grid_size": 9,
                                           "data.dir": "/elsewhere"})) == fp
    for key, value in [("gan.d_optim.learning_rate", 1e-3), ("gan.eval_samples", 500),
                       ("gan.generator.width", 32), ("gan.n_critic", 2), ("seed", 1)]:
        assert config.fingerprint(cfg.replace({key: value})) != fp, key
    # A supervised config's dump and fingerprint do not mention the GAN.
    sup = yaml.safe_load(config.dump(config.from_dict({})))
    assert "gan" not in sup and sup["algorithm"] == "supervised"
    assert config.monitor_direction("val_class_entropy") == "max"
    assert config.monitor_direction("val_confident") == "max"
    assert config.monitor_direction("val_frechet") == "min"


def test_fingerprints_of_existing_configs_are_unchanged():
    """Run directories, sweep studies and the cached scorer are found by
    fingerprint: the GAN fields must not move a supervised config's."""
    from jaxdl import scorer

    assert config.fingerprint(config.from_dict({})) == "248e025848d15b1e"
    assert scorer.scorer_dir("mnist").name == "mnist-88defe75dfae1aa7"


def test_nested_keys_leave_the_fingerprint_and_name_apart_in_sweeps():
    from jaxdl.sweep.space import short_names

    tree = {"gan": {"g_optim": {"learning_rate": 1.0, "b1": 0.5}}, "seed": 0}
    config._pop_dotted(tree, "gan.g_optim.b1", only_if=0.9)         # not equal: kept
    config._pop_dotted(tree, "gan.d_optim.b1")                        # absent: no error
    assert tree["gan"]["g_optim"] == {"learning_rate": 1.0, "b1": 0.5}
    config._pop_dotted(tree, "gan.g_optim.b1", only_if=0.5)
    assert tree["gan"]["g_optim"] == {"learning_rate": 1.0}
    assert short_names(["gan.g_optim.learning_rate", "gan.d_optim.learning_rate",
                        "train.batch_size"]) == {
        "gan.g_optim.learning_rate": "g_optim.learning_rate",
        "gan.d_optim.learning_rate": "d_optim.learning_rate", "train.batch_size": "batch_size"}


def test_shipped_gan_configs_load():
    conv = config.load(REPO / "experiments" / "mnist_gan.yaml")
    mlp = config.load(REPO / "experiments" / "mnist_gan_mlp.yaml")
    assert conv.algorithm == mlp.algorithm == "gan"
    assert conv.gan.generator.kind == conv.gan.discriminator.kind == "conv"
    assert mlp.gan.generator.kind == mlp.gan.discriminator.kind == "mlp"
    assert conv.train.monitor == "val_frechet"


@pytest.mark.parametrize("tree, message", [
    ({"gan": {"generator": {"widht": 3}}},
     "gan.generator.widht: unknown key (did you mean 'width'?)"),
    ({"gan": {"loss": "wasserstein"}},
     "gan.loss: must be one of non_saturating, least_squares, hinge"),
    ({"gan": {"n_critic": 0}}, "gan.n_critic: must be >= 1, got 0"),
    ({"gan": {"d_optim": {"learning_rate": -1}}},
     "gan.d_optim.learning_rate: must be > 0.0, got -1.0"),
    ({"gan": {"discriminator": {"kind": "resnet"}}},
     "gan.discriminator.kind: must be one of mlp, conv"),
    ({"gan": {"eval_samples": 10}}, "gan.eval_samples: must be >= 100, got 10"),
    ({"model": {"width": 256}}, "model: not used by algorithm gan (set gan.generator, "
     "gan.discriminator, gan.g_optim or gan.d_optim instead); remove model.width"),
    ({"optim": {"learning_rate": 0.1}}, "optim: not used by algorithm gan"),
    ({"data": {"name": "spiral"}}, "data.name: a GAN needs image data (mnist, fashion_mnist)"),
    ({"train": {"monitor": "val_accuracy"}},
     "train.monitor: 'val_accuracy' is not measured for a GAN; valid metrics: frechet"),
    ({"train": {"monitor": "val_frechet", "mode": "max"}},
     "train.mode: 'max' would treat a worse frechet as better"),
    ({"train": {"loss": "mse"}}, "train.loss: not used by a GAN (gan.loss picks its losses)"),
    ({"train": {"l2": 0.1}}, "train.l2: not used by a GAN"),
    ({"data": {"val_fraction": 0}},
     "train.monitor: 'val_frechet' needs a validation split but data.val_fraction is 0"),
    ({"data": {"train_limit": 100}, "train": {"batch_size": 64}, "gan": {"n_critic": 2}},
     "train.batch_size: 64 x gan.n_critic 2 real images per step is more than the 100"),
    ({"algorithm": "diffusion"}, "algorithm: must be one of supervised, gan"),
    ({"data": {"normalize": "unit"}}, "data.normalize: not used by a GAN"),
    ({"gan": {"generator": {"depth": 3}}},
     "gan.generator.depth: a conv generator has a fixed depth"),
    ({"data": {"val_fraction": 1e-5}}, "the Frechet distance needs at least 2"),
    ({"gan": {"conv": "xla", "generator": {"kind": "mlp"}, "discriminator": {"kind": "mlp"}}},
     "gan.conv: not used by mlp players"),
])
def test_bad_gan_config_is_one_clear_error(tree, message):
    full = {"algorithm": "gan", **tree}
    with pytest.raises(ConfigError) as e:
        config.from_dict(full)
    assert message in str(e.value)


def test_gan_section_on_a_supervised_config_is_an_error():
    with pytest.raises(ConfigError, match="gan: not used by algorithm supervised .*remove "
                       "gan.latent"):
        config.from_dict({"gan": {"latent": 8}})


def test_bad_gan_config_through_the_cli(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("algorithm: gan\ngan: {generator: {kind: resnet}, n_critc: 2}\n")
    out = jaxdl_cli("train", path, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "gan.generator.kind: must be one of mlp, conv" in out.stderr
    assert "gan.n_critc: unknown key (did you mean 'n_critic'?)" in out.stderr


# ------------------------------------------------------------------ runs


def _grid(path) -> np.ndarray:
    return matplotlib.image.imread(path)


def test_train_sample_and_eval_through_the_cli(tmp_path, gan_data_dir):
    cfg_path = tmp_path / "gan.yaml"
    cfg_path.write_text(config.dump(tiny(gan_data_dir)))
    run = tmp_path / "run"
    out = jaxdl_cli("train", cfg_path, "--workdir", run, "--progress")
    # The bar shows both players' losses.
    assert "epoch 2/2" in out.stderr and "d_loss=" in out.stderr and "g_loss=" in out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["monitor"] == "val_frechet"
    for table in ("final", "best"):
        assert set(summary[table]["val"]) == {"frechet", "confident", "class_entropy"}
        assert set(summary[table]["test"]) == {"frechet", "confident", "class_entropy"}
    assert set(summary["final"]["train"]) == {"d_loss", "g_loss", "d_real", "d_fake"}
    base = summary["baselines"]["test"]
    assert 0 < base["frechet_real"] < summary["best"]["test"]["frechet"]
    assert summary["best"]["test"]["frechet"] < base["frechet_untrained"]
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in rows] == [
        (1, "train"), (1, "val"), (2, "train"), (2, "val"), (2, "test")]
    assert (run / "curves.png").exists()
    assert (run / "checkpoints" / str(summary["best_epoch"])).is_dir()
    # A grid each epoch (grid_every 1) and the best checkpoint's: 16 images
    # in 4 x 4 cells of 28 + 2 pixels.
    for name in ("samples/epoch_0001.png", "samples/epoch_0002.png", "samples.png"):
        assert _grid(run / name).shape[:2] == (4 * 30 + 2, 4 * 30 + 2), name

    out = jaxdl_cli("sample", run, "--n", "9", "--seed", "3")
    path = Path(out.stdout.strip())
    assert path == run / "sample-best-seed3.png"
    first = _grid(path)
    assert first.shape[:2] == (3 * 30 + 2, 3 * 30 + 2)
    jaxdl_cli("sample", run, "--n", "9", "--seed", "3", "--out", tmp_path / "again.png")
    np.testing.assert_array_equal(_grid(tmp_path / "again.png"), first)   # same seed
    jaxdl_cli("sample", run, "--n", "9", "--seed", "4", "--out", tmp_path / "other.png")
    assert not np.array_equal(_grid(tmp_path / "other.png"), first)
    bad = jaxdl_cli("sample", run, "--n", "0", check=False)
    assert bad.returncode == 2 and "--n: must be >= 1" in bad.stderr

    got = json.loads(jaxdl_cli("eval", run, "--json", "--split", "val",
                               "--split", "test").stdout)
    assert got["epoch"] == summary["best_epoch"]
    for split in ("val", "test"):
        for k, v in summary["best"][split].items():
            assert got[split][k] == pytest.approx(v, rel=1e-6), (split, k)


def test_same_seed_same_run_and_samples(tmp_path, gan_data_dir):
    # The conv networks here; the CLI test covers the MLP ones.
    cfg = tiny(gan_data_dir, "conv", **{"train.epochs": 1})
    a = jaxdl.run(cfg, workdir=tmp_path / "a", quiet=True)
    b = jaxdl.run(cfg, workdir=tmp_path / "b", quiet=True)
    assert a.summary["final"] == b.summary["final"]
    np.testing.assert_array_equal(_grid(tmp_path / "a" / "samples.png"),
                                  _grid(tmp_path / "b" / "samples.png"))
    c = jaxdl.run(cfg.replace(seed=1), workdir=tmp_path / "c", quiet=True)
    assert c.summary["final"]["train"] != a.summary["final"]["train"]
    assert not np.array_equal(_grid(tmp_path / "a" / "samples.png"),
                              _grid(tmp_path / "c" / "samples.png"))
    # The grids come from the generator in [-1, 1]: shapes and range.
    _, program, state, _ = gan_run._restore(tmp_path / "a", "best")
    images = program.sample(state, np.zeros((5, cfg.gan.latent), np.float32))
    assert images.shape == (5, 28, 28, 1) and np.abs(images).max() <= 1.0


def test_resume_after_an_interrupted_epoch_matches_an_uninterrupted_run(tmp_path,
                                                                        gan_data_dir):
    cfg = tiny(gan_data_dir, **{"train.epochs": 3})
    full = jaxdl.run(cfg, workdir=tmp_path / "full", quiet=True)

    def interrupt(epoch, metrics):
        if epoch == 2:       # before epoch 2's checkpoint is written
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        jaxdl.run(cfg, workdir=tmp_path / "cut", reporter=interrupt, quiet=True)
    assert not (tmp_path / "cut" / "summary.json").exists()
    with pytest.raises(CheckpointError, match="already holds a run"):
        jaxdl.run(cfg, workdir=tmp_path / "cut", quiet=True)
    resumed = jaxdl.run(cfg, workdir=tmp_path / "cut", resume=True, quiet=True)
    assert resumed.status == "completed" and resumed.summary["epochs"] == 3
    assert resumed.summary["final"] == full.summary["final"]
    assert resumed.summary["best"] == full.summary["best"]
    rows = [json.loads(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "train"] == [1, 2, 3]


def test_sample_and_eval_errors(tmp_path, gan_data_dir):
    cfg = tiny(gan_data_dir, **{"train.epochs": 1, "checkpoint.enabled": False})
    jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    out = jaxdl_cli("sample", tmp_path / "run", check=False)
    assert out.returncode == 2 and "no checkpoints" in out.stderr
    with pytest.raises(CheckpointError, match="not a run directory"):
        gan_run.sample_grid(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="is a gan run.*jaxdl.gan_run"):
        jaxdl.restore(tmp_path / "run")


def test_diverging_gan_stops_with_a_reason(tmp_path, gan_data_dir):
    cfg = tiny(gan_data_dir, **{"gan.g_optim.name": "sgd", "gan.g_optim.learning_rate": 1e30,
                                "gan.d_optim.name": "sgd", "gan.d_optim.learning_rate": 1e30})
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert r.status == "diverged"
    assert "gan.g_optim.learning_rate" in r.summary["reason"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_sweep_searches_gan_learning_rates_and_widths(tmp_path, gan_data_dir):
    from jaxdl import sweep
    from jaxdl.sweep.driver import format_params

    spec = sweep.from_dict({
        "name": "tiny_gan",
        "base": config.to_dict(tiny(gan_data_dir)),
        "space": {"gan.g_optim.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3,
                                                "log": True},
                  "gan.d_optim.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3,
                                                "log": True},
                  "gan.generator.width": {"type": "categorical", "choices": [16, 32]},
                  "train.batch_size": {"type": "categorical", "choices": [32, 64]}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        "budget": {"trials": 3},
        "storage": "memory",
        "study_dir": str(tmp_path / "study"),
    })
    assert spec.metric == "val_frechet" and spec.direction == "minimize"
    # Trials must share how the objective is estimated.
    with pytest.raises(ConfigError, match="space.gan.eval_samples: sets how the objective is "
                       "estimated"):
        sweep.from_dict({**spec.to_dict(), "space": {
            "gan.eval_samples": {"type": "categorical", "choices": [100, 1000]}}})
    assert format_params({"gan.g_optim.learning_rate": 2e-4, "gan.d_optim.learning_rate": 4e-4,
                          "train.batch_size": 64}) == (
        "g_optim.lr=0.0002 d_optim.lr=0.0004 batch=64")
    study = sweep.run(spec, quiet=True)
    done = [t for t in study.trials if t.state.is_finished()]
    assert len(done) == 3
    best = study.best_trial
    summary = json.loads((Path(best.user_attrs["run_dir"]) / "summary.json").read_text())
    assert best.value == pytest.approx(summary["best"]["val"]["frechet"])
    assert all(len(t.intermediate_values) >= 1 for t in done)


def test_progress_reaches_the_listener_during_the_epoch(gan_data_dir):
    cfg = tiny(gan_data_dir)
    job = gan_run.GANJob(cfg, log=lambda s: None)
    state = job.new_state()
    job.compile(state, progress=True)
    calls = []
    state, means = job.train_epoch(state, 1, lambda done, m: calls.append((done, dict(m))))
    steps = job.steps_per_epoch
    assert steps == 1536 // 64 and job.program.progress_every == 1 and len(calls) == steps
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == steps
    assert list(calls[-1][1]) == ["d_loss", "g_loss", "d_real", "d_fake"]
    assert list(means) == ["d_loss", "g_loss", "d_real", "d_fake"]


def test_chunked_epochs_hinge_n_critic_and_no_validation(tmp_path, gan_data_dir):
    """steps_per_call cuts the epoch into calls (with a shorter tail) and gives
    the numbers of the whole-epoch scan; n_critic 2 and the hinge loss run;
    without a validation split the run monitors a train loss and is still
    scored on the test images."""
    cfg = tiny(gan_data_dir, **{"data.val_fraction": 0, "train.monitor": "train_g_loss",
                                "gan.n_critic": 2, "gan.loss": "hinge",
                                "train.batch_size": 32})
    whole = jaxdl.run(cfg, workdir=tmp_path / "whole", quiet=True)
    chunked = jaxdl.run(cfg.replace({"train.steps_per_call": 7}), workdir=tmp_path / "chunks",
                        quiet=True)
    assert json.loads((tmp_path / "chunks" / "run.json").read_text())["steps_per_call"] == 7
    # 24 steps an epoch: 3 calls of 7 steps and one of 3.
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["steps_per_epoch"] == 24
    for split in ("train", "test"):
        for k, v in whole.summary["final"][split].items():
            assert chunked.summary["final"][split][k] == pytest.approx(v, rel=1e-5), (split, k)
    assert "val" not in whole.summary["final"] and whole.summary["best_epoch"] in (1, 2)
    out = jaxdl_cli("eval", tmp_path / "whole", "--split", "val", check=False)
    assert out.returncode == 2 and "no 'val' split" in out.stderr


def test_another_learning_rate_compiles_nothing(tmp_path, gan_data_dir):
    cfg = tiny(gan_data_dir, **{"train.epochs": 1, "gan.eval_samples": 200})
    jaxdl.run(cfg, workdir=tmp_path / "a", quiet=True)
    b = jaxdl.run(cfg.replace({"gan.g_optim.learning_rate": 3e-4, "seed": 5}),
                  workdir=tmp_path / "b", quiet=True)
    assert b.summary["compile_seconds"] == 0.0


def test_resume_keeps_the_recorded_scorer(tmp_path, gan_data_dir):
    cfg = tiny(gan_data_dir, **{"train.epochs": 1})
    run = tmp_path / "run"
    jaxdl.run(cfg, workdir=run, quiet=True)
    recorded = gan_run.recorded_scorer(run)
    assert recorded.is_absolute() and recorded.exists()
    (run / "summary.json").unlink()                   # as if killed before the end
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "scorer": str(tmp_path / "gone")}))
    with pytest.raises(CheckpointError, match="was scored with the scorer in .*gone.*missing"):
        jaxdl.run(cfg, workdir=run, resume=True, quiet=True)
    out = jaxdl_cli("eval", run, "--json")                # scores, with a warning
    assert "warning" in out.stderr and "not comparable" in out.stderr
    assert set(json.loads(out.stdout)["test"]) == {"frechet", "confident", "class_entropy"}
    # Moved, but the same scorer config is cached in this data directory:
    # the resume scores with that copy.
    moved = tmp_path / "elsewhere" / recorded.name
    (run / "run.json").write_text(json.dumps({**info, "scorer": str(moved)}))
    r = jaxdl.run(cfg, workdir=run, resume=True, quiet=True)
    assert r.status == "completed"


def test_a_failing_grid_is_a_warning_not_a_lost_run(tmp_path, gan_data_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gan_run, "save_image_grid", broken)
    r = jaxdl.run(tiny(gan_data_dir, **{"train.epochs": 1}), workdir=tmp_path / "run",
                  quiet=True)
    assert r.status == "completed" and r.summary["best"]["test"]["frechet"] > 0
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()
    assert any("sample grid" in w and "disk full" in w for w in r.summary["warnings"])
    assert any("samples/plots not written" in w for w in r.summary["warnings"])


def test_gan_sample_options_on_another_run_are_an_error(tmp_path):
    from tests.helpers import spiral_cfg

    jaxdl.run(spiral_cfg(**{"train.epochs": 1}), workdir=tmp_path / "run", quiet=True)
    out = jaxdl_cli("sample", tmp_path / "run", "--n", "4", check=False)
    assert out.returncode == 2 and "--n and --out are for GAN runs" in out.stderr
