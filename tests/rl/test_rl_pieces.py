"""The deep-RL pieces on their own: GAE, PPO's loss, the policy
distributions, the vmapped environment's episode statistics and the agent
networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdl.models.agent import ActorCritic, QNetwork
from jaxdl.rl import VecEnv, distributions, gae, losses, make

# ------------------------------------------------------------------ GAE


def test_gae_by_hand_with_a_termination_and_a_truncation_inside_the_rollout():
    g, lam = 0.9, 0.5
    r = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    v = jnp.array([0.5, 1.0, 1.5, 2.0, 2.5])
    nv = jnp.array([1.0, 9.0, 2.0, 7.0, 3.0])   # the true next states' values
    term = jnp.array([0, 1, 0, 0, 0])           # t=1 ends by termination: no bootstrap
    done = jnp.array([0, 1, 0, 1, 0])           # t=3 ends by truncation: bootstraps 7.0
    adv, ret = gae(r, v, nv, term, done, g, lam)
    d = [1 + g * 1.0 - 0.5, 2 + 0 - 1.0, 3 + g * 2.0 - 1.5, 4 + g * 7.0 - 2.0, 5 + g * 3.0 - 2.5]
    a4 = d[4]
    a3 = d[3]                                   # episode boundary: nothing flows back
    a2 = d[2] + g * lam * a3
    a1 = d[1]
    a0 = d[0] + g * lam * a1
    np.testing.assert_allclose(adv, [a0, a1, a2, a3, a4], rtol=1e-6)
    np.testing.assert_allclose(ret, np.array([a0, a1, a2, a3, a4]) + np.asarray(v), rtol=1e-6)


def test_gae_with_lambda_one_and_no_ends_is_the_discounted_return_minus_value():
    r = jax.random.uniform(jax.random.key(0), (6, 3))
    v = jax.random.uniform(jax.random.key(1), (6, 3))
    nv = jnp.concatenate([v[1:], jnp.full((1, 3), 0.7)])
    zeros = jnp.zeros((6, 3))
    adv, _ = gae(r, v, nv, zeros, zeros, 0.95, 1.0)
    ref = np.zeros((6, 3))
    running = 0.7 * np.ones(3)
    for t in reversed(range(6)):
        running = np.asarray(r[t]) + 0.95 * running
        ref[t] = running
    np.testing.assert_allclose(adv, ref - np.asarray(v), rtol=1e-5)


# ------------------------------------------------------------------ losses


def test_clipped_surrogate_by_hand():
    ratio = jnp.array([0.5, 1.0, 1.5, 1.5])
    adv = jnp.array([1.0, -2.0, 3.0, -1.0])
    # min(r A, clip(r) A) with eps 0.2: min(0.5, 0.8) = 0.5; -2; min(4.5, 3.6) = 3.6;
    # min(-1.5, -1.2) = -1.5
    expected = -np.mean([0.5, -2.0, 3.6, -1.5])
    assert float(losses.clipped_surrogate(ratio, adv, 0.2)) == pytest.approx(expected)


def test_value_loss_by_hand_with_and_without_clipping():
    v, old, ret = jnp.array([2.0, 0.0]), jnp.array([1.0, 0.5]), jnp.array([3.0, 1.0])
    assert float(losses.value_loss(v, old, ret)) == pytest.approx(0.5 * (1.0 + 1.0) / 2)
    # clipped values: 1 + clip(1, -.2, .2) = 1.2; 0.5 + clip(-.5) = 0.3
    # max(1, (1.2-3)^2 = 3.24) = 3.24; max(1, (0.3-1)^2 = .49) = 1
    assert float(losses.value_loss(v, old, ret, 0.2)) == pytest.approx(0.5 * (3.24 + 1.0) / 2)


def test_ppo_loss_parts_and_total():
    logp, old = jnp.log(jnp.array([0.5, 0.3])), jnp.log(jnp.array([0.25, 0.3]))
    adv = jnp.array([1.0, -1.0])
    v, ov, ret = jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0]), jnp.array([2.0, 2.0])
    ent = jnp.array([0.6, 0.8])
    total, parts = losses.ppo_loss(logp, old, adv, v, ov, ret, ent, clip_eps=0.2, vf_coef=0.5,
                                   ent_coef=0.01)
    # ratios 2.0 and 1.0: policy -mean(min(2, 1.2), -1) = -(1.2 - 1) / 2
    assert float(parts["policy_loss"]) == pytest.approx(-0.1)
    assert float(parts["value_loss"]) == pytest.approx(0.25)
    assert float(parts["entropy"]) == pytest.approx(0.7)
    assert float(parts["clip_fraction"]) == pytest.approx(0.5)
    assert float(parts["approx_kl"]) == pytest.approx(((2 - 1) - math.log(2)) / 2, rel=1e-5)
    assert float(total) == pytest.approx(-0.1 + 0.5 * 0.25 - 0.01 * 0.7, abs=1e-6)


# ------------------------------------------------------------------ distributions


def test_categorical_against_numpy():
    logits = jnp.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(distributions.categorical_log_prob(logits, jnp.array([1, 2])),
                               np.log([p[0, 1], p[1, 2]]), rtol=1e-6)
    np.testing.assert_allclose(distributions.categorical_entropy(logits),
                               -(p * np.log(p)).sum(-1), rtol=1e-6)
    draws = distributions.categorical_sample(jax.random.key(0), jnp.tile(logits[:1], (4000, 1)))
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 4000, p[0], atol=0.03)


def test_gaussian_against_scipy():
    mean, log_std = jnp.array([[0.5, -1.0]]), jnp.array([0.2, -0.3])
    a = jnp.array([[1.0, -0.5]])
    ref = stats.norm(np.asarray(mean), np.exp(np.asarray(log_std)))
    assert float(distributions.gaussian_log_prob(mean, log_std, a)[0]) == pytest.approx(
        ref.logpdf(np.asarray(a)).sum(), rel=1e-5)
    assert float(distributions.gaussian_entropy(mean, log_std)[0]) == pytest.approx(
        ref.entropy().sum(), rel=1e-5)
    draws = distributions.gaussian_sample(jax.random.key(0), jnp.zeros((20000, 2)), log_std)
    np.testing.assert_allclose(np.std(draws, axis=0), np.exp(log_std), rtol=0.03)


# ------------------------------------------------------------------ environments


def test_unknown_environment_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown environment 'CartPole-v9'; valid: "
                       "CartPole-v1, Pendulum-v1"):
        make("CartPole-v9")


def test_always_pushing_right_ends_cartpole_in_8_to_11_steps():
    env = VecEnv("CartPole-v1", 16)
    assert env.discrete and env.num_actions == 2 and env.observation_shape == (4,)
    step = jax.jit(env.step)
    obs, state = env.reset(jax.random.key(0))
    lengths, returns = [], []
    for t in range(40):
        obs, state, reward, term, trunc, info = step(jax.random.fold_in(jax.random.key(1), t),
                                                     state, jnp.ones(16, jnp.int32))
        assert not bool(trunc.any())
        done = np.asarray(info["episode_done"])
        np.testing.assert_array_equal(done, np.asarray(term))
        lengths += list(np.asarray(info["episode_length"])[done])
        returns += list(np.asarray(info["episode_return"])[done])
        # where nothing ended, the statistics are 0
        assert not np.asarray(info["episode_length"])[~done].any()
    assert len(lengths) >= 16 * 3
    assert 8 <= min(lengths) and max(lengths) <= 11 and 8.5 < np.mean(lengths) < 10.5
    np.testing.assert_array_equal(returns, lengths)       # reward 1 per step


def test_a_time_limit_is_a_truncation_with_the_full_length():
    env = VecEnv("MountainCar-v0", 4)          # a random policy never reaches the flag
    obs, state = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    for t in range(200):
        obs, state, reward, term, trunc, info = step(
            jax.random.fold_in(jax.random.key(1), t), state,
            jax.random.randint(jax.random.fold_in(jax.random.key(2), t), (4,), 0, 3))
    assert bool(trunc.all()) and not bool(term.any())
    np.testing.assert_array_equal(info["episode_length"], [200] * 4)
    np.testing.assert_allclose(info["episode_return"], [-200.0] * 4)
    assert not np.asarray(state.episode_length).any()        # the next episode starts


# ------------------------------------------------------------------ networks


@pytest.mark.parametrize("shared", [False, True])
def test_actor_critic_shapes_and_heads(shared):
    obs = jnp.ones((5, 4))
    net = ActorCritic(actions=2, shared=shared)
    params = net.init(jax.random.key(0), obs)
    logits, value = net.apply(params, obs)
    assert logits.shape == (5, 2) and value.shape == (5,)
    assert ("critic" in params["params"]) != shared
    # policy head initialised small: near-uniform action probabilities
    assert float(jnp.abs(logits).max()) < 0.1
    cont = ActorCritic(actions=1, continuous=True)
    cparams = cont.init(jax.random.key(0), jnp.ones((5, 3)))
    (mean, log_std), value = cont.apply(cparams, jnp.ones((5, 3)))
    assert mean.shape == (5, 1) and log_std.shape == (1,) and value.shape == (5,)
    np.testing.assert_array_equal(log_std, [0.0])


def test_q_network_shape():
    q = QNetwork(actions=3, width=16)
    out = q.apply(q.init(jax.random.key(0), jnp.ones((7, 4))), jnp.ones((7, 4)))
    assert out.shape == (7, 3)
