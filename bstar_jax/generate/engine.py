"""The sampler: R requests through A <= R cache slots in one compiled loop (docs/models.md).

The one compiled sampling program of the package: prefill, then a `lax.while_loop` whose step is
the model's one forward (`models.hidden_states` over a `models.KVCache`) and the strategy's
`next_token` (strategy.py) for every slot. This module holds no model math and no strategy.
`lower_generate_requests` lowers it for abstract shapes and a mesh (memory and fit checks without
running anything), `compiled_generate_requests` caches its compile (one per bucket), and
`generate_requests` checks and pads the call (call_inputs.py: the host side), shards and runs it.

  * When every request has a slot from the start (R = A: `sampling.generate`, and a run's
    default `requests_per_slot` 1) no slot is ever refilled: the static case. If slots share
    prompts (the T x K rows of a query), each distinct prompt is prefilled once, into a store
    split over the mesh like the cache, and its K/V gathered into all its slots one layer at a
    time; otherwise each slot's prompt is prefilled into the slot. Otherwise:
  * Distinct prompts are prefilled ONCE, into a prompt store (K/V [layers, J, kv_head, P, D],
    positions, and the final hidden state after each prompt's last token). A request names its
    prompt by index (request r -> prompt_index[r]); `generate_requests` deduplicates identical
    prompt rows itself when no index is given.
  * A `lax.while_loop` decodes A slots one token per step. When a slot's request ends (EOS or its
    own max_new_tokens), the slot takes the next waiting request, in request order: the prompt's
    K/V are copied from the store into the slot's prompt columns, its decode columns are marked
    empty, and at the next step its first token is sampled from the store's hidden state (that
    step's forward for the slot writes a position -1 column: never attended).
  * Decode columns form a ring of N = max_new_tokens columns after the P prompt columns: step s
    writes column P + s mod N for every slot (one scalar `dynamic_update_slice`, so the donated
    cache is updated in place). A request lives at most N steps, so its own columns are never
    overwritten while it runs; attention masks by position, not column.
  * Keys: token t of request r draws from fold_in(key_r, t) with key_r = fold_in(rng, r) (or the
    caller's own per-request key: `strategy.request_keys`); so a request's tokens do not depend
    on its slot, on the step it started at, on A, or on which other requests share its call
    (tests/unit/generate/test_sampling.py checks equality with a static prefill-then-decode
    sampler, tests/oracles/static_sampler.py, for several A).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct
from jax.experimental.layout import Format, Layout

from bstar_jax import models
from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.shapes import round_up
from bstar_jax.generate import call_inputs
from bstar_jax.generate.strategy import SampleOutput, next_token


# Prompt tokens per prefill chunk: the prefill's activations and attention scores scale with
# chunk x prompt bucket instead of prompt bucket squared (docs/models.md, sampler memory).
PREFILL_CHUNK = 64


def prefill_hidden(cfg, params, prompts_BxP, prompt_lengths_B, cache):
    """Runs the prompts through the model in chunks of PREFILL_CHUNK tokens, fills cache slots
    0..P-1 (pad slots get position -1: never attended) and returns (the final hidden state after
    each row's last prompt token [B, E], cache)."""
    B, P = prompts_BxP.shape
    L = min(P, PREFILL_CHUNK)  # P and L are powers of two: L divides P
    positions_BxP = jnp.where(jnp.arange(P)[None, :] < prompt_lengths_B[:, None], jnp.arange(P)[None, :], -1)

    def chunk(carry, c):
        cache, last_BxE = carry
        start = c * L
        tokens_BxL = jax.lax.dynamic_slice_in_dim(prompts_BxP, start, L, axis=1)
        pos_BxL = jax.lax.dynamic_slice_in_dim(positions_BxP, start, L, axis=1)
        hidden_BxLxE, cache = models.hidden_states(cfg, params, tokens_BxL, pos_BxL, cache, slot=start,
                                                   attend=P)
        here_B = (prompt_lengths_B - 1 >= start) & (prompt_lengths_B - 1 < start + L)
        idx_B = jnp.clip(prompt_lengths_B - 1 - start, 0, L - 1)
        h_BxE = jnp.take_along_axis(hidden_BxLxE, idx_B[:, None, None], axis=1)[:, 0]
        return (cache, jnp.where(here_B[:, None], h_BxE, last_BxE)), None

    last_BxE = jnp.zeros((B, cfg.hidden_size), cfg.jnp_dtype)
    (cache, last_BxE), _ = jax.lax.scan(chunk, (cache, last_BxE), jnp.arange(P // L, dtype=jnp.int32))
    return last_BxE, cache


@struct.dataclass
class SlotState:
    step: jax.Array  # int32 []: loop step (selects the ring column written)
    next_request: jax.Array  # int32 []: the first request not yet given a slot
    request_A: jax.Array  # int32 [A]: the request a slot runs (-1: idle)
    count_A: jax.Array  # int32 [A]: tokens its request has generated
    fresh_A: jax.Array  # bool [A]: taken this step: its next token comes from the prompt store
    last_A: jax.Array  # int32 [A]: the token fed at this step
    tokens_RxN: jax.Array
    logprobs_RxN: jax.Array
    lengths_R: jax.Array
    cache: models.KVCache


def _refill(state: SlotState, done_A, num_requests, prompt_index_R, store: models.KVCache | None):
    """Gives each slot in `done_A` the next waiting request (slot order), copies that request's
    prompt K/V and positions from `store` into the slot's prompt columns and empties its decode
    columns; slots left without a request go idle. store None: no request waits for a slot (R = A,
    every prompt was prefilled into its own slot), so nothing is copied."""
    rank_A = jnp.cumsum(done_A.astype(jnp.int32)) - 1
    new_A = state.next_request + rank_A
    take_A = done_A & (new_A < num_requests)
    request_A = jnp.where(take_A, new_A, jnp.where(done_A, -1, state.request_A))

    def copy(cache):
        # One slot at a time, as the decode step writes the cache: dynamic_update_slice in place.
        P = store.pos.shape[1]
        order_A = jnp.argsort(~take_A)  # taken slots first
        prompt_A = prompt_index_R[jnp.clip(new_A, 0, prompt_index_R.shape[0] - 1)]
        zero = jnp.int32(0)

        def one(i, c):
            b = order_A[i]
            j = prompt_A[b]
            at = (zero, b, zero, zero, zero)
            k = jax.lax.dynamic_slice_in_dim(store.k, j, 1, axis=1)
            v = jax.lax.dynamic_slice_in_dim(store.v, j, 1, axis=1)
            pos = jnp.concatenate([jax.lax.dynamic_slice_in_dim(store.pos, j, 1, axis=0),
                                   jnp.full((1, c.pos.shape[1] - P), -1, jnp.int32)], axis=1)
            return models.KVCache(jax.lax.dynamic_update_slice(c.k, k, at), jax.lax.dynamic_update_slice(c.v, v, at),
                                  jax.lax.dynamic_update_slice(c.pos, pos, (b, zero)))

        return jax.lax.fori_loop(0, jnp.sum(take_A.astype(jnp.int32)), one, cache)

    return state.replace(
        next_request=state.next_request + jnp.sum(take_A.astype(jnp.int32)),
        request_A=request_A,
        count_A=jnp.where(take_A, 0, state.count_A),
        fresh_A=take_A,
        cache=state.cache if store is None else copy(state.cache),
    )


def _store_rows(prompts: int, mesh=None) -> int:
    """Rows of the shared-prefill store: the J distinct prompts padded to a multiple of the
    devices on the batch axes, so that the store is split over them like the cache."""
    devices = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    return round_up(prompts, devices)


def shares_prefill(prompts: int, slots: int, mesh=None) -> bool:
    """Whether a call without refills prefills each distinct prompt once (into a store split over
    the batch axes like the cache, then gathered into the slots) instead of once per slot: when
    the store has at most an eighth as many rows as there are slots. The store lives beside the
    cache until the loop starts: at most 1/8 of its prompt columns (at 1,024 SmolLM2 slots on
    v5e:2x2, a store of half the slots took the temporaries from 0.42 to 1.02 GB per chip)."""
    return 8 * _store_rows(prompts, mesh) <= int(slots)


def _prefill_store(cfg, params, prompts_JxP, prompt_lengths_J, mesh):
    """(hidden [J', E], store): the J distinct prompts, padded to J' = `_store_rows` rows by
    repeating the first, prefilled into a cache of J' rows x P columns split over the batch axes
    (each device prefills J' / devices prompts; a replicated store held every prompt's K/V on
    every device: 3 GB per chip for gsm8k.py's iteration on v5e:4x4)."""
    J, P = prompts_JxP.shape
    rows = _store_rows(J, mesh)
    pad_J = jnp.where(jnp.arange(rows) < J, jnp.arange(rows), 0)
    prompts = mesh_lib.constrain(prompts_JxP[pad_J], ("batch", None), mesh)
    lengths = mesh_lib.constrain(prompt_lengths_J[pad_J], ("batch",), mesh)
    store = models.KVCache(*(mesh_lib.constrain(x, axes, mesh) for x, axes in
                             zip(models.init_cache(cfg, rows, P), (models.K_AXES, models.V_AXES, models.POS_AXES))))
    return prefill_hidden(cfg, params, prompts, lengths, store)


def _write_prompts(cfg, cache: models.KVCache, prompts: models.KVCache, prompt_A, mesh) -> models.KVCache:
    """The cache with slot s's first P columns (K/V and positions) taken from row prompt_A[s] of
    `prompts`, the prefilled store of the distinct prompts' P columns. One layer at a time, in a
    loop over the donated cache: gathering all layers at once holds a second copy of the prompt
    columns of every slot (at gsm8k.py's shapes on v5e:2x4, 6 GB per device beside the 9.8 GB
    cache: RESOURCE_EXHAUSTED); one layer's rows are 1/num_layers of that. Each layer's rows are
    constrained to the cache's split over the mesh, else the compiler may keep them whole on
    every device."""
    zero = jnp.int32(0)

    def rows(store, axes, dtype, layer):  # layer `layer` of the store, one row per slot
        layer_rows = jax.lax.dynamic_slice_in_dim(store, layer, 1, 0)[:, prompt_A]
        return mesh_lib.constrain(layer_rows.astype(dtype), axes, mesh)

    def write_layer(layer, kv):
        k, v = kv
        rows_k, rows_v = rows(prompts.k, models.K_AXES, k.dtype, layer), rows(prompts.v, models.V_AXES, v.dtype, layer)
        at = (layer, zero, zero, zero, zero)
        return jax.lax.dynamic_update_slice(k, rows_k, at), jax.lax.dynamic_update_slice(v, rows_v, at)

    k, v = jax.lax.fori_loop(0, cfg.num_layers, write_layer, (cache.k, cache.v))
    pos = jax.lax.dynamic_update_slice(cache.pos, prompts.pos[prompt_A], (zero, zero))
    return models.KVCache(k, v, pos)


def _generate_requests(cfg, max_new_tokens, top_k, pad_id, mesh, params, prompts_JxP, prompt_lengths_J,
                       prompt_index_R, max_new_R, num_requests, keys_R, temperature_R, top_p_R, eos_id, cache):
    """(SampleOutput over R requests, cache). cache: an empty `models.KVCache` of A slots x (P + N)
    columns, donated. Requests >= num_requests are padding and never run."""
    J, P = prompts_JxP.shape
    R, N, A = prompt_index_R.shape[0], max_new_tokens, cache.pos.shape[0]
    if R > A:
        # One prefill per distinct prompt; the store is read at every refill.
        hidden_JxE, store = prefill_hidden(cfg, params, prompts_JxP, prompt_lengths_J,
                                           models.init_cache(cfg, J, P))
        first_hidden = lambda r_A: hidden_JxE[prompt_index_R[r_A]]
    else:
        # Every request has its slot from the start (request r in slot r; slots past R stay
        # idle) and no slot is ever refilled, so no store is kept for the loop: a per-slot copy
        # inside it makes the compiler keep the cache in a layout the decode step's attention
        # does not use, and copy the whole cache between the two (docs/models.md, sampler memory).
        prompt_A = prompt_index_R[jnp.minimum(jnp.arange(A), R - 1)]
        if shares_prefill(J, A, mesh):
            # Slots share prompts (the samples of a query): one prefill per distinct prompt.
            hidden_JxE, shared = _prefill_store(cfg, params, prompts_JxP, prompt_lengths_J, mesh)
            cache = _write_prompts(cfg, cache, shared, prompt_A, mesh)
            hidden_AxE = hidden_JxE[prompt_A]
        else:
            hidden_AxE, cache = prefill_hidden(cfg, params, prompts_JxP[prompt_A], prompt_lengths_J[prompt_A], cache)
        first_hidden, store = (lambda r_A: hidden_AxE[r_A]), None
    state = SlotState(
        step=jnp.zeros((), jnp.int32), next_request=jnp.zeros((), jnp.int32),
        request_A=jnp.full((A,), -1, jnp.int32), count_A=jnp.zeros((A,), jnp.int32),
        fresh_A=jnp.zeros((A,), jnp.bool_), last_A=jnp.zeros((A,), jnp.int32),
        tokens_RxN=jnp.full((R, N), pad_id, jnp.int32), logprobs_RxN=jnp.zeros((R, N), jnp.float32),
        lengths_R=jnp.zeros((R,), jnp.int32), cache=cache)
    refill = functools.partial(_refill, num_requests=num_requests, prompt_index_R=prompt_index_R, store=store)
    state = refill(state, jnp.ones((A,), jnp.bool_))

    def body(s: SlotState):
        live_A = s.request_A >= 0
        r_A = jnp.maximum(s.request_A, 0)
        prompt_A = prompt_index_R[r_A]
        # Token count - 1 sits at position prompt length + count - 1; fresh and idle slots feed a
        # position -1 dummy (its column is never attended; its output is replaced or dropped).
        feed_A = live_A & ~s.fresh_A
        pos_A = jnp.where(feed_A, prompt_lengths_J[prompt_A] + s.count_A - 1, -1)
        hidden_Ax1xE, cache = models.hidden_states(cfg, params, s.last_A[:, None], pos_A[:, None], s.cache,
                                                   slot=P + s.step % N)
        hidden_AxE = jnp.where(s.fresh_A[:, None], first_hidden(r_A), hidden_Ax1xE[:, 0])
        logits_AxV = models.logits(cfg, params, hidden_AxE)
        keys_A = jax.vmap(jax.random.fold_in)(keys_R[r_A], s.count_A)
        tok_A, lp_A = next_token(logits_AxV, keys_A, temperature_R[r_A], top_p_R[r_A], top_k)
        # Idle slots write out of range: dropped.
        row_A = jnp.where(live_A, s.request_A, R)
        count_A = s.count_A + live_A.astype(jnp.int32)
        done_A = ~live_A | (tok_A == eos_id) | (count_A >= max_new_R[r_A])
        s = s.replace(
            step=s.step + 1, last_A=tok_A, count_A=count_A, cache=cache,
            tokens_RxN=s.tokens_RxN.at[row_A, s.count_A].set(tok_A, mode="drop"),
            logprobs_RxN=s.logprobs_RxN.at[row_A, s.count_A].set(lp_A, mode="drop"),
            lengths_R=s.lengths_R.at[row_A].set(count_A, mode="drop"),
        )
        return refill(s, done_A)

    state = jax.lax.while_loop(lambda s: jnp.any(s.request_A >= 0), body, state)
    return SampleOutput(state.tokens_RxN, state.lengths_R, state.logprobs_RxN), state.cache


def lower_generate_requests(cfg: models.ModelConfig, mesh, requests: int, prompts: int, slots: int,
                            prompt_len: int, max_new_tokens: int, *, top_k: int = 0):
    """The `jax.stages.Lowered` of the engine for abstract inputs: `requests` requests
    over `prompts` distinct prompts of bucket `prompt_len`, `slots` cache slots (a multiple of the
    mesh's batch axes; the cache and the results are split along them, the prompts and request
    settings replicated)."""
    max_len = prompt_len + max_new_tokens
    if mesh is None:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        param_sh, cache_sh, rep = jax.tree.map(lambda _: one, models.param_shapes(cfg)), models.KVCache(
            one, one, one), one
        out_sh = SampleOutput(one, one, one)
    else:
        param_sh = models.param_shardings(cfg, mesh)
        cache_sh = models.cache_shardings(cfg, mesh, slots, max_len)
        rep = mesh_lib.replicated(mesh)
        # Results split by request along the batch axes.
        out_sh = SampleOutput(*(mesh_lib.batch_sharding(mesh, n) for n in (2, 1, 2)))
    cache_sh = models.KVCache(*(Format(Layout.AUTO, sh) for sh in cache_sh))
    fn = jax.jit(functools.partial(_generate_requests, cfg, int(max_new_tokens), int(top_k), cfg.pad_id, mesh),
                 in_shardings=(param_sh,) + (rep,) * 9 + (cache_sh,),
                 out_shardings=(out_sh, cache_sh), donate_argnums=(10,))
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), requests))
    spec = jax.ShapeDtypeStruct
    return fn.lower(models.param_shapes(cfg), spec((prompts, prompt_len), jnp.int32), spec((prompts,), jnp.int32),
                    spec((requests,), jnp.int32), spec((requests,), jnp.int32), spec((), jnp.int32), keys,
                    spec((requests,), jnp.float32), spec((requests,), jnp.float32), spec((), jnp.int32),
                    models.cache_shapes(cfg, slots, max_len))


@functools.lru_cache(maxsize=16)
def compiled_generate_requests(cfg: models.ModelConfig, mesh, requests: int, prompts: int, slots: int,
                               prompt_len: int, max_new_tokens: int, top_k: int = 0):
    """`lower_generate_requests(...).compile()`, cached (one compile per bucket)."""
    return lower_generate_requests(cfg, mesh, requests, prompts, slots, prompt_len, max_new_tokens,
                                   top_k=top_k).compile()


@functools.lru_cache(maxsize=16)
def cache_maker(cfg, batch, max_len, formats):
    """A jitted function that allocates an empty cache in the layout and sharding the compiled
    sampler takes."""
    return jax.jit(lambda: models.init_cache(cfg, batch, max_len), out_shardings=formats)


def generate_requests(cfg: models.ModelConfig, params, prompts, prompt_lengths, rng, *, max_new_tokens: int,
                      prompt_index=None, request_max_new_tokens=None, slots: int | None = None,
                      temperature=1.0, top_p=1.0, top_k: int = 0, eos_id: int, mesh=None) -> SampleOutput:
    """Samples R requests through `slots` cache slots with continuous batching, in one compiled call.

    prompts: int [J, P] right-padded, prompt_lengths int [J]; prompt_index: int [R], request r
    continues prompts[prompt_index[r]] (None: one request per prompt row, identical rows
    prefilled once). request_max_new_tokens: None or int [R] in [1, max_new_tokens], a request's
    own cap. slots: A (None: every request gets a slot; rounded up to a power of two and a
    multiple of the mesh's batch axes). temperature, top_p: a float or float32 [R].
    rng: one key (request r's key is fold_in(rng, r)) or a key array [R], each request's own key
    (callers that split one logical batch over several calls keep its keys this way).
    Returns SampleOutput over the R requests; a request's tokens depend on its key, prompt and
    settings only, not on A or on the other requests (`sampling.generate` is this call with one
    request per row and a slot each).
    """
    req = call_inputs.check_requests(cfg, prompts, prompt_lengths, max_new_tokens=max_new_tokens,
                                     prompt_index=prompt_index, request_max_new_tokens=request_max_new_tokens,
                                     temperature=temperature, top_p=top_p, top_k=top_k)
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    (Rb, Jb, Ab, Pb), args = call_inputs.padded_args(cfg, req, rng, eos_id, slots, multiple)
    if mesh is not None:
        params = models.shard_params(cfg, params, mesh)
        # Host values go up through put_global (valid across processes); the key is already a jax array.
        args = tuple(a if isinstance(a, jax.Array) else distributed.put_global(a, mesh_lib.replicated(mesh))
                     for a in args)
    N, R = req.max_new_tokens, req.index.shape[0]
    compiled = compiled_generate_requests(cfg, mesh, Rb, Jb, Ab, Pb, N, int(top_k))
    cache = cache_maker(cfg, Ab, Pb + N, compiled.input_formats[0][10])()
    out, _ = compiled(params, *args, cache)
    return SampleOutput(*(x[:R] for x in out)) if Rb > R else out
