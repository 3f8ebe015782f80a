"""A run's jitted programs at their real shapes, for the fit tool (fit.py) to compile.

Each program comes from one small adapter over the function the run itself compiles:
`engine_call` (engine.lower_generate_requests, the one sampling program) at the shapes of a
grid.sample call (`rollout_call`) or of a PRM labelling call (`labelling_call`), `decode_step`
(one models.hidden_states + models.logits token step and strategy.next_token), `sft_step`
(sft.make_train_step), `prm_train_step` (prm_train.make_step) and `prm_score`
(rewards.prm.step_scores). `plan` lists a config's programs: the calls that the call plan
(bstar_jax/config/plan.py) declares for each phase, which the run reads too. Nothing here
compiles: a `Program`'s `lower()` gives the jax `Lowered`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from bstar_jax import models
from bstar_jax.config import plan as call_plan, sizing as hbm
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.shapes import abstract, pow2_bucket, round_up, sharded
from bstar_jax.generate import call_inputs, engine, grid, strategy
from bstar_jax.rewards import labelling
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards import prm_train
from bstar_jax.train import sft, train_state


@dataclasses.dataclass
class Program:
    """One jitted call at its real shapes: `lower()` gives its jax `Lowered`."""

    name: str
    shape: str  # what it processes, for the table
    lower: Callable[[], Any]
    key: tuple  # identical programs (same key) compile once
    arg_bytes: int  # per-device bytes of its arguments (checked before compiling)
    resident: int = 0  # per-device bytes the run keeps on the device during the call
    cost: bool = False  # print XLA's cost analysis (one decode step, one SFT micro-step)


def _rows_bucket(rows: int, mesh) -> int:
    return round_up(pow2_bucket(rows), mesh_lib.batch_size_multiple(mesh))


def _cache(cfg, mesh, B, S):
    return abstract(models.cache_shapes(cfg, B, S), models.cache_shardings(cfg, mesh, B, S))


def engine_call(name, cfg, mesh, requests, prompts, slots, prompt_len, max_new_tokens, *, top_k=0,
                resident=0) -> Program:
    """The sampling engine (engine.lower_generate_requests) for `requests` requests over `prompts`
    distinct prompts through `slots` slots (None: one per request, no refills), sized as
    engine.generate_requests sizes them: each a power of two (the data-axis multiple at least),
    the prompt a power of two >= 8."""
    R, J, A = call_inputs.call_sizes(requests, prompts, slots, mesh_lib.batch_size_multiple(mesh))
    P, N = pow2_bucket(prompt_len, 8), int(max_new_tokens)
    args = hbm.param_bytes(cfg, mesh) + hbm.bytes_per_device(_cache(cfg, mesh, A, P + N))
    lower = functools.partial(engine.lower_generate_requests, cfg, mesh, R, J, A, P, N, top_k=int(top_k))
    what = f"{A} slots x ({P} prompt + {N} new), {R} requests, {J} prompts"
    return Program(name, what, lower, ("requests", cfg, R, J, A, P, N, int(top_k)), args, resident)


def rollout_call(name, cfg, mesh, shape: grid.CallShape, prompt_len, max_new_tokens, *, top_k=0,
                 resident=0) -> Program:
    """The engine program of one grid.sample call of `shape`: its requests over its distinct
    prompts through one chunk's rows of slots."""
    return engine_call(name, cfg, mesh, shape.requests, shape.questions, shape.chunk_rows, prompt_len,
                       max_new_tokens, top_k=top_k, resident=resident)


def labelling_call(name, cfg, mesh, rows, completions, prompt_len, max_new_tokens, *, top_k=0,
                   resident=0) -> Program:
    """The engine program of one PRM labelling call (labelling.label_steps through
    sampling.generate): `rows` completions, `completions` per step prefix, a slot each."""
    return engine_call(name, cfg, mesh, rows, labelling.prompts_per_call(rows, completions), None, prompt_len,
                       max_new_tokens, top_k=top_k, resident=resident)


def decode_step(cfg, mesh, rows, cache_len, *, top_k=0, resident=0) -> Program:
    """One decode step alone — the model's one forward on one token per row over a cache of
    `cache_len` slots, the LM head, then the sampling strategy: the body of the sampler's while
    loop, compiled alone for XLA's per-step cost (a while loop's cost has no trip count)."""
    B = _rows_bucket(rows, mesh)
    batch_sh, repl = mesh_lib.batch_sharding(mesh, 1), mesh_lib.replicated(mesh)
    params = abstract_params(cfg, mesh)
    cache = _cache(cfg, mesh, B, cache_len)

    def step(params, tokens_B, positions_B, slot, rng, temperature_B, top_p_B, cache):
        hidden_Bx1xE, cache = models.hidden_states(cfg, params, tokens_B[:, None], positions_B[:, None], cache,
                                                   slot=slot)
        logits_BxV = models.logits(cfg, params, hidden_Bx1xE[:, 0])
        return strategy.next_token(logits_BxV, rng, temperature_B, top_p_B, int(top_k)), cache

    row = lambda dtype: sharded((B,), dtype, batch_sh)
    args = (params, row(jnp.int32), row(jnp.int32), sharded((), jnp.int32, repl),
            sharded((), jax.eval_shape(lambda: jax.random.key(0)).dtype, repl),
            row(jnp.float32), row(jnp.float32), cache)
    fn = jax.jit(step, donate_argnames="cache")
    return Program("decode step", f"{B} rows, cache {cache_len}", lambda: fn.lower(*args),
                   ("decode", cfg, B, cache_len, int(top_k)), hbm.bytes_per_device(args), resident, cost=True)


def sft_step(name, cfg, mesh, sft_config, *, resident=0, cost=False) -> Program:
    """The SFT optimizer step (sft.make_train_step) on one global batch of max_len tokens per row."""
    B, L = int(sft_config.batch_size), int(sft_config.max_len)
    state = sft.abstract_train_state(cfg, sft_config, mesh)
    two = mesh_lib.batch_sharding(mesh, 2)
    batch = {k: sharded((B, L), jnp.int32, two) for k in ("tokens", "loss_mask", "positions", "segment_ids")}
    batch["lengths"] = sharded((B,), jnp.int32, mesh_lib.batch_sharding(mesh, 1))
    lower = lambda: sft.make_train_step(cfg, sft_config, mesh).lower(state, batch)
    shape = (f"{B} rows x {L} tokens, micro-batch {int(sft_config.micro_batch_size)}, "
             f"remat {sft_config.get('remat', 'none')}")
    return Program(name, shape, lower, ("sft", cfg, sft.step_key(sft_config), B, L), hbm.bytes_per_device((state, batch)),
                   resident, cost)


def abstract_params(cfg, mesh, dtype: str | None = None):
    """Model params as ShapeDtypeStructs sharded by the rules table (in `dtype`, default cfg's)."""
    shapes = models.param_shapes(cfg)
    if dtype:
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.dtype(dtype)), shapes)
    return abstract(shapes, models.param_shardings(cfg, mesh))


def prm_score(cfg, mesh, rows, seq_len, steps, *, resident=0) -> Program:
    """rewards.prm.step_scores (what score_responses runs) on one batch: rows x seq_len tokens,
    `steps` score positions per row."""
    B, two = _rows_bucket(rows, mesh), mesh_lib.batch_sharding(mesh, 2)
    args = (abstract(hbm.prm_shapes(cfg), prm_lib.prm_shardings(cfg, mesh)), sharded((B, seq_len), jnp.int32, two),
            sharded((B, steps), jnp.int32, two))
    return Program("PRM scoring", f"{B} rows x {seq_len} tokens", lambda: prm_lib.step_scores.lower(cfg, *args),
                   ("prm score", cfg, B, seq_len, steps), hbm.bytes_per_device(args), resident)


def prm_train_step(cfg, mesh, prm_config, *, resident=0) -> Program:
    """The PRM optimizer step (prm_train.make_step: the trainer on the PRM loss) of a PRM trainer
    config (plan.train_config(config, "prm")), accumulated over micro_batch_size rows, on one global
    batch of max_len tokens per row."""
    p = prm_config
    spec = prm_train.train_spec(p)
    B, micro, remat, seq_len = spec.batch_size, spec.micro_batch_size, p.remat == "full", int(p.max_len)
    shapes = hbm.prm_shapes(cfg)
    mask = prm_train.trainable_mask(shapes)
    state = train_state.abstract_state(shapes, mask, spec, prm_lib.prm_shardings(cfg, mesh), mesh)
    batch = {k: sharded((B,) + (seq_len,) * (n - 1), jnp.float32 if k in ("targets", "weights") else jnp.int32,
                     mesh_lib.batch_sharding(mesh, n)) for k, n in prm_train.BATCH_NDIMS.items()}
    step = lambda: prm_train.make_step(cfg, mask, spec, train_state.shardings_of(state), mesh, remat=remat)
    lower = lambda: step().lower(state, batch)
    return Program("PRM train step", f"{B} rows x {seq_len} tokens, micro-batch {micro}, remat {p.remat}", lower,
                   ("prm train", cfg, spec, remat, seq_len), hbm.bytes_per_device((state, batch)), resident)


def _sft_config(base, **overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(base.to_dict())
    c.update(overrides)
    return c


def plan(config, cfg, mesh, prompt_len: int) -> list[Program]:
    """Every jitted program a run of `config` executes, at its shapes (sizes already resolved): the
    calls of each phase as the call plan declares them (config/plan.py, what the run itself reads),
    plus one decode step and one SFT micro-step compiled alone for their cost."""
    c, r = config, hbm.resident(config, cfg, mesh)
    N, top_k = int(c.sampling.max_new_tokens), int(c.sampling.top_k)
    policy = cfg.replace(param_dtype=c.sft.param_dtype or cfg.param_dtype)  # the train state's weights
    loop_resident = r["p0"] + r["opt"] + r["prm"]
    progs = []
    for phase in call_plan.phases(c):
        for call in phase.calls:
            if isinstance(call, call_plan.Sample):
                shape = grid.call_shape(call.queries, call.rows_per_query, c.sampling)
                if phase.name == "PRM":  # P_0 samples the solutions it labels
                    progs.append(rollout_call(call.name, cfg, mesh, shape, prompt_len, N, top_k=top_k))
                    continue
                progs.append(rollout_call(call.name, policy, mesh, shape, prompt_len, N, top_k=top_k,
                                          resident=loop_resident))
                if phase.name == "iteration":
                    # The step alone takes its cache in row-major layout, which XLA copies into its own
                    # tiling, so at full size it holds two caches; for its per-step cost a quarter of the
                    # rows is enough.
                    progs.append(decode_step(policy, mesh, max(1, shape.chunk_rows // 4),
                                             pow2_bucket(prompt_len, 8) + N, top_k=top_k,
                                             resident=loop_resident))
            elif isinstance(call, call_plan.Complete):
                progs.append(labelling_call(call.name, cfg, mesh, call.rows, call.completions, prompt_len + N, N))
            elif isinstance(call, call_plan.Score):
                progs.append(prm_score(cfg, mesh, call.rows, call.seq_len, call_plan.SCORE_STEPS,
                                       resident=r["p0"] + r["params"] + r["opt"]))
            elif call.loss == "prm":
                progs.append(prm_train_step(cfg, mesh, call.config, resident=r["p0"]))
            elif phase.name == "P_0":
                progs.append(sft_step(call.name, cfg, mesh, call.config, resident=r["p0"]))
            else:
                micro = _sft_config(call.config, batch_size=int(call.config.micro_batch_size))
                progs += [sft_step(call.name, cfg, mesh, call.config, resident=r["p0"] + r["prm"]),
                          sft_step("SFT micro-step", cfg, mesh, micro, resident=r["p0"] + r["prm"], cost=True)]
    return progs
