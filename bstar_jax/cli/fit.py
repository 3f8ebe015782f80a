"""Will it fit on a TPU? Compiles every jitted program a run executes, for a TPU topology, on a CPU.

    JAX_PLATFORMS=cpu python -m bstar_jax.tpu_fit --config=configs/gsm8k.py --topology=v5e:2x4 \\
        [--config.model.path=qwen2.5-1.5b] [--prompt_len=256]

libtpu compiles for a slice it does not have (`jax.experimental.topologies`); XLA's memory analysis
gives each program's per-device arguments, temporaries and outputs, to which the tool adds what the
loop keeps on the device meanwhile (P_0, optimizer state, PRM). One decode step and one SFT
micro-step are also compiled alone for XLA's cost analysis (a while loop's cost has no trip count).
Exit status 0 when every program fits, 1 naming those that do not (a RESOURCE_EXHAUSTED compile
counts as not fitting). docs/memory.md has the model and the shipped configs' tables.

Each program comes from one small adapter over the function the run itself compiles:
`engine_call` (engine.lower_generate_requests, the one sampling program) at the shapes of a
grid.sample call (`rollout_call`) or of a PRM labelling call (`labelling_call`), `decode_step`
(one models.hidden_states + models.logits token step and strategy.next_token), `sft_step`
(sft.make_train_step), `prm_train_step` (prm_train.make_step) and `prm_score`
(rewards.prm.step_scores).
`plan` lists a config's programs: the calls that the call plan (bstar_jax/config/plan.py)
declares for each phase, which the run reads too, after the sizes are resolved as the run
resolves them (sizing.resolve_sizes).
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before jax is imported: compile for the TPU from the CPU backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import functools
import re
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from bstar_jax.config import chips, plan as call_plan, sizing as hbm
from bstar_jax import models
from bstar_jax.core.shapes import abstract, pow2_bucket, round_up, sharded
from bstar_jax.generate import engine, grid, strategy
from bstar_jax.train import sft, trainer
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import UserError
from bstar_jax.models import known
from bstar_jax.rewards import labelling
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards import prm_train

# v4 and v5p chips are one device each (megacore), as Cloud TPU slices run them.
_MEGACORE = ("v4", "v5p", "v5")


def topology_devices(name: str) -> list:
    """The devices of a TPU slice, e.g. "v5e:2x4", "v4:2x2x1", "v5p:2x2x1" (needs libtpu)."""
    from jax.experimental import topologies

    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other processes may hold libtpu's lock
    kind = name.split(":")[0]
    kw = dict(chip_config_name="megacore") if kind in _MEGACORE else {}
    if kind == "v5p":
        name = "v5" + name[3:]
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                 chips_per_host_bounds=(2, 2, 1), **kw).devices)
    except Exception as e:
        raise UserError(f"--topology={name}: libtpu cannot describe it ({str(e).splitlines()[0]}); "
                        "use e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x2") from None


def model_config(config) -> models.ModelConfig:
    """The policy's shapes without loading weights: the warm-start model, a known architecture by
    name (a hub id's last part, "-instruct" dropped), or a local folder's / file's config.json."""
    m = config.model
    if config.warm_start.enabled:
        w = config.warm_start
        cfg = models.ModelConfig(model_type="llama", vocab_size=int(w.vocab_size), hidden_size=int(w.hidden_size),
                                 intermediate_size=int(w.intermediate_size), num_layers=int(w.num_layers),
                                 num_heads=int(w.num_heads), num_kv_heads=int(w.num_kv_heads),
                                 head_dim=int(w.hidden_size) // int(w.num_heads),
                                 max_position_embeddings=int(w.max_len), tie_word_embeddings=True)
    else:
        key = str(m.path).rstrip("/").split("/")[-1].lower().removesuffix("-instruct")
        if key in known.ARCHITECTURES:
            cfg = known.model_config(key)
        elif os.path.exists(m.path) and not str(m.path).endswith(".gguf"):
            cfg = models.ModelConfig.from_hf_file(m.path)
        else:
            raise UserError(f"config.model.path={m.path!r}: no shapes known without loading it; use one of "
                            f"{', '.join(known.ARCHITECTURES)} or a folder / config.json")
    return cfg.replace(param_dtype=m.param_dtype, dtype=m.dtype)


# ----------------------------------------------------------------------------- programs

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
    R, U, S = engine.call_sizes(requests, prompts, slots, mesh_lib.batch_size_multiple(mesh))
    P, N = pow2_bucket(prompt_len, 8), int(max_new_tokens)
    args = hbm.param_bytes(cfg, mesh) + hbm.bytes_per_device(_cache(cfg, mesh, S, P + N))
    lower = functools.partial(engine.lower_generate_requests, cfg, mesh, R, U, S, P, N, top_k=int(top_k))
    what = f"{S} slots x ({P} prompt + {N} new), {R} requests, {U} prompts"
    return Program(name, what, lower, ("requests", cfg, R, U, S, P, N, int(top_k)), args, resident)


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
    state = trainer.abstract_state(shapes, mask, spec, prm_lib.prm_shardings(cfg, mesh), mesh)
    batch = {k: sharded((B,) + (seq_len,) * (n - 1), jnp.float32 if k in ("targets", "weights") else jnp.int32,
                     mesh_lib.batch_sharding(mesh, n)) for k, n in prm_train.BATCH_NDIMS.items()}
    lower = lambda: prm_train.make_step(cfg, mask, spec, trainer.shardings_of(state), mesh, remat=remat).lower(state,
                                                                                                            batch)
    return Program("PRM train step", f"{B} rows x {seq_len} tokens, micro-batch {micro}, remat {p.remat}", lower,
                   ("prm train", cfg, spec, remat, seq_len), hbm.bytes_per_device((state, batch)), resident)


# ----------------------------------------------------------------------------- a config's programs

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


# ----------------------------------------------------------------------------- compile and report

@dataclasses.dataclass
class Result:
    """Per-device bytes of one compiled program (XLA's memory analysis) plus the run's resident."""

    program: Program
    argument: int = 0
    output: int = 0
    temp: int = 0
    alias: int = 0
    cost: dict | None = None
    error: str | None = None  # RESOURCE_EXHAUSTED at compile time

    @property
    def total(self) -> int:
        return self.argument + self.output + self.temp - self.alias + self.program.resident


def compile_program(p: Program, hbm_bytes: int | None = None) -> Result:
    """Lowers and compiles `p`; an out-of-memory compile comes back as Result.error, and so do
    arguments that alone exceed `hbm_bytes` (not compiled: XLA would search long for a fit)."""
    if hbm_bytes and p.arg_bytes + p.resident > hbm_bytes:
        return Result(p, argument=p.arg_bytes, error=f"arguments alone {p.arg_bytes / 1e9:.2f} GB")
    try:
        compiled = p.lower().compile()
    except Exception as e:  # XLA raises its runtime error type; only memory exhaustion is a verdict
        text = str(e)
        if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
            raise
        used = re.search(r"Used ([\d.]+\w?) of ([\d.]+\w?) hbm", text)
        return Result(p, error="RESOURCE_EXHAUSTED" + (f" (used {used[1]} of {used[2]} HBM)" if used else ""))
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return Result(p, m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes, m.alias_size_in_bytes,
                  dict(cost or {}) if p.cost else None)


def compile_all(programs: list[Program], log: Callable[[str], None] | None = None,
                hbm_bytes: int | None = None) -> list[Result]:
    """Compiles each distinct program once (identical calls share a result)."""
    done: dict[Any, Result] = {}
    out = []
    for p in programs:
        k = p.key
        if k not in done:
            start = time.perf_counter()
            done[k] = compile_program(p, hbm_bytes)
            if log:
                r = done[k]
                size = r.error or (f"args {r.argument / 1e9:.2f} temps {r.temp / 1e9:.2f} outputs {r.output / 1e9:.2f} "
                                   f"aliased {r.alias / 1e9:.2f} resident {p.resident / 1e9:.2f} GB")
                log(f"compiled {p.name} ({p.shape}) in {time.perf_counter() - start:.0f} s: {size}")
        out.append(dataclasses.replace(done[k], program=p))
    return out


def fits(result: Result, hbm_bytes: int) -> bool:
    return result.error is None and result.total <= hbm_bytes


def format_tables(results: list[Result], chip: chips.Chip, hbm_bytes: int, title: str) -> str:
    """The memory table (GB = 1e9 bytes, per device) and the cost table of the cost programs."""
    gb = lambda b: f"{b / 1e9:.2f}"
    lines = [title, "", "| program | shape | args GB | temps GB | outputs GB | aliased GB | resident GB | total GB "
             f"| HBM GB | fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r.program
        if r.error:
            lines.append(f"| {p.name} | {p.shape} | | | | | {gb(p.resident)} | {r.error} | {gb(hbm_bytes)} | no |")
        else:
            lines.append(f"| {p.name} | {p.shape} | {gb(r.argument)} | {gb(r.temp)} | {gb(r.output)} | {gb(r.alias)} "
                         f"| {gb(p.resident)} | {gb(r.total)} | {gb(hbm_bytes)} | {'yes' if fits(r, hbm_bytes) else 'NO'} |")
    costs = [r for r in results if r.cost]
    if costs:
        lines += ["", f"XLA cost per device ({chip.name}: {chip.peak_flops / 1e12:.0f} TFLOP/s bf16, "
                  f"{chip.hbm_bandwidth / 1e9:.0f} GB/s HBM)", "",
                  "| program | GFLOP | GB accessed | FLOP/byte | XLA est. ms | roofline ms | % peak FLOP/s | % HBM BW | bound |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in costs:
            f, b = float(r.cost.get("flops", 0.0)), float(r.cost.get("bytes accessed", 0.0))
            t_f, t_b = f / chip.peak_flops, b / chip.hbm_bandwidth
            est = float(r.cost.get("optimal_seconds", 0.0))
            est = est if est > 0 else max(t_f, t_b)  # XLA reports -1 when it has no estimate
            lines.append(f"| {r.program.name} | {f / 1e9:.1f} | {b / 1e9:.2f} | {f / max(b, 1):.1f} | {est * 1e3:.2f} "
                         f"| {max(t_f, t_b) * 1e3:.2f} | {100 * t_f / est:.0f} | {100 * t_b / est:.0f} "
                         f"| {'compute' if t_f >= t_b else 'memory'} |")
    return "\n".join(lines)


def fit(config, topology: str, prompt_len: int | None = None, log: Callable[[str], None] | None = None,
        only: str = ""):
    """(results, table text, names not fitting) of every program of `config` on `topology` (those
    whose name matches the regular expression `only`, when given)."""
    devices = topology_devices(topology)
    chip = chips.chip_of(devices[0])
    m = config.mesh
    try:
        mesh = mesh_lib.make_mesh(int(m.data), int(m.fsdp), int(m.tensor), devices=devices)
    except ValueError as e:
        raise UserError(f"config.mesh on {topology} ({len(devices)} devices): {e}") from None
    cfg = model_config(config)
    P = int(prompt_len or hbm.prompt_bucket(config))
    config = hbm.resolve_sizes(config, cfg, mesh, P)
    hbm_bytes = chips.device_memory_bytes(devices[0])
    programs = [p for p in plan(config, cfg, mesh, P) if not only or re.search(only, p.name)]
    results = compile_all(programs, log, hbm_bytes)
    title = (f"{topology} ({len(devices)} x {chip.name}, {hbm_bytes / 1e9:.1f} GB HBM each), mesh {dict(mesh.shape)}, "
             f"model {config.model.path if not config.warm_start.enabled else 'warm start'} "
             f"({cfg.num_params() / 1e6:.0f}M params, {cfg.param_dtype} weights, {cfg.dtype} compute), "
             f"sampling.batch_rows={config.sampling.batch_rows}, sft.micro_batch_size={config.sft.micro_batch_size}")
    bad = [r.program.name for r in results if not fits(r, hbm_bytes)]
    return results, format_tables(results, chip, hbm_bytes, title), bad


def main(argv) -> None:
    del argv
    from absl import flags

    f = flags.FLAGS
    try:
        _, text, bad = fit(f.config, f.topology, f.prompt_len or None, log=lambda m: print(m, file=sys.stderr, flush=True),
                           only=f.only)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)
    if bad:
        print(f"\ndoes not fit: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)
    print("\nevery program fits")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file (optionally :arg).")
    flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v5e:4x4.")
    flags.DEFINE_integer("prompt_len", 0, "prompt tokens the sampler sees (0 = sft.max_prompt_len's power of two)")
    flags.DEFINE_string("only", "", "compile only the programs whose name matches this regex, e.g. 'SFT|PRM train'")
    flags.mark_flags_as_required(["config", "topology"])
    app.run(main)
