"""Devices and hosts: meshes, shardings, multi-host start-up, process-0 I/O.

Data parallelism is JAX's own: a :class:`jax.sharding.Mesh` with a ``data``
axis (and an optional ``fsdp`` axis), the batch split over both, the
parameters and optimizer state replicated (or, on the ``fsdp`` axis, split
for large leaves), and the compiled step left to XLA, which inserts the
gradient reduction. Several hosts are several processes of one
``jax.distributed`` job; nothing here sends a byte itself.

In a script::

    import jaxdl
    jaxdl.parallel.initialize()               # a multi-host job: before any JAX work
    cfg = jaxdl.config.load("experiments/mnist_mlp.yaml", ["parallel.data=4"])
    jaxdl.run(cfg)                            # every process runs the same call

:func:`layout` turns a config into a :class:`Layout` (``None`` for one
device: the plain single-device program). A layout places host values
(:meth:`Layout.place`, the same on every process) and builds a global batch
from each process's own rows (:meth:`Layout.feed`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.errors import ConfigError

__all__ = ["DATA", "FSDP", "FSDP_MIN_SIZE", "Layout", "auto_data", "gather", "initialize",
           "is_main", "layout", "make_mesh", "process_count", "process_index"]

DATA, FSDP = "data", "fsdp"
# A leaf is split over the fsdp axis from this many elements on (smaller
# ones, biases and norms, are replicated: splitting them costs more
# collectives than the memory it saves).
FSDP_MIN_SIZE = 2 ** 14

# Where initialize() reads an explicit job description from.
ENV_COORDINATOR = "JAXDL_COORDINATOR"
ENV_NUM_PROCESSES = "JAXDL_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXDL_PROCESS_ID"
ENV_DISTRIBUTED = "JAXDL_DISTRIBUTED"


# -------------------------------------------------------------- processes


def process_index() -> int:
    """This process's index in a multi-host job (0 alone)."""
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Whether this process writes metrics, summaries, plots and progress
    (process 0; Orbax checkpoints are written by all processes together)."""
    return process_index() == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}: expected an integer, got {value!r}", "<environment>") from None


def _cluster_detected() -> str | None:
    """The cluster whose variables describe a multi-process job, if any
    (JAX's own cluster detection then reads them)."""
    if (os.environ.get("SLURM_JOB_ID") and (_env_int("SLURM_NTASKS") or 1) > 1
            and "SLURM_PROCID" in os.environ):
        return "SLURM"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h]) > 1:
        return "a Cloud TPU pod slice"
    if (os.environ.get(ENV_DISTRIBUTED) or "").lower() in ("1", "true", "auto"):
        return f"${ENV_DISTRIBUTED}"
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = 300) -> bool:
    """Join a multi-process ``jax.distributed`` job; call it before any
    other JAX work. The same command runs on every host.

    The job is described by, in this order: the arguments; the variables
    ``$JAXDL_COORDINATOR`` (``host:port`` of process 0),
    ``$JAXDL_NUM_PROCESSES`` and ``$JAXDL_PROCESS_ID``; or a cluster JAX
    detects itself (a SLURM job step with several tasks, a Cloud TPU pod
    slice, or any cluster when ``$JAXDL_DISTRIBUTED=auto``). With none of
    them, or one process, nothing is started.

    On CPU, collectives across processes use gloo.

    Returns:
      Whether a multi-process job was joined.
    Raises:
      ConfigError: an incomplete or inconsistent description.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    explicit = {"coordinator": coordinator, "num_processes": num_processes,
                "process_id": process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if given:
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise ConfigError(
                f"a multi-process job needs the coordinator address, the number of processes "
                f"and this process's id; {', '.join(given)} given, {', '.join(missing)} "
                f"missing (--coordinator HOST:PORT --num-processes N --process-id I, or "
                f"${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID})", "<parallel>")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"process id {process_id} is not in 0..{num_processes - 1} "
                              f"({num_processes} processes)", "<parallel>")
        if ":" not in coordinator:
            raise ConfigError(f"coordinator {coordinator!r}: expected HOST:PORT, e.g. "
                              "10.0.0.1:1234", "<parallel>")
        if num_processes == 1:
            return False
        _cpu_collectives()
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=initialization_timeout)
        return True
    if _cluster_detected() is None:
        return False
    _cpu_collectives()
    jax.distributed.initialize(initialization_timeout=initialization_timeout)
    return jax.process_count() > 1


def _cpu_collectives() -> None:
    """Cross-process collectives on CPU devices (a no-op on accelerators,
    whose runtime has its own)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


# ------------------------------------------------------------------ meshes


def make_mesh(data: int, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over the first ``data * fsdp`` devices.

    Devices are taken in :func:`jax.devices` order (process by process), so
    a process's devices are neighbours on the data axis and each process
    feeds a contiguous block of every batch.

    Raises:
      ConfigError: more devices asked than present (the message lists
        them), or a multi-process job whose mesh leaves a process out.
    """
    devices = list(jax.devices() if devices is None else devices)
    if data < 1 or fsdp < 1:
        raise ConfigError(f"parallel.data and parallel.fsdp must be >= 1, got {data} and {fsdp}",
                          "<parallel>")
    n = data * fsdp
    if n > len(devices):
        raise ConfigError(
            f"parallel.data {data} x parallel.fsdp {fsdp} = {n} devices asked, "
            f"{len(devices)} present: {_describe(devices)}", "<parallel>")
    if jax.process_count() > 1 and n != jax.device_count():
        raise ConfigError(
            f"parallel.data {data} x parallel.fsdp {fsdp} = {n} devices, but this "
            f"{jax.process_count()}-process job has {jax.device_count()}; every process must "
            "hold part of the mesh (use parallel.data: auto)", "<parallel>")
    return Mesh(np.asarray(devices[:n], dtype=object).reshape(data, fsdp), (DATA, FSDP))


def _describe(devices: Sequence[jax.Device]) -> str:
    return ", ".join(f"{d.platform}:{d.id}" + (f" (process {d.process_index})"
                                               if jax.process_count() > 1 else "")
                     for d in devices)


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """A supervised run's placement over a mesh.

    Attributes:
      mesh: the ``(data, fsdp)`` mesh.
      input: ``"device"`` (the training set on every device, batches
        gathered inside the compiled epoch) or ``"host"`` (each process
        gathers its devices' rows of each batch and transfers them ahead).
      prefetch: host input: compiled calls prepared ahead of the running one.
      fsdp_min_size: leaves from this many elements on are split over the
        fsdp axis (when it has more than one device).
    """

    mesh: Mesh
    input: str = "device"
    prefetch: int = 2
    fsdp_min_size: int = FSDP_MIN_SIZE

    @property
    def data(self) -> int:
        return self.mesh.shape[DATA]

    @property
    def fsdp(self) -> int:
        return self.mesh.shape[FSDP]

    @property
    def size(self) -> int:
        """Devices the batch is split over."""
        return self.data * self.fsdp

    def key(self) -> tuple:
        """What programs compiled for this layout depend on."""
        return (self.data, self.fsdp, self.input,
                tuple(d.id for d in self.mesh.devices.flat), self.fsdp_min_size)

    def describe(self) -> dict[str, Any]:
        """For ``run.json``."""
        return {"data": self.data, "fsdp": self.fsdp, "input": self.input,
                "processes": jax.process_count(),
                "devices": [f"{d.platform}:{d.id}" for d in self.mesh.devices.flat]}

    # -- shardings

    @functools.cached_property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def batch_sharding(self, axis: int = 0) -> NamedSharding:
        """The batch dimension ``axis`` split over both mesh axes."""
        return NamedSharding(self.mesh, P(*([None] * axis), (DATA, FSDP)))

    def leaf_sharding(self, shape: Sequence[int]) -> NamedSharding:
        """A parameter's (or optimizer moment's) sharding: replicated, or
        on the fsdp axis its largest dimension that divides evenly."""
        if self.fsdp == 1 or math.prod(shape) < self.fsdp_min_size:
            return self.replicated
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % self.fsdp == 0:
                return NamedSharding(self.mesh, P(*([None] * d), FSDP))
        return self.replicated

    def state_shardings(self, state: Any) -> Any:
        """:meth:`leaf_sharding` of every leaf of ``state`` (arrays or
        ``jax.ShapeDtypeStruct``)."""
        return jax.tree_util.tree_map(lambda a: self.leaf_sharding(np.shape(a)), state)

    def constrain_batch(self, tree: Any, axis: int = 0) -> Any:
        """Inside a traced function: split ``tree``'s batch dimension over the
        mesh (left alone when it does not divide evenly)."""
        def one(a):
            if a.ndim <= axis or a.shape[axis] % self.size:
                return a
            return jax.lax.with_sharding_constraint(a, self.batch_sharding(axis))
        return jax.tree_util.tree_map(one, tree)

    def constrain_state(self, state: Any) -> Any:
        """Inside a traced function: keep ``state`` in its shardings."""
        return jax.lax.with_sharding_constraint(state, self.state_shardings(state))

    def constrain_replicated(self, tree: Any) -> Any:
        return jax.lax.with_sharding_constraint(tree, self.replicated)

    # -- placement

    def place(self, tree: Any, shardings: Any = None) -> Any:
        """Global arrays of ``tree``'s values (host or device values that are
        the same on every process), in ``shardings`` (default: the state
        rule, :meth:`state_shardings`). PRNG key arrays keep their type."""
        if shardings is None:
            shardings = self.state_shardings(tree)
        elif isinstance(shardings, NamedSharding):
            shardings = jax.tree_util.tree_map(lambda _: shardings, tree)
        return jax.tree_util.tree_map(_place_leaf, tree, shardings)

    def feed(self, take: Callable[[np.ndarray], Sequence[np.ndarray]], rows: np.ndarray
             ) -> tuple[jax.Array, ...]:
        """Global batches built from this process's rows only.

        Args:
          take: ``take(rows [..., b]) -> arrays [..., b, ...]``: host-side
            gathering (examples, or text windows).
          rows: the global index grid, ``[steps, batch]``: every process
            passes the same grid and gathers only the rows of its own
            devices' shards (the batch axis is split over the mesh).
        Returns:
          Global arrays ``[steps, batch, ...]``, batch split over the mesh.
        """
        sharding = self.batch_sharding(axis=rows.ndim - 1)
        per_device = sharding.addressable_devices_indices_map(rows.shape)
        cache: dict[tuple, Sequence[np.ndarray]] = {}
        parts: list[list[jax.Array]] | None = None
        for device, index in per_device.items():
            sig = tuple((s.start, s.stop) for s in index)
            if sig not in cache:
                cache[sig] = take(rows[index])
            arrays = cache[sig]
            if parts is None:
                parts = [[] for _ in arrays]
            for out, a in zip(parts, arrays, strict=True):
                # A CPU device can use an aligned host buffer as it is (no
                # copy); an accelerator transfers it. Buffers are never reused.
                out.append(jax.device_put(a, device, may_alias=True))
        assert parts is not None
        return tuple(
            jax.make_array_from_single_device_arrays(
                rows.shape + pieces[0].shape[rows.ndim:],
                NamedSharding(self.mesh, sharding.spec), pieces)
            for pieces in parts)


def gather(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``x[index]`` along the first axis into a new 64-byte-aligned buffer,
    which a CPU device can take without copying (``device_put(...,
    may_alias=True)``); measured for a 421 x 128 MNIST epoch: 0.05 s to
    gather, 0.001 s to put, against 0.1-0.3 s to put an unaligned copy."""
    shape = index.shape + x.shape[1:]
    nbytes = math.prod(shape) * x.dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    out = raw[offset:offset + nbytes].view(x.dtype).reshape(shape)
    # Indices come from a permutation of valid rows: "clip" skips the
    # bounds check and the buffering that "raise" does with ``out``.
    np.take(x, index, axis=0, out=out, mode="clip")
    return out


_ALIGN = 64


def _place_leaf(leaf: Any, sharding: NamedSharding) -> Any:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = _place_leaf(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    host = np.asarray(jax.device_get(leaf))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def auto_data(n_devices: int, fsdp: int, batch_size: int) -> int:
    """``parallel.data: auto`` on an accelerator: the most devices (with
    ``fsdp`` each) that split ``batch_size`` evenly."""
    data = max(1, n_devices // fsdp)
    while data > 1 and batch_size % (data * fsdp):
        data -= 1
    return data


def layout(cfg, devices: Sequence[jax.Device] | None = None) -> Layout | None:
    """The :class:`Layout` a supervised config asks for, or None for one
    device in one process (the single-device program, unchanged; unless
    ``parallel.input: host`` asks for host input there too).

    ``parallel.data: auto`` takes every device of an accelerator backend
    (every device of every process in a multi-process job), and 1 on a
    single CPU process: XLA's host "devices" split the same cores, so more
    of them only add collectives (``benchmarks/parallel_scaling.py``). Auto
    also shrinks to the largest count that divides the batch evenly.

    Raises:
      ConfigError: more devices asked than present, listing them.
    """
    par = cfg.parallel
    devices = list(jax.devices() if devices is None else devices)
    multi = jax.process_count() > 1
    if par.data == "auto":
        single_cpu = devices[0].platform == "cpu" and not multi
        data = 1 if single_cpu else auto_data(len(devices), par.fsdp, cfg.train.batch_size)
    else:
        data = int(par.data)
    if cfg.train.batch_size % (data * par.fsdp):
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} does not split evenly over "
            f"{data} x {par.fsdp} devices; use a multiple of {data * par.fsdp}", "<parallel>")
    if data * par.fsdp == 1 and not multi and par.input != "host":
        return None
    mesh = make_mesh(data, par.fsdp, devices)
    mode = par.input if par.input != "auto" else ("host" if multi else "device")
    return Layout(mesh, mode, par.prefetch)
