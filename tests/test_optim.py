"""Tests for jaxdl.optim: update rules by hand, schedules, clipping, injected
hyperparameters and the no-recompile promise."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import optim
from jaxdl.config import OptimConfig

P0 = np.array([1.0, -1.5, 0.5], np.float32)
GRADS = np.array([[0.1, 0.2, -0.3], [-0.5, 0.1, 0.4], [0.3, -0.3, 0.0]], np.float32)


def run(cfg: OptimConfig, grads=GRADS, p0=P0, steps_per_epoch=10, epochs=1):
    """Apply ``len(grads)`` updates in one jitted call.

    Returns (params after each step [steps, n], learning rate before each step
    per :func:`optim.learning_rate`, final state).
    """
    tx = optim.make(cfg, steps_per_epoch, epochs)

    @jax.jit
    def go(p, gs):
        state = tx.init(p)
        ps, lrs = [], []
        for g in gs:
            lrs.append(optim.learning_rate(state, cfg))
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
            ps.append(p)
        return jnp.stack(ps), jnp.stack(lrs), state

    ps, lrs, state = go(p0, grads)
    return np.asarray(ps, np.float64), np.asarray(lrs, np.float64), state


# ------------------------------------------------------------------ numpy references
# All in float64; g' is the gradient after coupled weight decay.


def ref_sgd(lr, wd, p, grads):
    out = []
    for g in grads:
        p = p - lr * (g + wd * p)  # p -= lr * (g + wd p)
        out.append(p)
    return np.array(out)


def ref_momentum(lr, m, wd, p, grads, nesterov=False):
    v = np.zeros_like(p)
    out = []
    for g in grads:
        g = g + wd * p  # coupled decay
        v = g + m * v  # optax.trace: v = g + m v
        step = g + m * v if nesterov else v  # nesterov: update = g + m v_new
        p = p - lr * step
        out.append(p)
    return np.array(out)


def ref_rmsprop(lr, decay, eps, wd, p, grads):
    nu = np.zeros_like(p)
    out = []
    for g in grads:
        g = g + wd * p
        nu = decay * nu + (1 - decay) * g**2
        p = p - lr * g / np.sqrt(nu + eps)  # optax scale_by_rms: eps inside the sqrt
        out.append(p)
    return np.array(out)


def ref_adam(lr, b1, b2, eps, wd, p, grads, decoupled=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        if not decoupled:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        mhat = m / (1 - b1**t)
        vhat = v / (1 - b2**t)
        update = mhat / (np.sqrt(vhat) + eps)
        if decoupled:
            update = update + wd * p  # adamw: p -= lr (adam + wd p)
        p = p - lr * update
        out.append(p)
    return np.array(out)


P64 = P0.astype(np.float64)
G64 = GRADS.astype(np.float64)


def expected(cfg: OptimConfig) -> np.ndarray:
    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.name == "sgd":
        return ref_sgd(lr, wd, P64, G64)
    if cfg.name in ("momentum", "nesterov"):
        return ref_momentum(lr, cfg.momentum, wd, P64, G64, nesterov=cfg.name == "nesterov")
    if cfg.name == "rmsprop":
        return ref_rmsprop(lr, cfg.decay, cfg.eps, wd, P64, G64)
    return ref_adam(lr, cfg.b1, cfg.b2, cfg.eps, wd, P64, G64, decoupled=cfg.name == "adamw")


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_updates_match_hand_computation(name, weight_decay):
    cfg = OptimConfig(name=name, learning_rate=0.1, momentum=0.8, b1=0.9, b2=0.99, eps=1e-6,
                      decay=0.9, weight_decay=weight_decay)
    ps, lrs, state = run(cfg)
    np.testing.assert_allclose(ps, expected(cfg), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lrs, 0.1, rtol=1e-6)
    assert ps.shape == (3, 3)
    assert int(state.count) == 3


def test_sgd_first_step_by_hand():
    # p = [1, -1.5, 0.5], g = [0.1, 0.2, -0.3], lr 0.1, wd 0.1:
    # g' = g + 0.1 p = [0.2, 0.05, -0.25]; p - 0.1 g' = [0.98, -1.505, 0.525]
    cfg = OptimConfig(name="sgd", learning_rate=0.1, weight_decay=0.1)
    ps, _, _ = run(cfg, grads=GRADS[:1])
    np.testing.assert_allclose(ps[0], [0.98, -1.505, 0.525], rtol=1e-6)


def test_adam_first_step_is_lr_times_sign():
    # With bias correction, mhat = g and vhat = g^2 at t = 1, so the update is
    # lr * g / (|g| + eps) ~= lr * sign(g).
    cfg = OptimConfig(name="adam", learning_rate=0.01)
    ps, _, _ = run(cfg, grads=GRADS[:1])
    np.testing.assert_allclose(ps[0] - P64, -0.01 * np.sign(G64[0]), rtol=1e-5)


def test_adamw_decay_is_decoupled_from_the_moments():
    # Zero gradients: adam's part is 0, so only p -= lr * wd * p remains.
    cfg = OptimConfig(name="adamw", learning_rate=0.1, weight_decay=0.5)
    ps, _, _ = run(cfg, grads=np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(ps[0], P64 * (1 - 0.05), rtol=1e-6)
    np.testing.assert_allclose(ps[1], P64 * (1 - 0.05) ** 2, rtol=1e-6)


def test_adamw_weight_decay_is_what_the_config_says():
    # No hidden default: weight_decay 0 means no decay, for adamw as for adam.
    cfg = OptimConfig(name="adamw", learning_rate=0.1)
    ps, _, _ = run(cfg, grads=np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(ps[0], P64, rtol=1e-7)


# ------------------------------------------------------------------ schedules

SPE, EPOCHS = 5, 2  # total_steps = 10
STEPS = np.arange(0, 13)
mult = jax.jit(optim.schedule_multiplier, static_argnums=0)


def multiplier(kind, **cfg_kw):
    hp = optim.hyperparams(OptimConfig(schedule=kind, **cfg_kw), SPE, EPOCHS)
    return np.asarray(mult(kind, STEPS, hp), np.float64)


def test_hyperparams_in_steps():
    hp = optim.hyperparams(OptimConfig(warmup_epochs=1.5, clip_norm=None), SPE, EPOCHS)
    assert hp["warmup_steps"] == 7.5 and hp["total_steps"] == 10.0
    assert hp["steps_per_epoch"] == 5.0 and hp["clip_norm"] == 0.0
    assert optim.hyperparams(OptimConfig(), 0, 0)["total_steps"] == 1.0


def test_constant_schedule():
    np.testing.assert_array_equal(multiplier("constant"), np.ones(len(STEPS)))


@pytest.mark.parametrize("lo", [0.0, 0.1])
def test_cosine_schedule(lo):
    m = multiplier("cosine", min_lr_ratio=lo)
    # lo + (1 - lo) * (1 + cos(pi * min(step / 10, 1))) / 2
    ref = lo + (1 - lo) * 0.5 * (1 + np.cos(np.pi * np.minimum(STEPS / 10, 1)))
    np.testing.assert_allclose(m, ref, atol=1e-6)
    assert m[0] == pytest.approx(1.0)
    assert m[5] == pytest.approx(lo + (1 - lo) * 0.5)  # halfway
    np.testing.assert_allclose(m[10:], lo, atol=1e-6)  # stays at the floor afterwards
    assert np.all(np.diff(m) <= 1e-7)


def test_warmup_cosine_schedule():
    m = multiplier("warmup_cosine", warmup_epochs=1.0, min_lr_ratio=0.0)  # 5 warmup steps
    # steps 0..4: (step + 1) / 5 = 0.2, 0.4, 0.6, 0.8, 1.0
    np.testing.assert_allclose(m[:5], [0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    # steps 5..10: cosine over the remaining 5 steps: (1 + cos(pi (s - 5) / 5)) / 2
    s = STEPS[5:11]
    np.testing.assert_allclose(m[5:11], 0.5 * (1 + np.cos(np.pi * (s - 5) / 5)), atol=1e-6)
    assert np.all(np.diff(m[:5]) > 0) and np.all(np.diff(m[4:]) <= 1e-7)
    np.testing.assert_allclose(m[10:], 0.0, atol=1e-6)


def test_exponential_schedule_per_epoch():
    m = multiplier("exponential", decay_rate=0.5)
    np.testing.assert_allclose(m, 0.5 ** (STEPS / SPE), rtol=1e-6)
    assert m[5] == pytest.approx(0.5) and m[10] == pytest.approx(0.25)


def test_unknown_schedule_raises():
    hp = optim.hyperparams(OptimConfig(), SPE, EPOCHS)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.schedule_multiplier("linear", 0, hp)


@pytest.mark.parametrize("kind", ["constant", "cosine", "warmup_cosine", "exponential"])
def test_learning_rate_reports_the_rate_the_update_uses(kind):
    # sgd with gradient 1: each step moves the params by exactly the learning rate.
    cfg = OptimConfig(name="sgd", learning_rate=0.5, schedule=kind, warmup_epochs=0.4,
                      min_lr_ratio=0.1, decay_rate=0.5)
    grads = np.ones((12, 1), np.float32)
    ps, lrs, _ = run(cfg, grads=grads, p0=np.zeros(1, np.float32), steps_per_epoch=SPE,
                     epochs=EPOCHS)
    moved = -np.diff(np.concatenate([[0.0], ps[:, 0]]))
    hp = optim.hyperparams(cfg, SPE, EPOCHS)
    ref = 0.5 * np.asarray(mult(kind, np.arange(12), hp))
    np.testing.assert_allclose(moved, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lrs, ref, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ clipping


def test_clip_by_global_norm():
    cfg = OptimConfig(name="sgd", learning_rate=1.0, clip_norm=1.0)
    # |[3, 4]| = 5 > 1: scaled to [0.6, 0.8]; |[0.3, 0.4]| = 0.5 <= 1: unchanged
    grads = np.array([[3.0, 4.0], [0.3, 0.4]], np.float32)
    ps, _, _ = run(cfg, grads=grads, p0=np.zeros(2, np.float32))
    np.testing.assert_allclose(ps[0], [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(ps[1], [-0.9, -1.2], rtol=1e-6)


def test_clip_global_norm_across_leaves_before_weight_decay():
    cfg = OptimConfig(name="sgd", learning_rate=1.0, clip_norm=2.0, weight_decay=0.1)
    tx = optim.make(cfg, 1, 1)
    params = {"a": np.array([1.0], np.float32), "b": np.array([2.0, 0.0], np.float32)}
    grads = {"a": np.array([6.0], np.float32), "b": np.array([0.0, 8.0], np.float32)}
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # global norm sqrt(36 + 64) = 10 -> scale 2/10: a 1.2, b [0, 1.6]; then + 0.1 p
    np.testing.assert_allclose(updates["a"], [-(1.2 + 0.1)], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [-0.2, -1.6], rtol=1e-6)


def test_no_clipping_without_clip_norm():
    cfg = OptimConfig(name="sgd", learning_rate=1.0)
    ps, _, _ = run(cfg, grads=np.array([[30.0, 40.0]], np.float32), p0=np.zeros(2, np.float32))
    np.testing.assert_allclose(ps[0], [-30.0, -40.0])


# ------------------------------------------------------------------ injected hyperparameters


def test_hyperparams_live_in_the_state():
    cfg = OptimConfig(name="momentum", learning_rate=0.3, momentum=0.7, weight_decay=0.01)
    tx = optim.make(cfg, 4, 3)
    state = tx.init(P0)
    hp = state.hyperparams
    assert set(hp) == set(optim.hyperparams(cfg, 4, 3))
    assert float(hp["learning_rate"]) == pytest.approx(0.3)
    assert float(hp["momentum"]) == pytest.approx(0.7)
    assert float(hp["total_steps"]) == 12.0
    for value in hp.values():
        assert jnp.asarray(value).dtype == jnp.float32


def test_set_hyperparams_changes_the_next_update():
    cfg = OptimConfig(name="sgd", learning_rate=0.1)
    tx = optim.make(cfg, 1, 1)
    update = jax.jit(tx.update)
    state = tx.init(P0)
    g = GRADS[0]
    u1, state = update(g, state, P0)
    np.testing.assert_allclose(u1, -0.1 * g, rtol=1e-6)
    state = optim.set_hyperparams(state, {"learning_rate": 0.5})
    assert float(optim.learning_rate(state, cfg)) == pytest.approx(0.5)
    assert state.hyperparams["learning_rate"].dtype == jnp.float32
    u2, state = update(g, state, P0)
    np.testing.assert_allclose(u2, -0.5 * g, rtol=1e-6)
    assert int(state.count) == 2  # other state is kept


def test_set_hyperparams_does_not_mutate():
    tx = optim.make(OptimConfig(), 1, 1)
    state = tx.init(P0)
    new = optim.set_hyperparams(state, {"learning_rate": 0.5, "b1": 0.5})
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-3)
    assert float(new.hyperparams["b1"]) == pytest.approx(0.5)


def test_set_hyperparams_unknown_name():
    tx = optim.make(OptimConfig(), 1, 1)
    with pytest.raises(KeyError, match="learning_rat"):
        optim.set_hyperparams(tx.init(P0), {"learning_rat": 0.1})


def test_set_hyperparams_after_int_valued_config():
    tx = optim.make(OptimConfig(name="sgd", weight_decay=0), 1, 1)
    state = optim.set_hyperparams(tx.init(P0), {"weight_decay": 0.1})
    assert float(state.hyperparams["weight_decay"]) == pytest.approx(0.1)


def test_no_recompile_for_other_hyperparameters():
    cfg = OptimConfig(name="momentum", learning_rate=0.1, momentum=0.9, weight_decay=0.001,
                      schedule="cosine")
    tx = optim.make(cfg, 5, 2)
    traces = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    base = tx.init(P0)
    states = [
        base,
        optim.set_hyperparams(base, {"learning_rate": 0.01}),
        optim.set_hyperparams(base, {"momentum": 0.5, "weight_decay": 0.1}),
        optim.set_hyperparams(base, {"total_steps": 100.0, "min_lr_ratio": 0.2}),
        # a state from another factory call with other numbers but the same structure
        optim.make(OptimConfig(name="momentum", learning_rate=0.3, momentum=0.1,
                             weight_decay=0.2, schedule="cosine"), 7, 3).init(P0),
    ]
    results = [step(P0, s, GRADS[0])[0] for s in states]
    assert len(traces) == 1
    # ...and the numbers did change: lr 0.1 vs 0.01 on the first step
    np.testing.assert_allclose(np.asarray(results[1]) - P0, (np.asarray(results[0]) - P0) / 10,
                               rtol=1e-4, atol=1e-7)
    # wd 0.1 instead of 0.001 adds lr * 0.099 * p to the first update
    np.testing.assert_allclose(np.asarray(results[2]) - np.asarray(results[0]), -0.0099 * P0,
                               rtol=1e-5, atol=1e-7)


def test_weight_decay_value_is_not_structure():
    on = optim.structure_key(OptimConfig(weight_decay=0.1))
    assert optim.structure_key(OptimConfig(weight_decay=0.0)) == on
    assert optim.structure_key(OptimConfig(clip_norm=1.0)) != on
    assert optim.structure_key(OptimConfig(learning_rate=0.5)) == optim.structure_key(
        OptimConfig())


def test_states_with_different_hyperparameters_stack_and_vmap():
    cfg = OptimConfig(name="sgd", learning_rate=0.1)
    tx = optim.make(cfg, 1, 1)
    base = tx.init(P0)
    lrs = [0.1, 0.2, 0.4]
    states = [optim.set_hyperparams(base, {"learning_rate": lr}) for lr in lrs]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    updates, _ = jax.jit(jax.vmap(tx.update, in_axes=(None, 0, None)))(GRADS[0], stacked, P0)
    np.testing.assert_allclose(np.asarray(updates), -np.outer(lrs, GRADS[0]), rtol=1e-6)


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make(OptimConfig(name="lion"), 1, 1).init(P0)

