"""Exploration and exploitation metrics (paper §2.2 and §3.1; docs/algorithm.md#evaluation) over a pool of K samples per query.

Inputs are one row per query and one column per sample: `correct_QxK`, `selected_QxK`,
`valid_QxK` (bool), `reward_QxK` (float32), `text_id_QxK` (int32, equal within a row iff the two
response texts are identical). numpy or jax arrays are accepted; results are numpy arrays ([Q])
or Python floats (scalars).

The per-query work runs sharded over the query axis of the mesh (`mesh.BATCH_AXES`) with
`jax.shard_map`; sums over queries are `psum`s of exact integers, so a sharded result equals the
unsharded one bit for bit. Q is padded to a multiple of the batch-axis size with rows that count
for nothing. `mesh=None` means a data-parallel mesh over all devices.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib

_INT32_MAX = 2**31 - 1
# the official `cal_diversity` (paper §2.2): inline $...$, GSM8K <<...>> calculator tags, display \[...\].
EQUATION_RE = re.compile(r"\$(.*?)\$|<<([^<>]*)>>|\\\[(.*?)\\\]", re.DOTALL)


# ------------------------------------------------------------------ shared building blocks

@functools.lru_cache(maxsize=None)
def _default_mesh():
    return mesh_lib.make_mesh(data=-1, fsdp=1, tensor=1)


def resolve_mesh(mesh=None):
    """The mesh to shard queries over: `mesh`, or a data-parallel mesh over all devices."""
    return _default_mesh() if mesh is None else mesh


def pad_queries(x: np.ndarray, multiple: int, axis: int, fill) -> np.ndarray:
    """Pads the query axis of `x` to a multiple of `multiple` with `fill` (rows that count 0)."""
    pad = (-x.shape[axis]) % multiple
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return np.pad(x, widths, constant_values=fill)


def pool_arrays(who: str, ndim: int = 2, **arrays) -> dict[str, np.ndarray]:
    """Checks and converts named pool arrays (correct/selected/valid/reward/text_id) to numpy.

    All must share one shape of rank `ndim` with non-empty axes; rewards must not be NaN
    (-0.0 is folded into 0.0 so that sorting and `>` agree); text ids must fit int32.
    """
    out, shape = {}, None
    for name, x in arrays.items():
        x = distributed.to_host(x)
        if x.ndim != ndim:
            raise ValueError(f"{who}: {name} must have rank {ndim} ([..., Q, K]), got shape {x.shape}")
        if shape is not None and x.shape != shape:
            raise ValueError(f"{who}: shape mismatch, {name} has shape {x.shape} but "
                             f"{next(iter(out))} has {shape}")
        shape = x.shape
        if 0 in x.shape:
            raise ValueError(f"{who}: empty pool, {name} has shape {x.shape}")
        if x.shape[-1] > 2**15:
            raise ValueError(f"{who}: K={x.shape[-1]} samples per query is too many (at most 32768)")
        if name == "reward":
            x = x.astype(np.float32)
            if np.isnan(x).any():
                bad = np.argwhere(np.isnan(x))[0].tolist()
                raise ValueError(f"{who}: NaN reward at index {bad}")
            x = x + np.float32(0.0)  # -0.0 -> 0.0
        elif name == "text_id":
            if not np.issubdtype(x.dtype, np.integer):
                raise ValueError(f"{who}: text_id must be integers, got dtype {x.dtype}")
            if x.size and (x.min() < -_INT32_MAX - 1 or x.max() > _INT32_MAX):
                raise ValueError(f"{who}: text_id values do not fit in int32")
            x = x.astype(np.int32)
        else:
            x = x.astype(bool)
        out[name] = x
    return out


def check_n_star(n_star, who: str = "balance_score") -> int:
    """n* must be a positive integer (paper §3.1: ceil(N/M), or the official code's 8)."""
    try:
        ok = float(n_star) == int(n_star) and int(n_star) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{who}: n_star must be a positive integer, got {n_star!r}")
    return int(n_star)


def check_sum_fits(num_queries: int, num_samples: int, n_star: int, who: str) -> None:
    """The exact integer numerators of the balance score must fit in int32."""
    if num_queries * min(n_star, num_samples) * num_samples > _INT32_MAX:
        raise ValueError(f"{who}: pool too large for exact int32 sums "
                         f"(Q={num_queries}, K={num_samples}, n_star={n_star})")


def n_star_rule(target_size: int, num_queries: int) -> int:
    """n* = ceil(N / M): target selected per iteration over queries per iteration (paper §3.1)."""
    if int(target_size) < 1 or int(num_queries) < 1:
        raise ValueError(f"n_star_rule: need target_size >= 1 and num_queries >= 1, "
                         f"got {target_size}, {num_queries}")
    return -(-int(target_size) // int(num_queries))


def stable_order(key_QxK: jax.Array) -> jax.Array:
    """Per row, the permutation that sorts `key` ascending, ties: lower column index first. int32 [Q, K]."""
    return jnp.argsort(key_QxK, axis=1, stable=True).astype(jnp.int32)


def inverse_permutation(order_QxK: jax.Array) -> jax.Array:
    """Per row, the position of each column in `order` (e.g. a sample's rank). int32 [Q, K]."""
    q, k = order_QxK.shape
    rows_QxK = lax.broadcasted_iota(jnp.int32, (q, k), 0)
    return jnp.zeros((q, k), jnp.int32).at[rows_QxK, order_QxK].set(lax.broadcasted_iota(jnp.int32, (q, k), 1))


def ranking(score_QxK: jax.Array) -> jax.Array:
    """Rank of each entry when sorted by score descending, ties: lower column index first.
    A permutation of 0..K-1 per row, int32 [Q, K]."""
    return inverse_permutation(stable_order(-score_QxK))


def distinct_count(text_id_QxK: jax.Array, mask_QxK: jax.Array) -> jax.Array:
    """Number of distinct text ids among the masked entries of each row, int32 [Q].

    Unmasked entries take the value of a masked one of their row (which adds no new id); the
    sorted row then has one run per distinct id."""
    q = text_id_QxK.shape[0]
    some_QxK = jnp.max(jnp.where(mask_QxK, text_id_QxK, jnp.iinfo(jnp.int32).min), axis=1, keepdims=True)
    text_s = jnp.sort(jnp.where(mask_QxK, text_id_QxK, some_QxK), axis=1)
    runs_Q = 1 + jnp.sum(text_s[:, 1:] != text_s[:, :-1], axis=1, dtype=jnp.int32)
    return jnp.where(jnp.any(mask_QxK, axis=1), runs_Q, 0)


def balance_numerators(n_selected_Q: jax.Array, n_correct_Q: jax.Array, n_star, num_bins: int) -> jax.Array:
    """Exact integer numerators of Eq. 3 grouped by n_i: S[b] = sum over {i: n_i = b} of
    min(n'_i, n*) * n'_i, so that sum_i bs_i = sum_b S[b] / (n* b). int32 [Y], Y = num_bins."""
    w_Q = jnp.minimum(n_correct_Q, n_star) * n_correct_Q
    return jax.ops.segment_sum(w_Q, n_selected_Q, num_segments=num_bins)


def balance_from_numerators(s_xY: np.ndarray, n_star: int, denominator) -> np.ndarray:
    """Mean balance score from `balance_numerators` (any leading shape), in float64.

    Summed bin by bin in a fixed order, so equal integer inputs give bit-equal scores whatever
    the sharding or the batch shape. A zero denominator gives 0.0.
    """
    s_xY = np.asarray(s_xY, np.int64)
    total = np.zeros(s_xY.shape[:-1], np.float64)
    for b in range(1, s_xY.shape[-1]):
        total = total + s_xY[..., b] / float(n_star * b)
    denominator = np.asarray(denominator, np.float64)
    return np.where(denominator > 0, total / np.maximum(denominator, 1.0), 0.0)


def _row_call(build, mesh, arrays: dict, fills: dict, extra=()):
    """Runs a sharded kernel over query rows: pads the rows, calls `build(mesh)(*rows, *extra)`
    (extra = replicated scalars) and returns numpy outputs."""
    mesh = resolve_mesh(mesh)
    multiple = mesh_lib.axis_size(mesh, mesh_lib.BATCH_AXES)
    padded = [pad_queries(arrays[n], multiple, 0, fills[n]) for n in arrays]
    outs = build(mesh)(*padded, *extra)
    return distributed.to_host(outs)


# ------------------------------------------------------------------ exploration metrics

def pass_at_k(n, c, k):
    """Unbiased Pass@k per query: 1 - C(n-c, k) / C(n, k), in the stable product form
    1 - prod_{j=n-c+1}^{n} (1 - k/j). `n` samples, `c` correct; broadcasts; float64."""
    n, c, k = (np.asarray(v) for v in (n, c, k))
    for name, v in (("n", n), ("c", c), ("k", k)):
        if v.size and not np.all(np.equal(np.mod(v, 1), 0)):
            raise ValueError(f"pass_at_k: {name} must be integers, got {v}")
    n, c, k = np.broadcast_arrays(n.astype(np.int64), c.astype(np.int64), k.astype(np.int64))
    if np.any(k < 1):
        raise ValueError(f"pass_at_k: k must be >= 1, got {k.min()}")
    if np.any(k > n):
        raise ValueError(f"pass_at_k: k={k.max()} exceeds the number of samples n={n.min()} "
                         f"(unbiased Pass@k needs k <= n)")
    if np.any((c < 0) | (c > n)):
        raise ValueError("pass_at_k: need 0 <= c <= n for every query")
    j = np.arange(1, int(n.max(initial=1)) + 1, dtype=np.float64)
    in_range = (j > (n - c)[..., None]) & (j <= n[..., None])
    # a factor is 0 at j = k whenever n - c < k, so the result is exactly 1 there
    factor = np.where(in_range, 1.0 - k[..., None] / j, 1.0)
    out = 1.0 - np.prod(factor, axis=-1)
    return float(out) if out.ndim == 0 else out


def _check_s(s, num_samples: int, who: str) -> int:
    if int(s) != s or int(s) < 1:
        raise ValueError(f"{who}: s must be a positive integer, got {s!r}")
    if int(s) > num_samples:
        raise ValueError(f"{who}: s={int(s)} exceeds the K={num_samples} samples per query (K < S)")
    return int(s)


@functools.lru_cache(maxsize=None)
def _pass_at_k_s_fn(mesh):
    def kernel(correct_QxK, text_id_QxK, s):
        return (distinct_count(text_id_QxK, correct_QxK) >= s).astype(jnp.float32)
    rows = P(mesh_lib.BATCH_AXES, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(rows, rows, P()),
                                 out_specs=P(mesh_lib.BATCH_AXES)))


def pass_at_k_s(correct, text_id, s, *, mesh=None) -> np.ndarray:
    """Pass@K-S per query (paper §2.2): 1.0 if at least `s` DISTINCT texts are correct. [Q]."""
    a = pool_arrays("pass_at_k_s", correct=correct, text_id=text_id)
    q, k = a["correct"].shape
    s = _check_s(s, k, "pass_at_k_s")
    out = _row_call(_pass_at_k_s_fn, mesh, a, {"correct": False, "text_id": 0},
                    (np.int32(s),))
    return out[:q]


# ------------------------------------------------------------------ exploitation metrics

@functools.lru_cache(maxsize=None)
def _reward_at_k_s_fn(mesh):
    def kernel(correct_QxK, reward_QxK, s):
        top_s = ranking(reward_QxK) < s  # reward descending, ties: lower sample index first
        return jnp.all(correct_QxK | ~top_s, axis=1).astype(jnp.float32)
    rows = P(mesh_lib.BATCH_AXES, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(rows, rows, P()),
                                 out_specs=P(mesh_lib.BATCH_AXES)))


def reward_at_k_s(correct, reward, s, *, mesh=None) -> np.ndarray:
    """Reward@K-S per query (paper §2.2): 1.0 if the `s` highest-reward responses are all
    correct (ties: lower sample index first). Best-of-K = reward_at_k_s(correct, reward, 1). [Q]."""
    a = pool_arrays("reward_at_k_s", correct=correct, reward=reward)
    q, k = a["correct"].shape
    s = _check_s(s, k, "reward_at_k_s")
    out = _row_call(_reward_at_k_s_fn, mesh, a, {"correct": False, "reward": 0.0}, (np.int32(s),))
    return out[:q]


def diversity(texts_per_query: Iterable[Iterable[str]]) -> float:
    """Distinct-equation diversity (paper §2.2, the official `cal_diversity`): per query, unique equations
    over all equations found in its texts; the mean over queries that have at least one
    equation. Returns 0.0 (not NaN) when no query has an equation."""
    ratios = []
    for texts in texts_per_query:
        if isinstance(texts, str):
            raise ValueError("diversity: pass one list of texts per query, not a bare string")
        equations = [eq for text in texts for match in EQUATION_RE.findall(text) for eq in match if eq]
        if equations:
            ratios.append(len(set(equations)) / len(equations))
    return float(np.mean(ratios)) if ratios else 0.0


@functools.lru_cache(maxsize=None)
def _precision_recall_fn(mesh):
    axes = mesh_lib.BATCH_AXES

    def kernel(correct_QxK, selected_QxK, valid_QxK, text_id_QxK):
        counts = [distinct_count(text_id_QxK, m) for m in
                  (selected_QxK & correct_QxK, selected_QxK, valid_QxK & correct_QxK)]
        return [lax.psum(jnp.sum(c), axes) for c in counts]
    rows = P(axes, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(rows,) * 4, out_specs=[P()] * 3))


def selection_precision_recall(correct, selected, valid, text_id=None, *, mesh=None) -> tuple[float, float]:
    """Precision and recall of a selection against ground-truth correctness, pooled over all
    queries: precision = |selected & correct| / |selected|, recall = |selected & correct| /
    |valid & correct|. Counts distinct texts per query when `text_id` is given, responses
    otherwise. An empty denominator gives 0.0."""
    if text_id is None:
        text_id = np.broadcast_to(np.arange(np.shape(correct)[-1], dtype=np.int32), np.shape(correct))
    a = pool_arrays("selection_precision_recall", correct=correct, selected=selected, valid=valid,
                    text_id=text_id)
    hits, n_selected, n_correct = _row_call(
        _precision_recall_fn, mesh, a, {"correct": False, "selected": False, "valid": False, "text_id": 0})
    return (float(hits) / float(n_selected) if n_selected else 0.0,
            float(hits) / float(n_correct) if n_correct else 0.0)


# ------------------------------------------------------------------ balance score

@functools.lru_cache(maxsize=None)
def _balance_fn(mesh):
    axes = mesh_lib.BATCH_AXES

    def kernel(correct_QxK, selected_QxK, text_id_QxK, n_star):
        k = correct_QxK.shape[1]
        n_Q = distinct_count(text_id_QxK, selected_QxK)
        n_correct_Q = distinct_count(text_id_QxK, selected_QxK & correct_QxK)
        s_Y = lax.psum(balance_numerators(n_Q, n_correct_Q, n_star, k + 1), axes)
        return s_Y, lax.psum(jnp.sum(n_Q > 0, dtype=jnp.int32), axes)
    rows = P(axes, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(rows, rows, rows, P()),
                                 out_specs=(P(), P())))


def balance_score(correct, selected, text_id, n_star, *, mean_over: str = "all", mesh=None) -> float:
    """Average balance score (paper Eq. 3, docs/algorithm.md#balance-score).

    For query i, n_i = distinct texts among selected responses, n'_i = distinct texts among
    selected and correct ones; bs_i = min(n'_i / n*, 1) * n'_i / n_i, and 0 when n_i = 0. The mean
    is over ALL queries (`mean_over="all"`), or, as the official code does, over the queries with
    at least one selected response (`mean_over="selected"`).
    """
    if mean_over not in ("all", "selected"):
        raise ValueError(f"balance_score: mean_over must be 'all' or 'selected', got {mean_over!r}")
    a = pool_arrays("balance_score", correct=correct, selected=selected, text_id=text_id)
    q, k = a["correct"].shape
    n_star = check_n_star(n_star)
    check_sum_fits(q, k, n_star, "balance_score")
    s_Y, n_active = _row_call(_balance_fn, mesh, a, {"correct": False, "selected": False, "text_id": 0},
                              (np.int32(n_star),))
    return float(balance_from_numerators(s_Y, n_star, q if mean_over == "all" else n_active))
