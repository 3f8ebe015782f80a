"""Shape rules shared by every compiled program: power-of-two buckets and abstract (sharded) arrays.

A jitted program compiles once per input shape, so sizes that vary from call to call (rows,
prompt widths, sequence lengths) are rounded up to a power of two: a run compiles once per bucket.
"""
from __future__ import annotations

import jax


def pow2_bucket(n: int, minimum: int = 1) -> int:
    """max(minimum, the smallest power of two >= n): sizes are rounded up so that a run compiles
    once per bucket."""
    return max(int(minimum), 1 << max(0, int(n) - 1).bit_length())


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (e.g. the devices a batch is split over)."""
    return -(-int(n) // int(multiple)) * int(multiple)


def sharded(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    """An abstract array of `shape` and `dtype` placed by `sharding` (nothing allocated)."""
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def abstract(tree, shardings=None):
    """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying `shardings` (a tree of
    the same structure; None: each leaf's own `.sharding`)."""
    if shardings is None:
        return jax.tree.map(lambda x: sharded(x.shape, x.dtype, x.sharding), tree)
    return jax.tree.map(lambda x, sh: sharded(x.shape, x.dtype, sh), tree, shardings)
