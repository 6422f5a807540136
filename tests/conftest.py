"""Test set-up: 4 host CPU devices (before JAX is imported) so sharding code
runs on CPU, and no writes outside tmp directories."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
os.environ.setdefault("MPLBACKEND", "Agg")
# CLI subprocesses enable the persistent compilation cache: keep it out of ~.
os.environ.setdefault("JAXDL_CACHE_DIR", tempfile.mkdtemp(prefix="jaxdl-xla-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from jaxdl import allocator  # noqa: E402

allocator.reuse_freed_memory()   # as the jaxdl command does, before JAX starts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


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
