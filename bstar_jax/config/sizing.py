"""Device memory: per-device bytes of sharded trees, and the sizes that follow from a fraction of
HBM (rows per sampler call, SFT micro-batch); the bytes a device offers come from config/chips.py.
docs/memory.md explains the model.

Sizing is an estimate, made before anything is compiled: the fixed part (weights, and whatever the
caller says stays resident, e.g. optimizer state) plus a per-row part (KV cache and temporaries of
the sampler, activations of the SFT step) must fit in `fraction` of the device's
memory. `resolve_sizes` applies both to a config (the run calls it once, before P_0);
`python -m bstar_jax.tpu_fit` compiles the real programs and checks the result.
"""
from __future__ import annotations

import math

import jax
import ml_collections
import numpy as np

from bstar_jax.core import mesh as mesh_lib
from bstar_jax import models
from bstar_jax.core.shapes import abstract, pow2_bucket
from bstar_jax.generate import engine
from bstar_jax.train import sft
from bstar_jax.core.errors import UserError
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.config import chips
from bstar_jax.config.chips import GiB


def bytes_per_device(tree) -> int:
    """Bytes the busiest device holds of a tree of arrays / ShapeDtypeStructs with shardings
    (a leaf without a sharding counts whole)."""
    total = 0
    for x in jax.tree.leaves(tree):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):  # static arguments
            continue
        sharding = getattr(x, "sharding", None)
        shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
        total += math.prod(shape) * (x.dtype.itemsize if hasattr(x.dtype, "itemsize") else np.dtype(x.dtype).itemsize)
    return total


def param_bytes(cfg: models.ModelConfig, mesh, dtype: str | None = None) -> int:
    """Per-device bytes of the model's weights sharded by the rules table (in `dtype`, default
    cfg.param_dtype)."""
    shapes = models.param_shapes(cfg)
    if dtype:
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, np.dtype(dtype)), shapes)
    sh = models.param_shardings(cfg, mesh)
    return bytes_per_device(abstract(shapes, sh))


def _local(n: int, mesh, axis: str) -> int:
    """n split over a mesh axis when the axis divides it (as mesh.logical_to_spec does), else n."""
    size = mesh.shape.get(axis, 1)
    return n // size if size > 1 and n % size == 0 else n


def sampler_row_bytes(cfg: models.ModelConfig, mesh, prompt_len: int, max_new_tokens: int,
                      requests_per_slot: int = 1) -> int:
    """Per-device bytes one more row (cache slot) costs the sampler.

    The KV cache of P + N slots (updated in place: the one big buffer); when slots are refilled
    (`requests_per_slot` > 1) the sampling engine's prompt store at worst (every request its
    own prompt, as in greedy evaluation): the P prompt columns of each of the slot's requests;
    plus the larger of one prefill chunk's layer (PREFILL_CHUNK queries against the P-slot
    prompt: float32 scores and their softmax per head, SwiGLU and float32 norms) and one decode
    step's vocabulary-wide float32 temporaries (logits and the sampling strategy's copies), plus
    the loop's [N] tokens and log-probs. Checked against XLA's memory analysis in docs/memory.md (SmolLM2 shapes, v5e:2x2:
    temporaries measured 1.6 MB a row, estimated 2.1 MB).
    """
    it = np.dtype(cfg.jnp_dtype).itemsize
    P, N = int(prompt_len), int(max_new_tokens)
    L = min(P, engine.PREFILL_CHUNK)  # one prefill chunk: one model call's tokens
    H, F, V = _local(cfg.num_heads, mesh, "tensor"), _local(cfg.intermediate_size, mesh, "tensor"), \
        _local(cfg.vocab_size, mesh, "tensor")
    E = cfg.hidden_size
    column = 2 * cfg.num_layers * _local(cfg.num_kv_heads, mesh, "tensor") * cfg.head_dim * it + 4
    store = int(requests_per_slot) * (column * P + E * it) if requests_per_slot > 1 else 0
    cache = column * (P + N) + store
    prefill_layer = H * L * P * (4 + it) + L * (3 * F * it + 4 * E * 4)
    decode_step = 9 * V * 4
    loop_state = 8 * N + 64
    return cache + max(prefill_layer, decode_step) + loop_state


def sft_row_bytes(cfg: models.ModelConfig, mesh, seq_len: int, compute_dtype: str = "bfloat16",
                  remat: bool = False) -> int:
    """Per-device bytes one more micro-batch row costs the SFT step: eight vocabulary-wide float32
    buffers per token (logits, log-softmax, their gradients and XLA's copies), plus the activations
    saved for the backward pass — every layer's (projections, SwiGLU, float32 norms, attention
    scores and probabilities over L x L per head), or with `remat` each layer's [L, E] input and
    one layer's activations recomputed at a time. Eight, not four: Qwen2.5-1.5B (vocabulary
    151,936) with remat on v5e:2x4 measured 5.6 MB a token, this estimate 5.4 (docs/memory.md)."""
    it = np.dtype(compute_dtype).itemsize
    T = int(seq_len)
    E, D = cfg.hidden_size, cfg.head_dim
    H, K = _local(cfg.num_heads, mesh, "tensor"), _local(cfg.num_kv_heads, mesh, "tensor")
    F, V = _local(cfg.intermediate_size, mesh, "tensor"), _local(cfg.vocab_size, mesh, "tensor")
    per_token_layer = E * (8 * it + 16) + (3 * H + 5 * K) * D * it + 5 * F * it + H * T * (4 + 4 + it)
    saved = cfg.num_layers * E * it + 2 * per_token_layer if remat else cfg.num_layers * per_token_layer
    return T * (saved + 8 * V * 4)


def _round_rows(rows_per_device: float, multiple: int) -> int:
    """multiple x the largest power of two <= rows_per_device (0 when under one row)."""
    if rows_per_device < 1:
        return 0
    return multiple * (1 << int(math.floor(math.log2(rows_per_device))))


def _budget(mesh, fraction: float, hbm_bytes: int | None, override_gb: float = 0.0) -> int:
    if not 0 < fraction <= 1:
        raise UserError(f"hbm_fraction={fraction} must be in (0, 1] (0 = use the explicit size)")
    hbm = hbm_bytes or chips.device_memory_bytes(mesh.devices.flat[0], override_gb)
    return int(fraction * hbm)


def rows_per_call(cfg: models.ModelConfig, mesh, prompt_len: int, max_new_tokens: int, fraction: float, *,
                  weight_bytes: int | None = None, resident_bytes: int = 0, hbm_bytes: int | None = None,
                  device_memory_gb: float = 0.0, requests_per_slot: int = 1) -> int:
    """Rows per sampler call that fit `fraction` of a device's memory: (weights + `resident_bytes`
    + rows/device x sampler_row_bytes) <= fraction x HBM, rows/device rounded down to a power of
    two, times the mesh's data-parallel size. weight_bytes defaults to the params in
    cfg.param_dtype sharded by the rules table; resident_bytes is what stays on the device outside
    the call (P_0, optimizer state, PRM). Raises UserError when not even one row per device fits."""
    budget = _budget(mesh, fraction, hbm_bytes, device_memory_gb)
    fixed = (param_bytes(cfg, mesh) if weight_bytes is None else int(weight_bytes)) + int(resident_bytes)
    per_row = sampler_row_bytes(cfg, mesh, prompt_len, max_new_tokens, requests_per_slot)
    rows = _round_rows((budget - fixed) / per_row, mesh_lib.batch_size_multiple(mesh))
    if not rows:
        raise UserError(f"sampling.hbm_fraction={fraction}: {fixed / GiB:.2f} GiB of weights and resident "
                        f"state leave no room for one row ({per_row / GiB:.3f} GiB) in {budget / GiB:.2f} GiB "
                        f"per device; shard the weights (config.mesh.fsdp / tensor) or raise the fraction")
    return rows


def micro_batch_size(cfg: models.ModelConfig, mesh, seq_len: int, batch_size: int, fraction: float, *,
                     state_bytes: int, trainable_bytes: int, compute_dtype: str = "bfloat16", remat: bool = False,
                     resident_bytes: int = 0, hbm_bytes: int | None = None, device_memory_gb: float = 0.0) -> int:
    """SFT micro-batch (global rows) that fits `fraction` of a device's memory and divides
    `batch_size`: train state + gradient accumulator and one micro-batch's gradients (2 x
    trainable_bytes) + a compute-dtype copy of the weights + resident + rows/device x
    sft_row_bytes. Raises UserError when not even one row per device fits."""
    budget = _budget(mesh, fraction, hbm_bytes, device_memory_gb)
    weights_c = param_bytes(cfg, mesh, compute_dtype)
    fixed = int(state_bytes) + 2 * int(trainable_bytes) + weights_c + int(resident_bytes)
    per_row = sft_row_bytes(cfg, mesh, seq_len, compute_dtype, remat)
    multiple = mesh_lib.batch_size_multiple(mesh)
    micro = min(_round_rows((budget - fixed) / per_row, multiple), int(batch_size))
    while micro >= multiple and batch_size % micro:
        micro -= multiple
    if micro < multiple:
        raise UserError(f"sft.hbm_fraction={fraction}: {fixed / GiB:.2f} GiB of train state and weights leave no "
                        f"room for one {seq_len}-token row ({per_row / GiB:.3f} GiB) in {budget / GiB:.2f} GiB "
                        f"per device; shard the state (config.mesh.fsdp) or shorten sft.max_len")
    return micro


# ----------------------------------------------------------------------------- a config's sizes

def prm_shapes(cfg: models.ModelConfig):
    """The PRM's parameter shapes: the policy's backbone and a scalar head (rewards.prm.init_prm)."""
    return {"backbone": models.param_shapes(cfg), "head": {"w": jax.ShapeDtypeStruct((cfg.hidden_size,), np.float32),
                                                           "b": jax.ShapeDtypeStruct((), np.float32)}}


def resident(config, cfg: models.ModelConfig, mesh) -> dict[str, int]:
    """Per-device bytes of what the loop keeps on the device: P_0's params, the train state's
    params and optimizer state, the PRM's params (when any run uses it)."""
    state = sft.abstract_train_state(cfg, config.sft, mesh)
    prm = bytes_per_device(abstract(prm_shapes(cfg), prm_lib.prm_shardings(cfg, mesh))) if any(config.use_prm) else 0
    return dict(p0=param_bytes(cfg, mesh), params=bytes_per_device(state.params),
                opt=bytes_per_device(state.opt_state), prm=prm)


def prompt_bucket(config) -> int:
    """The prompt width sizing assumes: the power of two >= sft.max_prompt_len (the longest prompt
    SFT keeps), an upper bound of the prompts the sampler sees."""
    return pow2_bucket(int(config.sft.max_prompt_len), 8)


def resolve_sizes(config, cfg: models.ModelConfig, mesh, prompt_len: int | None = None) -> ml_collections.ConfigDict:
    """`config` with sampling.batch_rows and sft / p0_sft micro_batch_size derived from
    sampling.hbm_fraction and sft.hbm_fraction (each left as set when its fraction is 0; `config`
    itself when both are). The run calls this once, when P_0's shapes are known and before P_0 is
    fine-tuned (bstar/policy.py); the fit tool before it reads the plan.

    prompt_len: the longest prompt the sampler will see, default `prompt_bucket(config)` (with a
    PRM, the labelling prompts hold a question and a partial solution: prompt_len + max_new_tokens
    is used)."""
    if float(config.sampling.hbm_fraction) <= 0 and float(config.sft.hbm_fraction) <= 0:
        return config
    prompt_len = prompt_bucket(config) if prompt_len is None else int(prompt_len)
    c = ml_collections.ConfigDict(config.to_dict())
    r = resident(config, cfg, mesh)
    gb = float(c.get("device_memory_gb", 0.0))
    N = int(c.sampling.max_new_tokens)
    if float(c.sampling.get("hbm_fraction", 0.0)) > 0:
        P = prompt_len + N if any(c.use_prm) else prompt_len
        c.sampling.batch_rows = rows_per_call(cfg, mesh, pow2_bucket(P, 8), N, float(c.sampling.hbm_fraction),
                                              weight_bytes=r["params"], resident_bytes=r["p0"] + r["opt"] + r["prm"],
                                              device_memory_gb=gb,
                                              requests_per_slot=int(c.sampling.get("requests_per_slot", 1)))
    if float(c.sft.get("hbm_fraction", 0.0)) > 0:
        for section, batch in (("sft", c.sft.batch_size), ("p0_sft", c.p0_sft.batch_size)):
            c[section].micro_batch_size = micro_batch_size(
                cfg, mesh, int(c.sft.max_len), int(batch), float(c.sft.hbm_fraction),
                state_bytes=r["params"] + r["opt"], trainable_bytes=r["opt"] // 2,
                compute_dtype=c.sft.compute_dtype or cfg.dtype, remat=c.sft.get("remat", "none") == "full",
                resident_bytes=r["p0"] + r["prm"], device_memory_gb=gb)
    return c
