"""Sweep specs: the shipped files load, and every kind of bad input is named."""

from pathlib import Path

import pytest
import yaml

from jaxdl import sweep
from jaxdl.errors import ConfigError
from jaxdl.sweep.spec import from_dict
from tests.helpers import REPO

BASE = {"name": "t", "data": {"name": "spiral", "n_samples": 400, "val_fraction": 0.2},
        "model": {"name": "mlp", "depth": 1, "width": 8},
        "train": {"epochs": 2, "batch_size": 16}}


def spec_tree(**top):
    tree = {"name": "t", "base": BASE,
            "space": {"optim.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1,
                                              "log": True}}}
    tree.update(top)
    return tree


def problems(tree) -> str:
    with pytest.raises(ConfigError) as e:
        from_dict(tree, source="s.yaml")
    assert str(e.value).startswith("s.yaml")
    return str(e.value)


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_load_and_say_how_to_run(path):
    spec = sweep.load(path)
    assert spec.space
    head = path.read_text().splitlines()[:6]
    assert any(line.startswith("# Command:") for line in head)
    assert any(line.startswith("# Expected:") for line in head)
    assert any(line.startswith("# Time:") for line in head)


def test_mnist_sweep_searches_the_five_hyperparameters():
    spec = sweep.load(REPO / "sweeps" / "mnist_mlp.yaml")
    keys = {p.key for p in spec.space}
    assert keys == {"optim.learning_rate", "train.batch_size", "model.depth", "model.width",
                    "model.dropout"}
    lr = next(p for p in spec.space if p.key == "optim.learning_rate")
    assert lr.log
    assert spec.metric == "val_accuracy" and spec.direction == "maximize"
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"
    assert spec.base.data.name == "mnist"   # base path is relative to the sweep file
    assert spec.base.train.epochs == 8      # `set:` applied


def test_defaults_and_derived_values():
    spec = from_dict(spec_tree())
    assert spec.metric == "val_loss" and spec.direction == "minimize"   # base's monitor
    assert spec.directory == Path("studies") / "t"
    assert spec.storage is None and spec.workers == 1 and not spec.keep_all
    cfg = spec.trial_config({"optim.learning_rate": 0.05})
    assert cfg.optim.learning_rate == 0.05
    assert cfg.train.monitor == "val_loss" and cfg.train.mode == "min"
    acc = from_dict(spec_tree(objective={"metric": "val_accuracy"}))
    assert acc.direction == "maximize" and acc.trial_config({}).train.mode == "max"


@pytest.mark.parametrize("tree_update, expected", [
    ({"budjet": {"trials": 3}}, "budjet: unknown key (did you mean 'budget'?)"),
    ({"sampler": {"name": "tpe", "sed": 1}}, "sampler.sed: unknown key (did you mean 'seed'?)"),
    ({"sampler": {"name": "bayes"}}, "sampler.name: must be one of tpe, random, cmaes, grid"),
    ({"pruner": {"name": "median", "n_warmup_steps": -1}}, "pruner.n_warmup_steps: must be >= 0"),
    ({"budget": {"trials": 0}}, "budget.trials: must be >= 1"),
    ({"workers": 0}, "workers: must be an integer >= 1"),
    ({"keep_all": "yes"}, "keep_all: expected true or false"),
    ({"storage": 5}, "storage: expected a URL string"),
    ({"name": "a/b"}, "name: must be a non-empty study name without slashes"),
])
def test_bad_sections(tree_update, expected):
    assert expected in problems(spec_tree(**tree_update))


@pytest.mark.parametrize("space, expected", [
    ({"optim.learning_rate": {"type": "float", "low": 0.1, "high": 0.01}},
     "space.optim.learning_rate: empty range, low 0.1 > high 0.01"),
    ({"optim.learning_rate": {"type": "float", "low": 0.1, "high": 0.1}},
     "a fixed value belongs under `set:`"),
    ({"optim.learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
     "space.optim.learning_rate: log scale needs low > 0, got low 0.0"),
    ({"model.depth": {"type": "int", "low": -2, "high": 3, "log": True}},
     "log scale needs low > 0"),
    ({"optim.learning_rat": {"type": "float", "low": 0.1, "high": 0.2}},
     "space.optim.learning_rat: no such key (did you mean 'optim.learning_rate'?)"),
    ({"model.depht": {"type": "int", "low": 1, "high": 2}}, "did you mean 'model.depth'?"),
    ({"optim": {"type": "float", "low": 0.1, "high": 0.2}}, "optim: is a section"),
    ({"train.monitor": {"type": "categorical", "choices": ["val_loss"]}},
     "space.train.monitor: set by the sweep itself"),
    ({"model.width": {"type": "normal", "low": 1, "high": 2}},
     "space.model.width.type: must be one of float, int, categorical, got 'normal'"),
    ({"model.width": {"type": "int", "low": 1, "high": 2, "choices": [1]}},
     "space.model.width.choices: unknown key for a int distribution"),
    ({"model.width": {"type": "int", "low": 1.5, "high": 2}},
     "space.model.width.low: expected an integer, got 1.5"),
    ({"model.width": {"type": "int", "low": 8, "high": 64, "step": 10}},
     "step 10 does not divide high - low = 56"),
    ({"optim.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True,
                              "step": 0.01}}, "step and log cannot be combined"),
    ({"optim.learning_rate": {"type": "float", "low": 1.0, "high": 8.0, "log": True,
                              "step": 1.0}}, "step and log cannot be combined"),
    ({"train.batch_size": {"type": "categorical", "choices": []}},
     "space.train.batch_size.choices: must be a non-empty list"),
    ({"train.batch_size": {"type": "categorical", "choices": [16, 16]}}, "16 is listed twice"),
    ({"model.depth": {"type": "float", "low": 1, "high": 3}},
     "space.model.depth: is an integer setting; use type: int"),
    ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}},
     "space.model.dropout: value 1.0 makes an invalid config: model.dropout: must be < 1.0"),
    ({"train.batch_size": {"type": "categorical", "choices": [16, 100000]}},
     "value 100000 makes an invalid config: train.batch_size: 100000 is larger than"),
    ({"model.activation": {"type": "categorical", "choices": ["relu", "swish"]}},
     "value 'swish' makes an invalid config"),
    ({}, "space: must map at least one dotted config key"),
])
def test_bad_search_spaces(space, expected):
    assert expected in problems(spec_tree(space=space))


def test_all_problems_in_one_error():
    msg = problems(spec_tree(budjet={}, space={
        "optim.learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True},
        "model.depht": {"type": "int", "low": 1, "high": 2}}))
    assert "3 problems" in msg
    assert "budjet" in msg and "log scale" in msg and "model.depht" in msg


@pytest.mark.parametrize("objective, expected", [
    ({"metric": "val_f1"}, "objective: train.monitor: 'val_f1' is not measured for spiral"),
    ({"metric": "val_loss", "direction": "maximize"},
     "would treat a worse loss as better"),
    ({"metric": "test_accuracy"},
     "train.monitor: must be <split>_<metric> with split train or val"),
    ({"value": "mean"}, "objective.value: must be one of best, last"),
])
def test_bad_objectives(objective, expected):
    assert expected in problems(spec_tree(objective=objective))


def test_budget_and_heartbeat_checks():
    assert "budget: set trials or timeout" in problems(spec_tree(budget={"trials": None}))
    from_dict(spec_tree(budget={"trials": None, "timeout": 60}))
    msg = problems(spec_tree(heartbeat={"interval": 10, "grace": 15}))
    assert "heartbeat.grace: 15 s must be at least 2 x interval (20 s)" in msg


def test_sampler_needs():
    msg = problems(spec_tree(sampler={"name": "grid"}))
    assert "the grid sampler needs a finite set of values" in msg
    msg = problems(spec_tree(sampler={"name": "cmaes"}, space={
        "train.batch_size": {"type": "categorical", "choices": [8, 16]}}))
    assert "cmaes cannot sample categorical params (train.batch_size)" in msg
    grid = from_dict(spec_tree(sampler={"name": "grid"}, space={
        "model.width": {"type": "int", "low": 8, "high": 32, "step": 8},
        "train.batch_size": {"type": "categorical", "choices": [8, 16]}}))
    assert grid.sampler.name == "grid"


def test_base_problems(tmp_path):
    assert "base: missing" in problems({"name": "t", "space": {}})
    msg = problems(spec_tree(base={**BASE, "model": {"name": "mlp", "depht": 2}}))
    assert "base (<inline>): model.depht: unknown key" in msg
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(spec_tree(base="nothere.yaml")))
    with pytest.raises(ConfigError, match="base: cannot read .*nothere.yaml"):
        sweep.load(tmp_path / "sw.yaml")
    msg = problems(spec_tree(set={"train.epoks": 3}))
    assert "set.train.epoks: no such key (did you mean 'train.epochs'?)" in msg
    msg = problems(spec_tree(set={"train.epochs": 0}))
    assert "train.epochs: must be >= 1" in msg


def test_base_path_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.yaml").write_text(yaml.safe_dump(
        spec_tree(base="../exp/base.yaml", set={"train.epochs": 5})))
    spec = sweep.load(tmp_path / "sweeps" / "s.yaml")
    assert spec.base.train.epochs == 5 and spec.base.data.name == "spiral"
    assert spec.base_source.endswith("base.yaml")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        sweep.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("space: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        sweep.load(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        sweep.load(tmp_path / "list.yaml")


def test_overrides_like_the_cli_options():
    spec = from_dict(spec_tree())
    new = spec.replace({"budget.trials": 7, "budget.timeout": 60.0, "storage": "journal",
                        "name": "other", "workers": 2, "sampler.seed": 5, "train.epochs": 4,
                        "pruner.name": "none"})
    assert new.budget.trials == 7 and new.budget.timeout == 60.0
    assert new.storage == "journal" and new.name == "other" and new.workers == 2
    assert new.sampler.seed == 5 and new.base.train.epochs == 4 and new.pruner.name == "none"
    assert new.space == spec.space
    with pytest.raises(ConfigError, match="budjet.trials: unknown key"):
        spec.replace({"budjet.trials": 3})
    with pytest.raises(ConfigError, match="budget.trials: must be >= 1"):
        spec.replace({"budget.trials": 0})
    with pytest.raises(ConfigError, match="train.epoks: no such key"):
        spec.replace({"train.epoks": 3})


def test_base_fingerprint_tracks_base_and_objective_only():
    spec = from_dict(spec_tree())
    same = spec.replace({"budget.trials": 99, "sampler.name": "random"})
    assert same.base_fingerprint() == spec.base_fingerprint()
    assert spec.replace({"train.epochs": 3}).base_fingerprint() != spec.base_fingerprint()
    assert spec.replace({"objective.metric": "val_accuracy"}).base_fingerprint() != \
        spec.base_fingerprint()
