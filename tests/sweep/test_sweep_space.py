"""Search-space translation into Optuna, distribution by distribution."""

import math

import optuna
import pytest

from jaxdl.sweep import space as space_lib
from jaxdl.sweep.space import Param


def parse(key, tree):
    param, problems = space_lib.parse(key, tree)
    assert not problems, problems
    return param


SPACE = [
    parse("optim.learning_rate", {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}),
    parse("model.dropout", {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}),
    parse("model.depth", {"type": "int", "low": 1, "high": 3}),
    parse("model.width", {"type": "int", "low": 32, "high": 256, "step": 32}),
    parse("model.channels", {"type": "categorical", "choices": [[16, 32], [32, 64]]}),
    parse("train.batch_size", {"type": "categorical", "choices": [16, 32, 64]}),
]


def test_parse_normalises_numbers():
    lr = parse("optim.learning_rate", {"type": "float", "low": "1e-4", "high": 1, "log": True})
    assert lr == Param("optim.learning_rate", "float", low=1e-4, high=1.0, log=True)
    assert isinstance(lr.high, float)
    d = parse("model.depth", {"type": "int", "low": 1, "high": 3})
    assert d.step == 1 and not d.log
    c = SPACE[4]
    assert c.choices == ((16, 32), (32, 64))


def test_each_distribution_maps_to_optunas():
    dists = space_lib.distributions(SPACE)
    assert dists["optim.learning_rate"] == optuna.distributions.FloatDistribution(
        1e-4, 1e-1, log=True)
    assert dists["model.dropout"] == optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1)
    assert dists["model.depth"] == optuna.distributions.IntDistribution(1, 3)
    assert dists["model.width"] == optuna.distributions.IntDistribution(32, 256, step=32)
    assert dists["train.batch_size"] == optuna.distributions.CategoricalDistribution(
        [16, 32, 64])
    assert dists["model.channels"] == optuna.distributions.CategoricalDistribution(
        ["[16, 32]", "[32, 64]"])


def test_suggest_with_a_fixed_trial_returns_those_values():
    fixed = {"optim.learning_rate": 3e-3, "model.dropout": 0.2, "model.depth": 2,
             "model.width": 96, "model.channels": "[32, 64]", "train.batch_size": 32}
    got = space_lib.suggest(optuna.trial.FixedTrial(fixed), SPACE)
    assert got == {**fixed, "model.channels": (32, 64)}


def test_suggest_with_a_seeded_sampler_stays_in_the_space_and_registers_it():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(40):
        trial = study.ask()
        got = space_lib.suggest(trial, SPACE)
        study.tell(trial, 0.0)
        seen.append(got)
        assert 1e-4 <= got["optim.learning_rate"] <= 1e-1
        assert any(math.isclose(got["model.dropout"], v) for v in (0, .1, .2, .3, .4, .5))
        assert got["model.depth"] in (1, 2, 3)
        assert got["model.width"] % 32 == 0 and 32 <= got["model.width"] <= 256
        assert got["model.channels"] in ((16, 32), (32, 64))
        assert got["train.batch_size"] in (16, 32, 64)
    frozen = study.trials[0]
    assert frozen.distributions == space_lib.distributions(SPACE)
    # Log scale: about half the draws fall below the geometric midpoint.
    low = sum(s["optim.learning_rate"] < math.sqrt(1e-4 * 1e-1) for s in seen)
    assert 10 <= low <= 30
    decoded = space_lib.decode_params(frozen.params, SPACE)
    assert decoded == seen[0]
    # Same seed, same proposals.
    again = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    t = again.ask()
    assert space_lib.suggest(t, SPACE) == seen[0]


def test_grid():
    grid, problems = space_lib.grid(SPACE[1:])
    assert not problems
    assert grid["model.depth"] == [1, 2, 3]
    assert grid["model.width"] == list(range(32, 257, 32))
    assert grid["model.dropout"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert grid["model.channels"] == ["[16, 32]", "[32, 64]"]
    _, problems = space_lib.grid(SPACE[:1])
    assert "the grid sampler needs a finite set of values" in problems[0]


def test_describe():
    assert SPACE[0].describe() == "float in [0.0001, 0.1], log"
    assert SPACE[3].describe() == "int in [32, 256], step 32"
    assert SPACE[5].describe() == "one of [16, 32, 64]"
