"""The Llama-family decoder (Llama 2/3/3.2, Mistral, Qwen2, Qwen3, SmolLM2) as one Flax NNX module.

Layers are stacked along a leading `layers` axis and run under `lax.scan`, so compile time does
not grow with depth. Every weight declares its logical axes once, here, in
`nnx.Param(..., logical_axes=...)`; mesh.LOGICAL_RULES maps them to the mesh.

ONE forward (`Decoder.hidden`) serves training (no cache), prefill (L tokens into a cache) and
decode (1 token). With a cache (models/cache.py) the call writes its K/V at slots
[slot, slot + L) and attends over every slot; positions are absolute token indices, and one
masking rule — key position <= query position (and within the sliding window), negative
positions never attended — serves all three, with right-padded prompts of different lengths.
Packed training rows (several examples per row) pass segment ids instead: attention stays within
each example, ordered by index in the row (docs/training.md, "Packing").
The cache is a carry of the scan over layers, updated with dynamic_update_slice, so that XLA
keeps it in place.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bstar_jax.models.cache import KVCache
from bstar_jax.models.config import ModelConfig, rope_inv_freq


def _param(rngs, shape, axes, dtype, scale=0.02, zeros=False, ones=False):
    if ones:
        value = jnp.ones(shape, dtype)
    elif zeros:
        value = jnp.zeros(shape, dtype)
    else:
        value = (scale * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=axes)


class Layers(nnx.Module):
    """All transformer blocks' weights, stacked on a leading `layers` axis."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        L, E, F = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        Q, KV = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        dt = cfg.jnp_param_dtype
        self.attn_norm = _param(rngs, (L, E), ("layers", "norm"), dt, ones=True)
        self.q = _param(rngs, (L, E, Q), ("layers", "embed", "heads"), dt)
        self.k = _param(rngs, (L, E, KV), ("layers", "embed", "kv_heads"), dt)
        self.v = _param(rngs, (L, E, KV), ("layers", "embed", "kv_heads"), dt)
        if cfg.attention_bias:
            self.q_bias = _param(rngs, (L, Q), ("layers", "heads"), dt, zeros=True)
            self.k_bias = _param(rngs, (L, KV), ("layers", "kv_heads"), dt, zeros=True)
            self.v_bias = _param(rngs, (L, KV), ("layers", "kv_heads"), dt, zeros=True)
        if cfg.qk_norm:
            self.q_norm = _param(rngs, (L, cfg.head_dim), ("layers", "norm"), dt, ones=True)
            self.k_norm = _param(rngs, (L, cfg.head_dim), ("layers", "norm"), dt, ones=True)
        self.o = _param(rngs, (L, Q, E), ("layers", "heads", "embed"), dt)
        self.mlp_norm = _param(rngs, (L, E), ("layers", "norm"), dt, ones=True)
        self.gate = _param(rngs, (L, E, F), ("layers", "embed", "mlp"), dt)
        self.up = _param(rngs, (L, E, F), ("layers", "embed", "mlp"), dt)
        self.down = _param(rngs, (L, F, E), ("layers", "mlp", "embed"), dt)


class Decoder(nnx.Module):
    """Token embedding -> stacked blocks (RMSNorm, GQA attention with RoPE, SwiGLU) -> norm -> LM head."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        E, V = cfg.hidden_size, cfg.vocab_size
        dt = cfg.jnp_param_dtype
        self.embed = _param(rngs, (V, E), ("vocab", "embed"), dt)
        self.layers = Layers(cfg, rngs)
        self.final_norm = _param(rngs, (E,), ("norm",), dt, ones=True)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, (E, V), ("embed", "vocab"), dt)

    def __call__(self, tokens_BxL, positions_BxL=None, cache=None, slot=0, attend=None, segment_ids_BxL=None):
        """Logits float32 [B, L, V] and the updated cache (None without one)."""
        hidden_BxLxE, cache = self.hidden(tokens_BxL, positions_BxL, cache, slot, attend, segment_ids_BxL)
        return self.logits(hidden_BxLxE), cache

    def logits(self, hidden_BxLxE):
        """LM head on final (normed) hidden states [..., E]; float32 [..., V]."""
        dt = self.cfg.jnp_dtype
        if self.cfg.tie_word_embeddings:
            w_VxE = self.embed[...].astype(dt)
            return jnp.einsum("...e,ve->...v", hidden_BxLxE.astype(dt), w_VxE,
                              preferred_element_type=jnp.float32)
        return jnp.einsum("...e,ev->...v", hidden_BxLxE.astype(dt), self.lm_head[...].astype(dt),
                          preferred_element_type=jnp.float32)

    def hidden(self, tokens_BxL, positions_BxL=None, cache: KVCache | None = None, slot=0, attend=None,
               segment_ids_BxL=None, remat: bool = False):
        """(final normed hidden states [B, L, E] in compute dtype, updated cache or None).

        positions_BxL: absolute positions (default 0..L-1); a negative position marks padding,
        which no query attends to. cache/slot: write this call's K/V and positions at cache slots
        [slot, slot + L) (slot: a traced int32 scalar) and attend over the whole cache, or over
        its first `attend` slots (static; a prefill needs no more than the prompt's).
        segment_ids_BxL: packed rows (training only, no cache): int32, 0 = padding; a token
        attends only to earlier tokens (by index in the row) of its own segment, and positions
        restart at 0 in each segment (docs/training.md, "Packing").
        remat: recompute each layer in the backward pass instead of saving its activations
        (`jax.checkpoint`, nothing saveable): a training forward then keeps one [B, L, E] carry
        per layer (docs/memory.md). Off for sampling, where nothing is differentiated.
        """
        cfg = self.cfg
        dt = cfg.jnp_dtype
        B, L = tokens_BxL.shape
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        positions_BxL = positions_BxL.astype(jnp.int32)
        # mode="clip": an out-of-range id (e.g. -100 padding) must not turn into NaN and spread.
        x_BxLxE = jnp.take(self.embed[...], tokens_BxL, axis=0, mode="clip").astype(dt)
        cos_BxLxD, sin_BxLxD = rope_tables(cfg, positions_BxL)
        if cache is not None and segment_ids_BxL is not None:
            raise ValueError("segment_ids_BxL is for packed training rows; a cached call takes none")
        if cache is not None:
            slot = jnp.asarray(slot, jnp.int32)
            key_pos_BxS = jax.lax.dynamic_update_slice(cache.pos, positions_BxL, (jnp.int32(0), slot))
            attend = attend or key_pos_BxS.shape[1]
            mask_BxLxS = _attention_mask(cfg, positions_BxL, key_pos_BxS[:, :attend])
        elif segment_ids_BxL is not None:
            mask_BxLxS = _segment_mask(cfg, positions_BxL, segment_ids_BxL)
        else:
            mask_BxLxS = _attention_mask(cfg, positions_BxL, positions_BxL)
        layer_params = nnx.to_pure_dict(nnx.state(self.layers, nnx.Param))

        def block(carry, xs):
            x_BxLxE, kv = carry
            p, layer = xs
            p = jax.tree.map(lambda w: w.astype(dt), p)
            h = rms_norm(x_BxLxE, p["attn_norm"], cfg.rms_norm_eps)
            attn, kv = _attention(cfg, p, h, cos_BxLxD, sin_BxLxD, mask_BxLxS, kv, layer, slot, attend)
            x_BxLxE = x_BxLxE + attn
            h = rms_norm(x_BxLxE, p["mlp_norm"], cfg.rms_norm_eps)
            gate = jnp.einsum("ble,ef->blf", h, p["gate"])
            up = jnp.einsum("ble,ef->blf", h, p["up"])
            x_BxLxE = x_BxLxE + jnp.einsum("blf,fe->ble", jax.nn.silu(gate) * up, p["down"])
            return (x_BxLxE, kv), None

        if remat:
            block = jax.checkpoint(block, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=False)
        kv = (cache.k, cache.v) if cache is not None else None
        layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        (x_BxLxE, kv), _ = jax.lax.scan(block, (x_BxLxE, kv), (layer_params, layers))
        x_BxLxE = rms_norm(x_BxLxE, self.final_norm[...].astype(dt), cfg.rms_norm_eps)
        return x_BxLxE, (KVCache(kv[0], kv[1], key_pos_BxS) if cache is not None else None)


def rms_norm(x, weight, eps):
    """RMSNorm over the last axis as HF computes it: normalise in float32, cast back, scale."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight * x32.astype(x.dtype)


def rope_tables(cfg: ModelConfig, positions_BxL):
    """(cos, sin) [B, L, head_dim] of the rotary embedding at integer positions (scaling included)."""
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    angles = positions_BxL.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(cfg.jnp_dtype), jnp.sin(angles).astype(cfg.jnp_dtype)


def apply_rope(x_BxLxHxD, cos_BxLxD, sin_BxLxD):
    """Rotates heads [B, L, H, D] by the tables of `rope_tables` (HF's rotate_half convention)."""
    half = x_BxLxHxD.shape[-1] // 2
    rotated = jnp.concatenate([-x_BxLxHxD[..., half:], x_BxLxHxD[..., :half]], axis=-1)
    return x_BxLxHxD * cos_BxLxD[:, :, None, :] + rotated * sin_BxLxD[:, :, None, :]


def _attention_mask(cfg, q_pos_BxL, k_pos_BxS):
    """bool [B, L, S]: key visible to query (causal by position, sliding window, padding)."""
    q_pos, k_pos = q_pos_BxL[:, :, None], k_pos_BxS[:, None, :]
    mask = (k_pos >= 0) & (k_pos <= q_pos)
    if cfg.sliding_window:
        mask &= q_pos - k_pos < cfg.sliding_window
    return mask


def _segment_mask(cfg, pos_BxL, seg_BxL):
    """bool [B, L, L] of a packed row: same segment, not padding (segment 0), causal by token
    index (positions restart per segment, so they cannot order two segments), sliding window by
    position."""
    L = seg_BxL.shape[1]
    seg_q, seg_k = seg_BxL[:, :, None], seg_BxL[:, None, :]
    index = jnp.arange(L, dtype=jnp.int32)
    mask = (seg_q == seg_k) & (seg_q > 0) & (index[None, None, :] <= index[None, :, None])
    if cfg.sliding_window:
        mask &= pos_BxL[:, :, None] - pos_BxL[:, None, :] < cfg.sliding_window
    return mask


def _attention(cfg, p, h_BxLxE, cos, sin, mask_BxLxS, kv, layer, slot, attend):
    """Grouped-query attention; with a cache (kv = (k, v) of all layers), writes this call's K/V
    at [layer, :, :, slot:slot + L] first and attends over that layer's first `attend` slots."""
    B, L, _ = h_BxLxE.shape
    H, G, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = jnp.einsum("ble,eq->blq", h_BxLxE, p["q"])
    k = jnp.einsum("ble,ek->blk", h_BxLxE, p["k"])
    v = jnp.einsum("ble,ek->blk", h_BxLxE, p["v"])
    if cfg.attention_bias:
        q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
    q_BxLxHxD, k_BxLxGxD = q.reshape(B, L, H, D), k.reshape(B, L, G, D)
    if cfg.qk_norm:  # Qwen3: per-head RMSNorm before the rotation
        q_BxLxHxD = rms_norm(q_BxLxHxD, p["q_norm"], cfg.rms_norm_eps)
        k_BxLxGxD = rms_norm(k_BxLxGxD, p["k_norm"], cfg.rms_norm_eps)
    q_BxLxHxD = apply_rope(q_BxLxHxD, cos, sin)
    k_BxGxDxL = apply_rope(k_BxLxGxD, cos, sin).transpose(0, 2, 3, 1)
    v_BxGxLxD = v.reshape(B, L, G, D).transpose(0, 2, 1, 3)

    if kv is not None:  # K is kept as [.., head_dim, slot] (models/cache.py)
        k_cache, v_cache = kv
        zero = jnp.int32(0)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k_BxGxDxL[None].astype(k_cache.dtype),
                                               (layer, zero, zero, zero, slot))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v_BxGxLxD[None].astype(v_cache.dtype),
                                               (layer, zero, zero, slot, zero))
        at = (layer, zero, zero, zero, zero)
        keys_BxGxDxS = jax.lax.dynamic_slice(k_cache, at, (1, B, G, D, attend))[0]
        values_BxGxSxD = jax.lax.dynamic_slice(v_cache, at, (1, B, G, attend, D))[0]
        kv = (k_cache, v_cache)
    else:
        keys_BxGxDxS, values_BxGxSxD = k_BxGxDxL, v_BxGxLxD

    # The H/G query heads of a KV head and the L queries as one axis: prefill and decode are
    # then the same two batched matmuls over (batch, kv_head), and the compiler picks one cache
    # layout for both (a layout change between them would copy the whole cache).
    per, S = H // G, keys_BxGxDxS.shape[3]
    q_grouped = q_BxLxHxD.reshape(B, L, G, per, D).transpose(0, 2, 3, 1, 4).reshape(B, G, per * L, D)
    scores = jnp.einsum("bkmd,bkds->bkms", q_grouped, keys_BxGxDxS,
                        preferred_element_type=jnp.float32).reshape(B, G, per, L, S) * (D ** -0.5)
    scores = jnp.where(mask_BxLxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(B, G, per * L, S)
    out = jnp.einsum("bkms,bksd->bkmd", probs, values_BxGxSxD).reshape(B, G, per, L, D)
    out = out.transpose(0, 3, 1, 2, 4).reshape(B, L, H * D)
    return jnp.einsum("blq,qe->ble", out, p["o"]), kv
