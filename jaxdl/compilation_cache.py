"""Compilation: JAX's persistent compilation cache, with thresholds low
enough for the small programs jaxdl compiles (the defaults skip them), and
:class:`Programs`, the in-process table of programs compiled ahead of time."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

__all__ = ["BuiltByShape", "Programs", "default_dir", "enable"]


class Programs:
    """Programs compiled ahead of time (``jit(...).lower(...).compile()``),
    one per (key, argument structure, shapes and dtypes), so compile seconds
    are measured apart from running them and a shape compiles once.

    Attributes:
      seconds: time spent compiling, summed over the table's life.
    """

    def __init__(self):
        self.seconds = 0.0
        self._fns: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Callable], args: tuple,
            donate: tuple[int, ...] = ()):
        """The compiled ``make()`` for ``args`` (compiled on first use)."""
        leaves, treedef = jax.tree_util.tree_flatten(args)
        sig = (key, treedef, tuple((tuple(a.shape), str(a.dtype)) for a in leaves))
        fn = self._fns.get(sig)
        if fn is None:
            t0 = time.perf_counter()
            fn = jax.jit(make(), donate_argnums=donate).lower(*args).compile()
            self.seconds += time.perf_counter() - t0
            self._fns[sig] = fn
        return fn


class BuiltByShape:
    """Objects holding compiled programs (engines), kept by shape key, the
    most recently used last and at most ``size`` of them: a sweep over many
    shapes must not keep every compiled program alive."""

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The object for ``key``, built by ``build()`` the first time."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item
        item = self._items[key] = build()
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return item

    def __len__(self) -> int:
        return len(self._items)


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
    # Absolute: a relative directory (a sweep's studies/<name>/xla_cache)
    # would point elsewhere once the process changes directory.
    path = (Path(directory) if directory is not None else default_dir()).absolute()
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
