"""The objective and the driver, in process: pruning, divergence, failures,
resume, interruption, budget, artifacts, recompilation."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from jaxdl import config, experiment, sweep
from jaxdl.errors import ConfigError, DataError, JaxdlError
from tests.helpers import tiny_sweep


def finished(study):
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


class PruneAt(optuna.pruners.BasePruner):
    """Deterministic: prune every trial at one epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def prune(self, study, trial):
        return trial.last_step is not None and trial.last_step >= self.epoch


def test_objective_alone_with_study_optimize(tmp_path):
    spec = tiny_sweep(tmp_path)
    objective = sweep.Objective(spec)
    study = optuna.create_study(direction=spec.direction)
    study.optimize(objective, n_trials=2, callbacks=[objective.cleanup])
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == spec.directory / "trials" / study.study_name / f"trial-{t.number:04d}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert t.value == summary["best"]["val"]["accuracy"]
        assert t.user_attrs["epochs"] == 3 and t.user_attrs["status"] == "completed"
        assert t.user_attrs["fingerprint"] == summary["fingerprint"]
        assert set(t.user_attrs["final"]) == {"loss", "accuracy"}
        assert t.intermediate_values.keys() == {1, 2, 3}
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        vals = {r["epoch"]: r["accuracy"] for r in rows if r["split"] == "val"}
        assert t.intermediate_values == vals   # what was reported is what was measured
        cfg = config.load(run_dir / "config.yaml")
        assert cfg.optim.learning_rate == t.params["optim.learning_rate"]
        assert cfg.model.dropout == t.params["model.dropout"]


def test_pruning_stops_a_trial_and_no_more_epochs_run(tmp_path):
    spec = tiny_sweep(tmp_path, **{"train.epochs": 6})
    study = optuna.create_study(direction=spec.direction, pruner=PruneAt(2))
    study.optimize(sweep.Objective(spec), n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["epochs"] == 2 and t.user_attrs["status"] == "stopped"
    rows = [json.loads(x) for x in
            (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert max(r["epoch"] for r in rows) == 2


def test_diverging_trial_is_pruned_with_its_reason_and_the_sweep_goes_on(tmp_path):
    spec = tiny_sweep(tmp_path, **{
        "space": {"optim.learning_rate": {"type": "float", "low": 1e8, "high": 1e9,
                                          "log": True}},
        "optim.name": "sgd", "model.activation": "identity", "budget.trials": 2,
        "pruner.name": "none"})
    study = sweep.run(spec, quiet=True)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["status"] == "diverged"
        assert "diverged" in t.user_attrs["reason"] and "learning_rate" in t.user_attrs["reason"]


def test_an_exception_fails_one_trial_and_is_recorded(tmp_path, monkeypatch):
    real = experiment.run
    calls = {"n": 0}

    def flaky(cfg, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of device memory (simulated)")
        return real(cfg, **kw)

    monkeypatch.setattr(experiment, "run", flaky)
    study = sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 3}), quiet=True)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and len(finished(study)) == 3
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["error"] == "RuntimeError: out of device memory (simulated)"


def test_failures_stop_at_max_failed(tmp_path, monkeypatch):
    def broken(cfg, **kw):
        raise ValueError("broken")

    monkeypatch.setattr(experiment, "run", broken)
    study = sweep.run(tiny_sweep(tmp_path, **{"budget.max_failed": 2}), quiet=True)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2


def test_missing_data_stops_the_sweep_with_a_clear_error(tmp_path, monkeypatch):
    def no_data(cfg, **kw):
        raise DataError("mnist/train-images-idx3-ubyte.gz is missing")

    monkeypatch.setattr(experiment, "run", no_data)
    with pytest.raises(DataError, match="is missing"):
        sweep.run(tiny_sweep(tmp_path), quiet=True)
    study = sweep.load_study(tmp_path / "study")[0]
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_run_then_continue_without_losing_or_repeating(tmp_path, capsys):
    spec = tiny_sweep(tmp_path, **{"budget.trials": 4})
    study = sweep.run(spec)
    out = capsys.readouterr().out
    assert "trial 0 " in out and "4/4 finished" in out and "rank  trial  state" in out
    first = {t.number: (t.params, t.value, t.state) for t in study.trials}
    assert len(finished(study)) == 4

    again = sweep.run(spec, quiet=True)   # the budget is met: nothing runs
    assert {t.number: (t.params, t.value, t.state) for t in again.trials} == first

    more = sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 6}))
    out = capsys.readouterr().out
    assert "continuing study 'tiny_spiral': 4 finished" in out
    numbers = [t.number for t in more.trials]
    assert numbers == sorted(set(numbers)) and len(finished(more)) == 6
    assert {n: v for n, v in ((t.number, (t.params, t.value, t.state)) for t in more.trials)
            if n in first} == first
    meta = json.loads((spec.directory / "sweep.json").read_text())
    assert [s["trials"] for s in meta["sessions"]] == [4, 0, 2]
    for s in meta["sessions"]:
        assert 0 <= s["compile_fraction"] < 1


def test_a_journal_study_elsewhere_is_reported_from_its_directory(tmp_path):
    journal = tmp_path / "shared" / "j.log"
    spec = tiny_sweep(tmp_path, **{"storage": f"journal:{journal}", "budget.trials": 2})
    sweep.run(spec, quiet=True)
    assert journal.exists()
    study, d = sweep.load_study(spec.directory)
    assert d == spec.directory and len(finished(study)) == 2


def test_a_workers_error_fails_the_sweep(tmp_path, monkeypatch):
    # MNIST from an empty directory and a mirror that refuses at once.
    monkeypatch.setenv("JAXDL_MIRROR", "http://127.0.0.1:9/")
    spec = tiny_sweep(tmp_path, **{"storage": "journal", "workers": 2, "data.name": "mnist",
                             "data.dir": str(tmp_path / "nodata")})
    with pytest.raises(JaxdlError, match="worker 0 exited with 2"):
        sweep.run(spec, quiet=True)


def test_a_study_with_another_base_is_not_continued(tmp_path):
    sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 1}), quiet=True)
    with pytest.raises(ConfigError, match="was run with another base config or objective"):
        sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 2, "train.epochs": 4}), quiet=True)


def test_interrupted_trial_is_requeued_and_resumed(tmp_path, monkeypatch):
    real = experiment.run

    def interrupt_second(cfg, *, reporter=None, **kw):
        def rep(epoch, metrics):
            stop = reporter(epoch, metrics)
            if epoch == 2 and kw["workdir"].name == "trial-0001":
                raise KeyboardInterrupt
            return stop
        return real(cfg, reporter=rep, **kw)

    spec = tiny_sweep(tmp_path, **{"budget.trials": 3, "pruner.name": "none"})
    monkeypatch.setattr(experiment, "run", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(spec, quiet=True)
    study = sweep.load_study(spec.directory)[0]
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["status"] == "interrupted"

    monkeypatch.setattr(experiment, "run", real)
    study = sweep.run(spec, quiet=True)
    t = study.trials[2]
    assert t.state == TrialState.COMPLETE and t.params == study.trials[1].params
    assert t.user_attrs["run_dir"] == study.trials[1].user_attrs["run_dir"]   # resumed there
    rows = [json.loads(x) for x in
            (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [1, 2, 3]
    assert t.intermediate_values.keys() == {1, 2, 3}
    assert len(finished(study)) == 3


def test_timeout_stops_starting_trials(tmp_path, capsys):
    study = sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 50, "budget.timeout": 0.01}))
    assert "timeout of 0.01 s reached" in capsys.readouterr().out
    assert len(study.trials) <= 1


def test_only_the_best_trial_keeps_checkpoints(tmp_path):
    spec = tiny_sweep(tmp_path, **{"budget.trials": 4})
    study = sweep.run(spec, quiet=True)
    best = study.best_trial.user_attrs["run_dir"]
    with_ckpt = sorted(str(p.parent) for p in spec.directory.glob("trials/*/checkpoints"))
    assert with_ckpt == [best]
    for t in study.trials:   # everything else of every trial stays
        assert (Path(t.user_attrs["run_dir"]) / "summary.json").exists()
    ev = experiment.evaluate(best)
    assert 0 <= ev["test"]["accuracy"] <= 1

    keep = tiny_sweep(tmp_path / "k", **{"budget.trials": 3, "keep_all": True})
    sweep.run(keep, quiet=True)
    assert len(list(keep.directory.glob("trials/*/checkpoints"))) == 3


def test_a_pruned_trial_skips_its_last_checkpoint_unless_all_are_kept(tmp_path):
    """Cleanup deletes a pruned trial's checkpoints when it is told, so its
    reporter says not to write the last one (jaxdl.loop.Reporter)."""
    study = optuna.create_study()
    for keep_all in (False, True):
        objective = sweep.Objective(tiny_sweep(tmp_path / str(keep_all), keep_all=keep_all))
        reporter = objective.reporter(study.ask(), 3)
        assert reporter.discards_stopped is not keep_all


def test_same_shapes_compile_once(tmp_path, monkeypatch):
    # lr and dropout are data: after the first trial nothing compiles.
    monkeypatch.setattr(experiment, "_ENGINES", type(experiment._ENGINES)())
    study = sweep.run(tiny_sweep(tmp_path, **{"budget.trials": 4, "pruner.name": "none"}),
                      quiet=True)
    compile_s = [t.user_attrs["compile_seconds"] for t in study.trials]
    assert compile_s[0] > 0
    assert compile_s[1:] == [0.0, 0.0, 0.0]


def test_samplers_and_pruners_all_run(tmp_path):
    space = {"model.width": {"type": "int", "low": 8, "high": 16, "step": 8},
             "optim.learning_rate": {"type": "float", "low": 0.01, "high": 0.03, "step": 0.01}}
    for i, (sampler, pruner) in enumerate([("random", "percentile"), ("cmaes", "hyperband"),
                                           ("grid", "successive_halving"), ("qmc", "none")]):
        spec = tiny_sweep(tmp_path / str(i), **{"space": space, "sampler.name": sampler,
                                          "pruner.name": pruner, "budget.trials": 3})
        study = sweep.run(spec, quiet=True)
        assert len(finished(study)) == 3, (sampler, pruner)
        assert type(study.sampler).__name__.lower().startswith(sampler[:3])
    grid = tiny_sweep(tmp_path / "g",
                      **{"space": space, "sampler.name": "grid", "budget.trials": None})
    study = sweep.run(grid, quiet=True)
    assert len(study.trials) == 6   # 2 widths x 3 learning rates, then the grid is exhausted
    assert len({tuple(t.params.values()) for t in study.trials}) == 6


def test_memory_storage_for_library_use(tmp_path):
    study = sweep.run(tiny_sweep(tmp_path, **{"storage": "memory", "budget.trials": 2}), quiet=True)
    assert len(finished(study)) == 2
    # A second in-memory study in the same directory numbers trials from 0
    # again: its run directories must not collide with the first one's.
    again = sweep.run(tiny_sweep(tmp_path, **{"storage": "memory", "budget.trials": 2}), quiet=True)
    assert len(finished(again)) == 2
    dirs = {t.user_attrs["run_dir"] for t in study.trials + again.trials}
    assert len(dirs) == 4
    assert not (tmp_path / "study" / "study.db").exists()
    with pytest.raises(ConfigError, match="need a shared storage"):
        sweep.run(tiny_sweep(tmp_path, **{"storage": "memory", "workers": 2}), quiet=True)
