"""jaxdl.allocator: XLA CPU's per-execution temporaries are reused, not
mapped and page-faulted in again on every call."""

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import REPO

# A jitted function whose temporaries (~64 MB) exceed glibc's mmap threshold;
# prints the minor page faults of each of 30 calls.
PROBE = """
import resource, sys
from jaxdl import allocator
print(allocator.reuse_freed_memory())
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sin(x[:, None] * x[None, :4096]) @ jnp.ones(4096)))
x = jnp.linspace(0, 1, 4096)
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc malloc settings")


def _faults(malloc: str) -> tuple[str, list[int]]:
    env = {**os.environ, "JAXDL_MALLOC": malloc}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], [int(n) for n in out[1:]]


@glibc
def test_temporaries_are_reused_instead_of_faulted_in_each_call():
    applied, faults = _faults("")
    system, system_faults = _faults("system")
    assert (applied, system) == ("True", "False")
    # 64 MB of fresh pages (~16k faults with 4 KiB pages, fewer with
    # transparent huge pages) every call with the system settings. Reusing,
    # a call faults only when the heap grows: often in the first calls, now
    # and then later (the heap settles at a few blocks' worth).
    reused = [n <= min(system_faults) / 20 for n in faults[10:]]
    assert sum(reused) >= 0.8 * len(reused), (faults, system_faults)


def test_does_nothing_after_jax_has_started(monkeypatch):
    import jax.numpy as jnp

    from jaxdl import allocator

    jnp.zeros(1).block_until_ready()                  # backends are up in this process
    monkeypatch.setattr(allocator, "_applied", False)
    assert allocator.reuse_freed_memory() is False


def test_does_nothing_under_a_preloaded_allocator(monkeypatch):
    from jaxdl import allocator

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.reuse_freed_memory() is False
