"""The sampling strategy: one token per row from one step's logits, and the keys rows draw with.

Pure functions, no model and no loop (as gemma `gm.text` and google-deepmind/simply separate
them): `next_token` applies temperature, top-k and nucleus top-p to a [B, V] block of logits and
draws by inverse CDF (`draw`). Temperature and top-p are traced per-row float32 [B] arrays, so
one compile serves a whole temperature grid (the paper's §3.2-3.3; docs/models.md); top-k is
static.

Keys: request (row) r of a call draws its t-th token with fold_in(key_r, t), key_r =
fold_in(rng, r) (`request_keys`), so a row's tokens depend only on its key, its prompt and its
settings: not on its batch, slot, bucket or mesh.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bstar_jax.core import streams


class SampleOutput(NamedTuple):
    tokens: jax.Array  # int32 [B, N]: sampled tokens, pad id after EOS
    lengths: jax.Array  # int32 [B]: number of generated tokens, EOS included
    logprobs: jax.Array  # float32 [B, N]: log-prob at temperature 1 of each chosen token, 0 after EOS


def nucleus_threshold(probs_BxV, top_p_B):
    """Per row, the smallest probability θ kept by nucleus sampling: the top set (by a descending
    sort) whose mass first reaches top_p; keeping p >= θ also keeps ties at θ."""
    sorted_BxV = -jnp.sort(-probs_BxV, axis=-1)
    before_BxV = jnp.cumsum(sorted_BxV, axis=-1) - sorted_BxV  # mass strictly above each entry
    keep_BxV = before_BxV < top_p_B[:, None]
    return jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1)


# Vocabulary entries per block of the inverse-CDF draw (`draw`): two cumulative sums of about
# sqrt(V) entries each instead of one over V.
DRAW_BLOCK = 256


def draw(keys_B, scaled_BxV):
    """One token per row from softmax(scaled_BxV) (-inf entries never), by inverse CDF.

    One uniform u per row, found in two levels: the block of DRAW_BLOCK entries whose cumulative
    mass first exceeds u x total, then the entry within it. Same distribution as
    `jax.random.categorical`, which draws a Gumbel per vocabulary entry: with V = 49,152 that
    took 10-27x as long on a CPU (benchmarks/decode_parts.py).
    """
    B, V = scaled_BxV.shape
    Z = -(-V // DRAW_BLOCK)
    u_B = jax.vmap(jax.random.uniform)(keys_B)
    weight_BxV = jnp.exp(scaled_BxV - jnp.max(scaled_BxV, axis=-1, keepdims=True))
    weight_BxZxW = jnp.pad(weight_BxV, ((0, 0), (0, Z * DRAW_BLOCK - V))).reshape(B, Z, DRAW_BLOCK)

    def first_above(weight, target_B):
        """(index, mass before it) of the first entry of `weight` [B, Z blocks or W entries] whose
        cumulative weight exceeds target; an entry of weight 0 is never the first (rounding past
        the end falls on the last nonzero)."""
        cum = jnp.cumsum(weight, axis=-1)
        last_B = weight.shape[1] - 1 - jnp.argmax(weight[:, ::-1] > 0, axis=-1)
        index_B = jnp.minimum(jnp.sum(cum <= target_B[:, None], axis=-1), last_B)
        before_B = jnp.take_along_axis(cum - weight, index_B[:, None], axis=-1)[:, 0]
        return index_B, before_B

    mass_BxZ = weight_BxZxW.sum(axis=-1)
    target_B = u_B * jnp.sum(mass_BxZ, axis=-1)
    block_B, before_B = first_above(mass_BxZ, target_B)
    in_block_BxW = jnp.take_along_axis(weight_BxZxW, block_B[:, None, None], axis=1)[:, 0]
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
    keys_B = row_keys(rng, B)
    temperature_B = jnp.broadcast_to(jnp.asarray(temperature_B, jnp.float32), (B,))
    top_p_B = jnp.broadcast_to(jnp.asarray(top_p_B, jnp.float32), (B,))

    greedy_B = temperature_B <= 0.0
    scaled_BxV = logits_BxV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    if 0 < top_k < V:
        kth_B = jax.lax.top_k(scaled_BxV, top_k)[0][:, -1]
        scaled_BxV = jnp.where(scaled_BxV >= kth_B[:, None], scaled_BxV, -jnp.inf)

    def nucleus(s_BxV):
        p_BxV = jax.nn.softmax(s_BxV, axis=-1)
        keep_BxV = (p_BxV >= nucleus_threshold(p_BxV, top_p_B)[:, None]) | (top_p_B >= 1.0)[:, None]
        return jnp.where(keep_BxV, s_BxV, -jnp.inf)

    # The sort costs more than the rest of the step on CPU; skip it when no row asks for a nucleus.
    scaled_BxV = jax.lax.cond(jnp.any(top_p_B < 1.0), nucleus, lambda s: s, scaled_BxV)
    tokens_B = jnp.where(greedy_B, jnp.argmax(logits_BxV, axis=-1), draw(keys_B, scaled_BxV)).astype(jnp.int32)
    logprobs_B = (jnp.take_along_axis(logits_BxV, tokens_B[:, None], axis=-1)[:, 0]
                  - jax.nn.logsumexp(logits_BxV, axis=-1))
    return tokens_B, logprobs_B


# ----------------------------------------------------------------------------- keys

def typed_key(rng):
    """`rng` as a typed key: an int seed, raw uint32 key data or a key array all become one
    (`streams.as_key`, the one place a seed becomes a key)."""
    return streams.as_key(rng)


def row_keys(rng, batch: int):
    """One key per row: `rng` itself when it is already a key array [batch], else split `batch` ways."""
    rng = typed_key(rng)
    return rng if rng.shape == (batch,) else jax.random.split(rng, batch)


@functools.partial(jax.jit, static_argnums=(1,))
def fold_rows(rng, n: int):
    """Key array [n]: fold_in(rng, r) for r = 0..n-1, the key of row (request) r."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(n, dtype=jnp.uint32))


def request_keys(rng, requests: int, padded: int | None = None):
    """Key array [padded] of R = `requests` requests: fold_in(rng, r) for one key `rng`, or `rng`
    itself when it is already a key array [R]; padding requests (never run) repeat the last key."""
    rng = typed_key(rng)
    padded = requests if padded is None else padded
    if rng.ndim == 0:
        return fold_rows(rng, padded)
    if rng.shape != (requests,):
        raise ValueError(f"rng must be one key or a key array [{requests}] (one per request), got shape {rng.shape}")
    return rng if padded == requests else jnp.concatenate([rng, jnp.repeat(rng[-1:], padded - requests)])
