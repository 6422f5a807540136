"""``jaxdl`` command line: argument parsing only; each command calls one
library function.

    jaxdl train CONFIG [--set key=value ...] [--workdir DIR] [--resume]
    jaxdl eval RUN_DIR [--which best|latest] [--split test ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdl", description="Train and evaluate JAX models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("config", help="experiment YAML (see experiments/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.learning_rate=3e-4")
    t.add_argument("--workdir", help="run directory (default runs/<name>-<fingerprint>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in the run directory from its latest checkpoint")
    bars = t.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true",
                      help="progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", action="store_true", help="one line per epoch, no bars")
    t.add_argument("--quiet", action="store_true", help="print only errors")

    e = sub.add_parser("eval", help="evaluate a run's best checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=("best", "latest"), default="best")
    e.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="split(s) to evaluate (default: test)")
    e.add_argument("--data-dir", help="data directory, if not the one the run used")
    e.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from jaxdl import compilation_cache, config, experiment
    from jaxdl.errors import JaxdlError

    compilation_cache.enable()
    try:
        if args.command == "train":
            cfg = config.load(args.config, args.overrides)
            progress = False if args.no_progress else (True if args.progress else None)
            result = experiment.run(cfg, workdir=args.workdir, resume=args.resume,
                                    progress=progress, quiet=args.quiet)
            if result.status == "diverged":
                print(f"jaxdl: run diverged: {result.summary['reason']}", file=sys.stderr)
                return EXIT_DIVERGED
            return EXIT_OK
        if args.command == "eval":
            out = experiment.evaluate(args.run_dir, args.which, tuple(args.split or ["test"]),
                                      data_dir=args.data_dir)
            if args.json:
                print(json.dumps(out))
            else:
                for split, metrics in out.items():
                    if split == "epoch":
                        continue
                    vals = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    print(f"{split} (epoch {out['epoch']} checkpoint): {vals}")
            return EXIT_OK
    except JaxdlError as e:
        print(f"jaxdl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("jaxdl: interrupted; finished checkpoints are kept (use --resume)", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
