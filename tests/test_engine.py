"""The compiled training engine: steps, epochs, evaluation, recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl import models, optim
from jaxdl.algorithms.supervised import (
    Engine,
    Task,
    default_steps_per_call,
    init_state,
    make_eval_step,
    make_train_step,
)
from jaxdl.errors import ConfigError
from jaxdl.experiment import build_engine, new_state, run
from jaxdl.loop import run_keys
from tests.helpers import spiral_cfg


def _setup(cfg, steps_per_call=None):
    ds = data_lib.load(cfg.data, cfg.seed)
    model = models.make(cfg.model, ds.outputs)
    steps = len(ds.train) // cfg.train.batch_size
    tx = optim.make(cfg.optim, steps, cfg.train.epochs)
    engine = Engine(model, tx, Task(ds.task), batch_size=cfg.train.batch_size,
                    n_train=len(ds.train), steps_per_call=steps_per_call or steps,
                    eval_batch_size=64)
    state = init_state(model, tx, run_keys(cfg.seed)["init"], jnp.asarray(ds.train.x[:1]),
                       dropout=cfg.model.dropout)
    return ds, engine, state


def test_train_step_shapes_and_loss_decreases():
    cfg = spiral_cfg()
    ds, engine, state = _setup(cfg)
    step = jax.jit(make_train_step(engine.model, engine.tx, Task("binary")))
    xb, yb = jnp.asarray(ds.train.x[:64]), jnp.asarray(ds.train.y[:64])
    losses = []
    for _ in range(200):
        state, m = step(state, (xb, yb), jax.random.key(0))
        losses.append(float(m["loss"]))
    assert set(m) == {"loss", "accuracy"}
    assert m["loss"].dtype == jnp.float32 and m["loss"].shape == ()
    assert int(state.step) == 200
    assert losses[-1] < 0.7 * losses[0]


def test_eval_step_weights_ignore_padding():
    cfg = spiral_cfg()
    ds, engine, state = _setup(cfg)
    eval_step = jax.jit(make_eval_step(engine.model, Task("binary")))
    x, y = ds.val.x[:10], ds.val.y[:10]
    plain = eval_step(state, (jnp.asarray(x), jnp.asarray(y)))
    xp = np.concatenate([x, 100 * np.ones_like(x[:6])])
    yp = np.concatenate([y, 1 - y[:6]])
    w = np.r_[np.ones(10), np.zeros(6)].astype(np.float32)
    padded = eval_step(state, (jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(w)))
    np.testing.assert_allclose(padded["loss"], plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(padded["accuracy"], plain["accuracy"], rtol=1e-6)
    assert float(padded["weight"]) == 10.0


def test_evaluate_matches_numpy_reference():
    cfg = spiral_cfg()
    ds, engine, state = _setup(cfg)
    split = engine.put_eval_split(ds.val.x, ds.val.y)   # 80 examples, batches of 64
    got = engine.evaluate(state, split)
    logits = np.asarray(engine.model.apply({"params": state.params}, jnp.asarray(ds.val.x)))[:, 0]
    y = ds.val.y
    ref_loss = np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))
    ref_acc = np.mean((logits > 0) == (y > 0))
    np.testing.assert_allclose(got["loss"], ref_loss, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], ref_acc, rtol=1e-6)


def test_scanned_epoch_equals_stepwise_epoch():
    cfg = spiral_cfg()
    _, e_scan, s1 = _setup(cfg)
    ds, e_step, s2 = _setup(cfg, steps_per_call=1)
    _, e_chunk, s3 = _setup(cfg, steps_per_call=7)   # 10 steps: a chunk of 7 and a tail of 3
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)
    keys = run_keys(0)
    outs = []
    for engine, state in ((e_scan, s1), (e_step, s2), (e_chunk, s3)):
        for epoch in (1, 2):
            state, m = engine.train_epoch(state, x, y, jax.random.fold_in(keys["shuffle"], epoch),
                                          keys["dropout"])
        outs.append((state, m))
    for state, m in outs[1:]:
        for a, b in zip(jax.tree_util.tree_leaves(outs[0][0].params),
                        jax.tree_util.tree_leaves(state.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
        assert m["loss"] == pytest.approx(outs[0][1]["loss"], rel=1e-4)
    assert e_chunk.traces == {"permutation": 1, "train_chunk[7]": 1, "train_chunk[3]": 1}


def test_progress_reports_from_inside_a_scanned_epoch_do_not_change_numbers():
    cfg = spiral_cfg(**{"model.dropout": 0.1})
    ds, engine, s1 = _setup(cfg)
    _, _, s2 = _setup(cfg)
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)
    keys = run_keys(0)
    engine.progress_every = 3
    seen = []
    s1, m1 = engine.train_epoch(s1, x, y, keys["shuffle"], keys["dropout"],
                                on_progress=lambda done, m: seen.append((done, sorted(m))))
    s2, m2 = engine.train_epoch(s2, x, y, keys["shuffle"], keys["dropout"])
    # Reports at steps 3, 6, 9 from inside the scan, then 10 after the call.
    assert [d for d, _ in seen] == [3, 6, 9, 10]
    assert all(names == ["accuracy", "loss"] for _, names in seen)
    assert m1 == m2
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_recompile_across_epochs_and_hyperparameter_values(tmp_path):
    cfg = spiral_cfg(**{"model.dropout": 0.1, "train.epochs": 2, "checkpoint.enabled": False})
    r1 = run(cfg, workdir=tmp_path / "a", quiet=True)
    ds = data_lib.load(cfg.data, cfg.seed)
    engine = build_engine(cfg, ds)
    traces, compile_s = dict(engine.traces), engine.compile_seconds
    assert traces["train_chunk[10]"] == 1  # one trace for two epochs
    cfg2 = cfg.replace({"optim.learning_rate": 0.003, "model.dropout": 0.3, "train.l2": 0.0,
                        "seed": 5, "optim.b1": 0.8})
    r2 = run(cfg2, workdir=tmp_path / "b", quiet=True)
    assert build_engine(cfg2, ds) is engine
    assert engine.traces == traces
    assert engine.compile_seconds == compile_s
    assert r2.summary["compile_seconds"] == 0.0
    assert r1.summary["final"]["val"] != r2.summary["final"]["val"]
    # The injected values are the second run's, not the first's.
    hp = r2.state.opt_state.hyperparams
    assert float(hp["learning_rate"]) == pytest.approx(0.003)
    assert float(r2.state.hparams["dropout"]) == pytest.approx(0.3)


def test_a_run_without_dropout_compiles_no_masks():
    """build_engine compiles the masks in only for a rate above 0: rates
    above 0 share one engine, a rate of 0 gets a step without masks that
    trains to the same numbers as the step with them (skipped at run time)."""
    cfg = spiral_cfg(**{"train.epochs": 1})
    ds = data_lib.load(cfg.data, cfg.seed)
    off = build_engine(cfg, ds)
    on = build_engine(cfg.replace({"model.dropout": 0.1}), ds)
    assert (off.dropout, on.dropout) == (False, True)
    assert build_engine(cfg.replace({"model.dropout": 0.4}), ds) is on
    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y)
    state = new_state(cfg, off, ds)
    keys = run_keys(0)
    perm = off._permutation_fn(keys["shuffle"])
    n = off.steps_per_epoch

    def program(engine):
        return str(jax.make_jaxpr(engine._chunk_fn(n, False))(
            state, x, y, perm, jnp.int32(0), keys["dropout"]))

    assert "random_bits[" not in program(off) and "random_bits[" in program(on)
    s_off, m_off = off.train_epoch(state, x, y, keys["shuffle"], keys["dropout"])
    s_on, m_on = on.train_epoch(new_state(cfg, off, ds), x, y, keys["shuffle"], keys["dropout"])
    assert m_off == pytest.approx(m_on, rel=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s_off.params),
                    jax.tree_util.tree_leaves(s_on.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    cfg = spiral_cfg(**{"model.dropout": 0.2, "checkpoint.enabled": False})
    a = run(cfg, workdir=tmp_path / "a", quiet=True)
    b = run(cfg, workdir=tmp_path / "b", quiet=True)
    c = run(cfg.replace(seed=1), workdir=tmp_path / "c", quiet=True)
    for x, y in zip(jax.tree_util.tree_leaves(a.state.params),
                    jax.tree_util.tree_leaves(b.state.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.summary["final"] == b.summary["final"]
    assert a.summary["final"] != c.summary["final"]


def test_batch_larger_than_dataset_is_a_clear_error():
    with pytest.raises(ConfigError, match="train.batch_size: 10000 is larger than the 160"):
        spiral_cfg(**{"train.batch_size": 10_000})
    cfg = spiral_cfg()
    model = models.make(cfg.model, 1)
    with pytest.raises(ValueError, match="batch size 500 is larger than the 160 training"):
        Engine(model, optim.make(cfg.optim, 1, 1), Task("binary"), batch_size=500, n_train=160,
               steps_per_call=1, eval_batch_size=10)


def test_default_steps_per_call_policy():
    assert default_steps_per_call("mlp", "cpu", 421) == 421
    assert default_steps_per_call("cnn", "cpu", 421, conv="xla") == 1
    assert default_steps_per_call("cnn", "cpu", 421, conv="im2col") == 421
    assert default_steps_per_call("cnn", "gpu", 421, conv="xla") == 421


def test_new_state_injects_this_configs_hyperparameters():
    cfg = spiral_cfg()
    ds = data_lib.load(cfg.data, cfg.seed)
    engine = build_engine(cfg, ds)
    state = new_state(cfg.replace({"optim.learning_rate": 0.123, "train.l2": 0.0}), engine, ds)
    assert float(state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.123)
