"""Data parallelism over a device mesh, multi-host jobs, mixed precision and
host input (``jaxdl.parallel``), on the 4 host CPU devices of conftest.py."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxdl import experiment, parallel
from jaxdl.algorithms import supervised
from jaxdl.errors import ConfigError
from tests.helpers import REPO, jaxdl, spiral_cfg

# Data parallel vs one device: the same global batches, gradients summed in
# another order. Measured, 3 epochs of the spiral MLP: 1.8e-7 on 4 devices,
# 2.5e-6 on a 2 x 2 fsdp mesh (width 256).
ATOL = 1e-5


def leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]


def max_diff(a, b) -> float:
    return max(float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())
               for x, y in zip(leaves(a), leaves(b), strict=True))


def train(tmp_path, name, **overrides):
    cfg = spiral_cfg(**{"checkpoint.enabled": False, **overrides})
    return experiment.run(cfg, workdir=tmp_path / name, quiet=True)


def test_conftest_gives_four_devices():
    assert jax.device_count() == 4


# -------------------------------------------------------------------- meshes


def test_mesh_asking_too_many_devices_lists_what_exists():
    with pytest.raises(ConfigError) as e:
        parallel.make_mesh(8)
    msg = str(e.value)
    assert "8 devices asked, 4 present" in msg
    assert "cpu:0, cpu:1, cpu:2, cpu:3" in msg


def test_mesh_axes_and_shardings():
    mesh = parallel.make_mesh(2, 2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
    lay = parallel.Layout(mesh, fsdp_min_size=64)
    assert lay.size == 4
    assert lay.batch_sharding().spec == P(("data", "fsdp"))
    assert lay.batch_sharding(axis=1).spec == P(None, ("data", "fsdp"))
    assert lay.leaf_sharding((10,)).spec == P()              # small: replicated
    assert lay.leaf_sharding((16, 64)).spec == P(None, "fsdp")   # largest divisible dim
    assert lay.leaf_sharding((64, 15)).spec == P("fsdp")
    assert lay.leaf_sharding((15, 15)).spec == P()            # nothing divides


def test_layout_from_config():
    assert parallel.layout(spiral_cfg()) is None              # auto on one CPU process
    assert parallel.layout(spiral_cfg(**{"parallel.data": 1})) is None
    lay = parallel.layout(spiral_cfg(**{"parallel.data": 4}))
    assert (lay.data, lay.fsdp, lay.input) == (4, 1, "device")
    lay = parallel.layout(spiral_cfg(**{"parallel.data": 2, "parallel.fsdp": 2,
                                        "parallel.input": "host"}))
    assert (lay.data, lay.fsdp, lay.input) == (2, 2, "host")
    with pytest.raises(ConfigError, match="8 devices asked, 4 present"):
        parallel.layout(spiral_cfg(**{"parallel.data": 8}))
    # auto on an accelerator: every device that splits the batch evenly
    assert parallel.auto_data(8, 1, 128) == 8
    assert parallel.auto_data(3, 1, 16) == 2
    assert parallel.auto_data(8, 2, 128) == 4


@pytest.mark.parametrize("overrides, message", [
    ({"parallel.data": 0}, "parallel.data: must be >= 1"),
    ({"parallel.data": "all"}, "parallel.data: expected a number of devices >= 1 or auto"),
    ({"parallel.fsdp": 0}, "parallel.fsdp"),
    ({"parallel.data": 3}, "train.batch_size: 16 does not split evenly over parallel.data 3"),
    ({"parallel.input": "disk"}, "parallel.input: must be one of auto, device, host"),
    ({"parallel.prefetch": 0}, "parallel.prefetch"),
    ({"precision": "fp16"}, "precision: must be one of fp32, bf16"),
    ({"paralel.data": 2}, "paralel"),
])
def test_bad_parallel_and_precision_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        spiral_cfg(**overrides)


def test_parallel_and_bf16_are_refused_where_they_do_not_apply(repo):
    from jaxdl import config

    with pytest.raises(ConfigError, match="parallel: not used by algorithm ppo"):
        config.load(repo / "experiments" / "cartpole_ppo.yaml", ["parallel.data=2"])
    with pytest.raises(ConfigError, match="precision: bf16 is for supervised runs"):
        config.load(repo / "experiments" / "cartpole_ppo.yaml", ["precision=bf16"])


def test_layout_is_not_part_of_the_fingerprint_but_precision_is():
    from jaxdl import config

    base = spiral_cfg()
    assert config.fingerprint(base) == config.fingerprint(spiral_cfg(**{"parallel.data": 4}))
    assert config.fingerprint(base) != config.fingerprint(spiral_cfg(precision="bf16"))


# ------------------------------------------------------------- data parallel


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return train(tmp_path_factory.mktemp("dp"), "single")


def test_four_devices_equal_one_device(tmp_path, single):
    four = train(tmp_path, "four", **{"parallel.data": 4})
    assert four.status == "completed"
    assert max_diff(four.state, single.state) < ATOL
    for split in ("val", "test"):
        for k, v in single.final[split].items():
            assert four.final[split][k] == pytest.approx(v, abs=1e-5)
    # the parameters live on all 4 devices, replicated
    p = jax.tree_util.tree_leaves(four.state.params)[0]
    assert len(p.sharding.device_set) == 4 and p.sharding.is_fully_replicated
    run = json.loads((tmp_path / "four" / "run.json").read_text())
    assert run["parallel"]["data"] == 4 and run["parallel"]["input"] == "device"


def test_host_input_equals_device_input_exactly(tmp_path):
    dev = train(tmp_path, "dev", **{"parallel.data": 4, "parallel.input": "device"})
    host = train(tmp_path, "host", **{"parallel.data": 4, "parallel.input": "host",
                                      "parallel.prefetch": 1})
    assert max_diff(dev.state, host.state) == 0.0


def test_host_input_prepares_the_next_epoch_while_this_one_trains(tmp_path):
    cfg = spiral_cfg(**{"parallel.data": 2, "parallel.input": "host"})
    job = experiment.SupervisedJob(cfg)
    state = job.new_state()
    state, _ = job.train_epoch(state, 1, None)
    ahead = job.engine._ahead
    assert ahead is not None      # epoch 2's batches, gathered and transferred
    key2 = jax.random.fold_in(job._keys["shuffle"], 2)
    assert ahead[0] == supervised._key_bytes(key2)
    state, _ = job.train_epoch(state, 2, None)   # takes them
    assert job.engine._ahead is not None and job.engine._ahead[0] != ahead[0]
    state, _ = job.train_epoch(state, 3, None)   # the last epoch prepares nothing
    assert job.engine._ahead is None


def test_fsdp_splits_large_leaves_and_trains_the_same(tmp_path):
    over = {"model.width": 256, "model.depth": 2}
    one = train(tmp_path, "one", **over)
    split = train(tmp_path, "fsdp", **over, **{"parallel.data": 2, "parallel.fsdp": 2})
    kernel = split.state.params["Dense_1"]["kernel"]           # 256 x 256
    assert kernel.sharding.spec == P(None, "fsdp") or kernel.sharding.spec == P("fsdp")
    assert not kernel.sharding.is_fully_replicated
    mu = split.state.opt_state
    moments = [x for x in jax.tree_util.tree_leaves(mu) if x.shape == (256, 256)]
    assert moments and all(not m.sharding.is_fully_replicated for m in moments)
    assert max_diff(one.state, split.state) < 1e-4


def test_checkpoints_of_a_mesh_run_resume_and_restore_on_one_device(tmp_path):
    cfg = spiral_cfg(**{"parallel.data": 4, "train.epochs": 4})
    full = experiment.run(cfg, workdir=tmp_path / "full", quiet=True)
    def interrupt(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, workdir=tmp_path / "part", quiet=True, reporter=interrupt)
    resumed = experiment.run(cfg, workdir=tmp_path / "part", resume=True, quiet=True)
    assert max_diff(resumed.state, full.state) == 0.0
    r = experiment.restore(tmp_path / "full", "latest")      # one device
    assert len(jax.tree_util.tree_leaves(r.params)[0].sharding.device_set) == 1
    assert max_diff(r.state, full.state) == 0.0


def test_gather_is_an_aligned_copy_a_cpu_device_takes_without_copying():
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    idx = np.array([[3, 1], [19, 0]])
    out = parallel.gather(x, idx)
    np.testing.assert_array_equal(out, x[idx])
    assert out.shape == (2, 2, 3) and out.ctypes.data % 64 == 0
    on_device = jax.device_put(out, jax.devices()[0], may_alias=True)
    assert np.shares_memory(np.asarray(on_device), out)


def test_population_refuses_an_explicit_data_axis():
    from jaxdl import population

    cfgs = [spiral_cfg(**{"parallel.data": 2}), spiral_cfg(**{"parallel.data": 2, "seed": 1})]
    with pytest.raises(ConfigError, match="population splits its trial axis"):
        population.train(cfgs)


# ----------------------------------------------------------------- precision


def test_cast_floating_leaves_integers_alone():
    tree = {"w": jnp.ones((2,), jnp.float32), "ids": jnp.arange(3)}
    out = supervised.cast_floating(tree, jnp.bfloat16)
    assert out["w"].dtype == jnp.bfloat16 and out["ids"].dtype == tree["ids"].dtype
    assert supervised.cast_floating(tree, None) is tree
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        supervised.compute_dtype("fp16")


def test_bf16_keeps_float32_master_weights_and_close_numbers(tmp_path, single):
    half = train(tmp_path, "bf16", precision="bf16")
    assert all(x.dtype == np.float32 for x in leaves(half.state.params))
    assert all(x.dtype in (np.float32, np.int32) for x in leaves(half.state.opt_state))
    # bfloat16 keeps 8 bits of mantissa: the same run to about 1e-2.
    assert half.final["val"]["loss"] == pytest.approx(single.final["val"]["loss"], rel=0.05)
    assert max_diff(half.state, single.state) < 0.05
    assert max_diff(half.state, single.state) > 0.0     # it did compute in bf16


def test_bf16_step_computes_in_bfloat16():
    cfg = spiral_cfg(precision="bf16")
    job = experiment.SupervisedJob(cfg)
    seen = []
    model = job.engine.model
    orig = type(model).__call__

    def spy(self, x, *a, **k):
        seen.append(x.dtype)
        return orig(self, x, *a, **k)

    type(model).__call__ = spy
    try:
        step = supervised.make_train_step(model, job.engine.tx, job.engine.task,
                                          dtype=jnp.bfloat16)
        state = job.new_state()
        jax.eval_shape(step, state, (jnp.zeros((16, 2)), jnp.zeros((16,), jnp.int32)),
                       jax.random.key(0))
    finally:
        type(model).__call__ = orig
    assert seen == [jnp.bfloat16]


# ------------------------------------------------------------ processes / I/O


def test_a_non_zero_process_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda *a: 1)
    assert not parallel.is_main()
    cfg = spiral_cfg(**{"checkpoint.enabled": False})
    result = experiment.run(cfg, workdir=tmp_path / "run")
    assert result.status == "completed" and result.summary["final"]["test"]
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator": "127.0.0.1:1234"}, "num_processes, process_id missing"),
    ({"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
     "process id 2 is not in 0..1"),
    ({"coordinator": "localhost", "num_processes": 2, "process_id": 0}, "expected HOST:PORT"),
])
def test_initialize_explains_an_incomplete_job(kwargs, message, monkeypatch):
    for name in ("JAXDL_COORDINATOR", "JAXDL_NUM_PROCESSES", "JAXDL_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=message):
        parallel.initialize(**kwargs)


def test_initialize_without_a_job_starts_nothing(monkeypatch):
    for name in ("JAXDL_COORDINATOR", "JAXDL_NUM_PROCESSES", "JAXDL_PROCESS_ID", "SLURM_JOB_ID",
                 "TPU_WORKER_HOSTNAMES", "JAXDL_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize() is False
    assert parallel.initialize("127.0.0.1:1", 1, 0) is False     # one process: no job
    monkeypatch.setenv("JAXDL_NUM_PROCESSES", "two")
    with pytest.raises(ConfigError, match="JAXDL_NUM_PROCESSES: expected an integer"):
        parallel.initialize()


def test_clusters_are_detected_from_their_variables(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "TPU_WORKER_HOSTNAMES",
                 "JAXDL_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    assert parallel._cluster_detected() is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel._cluster_detected() is None          # one task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel._cluster_detected() == "SLURM"
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
    assert parallel._cluster_detected() == "a Cloud TPU pod slice"


def test_cli_reports_an_incomplete_job_without_traceback(tmp_path):
    from tests.test_cli import write_cfg

    cfg = write_cfg(tmp_path / "c.yaml")
    out = jaxdl("train", cfg, "--coordinator", "127.0.0.1:1", check=False)
    assert out.returncode == 2
    assert "num_processes, process_id missing" in out.stderr and "Traceback" not in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_equal_one_process_on_four_devices(tmp_path):
    """Two ``jax.distributed`` processes with 2 CPU devices each (gloo
    collectives) train as one 4-device mesh, each feeding its own rows;
    they end where the 1-process 4-device run ends, and their checkpoint
    restores in one process."""
    from jaxdl import config

    cfg = tmp_path / "c.yaml"
    config.dump(spiral_cfg(**{"parallel.data": 4, "train.epochs": 3}), cfg)
    one = experiment.run(config.load(cfg), workdir=tmp_path / "one", quiet=True)

    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAXDL_CACHE_DIR="off", PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxdl", "train", str(cfg), "--workdir", str(tmp_path / "two"),
         "--no-progress", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "completed | 3 epochs" in outs[0]
    assert "epoch" not in outs[1]                     # only process 0 prints
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["parallel"]["processes"] == 2 and run["parallel"]["input"] == "host"
    two = experiment.restore(tmp_path / "two", "latest")   # restores in this 1-process run
    assert two.epoch == 3
    # gloo sums across processes in another order than one process does
    assert max_diff(two.state, one.state) < 1e-6
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["final"]["test"]["accuracy"] == pytest.approx(
        one.final["test"]["accuracy"], abs=1e-6)
    best = experiment.restore(tmp_path / "two", "best")   # saved from a host copy
    assert best.epoch == summary["best_epoch"]
    got = experiment.evaluate(tmp_path / "two", "latest")
    assert got["test"]["loss"] == pytest.approx(summary["final"]["test"]["loss"], rel=1e-6)
