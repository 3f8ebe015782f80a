"""Training batches: variable-length examples -> padded or packed arrays in power-of-two buckets.

Every trainer batch (SFT and PRM) is built here. An example is a row dict of equal-length 1-D
arrays, one of them `tokens`; a batch is a dict of numpy arrays
  tokens       int32 [B, L]  the row's tokens, then `pad_id`
  <other>      [B, L]        each other row entry (SFT: loss_mask int32; PRM: targets and weights
                             float32), padded with zeros
  positions    int32 [B, L]  per-segment positions 0, 1, ... (0 on padding)
  segment_ids  int32 [B, L]  1, 2, ... for the examples of a row in order, 0 = padding
  lengths      int32 [B]     real tokens per row (for throughput accounting only)

Two layouts (docs/training.md, "Packing"):
* padded (`pad_rows`): one example per row, right-padded to the smallest power of two >= the
  longest (at least `min_bucket`, at most `max_len`);
* packed (`pack_step`): a step's examples first-fit-decreasing into rows of L tokens, several per
  row, L and the row count chosen from a short list of sizes to minimise the step's estimated cost; the decoder's segment mask keeps attention inside each example and positions restart per
  example, so every example's logits are those of its own padded row. Examples stay in the
  micro-batch and loss group they would have in the padded layout, so the loss is unchanged.
Row lengths and row counts come from {2^k, 3 * 2^(k-1)}, so a run compiles the step a bounded
number of times.

SFT length policy (the official code): with `truncate=True` the prompt keeps its LAST
`max_prompt_len` tokens, the target its FIRST `max_target_len`, and the pair is capped at
`max_len` by cutting the target further. With `truncate=False` any pair longer than `max_len`
is an error naming the example.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np

from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import BatchError
from bstar_jax.core.shapes import pow2_bucket, round_up



def bucket_length(n: int, max_len: int, min_bucket: int = 16) -> int:
    """Smallest power of two >= max(n, min_bucket), capped at max_len (which need not be one)."""
    return min(pow2_bucket(n, min_bucket), max_len)


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
    batch["segment_ids"] = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int32)
    batch["lengths"] = lengths
    return batch


def _first_fit_decreasing(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices, each in input order) of at most `capacity`: longest first,
    each into the first bin with room."""
    bins, room = [], []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for b, r in enumerate(room):
            if sizes[i] <= r:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return [sorted(b) for b in bins]


def _half_steps(lo: int, hi: int) -> list[int]:
    """2^k and 3 * 2^(k-1) in [lo, hi] (and hi itself): sizes at most 1.5x apart, few of them."""
    out, k = set(), 1
    while k <= hi:
        out.update(x for x in (k, 3 * k // 2) if lo <= x <= hi)
        k *= 2
    return sorted(out | {hi})


def _round_rows(n: int, multiple: int) -> int:
    """n rounded up to the next 2^k or 3 * 2^(k-1), then to a multiple of `multiple`."""
    r = next(x for x in _half_steps(n, 2 * n + 2) if x >= n)
    return round_up(r, multiple)


def attention_key_cost(cfg) -> float:
    """The row length at which a token's attention (scores and weighted sum, 2 H D multiply-adds
    per key per layer) costs as much as its matmuls (projections, MLP, LM head): `key_cost` of
    `pack_units` for a model config."""
    E, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    Q, KV = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    per_token = cfg.num_layers * (E * (2 * Q + 2 * KV) + 3 * E * F) + E * V
    return per_token / (cfg.num_layers * 2 * Q)


def pack_units(units: Sequence[Sequence[Mapping[str, np.ndarray]]], *, max_len: int, pack_len: int,
               min_bucket: int = 16, pad_id: int = 0, row_multiple: int = 1,
               key_cost: float = 0.0) -> list[dict[str, np.ndarray]]:
    """Packs each unit (a list of rows) into its own R rows of L tokens; returns one batch per unit.

    L is chosen among 2^k and 3 * 2^(k-1) from the longest example (at least `min_bucket`) up to
    min(pack_len, max_len); R is the most rows any unit needs (first-fit decreasing), rounded up
    the same way and then to a multiple of `row_multiple` (a unit with fewer gets empty rows:
    segment 0, no loss). The pair minimises the estimated step cost R * L * (1 + L / key_cost):
    every token costs the same in the matmuls, and attention adds a cost per key in its row
    (key_cost: row length at which attention costs as much as the rest of the model; 0 = count
    tokens only). So shapes stay bounded and the step compiles a few times per run.
    In a packed row, the first token of each example gets loss_mask 0: it follows another
    example, and in a padded row position 0 predicts nothing either.
    """
    sizes = [[row["tokens"].size for row in unit] for unit in units]
    longest = max(max(s) for s in sizes)
    hi = max(min(int(pack_len), int(max_len), max(sum(s) for s in sizes)), longest)
    best = None
    for L in _half_steps(max(longest, min(min_bucket, int(max_len))), hi):
        bins = [_first_fit_decreasing(s, L) for s in sizes]
        R = _round_rows(max(len(b) for b in bins), row_multiple)
        cost = R * L * (1.0 + (L / key_cost if key_cost else 0.0))
        if best is None or cost < best[0]:
            best = (cost, L, R, bins)
    _, L, R, bins = best
    template = units[0][0]
    out = []
    for unit, unit_bins in zip(units, bins):
        batch = {k: np.full((R, L), pad_id if k == "tokens" else 0, np.asarray(v).dtype) for k, v in template.items()}
        positions, segments = np.zeros((R, L), np.int32), np.zeros((R, L), np.int32)
        lengths = np.zeros((R,), np.int32)
        for r, members in enumerate(unit_bins):
            at = 0
            for seg, i in enumerate(members, start=1):
                row, n = unit[i], unit[i]["tokens"].size
                for k, v in row.items():
                    batch[k][r, at:at + n] = v
                if "loss_mask" in batch:
                    batch["loss_mask"][r, at] = 0
                positions[r, at:at + n] = np.arange(n)
                segments[r, at:at + n] = seg
                at += n
            lengths[r] = at
        batch.update(positions=positions, segment_ids=segments, lengths=lengths)
        out.append(batch)
    return out


def pack_step(rows: Sequence[Mapping[str, np.ndarray]], *, max_len: int, pack_len: int, accum: int = 1,
              groups: int = 1, min_bucket: int = 16, pad_id: int = 0, row_multiple: int = 1,
              key_cost: float = 0.0) -> dict[str, np.ndarray]:
    """One step's `rows` (batch_size examples) packed, examples kept in their padded micro-batch
    and loss group.

    In the padded layout batch row b belongs to micro-batch b % accum (trainer.make_step), and
    within a micro-batch the rows split into `groups` equal consecutive groups (sft.completion_loss).
    Here each (micro-batch, group) is packed on its own into R rows (`pack_units`; R * groups a
    multiple of `row_multiple`, the data-parallel size), micro-batch i's rows are its groups' rows
    in group order, and row k of micro-batch i is batch row k * accum + i, so the trainer's split
    and the loss's grouping see the same examples as without packing.
    """
    B = len(rows)
    if B % (accum * groups):
        raise BatchError(f"{B} examples do not split into {accum} micro-batches x {groups} loss groups")
    per_group = B // accum // groups
    units = [[rows[k * accum + i] for k in range(j * per_group, (j + 1) * per_group)]
             for i in range(accum) for j in range(groups)]
    multiple = row_multiple // math.gcd(groups, row_multiple)
    packed = pack_units(units, max_len=max_len, pack_len=pack_len, min_bucket=min_bucket, pad_id=pad_id,
                        row_multiple=multiple, key_cost=key_cost)
    micro = [{k: np.concatenate([packed[i * groups + j][k] for j in range(groups)]) for k in packed[0]}
             for i in range(accum)]
    # Interleave: batch row k * accum + i = row k of micro-batch i.
    return {k: np.stack([m[k] for m in micro], axis=1).reshape(-1, *micro[0][k].shape[1:]) for k in micro[0]}


def sft_row(ids: np.ndarray, n_prompt: int) -> dict[str, np.ndarray]:
    """The row of one encoded SFT pair: tokens and a loss mask of 1 on the target tokens."""
    loss_mask = np.zeros(ids.size, np.int32)
    loss_mask[n_prompt:] = 1
    return {"tokens": np.asarray(ids, np.int32), "loss_mask": loss_mask}


def pad_batch(encoded: Sequence[tuple[np.ndarray, int]], *, max_len: int, min_bucket: int = 16,
              pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pads encoded (ids, n_prompt) SFT pairs into one bucket-length batch."""
    return pad_rows([sft_row(ids, n) for ids, n in encoded], max_len=max_len, min_bucket=min_bucket, pad_id=pad_id)


def _check_batches(batch_size: int, num_examples: int, mesh) -> None:
    """A positive batch that divides over the mesh's data axes, and something to train on."""
    if mesh is not None:
        check_batch_size(batch_size, mesh)
    if batch_size <= 0:
        raise BatchError(f"batch_size={batch_size} must be positive")
    if not num_examples:
        raise BatchError("no examples to train on")


def iterate_rows(rows: Sequence[Mapping[str, np.ndarray]], batch_size: int, key, *, max_len: int,
                 min_bucket: int = 16, pad_id: int = 0, mesh=None, pack: bool = False, pack_len: int = 0,
                 accum: int = 1, groups: int = 1, key_cost: float = 0.0) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of `rows` (`batch_size` examples each), epoch after epoch.

    Each epoch is a fresh permutation drawn from `fold_in(key, epoch)`; batches are consecutive
    slices of the concatenated permutations, so a set smaller than one batch still trains and
    no row is dropped. pack=True packs each batch (`pack_step`; rows of up to `pack_len` tokens,
    0 = max_len; `accum` micro-batches of `groups` loss groups; `key_cost` see `pack_units`); the
    packed row count is a multiple of the mesh's data-parallel size.
    """
    _check_batches(batch_size, len(rows), mesh)
    row_multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    n = len(rows)
    epoch, order = 0, np.zeros((0,), np.int64)
    while True:
        while order.size < batch_size:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
            order = np.concatenate([order, perm])
            epoch += 1
        take, order = order[:batch_size], order[batch_size:]
        if pack:
            yield pack_step([rows[i] for i in take], max_len=max_len, pack_len=pack_len or max_len, accum=accum,
                            groups=groups, min_bucket=min_bucket, pad_id=pad_id, row_multiple=row_multiple,
                            key_cost=key_cost)
        else:
            yield pad_rows([rows[i] for i in take], max_len=max_len, min_bucket=min_bucket, pad_id=pad_id)


def iterate_batches(examples: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, key, *,
                    max_len: int, max_prompt_len: int | None = None, max_target_len: int | None = None,
                    truncate: bool = True, min_bucket: int = 16, pad_id: int = 0, mesh=None,
                    pack: bool = False, pack_len: int = 0, accum: int = 1, groups: int = 1,
                    key_cost: float = 0.0) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled SFT batches over (prompt ids, target ids + EOS) pairs (`iterate_rows`,
    padded or packed).

    Every example is encoded (and checked) once, up front, so a bad one fails before any step runs.
    """
    _check_batches(batch_size, len(examples), mesh)
    encoded = [encode_example(p, t, max_len=max_len, max_prompt_len=max_prompt_len,
                              max_target_len=max_target_len, truncate=truncate, index=i)
               for i, (p, t) in enumerate(examples)]
    cut = sum(ids.size < len(p) + len(t) for (ids, _), (p, t) in zip(encoded, examples))
    if cut:
        logging.info("sft batches: %d of %d examples truncated to max_len=%d (prompt <= %s, target <= %s)",
                     cut, len(encoded), max_len, max_prompt_len, max_target_len)
    return iterate_rows([sft_row(ids, n) for ids, n in encoded], batch_size, key, max_len=max_len,
                        min_bucket=min_bucket, pad_id=pad_id, mesh=mesh, pack=pack, pack_len=pack_len,
                        accum=accum, groups=groups, key_cost=key_cost)
