"""JAX's persistent compilation cache, with thresholds low enough for the
small programs jaxdl compiles (the defaults skip them)."""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_dir", "enable"]


def default_dir() -> Path:
    """``$JAXDL_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxdl/xla`` (~/.cache)."""
    env = os.environ.get("JAXDL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "jaxdl" / "xla"


def enable(directory: str | Path | None = None) -> Path | None:
    """Cache compiled programs on disk so a repeated shape compiles once per
    machine. Set ``JAXDL_CACHE_DIR=off`` to disable (also when ``directory``
    is given). Returns the directory, or None when disabled."""
    if os.environ.get("JAXDL_CACHE_DIR", "").lower() == "off":
        return None
    path = Path(directory) if directory is not None else default_dir()
    path.mkdir(parents=True, exist_ok=True)
    current = jax.config.jax_compilation_cache_dir
    if current and Path(current) != path:
        # JAX opens the cache once per process; switching directories (a
        # sweep after a train in the same process) needs a reset.
        from jax._src import compilation_cache as _cc

        _cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return path
