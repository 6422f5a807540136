"""Several worker processes on one study: a journal file and a real
PostgreSQL server (started by .ci/run; the test fails there if it is
missing, and is skipped elsewhere without JAXDL_TEST_POSTGRES_URL), and a
worker killed with SIGKILL mid-trial."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
from optuna.trial import TrialState

from jaxdl import sweep
from jaxdl.sweep import driver
from tests.helpers import REPO, tiny_sweep


def postgres_url() -> str:
    url = os.environ.get("JAXDL_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("JAXDL_REQUIRE_POSTGRES"):
            pytest.fail("JAXDL_REQUIRE_POSTGRES is set but JAXDL_TEST_POSTGRES_URL is not "
                        "(.ci/postgres.sh starts the server and prints it)")
        pytest.skip("no PostgreSQL server (set JAXDL_TEST_POSTGRES_URL; .ci/run does)")
    return url


def check_exact(study, n):
    trials = study.get_trials()
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    done = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    assert len(done) == n
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    run_dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(run_dirs) == len(set(run_dirs))      # no trial ran twice
    return done


def _three_workers(tmp_path, storage):
    spec = tiny_sweep(tmp_path, **{"storage": storage, "workers": 3, "budget.trials": 30,
                             "train.epochs": 2, "name": f"w{uuid.uuid4().hex[:8]}"})
    study = sweep.run(spec, quiet=True)
    done = check_exact(study, 30)
    pids = {t.user_attrs["pid"] for t in done}
    assert len(pids) >= 2 and os.getpid() not in pids    # spawned workers shared it
    return spec, study


def test_three_workers_on_a_journal_file(tmp_path):
    spec, _ = _three_workers(tmp_path, "journal")
    assert (spec.directory / "journal.log").exists()
    again = sweep.load_study(spec.directory)[0]           # what `jaxdl report` reads
    check_exact(again, 30)


def test_three_workers_on_postgresql(tmp_path):
    url = postgres_url()
    spec, study = _three_workers(tmp_path, url)
    fresh = optuna.load_study(study_name=spec.name, storage=url)
    check_exact(fresh, 30)
    # The password is never written: not in the study's files, not in its
    # attrs, not in a trial's run.json.
    secret = f":{urlparse(url).password}@"
    for f in ("sweep.json", "sweep.yaml", "trials.jsonl"):
        assert secret not in (spec.directory / f).read_text()
    assert secret not in str(fresh.user_attrs)
    run_dir = Path(fresh.best_trial.user_attrs["run_dir"])
    assert secret not in (run_dir / "run.json").read_text()


def test_worker_env_gives_each_worker_its_own_device():
    assert driver.worker_env(0, 2, []) == {}
    assert driver.worker_env(1, 2, ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "1"}
    shared = driver.worker_env(3, 4, ["0", "1"])
    assert shared["CUDA_VISIBLE_DEVICES"] == "1"
    assert shared["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"


@pytest.mark.parametrize("population", [1, 2])
def test_killed_worker_trial_is_retried_and_the_study_completes(tmp_path, population):
    """Population 2: the killed worker's members stop beating (the driver's
    heartbeat thread dies with it), so the other worker fails and re-queues
    them and resumes them from their checkpoints."""
    name = f"k{uuid.uuid4().hex[:8]}"
    study_dir = tmp_path / "study"
    cmd = [sys.executable, "-m", "jaxdl", "sweep", str(REPO / "sweeps" / "tiny_spiral.yaml"),
           "--study-dir", str(study_dir), "--study", name, "--storage", "journal",
           "--workers", "2", "--trials", "6", "--no-progress",
           "--set", "train.epochs=60", "--set", "checkpoint.every=5",
           "--set", "heartbeat.interval=1", "--set", "heartbeat.grace=5",
           "--set", "pruner.name=none", "--population", str(population)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    victim = None
    try:
        journal = study_dir / "journal.log"
        deadline = time.time() + 240
        while victim is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not journal.exists():
                continue
            st = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(journal)))
            try:
                study = optuna.load_study(study_name=name, storage=st)
            except KeyError:
                continue
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                # Mid-trial: some epochs reported and a checkpoint written.
                if (t.last_step or 0) >= 7 and "pid" in t.user_attrs:
                    victim = t
                    break
        assert victim is not None, "no running trial to kill"
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"was killed by signal {signal.SIGKILL.value}" in out
    study = sweep.load_study(study_dir)[0]
    trials = study.get_trials()
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params
    assert retry[0].user_attrs["run_dir"] == dead.user_attrs["run_dir"]   # resumed, not redone
    # Only the killed worker's trials failed: live ones kept beating.
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.user_attrs.get("pid") for t in failed} == {victim.user_attrs["pid"]}
    assert retry[0].user_attrs["epochs"] == 60
    assert len(retry[0].intermediate_values) == 60
    check_exact(study, 6)
