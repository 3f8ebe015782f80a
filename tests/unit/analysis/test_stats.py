"""Paired bootstrap over seeds and problems: known cases."""
import numpy as np
import pytest

from bstar_jax.analysis import stats


def test_constant_difference_gives_a_zero_width_interval():
    rng = np.random.default_rng(1)
    b = [rng.integers(0, 2, 200).astype(float) * 0.5 for _ in range(3)]
    a = [x + 0.25 for x in b]
    d = stats.paired_difference(a, b, num_resamples=500)
    assert d.per_seed == pytest.approx((0.25, 0.25, 0.25))
    assert d.mean == pytest.approx(0.25)
    assert d.ci_low == pytest.approx(0.25) and d.ci_high == pytest.approx(0.25)
    assert d.standard_error == pytest.approx(0.0)
    assert d.ci_excludes_zero


def test_symmetric_null_difference_covers_zero():
    rng = np.random.default_rng(2)
    # Per problem: a wins, b wins or they tie, symmetric in a and b.
    a = [rng.integers(0, 2, 512).astype(float) for _ in range(4)]
    b = [rng.integers(0, 2, 512).astype(float) for _ in range(4)]
    d = stats.paired_difference(a, b, num_resamples=2000)
    assert d.ci_low < 0 < d.ci_high
    assert not d.beyond_two_se
    swapped = stats.paired_difference(b, a, num_resamples=2000)
    assert swapped.mean == pytest.approx(-d.mean)


def test_bootstrap_is_reproducible_with_a_seed():
    rng = np.random.default_rng(3)
    diffs = [rng.normal(size=50) for _ in range(3)]
    np.testing.assert_array_equal(stats.bootstrap_means(diffs, num_resamples=300, seed=7),
                                  stats.bootstrap_means(diffs, num_resamples=300, seed=7))
    assert not np.array_equal(stats.bootstrap_means(diffs, num_resamples=300, seed=7),
                              stats.bootstrap_means(diffs, num_resamples=300, seed=8))


def test_bootstrap_spread_matches_the_standard_error_for_one_seed():
    """One seed: the bootstrap sd of the mean is sd(d) / sqrt(Q) up to resampling noise."""
    rng = np.random.default_rng(4)
    d = rng.normal(0.1, 1.0, size=400)
    reps = stats.bootstrap_means([d], num_resamples=4000, seed=0)
    assert reps.std() == pytest.approx(stats.standard_error([d]), rel=0.1)
    assert reps.mean() == pytest.approx(d.mean(), abs=0.01)


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    """Seeds whose deltas disagree (+0.2 and -0.2 on all problems) give a CI spanning them."""
    a = [np.full(100, 0.2), np.full(100, -0.2)]
    b = [np.zeros(100), np.zeros(100)]
    d = stats.paired_difference(a, b, num_resamples=2000)
    assert d.mean == pytest.approx(0.0)
    assert d.ci_low == pytest.approx(-0.2) and d.ci_high == pytest.approx(0.2)
    assert d.standard_error == pytest.approx(0.2)


def test_clear_improvement_is_detected():
    rng = np.random.default_rng(5)
    b = [rng.random(512) < 0.3 for _ in range(3)]
    a = [x | (rng.random(512) < 0.3) for x in b]  # a solves what b solves and more
    d = stats.paired_difference(a, b, num_resamples=2000)
    assert d.ci_low > 0 and d.beyond_two_se


def test_align_pairs_by_problem_id():
    a, b = stats.align(["p1", "p2", "p3"], [1, 0, 1], ["p3", "p1", "p9"], [0, 1, 1])
    np.testing.assert_array_equal(a, [1, 1])  # p1, p3
    np.testing.assert_array_equal(b, [1, 0])
    with pytest.raises(ValueError, match="share no"):
        stats.align(["x"], [1], ["y"], [1])
    with pytest.raises(ValueError, match="repeat"):
        stats.align(["x", "x"], [1, 0], ["x"], [1])
