"""Test set-up: 4 host CPU devices (before JAX is imported) so sharding code
runs on CPU, and no writes outside tmp directories (removed at the end).

The tests compile hundreds of small programs and run each for a few steps,
so XLA's CPU backend compiles them at optimization level 0 here
(``TEST_XLA_FLAGS``): about 40 % less compile time, while the programs run
2-3x slower, which a test's few steps do not notice. The operations and
their semantics are the same, and the equality tests compare programs
compiled alike. ``JAXDL_TEST_XLA_OPT=default`` keeps XLA's level, and the
``xla_defaults`` fixture gives it back to what a test starts (a notebook
that trains for real).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0",)
if (os.environ.get("JAXDL_TEST_XLA_OPT", "fast") != "default"
        and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]):
    os.environ["XLA_FLAGS"] += " " + " ".join(TEST_XLA_FLAGS)
os.environ.setdefault("MPLBACKEND", "Agg")
# CLI subprocesses enable the persistent compilation cache: keep it out of ~,
# in a directory the process that made it (pytest's, not its xdist workers,
# which inherit the variable) removes when it exits.
if "JAXDL_CACHE_DIR" not in os.environ:
    os.environ["JAXDL_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdl-xla-")
    atexit.register(shutil.rmtree, os.environ["JAXDL_CACHE_DIR"], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from jaxdl import allocator  # noqa: E402

allocator.reuse_freed_memory()   # as the jaxdl command does, before JAX starts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def xla_defaults(monkeypatch):
    """Processes this test starts compile with XLA's own optimization level,
    not the suite's quick one (``TEST_XLA_FLAGS``)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in TEST_XLA_FLAGS]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))


def _data_dir_holding(relpath: str, what: str) -> Path:
    """``$JAXDL_DATA_DIR`` when it holds ``relpath`` (else skip the test)."""
    d = os.environ.get("JAXDL_DATA_DIR")
    if not d or not (Path(d) / relpath).exists():
        pytest.skip(f"JAXDL_DATA_DIR with {what} not set")
    return Path(d)


@pytest.fixture
def mnist_dir() -> Path:
    """The data directory holding mnist/*.gz (skip when there is none)."""
    return _data_dir_holding("mnist/train-images-idx3-ubyte.gz", "mnist/")


@pytest.fixture
def shakespeare_dir() -> Path:
    """The data directory holding tinyshakespeare/input.txt (skip when there is none)."""
    return _data_dir_holding("tinyshakespeare/input.txt", "tinyshakespeare/")


# A quick MNIST scorer for tests: 3 epochs on 6,000 images (the real one
# trains 8 epochs on 54,000).
QUICK_SCORER = {"train.epochs": 3, "data.train_limit": 6000}


@pytest.fixture(scope="session")
def quick_scorer_cache(tmp_path_factory) -> Path:
    """A scorer cache holding the quick scorer (trained once per session)."""
    from jaxdl import scorer

    data = _data_dir_holding("mnist/train-images-idx3-ubyte.gz", "mnist/")
    cache = tmp_path_factory.mktemp("scorers")
    scorer.load_scorer("mnist", str(data), overrides=QUICK_SCORER, cache=cache)
    return cache


@pytest.fixture(scope="session")
def gan_data_dir(tmp_path_factory, quick_scorer_cache) -> Path:
    """A data directory for GAN runs: MNIST (links to ``$JAXDL_DATA_DIR``'s
    files) and the quick scorer cached where a GAN run looks for the real one,
    so no test trains the full scorer or writes into the shared data."""
    import shutil

    from jaxdl import scorer

    src = _data_dir_holding("mnist/train-images-idx3-ubyte.gz", "mnist/")
    d = tmp_path_factory.mktemp("gan-data")
    (d / "mnist").symlink_to(src / "mnist")
    quick = scorer.scorer_dir("mnist", str(src), QUICK_SCORER, quick_scorer_cache)
    shutil.copytree(quick, scorer.scorer_dir("mnist", str(d)))
    return d
