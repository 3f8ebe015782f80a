"""The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2) as one Flax NNX module.

Layers are stacked along a leading `layers` axis and run under `lax.scan`, so compile time does
not grow with depth and the KV cache is one array per K/V. Every weight declares its logical
axes once, here, in `nnx.Param(..., logical_axes=...)`; mesh.LOGICAL_RULES maps them to the mesh.

Positions are absolute token indices. With a KV cache, the key in cache slot s has position s, so
one masking rule (key position <= query position, within the sliding window if any) serves full
forwards, prefill and single-token decode with right-padded prompts of different lengths.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bstar_jax.models.config import ModelConfig, rope_inv_freq

# Logical axes of the KV cache [layers, batch, cache_seq, kv_head, head_dim].
CACHE_AXES = ("layers", "batch", "cache_seq", "kv_head", "head_dim")


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

    def __call__(self, tokens_BxL, positions_BxL=None, cache=None):
        """Logits float32 [B, L, V] and the updated cache (None without one)."""
        hidden_BxLxE, cache = self.hidden(tokens_BxL, positions_BxL, cache)
        return self.logits(hidden_BxLxE), cache

    def logits(self, hidden_BxLxE):
        """LM head on final (normed) hidden states; float32."""
        dt = self.cfg.jnp_dtype
        if self.cfg.tie_word_embeddings:
            w_ExV = self.embed[...].astype(dt).T
        else:
            w_ExV = self.lm_head[...].astype(dt)
        return jnp.einsum("ble,ev->blv", hidden_BxLxE.astype(dt), w_ExV,
                          preferred_element_type=jnp.float32)

    def hidden(self, tokens_BxL, positions_BxL=None, cache=None):
        """Final normed hidden states [B, L, E] (compute dtype) and the updated cache."""
        cfg = self.cfg
        dt = cfg.jnp_dtype
        B, L = tokens_BxL.shape
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        # mode="clip": an out-of-range id (e.g. -100 padding) must not turn into NaN and spread.
        x_BxLxE = jnp.take(self.embed[...], tokens_BxL, axis=0, mode="clip").astype(dt)
        cos_BxLxD, sin_BxLxD = rope_tables(cfg, positions_BxL)

        layer_params = nnx.to_pure_dict(nnx.state(self.layers, nnx.Param))
        has_cache = cache is not None

        def block(x_BxLxE, xs):
            p, k_cache, v_cache = xs
            p = jax.tree.map(lambda w: w.astype(dt), p)
            h = rms_norm(x_BxLxE, p["attn_norm"], cfg.rms_norm_eps)
            attn, k_cache, v_cache = _attention(cfg, p, h, positions_BxL, cos_BxLxD, sin_BxLxD,
                                                k_cache, v_cache)
            x_BxLxE = x_BxLxE + attn
            h = rms_norm(x_BxLxE, p["mlp_norm"], cfg.rms_norm_eps)
            gate = jnp.einsum("ble,ef->blf", h, p["gate"])
            up = jnp.einsum("ble,ef->blf", h, p["up"])
            x_BxLxE = x_BxLxE + jnp.einsum("blf,fe->ble", jax.nn.silu(gate) * up, p["down"])
            return x_BxLxE, (k_cache, v_cache)

        if has_cache:
            xs = (layer_params, cache["k"], cache["v"])
        else:
            xs = (layer_params, None, None)
        x_BxLxE, (k_new, v_new) = jax.lax.scan(block, x_BxLxE, xs)
        x_BxLxE = rms_norm(x_BxLxE, self.final_norm[...].astype(dt), cfg.rms_norm_eps)
        return x_BxLxE, ({"k": k_new, "v": v_new} if has_cache else None)


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


def _attention(cfg, p, h_BxLxE, positions_BxL, cos, sin, k_cache, v_cache):
    """Grouped-query attention; with a cache, writes this call's K/V at their positions first."""
    B, L, _ = h_BxLxE.shape
    H, K, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = jnp.einsum("ble,eq->blq", h_BxLxE, p["q"])
    k = jnp.einsum("ble,ek->blk", h_BxLxE, p["k"])
    v = jnp.einsum("ble,ek->blk", h_BxLxE, p["v"])
    if cfg.attention_bias:
        q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
    q_BxLxHxD = apply_rope(q.reshape(B, L, H, D), cos, sin)
    k_BxLxKxD = apply_rope(k.reshape(B, L, K, D), cos, sin)
    v_BxLxKxD = v.reshape(B, L, K, D)

    if k_cache is not None:
        rows_BxL = jnp.broadcast_to(jnp.arange(B)[:, None], (B, L))
        k_cache = k_cache.at[rows_BxL, positions_BxL].set(k_BxLxKxD.astype(k_cache.dtype), mode="drop")
        v_cache = v_cache.at[rows_BxL, positions_BxL].set(v_BxLxKxD.astype(v_cache.dtype), mode="drop")
        keys_BxSxKxD, values_BxSxKxD = k_cache.astype(q.dtype), v_cache.astype(q.dtype)
        key_pos_BxS = jnp.broadcast_to(jnp.arange(k_cache.shape[1], dtype=jnp.int32), (B, k_cache.shape[1]))
    else:
        keys_BxSxKxD, values_BxSxKxD, key_pos_BxS = k_BxLxKxD, v_BxLxKxD, positions_BxL

    q_BxLxKxGxD = q_BxLxHxD.reshape(B, L, K, H // K, D)
    scores = jnp.einsum("blkgd,bskd->bkgls", q_BxLxKxGxD, keys_BxSxKxD,
                        preferred_element_type=jnp.float32) * (D ** -0.5)
    q_pos = positions_BxL[:, None, None, :, None]
    k_pos = key_pos_BxS[:, None, None, None, :]
    mask = k_pos <= q_pos
    if cfg.sliding_window:
        mask &= q_pos - k_pos < cfg.sliding_window
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgls,bskd->blkgd", probs, values_BxSxKxD).reshape(B, L, H * D)
    return jnp.einsum("blq,qe->ble", out, p["o"]), k_cache, v_cache
