#!/usr/bin/env bash
# Issue 7's GPU bar as one prepared device call: the MNIST MLP sweep at
# population 1 (the plain sweep) and 16 on the same GPU, same sampler seed and
# trial budget; the bar is population 16 >= 8x the trials per hour.
#
# The device machine reaches no package registry and sees only this
# checkout, so the call is prepared here first:
#
#   bash benchmarks/gpu_population.sh prepare
#
# downloads, for the device's Python 3.12, the wheels of the dependencies it
# lacks or holds at other versions than the ones tested here (optuna and its
# database layer; flax, optax, orbax-checkpoint) into .whl/, copies MNIST
# from $JAXDL_DATA_DIR into .gpudata/, and has git ignore both
# (.git/info/exclude). JAX itself is the device's own
# (its CUDA plugin must match its jaxlib). Then one device call:
#
#   run(command="bash benchmarks/gpu_population.sh run", carry=[".whl", ".gpudata"],
#       timeout_s=540)
#
# prints the versions and the GPU, runs a 1-epoch smoke training, then
# benchmarks/population_sweep.py, and writes everything to $OUT as it goes
# (a timeout still brings back what finished). Override the sizes with
# POPULATIONS="1 16 auto" and the budget with TRIALS=N.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the device lacks, or holds at other versions than the ones tested here
# (taken from this checkout's environment: make env).
WHEELS=(optuna alembic SQLAlchemy Mako colorlog flax optax orbax-checkpoint)
VENV=${VENV:-.venv}

prepare() {
  [ -n "${JAXDL_DATA_DIR:-}" ] || {
    echo "set JAXDL_DATA_DIR to the folder that holds mnist/" >&2; exit 2; }
  [ -d "$JAXDL_DATA_DIR/mnist" ] || { echo "no mnist/ in $JAXDL_DATA_DIR" >&2; exit 2; }
  [ -x "$VENV/bin/python" ] || { echo "no $VENV: run make env first" >&2; exit 2; }
  # The versions first (a missing package stops here, before anything is written).
  local pins specs
  pins=$("$VENV/bin/python" -c '
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    print(f"{name}=={md.version(name)}")' "${WHEELS[@]}")
  mapfile -t specs <<< "$pins"
  mkdir -p .git/info
  for d in /.whl/ /.gpudata/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
  done
  rm -rf .whl .gpudata && mkdir -p .whl .gpudata
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${specs[@]}"
  cp -r "$JAXDL_DATA_DIR/mnist" .gpudata/
  du -sh .whl .gpudata
}

run() {
  local out=${OUT:-$(mktemp -d)}
  [ -d .whl ] && [ -d .gpudata/mnist ] || {
    echo "run 'bash benchmarks/gpu_population.sh prepare' here first, and carry .whl and .gpudata" >&2
    exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD" JAXDL_DATA_DIR="$PWD/.gpudata" MPLBACKEND=Agg \
    PYTHONUNBUFFERED=1
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 - <<'EOF'
import importlib.metadata as md, jax
for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "optuna", "numpy"):
    print(p, md.version(p))
print("devices", jax.devices())
EOF
  } 2>&1 | tee "$out/versions.txt"
  # One short training first: a failure here costs seconds, not the sweep.
  python3 -m jaxdl train experiments/mnist_mlp.yaml --workdir /tmp/smoke --no-progress \
    --set train.epochs=1 2>&1 | tail -20 | tee "$out/smoke.txt"
  # shellcheck disable=SC2086
  python3 benchmarks/population_sweep.py --spec sweeps/mnist_mlp.yaml \
    --populations ${POPULATIONS:-1 16} ${TRIALS:+--trials $TRIALS} \
    --no-equality --no-epoch-cost 2>&1 | tee "$out/gpu_population.jsonl"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash benchmarks/gpu_population.sh prepare|run" >&2; exit 2 ;;
esac
