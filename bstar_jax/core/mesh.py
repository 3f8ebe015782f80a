"""The device mesh and the ONE table that maps logical axes to mesh axes.

Every weight declares its logical axes where it is created (models/decoder.py); every batch is
sharded along `BATCH_AXES`. Switching FSDP <-> tensor parallelism is an edit of `LOGICAL_RULES`
or of the mesh shape in the config, nothing else.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# A batch (of queries, sequences, samples) is split over every data-parallel axis.
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (or None = replicated). The single rules table of the project.
LOGICAL_RULES: dict[str, Any] = {
    "batch": BATCH_AXES,
    "layers": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",  # num_heads * head_dim, fused
    "kv_heads": "tensor",  # num_kv_heads * head_dim, fused
    "kv_head": "tensor",  # the KV-cache head axis
    "head_dim": None,
    "mlp": "tensor",
    "norm": None,
    "cache_seq": None,
}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all); one size may be -1 (= the rest)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh: at most one of data/fsdp/tensor may be -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh: {len(devices)} devices do not divide into fixed axes of size {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {len(devices)} devices")
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_from_config(mesh_config) -> Mesh:
    """Builds the mesh from a config with fields data, fsdp, tensor (ints, one may be -1)."""
    return make_mesh(int(mesh_config.data), int(mesh_config.fsdp), int(mesh_config.tensor))


def axis_size(mesh: Mesh, axes) -> int:
    """Number of devices along a mesh axis name, a tuple of names, or None (= 1)."""
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def batch_size_multiple(mesh: Mesh) -> int:
    """A global batch must be a multiple of this to be split along BATCH_AXES."""
    return axis_size(mesh, BATCH_AXES)


def logical_to_spec(logical_axes: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None) -> P:
    """PartitionSpec for an array with these logical axes.

    A dimension whose size the mesh axes do not divide stays replicated, so that any checkpoint
    loads on any mesh (e.g. 2 KV heads on a tensor axis of 4).
    """
    spec, used = [], set()
    for i, name in enumerate(logical_axes):
        axes = LOGICAL_RULES.get(name) if name is not None else None
        if axes is not None:
            axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
            axes_t = tuple(a for a in axes_t if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
            if shape is not None and axes_t and shape[i] % axis_size(mesh, axes_t):
                axes_t = ()
            used.update(axes_t)
            axes = None if not axes_t else (axes_t[0] if len(axes_t) == 1 else axes_t)
        spec.append(axes)
    return P(*spec)


def named_sharding(logical_axes, mesh: Mesh, shape=None) -> NamedSharding:
    """NamedSharding for an array with these logical axes on `mesh`."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, mesh, shape))


def tree_shardings(logical_tree, shape_tree, mesh: Mesh):
    """NamedShardings for a pytree given matching pytrees of logical axes and of arrays/shapes."""
    is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(lambda ax, x: named_sharding(ax, mesh, np.shape(x) if not hasattr(x, "shape") else x.shape),
                        logical_tree, shape_tree, is_leaf=is_axes)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] array: batch along BATCH_AXES, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def constrain(x, logical_axes, mesh: Mesh | None):
    """`x` (inside a traced function) constrained to the sharding of its logical axes on `mesh`;
    `x` itself when `mesh` is None."""
    return x if mesh is None else jax.lax.with_sharding_constraint(x, named_sharding(logical_axes, mesh, x.shape))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def initialize_distributed() -> None:
    """Starts multi-process JAX when this is one of several processes (docs/multihost.md):
    Cloud TPU VM / Slurm / Open MPI auto-detected, else JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID; nothing for one process. Call before any device use."""
    from bstar_jax.core import distributed

    distributed.initialize()
