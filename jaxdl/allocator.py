"""Host memory reuse for XLA CPU: stop glibc from handing each train step's
temporaries back to the kernel.

XLA's CPU runtime allocates one block for an execution's temporaries (about
100 MB for the char-LSTM train step of ``benchmarks/lstm_speed.py``) with
``malloc`` from its worker threads, and frees it when the step ends. glibc
serves a block that large with a fresh ``mmap``: allocations above its mmap
threshold always, and a worker thread's arena (heaps of at most 64 MB)
cannot hold it either. Freed, it goes back to the kernel with ``munmap``;
the next step maps it again and page-faults every page in anew, 24,541
faults per step for that LSTM (measured with ``getrusage``).

:func:`reuse_freed_memory` sets glibc to one arena (the main one, which
grows with ``brk`` past 64 MB), no ``mmap`` for large blocks and no trimming
of the heap's top, so once the heap has grown to the working set (a few
steps) the block freed by one step is the block the next step gets: the
LSTM step above then page-faults 0 times (116 ms per step instead of 132
in one measurement on 2 cores). The cost: the process keeps its peak heap size rather than
returning freed memory, and threads share one arena's lock.

The ``jaxdl`` command calls it at start; call it in a script before the
first JAX computation. ``JAXDL_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8   # glibc's malloc.h
_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc reuse freed blocks instead of unmapping them (see the
    module docstring). Returns True when the settings are in effect: on
    glibc, before JAX's backends start (their threads choose an arena at
    their first ``malloc``), and unless ``JAXDL_MALLOC=system``. Calling it
    again is harmless."""
    global _applied
    if _applied:
        return True
    if os.environ.get("JAXDL_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False
    except (ImportError, AttributeError):
        pass
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
    return _applied
