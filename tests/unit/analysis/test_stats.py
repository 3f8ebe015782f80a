"""Paired intervals over seeds and problems: known cases (calibration: tests/unit/analysis)."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from bstar_jax.analysis import stats


def test_constant_difference_gives_a_zero_width_interval():
    rng = np.random.default_rng(1)
    b = [rng.integers(0, 2, 200).astype(float) * 0.5 for _ in range(3)]
    a = [x + 0.25 for x in b]
    d = stats.paired_difference(a, b)
    assert d.per_seed == pytest.approx((0.25, 0.25, 0.25))
    assert d.mean == pytest.approx(0.25)
    assert d.ci_low == pytest.approx(0.25) and d.ci_high == pytest.approx(0.25)
    assert d.model_sd == pytest.approx(0.0)
    assert d.ci_excludes_zero and d.p_value == 0.0


def test_symmetric_null_difference_covers_zero():
    rng = np.random.default_rng(2)
    # Per problem: a wins, b wins or they tie, symmetric in a and b.
    a = [rng.integers(0, 2, 512).astype(float) for _ in range(4)]
    b = [rng.integers(0, 2, 512).astype(float) for _ in range(4)]
    d = stats.paired_difference(a, b)
    assert d.ci_low < 0 < d.ci_high and d.p_value > 0.05
    swapped = stats.paired_difference(b, a)
    assert swapped.mean == pytest.approx(-d.mean)
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-d.ci_high, -d.ci_low))


def test_seeds_that_disagree_give_the_t_interval_over_seeds():
    """Per-seed deltas +0.2 and -0.2 on every problem: sd 0.283, t(1) = 12.71, half-width
    12.71 * 0.283 / sqrt(2) = 2.54 (the noise model's is 0: no variation within a seed)."""
    a = [np.full(100, 0.2), np.full(100, -0.2)]
    b = [np.zeros(100), np.zeros(100)]
    d = stats.paired_difference(a, b)
    assert d.mean == pytest.approx(0.0)
    half = scipy_stats.t.ppf(0.975, 1) * np.std([0.2, -0.2], ddof=1) / np.sqrt(2)
    assert (d.ci_low, d.ci_high) == pytest.approx((-half, half))


def test_t_interval_matches_the_textbook_one_sample_t():
    """With the noise model below the seeds' spread, the interval and p-value are scipy's
    one-sample t test on the per-seed means."""
    means = np.array([0.031, 0.012, 0.020, -0.004, 0.027])
    r = stats.t_interval(means, np.full(5, 1e-8))
    test = scipy_stats.ttest_1samp(means, 0.0)
    low, high = test.confidence_interval(0.95)
    assert float(r.mean) - float(r.half_width) == pytest.approx(low)
    assert float(r.mean) + float(r.half_width) == pytest.approx(high)
    assert float(r.p_value) == pytest.approx(test.pvalue)


def test_one_seed_rests_on_the_problem_level_se_and_the_run_noise():
    """One seed: mean +- t(nu) * sqrt(se^2 + 2 sigma^2_run), nu by Welch-Satterthwaite."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 400).astype(float), rng.integers(0, 2, 400).astype(float)
    se2 = (a - b).var(ddof=1) / 400
    alone = stats.paired_difference([a], [b])
    assert alone.ci_high - alone.mean == pytest.approx(scipy_stats.t.ppf(0.975, 399) * se2 ** 0.5)
    noise = stats.RunNoise(variance=0.02 ** 2, dof=3, source="replicates")
    d = stats.paired_difference([a], [b], noise=noise)
    nu = (se2 + 2 * 0.02 ** 2) ** 2 / (se2 ** 2 / 399 + (2 * 0.02 ** 2) ** 2 / 3)
    assert d.ci_high - d.mean == pytest.approx(scipy_stats.t.ppf(0.975, nu) * (se2 + 2 * 0.02 ** 2) ** 0.5)
    against_p0 = stats.paired_difference([a], [b], noise=noise, trained_runs=1)
    assert against_p0.ci_high - against_p0.mean < d.ci_high - d.mean  # P_0 carries no training noise
    assert d.p_value > alone.p_value


def test_run_noise_is_half_the_mean_squared_difference_of_replicate_pairs():
    noise = stats.run_noise([[0.10, 0.14], [0.20, 0.18], [0.3]], "replicates")
    assert noise.variance == pytest.approx(0.5 * (0.04 ** 2 + 0.02 ** 2) / 2)
    assert noise.dof == 2 and noise.measured
    three = stats.run_noise([[0.1, 0.2, 0.3]], "replicates")
    assert three.variance == pytest.approx(np.var([0.1, 0.2, 0.3], ddof=1)) and three.dof == 2
    assert not stats.run_noise([[0.1]], "replicates").measured


def test_clear_improvement_is_detected():
    rng = np.random.default_rng(5)
    b = [rng.random(512) < 0.3 for _ in range(3)]
    a = [x | (rng.random(512) < 0.3) for x in b]  # a solves what b solves and more
    d = stats.paired_difference(a, b)
    assert d.ci_low > 0 and d.p_value < 0.05


def test_holm():
    """Step-down: sorted p times (m, m-1, ...), running maximum, capped at 1, in input order."""
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_align_pairs_by_problem_id():
    a, b = stats.align(["p1", "p2", "p3"], [1, 0, 1], ["p3", "p1", "p9"], [0, 1, 1])
    np.testing.assert_array_equal(a, [1, 1])  # p1, p3
    np.testing.assert_array_equal(b, [1, 0])
    with pytest.raises(ValueError, match="share no"):
        stats.align(["x"], [1], ["y"], [1])
    with pytest.raises(ValueError, match="repeat"):
        stats.align(["x", "x"], [1, 0], ["x"], [1])
