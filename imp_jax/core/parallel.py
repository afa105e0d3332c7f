"""Where arrays live: a one-axis device mesh, sharding either the batch or the replicates.

The same code runs on one CPU, several GPUs, or a TPU pod (several hosts, after
``jax.distributed.initialize()``): every array the driver creates goes through :class:`Layout`,
which builds global arrays from host data that every process holds alike, and fetches results
back from all processes.

* ``"batch"``: data parallel. Params, masks and optimizer state are replicated; each minibatch is
  split across the devices (XLA inserts the gradient all-reduce).
* ``"replicates"``: each device trains its share of the replicates, with no communication at
  all; the faster choice when the model is small and several replicates run at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
MODES = ("batch", "replicates")
AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Layout:
    """The mesh and the parallelism mode; hashable, so jitted functions can be cached on it."""

    mesh: Mesh
    mode: str = "batch"

    @classmethod
    def create(cls, mode: str = "batch", devices: list[jax.Device] | None = None) -> Layout:
        """A layout over ``devices`` (default: all devices of all processes)."""
        if mode not in MODES:
            raise ValueError(f"parallel mode must be one of {MODES}, got {mode!r}")
        devices = jax.devices() if devices is None else devices
        return cls(Mesh(np.asarray(devices), (AXIS,)), mode)

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def per_replicate(self) -> NamedSharding:
        """Arrays with a leading replicate axis: split over devices in "replicates" mode."""
        spec = PartitionSpec(AXIS) if self.mode == "replicates" else PartitionSpec()
        return NamedSharding(self.mesh, spec)

    @property
    def batch(self) -> NamedSharding | None:
        """The sharding of one replicate's minibatch (rows split in "batch" mode), or None."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS)) if self.mode == "batch" else None

    @property
    def splits_replicates(self) -> bool:
        """Whether the replicate axis is split over more than one device."""
        return self.mode == "replicates" and self.size > 1

    def check(self, replicates: int, batch_size: int,
              replicate_batching: str = "vmap") -> str | None:
        """Why the sizes (or the way replicates are computed) do not suit this mesh, or None."""
        if self.splits_replicates and replicate_batching != "vmap":
            return (f"config.parallel.replicate_batching: {replicate_batching!r} computes "
                    f"replicates one by one, which a replicate axis split over {self.size} "
                    f"devices cannot do; use 'vmap' or 'auto' (or parallel.mode=batch)")
        if self.mode == "replicates" and replicates % self.size:
            return (f"config.replicates: {replicates} replicates cannot be split over "
                    f"{self.size} devices (parallel.mode=replicates needs a multiple)")
        if self.mode == "batch" and batch_size % self.size:
            return (f"config.train.batch_size: {batch_size} cannot be split over {self.size} "
                    f"devices (parallel.mode=batch needs a multiple)")
        return None

    def put(self, tree: PyTree, sharding: NamedSharding) -> PyTree:
        """Global arrays with ``sharding`` from host data that every process holds alike."""

        def one(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree_util.tree_map(one, tree)

    def put_state(self, tree: PyTree) -> PyTree:
        """A batch of replicates' state (leading replicate axis on every leaf)."""
        return self.put(jax.device_get(tree), self.per_replicate)

    def abstract_state(self, tree: PyTree) -> PyTree:
        """``tree``'s shapes and dtypes with the state sharding: Orbax restores into it."""
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.per_replicate), tree)

    @staticmethod
    def fetch(tree: PyTree) -> PyTree:
        """Numpy copies of global arrays, gathered from every process."""
        return jax.tree_util.tree_map(
            lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
