"""Populations: stack/unstack, a population epoch equals its members trained
alone, NaN isolation, slot refill without recompiling, and same-shape
checks. Tolerance for "equal": rtol 1e-4 / atol 1e-6 on parameters and
1e-4 on metrics (vmapped matmuls may sum in another order)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import config, population
from jaxdl.errors import ConfigError
from tests.helpers import spiral_cfg
from tests.rl.test_rl_run import tiny_ppo


def cfgs(*overrides):
    base = spiral_cfg(**{"train.epochs": 3, "checkpoint.enabled": False})
    return [base.replace(o) for o in overrides]


def test_stack_unstack_round_trip():
    states = [{"w": jnp.full((2, 3), float(i)), "n": jnp.asarray(i)} for i in range(4)]
    stacked = population.stack(states)
    assert stacked["w"].shape == (4, 2, 3) and stacked["n"].shape == (4,)
    for a, b in zip(population.unstack(stacked), states, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
        assert int(a["n"]) == int(b["n"])


def test_members_equal_the_same_configs_trained_alone(tmp_path):
    members = cfgs({"optim.learning_rate": 0.003}, {"optim.learning_rate": 0.03, "seed": 1},
                   {"model.dropout": 0.2, "seed": 2})
    results = population.train(members)
    for cfg, res in zip(members, results, strict=True):
        alone = jaxdl.run(cfg, workdir=tmp_path / f"alone-{cfg.seed}-{cfg.optim.learning_rate}",
                          quiet=True)
        assert res.status == alone.status == "completed"
        for split in ("train", "val"):
            for k, v in alone.summary["final"][split].items():
                assert res.final[split][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (split, k)
        np.testing.assert_allclose(
            jax.tree.leaves(res.state.params)[0],
            jax.tree.leaves(jax.device_get(alone.state).params)[0], rtol=1e-4, atol=1e-6)


def test_a_diverging_member_is_isolated(tmp_path):
    relu_sgd = {"model.activation": "relu", "optim.name": "sgd"}
    members = cfgs({**relu_sgd, "optim.learning_rate": 0.05},
                   {**relu_sgd, "optim.learning_rate": 1e12})
    assert jaxdl.run(members[1], workdir=tmp_path / "bad", quiet=True).status == "diverged"
    good_alone = population.train(members[:1])[0]
    good, bad = population.train(members)
    assert bad.status == "diverged" and good.status == "completed"
    assert good.final["val"]["accuracy"] == pytest.approx(good_alone.final["val"]["accuracy"],
                                                          abs=1e-6)
    # The diverged member is back at its state before the epoch it diverged in.
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(bad.state.params))


def test_slot_refill_does_not_recompile():
    from jaxdl import data as data_lib
    from jaxdl import experiment

    cfg = cfgs({})[0]
    dataset = data_lib.load(cfg.data, cfg.seed)
    engine = experiment.build_engine(cfg, dataset)
    pop = population.Population(engine, 3)
    states = population.stack([experiment.new_state(cfg.replace(seed=s), engine, dataset)
                               for s in range(3)])
    x, y = jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)
    keys = jax.random.split(jax.random.key(0), 3)
    alive = jnp.ones((3,), bool)
    states, alive, _ = pop.train_epoch(states, alive, x, y, keys, keys)
    fresh = experiment.new_state(cfg.replace(seed=9, **{"optim.learning_rate": 0.05}), engine,
                                 dataset)
    for slot in (0, 2, 1):
        states = pop.put(states, slot, fresh)
        states, alive, _ = pop.train_epoch(states, alive, x, y, keys, keys)
    assert pop.traces == {f"epoch[{engine.steps_per_epoch}]": 1, "put": 1}
    assert int(population.member(states, 1).step) == engine.steps_per_epoch


def test_a_population_without_dropout_compiles_no_masks():
    """dropout=False (no member may draw masks: what a sweep without
    model.dropout in its space builds) leaves the masks out of the epoch
    program and refuses a member with a rate; the default draws them only
    in a cond on whether a live member has a rate."""
    from jaxdl import data as data_lib
    from jaxdl import experiment

    cfg = cfgs({})[0]
    dataset = data_lib.load(cfg.data, cfg.seed)
    engine = experiment.build_engine(cfg, dataset)
    states = population.stack([experiment.new_state(cfg, engine, dataset)] * 2)
    x, y = jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)
    keys = jax.random.split(jax.random.key(0), 2)
    args = (states, jnp.ones((2,), bool), x, y, keys, jnp.int32(0), keys)

    def program(pop):
        return str(jax.make_jaxpr(pop._epoch_fn(engine.steps_per_epoch))(*args))

    off, on = population.Population(engine, 2, dropout=False), population.Population(engine, 2)
    # random bits: the epoch's shuffle, and the dropout masks
    assert program(off).count("random_bits[") == 1 and "cond[" not in program(off)
    assert program(on).count("random_bits[") >= 2 and "cond[" in program(on)
    dropping = experiment.new_state(cfg.replace({"model.dropout": 0.3}), engine, dataset)
    with pytest.raises(ConfigError, match=r"model.dropout: 0.3 in a population built with "
                                          r"dropout=False \(its masks are compiled out\)"):
        off.put(states, 0, dropping)
    on.put(states, 0, dropping)


def test_configs_of_different_shapes_are_a_clear_error():
    with pytest.raises(ConfigError, match=r"model.width: 16 in config 0, 64 in config 1 \(a "
                                          r"shape or structure"):
        population.train(cfgs({}, {"model.width": 64}))
    with pytest.raises(ConfigError, match="optim.name: 'adam' in config 0, 'sgd' in config 2"):
        population.check_same_shape(cfgs({}, {"seed": 3}, {"optim.name": "sgd"}))
    with pytest.raises(ConfigError, match="config 1 is ppo, config 0 supervised; a population "
                                          "trains one algorithm"):
        population.check_same_shape([cfgs({})[0], config.from_dict({"algorithm": "ppo"})])
    with pytest.raises(ConfigError, match=r"rl.width: 16 in config 0, 32 in config 1 \(a shape"):
        population.check_same_shape([tiny_ppo(), tiny_ppo(**{"rl.width": 32})])


def test_ppo_members_equal_their_runs_alone(tmp_path):
    """Learning rate, entropy coefficient and clip range per member: each
    member's agents match its own 2-agent run."""
    members = [tiny_ppo(), tiny_ppo(**{"ppo.learning_rate": 3e-3, "ppo.ent_coef": 0.05,
                                       "ppo.clip_eps": 0.1, "seed": 4})]
    population.check_same_shape(members)
    seen = []
    results = population.train(members, lambda i, epoch, m: seen.append((i, epoch)) or False)
    assert sorted(seen) == [(i, e) for i in range(2) for e in (1, 2, 3)]
    for cfg, res in zip(members, results, strict=True):
        alone = jaxdl.run(cfg, workdir=tmp_path / f"alone-{cfg.seed}", quiet=True)
        assert res.status == alone.status == "completed"
        for k, v in alone.summary["final"]["val"].items():
            assert res.final["val"][k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
        for k in ("policy_loss", "value_loss", "entropy"):
            assert res.final["train"][k] == pytest.approx(alone.summary["final"]["train"][k],
                                                          rel=1e-3, abs=1e-5), k
        np.testing.assert_allclose(
            jax.tree.leaves(res.state.params)[0],
            jax.tree.leaves(jax.device_get(alone.state).params)[0], rtol=1e-4, atol=1e-5)
    # The members really trained differently.
    assert results[0].final["train"]["entropy"] != results[1].final["train"]["entropy"]


def _cnn(mnist_dir):
    return config.load("experiments/mnist_cnn.yaml", [
        "train.epochs=1", "train.progress=false", "data.train_limit=512",
        "data.val_fraction=0.25", "train.eval_batch_size=500", "model.channels=[4,8]",
        "model.dense=[16]", "checkpoint.enabled=false", "train.batch_size=64"])


def _lstm(shakespeare_dir):
    from tests.test_sequence import lm_cfg

    return lm_cfg(**{"checkpoint.enabled": False})


@pytest.mark.parametrize("make,fixture", [(_cnn, "mnist_dir"), (_lstm, "shakespeare_dir")])
def test_cnn_and_lstm_members_equal_their_runs_alone(tmp_path, request, make, fixture):
    base = make(request.getfixturevalue(fixture))
    members = [base, base.replace({"optim.learning_rate": base.optim.learning_rate / 3})]
    results = population.train(members)
    for i, (cfg, res) in enumerate(zip(members, results, strict=True)):
        alone = jaxdl.run(cfg, workdir=tmp_path / f"alone-{i}", quiet=True)
        for k, v in alone.summary["final"]["val"].items():
            assert res.final["val"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (k, i)
    assert results[0].final["train"]["loss"] != results[1].final["train"]["loss"]


_SHARDED = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax
sys.path.insert(0, os.getcwd())
from jaxdl import data, experiment, population
from tests.test_population import sharded_cfgs

cfgs = sharded_cfgs()
res = population.train(cfgs)
cfg = cfgs[0]
ds = data.load(cfg.data, cfg.seed)
pop = population.Population(experiment.build_engine(cfg, ds), 4)
states = pop.place(population.stack([experiment.new_state(c, pop.engine, ds) for c in cfgs]))
leaf = jax.tree.leaves(states.params)[0]
print(json.dumps({"devices": len(pop.devices), "shards": len(leaf.addressable_shards),
                  "shard_rows": leaf.addressable_shards[0].data.shape[0],
                  "val": [r.final["val"]["accuracy"] for r in res],
                  "loss": [r.final["train"]["loss"] for r in res]}))
"""


def sharded_cfgs():
    return cfgs(*({"optim.learning_rate": lr} for lr in (0.003, 0.01, 0.03, 0.05)))


def test_members_split_over_four_devices_equal_one_device():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                         timeout=600, cwd=str(__import__("tests.helpers").helpers.REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4 and got["shards"] == 4 and got["shard_rows"] == 1
    one = population.train(sharded_cfgs())        # this process: one CPU device
    assert got["val"] == pytest.approx([r.final["val"]["accuracy"] for r in one], abs=1e-6)
    assert got["loss"] == pytest.approx([r.final["train"]["loss"] for r in one], rel=1e-5)
