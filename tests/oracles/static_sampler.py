"""Static reference sampler: prefill every row, then decode all rows until the longest ends.

The package's sampler is one continuous-batching engine (bstar_jax/generate/engine.py). This is
the straightforward program it is checked against: B rows, each prefilled into its own cache
row, then a `lax.while_loop` that feeds token t of every row into cache column P + t and stops
when every row has emitted EOS or N tokens are out. Same strategy (`strategy.next_token`) and the
same keys (row b, step t: fold_in(fold_in(rng, b), t)), so for the same key a row draws the same
tokens as the engine gives request b (tests/unit/generate/test_sampling.py checks it for several
slot counts and meshes; benchmarks/continuous.py times both). Not for use in a run.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental.layout import Format, Layout

from bstar_jax import models
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.shapes import pow2_bucket, round_up
from bstar_jax.generate import call_inputs, engine
from bstar_jax.generate.strategy import SampleOutput, next_token, typed_key


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


def sample_step(state: DecodeState, logits_BxV, row_keys_B, temperature_B, top_p_B, top_k, eos_id, pad_id):
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


def generate_program(cfg, max_new_tokens, top_k, pad_id, params, prompts_BxP, prompt_lengths_B, active_B, rng,
                     temperature_B, top_p_B, eos_id, cache):
    """(SampleOutput, cache): prefill, then the decode loop. cache: an empty `models.KVCache` of
    prompt bucket + N columns, donated."""
    B, P = prompts_BxP.shape
    N = max_new_tokens
    row_keys_B = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(B, dtype=jnp.uint32))
    last_BxE, cache = engine.prefill_hidden(cfg, params, prompts_BxP, prompt_lengths_B, cache)
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
    sample = functools.partial(sample_step, row_keys_B=row_keys_B, temperature_B=temperature_B,
                               top_p_B=top_p_B, top_k=top_k, eos_id=eos_id, pad_id=pad_id)
    state = sample(state, models.logits(cfg, params, last_BxE))  # token 0 comes from the prefill

    def cond(s: DecodeState):
        return (s.step < N) & ~jnp.all(s.done_B)

    def body(s: DecodeState):
        # Token s.step - 1 goes into column P + s.step - 1, whatever the rows' prompt lengths.
        hidden_Bx1xE, cache = models.hidden_states(cfg, params, s.last_B[:, None], s.positions_B[:, None],
                                                   s.cache, slot=P + s.step - 1)
        logits_BxV = models.logits(cfg, params, hidden_Bx1xE[:, 0])
        return sample(s.replace(cache=cache, positions_B=s.positions_B + 1), logits_BxV)

    state = jax.lax.while_loop(cond, body, state)
    return SampleOutput(state.tokens_BxN, state.lengths_B, state.logprobs_BxN), state.cache


def lower_generate(cfg: models.ModelConfig, mesh, batch: int, prompt_len: int, max_new_tokens: int, *,
                   top_k: int = 0):
    """The `jax.stages.Lowered` of the static program: `batch` rows split along the mesh's batch
    axes (None: the default device), prompt bucket `prompt_len`, the cache's layout left to the
    compiler (Layout.AUTO), as the engine's."""
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
    fn = jax.jit(functools.partial(generate_program, cfg, int(max_new_tokens), int(top_k), cfg.pad_id),
                 in_shardings=(param_sh, *batch_sh[:3], rep, *batch_sh[3:], rep, cache_sh),
                 out_shardings=(SampleOutput(batch_sh[0], batch_sh[1], batch_sh[0]), cache_sh),
                 donate_argnums=(8,))
    S = jax.ShapeDtypeStruct
    rows = (S((batch, prompt_len), jnp.int32), S((batch,), jnp.int32), S((batch,), jnp.bool_))
    return fn.lower(models.param_shapes(cfg), *rows, jax.eval_shape(lambda: jax.random.key(0)),
                    S((batch,), jnp.float32), S((batch,), jnp.float32), S((), jnp.int32),
                    models.cache_shapes(cfg, batch, max_len))


@functools.lru_cache(maxsize=16)
def compiled_generate(cfg: models.ModelConfig, mesh, batch: int, prompt_len: int, max_new_tokens: int,
                      top_k: int = 0):
    """`lower_generate(...).compile()`, cached (one compile per bucket)."""
    return lower_generate(cfg, mesh, batch, prompt_len, max_new_tokens, top_k=top_k).compile()


def generate(cfg: models.ModelConfig, params, prompts, prompt_lengths, rng, *, max_new_tokens: int,
             temperature=1.0, top_p=1.0, top_k: int = 0, eos_id: int, mesh=None) -> SampleOutput:
    """`sampling.generate`'s contract, by the static program: rows padded to a power-of-two batch
    (a multiple of the mesh's batch axes) and prompt bucket, every row decoded until the longest
    ends."""
    prompts, lengths, N, temperature, top_p = call_inputs.validate_inputs(cfg, prompts, prompt_lengths,
                                                                          max_new_tokens, temperature, top_p, top_k)
    B, P = prompts.shape
    pad_id = cfg.pad_id
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    Bb, Pb = round_up(pow2_bucket(B), multiple), pow2_bucket(int(lengths.max()), minimum=8)
    pad_rows = Bb - B
    prompts_b = np.full((Bb, Pb), pad_id, np.int32)
    prompts_b[:B, :min(P, Pb)] = prompts[:, :Pb]
    lengths_b = np.concatenate([lengths, np.ones(pad_rows, lengths.dtype)]).astype(np.int32)
    prompts_b[np.arange(Pb)[None, :] >= lengths_b[:, None]] = pad_id
    batch_args = (prompts_b, lengths_b, np.arange(Bb) < B, np.concatenate([temperature, np.zeros(pad_rows, np.float32)]),
                  np.concatenate([top_p, np.ones(pad_rows, np.float32)]))
    if mesh is not None:
        params = models.shard_params(cfg, params, mesh)
        batch_args = tuple(jax.device_put(a, mesh_lib.batch_sharding(mesh, a.ndim)) for a in batch_args)
    compiled = compiled_generate(cfg, mesh, Bb, Pb, N, int(top_k))
    cache = engine.cache_maker(cfg, Bb, Pb + N, compiled.input_formats[0][8])()
    prompts_b, lengths_b, active_b, temperature_b, top_p_b = batch_args
    out, _ = compiled(params, prompts_b, lengths_b, active_b, typed_key(rng), temperature_b, top_p_b,
                      jnp.int32(eos_id), cache)
    return SampleOutput(*(x[:B] for x in out)) if pad_rows else out
