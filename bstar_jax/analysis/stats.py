"""Paired comparisons of two runs evaluated on the same test problems, over seeds
(docs/results.md#how-intervals-are-computed).

Every run of one config evaluates the same problems with the same evaluation key (common random
numbers), so two runs' per-problem results line up by problem id: the comparison is paired. Per
seed s, the difference a - b has a mean m_s over problems and a problem-level variance se_s^2
(variance of the per-problem differences / Q). The noise model adds sigma^2_run, the variance a
run's mean gets from its own training draws, once per trained run in the comparison (k = 2 for
two runs, 1 against P_0): v_s = se_s^2 + k sigma^2_run, and f = sqrt(mean_s v_s) is the sd of one
seed's mean the model predicts.

The interval of the mean over S seeds is the wider of two:
  - over seeds: mean +- t(S-1) * sd / sqrt(S), sd the sample sd of the m_s (S >= 2). It carries
    every source of variation between seeds, modelled or not;
  - the noise model's: mean +- t(nu) * f / sqrt(S), nu the Welch-Satterthwaite degrees of freedom
    of f^2's two parts (Q - 1 for the problem part, the replicate pairs behind sigma^2_run). It
    keeps seeds that agree by chance (or a difference that is the same in every seed) from
    shrinking the interval below what the noise model allows, and is the only one with one seed.
So a difference is resolved only when both resolve it: its p-value is the larger of the two.
Each interval alone covers 0 in 95 % of A/A draws; the wider one covers more often when the
noise model is exact (at 2-3 seeds about 99 %: tests/unit/analysis/test_calibration.py). The
t(S-1) quantile goes with the sd it was made for: applied to f as well it would make any
2-seed interval at least 9 f wide (t(1) = 12.7 over sqrt(2)).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class RunNoise:
    """sigma^2_run, the variance of one run's mean from its training draws alone, with the number
    of independent replicate differences behind it and where it came from."""

    variance: float = 0.0
    dof: int = 0  # replicate differences (degrees of freedom of the estimate); 0: not measured
    source: str = ""  # what measured it, e.g. "replicates"; "" when run noise is not included

    @property
    def measured(self) -> bool:
        return self.dof > 0


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Summary of `a - b` over seeds and problems (a metric in [0, 1] per problem)."""

    per_seed: tuple[float, ...]  # mean over problems of a - b, one per seed
    mean: float  # mean of per_seed
    ci_low: float  # the interval at `level` (module docstring)
    ci_high: float
    model_sd: float  # f: the noise model's sd of one seed's mean
    p_value: float  # two-sided, of mean = 0: the larger of the two intervals' p-values
    level: float = 0.95

    @property
    def ci_excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0


class Interval(NamedTuple):
    """`t_interval`'s result: arrays over the leading axes (0-d for one comparison)."""

    mean: np.ndarray
    half_width: np.ndarray  # the wider of the two intervals' half-widths
    p_value: np.ndarray  # the larger of their two-sided p-values of mean = 0
    seeds_half_width: np.ndarray  # t(S-1) sd / sqrt(S); nan with one seed
    model_half_width: np.ndarray  # t(nu) f / sqrt(S)


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


def pooled_variance(group_means) -> np.ndarray:
    """sum_g sum_i (m_gi - mean_g)^2 / (G (n - 1)) of equal-size groups [..., G, n] of replicate
    means; for pairs (n = 2), 1/2 * the mean squared difference of the pair's means."""
    m = np.asarray(group_means, np.float64)
    G, n = m.shape[-2:]
    return ((m - m.mean(axis=-1, keepdims=True)) ** 2).sum(axis=(-2, -1)) / (G * (n - 1))


def run_noise(groups: Sequence[Sequence[float]], source: str) -> RunNoise:
    """sigma^2_run from groups of replicate means (each group: one run's metric, same seed and
    test problems, independent training draws): the pooled within-group variance
    (`pooled_variance`, groups of any sizes). Groups with one member carry nothing; none at all:
    not measured."""
    groups = [np.asarray(g, np.float64) for g in groups if len(g) >= 2]
    dof = sum(g.size - 1 for g in groups)
    if not dof:
        return RunNoise()
    variance = sum(float(pooled_variance(g[None])) * (g.size - 1) for g in groups) / dof
    return RunNoise(variance=variance, dof=dof, source=source)


def problem_variance(diffs) -> np.ndarray:
    """Problem-level variance of the mean of per-problem differences [..., Q]: var(ddof=1) / Q."""
    diffs = np.asarray(diffs, np.float64)
    Q = diffs.shape[-1]
    return diffs.var(axis=-1, ddof=1) / Q if Q > 1 else np.zeros(diffs.shape[:-1])


def satterthwaite_dof(problem_var, run_var, num_problems: int, run_dof: int):
    """Welch-Satterthwaite degrees of freedom of problem_var + run_var, estimated with
    num_problems - 1 and run_dof degrees of freedom (run_dof = 0: run_var is exact, or 0)."""
    problem_var, run_var = np.asarray(problem_var, np.float64), np.asarray(run_var, np.float64)
    parts = problem_var ** 2 / max(num_problems - 1, 1) + (run_var ** 2 / run_dof if run_dof else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(parts > 0, (problem_var + run_var) ** 2 / parts, np.inf)


def _two_sided(mean, se, dof, level):
    """(half-width, p-value of mean = 0) of mean +- t(dof) se; se = 0 gives width 0 and p = 0 or 1."""
    half = scipy_stats.t.ppf(0.5 + level / 2, dof) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * scipy_stats.t.sf(np.abs(mean) / se, dof)
    return half, np.where(se > 0, p, np.where(mean == 0, 1.0, 0.0))


def t_interval(means, model_var, *, level: float = 0.95, model_dof=math.inf) -> Interval:
    """The interval of the mean of per-seed `means` [..., S], given each seed's noise-model
    variance `model_var` [..., S] and its degrees of freedom `model_dof` [...] (module
    docstring); vectorised over the leading axes."""
    means = np.asarray(means, np.float64)
    S = means.shape[-1]
    mean = means.mean(axis=-1)
    f = np.sqrt(np.mean(np.broadcast_to(model_var, means.shape), axis=-1))
    model_half, model_p = _two_sided(mean, f / math.sqrt(S), np.broadcast_to(model_dof, mean.shape), level)
    if S < 2:
        return Interval(mean, model_half, model_p, np.full(mean.shape, np.nan), model_half)
    seeds_half, seeds_p = _two_sided(mean, means.std(axis=-1, ddof=1) / math.sqrt(S), S - 1, level)
    return Interval(mean, np.maximum(seeds_half, model_half), np.maximum(seeds_p, model_p), seeds_half, model_half)


def paired_difference(a_per_seed: Sequence[np.ndarray], b_per_seed: Sequence[np.ndarray], *,
                      noise: RunNoise = RunNoise(), trained_runs: int = 2, level: float = 0.95) -> PairedDifference:
    """Mean of a - b over seeds with its interval and p-value; a_per_seed[s] and b_per_seed[s]
    are aligned per-problem values of seed s (see `align`). `trained_runs`: how many of a and b
    carry training noise (2 for two runs, 1 for a run against P_0)."""
    if len(a_per_seed) != len(b_per_seed) or not a_per_seed:
        raise ValueError("a and b need the same, non-zero number of seeds")
    diffs = []
    for a, b in zip(a_per_seed, b_per_seed):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or a.ndim != 1 or a.size == 0:
            raise ValueError(f"per-problem arrays must be non-empty, 1-D and alike: {a.shape} vs {b.shape}")
        diffs.append(a - b)
    problem_var = np.array([problem_variance(d) for d in diffs])
    run_var = trained_runs * noise.variance
    model_dof = satterthwaite_dof(problem_var.mean(), run_var, min(d.size for d in diffs), noise.dof)
    per_seed = tuple(float(d.mean()) for d in diffs)
    r = t_interval(per_seed, problem_var + run_var, level=level, model_dof=model_dof)
    mean, half = float(r.mean), float(r.half_width)
    return PairedDifference(per_seed=per_seed, mean=mean, ci_low=mean - half, ci_high=mean + half,
                            model_sd=math.sqrt(float(problem_var.mean() + run_var)), p_value=float(r.p_value),
                            level=level)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the family), in input order."""
    p = np.asarray(p_values, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()
