"""Paired comparisons of two runs evaluated on the same test problems (docs/results.md).

Every run of one config evaluates the same problems with the same evaluation key (common random
numbers), so two runs' per-problem results line up by problem id: the comparison is paired. A
difference is summarised by its mean over seeds of the per-seed mean over problems, a 95 %
confidence interval from a two-level paired bootstrap (resample seeds, then problems within each
drawn seed) and a two-standard-error check. numpy only.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Summary of `a - b` over seeds and problems (a metric in [0, 1] per problem)."""

    per_seed: tuple[float, ...]  # mean over problems of a - b, one per seed
    mean: float  # mean of per_seed
    ci_low: float  # bootstrap percentile interval of the mean, level `level`
    ci_high: float
    standard_error: float  # see `standard_error`
    level: float = 0.95

    @property
    def beyond_two_se(self) -> bool:
        """True when |mean| > 2 standard errors (roughly a two-sided 5 % test)."""
        return abs(self.mean) > 2 * self.standard_error

    @property
    def ci_excludes_zero(self) -> bool:
        """True when the bootstrap interval lies strictly on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0


def align(ids_a: Sequence, values_a, ids_b: Sequence, values_b) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) float arrays over the problems both runs evaluated, in `ids_a` order.

    Raises ValueError when the runs share no problem or an id repeats (the pairing would be wrong).
    """
    ids_a, ids_b = [str(i) for i in ids_a], [str(i) for i in ids_b]
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise ValueError("problem ids repeat within a run: results cannot be paired by id")
    where_b = {i: n for n, i in enumerate(ids_b)}
    keep = [n for n, i in enumerate(ids_a) if i in where_b]
    if not keep:
        raise ValueError("the two runs share no test problem")
    a = np.asarray(values_a, np.float64)[keep]
    b = np.asarray(values_b, np.float64)[[where_b[ids_a[n]] for n in keep]]
    return a, b


def standard_error(diffs: Sequence[np.ndarray]) -> float:
    """Standard error of the mean over seeds of per-seed mean differences: the larger of

    - the problem-level SE, sqrt(sum_s var_s / Q_s) / S (finite test set; var_s is the sample
      variance of seed s's per-problem differences), and
    - with two or more seeds, the seed-level SE, sd(per-seed means) / sqrt(S).

    Seed means already carry problem noise, but with few seeds their sd is itself noisy and can
    come out near 0 by chance (seeds that happen to agree); the problem-level SE is the floor.
    """
    diffs = [np.asarray(d, np.float64) for d in diffs]
    S = len(diffs)
    problem = np.sqrt(sum(d.var(ddof=1) / d.size if d.size > 1 else 0.0 for d in diffs)) / S
    if S < 2:
        return float(problem)
    seed = np.array([d.mean() for d in diffs]).std(ddof=1) / np.sqrt(S)
    return float(max(problem, seed))


def bootstrap_means(diffs: Sequence[np.ndarray], *, num_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """[num_resamples] bootstrap replicates of the mean difference: each draws seeds with
    replacement, then, within each drawn seed, its problems with replacement, and averages the
    per-seed means. Reproducible for a given `seed`."""
    diffs = [np.asarray(d, np.float64) for d in diffs]
    if not diffs or any(d.ndim != 1 or d.size == 0 for d in diffs):
        raise ValueError("each seed needs a non-empty 1-D array of per-problem differences")
    rng = np.random.default_rng(seed)
    S = len(diffs)
    seed_draw = rng.integers(0, S, size=(num_resamples, S))  # [B, S]: which seeds each replicate uses
    # Per drawn slot, the mean of a problem resample of that seed (one fresh resample per slot).
    slot_means = np.empty((num_resamples, S))
    for s, d in enumerate(diffs):
        rows, slots = np.nonzero(seed_draw == s)
        if rows.size:
            picks = rng.integers(0, d.size, size=(rows.size, d.size))
            slot_means[rows, slots] = d[picks].mean(axis=1)
    return slot_means.mean(axis=1)


def paired_difference(a_per_seed: Sequence[np.ndarray], b_per_seed: Sequence[np.ndarray], *, level: float = 0.95,
                      num_resamples: int = 10_000, seed: int = 0) -> PairedDifference:
    """Mean of a - b with a paired bootstrap CI; a_per_seed[s] and b_per_seed[s] are aligned
    per-problem values of seed s (see `align`)."""
    if len(a_per_seed) != len(b_per_seed) or not a_per_seed:
        raise ValueError("a and b need the same, non-zero number of seeds")
    diffs = []
    for a, b in zip(a_per_seed, b_per_seed):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise ValueError(f"per-problem arrays differ in shape: {a.shape} vs {b.shape}")
        diffs.append(a - b)
    reps = bootstrap_means(diffs, num_resamples=num_resamples, seed=seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(reps, [tail, 100 - tail])
    per_seed = tuple(float(d.mean()) for d in diffs)
    return PairedDifference(per_seed=per_seed, mean=float(np.mean(per_seed)), ci_low=float(low),
                            ci_high=float(high), standard_error=standard_error(diffs), level=level)
