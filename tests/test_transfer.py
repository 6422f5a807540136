"""Transfer learning: init_from, frozen sub-trees, head replacement,
per-group learning rates, and their errors."""

import json
import shutil

import jax
import numpy as np
import optax
import pytest

import jaxdl
from jaxdl import config, experiment, transfer
from jaxdl.errors import CheckpointError, ConfigError
from jaxdl.transfer import Pretrained, param_paths
from tests.helpers import jaxdl as cli
from tests.helpers import spiral_cfg

# A small CNN: two conv blocks, one hidden dense layer, the head.
CNN = {"name": "cnn", "channels": [4, 8], "dense": [16]}


def mnist_cnn(data_dir, **overrides) -> config.Config:
    cfg = config.from_dict({
        "name": "tiny_cnn", "seed": 0,
        "data": {"name": "mnist", "dir": str(data_dir), "train_limit": 600,
                 "val_fraction": 0.1},
        "model": CNN,
        "optim": {"name": "adam", "learning_rate": 0.003},
        "train": {"epochs": 1, "batch_size": 50, "progress": False},
    })
    return cfg.replace(overrides) if overrides else cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A finished MNIST CNN run (10 classes)."""
    import os

    data_dir = os.environ.get("JAXDL_DATA_DIR")
    if not data_dir or not os.path.exists(os.path.join(data_dir, "mnist")):
        pytest.skip("JAXDL_DATA_DIR with mnist/ not set")
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    r = jaxdl.run(mnist_cnn(data_dir, **{"train.epochs": 2}), workdir=run_dir, quiet=True)
    assert r.status == "completed"
    return run_dir, data_dir


def digits_cfg(source, **overrides) -> config.Config:
    """Digits 5-9 (5 classes: another head) from the pretrained run."""
    run_dir, _ = source
    cfg = config.from_dict({
        "name": "tiny_digits", "seed": 1,
        "data": {"name": "digits", "train_limit": 100, "classes": [5, 6, 7, 8, 9]},
        "model": CNN,
        "optim": {"name": "adam", "learning_rate": 0.003},
        "train": {"epochs": 2, "batch_size": 20, "progress": False},
        "init_from": str(run_dir),
    })
    return cfg.replace(overrides) if overrides else cfg


def _flat(tree):
    return dict(zip(param_paths(tree), jax.tree_util.tree_leaves(tree), strict=True))


def _source_params(source):
    return experiment.restore(source[0], data_dir=source[1]).params


def test_feature_extractor_keeps_frozen_params_bit_identical(pretrained, tmp_path):
    cfg = digits_cfg(pretrained, **{"transfer.freeze": ["Conv2D_*", "Dense_0"]})
    r = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert r.status == "completed"
    src = _flat(_source_params(pretrained))
    got = experiment.restore(tmp_path / "run", "latest")
    after = _flat(got.params)
    frozen = [p for p in after if not p.startswith("Dense_1")]
    assert frozen == ["Conv2D_0/bias", "Conv2D_0/kernel", "Conv2D_1/bias", "Conv2D_1/kernel",
                      "Dense_0/bias", "Dense_0/kernel"]
    for p in frozen:
        a, b = np.asarray(after[p]), np.asarray(src[p])
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), p
    # The fresh head (5 classes, not the source's 10) trained.
    assert after["Dense_1/kernel"].shape == (16, 5)
    assert src["Dense_1/kernel"].shape == (16, 10)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())["transfer"]
    assert summary["fresh"] == ["Dense_1/bias", "Dense_1/kernel"]
    assert summary["frozen"] == frozen and summary["loaded"] == 6


def test_optimizer_state_holds_nothing_for_frozen_params(pretrained, tmp_path):
    cfg = digits_cfg(pretrained, **{"transfer.freeze": ["Conv2D_*"]})
    job = experiment.SupervisedJob(cfg)
    state = job.new_state()
    adam, = [s for s in state.opt_state.inner_state if isinstance(s, optax.ScaleByAdamState)]
    for moments in (adam.mu, adam.nu):
        flat = jax.tree_util.tree_flatten_with_path(
            moments, is_leaf=lambda x: isinstance(x, optax.MaskedNode))[0]
        kinds = {"/".join(transfer._key_name(k) for k in path): isinstance(leaf, optax.MaskedNode)
                 for path, leaf in flat}
        assert kinds == {"Conv2D_0/bias": True, "Conv2D_0/kernel": True,
                         "Conv2D_1/bias": True, "Conv2D_1/kernel": True,
                         "Dense_0/bias": False, "Dense_0/kernel": False,
                         "Dense_1/bias": False, "Dense_1/kernel": False}
    n_trainable = sum(np.size(a) for p, a in _flat(state.params).items()
                      if not p.startswith("Conv2D"))
    assert sum(np.size(a) for a in jax.tree_util.tree_leaves(adam.mu)) == n_trainable
    # ... and a run that froze them resumes and evaluates from its checkpoint.
    r = jaxdl.run(cfg.replace({"train.epochs": 1}), workdir=tmp_path / "run", quiet=True)
    out = experiment.evaluate(tmp_path / "run", "latest")
    assert out["test"]["accuracy"] == pytest.approx(r.final["test"]["accuracy"])


def test_init_only_loads_everything_but_the_new_head(pretrained):
    cfg = digits_cfg(pretrained)
    state = experiment.SupervisedJob(cfg).new_state()
    src, got = _flat(_source_params(pretrained)), _flat(state.params)
    for p in got:
        if p.startswith("Dense_1"):
            assert got[p].shape != src[p].shape
        else:
            np.testing.assert_array_equal(np.asarray(got[p]), np.asarray(src[p]))


def test_a_same_shaped_head_is_loaded_unless_asked_fresh(pretrained):
    cfg = digits_cfg(pretrained, **{"data.classes": None})   # 10 classes, as the source
    src = _flat(_source_params(pretrained))
    loaded = _flat(experiment.SupervisedJob(cfg).new_state().params)
    np.testing.assert_array_equal(loaded["Dense_1/kernel"], src["Dense_1/kernel"])
    fresh = _flat(experiment.SupervisedJob(
        cfg.replace({"transfer.head": "fresh", "transfer.fresh": ["Dense_0"]})).new_state().params)
    for p in ("Dense_1/kernel", "Dense_0/kernel"):
        assert not np.array_equal(fresh[p], src[p]), p
    np.testing.assert_array_equal(fresh["Conv2D_1/kernel"], src["Conv2D_1/kernel"])


def test_shape_mismatch_outside_the_head_names_the_parameter_and_shapes(pretrained, tmp_path):
    cfg = digits_cfg(pretrained, **{"model.dense": [32]})
    with pytest.raises(ConfigError) as e:
        jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    msg = str(e.value)
    assert "Dense_0/kernel: shape (392, 32) in this model, (392, 16) in the checkpoint" in msg
    assert "transfer.fresh" in msg
    assert not (tmp_path / "run").exists()     # checked before anything is written
    # A head asked to load with another class count is an error too.
    with pytest.raises(ConfigError, match=r"Dense_1/kernel: shape \(16, 5\) in this model, "
                                          r"\(16, 10\) in the checkpoint; transfer.head"):
        experiment.SupervisedJob(digits_cfg(pretrained, **{"transfer.head": "load"}))
    # Listing the layer as fresh is the way out.
    job = experiment.SupervisedJob(cfg.replace({"transfer.fresh": ["Dense_0"]}))
    assert job.transfer["fresh"] == ["Dense_0/bias", "Dense_0/kernel", "Dense_1/bias",
                                     "Dense_1/kernel"]


def test_a_deeper_source_or_another_family_is_refused(pretrained):
    with pytest.raises(ConfigError, match="the checkpoint has parameters this model lacks: "
                                          "Conv2D_1/bias, Conv2D_1/kernel"):
        experiment.SupervisedJob(digits_cfg(pretrained, **{"model.channels": [4]}))
    with pytest.raises(ConfigError, match=r"a cnn run.*Dense_0/kernel: shape \(784, 128\)"):
        experiment.SupervisedJob(digits_cfg(pretrained, **{"model": {"name": "mlp"}}))


def test_a_pattern_that_matches_nothing_lists_the_names(pretrained):
    with pytest.raises(ConfigError) as e:
        experiment.SupervisedJob(digits_cfg(pretrained, **{"transfer.freeze": ["CNN_0/Conv_*"]}))
    msg = str(e.value)
    assert "transfer.freeze: 'CNN_0/Conv_*' matches no parameter" in msg
    assert "modules: Conv2D_0, Conv2D_1, Dense_0, Dense_1" in msg
    assert "Conv2D_0/kernel" in msg
    for key, value in (("transfer.fresh", ["head"]), ("transfer.lr_groups", ["conv*=0.1"])):
        with pytest.raises(ConfigError, match=f"{key}: .* matches no parameter"):
            experiment.SupervisedJob(digits_cfg(pretrained, **{key: value}))


def test_freezing_everything_is_refused():
    with pytest.raises(ConfigError, match="every parameter is frozen.*Dense_2"):
        experiment.SupervisedJob(spiral_cfg(**{"transfer.freeze": ["*"]}))


def _one_sgd_step(cfg):
    job = experiment.SupervisedJob(cfg)
    state = job.new_state()
    before = _flat(jax.device_get(state.params))   # the epoch donates the state
    after = _flat(jax.device_get(job.train_epoch(state, 1, None)[0].params))
    return {p: after[p] - before[p] for p in before}


def test_per_group_learning_rates_scale_each_groups_updates():
    """Plain SGD: a group's update is its multiplier times the base update."""
    base = spiral_cfg(**{"optim.name": "sgd", "optim.learning_rate": 0.1, "train.epochs": 1,
                         "data.n_samples": 40, "train.batch_size": 16,
                         "data.val_fraction": 0.0, "train.monitor": "train_loss"})
    plain = _one_sgd_step(base)
    scaled = _one_sgd_step(base.replace(
        {"transfer.lr_groups": ["Dense_0/kernel=0.25", "Dense_0=0.5", "Dense_1=2"]}))
    # One epoch of 1 step: the updates differ by the multipliers (to the
    # rounding of float32 params of size < 1 that they are read back from:
    # one ulp, 6e-8; measured at most 3e-8).
    assert len(plain) == 6
    for p, factor in (("Dense_0/kernel", 0.25), ("Dense_0/bias", 0.5), ("Dense_1/kernel", 2.0),
                      ("Dense_1/bias", 2.0), ("Dense_2/kernel", 1.0), ("Dense_2/bias", 1.0)):
        np.testing.assert_allclose(scaled[p], factor * plain[p], rtol=1e-6, atol=1e-7,
                                   err_msg=p)


def test_pretrained_lr_slows_the_body_not_the_head(pretrained):
    cfg = digits_cfg(pretrained, **{"optim.name": "sgd", "optim.learning_rate": 0.05,
                                    "train.epochs": 1, "data.train_limit": 20,
                                    "data.val_fraction": 0.0, "train.monitor": "train_loss"})
    plain = _one_sgd_step(cfg)
    slow = _one_sgd_step(cfg.replace({"transfer.pretrained_lr": 0.1}))
    for p in plain:
        factor = 1.0 if p.startswith("Dense_1") else 0.1
        np.testing.assert_allclose(slow[p], factor * plain[p], rtol=1e-6, atol=1e-7, err_msg=p)


def test_a_transferred_run_resumes_without_its_source(pretrained, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(pretrained[0], source)
    cfg = digits_cfg((source, pretrained[1]), **{"transfer.freeze": ["Conv2D_*"],
                                                  "train.epochs": 3})
    whole = jaxdl.run(cfg, workdir=tmp_path / "whole", quiet=True)

    def killed_in_epoch_two(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt   # after epoch 1's checkpoint, before epoch 2's
        return False

    with pytest.raises(KeyboardInterrupt):
        jaxdl.run(cfg, workdir=tmp_path / "cut", quiet=True, reporter=killed_in_epoch_two)
    shutil.rmtree(source)
    resumed = jaxdl.run(cfg, workdir=tmp_path / "cut", resume=True, quiet=True)
    assert resumed.status == "completed"
    assert resumed.final["test"] == pytest.approx(whole.final["test"], rel=1e-6)
    # A fresh start does need it, and says so before writing anything.
    with pytest.raises(CheckpointError, match="is not a run directory"):
        jaxdl.run(cfg, workdir=tmp_path / "again", quiet=True)
    assert not (tmp_path / "again").exists()


def test_cli_init_from(pretrained, tmp_path):
    cfg_path = tmp_path / "digits.yaml"
    cfg = digits_cfg(pretrained, **{"train.epochs": 1, "transfer.freeze": ["Conv2D_*"]})
    cfg_path.write_text(config.dump(cfg.replace({"init_from": None})))
    out = cli("train", cfg_path, "--init-from", pretrained[0], "--workdir", tmp_path / "run",
              "--no-progress")
    assert "completed" in out.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["transfer"]["init_from"] == str(pretrained[0])
    saved = config.load(tmp_path / "run" / "config.yaml")
    assert saved.init_from == str(pretrained[0])
    bad = cli("train", cfg_path, "--init-from", tmp_path / "nowhere", "--workdir",
              tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "is not a run directory (no config.yaml)" in bad.stderr


def test_transfer_config_errors():
    cfg = spiral_cfg()
    with pytest.raises(ConfigError, match="transfer.head, transfer.pretrained_lr: only with "
                                          "init_from"):
        cfg.replace({"transfer.head": "fresh", "transfer.pretrained_lr": 0.1})
    with pytest.raises(ConfigError, match="'Dense_0' is not PATTERN=MULTIPLIER"):
        cfg.replace({"transfer.lr_groups": ["Dense_0"]})
    with pytest.raises(ConfigError, match="'Dense_0=-1' is not PATTERN=MULTIPLIER"):
        cfg.replace({"transfer.lr_groups": ["Dense_0=-1"]})
    with pytest.raises(ConfigError, match="transfer.pretrained_lr"):
        cfg.replace({"init_from": "x", "transfer.pretrained_lr": 0})
    with pytest.raises(ConfigError, match="transfer.head.*auto, fresh, load"):
        cfg.replace({"transfer.head": "new"})
    with pytest.raises(ConfigError, match="init_from: transfer learning is for supervised runs"):
        config.from_dict({"algorithm": "ppo", "init_from": "runs/x"})
    with pytest.raises(ConfigError, match="transfer: not used by algorithm gan"):
        config.from_dict({"algorithm": "gan", "transfer": {"freeze": ["x"]}})
    with pytest.raises(ConfigError, match="data.classes: needs at least 2 distinct"):
        config.from_dict({"data": {"name": "mnist", "classes": [3, 3]}})
    with pytest.raises(ConfigError, match="data.classes: selects classes of an image set"):
        spiral_cfg(**{"data.classes": [0, 1]})
    with pytest.raises(ConfigError, match="data.classes"):
        config.from_dict({"data": {"name": "mnist", "classes": [3, 10]}})


def test_transfer_settings_are_part_of_the_fingerprint():
    cfg = spiral_cfg()
    assert config.fingerprint(cfg) == config.fingerprint(spiral_cfg())
    ids = {config.fingerprint(c) for c in (
        cfg, cfg.replace({"init_from": "runs/a"}), cfg.replace({"init_from": "runs/b"}),
        cfg.replace({"transfer.freeze": ["Dense_0"]}),
        cfg.replace({"init_from": "runs/a", "transfer.pretrained_lr": 0.1}))}
    assert len(ids) == 5
    dumped = config.dump(cfg)
    assert "init_from" in dumped and "transfer" in dumped
    assert "init_from" not in config.dump(config.from_dict({"algorithm": "ppo"}))


def test_plan_and_groups_on_a_synthetic_checkpoint():
    """The loading rules without training anything."""
    params = {"Dense_0": {"kernel": np.zeros((2, 4)), "bias": np.zeros(4)},
              "Dense_1": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}}
    source = Pretrained("src", 5, {"Dense_0/kernel": np.ones((2, 4)), "Dense_0/bias": np.ones(4),
                                   "Dense_1/kernel": np.ones((4, 7)),
                                   "Dense_1/bias": np.ones(7)}, {}, "mlp")
    t = config.TransferConfig()
    assert transfer.plan(t, source, params) == ["Dense_0/bias", "Dense_0/kernel"]
    new, _ = transfer.load_pretrained(source, ["Dense_0/kernel"], params, {})
    assert new["Dense_0"]["kernel"].sum() == 8 and new["Dense_0"]["bias"].sum() == 0
    groups = transfer.param_groups(config.TransferConfig(freeze=("Dense_0/k*",),
                                                         pretrained_lr=0.5), params,
                                   pretrained=True)
    assert groups.frozen == {"Dense_0/kernel"}
    assert dict(groups.scales) == {"Dense_0/bias": 0.5}
    assert transfer.param_groups(t, params) is None
    assert transfer.head_name(params) == "Dense_1"
    assert transfer.head_name({"layer0": {}, "head": {}}) == "head"


def test_digits_look_like_mnist():
    from jaxdl import data

    x, y = data.digits.load_digits()
    assert x.shape == (1797, 28, 28) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 255
    assert not x[:, :4].any() and not x[:, 24:].any()   # MNIST's 4-pixel margin
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    ds = data.load(config.DataConfig(name="digits", classes=(5, 6, 7, 8, 9)), seed=0)
    assert ds.outputs == 5 and set(np.unique(ds.train.y)) == {0, 1, 2, 3, 4}
    raw = [data.load(config.DataConfig(name="digits", normalize="none"), seed=s)
           for s in (0, 3)]
    np.testing.assert_array_equal(raw[0].test.x, raw[1].test.x)   # a fixed test split
    assert not np.array_equal(raw[0].train.y, raw[1].train.y)     # a seeded validation split
    sizes = config.split_sizes(config.DataConfig(name="digits"))
    full = data.load(config.DataConfig(name="digits"), seed=0)
    assert sizes == {"train": len(full.train), "val": len(full.val), "test": len(full.test)}
    # Upsampling keeps a constant image constant and interpolates linearly.
    flat = data.digits.resize_bilinear(np.full((1, 8, 8), 7.0), 20)
    np.testing.assert_allclose(flat, 7.0)
    ramp = data.digits.resize_bilinear(np.tile(np.arange(8.0), (1, 8, 1)), 16)
    np.testing.assert_allclose(ramp[0, 0, 1:15], np.arange(0.25, 7.0, 0.5))


def test_the_shipped_experiment_starts_from_mnist_cnns_run_directory(repo):
    source = config.load(repo / "experiments" / "mnist_cnn.yaml")
    target = config.load(repo / "experiments" / "digits_from_mnist.yaml")
    assert target.init_from == str(experiment.default_run_dir(source))
    assert target.model == source.model
    assert target.data.normalize == source.data.normalize == "unit"


def test_frozen_batch_norm_layers_keep_their_statistics(pretrained, tmp_path):
    """Freezing a batch-norm layer keeps its running statistics too; an
    unfrozen one's move."""
    cfg = mnist_cnn(pretrained[1], **{"model.batch_norm": True, "data.train_limit": 200,
                                      "transfer.freeze": ["BatchNorm_0"]})
    job = experiment.SupervisedJob(cfg)
    state = job.new_state()
    before = _flat(jax.device_get(state.batch_stats))
    after = _flat(jax.device_get(job.train_epoch(state, 1, None)[0].batch_stats))
    assert sorted(before) == ["BatchNorm_0/mean", "BatchNorm_0/var", "BatchNorm_1/mean",
                              "BatchNorm_1/var"]
    for path in ("BatchNorm_0/mean", "BatchNorm_0/var"):
        np.testing.assert_array_equal(after[path], before[path])
    assert not np.array_equal(after["BatchNorm_1/mean"], before["BatchNorm_1/mean"])
