"""PPO end to end on gymnax: a tiny run learns, chunks and vmapped seeds give
the numbers of one call and of each seed alone, continuous actions work,
observation normalisation, and bad settings are clear errors."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.config import PPOConfig, RLConfig
from jaxdl.rl.ppo import PPO

REPO = Path(__file__).resolve().parents[2]
TINY_RL = dict(num_envs=4, total_steps=32_768)
TINY_PPO = dict(num_steps=32, update_epochs=4, num_minibatches=4, learning_rate=2.5e-3)


@pytest.fixture(scope="module")
def tiny_ppo():
    return PPO(RLConfig(**TINY_RL), PPOConfig(**TINY_PPO))


def test_a_tiny_run_learns_cartpole(tiny_ppo):
    state, m = jax.jit(tiny_ppo.train)(jax.random.key(0))
    assert int(state.update) == tiny_ppo.num_updates == 256
    returns = np.asarray(m["episode_return"])
    # The first update's episodes come from the untrained, near-uniform
    # policy: about 22 steps, as for a random policy on CartPole.
    first, last = float(returns[0]), float(np.nanmean(returns[-20:]))
    assert first < 40 and last > 200, (first, last)
    greedy, lengths = jax.jit(tiny_ppo.evaluate, static_argnums=2)(state, jax.random.key(1), 10)
    assert float(greedy.mean()) > 200
    np.testing.assert_array_equal(greedy, lengths)      # CartPole: +1 per step
    for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        assert np.isfinite(np.asarray(m[k])).all(), k


def _chunks_and_vmapped_seeds_check():
    ppo = PPO(RLConfig(**TINY_RL), PPOConfig(**{**TINY_PPO, "num_steps": 16}))
    run = jax.jit(ppo.run, static_argnums=1)
    init = jax.jit(ppo.init)
    whole, mw = run(init(jax.random.key(3)), 4)
    part, _ = run(init(jax.random.key(3)), 2)
    part, mp = run(part, 2)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(part.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mw["value_loss"][2:], mp["value_loss"], rtol=1e-6)

    keys = jax.random.split(jax.random.key(5), 3)
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])
    vm, _ = jax.jit(jax.vmap(lambda s: ppo.run(s, 3)))(states)
    for i in range(3):
        alone, _ = run(init(keys[i]), 3)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(vm.params), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-6)


def test_chunks_and_vmapped_seeds_match_single_calls():
    """In a subprocess with a timeout, so that a hang fails the test instead
    of stalling the suite: initialising inside a seed-vmapped program (a
    batched QR for the orthogonal initialiser) deadlocked XLA CPU's thread
    pool in some runs; jaxdl initialises agents one by one."""
    code = "from tests.rl.test_ppo import _chunks_and_vmapped_seeds_check as c; c()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_continuous_actions_on_pendulum_with_normalised_observations():
    ppo = PPO(RLConfig(env="Pendulum-v1", num_envs=2, total_steps=64, normalize_obs=True),
              PPOConfig(num_steps=16, num_minibatches=2))
    assert ppo.net.continuous and ppo.num_updates == 2
    state, m = jax.jit(ppo.train)(jax.random.key(0))
    assert np.isfinite(np.asarray(m["value_loss"])).all()
    action, logp, value = ppo.policy(state.params, state.obs, jax.random.key(1))
    assert action.shape == (2, 1) and logp.shape == (2,) and value.shape == (2,)
    # The running statistics count every observation a step returned (2 x 16 x 2).
    assert float(state.obs_stats.count) == pytest.approx(64 + 1e-4)
    assert np.all(np.asarray(state.obs_stats.var) > 0)


def test_hyperparameters_are_data_in_the_state():
    ppo = PPO(RLConfig(num_envs=2, total_steps=128), PPOConfig(num_steps=16, num_minibatches=2))
    run = jax.jit(ppo.run, static_argnums=1)
    a, _ = run(ppo.init(jax.random.key(0)), 2)
    hp = {**ppo.hyperparams(), "learning_rate": 0.0}
    b, _ = run(ppo.init(jax.random.key(0), hp), 2)      # the same program, lr 0
    assert run._cache_size() == 1
    init = ppo.init(jax.random.key(0))
    for x, y in zip(jax.tree.leaves(init.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(init.params), jax.tree.leaves(a.params), strict=True))


@pytest.mark.parametrize("rl, ppo, message", [
    (dict(num_envs=3), dict(num_steps=5, num_minibatches=4),
     "15 is not divisible by num_minibatches 4"),
    (dict(num_envs=4, total_steps=100), dict(num_steps=128), "less than one update's 512 steps"),
])
def test_bad_settings(rl, ppo, message):
    with pytest.raises(ValueError, match=message):
        PPO(RLConfig(**rl), PPOConfig(**ppo))
