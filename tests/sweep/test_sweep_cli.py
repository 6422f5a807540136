"""``jaxdl sweep`` and ``jaxdl report`` end to end on the tiny sweep, as real
subprocesses, and the report's table and plots."""

import json

import optuna
import pytest

from jaxdl import sweep
from jaxdl.sweep import reporting as report_lib
from tests.helpers import REPO, jaxdl

TINY = REPO / "sweeps" / "tiny_spiral.yaml"


def test_sweep_report_eval_end_to_end(tmp_path):
    d = tmp_path / "study"
    out = jaxdl("sweep", TINY, "--study-dir", d, "--trials", "4", "--seed", "3").stdout
    lines = out.splitlines()
    trial_lines = [x for x in lines if x.startswith("trial ")]
    assert len(trial_lines) == 4
    assert "4/4 finished" in trial_lines[-1] and "best val_accuracy" in trial_lines[-1]
    assert any(x.startswith("sweep tiny_spiral: the study holds 4 finished trials") for x in lines)
    assert any(x.startswith("rank  trial  state") for x in lines)
    for name in report_lib.PLOTS:
        assert (d / "plots" / f"{name}.png").stat().st_size > 1000
    meta = json.loads((d / "sweep.json").read_text())
    assert meta["study"] == "tiny_spiral" and meta["storage_kind"] == "sqlite"
    assert (d / "study.db").exists() and (d / "sweep.yaml").exists()
    assert any((d / "xla_cache").iterdir())   # persistent compilation cache in the study

    # Same command again: nothing is repeated.
    again = jaxdl("sweep", TINY, "--study-dir", d, "--trials", "4", "--seed", "3").stdout
    assert "continuing study 'tiny_spiral': 4 finished" in again
    assert not [x for x in again.splitlines() if x.startswith("trial ")]

    rep = jaxdl("report", d).stdout
    assert "study tiny_spiral: 4 trials" in rep
    best_line = next(x for x in rep.splitlines() if x.startswith("best: trial"))
    run_dir = best_line.split("jaxdl eval ")[1]
    ev = json.loads(jaxdl("eval", run_dir, "--json").stdout)
    assert 0 <= ev["test"]["accuracy"] <= 1

    url = f"sqlite:///{(d / 'study.db').resolve()}"
    rep2 = jaxdl("report", url, "--out", tmp_path / "r2", "--top", "2").stdout
    assert "... 2 more trials in trials.jsonl" in rep2
    assert (tmp_path / "r2" / "plots" / "optimization_history.png").exists()
    assert len((tmp_path / "r2" / "trials.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("args, expected", [
    (["sweep", "nothere.yaml"], "cannot read sweep file"),
    (["sweep", TINY, "--trials", "0"], "budget.trials: must be >= 1"),
    (["sweep", TINY, "--storage", "mongodb"], "is not a storage URL"),
    (["sweep", TINY, "--set", "train.epoks=2"], "train.epoks: no such key"),
    (["sweep", TINY, "--set", "novalue"], "expected key=value"),
    (["report", "nothere"], "nothere: no such study directory, and not a storage URL"),
    (["report", "sqlite:///nothere.db"], "no study storage at nothere.db"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, expected):
    proc = jaxdl(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="is not a study directory"):
        sweep.load_study(tmp_path / "empty")
    db = tmp_path / "two.db"
    for name in ("a", "b"):
        optuna.create_study(storage=f"sqlite:///{db}", study_name=name)
    with pytest.raises(Exception, match=r"holds 2 studies \(a, b\); name one with --study"):
        sweep.load_study(f"sqlite:///{db}")
    with pytest.raises(Exception, match="no study 'c'"):
        sweep.load_study(f"sqlite:///{db}", "c")
    study, study_dir = sweep.load_study(f"sqlite:///{db}", "a")
    assert study.study_name == "a" and study_dir is None


def test_report_ranks_and_skips_plots_it_cannot_draw(tmp_path):
    study = optuna.create_study(direction="maximize")
    d = optuna.distributions.FloatDistribution(0, 1)
    for i, (state, value) in enumerate([("COMPLETE", 0.5), ("COMPLETE", 0.9), ("PRUNED", None),
                                        ("FAIL", None)]):
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), value=value, params={"m.x": i / 4},
            distributions={"m.x": d}, intermediate_values={1: 0.1 * i},
            user_attrs={"epochs": 1}))
    ranked = report_lib.rank(study)
    assert [t.number for t in ranked] == [1, 0, 2, 3]
    text = report_lib.table(study)
    rows = text.splitlines()
    assert rows[0].split() == ["rank", "trial", "state", "value", "epochs", "x", "seconds"]
    assert rows[1].split()[:4] == ["1", "1", "complete", "0.9000"]
    assert rows[3].split()[:4] == ["3", "2", "pruned", "0.2000"]
    out = report_lib.report(study, tmp_path, quiet=True)
    assert set(out["plots"]) == set(report_lib.PLOTS)
    assert out["best"]["number"] == 1
    lonely = optuna.create_study()
    out = report_lib.report(lonely, tmp_path / "l", quiet=True)
    assert out["plots"] == {} and out["skipped"]["optimization_history"] == "no complete trial"
