"""The KV cache the decoder owns: layout, allocation, sharding, size.

    k:    [layers, batch, kv_head, head_dim, cache_seq]   (compute dtype)
    v:    [layers, batch, kv_head, cache_seq, head_dim]
    pos:  int32 [batch, cache_seq]: the absolute position of the token held in each slot, -1 = empty

A forward call writes its L tokens' K/V into slots [slot, slot + L) — one `dynamic_update_slice`
at a scalar slot that all rows share — so inside a `lax.while_loop` over a donated cache XLA
updates the buffer in place. Rows of different prompt lengths need no per-row scatter: the
slot of a token is not its position; `pos` says which position each slot holds, and attention
masks keys by position (docs/models.md). `kv_head` before `cache_seq` makes both attention
products of a one-token step plain batched matmuls over (batch, kv_head), and K stored with
`head_dim` before `cache_seq` makes Q·K a (queries x head_dim) @ (head_dim x slots) product, the
layout P·V already has: with K as [slots, head_dim] the CPU backend transposed the layer's whole
key window on every step (Q·K took 1.8-2.3x as long, same floats: benchmarks/decode_parts.py).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bstar_jax.core import mesh as mesh_lib
from bstar_jax.models.config import ModelConfig

# Logical axes (mapped to the mesh by mesh.LOGICAL_RULES).
K_AXES = ("layers", "batch", "kv_head", "head_dim", "cache_seq")
V_AXES = ("layers", "batch", "kv_head", "cache_seq", "head_dim")
POS_AXES = ("batch", "cache_seq")


class KVCache(NamedTuple):
    k: jax.Array  # [layers, B, G, D, S]
    v: jax.Array  # [layers, B, G, S, D]
    pos: jax.Array  # int32 [B, S]; -1 = empty slot (never attended)


def cache_shapes(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """jax.ShapeDtypeStruct of each cache array, without allocating."""
    dt = jnp.dtype(dtype or cfg.jnp_dtype)
    L, G, D = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    return KVCache(jax.ShapeDtypeStruct((L, batch, G, D, max_len), dt),
                   jax.ShapeDtypeStruct((L, batch, G, max_len, D), dt),
                   jax.ShapeDtypeStruct((batch, max_len), jnp.int32))


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache of `max_len` slots per row (K/V zero, every slot empty)."""
    s = cache_shapes(cfg, batch, max_len, dtype)
    return KVCache(jnp.zeros(s.k.shape, s.k.dtype), jnp.zeros(s.v.shape, s.v.dtype),
                   jnp.full(s.pos.shape, -1, jnp.int32))


def cache_shardings(cfg: ModelConfig, mesh, batch: int, max_len: int, dtype=None) -> KVCache:
    """NamedSharding of each cache array on `mesh`, from the rules table in mesh.py."""
    s = cache_shapes(cfg, batch, max_len, dtype)
    return KVCache(mesh_lib.named_sharding(K_AXES, mesh, s.k.shape),
                   mesh_lib.named_sharding(V_AXES, mesh, s.v.shape),
                   mesh_lib.named_sharding(POS_AXES, mesh, s.pos.shape))


def cache_bytes(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> int:
    """Bytes held by a cache of this size (K, V and the slot positions)."""
    return sum(s.size * s.dtype.itemsize for s in cache_shapes(cfg, batch, max_len, dtype))
