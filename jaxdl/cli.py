"""``jaxdl`` command line: argument parsing only; each command calls one
library function.

    jaxdl train CONFIG [--set key=value ...] [--workdir DIR] [--resume] [--seeds N] (RL)
                       [--init-from RUN_DIR]               (transfer learning)
                       [--coordinator HOST:PORT --num-processes N --process-id I]
    jaxdl eval RUN_DIR [--which best|latest] [--split test ...] [--episodes N] (RL: greedy)
    jaxdl sample RUN_DIR [--n N] [--out PNG]          (GAN runs: an image grid)
    jaxdl sample RUN_DIR [--prompt TEXT] [--length N] [--temperature T] [--top-k K]
    jaxdl sweep SWEEP [--trials N] [--timeout S] [--storage URL] [--study NAME] [--population K]
                      [--study-dir DIR] [--workers K] [--seed S] [-v]
    jaxdl report STUDY_DIR_OR_URL [--study NAME] [--out DIR] [--top N]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 2, 3


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdl", description="Train and evaluate JAX models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("config", help="experiment YAML (see experiments/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.learning_rate=3e-4")
    t.add_argument("--seeds", type=_positive,
                   help="RL runs: agents trained side by side (the same as --set rl.seeds=N)")
    t.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from this run's checkpoint (transfer learning; the same as "
                   "--set init_from=RUN_DIR; the config's transfer section says what is "
                   "loaded, frozen or fine-tuned)")
    t.add_argument("--workdir", help="run directory (default runs/<name>-<fingerprint>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in the run directory from its latest checkpoint")
    bars = t.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true",
                      help="progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", action="store_true", help="one line per epoch, no bars")
    t.add_argument("--quiet", action="store_true", help="print only errors")
    d = t.add_argument_group(
        "multi-host jobs", "run the same command on every host (one process per host, or per "
        "group of devices); SLURM job steps and Cloud TPU pod slices are detected without "
        "these, and $JAXDL_COORDINATOR, $JAXDL_NUM_PROCESSES, $JAXDL_PROCESS_ID are read "
        "when they are not given")
    d.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0, which the others connect to")
    d.add_argument("--num-processes", type=_positive, help="processes in the job")
    d.add_argument("--process-id", type=int, help="this process's index, 0..N-1")

    e = sub.add_parser("eval", help="evaluate a run's best checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=("best", "latest"), default="best")
    e.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="split(s) to evaluate (default: test)")
    e.add_argument("--data-dir", help="data directory, if not the one the run used")
    e.add_argument("--episodes", type=_positive,
                   help="RL runs: greedy episodes per agent (default rl.test_episodes)")
    e.add_argument("--seed", type=int, help="RL runs: the episodes' seed (default: the run's "
                   "own test episodes, as in summary.json)")
    e.add_argument("--render", metavar="GIF",
                   help="RL runs: also write one greedy episode of an agent as an animated "
                   "GIF (classic control needs pygame: pip install 'jaxdl[render]')")
    e.add_argument("--agent", type=int, default=0, help="RL runs: the agent --render draws")
    e.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("sample", help="generate from a run's checkpoint: a PNG grid of "
                       "images (GAN runs) or text (language-model runs)")
    s.add_argument("run_dir")
    s.add_argument("--n", type=_positive, help="GAN: images in the grid (default 64)")
    s.add_argument("--out", help="GAN: PNG to write (default RUN_DIR/sample-<which>-seed<seed>"
                   ".png)")
    s.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    s.add_argument("--length", type=int, default=300, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature; 0 always takes the most likely character")
    s.add_argument("--top-k", type=int, help="sample among the k most likely characters")
    s.add_argument("--num", type=int, default=1, help="independent samples")
    s.add_argument("--seed", type=int, default=0,
                   help="sampling seed (same seed, same text or images)")
    s.add_argument("--which", choices=("best", "latest"), default="best")

    w = sub.add_parser("sweep", help="run or continue an Optuna sweep from a YAML spec",
                       description="Runs the study until it holds budget.trials finished "
                       "trials; re-running the same command continues it.")
    w.add_argument("spec", help="sweep YAML (see sweeps/)")
    w.add_argument("--trials", type=int, help="finished trials the study should hold")
    w.add_argument("--timeout", type=float, help="seconds to keep starting new trials")
    w.add_argument("--storage", help="memory | sqlite | journal | journal:PATH | "
                   "sqlite:///PATH | postgresql://user:password@host/db "
                   "(default: SQLite file in the study directory)")
    w.add_argument("--study", help="study name (default: the spec's name)")
    w.add_argument("--study-dir", help="study directory (default: studies/<study name>)")
    w.add_argument("--workers", type=int, help="worker processes on this machine")
    w.add_argument("--seed", type=int, help="sampler seed")
    w.add_argument("--population", help="K: train up to K same-shaped trials as one vmapped "
                   "program; auto: the size with the best measured throughput; 1: one trial "
                   "at a time (default: the spec's population, else 1)")
    w.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a spec value, e.g. --set pruner.name=none")
    w.add_argument("-v", "--verbose", action="store_true", help="print every trial's epochs")
    sbars = w.add_mutually_exclusive_group()
    sbars.add_argument("--progress", action="store_true",
                       help="progress bar even when stderr is not a terminal")
    sbars.add_argument("--no-progress", action="store_true",
                       help="one line per finished trial, no bar")
    w.add_argument("--quiet", action="store_true", help="print only errors")

    r = sub.add_parser("report", help="ranked table and plots of an existing study")
    r.add_argument("target", help="study directory, or storage URL (sqlite:///..., "
                   "journal:PATH, postgresql://...)")
    r.add_argument("--study", help="study name (when the storage holds several)")
    r.add_argument("--storage", help="storage URL for a study directory whose database "
                   "password is not on disk")
    r.add_argument("--out", help="where trials.jsonl and plots/ go (default: the study "
                   "directory, or studies/<name> for a URL)")
    r.add_argument("--top", type=int, default=20, help="rows of the table (0: all)")
    return p


def _sweep_overrides(args: argparse.Namespace) -> dict:
    from jaxdl import config

    out = {}
    for key, opt in (("budget.trials", "trials"), ("budget.timeout", "timeout"),
                     ("storage", "storage"), ("name", "study"), ("study_dir", "study_dir"),
                     ("workers", "workers"), ("sampler.seed", "seed"),
                     ("population", "population")):
        value = getattr(args, opt)
        if value is not None:
            out[key] = value
    problems: list[str] = []
    out.update(config._parse_overrides(args.overrides, problems))
    if problems:
        raise config.ConfigError(problems, "--set")
    return out


def _train_overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"rl.seeds={args.seeds}"] if args.seeds is not None else []
    if args.init_from is not None:   # quoted: a directory named "1" stays a string
        extra.append(f"init_from={json.dumps(args.init_from)}")
    return args.overrides + extra


def _algorithm(args: argparse.Namespace) -> str | None:
    """The algorithm the command will run (None when unknown or unreadable:
    the command itself then reports the problem)."""
    from jaxdl import config, experiment
    from jaxdl.errors import JaxdlError

    try:
        if args.command == "train":
            return config.load(args.config, _train_overrides(args)).algorithm
        if args.command == "sweep":
            from jaxdl.sweep import spec

            return spec.load(args.spec).base.algorithm
        if args.command in ("eval", "sample"):
            return experiment.run_config(args.run_dir).algorithm
    except (JaxdlError, OSError):
        return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from jaxdl import allocator, compilation_cache, config, experiment
    from jaxdl.errors import JaxdlError

    if _algorithm(args) not in config.RL_ALGORITHMS:
        # Before JAX's CPU backend starts. Not for RL runs: the one-arena
        # setting made the seed-vmapped PPO program ~1.6x slower
        # (benchmarks/ppo_cartpole.py --reuse-freed-memory).
        allocator.reuse_freed_memory()

    if args.command not in ("sweep", "report"):   # a sweep caches in its study directory
        compilation_cache.enable()
    try:
        if args.command == "sweep":
            from jaxdl import sweep

            spec = sweep.load(args.spec, _sweep_overrides(args))
            progress = False if args.no_progress else (True if args.progress else None)
            sweep.run(spec, verbose=args.verbose, progress=progress, quiet=args.quiet)
            return EXIT_OK
        if args.command == "report":
            from jaxdl import sweep

            study, study_dir = sweep.load_study(args.target, args.study, args.storage)
            out = args.out or study_dir or f"studies/{study.study_name}"
            sweep.report(study, out, top=args.top or None)
            return EXIT_OK
        if args.command == "train":
            from jaxdl import parallel

            # Before any JAX work: the job's processes form one set of devices.
            parallel.initialize(args.coordinator, args.num_processes, args.process_id)
            cfg = config.load(args.config, _train_overrides(args))
            progress = False if args.no_progress else (True if args.progress else None)
            result = experiment.run(cfg, workdir=args.workdir, resume=args.resume,
                                    progress=progress, quiet=args.quiet)
            if result.status == "diverged":
                print(f"jaxdl: run diverged: {result.summary['reason']}", file=sys.stderr)
                return EXIT_DIVERGED
            return EXIT_OK
        if args.command == "sample":
            from jaxdl import generate

            if experiment.run_config(args.run_dir).algorithm == "gan":
                from jaxdl import gan_run

                path = gan_run.sample_grid(args.run_dir, args.n or 64, seed=args.seed,
                                           which=args.which, out=args.out)
                print(path)
                return EXIT_OK
            if args.n is not None or args.out is not None:
                raise config.ConfigError("--n and --out are for GAN runs; a language model "
                                         "takes --num, --length, --prompt", args.run_dir)
            texts = generate.sample_run(args.run_dir, prompt=args.prompt, length=args.length,
                                        temperature=args.temperature, top_k=args.top_k,
                                        seed=args.seed, num=args.num, which=args.which)
            for i, text in enumerate(texts):
                if args.num > 1:
                    print(f"=== sample {i + 1} ===")
                print(text)
            return EXIT_OK
        if args.command == "eval":
            out = experiment.evaluate(args.run_dir, args.which, tuple(args.split or ["test"]),
                                      data_dir=args.data_dir, episodes=args.episodes,
                                      seed=args.seed)
            if args.render:
                from jaxdl import rl_run

                path, total = rl_run.render(args.run_dir, args.render, args.which,
                                            agent=args.agent, seed=args.seed or 0)
                out["render"] = {"path": str(path), "return": total}
            if args.json:
                print(json.dumps(out))
            else:
                for split, metrics in out.items():
                    if split == "render":
                        print(f"episode of agent {args.agent} (return {metrics['return']:.1f}): "
                              f"{metrics['path']}")
                        continue
                    if split == "agents":
                        print("agents' mean returns: "
                              + " ".join(f"{v:.1f}" for v in metrics))
                        continue
                    if split == "epoch":
                        continue
                    vals = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    print(f"{split} (epoch {out['epoch']} checkpoint): {vals}")
            return EXIT_OK
    except JaxdlError as e:
        print(f"jaxdl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        again = ("re-run the same command to continue the study" if args.command == "sweep"
                 else "use --resume")
        print(f"jaxdl: interrupted; finished checkpoints are kept ({again})", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
