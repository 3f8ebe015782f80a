"""The host side of a sampler call: its inputs checked, identical prompts merged, its sizes
bucketed and its arrays padded to the buckets; engine.py compiles and runs the program on them.

`validate_inputs` checks one row per prompt (`sampling.generate`'s view), `check_requests` a
call of R requests over J distinct prompts, and `padded_args` pads that call to power-of-two
buckets (`call_sizes`, `core.shapes.pow2_bucket`) as the compiled program's arguments. Bad input
is one ValueError naming the argument.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bstar_jax.core.shapes import pow2_bucket, round_up
from bstar_jax.generate.strategy import request_keys


def call_sizes(requests: int, prompts: int, slots: int | None, multiple: int = 1) -> tuple[int, int, int]:
    """(R, J, A) the compiled call is built for: `requests` requests over `prompts` distinct
    prompts through `slots` slots (None: one per request), each rounded up to a power of two
    >= `multiple` (the mesh's batch-axes size) and A to a multiple of it."""
    R, J = pow2_bucket(requests, minimum=multiple), pow2_bucket(prompts, minimum=multiple)
    A = pow2_bucket(min(requests, int(slots)) if slots else requests, minimum=multiple)
    return R, J, round_up(A, multiple)


def dedupe_prompts(prompts, prompt_lengths):
    """(distinct prompts [J, P], their lengths [J], row -> distinct index [B]) of right-padded
    prompt rows; two rows are one prompt when their first `length` tokens agree."""
    prompts, lengths = np.asarray(prompts), np.asarray(prompt_lengths)
    live = np.where(np.arange(prompts.shape[1])[None, :] < lengths[:, None], prompts, -1)
    keyed = np.concatenate([lengths[:, None], live], axis=1)
    _, first, index = np.unique(keyed, axis=0, return_index=True, return_inverse=True)
    return prompts[first], lengths[first], index.reshape(-1).astype(np.int32)


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



class Requests(NamedTuple):
    """A checked sampler call: R requests over J distinct prompts."""

    prompts: np.ndarray  # int [J, P], right-padded
    lengths: np.ndarray  # int [J]
    index: np.ndarray  # int [R]: request r continues prompts[index[r]]
    caps: np.ndarray  # int [R] in [1, max_new_tokens]: each request's own cap
    max_new_tokens: int  # N
    temperature: np.ndarray  # float32 [R]
    top_p: np.ndarray  # float32 [R]


def check_requests(cfg, prompts, prompt_lengths, *, max_new_tokens, prompt_index=None, request_max_new_tokens=None,
                   temperature=1.0, top_p=1.0, top_k=0) -> Requests:
    """`engine.generate_requests`' inputs checked (ValueError naming the argument). Without a
    `prompt_index`, a request per prompt row, identical rows merged into one prompt."""
    if prompt_index is None:
        prompts, prompt_lengths = np.asarray(prompts), np.asarray(prompt_lengths)
        R = prompts.shape[0] if prompts.ndim == 2 else 0
        validate_inputs(cfg, prompts, prompt_lengths, max_new_tokens, temperature, top_p, top_k)
        prompts, prompt_lengths, index = dedupe_prompts(prompts, prompt_lengths)
    else:
        index = np.asarray(prompt_index)
        R = index.shape[0] if index.ndim == 1 else 0
        if R == 0 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"prompt_index must be a non-empty int array [R], got {index.dtype} {index.shape}")
    prompts, lengths, N, _, _ = validate_inputs(cfg, prompts, prompt_lengths, max_new_tokens, 1.0, 1.0, top_k)
    J = prompts.shape[0]
    if index.min() < 0 or index.max() >= J:
        raise ValueError(f"prompt_index must be in [0, {J}) (the prompts' rows), got [{index.min()}, {index.max()}]")
    _, _, _, temperature, top_p = validate_inputs(cfg, prompts[index], lengths[index], N, temperature, top_p,
                                                  top_k)
    caps = np.full((R,), N, np.int32) if request_max_new_tokens is None else np.asarray(request_max_new_tokens)
    if caps.shape != (R,) or caps.min() < 1 or caps.max() > N:
        raise ValueError(f"request_max_new_tokens must be [{R}] ints in [1, {N}], got {caps}")
    return Requests(prompts, lengths, index, caps, N, temperature, top_p)


def padded_args(cfg, req: Requests, rng, eos_id: int, slots: int | None, multiple: int = 1):
    """((R, J, A, P) buckets, the compiled program's host arguments after the params): `req`
    padded to the buckets (`call_sizes`; P >= 8). Padding prompts repeat length 1; padding
    requests get a cap of one token and are never run."""
    prompts, lengths, index, caps, _, temperature, top_p = req
    R, J = index.shape[0], prompts.shape[0]
    Rb, Jb, Ab = call_sizes(R, J, slots, multiple)
    Pb = pow2_bucket(int(lengths.max()), minimum=8)
    pad_id = cfg.pad_id
    prompts_b = np.full((Jb, Pb), pad_id, np.int32)
    prompts_b[:J, :min(prompts.shape[1], Pb)] = prompts[:, :Pb]
    lengths_b = np.concatenate([lengths, np.ones(Jb - J, lengths.dtype)]).astype(np.int32)
    # Whatever sits past a row's length becomes pad: its K/V are written (never attended), and an
    # out-of-vocabulary id there would embed as NaN, which 0-weight attention still propagates.
    prompts_b[np.arange(Pb)[None, :] >= lengths_b[:, None]] = pad_id
    pad = Rb - R
    args = (prompts_b, lengths_b, np.concatenate([index, np.zeros(pad, np.int32)]).astype(np.int32),
            np.concatenate([caps, np.ones(pad, np.int32)]).astype(np.int32), np.int32(R), request_keys(rng, R, Rb),
            np.concatenate([temperature, np.zeros(pad, np.float32)]),
            np.concatenate([top_p, np.ones(pad, np.float32)]), np.int32(eos_id))
    return (Rb, Jb, Ab, Pb), args
