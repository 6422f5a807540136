"""Storage URLs, heartbeats on the journal file, and the budget lock."""

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from jaxdl.errors import ConfigError
from jaxdl.sweep import storage as storage_lib


@pytest.mark.parametrize("url, kind, path", [
    (None, "sqlite", "S/study.db"),
    ("sqlite", "sqlite", "S/study.db"),
    ("memory", "memory", None),
    ("journal", "journal", "S/journal.log"),
    ("journal:other.log", "journal", "other.log"),
    ("journal:///tmp/x/j.log", "journal", "/tmp/x/j.log"),
    ("sqlite:///rel.db", "sqlite", "rel.db"),
    ("sqlite:////abs/s.db", "sqlite", "/abs/s.db"),
    ("postgresql://u:secret@127.0.0.1:5432/db", "rdb", None),
    ("postgresql+psycopg2://u@host/db", "rdb", None),
])
def test_resolve(url, kind, path):
    info = storage_lib.resolve(url, "S")
    assert info.kind == kind
    assert (info.path is None) == (path is None)
    if path is not None:
        assert info.path == Path(path)
    assert "secret" not in info.display


@pytest.mark.parametrize("url, expected", [
    ("postgres-db", "is not a storage URL; use memory, sqlite"),
    ("sqlite:/x.db", "a SQLite URL is sqlite:///PATH"),
    ("journal:", "journal:PATH needs a path"),
])
def test_resolve_errors(url, expected):
    with pytest.raises(ConfigError, match=expected):
        storage_lib.resolve(url, "S")


def test_redact():
    assert storage_lib.redact("postgresql://bob:pw@h:5432/d") == "postgresql://bob:***@h:5432/d"
    assert storage_lib.redact("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_unreachable_database_is_a_clear_error():
    info = storage_lib.resolve("postgresql://u:pw@127.0.0.1:1/nodb", ".")
    with pytest.raises(ConfigError, match=r"cannot open postgresql://u:\*\*\*@127.0.0.1:1/nodb"):
        storage_lib.make(info)


@pytest.mark.parametrize("url", [None, "journal", "memory"])
def test_every_storage_holds_a_study(tmp_path, url):
    info = storage_lib.resolve(url, tmp_path)
    st = storage_lib.make(info)
    study = optuna.create_study(storage=st, study_name="s", load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    if url is not None and url != "memory":
        again = optuna.load_study(study_name="s", storage=storage_lib.make(info))
        assert len(again.trials) == 3
        assert info.path.exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_journal_heartbeat_fails_and_requeues_a_dead_trial(tmp_path):
    info = storage_lib.resolve("journal", tmp_path)
    st = storage_lib.make(info, interval=1, grace=2, retries=1)
    assert optuna.storages._heartbeat.is_heartbeat_enabled(st)
    study = optuna.create_study(storage=st, study_name="hb")
    live, dead = study.ask(), study.ask()
    for t in (live, dead):
        t.suggest_float("x", 0, 1)
        t.report(0.5, 1)
        t.set_user_attr("run_dir", f"r{t.number}")
    time.sleep(1.5)
    st.record_heartbeat(live._trial_id)   # the live one keeps beating
    time.sleep(1.0)
    assert st._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[live.number].state == TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == TrialState.WAITING
    assert retry.params == trials[dead.number].params
    assert retry.user_attrs["run_dir"] == f"r{dead.number}"
    assert retry.intermediate_values == {1: 0.5}
    assert retry.system_attrs["failed_trial"] == dead.number
    # The retry starts fresh: its inherited (old) heartbeat does not make it
    # stale; the live trial, beating 1 s ago, is not stale either.
    st.record_heartbeat(live._trial_id)
    t = study.ask()
    assert t.number == retry.number
    assert st._get_stale_trial_ids(study._study_id) == []


def test_sqlite_heartbeat_is_configured(tmp_path):
    st = storage_lib.make(storage_lib.resolve(None, tmp_path), interval=3, grace=7, retries=2)
    assert st.get_heartbeat_interval() == 3 and st.grace_period == 7
    assert st.get_heartbeat_stale_trial_callback()._max_retry == 2


@pytest.mark.parametrize("url", [None, "journal", "memory"])
def test_budget_lock_is_exclusive(tmp_path, url):
    info = storage_lib.resolve(url, tmp_path)
    inside, overlaps = [], []

    def work():
        for _ in range(20):
            with storage_lib.budget_lock(info, "study/x"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


def test_sqlite_writes_ahead_and_a_killed_writer_loses_no_commit(tmp_path):
    """study.db is in write-ahead-log mode, synchronous=NORMAL (no fsync per
    trial.report); a process killed right after its reports leaves them all
    readable by the next one."""
    import sqlite3
    import subprocess
    import sys

    info = storage_lib.resolve(None, tmp_path)
    storage_lib.make(info)
    code = f"""
import os, signal, optuna
from jaxdl.sweep import storage as s
st = s.make(s.resolve(None, {str(tmp_path)!r}))
with st.engine.connect() as c:
    import sqlalchemy
    print(c.execute(sqlalchemy.text("PRAGMA synchronous")).scalar(), flush=True)
study = optuna.create_study(storage=st, study_name="w")
trial = study.ask()
for step in range(50):
    trial.report(step / 100, step)
os.kill(os.getpid(), signal.SIGKILL)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == -9, out.stderr
    assert out.stdout.split() == ["1"]   # NORMAL
    with sqlite3.connect(tmp_path / "study.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    study = optuna.load_study(study_name="w", storage=storage_lib.make(info))
    (trial,) = study.get_trials()
    assert trial.intermediate_values == {s: s / 100 for s in range(50)}
