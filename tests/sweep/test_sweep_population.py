"""Population sweeps: trials are ordinary Optuna trials, grouped by shape,
one compile per shape, pruned members stop, interruption re-queues, auto
measures, the CLI finishes the budget; spec errors."""

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import optuna
import pytest
from optuna.trial import TrialState

import jaxdl
from jaxdl import config, population, sweep
from jaxdl.errors import ConfigError
from jaxdl.sweep import population as sweep_population
from jaxdl.sweep.objective import may_prune
from jaxdl.sweep.population import PopulationSweep, shape_key
from tests.helpers import REPO, tiny_sweep
from tests.sweep.test_sweep_driver import PruneAt, finished


def _with_space(spec, **space):
    tree = spec.to_dict()
    tree["space"].update(space)
    return sweep.spec.from_dict(tree, base_dir=None)


def _driver(spec, study, on_epoch=None):
    objective = sweep.Objective(spec, on_epoch=on_epoch)
    return PopulationSweep(spec, study, objective, size=spec.population)


def test_population_trials_are_ordinary_optuna_trials(tmp_path):
    spec = tiny_sweep(tmp_path, population=3)
    study = sweep.run(spec, quiet=True)
    done = finished(study)
    assert len(done) == 6
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        vals = {r["epoch"]: r["accuracy"] for r in rows if r["split"] == "val"}
        assert t.intermediate_values == vals     # reported = measured, every epoch
        assert t.user_attrs["epochs"] == summary["epochs"] == max(vals)
        assert t.user_attrs["population"] == summary["population"]
        assert t.user_attrs["population"]["size"] == 3
        assert "test" in summary["final"] and (run_dir / "curves.png").exists()
        cfg = config.load(run_dir / "config.yaml")
        assert cfg.optim.learning_rate == t.params["optim.learning_rate"]
        if t.state == TrialState.COMPLETE:
            assert t.value == summary["best"]["val"]["accuracy"]
    best = study.best_trial
    assert (Path(best.user_attrs["run_dir"]) / "checkpoints").is_dir()
    session = json.loads((spec.directory / "sweep.json").read_text())["sessions"][-1]
    # tiny_spiral searches only data (learning rate, dropout): one shape.
    assert session["population"] == 3 and session["compiled_shapes"] == 1
    # Each epoch a member trained is booked once; idle slots make up the rest.
    assert session["member_epochs"] == sum(t.user_attrs["epochs"] for t in done)
    assert session["slot_epochs"] >= session["member_epochs"]
    assert (spec.directory / "trials.jsonl").exists()


def test_groups_by_shape_and_compiles_once_per_shape(tmp_path):
    spec = tiny_sweep(tmp_path, storage="memory", **{
        "budget.trials": 8, "sampler.n_startup_trials": 8,
        "population": {"size": 2, "group_trials": 2}})
    spec = _with_space(spec, **{"model.width": {"type": "categorical", "choices": [8, 16]}})
    study = optuna.create_study(direction=spec.direction,
                                sampler=sweep.driver.make_sampler(spec),
                                pruner=optuna.pruners.NopPruner())
    driver = _driver(spec, study)
    driver.run()
    assert len(finished(study)) == 8
    assert len(driver.groups) >= 4           # group_trials 2: a new group every 2 trials
    widths = {g["shape"]["model.width"] for g in driver.groups}
    assert driver.compiled_shapes == len(widths) == len(driver.shapes)
    for shape in driver.shapes.values():     # each program traced once per shape
        assert len(shape.pops) == 1
        pop = next(iter(shape.pops.values()))
        assert all(n == 1 for n in pop.traces.values()), pop.traces
    by_group = {}
    for t in study.get_trials():
        by_group.setdefault(t.user_attrs["population"]["group"], set()).add(
            t.params["model.width"])
    assert all(len(w) == 1 for w in by_group.values())   # a group is one shape


def test_pruned_members_stop_being_reported(tmp_path):
    spec = tiny_sweep(tmp_path, population=3, storage="memory", **{"train.epochs": 5})
    study = optuna.create_study(direction=spec.direction, pruner=PruneAt(2))
    _driver(spec, study).run()
    done = finished(study)
    assert len(done) == 6
    for t in done:
        assert t.state == TrialState.PRUNED and t.user_attrs["status"] == "stopped"
        assert set(t.intermediate_values) == {1, 2}
        rows = [json.loads(x) for x in
                (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert max(r["epoch"] for r in rows) == 2


def test_members_equal_their_trials_run_plainly(tmp_path):
    """Same params, same values: population 3 against the plain sweep."""
    plain = sweep.run(tiny_sweep(tmp_path / "a", storage="memory"), quiet=True, report=False)
    spec = tiny_sweep(tmp_path / "b", storage="memory")
    study = optuna.create_study(direction=spec.direction, pruner=optuna.pruners.NopPruner())
    for t in plain.get_trials():
        study.enqueue_trial(t.params)
    spec = spec.replace({"population": 3, "budget.trials": len(plain.get_trials())})
    _driver(spec, study).run()
    for a, b in zip(sorted(plain.get_trials(), key=lambda t: t.params["optim.learning_rate"]),
                    sorted(study.get_trials(), key=lambda t: t.params["optim.learning_rate"]),
                    strict=True):
        assert a.params == b.params
        for step, v in a.intermediate_values.items():
            assert b.intermediate_values[step] == pytest.approx(v, abs=1e-6)


def test_interrupted_members_are_requeued_and_resumed(tmp_path):
    spec = tiny_sweep(tmp_path, population=3, **{"train.epochs": 4, "checkpoint.every": 1})
    study = sweep.open_study(spec)
    seen = {"n": 0}

    def interrupt(number, epoch, epochs, value):
        seen["n"] += 1
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _driver(spec, study, on_epoch=interrupt).run()
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(interrupted) == 3    # the population's 3 members
    assert all(t.user_attrs["status"] == "interrupted" for t in interrupted)
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert sorted(t.params["optim.learning_rate"] for t in waiting) == \
        sorted(t.params["optim.learning_rate"] for t in interrupted)
    study = sweep.run(spec, quiet=True, report=False)
    done = finished(study)
    assert len(done) == 6
    resumed = {t.user_attrs["run_dir"] for t in interrupted}
    for t in done:
        if t.user_attrs["run_dir"] in resumed:
            assert t.user_attrs["epochs"] == 4
            assert set(t.intermediate_values) == {1, 2, 3, 4}


def test_auto_measures_sizes_and_finishes_the_budget(tmp_path):
    spec = tiny_sweep(tmp_path, population="auto")
    study = sweep.run(spec, quiet=True, report=False)
    assert len(finished(study)) == 6
    session = json.loads((spec.directory / "sweep.json").read_text())["sessions"][-1]
    rates = {int(k): v for k, v in session["auto_rates"].items()}
    cost = {int(k): v for k, v in session["auto_trial_seconds"].items()}
    probed = sorted(rates)
    assert probed[0] == 1 and set(probed) <= {1, 2, 4, 8} and len(probed) >= 2
    assert sorted(cost) == probed and all(v > 0 for v in [*rates.values(), *cost.values()])
    # A size is taken only when it costs less per trial than the one taken
    # before it by more than AUTO_GAIN: none probed beats the choice so.
    chosen = session["population"]
    gain = 1 + sweep_population.AUTO_GAIN
    assert chosen in probed and all(cost[k] * gain >= cost[chosen] for k in probed)
    assert chosen == 1 or cost[chosen] * gain < cost[1]


def _probe_job():
    """The tiny spiral's job and a fresh state of its shape (auto's probe input)."""
    from jaxdl import experiment
    from tests.helpers import spiral_cfg

    cfg = spiral_cfg()
    job = experiment.SupervisedJob(cfg, layout=None)
    return job, experiment.new_state(cfg, job.engine, job.dataset)


def _epochs_at(monkeypatch, rates, on_plain=lambda: None):
    """choose_size's epoch timings made ``rates[size]`` member-epochs per
    second, the probe's programs still run for real; ``on_plain`` runs
    after each plain timing."""
    real_plain, real_pop = sweep_population._plain_epoch, sweep_population._population_epoch

    def plain(*args):
        real_plain(*args)
        on_plain()
        return 1 / rates[1]

    def pop(p, *args):
        real_pop(p, *args)
        return p.size / rates[p.size]

    monkeypatch.setattr(sweep_population, "_plain_epoch", plain)
    monkeypatch.setattr(sweep_population, "_population_epoch", pop)


@pytest.mark.parametrize("rates, chosen, probed", [
    ({1: 100, 2: 140, 4: 150, 8: 400}, 2, [1, 2, 4]),     # 4 gains 7 %: stop at 2
    ({1: 100, 2: 110, 4: 300, 8: 900}, 1, [1, 2]),        # 2 gains 10 %: plain
    ({1: 100, 2: 150, 4: 225, 8: 340}, 8, [1, 2, 4, 8]),  # every doubling gains 50 %
    ({1: 100, 2: 90, 4: 80, 8: 70}, 1, [1, 2]),
])
def test_auto_doubles_while_each_doubling_gains_enough(monkeypatch, rates, chosen, probed):
    """The rule of choose_size, with each size's member-epochs per second
    what the case says (the probe's programs run for real) and so many
    trials that compiles cost nothing per trial."""
    job, state = _probe_job()
    _epochs_at(monkeypatch, rates)
    probe = sweep_population.choose_size(job, state, [1, 2, 4, 8], dropout=False,
                                         trials=10**12)
    assert probe.size == chosen and sorted(probe.rates) == probed
    assert probe.rates == pytest.approx({k: rates[k] for k in probed})
    assert sorted(probe.pops) == probed[1:]


@pytest.mark.parametrize("rate8, chosen, probed", [
    (1e6, 8, [1, 8]),              # 2 and 4 cannot win on their compiles alone
    (10.0, 4, [1, 4, 8]),          # 8 gains but trains slowly: 4 is timed, and wins
    (1e-3, 4, [1, 2, 4, 8]),       # 8 loses: the others, doubling
])
def test_auto_times_the_largest_size_first_when_compiles_dominate(monkeypatch, rate8, chosen,
                                                                  probed):
    """12 trials of 3 epochs over unbounded shapes, every program 1 s to
    compile: a plain trial's modelled cost is its compile, so auto times 8
    right after plain (costs: plain 1.0, 8 0.0625 + 3 / rate8, 4 0.125, 2
    0.25 s per trial)."""
    job, state = _probe_job()
    compiled = [0.0]
    _epochs_at(monkeypatch, {1: 1e6, 2: 1e6, 4: 1e6, 8: rate8},
               on_plain=lambda: compiled.__setitem__(0, compiled[0] + 1.0))
    monkeypatch.setattr(type(job.engine), "compile_seconds", property(lambda e: compiled[0]))
    monkeypatch.setattr(population.Population, "compile_seconds", property(lambda p: 1.0))
    probe = sweep_population.choose_size(job, state, [1, 2, 4, 8], dropout=False, trials=12,
                                         shapes=None)
    assert sorted(probe.rates) == probed and probe.size == chosen
    assert probe.trial_seconds[1] == pytest.approx(1.0, abs=1e-4)


def test_auto_counts_the_compiles_a_population_saves():
    """The model behind auto: a plain sweep compiles each new shape its
    trials draw, a population sweep each its groups draw."""
    ts = sweep_population.trial_seconds
    # The playground's 32 shapes, 20 trials of up to 100 epochs (measured:
    # a plain epoch 2.7 ms and 2 s of compiles; 4 members 666 epochs/s).
    plain = ts(1, 370, 2.0, epochs=100, trials=20, shapes=32, group_trials=2)
    pop4 = ts(4, 666, 2.2, epochs=100, trials=20, shapes=32, group_trials=8)
    assert plain == pytest.approx(32 * (1 - (31 / 32) ** 20) / 20 * 2.0 + 100 / 370)
    assert pop4 * 3 < plain
    # The MNIST MLP's 72 shapes, 24 trials of 8 epochs (measured: 227 steps/s
    # plain, 192 member-steps/s at 2 members; 843 steps an epoch): plain wins.
    assert ts(1, 227 / 843, 3.0, epochs=8, trials=24, shapes=72, group_trials=2) < \
        ts(2, 192 / 843, 3.5, epochs=8, trials=24, shapes=72, group_trials=4)
    # Unbounded shapes: every plain trial compiles, a group compiles once.
    assert ts(1, 1e9, 2.0, epochs=1, trials=10, shapes=None, group_trials=1) == \
        pytest.approx(2.0)
    assert ts(2, 1e9, 2.0, epochs=1, trials=10, shapes=None, group_trials=4) == \
        pytest.approx(0.5)
    # One shape: each sweep compiles it once.
    assert ts(1, 1e9, 2.0, epochs=1, trials=10, shapes=1, group_trials=1) == \
        pytest.approx(0.2)


def test_distinct_shapes_of_a_search_space(tmp_path):
    assert sweep_population.distinct_shapes(
        sweep.load(REPO / "sweeps" / "playground_spiral.yaml")) == 4 * 4 * 2
    assert sweep_population.distinct_shapes(
        sweep.load(REPO / "sweeps" / "mnist_mlp.yaml")) == 3 * 3 * 8
    spec = tiny_sweep(tmp_path)   # learning rate and dropout: data, not shape
    assert sweep_population.distinct_shapes(spec) == 1
    assert sweep_population.distinct_shapes(_with_space(spec, **{
        "model.width": {"type": "int", "low": 8, "high": 64, "step": 8},
        "model.depth": {"type": "int", "low": 1, "high": 3}})) == 8 * 3
    assert sweep_population.distinct_shapes(_with_space(spec, **{
        "data.noise": {"type": "float", "low": 0.05, "high": 0.2}})) is None


@pytest.mark.parametrize("whole", [True, False])
def test_auto_times_plain_epochs_with_the_plain_programs(whole):
    """Size 1 is the plain engine: the programs it times are the ones a
    plain run then calls (its epoch, the validation evaluation; a call of
    the probe's steps when the epoch is longer), the template state is
    copied, not donated, and an epoch longer than the probe is estimated
    from a population's first steps."""
    job, state = _probe_job()
    engine = job.engine
    steps = engine.steps_per_epoch if whole else max(1, engine.steps_per_epoch // 3)
    assert engine.steps_per_epoch >= 3
    probe = sweep_population.choose_size(job, state, [1, 2], steps=steps, dropout=False)
    rates, pops = probe.rates, probe.pops
    assert set(rates) == {1, 2} and all(v > 0 for v in rates.values())
    assert all(probe.compile_seconds[k] > 0 for k in rates)
    keys = {sig[0] for sig in engine._programs._fns}
    length = engine._chunks()[0] if whole else min(engine._chunks()[0], steps)
    assert ("train", length, False, False) in keys
    assert any(k[0] == "eval" for k in keys)
    assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(state))
    epochs = {sig[0] for sig in pops[2].programs._fns if sig[0][0] == "epoch"}
    assert epochs == {("epoch", engine.steps_per_epoch if whole else steps)}


def test_population_sweep_through_the_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxdl", "sweep", str(REPO / "sweeps" / "tiny_spiral.yaml"),
         "--study-dir", str(tmp_path / "s"), "--population", "4", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "6 finished trials (budget 6)" in out.stdout
    assert "populations of 4: " in out.stdout and "1 distinct shapes compiled" in out.stdout
    rows = [json.loads(x) for x in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["state"] in ("complete", "pruned")]) == 6


def test_shape_key_ignores_data_fields():
    spec = tiny_sweep(Path("/tmp"))
    a = spec.trial_config({"optim.learning_rate": 0.1, "model.dropout": 0.2})
    b = spec.trial_config({"optim.learning_rate": 0.01})
    assert shape_key(a) == shape_key(b)
    assert shape_key(a) != shape_key(a.replace({"model.width": 64}))
    assert shape_key(a) != shape_key(a.replace(seed=5))    # the seed draws the shared data
    assert "seed" in population.DATA_FIELDS


@pytest.mark.parametrize("warmup,interval", [(0, 1), (1, 1), (10, 5), (3, 4)])
def test_may_prune_is_optunas_interval_rule(warmup, interval):
    from optuna.pruners._percentile import _is_first_in_interval_step

    spec = tiny_sweep(Path("/tmp"), **{"pruner.n_warmup_steps": warmup,
                                       "pruner.interval_steps": interval})
    reported = []
    for step in range(1, 30):
        optuna_says = step >= warmup and _is_first_in_interval_step(
            step, {*reported, step}, warmup, interval)
        assert may_prune(spec, step, reported[-1] if reported else None) == optuna_says, step
        reported.append(step)
    assert not may_prune(tiny_sweep(Path("/tmp"), **{"pruner.name": "none"}), 5, 4)


@pytest.mark.parametrize("value,expected", [
    (0, "population: must be an integer >= 1 or auto, got 0"),
    ("many", "population: must be an integer >= 1 or auto, got 'many'"),
    ({"size": 2, "groups": 3}, "population.groups"),
    ({"size": 2, "group_trials": 0}, "population.group_trials: must be an integer >= 1"),
])
def test_bad_population_values(tmp_path, value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        tiny_sweep(tmp_path, population=value)


def test_population_needs_a_proposing_sampler_and_a_supervised_model(tmp_path):
    spec = _with_space(tiny_sweep(tmp_path), **{
        "optim.learning_rate": {"type": "categorical", "choices": [0.01, 0.1]},
        "model.dropout": {"type": "categorical", "choices": [0.0]}})
    with pytest.raises(ConfigError, match="a grid sampler cannot"):
        spec.replace({"sampler.name": "grid", "population": 2})
    with pytest.raises(ConfigError, match="population: auto measures supervised programs; "
                                          "give a ppo sweep a size"):
        sweep.load(REPO / "sweeps" / "cartpole_ppo.yaml", {"population": "auto"})
    assert sweep.load(REPO / "sweeps" / "cartpole_ppo.yaml", {"population": 2}).population == 2


def test_a_ppo_sweep_in_populations(tmp_path):
    """PPO trials of one shape in lockstep: learning rate, entropy coefficient
    and clip range per member; each trial an ordinary one, its run as a
    plain trial's."""
    from tests.rl.test_rl_run import tiny_ppo_sweep

    spec = tiny_ppo_sweep(tmp_path, name="ppo_pop", pruner={"name": "none"},
                          budget={"trials": 4}, population=2)
    study = sweep.run(spec, quiet=True, report=False)
    done = finished(study)
    assert len(done) == 4 and all(t.state == TrialState.COMPLETE for t in done)
    session = json.loads((spec.directory / "sweep.json").read_text())["sessions"][-1]
    assert session["groups"] == 2 and session["compiled_shapes"] == 1
    t = done[1]
    run_dir = Path(t.user_attrs["run_dir"])
    for name in ("agents.json", "learning_curve.csv", "summary.json", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    assert t.user_attrs["population"] == {"size": 2, "group": 0}
    assert set(t.intermediate_values) == {1, 2, 3}
    # The member's run is its plain run: same config, same numbers.
    alone = jaxdl.run(config.load(run_dir / "config.yaml"), workdir=tmp_path / "alone",
                      quiet=True)
    assert t.value == pytest.approx(alone.summary["final"]["val"]["return"], rel=1e-4)


def test_spec_round_trips_population(tmp_path):
    spec = tiny_sweep(tmp_path).replace({"population": {"size": 4, "group_trials": 6}})
    assert (spec.population, spec.group_trials) == (4, 6)
    again = sweep.spec.from_dict(spec.to_dict(), base_dir=None)
    assert (again.population, again.group_trials) == (4, 6)
    assert tiny_sweep(tmp_path, population="3").population == 3




def test_slow_epochs_do_not_make_members_stale(tmp_path):
    """Epochs longer than the heartbeat grace: the driver's heartbeat thread
    keeps its members alive through each count (fail_stale_trials, which on
    a journal file also counts a trial's start)."""
    spec = tiny_sweep(tmp_path, storage="journal", **{
        "budget.trials": 3, "heartbeat.interval": 1, "heartbeat.grace": 2,
        "pruner.name": "none", "population": {"size": 2, "group_trials": 3}})
    spec = _with_space(spec, **{"train.epochs": {"type": "int", "low": 1, "high": 3}})
    study = sweep.open_study(spec)
    # Trial 0 ends after 1 epoch and its slot is refilled (after a count)
    # while trial 1 has been running longer than the grace.
    for epochs in (1, 3, 1):
        study.enqueue_trial({"optim.learning_rate": 0.01, "model.dropout": 0.0,
                             "train.epochs": epochs})
    _driver(spec, study, on_epoch=lambda *a: time.sleep(1.6)).run()
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE] * 3, states


def test_a_group_slower_to_set_up_than_the_grace_keeps_its_opener(tmp_path, monkeypatch):
    """The trial that opens a group beats from the moment it is asked: a
    shape that takes longer than heartbeat.grace to set up (data, engine,
    first compiles) must not get its opener failed as stale by the group's
    next ask."""
    spec = tiny_sweep(tmp_path, storage="journal", **{
        "budget.trials": 2, "heartbeat.interval": 1, "heartbeat.grace": 2,
        "pruner.name": "none", "train.epochs": 1,
        "population": {"size": 2, "group_trials": 2}})
    study = sweep.open_study(spec)
    build = sweep_population._Shape.__init__

    def slow_build(self, *args, **kwargs):
        time.sleep(4.0)
        build(self, *args, **kwargs)

    monkeypatch.setattr(sweep_population._Shape, "__init__", slow_build)
    _driver(spec, study).run()
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE] * 2, states


def test_ctrl_c_while_a_group_is_set_up_requeues_its_opener(tmp_path, monkeypatch):
    spec = tiny_sweep(tmp_path, population=2)
    study = sweep.open_study(spec)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_population._Shape, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _driver(spec, study).run()
    [opener] = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert opener.user_attrs["status"] == "interrupted"
    [retry] = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert retry.params == opener.params


def test_the_prepared_gpu_check_says_what_is_missing(tmp_path):
    """benchmarks/gpu_population.sh, copied into an empty checkout: run
    before prepare, prepare without JAXDL_DATA_DIR, without MNIST or
    without the checkout's environment, and no verb each stop with a
    message and status 2, writing nothing."""
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "gpu_population.sh"
    script.write_text((REPO / "benchmarks" / "gpu_population.sh").read_text())

    def sh(*args, **env):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **env})

    out = sh("run", OUT=str(tmp_path / "out"))
    assert out.returncode == 2 and "gpu_population.sh prepare' here first" in out.stderr
    out = sh("prepare", JAXDL_DATA_DIR=str(tmp_path))
    assert out.returncode == 2 and f"no mnist/ in {tmp_path}" in out.stderr
    out = sh("prepare")
    assert out.returncode == 2 and "set JAXDL_DATA_DIR" in out.stderr
    data = tmp_path / "out" / "data"
    (data / "mnist").mkdir(parents=True)
    out = sh("prepare", JAXDL_DATA_DIR=str(data))
    assert out.returncode == 2 and "no .venv: run make env first" in out.stderr
    (data / "mnist").rmdir(), data.rmdir(), data.parent.rmdir()
    out = sh()
    assert out.returncode == 2 and "usage:" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks"]
