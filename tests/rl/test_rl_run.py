"""RL runs end to end: the rl / ppo / dqn config sections, ``jaxdl train`` and
``jaxdl eval --episodes`` on PPO and DQN agents, several agents in one
program, checkpoints and resume, sweeps over data hyperparameters, and the
replay buffer and epsilon schedule by hand."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import jaxdl
from jaxdl import config, rl_run
from jaxdl.errors import CheckpointError, ConfigError
from jaxdl.rl.dqn import DQN, ReplayBuffer
from tests.helpers import jaxdl as jaxdl_cli


def tiny_ppo(**overrides) -> config.Config:
    """12 PPO updates of 4 CartPole environments x 16 steps, in 3 chunks."""
    tree = {
        "name": "tiny_ppo", "seed": 0, "algorithm": "ppo",
        "rl": {"env": "CartPole-v1", "seeds": 2, "num_envs": 4, "total_steps": 768,
               "width": 16, "depth": 1, "eval_episodes": 3, "test_episodes": 4},
        "ppo": {"num_steps": 16, "update_epochs": 2, "num_minibatches": 2,
                "learning_rate": 1e-3},
        "train": {"epochs": 3, "progress": False},
    }
    return config.from_dict(tree).replace(overrides)


def tiny_dqn(**overrides) -> config.Config:
    """200 DQN updates of 4 CartPole environments, in 2 chunks."""
    tree = {
        "name": "tiny_dqn", "seed": 0, "algorithm": "dqn",
        "rl": {"env": "CartPole-v1", "seeds": 2, "num_envs": 4, "total_steps": 800,
               "width": 16, "depth": 1, "eval_episodes": 3, "test_episodes": 4},
        "dqn": {"buffer_size": 256, "batch_size": 32, "learning_starts": 100,
                "target_every": 50},
        "train": {"epochs": 2, "progress": False},
    }
    return config.from_dict(tree).replace(overrides)


def test_the_environment_list_is_gymnax_s():
    import gymnax

    assert config.GYMNAX_ENVIRONMENTS == tuple(gymnax.registered_envs)


@pytest.mark.parametrize("tree, message", [
    ({"algorithm": "ppo", "rl": {"env": "CartPol-v1"}},
     "rl.env: must be one of CartPole-v1, Pendulum-v1"),
    ({"algorithm": "ppo", "model": {"width": 8}}, "model: not used by algorithm ppo"),
    ({"algorithm": "ppo", "dqn": {"tau": 0.5}}, "dqn: not used by algorithm ppo"),
    ({"algorithm": "dqn", "ppo": {"clip_eps": 0.1}}, "ppo: not used by algorithm dqn"),
    ({"rl": {"seeds": 4}}, "rl: not used by algorithm supervised"),
    ({"algorithm": "ppo", "train": {"batch_size": 64}}, "train.batch_size: not used by an RL"),
    ({"algorithm": "ppo", "ppo": {"num_minibatches": 3}},
     "ppo.num_minibatches: 3 does not divide the 512 steps"),
    ({"algorithm": "ppo", "rl": {"total_steps": 1000}, "train": {"epochs": 4}},
     "makes 1 updates of 512 environment steps, fewer than train.epochs 4"),
    ({"algorithm": "ppo", "train": {"monitor": "val_accuracy"}},
     "'val_accuracy' is not measured for an RL agent"),
    ({"algorithm": "ppo", "rl": {"eval_episodes": 0}, "train": {"monitor": "val_return"}},
     "needs evaluation episodes but rl.eval_episodes is 0"),
    ({"algorithm": "ppo", "train": {"mode": "min"}}, "would treat a worse return as better"),
    ({"algorithm": "dqn", "dqn": {"batch_size": 512, "buffer_size": 256}},
     "dqn.batch_size: 512 is more than the 256"),
    ({"algorithm": "dqn", "dqn": {"epsilon_start": 0.1, "epsilon_end": 0.5}},
     "dqn.epsilon_end: 0.5 is above epsilon_start"),
    ({"algorithm": "dqn", "rl": {"total_steps": 5000}}, "dqn.learning_starts: 10000 leaves"),
    ({"algorithm": "dqn", "rl": {"total_steps": 10_009, "num_envs": 10}},
     "dqn.learning_starts: 10000 leaves no learning in the 10000 steps"),
    ({"algorithm": "dqn", "rl": {"total_steps": 20_000, "num_envs": 10},
      "dqn": {"train_every": 5000}}, "dqn.train_every: 5000 updates is more than the run's 2000"),
    ({"algorithm": "dqn", "rl": {"total_steps": 20_000}, "dqn": {"target_every": 30_000}},
     "dqn.target_every: 30000 steps is more than the run's 20000"),
    ({"algorithm": "ppo", "rl": {"total_steps": 2**31}}, "rl.total_steps: must be <="),
    ({"algorithm": "ppo", "rl": {"seeds": 0}}, "rl.seeds: must be >= 1"),
    ({"algorithm": "ppo", "ppo": {"clip_eps": 0}}, "ppo.clip_eps: must be > 0"),
    ({"algorithm": "ppo", "ppo": {"learning_rat": 1e-3}}, "did you mean 'learning_rate'"),
])
def test_bad_rl_configs_are_clear_errors(tree, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict(tree)


def test_rl_configs_record_only_what_they_use():
    cfg = tiny_ppo()
    dumped = yaml.safe_load(config.dump(cfg))
    assert set(dumped) == {"name", "seed", "algorithm", "train", "checkpoint", "rl", "ppo"}
    assert "batch_size" not in dumped["train"] and dumped["rl"]["activation"] == "tanh"
    assert tiny_dqn().rl.activation == "relu"
    # A sweep-able number changes the fingerprint; a field of another
    # algorithm's section cannot be set at all.
    assert config.fingerprint(cfg) != config.fingerprint(cfg.replace({"ppo.ent_coef": 0.0}))
    # Supervised and GAN configs keep the identities they had before RL.
    assert config.fingerprint(config.Config()) == "248e025848d15b1e"


def test_dqn_on_continuous_actions_is_a_config_error(tmp_path):
    cfg = tiny_dqn(**{"rl.env": "Pendulum-v1"})
    with pytest.raises(ConfigError, match="DQN needs discrete actions; Pendulum-v1"):
        jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_ppo_run_records_agents_curves_and_checkpoints(tmp_path):
    result = jaxdl.run(tiny_ppo(), workdir=tmp_path / "two", quiet=True)
    s = result.summary
    assert result.status == "completed" and s["epochs"] == 3 and s["monitor"] == "val_return"
    assert set(s["final"]) == {"train", "val", "test"}
    for key in ("return", "return_std", "length", "return_seed_min", "return_seed_max"):
        assert np.isfinite(s["final"]["test"][key]), key
    assert 5 < s["baselines"]["test"]["return_random"] < 60     # CartPole's random policy
    run_dir = tmp_path / "two"
    for name in ("learning_curve.png", "learning_curve.csv", "agents.json", "curves.png",
                 "metrics.jsonl", "config.yaml", "run.json"):
        assert (run_dir / name).exists(), name
    agents = json.loads((run_dir / "agents.json").read_text())
    assert [a["agent"] for a in agents] == [0, 1]
    steps, returns = rl_run.read_learning_curve(run_dir)
    assert steps.tolist() == [64 * (i + 1) for i in range(12)] and returns.shape == (12, 2)
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [256, 512, 768]
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["agents"] == 2 and run_info["env_steps_per_agent"] == 768
    # summary.json's steps/s, like each chunk's, counts both agents' steps.
    # (train_seconds is rounded to the millisecond: a fast run's 0.042 s is
    # 1 % off, so compare within that rounding.)
    t = s["train_seconds"]
    assert 2 * 768 / (t + 5e-4) * 0.999 <= s["steps_per_second"] <= 2 * 768 / (t - 5e-4) * 1.001

    # Agent 0 of two is the one-agent run: same parameters, same test episodes.
    one = jaxdl.run(tiny_ppo(**{"rl.seeds": 1}), workdir=tmp_path / "one", quiet=True)
    _, _, two_state, _ = rl_run.restore(run_dir, "latest")
    _, _, one_state, epoch = rl_run.restore(one.run_dir, "latest")
    assert epoch == 3
    for a, b in zip(jax.tree.leaves(two_state.params), jax.tree.leaves(one_state.params),
                    strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-6)
    a = jaxdl.evaluate(run_dir, "latest", episodes=5)
    b = jaxdl.evaluate(one.run_dir, "latest", episodes=5)
    assert a["agents"][0] == pytest.approx(b["agents"][0], abs=1e-3)
    # Without a seed, eval plays the run's own test episodes: summary.json's numbers.
    assert jaxdl.evaluate(run_dir)["test"] == pytest.approx(s["best"]["test"])


def test_resume_after_an_interrupted_chunk_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny_ppo()
    full = jaxdl.run(cfg, workdir=tmp_path / "full", quiet=True)

    def interrupt(epoch, metrics):
        if epoch == 2:       # before chunk 2's checkpoint is written
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        jaxdl.run(cfg, workdir=tmp_path / "cut", reporter=interrupt, quiet=True)
    with pytest.raises(CheckpointError, match="already holds a run"):
        jaxdl.run(cfg, workdir=tmp_path / "cut", quiet=True)
    resumed = jaxdl.run(cfg, workdir=tmp_path / "cut", resume=True, quiet=True)
    assert resumed.status == "completed" and resumed.summary["epochs"] == 3
    drop = ("steps_per_second",)
    for part in ("final", "best"):
        for split in ("val", "test"):
            assert resumed.summary[part][split] == full.summary[part][split], (part, split)
        assert ({k: v for k, v in resumed.summary[part]["train"].items() if k not in drop}
                == {k: v for k, v in full.summary[part]["train"].items() if k not in drop})
    # The learning curve holds each update once, as in the uninterrupted run.
    a, b = rl_run.read_learning_curve(tmp_path / "cut"), rl_run.read_learning_curve(
        tmp_path / "full")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)


def test_an_agent_checkpoint_round_trips(tmp_path):
    """The whole stacked state (networks, optimizer, environments, replay
    buffer, keys, hyperparameters) restores bit for bit."""
    from jaxdl.checkpoint import Checkpointer

    cfg = tiny_dqn()
    job = rl_run.RLJob(cfg, log=lambda s: None)
    state, _ = job.program.run(job.new_state(), 150)   # past learning_starts: a full buffer
    host = jax.device_get(state)
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, state, {"epoch": 1}, {"val_return": 1.0}, is_best=True)
    with Checkpointer(tmp_path / "ck", read_only=True) as ck:
        restored, meta = ck.restore(1, jax.eval_shape(job.new_state))
    assert meta == {"epoch": 1}
    a, b = jax.tree_util.tree_leaves_with_path(host), jax.tree_util.tree_leaves(restored)
    assert len(a) == len(b)
    for (path, x), y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
    assert int(host.buffer.filled[0]) == 256 and int(host.update[0]) == 150


def test_jaxdl_train_and_eval_a_dqn_agent(tmp_path):
    path = tmp_path / "dqn.yaml"
    path.write_text(config.dump(tiny_dqn()))
    jaxdl_cli("train", path, "--workdir", tmp_path / "run", "--quiet")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    train = summary["final"]["train"]
    assert {"loss", "q_mean", "epsilon", "return", "steps_per_second"} <= set(train)
    out = jaxdl_cli("eval", tmp_path / "run", "--episodes", "6", "--render",
                    tmp_path / "ep.gif", "--agent", "1").stdout
    lines = out.splitlines()      # no pygame banner: the first line is the metrics'
    assert lines[0].startswith("test (epoch 2 checkpoint): return ") and "return_std" in out
    agents = [float(v) for v in lines[1].removeprefix("agents' mean returns: ").split()]
    test_return = float(lines[0].split()[5])
    assert len(agents) == 2 and test_return == pytest.approx(np.mean(agents), abs=0.06)
    episode_return = float(lines[2].split("(return ")[1].split(")")[0])
    assert lines[2].endswith(str(tmp_path / "ep.gif"))
    from PIL import Image

    with Image.open(tmp_path / "ep.gif") as gif:
        # A frame per step the pole stayed up (CartPole: +1 per step); Pillow
        # merges identical neighbours, so at most that many.
        assert 2 <= gif.n_frames <= int(episode_return)
    out = jaxdl_cli("eval", tmp_path / "run", "--episodes", "6", "--split", "val", check=False)
    assert out.returncode == 2 and "use --episodes N" in out.stderr
    with pytest.raises(ConfigError, match="must be >= 1"):
        jaxdl.evaluate(tmp_path / "run", episodes=0)
    with pytest.raises(ConfigError, match="has agents 0..1, got 3"):
        rl_run.render(tmp_path / "run", tmp_path / "x.gif", agent=3)
    with pytest.raises(ConfigError, match="--data-dir: an RL run reads no dataset"):
        jaxdl.evaluate(tmp_path / "run", data_dir="/tmp")
    with pytest.raises(ConfigError, match="is a dqn run; read it back with jaxdl.rl_run"):
        jaxdl.restore(tmp_path / "run")


def test_hyperparameters_are_data_a_new_learning_rate_compiles_nothing(tmp_path):
    cfg = tiny_ppo(**{"train.epochs": 1, "rl.total_steps": 256, "rl.width": 24,   # unseen shape
                      "rl.eval_episodes": 0, "rl.seeds": 1})
    first = jaxdl.run(cfg, workdir=tmp_path / "a", quiet=True)
    assert first.summary["compile_seconds"] > 0
    other = cfg.replace({"ppo.learning_rate": 3e-3, "ppo.ent_coef": 0.0, "ppo.clip_eps": 0.1,
                         "rl.gamma": 0.9, "seed": 5})
    second = jaxdl.run(other, workdir=tmp_path / "b", quiet=True)
    assert second.summary["compile_seconds"] == 0
    assert (second.summary["final"]["train"]["value_loss"]
            != first.summary["final"]["train"]["value_loss"])


def tiny_ppo_sweep(tmp_path, **top):
    """A sweep of :func:`tiny_ppo` over learning rate, entropy coefficient
    and clip range (``top``: more or other top-level spec keys)."""
    from jaxdl import sweep

    return sweep.from_dict({
        "name": "tiny_ppo_sweep", "base": config.to_dict(tiny_ppo()),
        "space": {"ppo.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2,
                                        "log": True},
                  "ppo.ent_coef": {"type": "float", "low": 0.0, "high": 0.05},
                  "ppo.clip_eps": {"type": "float", "low": 0.1, "high": 0.3}},
        "objective": {"metric": "val_return", "value": "last"},
        "study_dir": str(tmp_path / "study"), **top})


def test_a_ppo_sweep_searches_data_hyperparameters(tmp_path):
    from jaxdl import sweep

    spec = tiny_ppo_sweep(
        tmp_path, pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 1},
        budget={"trials": 3})
    assert spec.direction == "maximize"
    study = sweep.run(spec, quiet=True, progress=False)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3
    assert all(t.intermediate_values for t in finished)
    for key, why in (("rl.seeds", "mean over its agents"),
                     ("rl.eval_episodes", "how the objective is estimated")):
        with pytest.raises(ConfigError, match=why):
            sweep.from_dict({"base": config.to_dict(tiny_ppo()),
                             "space": {key: {"type": "int", "low": 1, "high": 4}}})


def test_the_replay_buffer_wraps_round_and_samples_filled_slots():
    buf = ReplayBuffer.empty(5, (2,))
    for start in (0, 3):
        obs = jnp.arange(start, start + 3, dtype=jnp.float32)[:, None].repeat(2, 1)
        buf = buf.add(obs, jnp.arange(3), jnp.ones(3), obs + 100, jnp.array([0, 1, 0]))
    # Six transitions into five slots: the sixth overwrote the first.
    assert int(buf.position) == 1 and int(buf.filled) == 5
    assert buf.obs[:, 0].tolist() == [5, 1, 2, 3, 4]
    assert buf.terminated.tolist() == [0, 1, 0, 0, 1]
    half = ReplayBuffer.empty(8, (2,)).add(jnp.ones((3, 2)), jnp.zeros(3, jnp.int32),
                                            jnp.ones(3), jnp.ones((3, 2)), jnp.zeros(3))
    idx_obs = half.sample(jax.random.key(0), 200)["obs"]
    assert bool((idx_obs == 1).all())                  # only the 3 written slots


def test_epsilon_decays_linearly_then_stays():
    dqn = DQN(config.RLConfig(total_steps=1000), config.DQNConfig(
        epsilon_start=1.0, epsilon_end=0.1, epsilon_fraction=0.5, learning_starts=0))
    hp = dqn.hyperparams()
    eps = [float(dqn.epsilon(hp, jnp.asarray(t))) for t in (0, 250, 500, 900)]
    assert eps == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_render_errors_are_clear(tmp_path, monkeypatch):
    run = tmp_path / "deepsea"
    run.mkdir()
    (run / "config.yaml").write_text(config.dump(tiny_ppo(**{"rl.env": "DeepSea-bsuite"})))
    with pytest.raises(ConfigError, match="gymnax cannot draw DeepSea-bsuite; it draws "
                                          "Acrobot-v1, CartPole-v1"):
        rl_run.render(run, tmp_path / "x.gif")
    (run / "config.yaml").write_text(config.dump(tiny_ppo()))
    monkeypatch.setitem(__import__("sys").modules, "pygame", None)   # not installed
    with pytest.raises(ConfigError, match=r"needs pygame: pip install 'jaxdl\[render\]'"):
        rl_run.render(run, tmp_path / "x.gif")


def test_another_environment_by_name_with_chunks_shorter_than_an_episode(tmp_path):
    """Chunks of 32 steps per environment: MountainCar's first episodes
    (200 steps) end only in the seventh chunk, so train_return is missing
    until then; monitoring it neither fails nor counts those chunks."""
    env = "MountainCar-v0"
    cfg = tiny_ppo(**{"rl.env": env, "rl.seeds": 1, "rl.total_steps": 1024,
                      "train.epochs": 8, "train.monitor": "train_return", "train.patience": 2,
                      "rl.eval_episodes": 0, "rl.test_episodes": 2})
    result = jaxdl.run(cfg, workdir=tmp_path / "run", quiet=True)
    assert result.status in ("completed", "early_stopped"), result.summary["reason"]
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert "return" not in train[0] and train[-1]["return"] == -200.0
    assert result.summary["best_epoch"] >= 7
    assert np.isfinite(result.summary["final"]["test"]["return"])


@pytest.mark.parametrize("double", [True, False])
def test_the_td_loss_by_hand(double):
    """The TD target against a numpy computation from the networks' outputs:
    r + gamma * (1 - terminated) * Q_target(s', a'), with a' the online
    network's choice (double DQN) or the target network's own maximum."""
    dqn = DQN(config.RLConfig(num_envs=2, total_steps=100, width=8, depth=1),
              config.DQNConfig(double=double, loss="mse", learning_starts=0, target_every=10,
                               batch_size=4, buffer_size=8))
    online = dqn.net.init(jax.random.key(0), jnp.zeros((1, 4)))
    target = dqn.net.init(jax.random.key(1), jnp.zeros((1, 4)))
    rng = np.random.default_rng(0)
    batch = {"obs": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32),
             "next_obs": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32),
             "action": jnp.array([0, 1, 1, 0], jnp.int32),
             "reward": jnp.array([1.0, 0.5, -1.0, 2.0]),
             "terminated": jnp.array([0.0, 1.0, 0.0, 0.0])}
    loss, q_mean = dqn._td_loss(online, target, batch, None, 0.9)
    q = np.asarray(dqn.net.apply(online, batch["obs"]))
    q_next_online = np.asarray(dqn.net.apply(online, batch["next_obs"]))
    q_next_target = np.asarray(dqn.net.apply(target, batch["next_obs"]))
    a_next = q_next_online.argmax(1) if double else q_next_target.argmax(1)
    bootstrap = q_next_target[np.arange(4), a_next]
    y = np.array([1.0, 0.5, -1.0, 2.0]) + 0.9 * np.array([1, 0, 1, 1]) * bootstrap
    taken = q[np.arange(4), [0, 1, 1, 0]]
    assert float(loss) == pytest.approx(np.mean((taken - y) ** 2), rel=1e-5)
    assert float(q_mean) == pytest.approx(taken.mean(), rel=1e-5)
    # The target is a constant: no gradient flows into the bootstrap.
    grads = jax.grad(lambda p: dqn._td_loss(online, p, batch, None, 0.9)[0])(target)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_a_tiny_dqn_learns_cartpole():
    dqn = DQN(config.RLConfig(num_envs=4, total_steps=40_000, width=64, depth=2),
              config.DQNConfig(learning_rate=1e-3, learning_starts=1000, target_every=500,
                               epsilon_fraction=0.3, buffer_size=10_000, batch_size=64))
    state, m = jax.jit(dqn.run, static_argnums=1)(jax.jit(dqn.init)(jax.random.key(0)),
                                                  dqn.num_updates)
    returns = np.asarray(m["episode_return"])
    first, last = float(np.nanmean(returns[:500])), float(np.nanmean(returns[-1000:]))
    greedy, _ = jax.jit(dqn.evaluate, static_argnums=2)(state, jax.random.key(1), 10)
    # A random policy lasts about 22 steps.
    assert first < 40 and last > 80 and float(greedy.mean()) > 100, (first, last, greedy)
