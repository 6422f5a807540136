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
of the heap's top, so a block freed by one step is reused by the next.
``benchmarks/allocator.py`` (300 LSTM steps, 2 cores) measured 0 faults per
step instead of 22,760 and 100.6 ms per step instead of 115.4. The costs:
the heap grows now and then when freed space is too fragmented for the
next block and is never given back, so it settles at several blocks' worth
(768 MB resident at the end of that run, 592 MB with the system settings),
and threads share one arena's lock.

The ``jaxdl`` command calls it at start; call it in a script before the
first JAX computation. ``JAXDL_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8   # glibc's malloc.h
_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc reuse freed blocks instead of unmapping them (see the
    module docstring). Returns True when the settings are in effect: on
    glibc, before JAX's backends start (their threads choose an arena at
    their first ``malloc``), with no other allocator preloaded, and unless
    ``JAXDL_MALLOC=system``. Calling it again is harmless. On a GPU host it
    brings nothing for device memory, and keeps its costs (one arena lock,
    a heap that is never trimmed)."""
    global _applied
    if _applied:
        return True
    if os.environ.get("JAXDL_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):    # jemalloc, tcmalloc: not glibc's
        return False
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False
    except (ImportError, AttributeError):
        pass
    libc = ctypes.CDLL("libc.so.6")
    results = [libc.mallopt(param, value) for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))]
    _applied = all(r == 1 for r in results)
    return _applied
