"""Training batches: variable-length rows -> right-padded arrays in power-of-two buckets.

Every trainer batch (SFT and PRM) is built here. A row is a dict of equal-length 1-D arrays, one
of them `tokens`; a batch is a dict of numpy arrays
  tokens     int32 [B, L]  the row's tokens, then `pad_id`
  <other>    [B, L]        each other row entry (SFT: loss_mask int32; PRM: targets and weights
                           float32), padded with zeros
  positions  int32 [B, L]  0..L-1 (right padding: no real token attends to a pad)
  lengths    int32 [B]     real tokens per row (for throughput accounting only)
L is the smallest power of two >= the longest row (at least `min_bucket`, at most `max_len`), so a
whole run compiles the train step once per bucket.

Rows are not packed: the decoder masks attention by position only, so two sequences in one row
would see each other. Padding costs compute, not correctness.

SFT length policy (the official code): with `truncate=True` the prompt keeps its LAST
`max_prompt_len` tokens, the target its FIRST `max_target_len`, and the pair is capped at
`max_len` by cutting the target further. With `truncate=False` any pair longer than `max_len`
is an error naming the example.
"""
from __future__ import annotations

import logging
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np

from bstar_jax import mesh as mesh_lib


class BatchError(ValueError):
    """A batch that cannot be built: sizes that do not fit the mesh, examples that do not fit."""


def bucket_length(n: int, max_len: int, min_bucket: int = 16) -> int:
    """Smallest power of two >= max(n, min_bucket), capped at max_len (which need not be one)."""
    bucket = max(min_bucket, 1 << max(0, int(n) - 1).bit_length())
    return min(bucket, max_len)


def check_batch_size(batch_size: int, mesh, what: str = "batch_size") -> None:
    """Raises BatchError unless `batch_size` splits evenly over the mesh's data-parallel axes."""
    multiple = mesh_lib.batch_size_multiple(mesh)
    if batch_size <= 0 or batch_size % multiple:
        axes = " x ".join(f"{a}={mesh.shape[a]}" for a in mesh_lib.BATCH_AXES)
        raise BatchError(f"{what}={batch_size} is not divisible by the mesh's data-parallel size "
                         f"{multiple} ({axes}); use a multiple of {multiple}")


def encode_example(prompt_ids, target_ids, *, max_len: int, max_prompt_len: int | None = None,
                   max_target_len: int | None = None, truncate: bool = True,
                   index: int | None = None) -> tuple[np.ndarray, int]:
    """(token ids [n], number of prompt tokens) of one pair, truncated or checked as configured."""
    prompt = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
    target = np.asarray(target_ids, dtype=np.int32).reshape(-1)
    where = f"example {index}" if index is not None else "example"
    if target.size == 0:
        raise BatchError(f"{where}: empty target (a response must at least hold EOS)")
    if truncate:
        if max_prompt_len is not None and prompt.size > max_prompt_len:
            prompt = prompt[prompt.size - max_prompt_len:] if max_prompt_len > 0 else prompt[:0]
        if max_target_len is not None:
            target = target[:max_target_len]
        target = target[:max(0, max_len - prompt.size)]
        if target.size == 0:
            raise BatchError(f"{where}: prompt of {prompt.size} tokens leaves no room for a target "
                             f"within max_len={max_len}")
    elif prompt.size + target.size > max_len:
        raise BatchError(f"{where}: {prompt.size} prompt + {target.size} target tokens = "
                         f"{prompt.size + target.size} > max_len={max_len} (set truncate=True to cut "
                         f"the prompt on the left and the target on the right)")
    return np.concatenate([prompt, target]), int(prompt.size)


def pad_rows(rows: Sequence[Mapping[str, np.ndarray]], *, max_len: int, min_bucket: int = 16,
             pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pads rows (dicts of equal-length 1-D arrays with `tokens`) into one bucket-length batch."""
    longest = max(row["tokens"].size for row in rows)
    L = bucket_length(longest, max_len, min_bucket)
    B = len(rows)
    batch = {k: np.full((B, L), pad_id if k == "tokens" else 0, np.asarray(v).dtype) for k, v in rows[0].items()}
    lengths = np.zeros((B,), np.int32)
    for b, row in enumerate(rows):
        n = row["tokens"].size
        for k, v in row.items():
            batch[k][b, :n] = v
        lengths[b] = n
    batch["positions"] = np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy()
    batch["lengths"] = lengths
    return batch


def sft_row(ids: np.ndarray, n_prompt: int) -> dict[str, np.ndarray]:
    """The row of one encoded SFT pair: tokens and a loss mask of 1 on the target tokens."""
    loss_mask = np.zeros(ids.size, np.int32)
    loss_mask[n_prompt:] = 1
    return {"tokens": np.asarray(ids, np.int32), "loss_mask": loss_mask}


def pad_batch(encoded: Sequence[tuple[np.ndarray, int]], *, max_len: int, min_bucket: int = 16,
              pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pads encoded (ids, n_prompt) SFT pairs into one bucket-length batch."""
    return pad_rows([sft_row(ids, n) for ids, n in encoded], max_len=max_len, min_bucket=min_bucket, pad_id=pad_id)


def iterate_rows(rows: Sequence[Mapping[str, np.ndarray]], batch_size: int, key, *, max_len: int,
                 min_bucket: int = 16, pad_id: int = 0, mesh=None) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of `rows`, epoch after epoch.

    Each epoch is a fresh permutation drawn from `fold_in(key, epoch)`; batches are consecutive
    slices of the concatenated permutations, so a set smaller than one batch still trains and
    no row is dropped.
    """
    if mesh is not None:
        check_batch_size(batch_size, mesh)
    if batch_size <= 0:
        raise BatchError(f"batch_size={batch_size} must be positive")
    if not len(rows):
        raise BatchError("no examples to train on")
    n = len(rows)
    epoch, order = 0, np.zeros((0,), np.int64)
    while True:
        while order.size < batch_size:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
            order = np.concatenate([order, perm])
            epoch += 1
        take, order = order[:batch_size], order[batch_size:]
        yield pad_rows([rows[i] for i in take], max_len=max_len, min_bucket=min_bucket, pad_id=pad_id)


def iterate_batches(examples: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, key, *,
                    max_len: int, max_prompt_len: int | None = None, max_target_len: int | None = None,
                    truncate: bool = True, min_bucket: int = 16, pad_id: int = 0,
                    mesh=None) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled SFT batches over (prompt ids, target ids + EOS) pairs (`iterate_rows`).

    Every example is encoded (and checked) once, up front, so a bad one fails before any step runs.
    """
    if mesh is not None:
        check_batch_size(batch_size, mesh)
    if batch_size <= 0:
        raise BatchError(f"batch_size={batch_size} must be positive")
    if not len(examples):
        raise BatchError("no examples to train on")
    encoded = [encode_example(p, t, max_len=max_len, max_prompt_len=max_prompt_len,
                              max_target_len=max_target_len, truncate=truncate, index=i)
               for i, (p, t) in enumerate(examples)]
    cut = sum(ids.size < len(p) + len(t) for (ids, _), (p, t) in zip(encoded, examples))
    if cut:
        logging.info("sft batches: %d of %d examples truncated to max_len=%d (prompt <= %s, target <= %s)",
                     cut, len(encoded), max_len, max_prompt_len, max_target_len)
    return iterate_rows([sft_row(ids, n) for ids, n in encoded], batch_size, key, max_len=max_len,
                        min_bucket=min_bucket, pad_id=pad_id)
