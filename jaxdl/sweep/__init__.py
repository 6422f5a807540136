"""Optuna hyperparameter sweeps over jaxdl experiments.

    import jaxdl.sweep
    spec = jaxdl.sweep.load("sweeps/mnist_mlp.yaml", {"budget.trials": 10})
    study = jaxdl.sweep.run(spec)          # an optuna.Study
    study.best_trial.user_attrs["run_dir"]  # -> jaxdl.restore(...) / jaxdl eval

The objective works on its own, with any Optuna study::

    objective = jaxdl.sweep.Objective(spec)
    study = optuna.create_study(direction=spec.direction)
    study.optimize(objective, n_trials=10, callbacks=[objective.cleanup])
"""

from jaxdl.sweep.driver import make_pruner, make_sampler, open_study, run
from jaxdl.sweep.objective import Objective
from jaxdl.sweep.reporting import load_study, report
from jaxdl.sweep.spec import SweepSpec, from_dict, load

__all__ = ["Objective", "SweepSpec", "from_dict", "load", "load_study", "make_pruner",
           "make_sampler", "open_study", "report", "run"]
