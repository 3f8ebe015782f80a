"""Will it fit on a TPU? Compiles every jitted program a run executes, for a TPU topology, on a CPU.

    JAX_PLATFORMS=cpu python -m bstar_jax.tpu_fit --config=configs/gsm8k.py --topology=v5e:2x4 \\
        [--config.model.path=qwen2.5-1.5b] [--prompt_len=256]

libtpu compiles for a slice it does not have (`jax.experimental.topologies`); XLA's memory analysis
gives each program's per-device arguments, temporaries and outputs, to which the tool adds what the
loop keeps on the device meanwhile (P_0, optimizer state, PRM). One decode step and one SFT
micro-step are also compiled alone for XLA's cost analysis (a while loop's cost has no trip count).
Exit status 0 when every program fits, 1 naming those that do not (a RESOURCE_EXHAUSTED compile
counts as not fitting). docs/memory.md has the model and the shipped configs' tables.

The programs and their shapes: programs.py (`programs.plan`, the calls that the call plan,
bstar_jax/config/plan.py, declares for each phase, after the sizes are resolved as the run
resolves them: sizing.resolve_sizes). This module compiles them and writes the tables.
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before jax is imported: compile for the TPU from the CPU backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import re
import sys
import time
from typing import Any, Callable

from bstar_jax import models
from bstar_jax.cli.programs import Program, plan
from bstar_jax.config import chips, sizing as hbm
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import UserError
from bstar_jax.models import known

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
