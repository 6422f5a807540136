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

    # Agent 0 of two is the one-agent run: same parameters, same test episodes.
    one = jaxdl.run(tiny_ppo(**{"rl.seeds": 1}), workdir=tmp_path / "one", quiet=True)
    a = jaxdl.evaluate(run_dir, "latest", episodes=5)
    b = jaxdl.evaluate(one.run_dir, "latest", episodes=5)
    assert a["agents"][0] == pytest.approx(b["agents"][0], abs=1e-3)
    assert a["epoch"] == b["epoch"] == 3


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
    out = jaxdl_cli("eval", tmp_path / "run", "--episodes", "6", "--json")
    got = json.loads(out.stdout)
    assert len(got["agents"]) == 2 and got["test"]["return"] == pytest.approx(
        np.mean(got["agents"]))
    text = jaxdl_cli("eval", tmp_path / "run", "--episodes", "6").stdout
    assert "agents' mean returns:" in text and "return_std" in text
    bad = jaxdl_cli("eval", tmp_path / "run", "--split", "val", check=False)
    assert bad.returncode == 2 and "use --episodes N" in bad.stderr
    bad = jaxdl_cli("eval", tmp_path / "run", "--episodes", "0", check=False)
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr
    with pytest.raises(ConfigError, match="is a dqn run; read it back with jaxdl.rl_run"):
        jaxdl.restore(tmp_path / "run")


def test_hyperparameters_are_data_a_new_learning_rate_compiles_nothing(tmp_path):
    cfg = tiny_ppo(**{"train.epochs": 2, "rl.total_steps": 512, "rl.width": 24})   # unseen shape
    first = jaxdl.run(cfg, workdir=tmp_path / "a", quiet=True)
    assert first.summary["compile_seconds"] > 0
    other = cfg.replace({"ppo.learning_rate": 3e-3, "ppo.ent_coef": 0.0, "ppo.clip_eps": 0.1,
                         "rl.gamma": 0.9, "seed": 5})
    second = jaxdl.run(other, workdir=tmp_path / "b", quiet=True)
    assert second.summary["compile_seconds"] == 0
    assert (second.summary["final"]["train"]["value_loss"]
            != first.summary["final"]["train"]["value_loss"])


def test_a_ppo_sweep_searches_data_hyperparameters(tmp_path):
    from jaxdl import sweep

    spec = sweep.from_dict({
        "name": "tiny_ppo_sweep", "base": config.to_dict(tiny_ppo()),
        "space": {"ppo.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2,
                                        "log": True},
                  "ppo.ent_coef": {"type": "float", "low": 0.0, "high": 0.05},
                  "ppo.clip_eps": {"type": "float", "low": 0.1, "high": 0.3}},
        "objective": {"metric": "val_return", "value": "last"},
        "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 1},
        "budget": {"trials": 3}, "study_dir": str(tmp_path / "study"),
    })
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
