"""Tests for jaxdl.config: loading, validation, overrides, fingerprint, dump."""

from __future__ import annotations

import dataclasses
import re
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdl import config
from jaxdl.config import (
    ACTIVATIONS,
    DATASETS,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from jaxdl.errors import ConfigError, JaxdlError

FULL_YAML = """\
name: full
seed: 7
data:
  name: fashion_mnist
  dir: /tmp/somewhere
  val_fraction: 0.2
  normalize: unit
  train_limit: 500
  n_samples: 300
  noise: 0.1
  test_fraction: 0.25
  features: [x1, x2, sin(x1)]
  n_features: 4
model:
  name: cnn
  depth: 3
  width: 64
  widths: [32, 16]
  activation: tanh
  dropout: 0.25
  channels: [8, 16]
  kernel: 5
  pool: max
  batch_norm: true
  dense: [128, 64]
  conv: im2col
optim:
  name: adamw
  learning_rate: 3.0e-4
  momentum: 0.8
  b1: 0.85
  b2: 0.99
  eps: 1.0e-7
  decay: 0.95
  weight_decay: 1.0e-2
  schedule: warmup_cosine
  warmup_epochs: 1.5
  decay_rate: 0.7
  min_lr_ratio: 0.1
  clip_norm: 1.0
train:
  epochs: 3
  batch_size: 64
  eval_batch_size: 500
  loss: cross_entropy
  l2: 1.0e-5
  monitor: val_accuracy
  mode: max
  patience: 2
  min_delta: 0.001
  steps_per_call: 4
  progress: false
checkpoint:
  enabled: false
  every: 2
"""


def write(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path, text: str, overrides=()) -> ConfigError:
    """Load ``text`` from a file and return the one ConfigError it raises."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    err = info.value
    assert err.source == str(path)
    assert str(path) in str(err)
    return err


def single_problem(tmp_path, text: str, overrides=()) -> str:
    err = load_error(tmp_path, text, overrides)
    assert len(err.problems) == 1, err.problems
    return str(err)


# ------------------------------------------------------------------ loading


def test_load_full_file_every_section(tmp_path):
    cfg = config.load(write(tmp_path, FULL_YAML))
    assert cfg.name == "full" and cfg.seed == 7
    assert cfg.data == DataConfig(
        name="fashion_mnist", dir="/tmp/somewhere", val_fraction=0.2, normalize="unit",
        train_limit=500, n_samples=300, noise=0.1, test_fraction=0.25,
        features=("x1", "x2", "sin(x1)"), n_features=4)
    assert cfg.model == ModelConfig(
        name="cnn", depth=3, width=64, widths=(32, 16), activation="tanh", dropout=0.25,
        channels=(8, 16), kernel=5, pool="max", batch_norm=True, dense=(128, 64),
        conv="im2col")
    assert cfg.optim == OptimConfig(
        name="adamw", learning_rate=3e-4, momentum=0.8, b1=0.85, b2=0.99, eps=1e-7,
        decay=0.95, weight_decay=1e-2, schedule="warmup_cosine", warmup_epochs=1.5,
        decay_rate=0.7, min_lr_ratio=0.1, clip_norm=1.0)
    assert cfg.train == TrainConfig(
        epochs=3, batch_size=64, eval_batch_size=500, loss="cross_entropy", l2=1e-5,
        monitor="val_accuracy", mode="max", patience=2, min_delta=0.001, steps_per_call=4,
        progress=False)
    assert cfg.checkpoint.enabled is False and cfg.checkpoint.every == 2
    # Sequences become tuples, floats are floats, the config is frozen.
    assert isinstance(cfg.model.channels, tuple)
    assert isinstance(cfg.optim.clip_norm, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]


def test_empty_file_gives_defaults(tmp_path):
    assert config.load(write(tmp_path, "")) == Config()


def test_partial_file_keeps_other_defaults(tmp_path):
    cfg = config.load(write(tmp_path, "optim: {learning_rate: 0.1}\n"))
    assert cfg.optim.learning_rate == 0.1
    assert cfg.optim.name == OptimConfig().name
    # monitor: auto is resolved (to val_loss), as clip_norm: auto is.
    assert cfg.model == ModelConfig() and cfg.train == TrainConfig(monitor="val_loss")


def test_int_accepted_for_float(tmp_path):
    cfg = config.load(write(tmp_path, "optim: {learning_rate: 1, weight_decay: 0}\n"))
    assert cfg.optim.learning_rate == 1.0 and isinstance(cfg.optim.learning_rate, float)
    assert isinstance(cfg.optim.weight_decay, float)


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as the *string* "1e-3".
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"
    cfg = config.load(write(tmp_path, "optim: {learning_rate: 1e-3, eps: 1e-10}\n"))
    assert cfg.optim.learning_rate == pytest.approx(1e-3)
    assert cfg.optim.eps == pytest.approx(1e-10)
    assert isinstance(cfg.optim.learning_rate, float)


def test_null_for_optional_fields(tmp_path):
    cfg = config.load(write(tmp_path, """\
        optim: {clip_norm: null}
        train: {patience: null, steps_per_call: null}
        model: {widths: null}
        """))
    assert cfg.optim.clip_norm is None and cfg.train.patience is None
    assert cfg.model.widths is None


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, JaxdlError)


# ------------------------------------------------------------------ bad input


def test_unknown_top_level_key(tmp_path):
    msg = single_problem(tmp_path, "optimizer: {name: sgd}\n")
    assert "optimizer: unknown key" in msg
    assert "did you mean 'optim'" in msg
    for name in ("name", "seed", "data", "model", "optim", "train", "checkpoint"):
        assert name in msg


def test_unknown_nested_key_did_you_mean(tmp_path):
    msg = single_problem(tmp_path, "optim:\n  learning_rat: 0.1\n")
    assert "optim.learning_rat: unknown key" in msg
    assert "did you mean 'learning_rate'" in msg
    assert "valid keys:" in msg and "momentum" in msg


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path):
    msg = single_problem(tmp_path, "train:\n  zzzzzz: 1\n")
    assert "train.zzzzzz: unknown key" in msg
    assert "did you mean" not in msg


@pytest.mark.parametrize(
    ("text", "key", "expected", "bad"),
    [
        ("train: {batch_size: '32'}", "train.batch_size", "int", "'32'"),
        ("train: {batch_size: 32.0}", "train.batch_size", "int", "32.0"),
        ("train: {epochs: 2.5}", "train.epochs", "int", "2.5"),
        ("train: {epochs: true}", "train.epochs", "int", "True"),
        ("seed: [1, 2]", "seed", "int", "[1, 2]"),
        ("optim: {learning_rate: [0.1]}", "optim.learning_rate", "float", "[0.1]"),
        ("optim: {learning_rate: fast}", "optim.learning_rate", "float", "'fast'"),
        ("optim: {learning_rate: true}", "optim.learning_rate", "float", "True"),
        ("checkpoint: {enabled: 1}", "checkpoint.enabled", "bool", "1"),
        ("model: {channels: 16}", "model.channels", "a list of int", "16"),
        ("model: {channels: [16, 2.5]}", "model.channels", "a list of int", "[16, 2.5]"),
        ("model: {channels: '16'}", "model.channels", "a list of int", "'16'"),
        ("model: {activation: 3}", "model.activation", "str", "3"),
        ("train: {patience: 1.5}", "train.patience", "int or null", "1.5"),
    ],
)
def test_wrong_type(tmp_path, text, key, expected, bad):
    msg = single_problem(tmp_path, text + "\n")
    assert f"{key}: expected {expected}, got {bad}" in msg


def test_section_not_a_mapping(tmp_path):
    msg = single_problem(tmp_path, "optim: 3\n")
    assert "optim: expected a mapping, got 3" in msg


@pytest.mark.parametrize(
    ("text", "key", "rule", "bad"),
    [
        ("optim: {learning_rate: -0.1}", "optim.learning_rate", "must be > 0.0", "-0.1"),
        ("optim: {learning_rate: 0}", "optim.learning_rate", "must be > 0.0", "0.0"),
        ("optim: {learning_rate: .inf}", "optim.learning_rate", "must be finite", "inf"),
        ("optim: {learning_rate: .nan}", "optim.learning_rate", "must be finite", "nan"),
        ("model: {dropout: 1.0}", "model.dropout", "must be < 1.0", "1.0"),
        ("model: {dropout: -0.1}", "model.dropout", "must be >= 0.0", "-0.1"),
        ("train: {batch_size: 0}", "train.batch_size", "must be >= 1", "0"),
        ("seed: -1", "seed", "must be >= 0", "-1"),
        ("optim: {b2: 1.0}", "optim.b2", "must be < 1.0", "1.0"),
        ("data: {val_fraction: 1.0}", "data.val_fraction", "must be < 1.0", "1.0"),
        ("model: {channels: [16, 0]}", "model.channels", "must be >= 1", "(16, 0)"),
        ("optim: {clip_norm: 0}", "optim.clip_norm", "must be > 0.0", "0.0"),
    ],
)
def test_out_of_range(tmp_path, text, key, rule, bad):
    msg = single_problem(tmp_path, text + "\n")
    assert f"{key}: {rule}, got {bad}" in msg


@pytest.mark.parametrize(
    ("section", "key", "choices"),
    [
        ("model", "activation", ACTIVATIONS),
        ("model", "name", MODELS),
        ("optim", "name", OPTIMIZERS),
        ("data", "name", DATASETS),
        ("optim", "schedule", SCHEDULES),
    ],
)
def test_unknown_choice_lists_valid_ones(tmp_path, section, key, choices):
    msg = single_problem(tmp_path, f"{section}: {{{key}: bogus}}\n")
    assert f"{section}.{key}: must be one of " in msg
    assert "got 'bogus'" in msg
    for choice in choices:
        assert choice in msg


def test_unknown_list_item_choice(tmp_path):
    msg = single_problem(tmp_path, "data: {features: [x1, x3]}\n")
    assert "data.features: must be one of" in msg and "sin(x1)" in msg


def test_several_problems_all_listed(tmp_path):
    err = load_error(tmp_path, """\
        lr: 0.1
        optim: {learning_rat: 0.1, momentum: fast}
        train: {batch_size: '32', epochs: 1.5}
        """)
    assert len(err.problems) == 5
    msg = str(err)
    assert "5 problems" in msg
    for key in ("lr:", "optim.learning_rat:", "optim.momentum:", "train.batch_size:",
                "train.epochs:"):
        assert key in msg


def test_several_range_problems_all_listed(tmp_path):
    err = load_error(tmp_path, """\
        optim: {learning_rate: -1, name: bogus}
        model: {dropout: 1.0}
        train: {batch_size: 0}
        """)
    assert len(err.problems) == 4
    assert {p.split(":")[0] for p in err.problems} == {
        "optim.learning_rate", "optim.name", "model.dropout", "train.batch_size"}


def test_type_and_range_problems_listed_together(tmp_path):
    err = load_error(tmp_path, """\
        bogus: 1
        optim: {learning_rate: -1}
        train: {batch_size: '32'}
        model: {dropout: 1.5}
        """)
    assert {p.split(":")[0] for p in err.problems} == {
        "bogus", "optim.learning_rate", "train.batch_size", "model.dropout"}


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)
    assert len(info.value.problems) == 1


def test_invalid_yaml(tmp_path):
    msg = single_problem(tmp_path, "optim: {learning_rate: [1, 2\n")
    assert "not valid YAML" in msg


def test_top_level_list(tmp_path):
    msg = single_problem(tmp_path, "- a\n- b\n")
    assert "top level must be a mapping, got list" in msg


def test_top_level_scalar(tmp_path):
    msg = single_problem(tmp_path, "42\n")
    assert "top level must be a mapping, got int" in msg


# ------------------------------------------------------------------ cross-field checks


@pytest.mark.parametrize("monitor", ["loss", "test_loss", "val", "val_", "valloss"])
def test_monitor_format(tmp_path, monitor):
    msg = single_problem(tmp_path, f"train: {{monitor: {monitor}}}\n")
    assert "train.monitor: must be <split>_<metric>" in msg
    assert repr(monitor) in msg


def test_monitor_unknown_metric(tmp_path):
    msg = single_problem(tmp_path, "train: {monitor: val_f1}\n")
    assert "train.monitor: 'val_f1' is not measured for mnist (classification)" in msg
    assert "valid metrics: loss, accuracy" in msg


def test_val_monitor_needs_val_split(tmp_path):
    msg = single_problem(tmp_path, "data: {val_fraction: 0}\ntrain: {monitor: val_loss}\n")
    assert "train.monitor" in msg and "data.val_fraction" in msg
    # ...and monitoring the training split is fine.
    cfg = config.load(write(tmp_path, "data: {val_fraction: 0}\ntrain: {monitor: train_loss}\n",
                            "ok.yaml"))
    assert cfg.train.monitor == "train_loss"


@pytest.mark.parametrize("dataset", ["circle", "xor", "gaussian", "spiral", "linear"])
def test_cnn_needs_image_data(tmp_path, dataset):
    msg = single_problem(tmp_path, f"model: {{name: cnn}}\ndata: {{name: {dataset}}}\n")
    assert "model.name: cnn needs image data" in msg and repr(dataset) in msg


def test_cnn_kernel_and_depth_limits(tmp_path):
    msg = single_problem(tmp_path, "model: {name: cnn, kernel: 29}\n")
    assert "model.kernel" in msg and "29" in msg
    msg = single_problem(tmp_path, "model: {name: cnn, channels: [1, 1, 1, 1, 1]}\n")
    assert "model.channels" in msg
    cfg = config.load(write(tmp_path, "model: {name: cnn, channels: [1, 1, 1, 1, 1], "
                            "pool: none}\n", "ok.yaml"))
    assert len(cfg.model.channels) == 5


def test_mlp_with_non_image_data_is_fine(tmp_path):
    cfg = config.load(write(tmp_path, "data: {name: spiral}\nmodel: {name: mlp}\n"))
    assert cfg.data.name == "spiral"


# ------------------------------------------------------------------ overrides


def test_load_with_overrides(tmp_path):
    path = write(tmp_path, "optim: {learning_rate: 0.1}\nmodel: {name: cnn}\n")
    cfg = config.load(path, ["optim.learning_rate=3e-4", "model.channels=[16,32]", "seed=3",
                             "model.batch_norm=true", "train.patience=null"])
    assert cfg.optim.learning_rate == pytest.approx(3e-4)
    assert cfg.model.channels == (16, 32)
    assert cfg.seed == 3 and cfg.model.batch_norm is True and cfg.train.patience is None
    assert cfg.model.name == "cnn"  # untouched keys from the file survive


def test_load_with_mapping_overrides(tmp_path):
    cfg = config.load(write(tmp_path, ""), {"seed": 5, "optim.name": "sgd"})
    assert cfg.seed == 5 and cfg.optim.name == "sgd"


def test_override_into_absent_section(tmp_path):
    cfg = config.load(write(tmp_path, "seed: 1\n"), ["train.epochs=2"])
    assert cfg.train.epochs == 2


def test_override_bad_value_names_file(tmp_path):
    msg = single_problem(tmp_path, "", ["optim.learning_rate=-1"])
    assert "optim.learning_rate: must be > 0.0" in msg


def test_override_nonexistent_key(tmp_path):
    msg = single_problem(tmp_path, "", ["optim.learning_rat=0.1"])
    assert "optim.learning_rat: no such key" in msg
    assert "did you mean 'optim.learning_rate'" in msg
    msg = single_problem(tmp_path, "", ["bogus.x=1"])
    assert "bogus.x: no such key" in msg


def test_override_through_a_scalar(tmp_path):
    msg = single_problem(tmp_path, "", ["seed.x=1"])
    assert "seed is not a section" in msg


def test_override_a_section(tmp_path):
    msg = single_problem(tmp_path, "", ["optim=3"])
    assert "optim: is a section" in msg


def test_override_without_equals(tmp_path):
    msg = single_problem(tmp_path, "", ["optim.learning_rate"])
    assert "expected key=value" in msg and "'optim.learning_rate'" in msg
    msg = single_problem(tmp_path, "", ["=3"])
    assert "expected key=value" in msg


def test_several_override_problems(tmp_path):
    err = load_error(tmp_path, "", ["nokey", "optim.lr=1", "model=2"])
    assert len(err.problems) == 3


def test_apply_overrides():
    base = Config()
    cfg = config.apply_overrides(base, ["optim.learning_rate=3e-4", "model.channels=[16,32]",
                                        "data.name=spiral"])
    assert cfg.optim.learning_rate == pytest.approx(3e-4)
    assert cfg.model.channels == (16, 32) and cfg.data.name == "spiral"
    assert base == Config()  # unchanged
    assert config.apply_overrides(base, []) == base


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optim.learning_rate"], "expected key=value"),
        (["optim.nope=1"], "optim.nope: no such key"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1"),
        (["train.batch_size=abc"], "train.batch_size: expected int, got 'abc'"),
        (["train=1"], "train: is a section"),
    ],
)
def test_apply_overrides_errors(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        config.apply_overrides(Config(), overrides)
    assert len(info.value.problems) == 1
    assert fragment in str(info.value)


# ------------------------------------------------------------------ replace / get


def test_replace_dotted_keys():
    cfg = Config()
    new = cfg.replace({"optim.learning_rate": 0.01, "model.widths": (8, 4)}, seed=3)
    assert new.optim.learning_rate == 0.01 and new.model.widths == (8, 4) and new.seed == 3
    assert cfg == Config()
    assert new.get("optim.learning_rate") == 0.01
    assert new.get("model") == new.model


@pytest.mark.parametrize(
    ("updates", "fragment"),
    [
        ({"optim.learning_rate": -1.0}, "optim.learning_rate: must be > 0.0"),
        ({"model.dropout": 1.0}, "model.dropout: must be < 1.0"),
        ({"train.batch_size": "8"}, "train.batch_size: expected int"),
        ({"optim.learning_rat": 0.1}, "no such key"),
        ({"model.name": "cnn", "data.name": "xor"}, "cnn needs image data"),
    ],
)
def test_replace_validates(updates, fragment):
    with pytest.raises(ConfigError) as info:
        Config().replace(updates)
    assert fragment in str(info.value)


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="seed: must be >= 0"):
        Config(seed=-1)
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        Config(optim=OptimConfig(learning_rate=0.0))


def test_get_unknown_key():
    with pytest.raises(ConfigError, match="no such key"):
        Config().get("optim.nope")


# ------------------------------------------------------------------ fingerprint


HEX16 = re.compile(r"^[0-9a-f]{16}$")


def test_fingerprint_format_and_stability():
    fp = config.fingerprint(Config())
    assert HEX16.match(fp)
    assert config.fingerprint(Config()) == fp
    assert config.fingerprint(Config()) == config.fingerprint(config.from_dict({}))


def test_fingerprint_independent_of_key_order(tmp_path):
    a = config.load(write(tmp_path, "seed: 1\noptim: {name: sgd, learning_rate: 0.1}\n", "a.yaml"))
    b = config.load(write(tmp_path, "optim: {learning_rate: 0.1, name: sgd}\nseed: 1\n", "b.yaml"))
    assert a == b
    assert config.fingerprint(a) == config.fingerprint(b)


def test_fingerprint_equal_for_equal_configs_built_differently(tmp_path):
    a = config.load(write(tmp_path, "optim: {learning_rate: 1e-2, weight_decay: 0}\n"))
    b = Config().replace({"optim.learning_rate": 0.01})
    assert a == b and config.fingerprint(a) == config.fingerprint(b)


def test_fingerprint_equal_for_equal_directly_built_configs():
    a = Config(optim=OptimConfig(learning_rate=1))
    b = Config(optim=OptimConfig(learning_rate=1.0))
    assert a == b
    assert config.fingerprint(a) == config.fingerprint(b)


def test_fingerprint_ignores_data_dir_and_progress():
    base = Config()
    fp = config.fingerprint(base)
    assert config.fingerprint(base.replace({"data.dir": "/elsewhere"})) == fp
    assert config.fingerprint(base.replace({"train.progress": False})) == fp


@pytest.mark.parametrize(
    "updates",
    [
        {"seed": 1},
        {"name": "other"},
        {"optim.learning_rate": 0.002},
        {"optim.name": "sgd"},
        {"optim.clip_norm": 1.0},
        {"model.depth": 3},
        {"model.widths": (64,)},
        {"model.dropout": 0.1},
        {"data.name": "fashion_mnist"},
        {"data.val_fraction": 0.2},
        {"data.train_limit": 1000},
        {"train.batch_size": 64},
        {"train.l2": 1e-4},
        {"checkpoint.every": 2},
    ],
)
def test_fingerprint_changes_with_any_other_value(updates):
    base = Config()
    assert config.fingerprint(base.replace(updates)) != config.fingerprint(base)


def test_fingerprint_distinct_across_many_values():
    cfgs = [Config().replace({"optim.learning_rate": lr}) for lr in (1e-4, 2e-4, 1e-3, 0.1, 1.0)]
    cfgs += [Config().replace({"seed": s}) for s in range(1, 6)]
    fps = {config.fingerprint(c) for c in cfgs}
    assert len(fps) == len(cfgs)


# ------------------------------------------------------------------ dump / load


def test_dump_load_round_trip_defaults(tmp_path):
    path = tmp_path / "out.yaml"
    text = config.dump(Config(), path)
    assert path.read_text() == text
    assert config.load(path) == Config()


def test_dump_load_round_trip_full(tmp_path):
    cfg = config.load(write(tmp_path, FULL_YAML))
    out = tmp_path / "again.yaml"
    config.dump(cfg, out)
    again = config.load(out)
    assert again == cfg
    assert config.fingerprint(again) == config.fingerprint(cfg)


def test_dump_round_trip_odd_strings(tmp_path):
    cfg = Config().replace({"name": "1e3", "data.name": "spiral",
                            "data.features": list(config.FEATURES)})
    out = tmp_path / "odd.yaml"
    config.dump(cfg, out)
    assert config.load(out) == cfg


def test_to_dict_and_from_dict_round_trip():
    cfg = Config().replace({"model.widths": (3, 2), "optim.name": "sgd"})
    tree = config.to_dict(cfg)
    assert tree["model"]["widths"] == [3, 2]
    assert config.from_dict(tree) == cfg


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(min_value=0.0, max_value=10.0, exclude_min=True, allow_nan=False,
                    allow_subnormal=False))
def test_property_learning_rate_round_trips(tmp_path_factory, lr):
    cfg = Config().replace({"optim.learning_rate": lr})
    assert cfg.optim.learning_rate == lr
    path = tmp_path_factory.mktemp("rt") / "c.yaml"
    config.dump(cfg, path)
    again = config.load(path)
    assert again == cfg
    assert again.optim.learning_rate == lr  # bit-exact
    assert config.fingerprint(again) == config.fingerprint(cfg)
    assert HEX16.match(config.fingerprint(cfg))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    batch=st.integers(min_value=1, max_value=4096),
    dropout=st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False),
    bad_batch=st.integers(max_value=0),
)
def test_property_valid_ints_and_bad_batch(seed, batch, dropout, bad_batch):
    cfg = Config().replace({"seed": seed, "train.batch_size": batch, "model.dropout": dropout})
    assert (cfg.seed, cfg.train.batch_size, cfg.model.dropout) == (seed, batch, dropout)
    assert config.from_dict(config.to_dict(cfg)) == cfg
    with pytest.raises(ConfigError) as info:
        cfg.replace({"train.batch_size": bad_batch})
    assert len(info.value.problems) == 1
    assert f"got {bad_batch}" in str(info.value)


@pytest.mark.parametrize("tree, message", [
    ({"data": {"name": "linear"}, "train": {"monitor": "val_accuracy"}},
     "train.monitor: 'val_accuracy' is not measured for linear (regression); valid metrics: loss"),
    ({"data": {"name": "linear"}, "train": {"loss": "cross_entropy"}},
     "train.loss: 'cross_entropy' does not fit linear (regression)"),
    ({"data": {"name": "mnist"}, "train": {"loss": "bce"}},
     "train.loss: 'bce' does not fit mnist (classification)"),
    ({"data": {"name": "spiral", "features": []}}, "data.features: must name at least one"),
    ({"data": {"name": "spiral", "n_samples": 2, "test_fraction": 0.1}},
     "data.n_samples: 2 examples with test_fraction 0.1 leave an empty train or test split"),
    ({"data": {"name": "spiral", "val_fraction": 0.99}},
     "train.batch_size: 128 is larger than the 5 training examples"),
    ({"data": {"name": "mnist", "train_limit": 100}},
     "train.batch_size: 128 is larger than the 100 training examples"),
    ({"seed": 2**40}, "seed: must be <= 4294967295"),
])
def test_cross_field_problems_are_config_errors(tree, message):
    with pytest.raises(ConfigError) as e:
        config.from_dict(tree, "exp.yaml")
    assert message in str(e.value)


def test_split_sizes_match_what_the_loader_makes():
    from jaxdl import data as data_lib

    for tree in ({"name": "spiral", "n_samples": 401, "test_fraction": 0.3,
                  "val_fraction": 0.15},
                 {"name": "linear", "n_samples": 97, "val_fraction": 0.0},
                 {"name": "xor", "n_samples": 50, "train_limit": 7}):
        cfg = config.from_dict({"data": tree, "train": {"batch_size": 4,
                                                         "monitor": "train_loss"}})
        ds = data_lib.load(cfg.data, 0)
        got = {k: len(v) for k, v in ds.splits().items()}
        want = {k: v for k, v in config.split_sizes(cfg.data).items() if v}
        assert got == want


def test_choice_lists_agree_with_the_implementations():
    from jaxdl import models
    from jaxdl.data import synthetic

    assert set(config.ACTIVATIONS) == set(models.ACTIVATIONS)
    assert set(config.MODELS) == set(models.REGISTRY)
    assert tuple(config.FEATURES) == tuple(synthetic.FEATURES)
    assert set(config.PLAYGROUND_DATASETS) == set(synthetic.PLAYGROUND)
