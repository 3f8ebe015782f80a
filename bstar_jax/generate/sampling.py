"""The sampler: prefill + `lax.while_loop` decode over the model's KV cache, one compile per bucket.

Three layers, as gemma `gm.text` and google-deepmind/simply:
  1. `next_token`: a pure strategy (temperature, nucleus top-p, static top-k) over one step's logits.
  2. `_generate`: one jitted function — prefill, then a while loop over a small `DecodeState` —
     that stops when every row has emitted EOS or `max_new_tokens` is reached. Prefill and each
     decode step are the model's one forward (`models.hidden_states` over a `models.KVCache`);
     this module holds no model math. `lower_generate` lowers it for abstract shapes and a mesh
     (memory and fit checks without running anything); `compiled_generate` caches its compile.
  3. `generate`: validates, pads batch and prompt length to power-of-two buckets, shards, slices.

Temperature and top-p are traced per-row float32 [B] arrays, so one compile serves a whole
temperature grid: B-STaR samples every temperature of its grid in ONE call (the paper's §3.2-3.3
and Algorithm 1; docs/models.md). Top-k, max_new_tokens and the shapes are static.

Randomness: step t of row b draws from the key fold_in(fold_in(rng, b), t). A row's sample
therefore depends only on (rng, its row index, its prompt, its settings, N): not on the batch
padding, the bucket, the other rows or the mesh.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental.layout import Format, Layout

from bstar_jax.core import mesh as mesh_lib
from bstar_jax import models


class SampleOutput(NamedTuple):
    tokens: jax.Array  # int32 [B, N]: sampled tokens, pad id after EOS
    lengths: jax.Array  # int32 [B]: number of generated tokens, EOS included
    logprobs: jax.Array  # float32 [B, N]: log-prob at temperature 1 of each chosen token, 0 after EOS


# ----------------------------------------------------------------------------- 1. strategy

def _nucleus_threshold(probs_BxV, top_p_B):
    """Per row, the smallest probability θ kept by nucleus sampling: the top set (by a descending
    sort) whose mass first reaches top_p; keeping p >= θ also keeps ties at θ."""
    sorted_BxV = -jnp.sort(-probs_BxV, axis=-1)
    before_BxV = jnp.cumsum(sorted_BxV, axis=-1) - sorted_BxV  # mass strictly above each entry
    keep_BxV = before_BxV < top_p_B[:, None]
    return jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1)


# Vocabulary entries per block of the inverse-CDF draw (`_draw`): two cumulative sums of about
# sqrt(V) entries each instead of one over V.
DRAW_BLOCK = 256


def _draw(keys_B, scaled_BxV):
    """One token per row from softmax(scaled_BxV) (-inf entries never), by inverse CDF.

    One uniform u per row, found in two levels: the block of DRAW_BLOCK entries whose cumulative
    mass first exceeds u x total, then the entry within it. Same distribution as
    `jax.random.categorical`, which draws a Gumbel per vocabulary entry: with V = 49,152 that
    took 10-27x as long on a CPU (benchmarks/decode_parts.py).
    """
    B, V = scaled_BxV.shape
    nb = -(-V // DRAW_BLOCK)
    u_B = jax.vmap(jax.random.uniform)(keys_B)
    weight_BxV = jnp.exp(scaled_BxV - jnp.max(scaled_BxV, axis=-1, keepdims=True))
    weight_BxNxW = jnp.pad(weight_BxV, ((0, 0), (0, nb * DRAW_BLOCK - V))).reshape(B, nb, DRAW_BLOCK)

    def first_above(weight_BxN, target_B):
        """(index, mass before it) of the first entry whose cumulative weight exceeds target; an
        entry of weight 0 is never the first (rounding past the end falls on the last nonzero)."""
        cum_BxN = jnp.cumsum(weight_BxN, axis=-1)
        last_B = weight_BxN.shape[1] - 1 - jnp.argmax(weight_BxN[:, ::-1] > 0, axis=-1)
        index_B = jnp.minimum(jnp.sum(cum_BxN <= target_B[:, None], axis=-1), last_B)
        before_B = jnp.take_along_axis(cum_BxN - weight_BxN, index_B[:, None], axis=-1)[:, 0]
        return index_B, before_B

    mass_BxN = weight_BxNxW.sum(axis=-1)
    target_B = u_B * jnp.sum(mass_BxN, axis=-1)
    block_B, before_B = first_above(mass_BxN, target_B)
    in_block_BxW = jnp.take_along_axis(weight_BxNxW, block_B[:, None, None], axis=1)[:, 0]
    entry_B, _ = first_above(in_block_BxW, target_B - before_B)
    return block_B * DRAW_BLOCK + entry_B


def next_token(logits_BxV, rng, temperature_B, top_p_B, top_k: int = 0):
    """Samples one token per row; returns (tokens int32 [B], raw log-probs float32 [B]).

    logits_BxV: float32 [B, V]. rng: one key per row ([B] key array) or a single key (split).
    temperature_B: float32 [B]; 0 = argmax for that row. top_p_B: float32 [B] in (0, 1]; the
    nucleus of the temperature-scaled (and top-k-filtered) distribution, renormalised.
    top_k: static; 0 = off. Order of filters as Hugging Face: temperature, top-k, top-p.
    The log-prob returned is log_softmax(logits) (temperature 1, unfiltered) of the chosen token.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    B, V = logits_BxV.shape
    keys_B = _as_row_keys(rng, B)
    temperature_B = jnp.broadcast_to(jnp.asarray(temperature_B, jnp.float32), (B,))
    top_p_B = jnp.broadcast_to(jnp.asarray(top_p_B, jnp.float32), (B,))

    greedy_B = temperature_B <= 0.0
    scaled_BxV = logits_BxV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    if 0 < top_k < V:
        kth_B = jax.lax.top_k(scaled_BxV, top_k)[0][:, -1]
        scaled_BxV = jnp.where(scaled_BxV >= kth_B[:, None], scaled_BxV, -jnp.inf)

    def nucleus(s_BxV):
        p_BxV = jax.nn.softmax(s_BxV, axis=-1)
        keep_BxV = (p_BxV >= _nucleus_threshold(p_BxV, top_p_B)[:, None]) | (top_p_B >= 1.0)[:, None]
        return jnp.where(keep_BxV, s_BxV, -jnp.inf)

    # The sort costs more than the rest of the step on CPU; skip it when no row asks for a nucleus.
    scaled_BxV = jax.lax.cond(jnp.any(top_p_B < 1.0), nucleus, lambda s: s, scaled_BxV)
    tokens_B = jnp.where(greedy_B, jnp.argmax(logits_BxV, axis=-1), _draw(keys_B, scaled_BxV)).astype(jnp.int32)
    logprobs_B = (jnp.take_along_axis(logits_BxV, tokens_B[:, None], axis=-1)[:, 0]
                  - jax.nn.logsumexp(logits_BxV, axis=-1))
    return tokens_B, logprobs_B


def _as_row_keys(rng, batch):
    rng = typed_key(rng)
    return rng if rng.shape == (batch,) else jax.random.split(rng, batch)


def typed_key(rng):
    if isinstance(rng, int):
        return jax.random.key(rng)
    rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
    return rng if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(rng)


# ----------------------------------------------------------------------------- 2. jitted loop

# Prompt tokens per prefill chunk: the prefill's activations and attention scores scale with
# chunk x prompt bucket instead of prompt bucket squared (docs/models.md, sampler memory).
PREFILL_CHUNK = 64


def _prefill(cfg, params, prompts_BxP, prompt_lengths_B, cache):
    """Runs the prompts through the model in chunks of PREFILL_CHUNK tokens, fills cache slots
    0..P-1 (pad slots get position -1: never attended) and returns the logits after each row's
    last prompt token."""
    last_BxE, cache = prefill_hidden(cfg, params, prompts_BxP, prompt_lengths_B, cache)
    return models.logits(cfg, params, last_BxE), cache


def prefill_hidden(cfg, params, prompts_BxP, prompt_lengths_B, cache):
    """`_prefill` up to the LM head: (final hidden state after each row's last prompt token
    [B, E], cache). The continuous sampler keeps these per distinct prompt (continuous.py)."""
    B, P = prompts_BxP.shape
    C = min(P, PREFILL_CHUNK)  # P and C are powers of two: C divides P
    positions_BxP = jnp.where(jnp.arange(P)[None, :] < prompt_lengths_B[:, None], jnp.arange(P)[None, :], -1)

    def chunk(carry, c):
        cache, last_BxE = carry
        start = c * C
        tokens_BxC = jax.lax.dynamic_slice_in_dim(prompts_BxP, start, C, axis=1)
        pos_BxC = jax.lax.dynamic_slice_in_dim(positions_BxP, start, C, axis=1)
        hidden_BxCxE, cache = models.hidden_states(cfg, params, tokens_BxC, pos_BxC, cache, slot=start,
                                                   attend=P)
        here_B = (prompt_lengths_B - 1 >= start) & (prompt_lengths_B - 1 < start + C)
        idx_B = jnp.clip(prompt_lengths_B - 1 - start, 0, C - 1)
        h_BxE = jnp.take_along_axis(hidden_BxCxE, idx_B[:, None, None], axis=1)[:, 0]
        return (cache, jnp.where(here_B[:, None], h_BxE, last_BxE)), None

    last_BxE = jnp.zeros((B, cfg.hidden_size), cfg.jnp_dtype)
    (cache, last_BxE), _ = jax.lax.scan(chunk, (cache, last_BxE), jnp.arange(P // C, dtype=jnp.int32))
    return last_BxE, cache


@struct.dataclass
class DecodeState:
    step: jax.Array  # int32 []: tokens generated so far (the column written next)
    last_B: jax.Array  # int32 [B]: the token fed at this step
    positions_B: jax.Array  # int32 [B]: its absolute position
    done_B: jax.Array  # bool [B]: row has emitted EOS (or is batch padding)
    tokens_BxN: jax.Array
    logprobs_BxN: jax.Array
    lengths_B: jax.Array
    cache: models.KVCache


def _sample_step(state: DecodeState, logits_BxV, row_keys_B, temperature_B, top_p_B, top_k, eos_id, pad_id):
    """Samples column `state.step` and records it; rows already done write pad / 0."""
    keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys_B, state.step)
    tok_B, lp_B = next_token(logits_BxV, keys_B, temperature_B, top_p_B, top_k)
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


def _generate(cfg, max_new_tokens, top_k, pad_id, params, prompts_BxP, prompt_lengths_B, active_B, rng,
              temperature_B, top_p_B, eos_id, cache):
    """(SampleOutput, cache): the whole sampler call; `compiled_generate` compiles it once per
    (cfg, mesh, shapes, N, top_k). cache: an empty `models.KVCache` of prompt bucket + N slots,
    donated (updated in place and returned so that XLA aliases the two buffers)."""
    B, P = prompts_BxP.shape
    N = max_new_tokens
    row_keys_B = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(B, dtype=jnp.uint32))
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
    )
    sample = functools.partial(_sample_step, row_keys_B=row_keys_B, temperature_B=temperature_B,
                               top_p_B=top_p_B, top_k=top_k, eos_id=eos_id, pad_id=pad_id)
    state = sample(state, logits_BxV)  # token 0 comes from the prefill

    def cond(s: DecodeState):
        return (s.step < N) & ~jnp.all(s.done_B)

    def body(s: DecodeState):
        # Token s.step - 1 goes into slot P + s.step - 1: one slot for all rows, whatever their
        # prompt lengths (models/cache.py).
        hidden_Bx1xE, cache = models.hidden_states(cfg, params, s.last_B[:, None], s.positions_B[:, None],
                                                   s.cache, slot=P + s.step - 1)
        logits_BxV = models.logits(cfg, params, hidden_Bx1xE[:, 0])
        return sample(s.replace(cache=cache, positions_B=s.positions_B + 1), logits_BxV)

    state = jax.lax.while_loop(cond, body, state)
    # The cache is returned only so that XLA can alias the donated input buffer with it.
    return SampleOutput(state.tokens_BxN, state.lengths_B, state.logprobs_BxN), state.cache


def _batch_args_shapes(batch: int, prompt_len: int):
    """ShapeDtypeStructs of (prompts, prompt_lengths, active, temperature, top_p)."""
    S = jax.ShapeDtypeStruct
    return (S((batch, prompt_len), jnp.int32), S((batch,), jnp.int32), S((batch,), jnp.bool_),
            S((batch,), jnp.float32), S((batch,), jnp.float32))


def lower_generate(cfg: models.ModelConfig, mesh, batch: int, prompt_len: int, max_new_tokens: int, *,
                   top_k: int = 0):
    """The `jax.stages.Lowered` of the sampler for abstract inputs: `batch` rows (a multiple of the
    mesh's batch axes), prompt bucket `prompt_len`; params, batch and cache placed by the rules
    table on `mesh` (None: the default device). `.compile().memory_analysis()` gives its memory
    per device. The cache's layout is left to the compiler (Layout.AUTO): on TPU it prefers a
    tiling of its own, and a cache passed in another layout would be copied whole into it.
    """
    max_len = prompt_len + max_new_tokens
    if mesh is None:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        param_sh, cache_sh = jax.tree.map(lambda _: one, models.param_shapes(cfg)), models.KVCache(one, one, one)
        batch_sh, rep = (one,) * 5, one
    else:
        param_sh, cache_sh = models.param_shardings(cfg, mesh), models.cache_shardings(cfg, mesh, batch, max_len)
        batch_sh = tuple(mesh_lib.batch_sharding(mesh, n) for n in (2, 1, 1, 1, 1))
        rep = mesh_lib.replicated(mesh)
    cache_sh = models.KVCache(*(Format(Layout.AUTO, sh) for sh in cache_sh))
    fn = jax.jit(functools.partial(_generate, cfg, int(max_new_tokens), int(top_k), cfg.pad_id),
                 in_shardings=(param_sh, *batch_sh[:3], rep, *batch_sh[3:], rep, cache_sh),
                 out_shardings=(SampleOutput(batch_sh[0], batch_sh[1], batch_sh[0]), cache_sh),
                 donate_argnums=(8,))
    rng = jax.eval_shape(lambda: jax.random.key(0))
    return fn.lower(models.param_shapes(cfg), *_batch_args_shapes(batch, prompt_len)[:3], rng,
                    *_batch_args_shapes(batch, prompt_len)[3:], jax.ShapeDtypeStruct((), jnp.int32),
                    models.cache_shapes(cfg, batch, max_len))


@functools.lru_cache(maxsize=16)
def compiled_generate(cfg: models.ModelConfig, mesh, batch: int, prompt_len: int, max_new_tokens: int,
                      top_k: int = 0):
    """`lower_generate(...).compile()`, cached: what `generate` runs (one compile per bucket)."""
    return lower_generate(cfg, mesh, batch, prompt_len, max_new_tokens, top_k=top_k).compile()


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


def validate_inputs(cfg, prompts, prompt_lengths, max_new_tokens, temperature, top_p, top_k):
    """Checks a sampler call's inputs (ValueError naming the argument); returns (prompts [B, P],
    prompt_lengths [B], max_new_tokens, temperature float32 [B], top_p float32 [B])."""
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
    return prompts, lengths, N, temperature, top_p


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
    prompts, lengths, N, temperature, top_p = validate_inputs(cfg, prompts, prompt_lengths, max_new_tokens,
                                                              temperature, top_p, top_k)
    B, P = prompts.shape
    longest = int(lengths.max())
    pad_id = cfg.pad_id

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
    compiled = compiled_generate(cfg, mesh, Bb, Pb, N, int(top_k))
    cache = cache_maker(cfg, Bb, cache_len, compiled.input_formats[0][8])()
    prompts_b, lengths_b, active_b, temperature_b, top_p_b = batch_args
    out, _ = compiled(params, prompts_b, lengths_b, active_b, typed_key(rng), temperature_b, top_p_b,
                      jnp.int32(eos_id), cache)
    if pad_rows:
        out = SampleOutput(*(x[:B] for x in out))
    return out


@functools.lru_cache(maxsize=16)
def cache_maker(cfg, batch, max_len, formats):
    """A jitted function that allocates an empty cache in the layout and sharding the compiled
    sampler takes."""
    return jax.jit(lambda: models.init_cache(cfg, batch, max_len), out_shardings=formats)
