"""Selection (threshold + uniform per-query cap) and the (T, τ) search of Algorithm 1.

Paper §3.1 and §4 (docs/algorithm.md#selection, #balance-score, #search). A pool holds K samples per query: `correct`, `valid` (bool),
`reward` (float32), `text_id` (int32, equal within a row iff same text); the search takes one
pool per temperature, [T, Q, K].

How the whole grid stays array code: rank each row once per temperature (reward descending,
ties lower sample index first, invalid last). For any τ the candidates of a query (valid,
reward > τ) are then a prefix of its ranking, of length m_i(τ); under a cap c the selection is
the first min(c, m_i(τ)) ranked responses minus repeated texts, and whether a ranked response
repeats an earlier text does not depend on (τ, c). So one [Q, K, U] table of "ranked response
clears τ" gives m_i(τ) and the distinct (query, text) pairs at every rank for every τ; their
cumulative sum over ranks gives the pairs under every cap c, the cap is
the first c that reaches the target, and n_i, n'_i are prefix counts. Sums over queries are
`psum`s of exact integers (see metrics.balance_numerators), so sharded == unsharded bit for bit.

Thresholds are compared to rewards in float32: a response is a candidate iff
float32(reward) > float32(τ).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from bstar_jax.config.choices import SEARCH_MODES
from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.bstar import metrics

MODES = SEARCH_MODES
# Two balance scores closer than this count as a tie (they are exact rationals in float64).
TIE_TOL = 1e-12
_PAD = {"correct": False, "reward": 0.0, "valid": False, "text_id": 0}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The configuration chosen by a search and the whole balance-score table (a heat map)."""
    temperature: float | None       # chosen T (None for a threshold-only search without a label)
    threshold: float                # chosen τ
    balance_score: float            # BS(T, τ) at the choice
    balance_score_TxU: np.ndarray  # float64 [T, U]: BS for every grid point
    cap_TxU: np.ndarray           # int [T, U]: the uniform per-query cap c of each selection
    n_selected_TxU: np.ndarray    # int [T, U]: distinct (query, text) pairs selected
    temperatures: np.ndarray
    thresholds: np.ndarray
    n_star: int
    mode: str


# ------------------------------------------------------------------ array kernels

def _rank(correct_QxK, reward_QxK, valid_QxK, text_id_QxK):
    """Ranks each row by reward, highest first (ties: lower sample index; invalid last).

    Returns the sorted keys (key = -reward, +inf if invalid), the rank of each sample, and
    in sample order and in rank order whether the sample is the first of its text. "First of
    its text" compares every pair of a row's samples (Q·K² booleans: K is at most a few hundred
    here, and XLA's CPU sort is several times slower than these compares).
    """
    key_QxK = jnp.where(valid_QxK, -reward_QxK, jnp.inf)
    pos_s = metrics.stable_order(key_QxK)  # the sample at each rank
    key_s = jnp.take_along_axis(key_QxK, pos_s, axis=1)
    rank_QxK = metrics.inverse_permutation(pos_s)
    same_QxKxK = text_id_QxK[:, :, None] == text_id_QxK[:, None, :]
    ranked_before_QxKxK = rank_QxK[:, None, :] < rank_QxK[:, :, None]
    new_QxK = ~jnp.any(same_QxKxK & ranked_before_QxKxK, axis=2)
    new_s = jnp.take_along_axis(new_QxK, pos_s, axis=1)
    correct_s = jnp.take_along_axis(correct_QxK, pos_s, axis=1)
    return key_s, rank_QxK, new_QxK, new_s, correct_s


def _prefix_counts(key_s_QxK, new_s_QxK, correct_s_QxK, thresholds_U, target_size, num_caps):
    """For each τ_u: the cap c_u, and per query the selected prefix length, n_i and n'_i."""
    q, k = key_s_QxK.shape
    axes = mesh_lib.BATCH_AXES
    # a ranked sample is a candidate for τ iff reward > τ, i.e. key < -τ (invalid: key = +inf);
    # m_i(τ): candidates of query i (a prefix of its ranking); g(τ, r): new texts at rank r
    candidate_QxKxU = key_s_QxK[:, :, None] < -thresholds_U
    m_QxU = jnp.sum(candidate_QxKxU, axis=1, dtype=jnp.int32)
    g_KxU = jnp.sum(candidate_QxKxU & new_s_QxK[:, :, None], axis=0, dtype=jnp.int32)
    total_UxC = jnp.cumsum(lax.psum(g_KxU.T, axes), axis=1)[:, :num_caps]
    reached_UxC = total_UxC >= target_size
    cap_U = jnp.where(reached_UxC.any(axis=1), jnp.argmax(reached_UxC, axis=1) + 1, num_caps).astype(jnp.int32)
    length_UxQ = jnp.minimum(cap_U[:, None], m_QxU.T)
    zeros = jnp.zeros((q, 1), jnp.int32)
    cum_new = jnp.concatenate([zeros, jnp.cumsum(new_s_QxK, axis=1, dtype=jnp.int32)], axis=1)
    cum_new_correct = jnp.concatenate(
        [zeros, jnp.cumsum(new_s_QxK & correct_s_QxK, axis=1, dtype=jnp.int32)], axis=1)
    n_UxQ = jnp.take_along_axis(cum_new.T, length_UxQ, axis=0)
    n_correct_UxQ = jnp.take_along_axis(cum_new_correct.T, length_UxQ, axis=0)
    return cap_U, length_UxQ, n_UxQ, n_correct_UxQ


@functools.lru_cache(maxsize=None)
def _grid_fn(mesh):
    """jit(shard_map(...)) evaluating every (T, τ) of the grid; queries sharded over the mesh."""
    axes = mesh_lib.BATCH_AXES

    def per_temperature(correct_QxK, reward_QxK, valid_QxK, text_id_QxK, thresholds_U, target, n_star):
        k = reward_QxK.shape[1]
        key_s, _, _, new_s, correct_s = _rank(correct_QxK, reward_QxK, valid_QxK, text_id_QxK)
        cap_U, _, n_UxQ, n_correct_UxQ = _prefix_counts(key_s, new_s, correct_s, thresholds_U, target, k)
        s_UxY = jax.vmap(lambda n, nc: metrics.balance_numerators(n, nc, n_star, k + 1))(n_UxQ, n_correct_UxQ)
        return (cap_U, lax.psum(s_UxY, axes), lax.psum(jnp.sum(n_UxQ > 0, axis=1, dtype=jnp.int32), axes),
                lax.psum(jnp.sum(n_UxQ, axis=1, dtype=jnp.int32), axes))

    def kernel(correct, reward, valid, text_id, thresholds_U, target, n_star):
        return jax.vmap(per_temperature, in_axes=(0, 0, 0, 0, None, None, None))(
            correct, reward, valid, text_id, thresholds_U, target, n_star)

    pool = P(None, axes, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(pool,) * 4 + (P(),) * 3,
                                 out_specs=(P(),) * 4))


@functools.lru_cache(maxsize=None)
def _select_fn(mesh):
    axes = mesh_lib.BATCH_AXES

    def kernel(reward_QxK, valid_QxK, text_id_QxK, tau, target):
        key_s, rank_QxK, new_QxK, new_s, _ = _rank(valid_QxK, reward_QxK, valid_QxK, text_id_QxK)
        _, length_UxQ, _, _ = _prefix_counts(key_s, new_s, new_s, tau[None], target, reward_QxK.shape[1])
        return new_QxK & (rank_QxK < length_UxQ[0][:, None])

    rows = P(axes, None)
    return jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=(rows,) * 3 + (P(), P()), out_specs=rows))


# ------------------------------------------------------------------ validation

def _grid(values, name: str, who: str, positive: bool = False) -> np.ndarray:
    grid = np.atleast_1d(np.asarray(values, np.float64))
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"{who}: {name} grid is empty or not 1-D: {values!r}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"{who}: {name} grid has a non-finite value: {grid.tolist()}")
    if positive and np.any(grid <= 0):
        raise ValueError(f"{who}: {name} must be > 0, got {grid[grid <= 0].tolist()}")
    if np.unique(np.float32(grid)).size != grid.size:
        raise ValueError(f"{who}: {name} grid has repeated values: {grid.tolist()}")
    return grid


def _target(target_size, who: str) -> int:
    if int(target_size) != target_size or not 1 <= int(target_size) <= 2**31 - 1:
        raise ValueError(f"{who}: target_size must be a positive integer, got {target_size!r}")
    return int(target_size)


# ------------------------------------------------------------------ public API

def with_reference(correct, reward, valid, text_id):
    """Appends the reference solution as an extra candidate per query (the official code's
    rule, docs/algorithm.md#paper-vs-official-code): reward 1.0, correct, valid, and a text id of its own (one above the
    largest id in the pool). Works on [..., Q, K] arrays; returns [..., Q, K + 1] numpy arrays."""
    correct, reward, valid, text_id = (distributed.to_host(x) for x in (correct, reward, valid, text_id))
    if int(text_id.max()) >= 2**31 - 1:
        raise ValueError("with_reference: no free int32 text id left for the reference solution")
    col = lambda x, v, dt: np.concatenate([x.astype(dt), np.full(x.shape[:-1] + (1,), v, dt)], axis=-1)
    return (col(correct, True, bool), col(reward, 1.0, np.float32), col(valid, True, bool),
            col(text_id, int(text_id.max()) + 1, np.int32))


def select(reward, valid, tau, target_size, text_id, *, mesh=None) -> np.ndarray:
    """The official selection (`find_rewardbase`, docs/algorithm.md#selection), bool [Q, K].

    Candidates are valid responses with reward > τ (in float32), ranked by reward (ties: lower
    sample index first). One cap c for all queries: the smallest c in 1..K whose capped selection
    has at least `target_size` distinct (query, text) pairs, else c = K. Repeated texts within a
    query are dropped (the first kept). Not truncated to `target_size`. With the reference
    solution appended (`with_reference`), K counts it too, so c runs over 1..K+1.
    """
    a = metrics.pool_arrays("select", reward=reward, valid=valid, text_id=text_id)
    if np.ndim(tau) != 0 or not np.isfinite(tau):
        raise ValueError(f"select: tau must be one finite threshold, got {tau!r}")
    mesh = metrics.resolve_mesh(mesh)
    multiple = mesh_lib.axis_size(mesh, mesh_lib.BATCH_AXES)
    q, k = a["reward"].shape
    padded = [metrics.pad_queries(a[n], multiple, 0, _PAD[n]) for n in a]
    out = _select_fn(mesh)(*padded, np.float32(tau) + np.float32(0.0),
                           np.int32(_target(target_size, "select")))
    return distributed.to_host(out)[:q]


def _pick(table_TxU, temperatures, thresholds, mode):
    """Grid indices (t, u) of the choice. paper: the argmax, ties -> lower T, then higher τ.
    official: T whose best τ scores highest (first T in grid order wins ties), then the first τ
    in grid order reaching that T's best (the official scripts' strict `>` scans)."""
    if mode == "paper":
        ties = table_TxU >= table_TxU.max() - TIE_TOL
        t_cands = np.flatnonzero(ties.any(axis=1))
        t = t_cands[np.argmin(temperatures[t_cands])]
        u_cands = np.flatnonzero(ties[t])
        return t, u_cands[np.argmax(thresholds[u_cands])]
    row_max = table_TxU.max(axis=1)
    t = np.flatnonzero(row_max >= row_max.max() - TIE_TOL)[0]
    return t, np.flatnonzero(table_TxU[t] >= row_max[t] - TIE_TOL)[0]


def search(correct, reward, valid, text_id, temperatures, thresholds, *, target_size, n_star=None,
           mode: str = "paper", include_reference: bool = False, mean_over: str = "all",
           mesh=None) -> SearchResult:
    """Algorithm 1, step 1: BS(T, τ) for every temperature and threshold, and the choice.

    Pools are [T, Q, K] (one per temperature in `temperatures`, same queries). Each (T, τ) builds
    the selection of `select` with `target_size` and scores it with `metrics.balance_score`
    (`n_star` defaults to ceil(target_size / Q); `mean_over` as there).

    mode="paper": argmax over the grid, ties -> the lower T, then the higher τ.
    mode="official" (docs/algorithm.md#search, `determine_hyper.py`): T = the one whose max over τ is
    highest, the first T in grid order winning ties; `threshold` is the first τ (grid order)
    reaching that max. The official loop discards it and re-searches τ on the iteration's pool
    with `search_threshold(..., mode="official")`.
    `include_reference` appends the reference solution to every query (see `with_reference`).
    Scores within TIE_TOL count as ties.
    """
    who = "search"
    if mode not in MODES:
        raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
    if mean_over not in ("all", "selected"):
        raise ValueError(f"{who}: mean_over must be 'all' or 'selected', got {mean_over!r}")
    temperatures = _grid(temperatures, "temperature", who, positive=True)
    thresholds = _grid(thresholds, "threshold", who)
    a = metrics.pool_arrays(who, ndim=3, correct=correct, reward=reward, valid=valid, text_id=text_id)
    num_t, q, _ = a["reward"].shape
    if num_t != temperatures.size:
        raise ValueError(f"{who}: {temperatures.size} temperatures but pools for {num_t} ([T, Q, K] arrays)")
    target = _target(target_size, who)
    n_star = metrics.check_n_star(metrics.n_star_rule(target, q) if n_star is None else n_star, who)
    if include_reference:
        a = dict(zip(a, with_reference(a["correct"], a["reward"], a["valid"], a["text_id"])))
    k = a["reward"].shape[2]
    metrics.check_sum_fits(q, k, n_star, who)
    mesh = metrics.resolve_mesh(mesh)
    multiple = mesh_lib.axis_size(mesh, mesh_lib.BATCH_AXES)
    padded = [metrics.pad_queries(a[n], multiple, 1, _PAD[n]) for n in ("correct", "reward", "valid", "text_id")]
    tau_U = thresholds.astype(np.float32) + np.float32(0.0)
    cap, s_TxUxY, n_active, n_selected = distributed.to_host(
        _grid_fn(mesh)(*padded, tau_U, np.int32(target), np.int32(n_star)))
    table = metrics.balance_from_numerators(s_TxUxY, n_star, q if mean_over == "all" else n_active)
    t, u = _pick(table, temperatures, thresholds, mode)
    return SearchResult(temperature=float(temperatures[t]), threshold=float(thresholds[u]),
                        balance_score=float(table[t, u]), balance_score_TxU=table, cap_TxU=cap,
                        n_selected_TxU=n_selected, temperatures=temperatures, thresholds=thresholds,
                        n_star=n_star, mode=mode)


def search_temperature(correct, reward, valid, text_id, temperatures, threshold, **kwargs) -> SearchResult:
    """Temperature-only search (Table 3 ablation; APPS/ARC without a reward model): τ fixed,
    T searched over [T, Q, K] pools. Keyword arguments as `search`."""
    return search(correct, reward, valid, text_id, temperatures, [threshold], **kwargs)


def search_threshold(correct, reward, valid, text_id, thresholds, *, temperature=None, **kwargs) -> SearchResult:
    """Threshold-only search on one [Q, K] pool sampled at a fixed temperature.

    mode="paper": the Table 3 "threshold only" ablation (ties -> the higher τ).
    mode="official": the official `metric_modiacc_auto.py` re-search of τ on the iteration's
    pool at the temperature chosen on dev; the first τ in grid order wins ties (the official
    grid is ascending, -1.00, -0.99, ..., 0.99; that code also uses n_star=8,
    include_reference=True and mean_over="selected").
    `temperature` only labels the result. Keyword arguments as `search`.
    """
    pools = [distributed.to_host(x)[None] for x in (correct, reward, valid, text_id)]
    if pools[1].ndim != 3:
        raise ValueError(f"search_threshold: pools must be [Q, K], got shape {np.shape(reward)}")
    result = search(*pools, [1.0 if temperature is None else temperature], thresholds, **kwargs)
    return dataclasses.replace(result, temperature=None if temperature is None else float(temperature))
