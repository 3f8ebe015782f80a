"""Pure functions over (cfg, params) around the NNX Decoder.

`params` is a plain nested dict of arrays (nnx.to_pure_dict of the Decoder's Param state), the
form that jit, optax, orbax and safetensors all take as is. Each function merges it back into
the module inside the trace, so nothing stateful crosses a jit boundary.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from bstar_jax.core import mesh as mesh_lib, streams
from bstar_jax.models.config import ModelConfig
from bstar_jax.models.decoder import Decoder


@functools.lru_cache(maxsize=32)
def _abstract(cfg: ModelConfig):
    model = nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    return graphdef, state


def module(cfg: ModelConfig, params) -> Decoder:
    """The NNX Decoder holding `params` (for use inside a traced function)."""
    graphdef, abstract_state = _abstract(cfg)
    state = jax.tree.map(lambda x: x, abstract_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


def init(cfg: ModelConfig, rng) -> dict:
    """Random params (normal(0, 0.02) weights, unit norms, zero biases)."""
    return nnx.to_pure_dict(nnx.state(Decoder(cfg, nnx.Rngs(streams.as_key(rng))), nnx.Param))


def param_shapes(cfg: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct per param, without allocating."""
    _, state = _abstract(cfg)
    return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), nnx.to_pure_dict(state))


def logical_axes(cfg: ModelConfig) -> dict:
    """The logical axes of every param, as declared where the Decoder creates it."""
    _, state = _abstract(cfg)
    flat = {path: var.get_metadata()["logical_axes"] for path, var in nnx.to_flat_state(state)}
    return nnx.traversals.unflatten_mapping(flat)


def param_shardings(cfg: ModelConfig, mesh) -> dict:
    """NamedSharding per param on `mesh`, from the one rules table in mesh.py."""
    return mesh_lib.tree_shardings(logical_axes(cfg), param_shapes(cfg), mesh)


def shard_params(cfg: ModelConfig, params, mesh) -> dict:
    """Places params on `mesh` by the rules table."""
    return jax.device_put(params, param_shardings(cfg, mesh))


@functools.partial(jax.jit, static_argnums=0)
def forward(cfg: ModelConfig, params, tokens_BxL):
    """Logits float32 [B, L, V] of a causal forward at positions 0..L-1."""
    logits_BxLxV, _ = module(cfg, params)(tokens_BxL)
    return logits_BxLxV


def hidden_states(cfg: ModelConfig, params, tokens_BxL, positions_BxL=None, cache=None, slot=0, attend=None,
                  segment_ids_BxL=None, remat: bool = False):
    """(final normed hidden states [B, L, E], cache): THE forward — training (no cache; packed rows
    with segment_ids_BxL; remat recomputes layers in the backward pass), prefill (L tokens written
    at cache slots [slot, slot + L)) and decode (L = 1); see Decoder.hidden."""
    return module(cfg, params).hidden(tokens_BxL, positions_BxL, cache, slot, attend, segment_ids_BxL, remat=remat)


def logits(cfg: ModelConfig, params, hidden_xE):
    """float32 logits [..., V] of final hidden states [..., E] (the LM head)."""
    return module(cfg, params).logits(hidden_xE)
