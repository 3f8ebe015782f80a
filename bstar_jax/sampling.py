"""The sampler: prefill + `lax.while_loop` decode over a preallocated KV cache, one compile per bucket.

Three layers, as gemma `gm.text` and google-deepmind/simply:
  1. `next_token`: a pure strategy (temperature, nucleus top-p, static top-k) over one step's logits.
  2. `_generate_jit`: one jitted function — prefill, then a while loop over a small `DecodeState` —
     that stops when every row has emitted EOS or `max_new_tokens` is reached.
  3. `generate`: validates, pads batch and prompt length to power-of-two buckets, shards, slices.

Temperature and top-p are traced per-row float32 [B] arrays, so one compile serves a whole
temperature grid (DESIGN.md §5): B-STaR samples every temperature of its grid in ONE call
(PAPER.md §5, Algorithm 1). Top-k, max_new_tokens and the shapes are static.

Randomness: row b draws its N uniforms from the key fold_in(rng, b), step t's token from the t-th.
A row's sample therefore depends only on (rng, its row index, its prompt, its settings, N): not
on the batch padding, the bucket, the other rows or the mesh.
"""
from __future__ import annotations

import collections
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bstar_jax import mesh as mesh_lib
from bstar_jax import models
from bstar_jax.models import decoder

# Times each jitted function's Python body ran, i.e. how often it was traced (= compiled).
TRACE_COUNT: collections.Counter = collections.Counter()


class SampleOutput(NamedTuple):
    tokens: jax.Array  # int32 [B, N]: sampled tokens, pad id after EOS
    lengths: jax.Array  # int32 [B]: number of generated tokens, EOS included
    logprobs: jax.Array  # float32 [B, N]: log-prob at temperature 1 of each chosen token, 0 after EOS


# ----------------------------------------------------------------------------- 1. strategy

def _nucleus_threshold(probs_BxV, top_p_B):
    """Per row, the largest probability θ with sum(p[p >= θ]) >= top_p.

    Keeping p >= θ is nucleus sampling (the smallest top set with mass >= top_p; ties at θ kept).
    Found by bisection over the bit patterns of non-negative float32 (monotone as int32), which is
    exact after 31 steps and much cheaper than a full-vocabulary sort on CPU.
    """
    B = probs_BxV.shape[0]

    def body(_, lo_hi):
        lo, hi = lo_hi  # invariant: mass(θ=lo) >= top_p, mass(θ=hi) < top_p (as int32 bits)
        mid = lo + (hi - lo) // 2
        theta = jax.lax.bitcast_convert_type(mid, jnp.float32)
        mass = jnp.sum(jnp.where(probs_BxV >= theta[:, None], probs_BxV, 0.0), axis=-1)
        ok = mass >= top_p_B
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo = jnp.zeros((B,), jnp.int32)  # θ = 0: everything, mass = 1 >= top_p
    hi = jax.lax.bitcast_convert_type(jnp.max(probs_BxV, axis=-1), jnp.int32) + 1
    lo, _ = jax.lax.fori_loop(0, 31, body, (lo, hi))
    return jax.lax.bitcast_convert_type(lo, jnp.float32)


def next_token(logits_BxV, rng, temperature_B, top_p_B, top_k: int = 0):
    """Samples one token per row; returns (tokens int32 [B], raw log-probs float32 [B]).

    logits_BxV: float32 [B, V]. rng: one key per row ([B] key array) or a single key (split).
    temperature_B: float32 [B]; 0 = argmax for that row. top_p_B: float32 [B] in (0, 1]; the
    nucleus of the temperature-scaled (and top-k-filtered) distribution, renormalised.
    top_k: static; 0 = off. Order of filters as Hugging Face: temperature, top-k, top-p.
    The log-prob returned is log_softmax(logits) (temperature 1, unfiltered) of the chosen token.
    """
    B = logits_BxV.shape[0]
    u_B = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(_as_row_keys(rng, B))
    return _next_token_from_uniform(logits_BxV, u_B, temperature_B, top_p_B, top_k)


def _next_token_from_uniform(logits_BxV, u_B, temperature_B, top_p_B, top_k: int = 0):
    """`next_token` given each row's uniform draw u in [0, 1)."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    B, V = logits_BxV.shape
    temperature_B = jnp.broadcast_to(jnp.asarray(temperature_B, jnp.float32), (B,))
    top_p_B = jnp.broadcast_to(jnp.asarray(top_p_B, jnp.float32), (B,))

    greedy_B = temperature_B <= 0.0
    scaled_BxV = logits_BxV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    if 0 < top_k < V:
        kth_B = jax.lax.top_k(scaled_BxV, top_k)[0][:, -1]
        scaled_BxV = jnp.where(scaled_BxV >= kth_B[:, None], scaled_BxV, -jnp.inf)
    probs_BxV = jax.nn.softmax(scaled_BxV, axis=-1)

    def nucleus(p_BxV):
        theta_B = _nucleus_threshold(p_BxV, top_p_B)
        return jnp.where((p_BxV >= theta_B[:, None]) | (top_p_B >= 1.0)[:, None], p_BxV, 0.0)

    # The bisection costs ~31 passes over [B, V]; skip it when no row asks for a nucleus.
    probs_BxV = jax.lax.cond(jnp.any(top_p_B < 1.0), nucleus, lambda p: p, probs_BxV)

    sampled_B = _inverse_cdf(probs_BxV, u_B)
    tokens_B = jnp.where(greedy_B, _first_index(logits_BxV == jnp.max(logits_BxV, -1, keepdims=True)), sampled_B)
    logprobs_B = (jnp.take_along_axis(logits_BxV, tokens_B[:, None], axis=-1)[:, 0]
                  - jax.nn.logsumexp(logits_BxV, axis=-1))
    return tokens_B, logprobs_B


def _inverse_cdf(weights_BxV, u_B):
    """Index drawn with probability proportional to weights_BxV (>= 0), from one uniform per row.

    Two levels (block sums, then inside one block) instead of a cumsum over the vocabulary: one
    uniform per row instead of V Gumbels, and ~7x cheaper than a flat cumsum on CPU at V = 49152.
    """
    B, V = weights_BxV.shape
    blk = 1 << max(3, (V.bit_length() + 1) // 2)  # ~sqrt(V), a power of two
    nb = -(-V // blk)
    w_BxMxC = jnp.pad(weights_BxV, ((0, 0), (0, nb * blk - V))).reshape(B, nb, blk)
    block_B = w_BxMxC.sum(-1)
    cdf_BxM = jnp.cumsum(block_B, -1)
    # Strictly below the total (and, inside the block, in [0, block mass)), so the first index
    # with cdf > x always has non-zero weight even after rounding.
    x_B = jnp.minimum(u_B * cdf_BxM[:, -1], jnp.nextafter(cdf_BxM[:, -1], 0.0))
    j_B = _first_index(cdf_BxM > x_B[:, None])
    inner_BxC = jnp.take_along_axis(w_BxMxC, j_B[:, None, None], axis=1)[:, 0]
    inner_cdf_BxC = jnp.cumsum(inner_BxC, -1)
    before_B = jnp.take_along_axis(cdf_BxM - block_B, j_B[:, None], axis=-1)[:, 0]
    xi_B = jnp.clip(x_B - before_B, 0.0, jnp.nextafter(inner_cdf_BxC[:, -1], 0.0))
    i_B = _first_index(inner_cdf_BxC > xi_B[:, None])
    return j_B * blk + i_B


def _first_index(mask_BxV):
    """int32 [B]: the first True along the last axis (each row has one). A min-reduction: XLA's
    CPU argmax (a variadic reduce) cost ~0.17 ms per step at batch 64, half a decoder layer."""
    iota = jax.lax.broadcasted_iota(jnp.int32, mask_BxV.shape, mask_BxV.ndim - 1)
    return jnp.min(jnp.where(mask_BxV, iota, mask_BxV.shape[-1] - 1), axis=-1)


def _as_row_keys(rng, batch):
    rng = _typed_key(rng)
    return rng if rng.shape == (batch,) else jax.random.split(rng, batch)


def _typed_key(rng):
    if isinstance(rng, int):
        return jax.random.key(rng)
    rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
    return rng if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(rng)


# ----------------------------------------------------------------------------- 2. jitted loop

# The decode cache: one buffer pair per layer (a loop over layers then needs no dynamic slice of
# a stacked cache, which XLA copies every step), keys stored transposed as [batch, kv_head,
# head_dim, slot] and values as [batch, kv_head, slot, head_dim], so that both attention products
# of a one-token step contract over a minor axis: on CPU ~4x faster than the model's
# [batch, slot, kv_head, head_dim] layout, which the prefill still uses.
DECODE_CACHE_AXES = {"k": ("batch", "kv_head", "head_dim", "cache_seq"),
                     "v": ("batch", "kv_head", "cache_seq", "head_dim")}


def init_decode_cache(cfg: models.ModelConfig, batch: int, max_len: int) -> tuple:
    """A zero decode cache: per layer {"k": [B, K, D, S], "v": [B, K, S, D]}."""
    K, D = cfg.num_kv_heads, cfg.head_dim
    return tuple({"k": jnp.zeros((batch, K, D, max_len), cfg.jnp_dtype),
                  "v": jnp.zeros((batch, K, max_len, D), cfg.jnp_dtype)} for _ in range(cfg.num_layers))


def decode_cache_sharding(cfg: models.ModelConfig, mesh) -> tuple:
    layer = {name: mesh_lib.named_sharding(axes, mesh) for name, axes in DECODE_CACHE_AXES.items()}
    return (layer,) * cfg.num_layers


def decode_cache_bytes(cfg: models.ModelConfig, batch: int, max_len: int) -> int:
    """Bytes of the decode cache (the prefill's temporary cache of P slots comes on top)."""
    return models.cache_bytes(cfg, batch, max_len)


def _layer_params(cfg: models.ModelConfig, params) -> list:
    """Per-layer weights. Sliced once, before the decode loop, on CPU, where a slice inside the
    loop is copied at every step (costs one extra copy of the weights while sampling)."""
    return [jax.tree.map(lambda w: w[i], params["layers"]) for i in range(cfg.num_layers)]


def _decode_step(cfg: models.ModelConfig, params, layers, tokens_B, positions_B, cache):
    """(logits float32 [B, V], cache): one token per row at its own position, K/V written at slot
    = position. The blocks of models/decoder.py for L = 1 on the decode cache, unrolled over
    layers (layers: `_layer_params`, or None to slice here); tests check it against models.forward."""
    dt = cfg.jnp_dtype
    B = tokens_B.shape[0]
    H, K, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    G, S = H // K, cache[0]["v"].shape[2]
    x_BxE = jnp.take(params["embed"], tokens_B, axis=0).astype(dt)
    cos_Bx1xD, sin_Bx1xD = decoder.rope_tables(cfg, positions_B[:, None])
    slots_S = jnp.arange(S, dtype=jnp.int32)
    mask_BxS = slots_S[None, :] <= positions_B[:, None]
    if cfg.sliding_window:
        mask_BxS &= positions_B[:, None] - slots_S[None, :] < cfg.sliding_window
    rows_B = jnp.arange(B)
    new_cache = []
    for i, c in enumerate(cache):
        p = layers[i] if layers is not None else jax.tree.map(lambda w: w[i], params["layers"])
        p = jax.tree.map(lambda w: w.astype(dt), p)
        h_BxE = decoder.rms_norm(x_BxE, p["attn_norm"], cfg.rms_norm_eps)
        q, k, v = h_BxE @ p["q"], h_BxE @ p["k"], h_BxE @ p["v"]
        if cfg.attention_bias:
            q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
        q_BxHxD = decoder.apply_rope(q.reshape(B, 1, H, D), cos_Bx1xD, sin_Bx1xD)[:, 0]
        k_BxKxD = decoder.apply_rope(k.reshape(B, 1, K, D), cos_Bx1xD, sin_Bx1xD)[:, 0]
        k_BxKxDxS = c["k"].at[rows_B, :, :, positions_B].set(k_BxKxD.astype(c["k"].dtype), mode="drop")
        v_BxKxSxD = c["v"].at[rows_B, :, positions_B].set(v.reshape(B, K, D).astype(c["v"].dtype), mode="drop")
        new_cache.append({"k": k_BxKxDxS, "v": v_BxKxSxD})
        scores_BxKxGxS = jnp.einsum("bkgd,bkds->bkgs", q_BxHxD.reshape(B, K, G, D), k_BxKxDxS.astype(dt),
                                    preferred_element_type=jnp.float32) * (D ** -0.5)
        scores_BxKxGxS = jnp.where(mask_BxS[:, None, None, :], scores_BxKxGxS, jnp.finfo(jnp.float32).min)
        probs_BxKxGxS = jax.nn.softmax(scores_BxKxGxS, axis=-1).astype(dt)
        attn_BxQ = jnp.einsum("bkgs,bksd->bkgd", probs_BxKxGxS, v_BxKxSxD.astype(dt)).reshape(B, H * D)
        x_BxE = x_BxE + attn_BxQ @ p["o"]
        h_BxE = decoder.rms_norm(x_BxE, p["mlp_norm"], cfg.rms_norm_eps)
        x_BxE = x_BxE + (jax.nn.silu(h_BxE @ p["gate"]) * (h_BxE @ p["up"])) @ p["down"]
    x_BxE = decoder.rms_norm(x_BxE, params["final_norm"].astype(dt), cfg.rms_norm_eps)
    logits_BxV = models.module(cfg, params).logits(x_BxE[:, None])[:, 0]
    return logits_BxV, tuple(new_cache)


def _prefill(cfg, params, prompts_BxP, prompt_lengths_B, cache):
    """Runs the prompts through the model, fills cache slots 0..P-1 (pads too: a row overwrites
    its pad slots before it ever attends to them) and returns the logits after each last token."""
    B, P = prompts_BxP.shape
    positions_BxP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    hidden_BxPxE, pre = models.hidden_states(cfg, params, prompts_BxP, positions_BxP,
                                             models.init_cache(cfg, B, P))
    cache = tuple({"k": jax.lax.dynamic_update_slice(c["k"], jnp.transpose(pre["k"][i], (0, 2, 3, 1)), (0,) * 4),
                   "v": jax.lax.dynamic_update_slice(c["v"], jnp.transpose(pre["v"][i], (0, 2, 1, 3)), (0,) * 4)}
                  for i, c in enumerate(cache))
    last_Bx1xE = jnp.take_along_axis(hidden_BxPxE, (prompt_lengths_B - 1)[:, None, None], axis=1)
    return models.module(cfg, params).logits(last_Bx1xE)[:, 0], cache


@struct.dataclass
class DecodeState:
    step: jax.Array  # int32 []: tokens generated so far (the column written next)
    last_B: jax.Array  # int32 [B]: the token fed at this step
    positions_B: jax.Array  # int32 [B]: its absolute position (= its cache slot)
    done_B: jax.Array  # bool [B]: row has emitted EOS (or is batch padding)
    tokens_BxN: jax.Array
    logprobs_BxN: jax.Array
    lengths_B: jax.Array
    cache: tuple
    uniforms_BxN: jax.Array  # row b's draw at step t; all drawn up front from row b's key


def _sample_step(state: DecodeState, logits_BxV, temperature_B, top_p_B, top_k, eos_id, pad_id):
    """Samples column `state.step` and records it; rows already done write pad / 0."""
    u_B = jax.lax.dynamic_index_in_dim(state.uniforms_BxN, state.step, axis=1, keepdims=False)
    tok_B, lp_B = _next_token_from_uniform(logits_BxV, u_B, temperature_B, top_p_B, top_k)
    live_B = ~state.done_B
    tok_B = jnp.where(live_B, tok_B, pad_id)
    lp_B = jnp.where(live_B, lp_B, 0.0)
    col = (0, state.step)
    return state.replace(
        step=state.step + 1,
        last_B=tok_B,
        tokens_BxN=jax.lax.dynamic_update_slice(state.tokens_BxN, tok_B[:, None], col),
        logprobs_BxN=jax.lax.dynamic_update_slice(state.logprobs_BxN, lp_B[:, None], col),
        lengths_B=state.lengths_B + live_B.astype(jnp.int32),
        done_B=state.done_B | (live_B & (tok_B == eos_id)),
    )


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "top_k", "pad_id"),
                   donate_argnames=("cache",))
def _generate_jit(cfg, params, prompts_BxP, prompt_lengths_B, active_B, rng, temperature_B, top_p_B,
                  eos_id, cache, *, max_new_tokens, top_k, pad_id):
    TRACE_COUNT["decode"] += 1  # the Python body runs only while tracing
    B, _ = prompts_BxP.shape
    N = max_new_tokens
    logits_BxV, cache = _prefill(cfg, params, prompts_BxP, prompt_lengths_B, cache)
    state = DecodeState(
        step=jnp.zeros((), jnp.int32),
        last_B=jnp.zeros((B,), jnp.int32),
        positions_B=prompt_lengths_B.astype(jnp.int32),
        done_B=~active_B,
        tokens_BxN=jnp.full((B, N), pad_id, jnp.int32),
        logprobs_BxN=jnp.zeros((B, N), jnp.float32),
        lengths_B=jnp.zeros((B,), jnp.int32),
        cache=cache,
        # Per-step key derivation inside the loop costs two threefry loops per step on CPU.
        uniforms_BxN=jax.vmap(lambda b: jax.random.uniform(jax.random.fold_in(rng, b), (N,)))(
            jnp.arange(B, dtype=jnp.uint32)),
    )
    sample = functools.partial(_sample_step, temperature_B=temperature_B, top_p_B=top_p_B,
                               top_k=top_k, eos_id=eos_id, pad_id=pad_id)
    state = sample(state, logits_BxV)  # token 0 comes from the prefill

    def cond(s: DecodeState):
        return (s.step < N) & ~jnp.all(s.done_B)

    layers = _layer_params(cfg, params) if jax.default_backend() == "cpu" else None

    def body(s: DecodeState):
        logits_BxV, cache = _decode_step(cfg, params, layers, s.last_B, s.positions_B, s.cache)
        return sample(s.replace(cache=cache, positions_B=s.positions_B + 1), logits_BxV)

    state = jax.lax.while_loop(cond, body, state)
    # The cache is returned only so that XLA can alias the donated input buffer with it.
    return SampleOutput(state.tokens_BxN, state.lengths_B, state.logprobs_BxN), state.cache


# ----------------------------------------------------------------------------- 3. wrapper

def bucket(n: int, minimum: int = 1) -> int:
    """The power of two >= max(n, minimum): sizes are rounded up so a run compiles once per bucket."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def _per_row(name, value, B):
    arr = np.asarray(value, np.float32)
    if arr.ndim == 0:
        arr = np.full((B,), arr, np.float32)
    if arr.shape != (B,):
        raise ValueError(f"{name} must be a float or an array of shape [{B}], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def generate(cfg: models.ModelConfig, params, prompts, prompt_lengths, rng, *, max_new_tokens: int,
             temperature=1.0, top_p=1.0, top_k: int = 0, eos_id: int, mesh=None) -> SampleOutput:
    """Samples up to `max_new_tokens` tokens after each prompt, in one compiled call.

    prompts: int [B, P]; row b's prompt is prompts[b, :prompt_lengths[b]] (right-padded).
    temperature, top_p: a float or float32 [B] (per row; temperature 0 = greedy for that row).
    top_k: 0 = off. eos_id: the token that ends a row (-1: none, always N tokens).
    mesh: when given, the batch is split along mesh.BATCH_AXES and params by the rules table.
    Returns SampleOutput(tokens int32 [B, N], lengths int32 [B], logprobs float32 [B, N]); a row
    samples the same tokens for the same key whatever the batch it is in, bucket or mesh.
    """
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or prompts.shape[0] == 0 or prompts.shape[1] == 0:
        raise ValueError(f"prompts must be a non-empty int array [B, P], got shape {prompts.shape}")
    if not np.issubdtype(prompts.dtype, np.integer):
        raise ValueError(f"prompts must hold integer token ids, got dtype {prompts.dtype}")
    B, P = prompts.shape
    lengths = np.asarray(prompt_lengths)
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"prompt_lengths must be ints of shape [{B}], got {lengths.dtype} {lengths.shape}")
    if lengths.min() < 1 or lengths.max() > P:
        raise ValueError(f"prompt_lengths must be in [1, {P}] (the prompts' width), got "
                         f"[{lengths.min()}, {lengths.max()}]")
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    N = int(max_new_tokens)
    longest = int(lengths.max())
    if longest + N > cfg.max_position_embeddings:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens {N} = {longest + N} does not fit "
                         f"the model's max_position_embeddings {cfg.max_position_embeddings}")
    live = prompts[np.arange(P)[None, :] < lengths[:, None]]
    if live.min() < 0 or live.max() >= cfg.vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {cfg.vocab_size}), got [{live.min()}, {live.max()}]")
    temperature = _per_row("temperature", temperature, B)
    if temperature.min() < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got min {temperature.min()}")
    top_p = _per_row("top_p", top_p, B)
    if top_p.min() <= 0 or top_p.max() > 1:
        raise ValueError(f"top_p must be in (0, 1], got [{top_p.min()}, {top_p.max()}]")
    if int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    pad_id = int(cfg.pad_token_id) if cfg.pad_token_id is not None and cfg.pad_token_id >= 0 else 0

    # Buckets: batch -> power of two, a multiple of the batch axes; prompt width -> power of two.
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    Bb = bucket(B)
    Bb = -(-Bb // multiple) * multiple
    Pb = bucket(longest, minimum=8)
    pad_rows = Bb - B
    prompts_b = np.full((Bb, Pb), pad_id, np.int32)
    prompts_b[:B, :min(P, Pb)] = prompts[:, :Pb]
    # Whatever sits past a row's length becomes pad: its K/V are written (never attended), and an
    # out-of-vocabulary id there would embed as NaN, which 0-weight attention still propagates.
    prompts_b[np.arange(Pb)[None, :] >= np.concatenate([lengths, np.zeros(pad_rows, lengths.dtype)])[:, None]] = pad_id
    lengths_b = np.concatenate([lengths, np.ones(pad_rows, lengths.dtype)]).astype(np.int32)
    active_b = np.arange(Bb) < B
    temperature_b = np.concatenate([temperature, np.zeros(pad_rows, np.float32)])
    top_p_b = np.concatenate([top_p, np.ones(pad_rows, np.float32)])

    cache_len = Pb + N
    batch_args = (prompts_b, lengths_b, active_b, temperature_b, top_p_b)
    if mesh is not None:
        params = models.shard_params(cfg, params, mesh)
        batch_args = tuple(jax.device_put(a, mesh_lib.batch_sharding(mesh, a.ndim)) for a in batch_args)
    cache = _cache_maker(cfg, Bb, cache_len, mesh)()
    prompts_b, lengths_b, active_b, temperature_b, top_p_b = batch_args
    out, _ = _generate_jit(cfg, params, prompts_b, lengths_b, active_b, _typed_key(rng), temperature_b,
                           top_p_b, jnp.int32(eos_id), cache, max_new_tokens=N, top_k=int(top_k),
                           pad_id=pad_id)
    if pad_rows:
        out = SampleOutput(*(x[:B] for x in out))
    return out


@functools.lru_cache(maxsize=16)
def _cache_maker(cfg, batch, max_len, mesh):
    sharding = decode_cache_sharding(cfg, mesh) if mesh is not None else None
    return jax.jit(lambda: init_decode_cache(cfg, batch, max_len), out_shardings=sharding)
