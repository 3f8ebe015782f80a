"""Metrics: hand-computed fixtures, invariants on random pools, sharded == unsharded, bad input."""
import math

import jax
import numpy as np
import pytest

from bstar_jax.bstar import metrics


def random_pool(seed, num_queries=13, num_samples=8):
    rng = np.random.default_rng(seed)
    correct = rng.random((num_queries, num_samples)) < rng.random((num_queries, 1))
    text_id = rng.integers(0, 4, (num_queries, num_samples)) * 2 + correct  # same text, same answer
    reward = (correct + rng.integers(-5, 6, correct.shape) / 5.0).astype(np.float32)
    valid = rng.random(correct.shape) < 0.9
    selected = valid & (rng.random(correct.shape) < 0.6)
    return correct, text_id, reward, valid, selected


# ------------------------------------------------------------------ building blocks

@pytest.mark.parametrize("num_samples", [1, 5, 8, 33])
def test_distinct_count_and_stable_order(num_samples):
    rng = np.random.default_rng(num_samples)
    extremes = np.array([-2**31, 2**31 - 1, -1, 0, 1], np.int64)
    wide = rng.choice(np.concatenate([extremes, rng.integers(-2**31, 2**31, 3)]), (9, num_samples))
    mask = rng.random(wide.shape) < 0.5
    x = wide.astype(np.int32)
    np.testing.assert_array_equal(jax.jit(metrics.stable_order)(x), np.argsort(x, axis=1, kind="stable"))
    want = [len(set(row[m].tolist())) for row, m in zip(x, mask)]
    np.testing.assert_array_equal(jax.jit(metrics.distinct_count)(x, mask), want)


def test_ranking_orders_by_score_then_index():
    score = np.array([[0.5, 2.0, 0.5, -np.inf, 0.0, -0.0]], np.float32)
    # 2.0 first; 0.5 at indices 0 and 2 (lower index first); 0.0 and -0.0 ... then -inf
    got = jax.jit(metrics.ranking)(score + np.float32(0.0))  # callers fold -0.0 into 0.0
    np.testing.assert_array_equal(got, [[1, 0, 2, 5, 3, 4]])


# ------------------------------------------------------------------ pass@k

def test_pass_at_k_hand_values():
    # n=2, c=1, k=1: 1 - C(1,1)/C(2,1) = 1 - 1/2 = 0.5
    # n=4, c=2, k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6
    # n=5, c=0, k=3: 1 - C(5,3)/C(5,3) = 0
    # n=5, c=3, k=3: C(2,3) = 0 -> 1
    # n=64, c=16, k=1: 16/64 = 0.25
    got = metrics.pass_at_k([2, 4, 5, 5, 64], [1, 2, 0, 3, 16], [1, 2, 3, 3, 1])
    np.testing.assert_allclose(got, [0.5, 5 / 6, 0.0, 1.0, 0.25], rtol=1e-12)
    assert metrics.pass_at_k(10, 10, 10) == 1.0


def test_pass_at_k_matches_binomials_and_is_stable():
    n, c, k = np.meshgrid(np.arange(1, 30), np.arange(0, 30), np.arange(1, 30), indexing="ij")
    ok = (c <= n) & (k <= n)
    n, c, k = n[ok], c[ok], k[ok]
    want = [1 - math.comb(a - b, kk) / math.comb(a, kk) for a, b, kk in zip(n, c, k)]
    np.testing.assert_allclose(metrics.pass_at_k(n, c, k), want, rtol=1e-10, atol=1e-12)
    # large n: the product form stays finite where C(n, k) overflows a float
    assert abs(metrics.pass_at_k(5000, 1, 1) - 1 / 5000) < 1e-15
    assert 0.0 < metrics.pass_at_k(5000, 2, 400) < 1.0


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="exceeds"):
        metrics.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        metrics.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.pass_at_k(4, 1, 0)


# ------------------------------------------------------------------ Pass@K-S, Reward@K-S

def test_pass_at_k_s_counts_distinct_correct_texts():
    correct = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
    text_id = np.array([[7, 7, 9, 3], [1, 2, 3, 4], [1, 2, 3, 4]])
    # row 0: correct texts {7, 9} -> 2 distinct (3 correct responses, two identical)
    # row 1: correct texts {1, 3} -> 2; row 2: none -> 0
    np.testing.assert_array_equal(metrics.pass_at_k_s(correct, text_id, 1), [1, 1, 0])
    np.testing.assert_array_equal(metrics.pass_at_k_s(correct, text_id, 2), [1, 1, 0])
    np.testing.assert_array_equal(metrics.pass_at_k_s(correct, text_id, 3), [0, 0, 0])


def test_reward_at_k_s_ranks_by_reward_ties_lower_index():
    correct = np.array([[0, 1, 1, 0], [1, 0, 1, 1]], bool)
    reward = np.array([[0.5, 0.5, 0.9, 0.1], [1.2, 1.2, 0.3, 1.5]], np.float32)
    # row 0: ranking 2 (0.9), 0 (0.5, lower index wins the tie with 1), 1, 3
    #   S=1: {2} correct -> 1; S=2: {2, 0}, 0 wrong -> 0
    # row 1: ranking 3 (1.5), 0 (1.2), 1 (1.2), 2
    #   S=1: {3} -> 1; S=2: {3, 0} -> 1; S=3: {3, 0, 1}, 1 wrong -> 0
    np.testing.assert_array_equal(metrics.reward_at_k_s(correct, reward, 1), [1, 1])
    np.testing.assert_array_equal(metrics.reward_at_k_s(correct, reward, 2), [0, 1])
    np.testing.assert_array_equal(metrics.reward_at_k_s(correct, reward, 3), [0, 0])


@pytest.mark.parametrize("seed", range(5))
def test_reward_at_k_1_at_most_pass_at_k_1(seed):
    correct, text_id, reward, _, _ = random_pool(seed)
    best_of_k = metrics.reward_at_k_s(correct, reward, 1)
    pass_k = metrics.pass_at_k_s(correct, text_id, 1)
    assert np.all(best_of_k <= pass_k)
    # the answer-only reward r = 1[correct] ranks every correct response first: equality
    answer_only = correct.astype(np.float32)
    np.testing.assert_array_equal(metrics.reward_at_k_s(correct, answer_only, 1), pass_k)


@pytest.mark.parametrize("seed", range(5))
def test_pass_at_k_s_non_increasing_in_s(seed):
    correct, text_id, _, _, _ = random_pool(seed)
    curves = np.stack([metrics.pass_at_k_s(correct, text_id, s) for s in range(1, 9)])
    assert np.all(np.diff(curves, axis=0) <= 0)
    assert curves[0].sum() > curves[-1].sum() or curves[0].sum() == 0


# ------------------------------------------------------------------ diversity, precision/recall

def test_diversity_hand_values():
    texts = [
        ["so $x+1$ and $x+1$", "then <<2*3=6>>"],     # equations x+1, x+1, 2*3=6 -> 2 / 3
        ["no equations here"],                       # skipped, not counted as 0
        ["\\[a\nb\\] then $y$"],                     # display (DOTALL, across a newline), y -> 2 / 2
        ["empty $$ pair"],                           # an empty match is dropped: no equations
    ]
    assert metrics.diversity(texts) == pytest.approx((2 / 3 + 1.0) / 2)
    assert metrics.diversity([["nothing"], []]) == 0.0
    with pytest.raises(ValueError, match="list of texts per query"):
        metrics.diversity(["a bare string"])


def test_selection_precision_recall_hand_values():
    correct = np.array([[1, 1, 0, 0], [0, 1, 0, 0]], bool)
    selected = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], bool)
    valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    # selected 3, of which correct 2 (row 0 col 0, row 1 col 1) -> precision 2/3
    # valid and correct: 3 (row 0 cols 0, 1; row 1 col 1) -> recall 2/3
    assert metrics.selection_precision_recall(correct, selected, valid) == pytest.approx((2 / 3, 2 / 3))
    # with texts: row 0 cols 0 and 1 are the same text -> valid correct distinct = 2 -> recall 1
    text_id = np.array([[5, 5, 6, 7], [1, 2, 3, 4]])
    assert metrics.selection_precision_recall(correct, selected, valid, text_id) == pytest.approx((2 / 3, 1.0))
    assert metrics.selection_precision_recall(correct, selected & False, valid) == (0.0, 0.0)


# ------------------------------------------------------------------ balance score

def test_balance_score_paper_illustration():
    # paper §3.1, one query, n* = 6:
    # 2 correct of 2 selected:   min(2/6, 1) * 2/2   = 1/3  (pure, but too few)
    # 16 correct of 64 selected: min(16/6, 1) * 16/64 = 0.25 (enough, but mostly wrong)
    text_id = np.arange(64)[None]
    correct = (np.arange(64) < 16)[None]
    two = (np.arange(64) < 2)[None]
    assert metrics.balance_score(correct, two, text_id, 6) == pytest.approx(1 / 3, abs=1e-15)
    assert metrics.balance_score(correct, np.ones_like(two), text_id, 6) == pytest.approx(0.25, abs=1e-15)
    # the official n* = 8: 2 of 2 -> 2/8 = 0.25; 16 of 64 -> 1 * 0.25
    assert metrics.balance_score(correct, two, text_id, 8) == pytest.approx(0.25, abs=1e-15)


def test_balance_score_counts_distinct_and_means_over_all_queries():
    correct = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], bool)
    selected = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    text_id = np.array([[3, 3, 4, 5], [1, 2, 3, 4], [1, 2, 3, 4]])
    # n* = 2
    # row 0: selected texts {3, 4, 5} -> n = 3; correct among them {3, 4} -> n' = 2
    #        bs = min(2/2, 1) * 2/3 = 2/3
    # row 1: n = 2, n' = 1 -> min(1/2, 1) * 1/2 = 1/4
    # row 2: nothing selected -> 0
    # mean over all 3 queries: (2/3 + 1/4 + 0) / 3 = 11/36; over the 2 with a selection: 11/24
    assert metrics.balance_score(correct, selected, text_id, 2) == pytest.approx(11 / 36, abs=1e-15)
    assert metrics.balance_score(correct, selected, text_id, 2, mean_over="selected") == pytest.approx(11 / 24)


def test_n_star_rule():
    assert metrics.n_star_rule(67_500, 11_500) == 6  # math, paper §3.1
    assert metrics.n_star_rule(13_500, 2_627) == 6   # APPS
    assert metrics.n_star_rule(600, 100) == 6        # exact division: no rounding up
    with pytest.raises(ValueError):
        metrics.n_star_rule(10, 0)


@pytest.mark.parametrize("seed", range(6))
def test_balance_score_in_unit_interval_and_answer_only_is_pure(seed):
    correct, text_id, reward, valid, selected = random_pool(seed)
    for n_star in (1, 3, 8):
        assert 0.0 <= metrics.balance_score(correct, selected, text_id, n_star) <= 1.0
    # answer-only reward, τ in [0, 1): every selected response is correct, so n'_i = n_i
    answer_only = correct.astype(np.float32)
    chosen = valid & (answer_only > 0.5)
    precision, _ = metrics.selection_precision_recall(correct, chosen, valid, text_id)
    assert precision == 1.0 or not chosen.any()
    n_i = np.array([len(set(t[m])) for t, m in zip(text_id, chosen)])
    want = np.mean(np.minimum(n_i / 3, 1.0) * (n_i > 0))  # bs_i = min(n_i / n*, 1)
    assert metrics.balance_score(correct, chosen, text_id, 3) == pytest.approx(want, abs=1e-15)


def test_sharded_equals_unsharded(mesh8, mesh1):
    correct, text_id, reward, valid, selected = random_pool(11, num_queries=13)  # 13 % 8 != 0
    assert metrics.balance_score(correct, selected, text_id, 3, mesh=mesh8) == \
        metrics.balance_score(correct, selected, text_id, 3, mesh=mesh1)
    for s in (1, 3):
        np.testing.assert_array_equal(metrics.pass_at_k_s(correct, text_id, s, mesh=mesh8),
                                      metrics.pass_at_k_s(correct, text_id, s, mesh=mesh1))
        np.testing.assert_array_equal(metrics.reward_at_k_s(correct, reward, s, mesh=mesh8),
                                      metrics.reward_at_k_s(correct, reward, s, mesh=mesh1))
    assert metrics.selection_precision_recall(correct, selected, valid, text_id, mesh=mesh8) == \
        metrics.selection_precision_recall(correct, selected, valid, text_id, mesh=mesh1)
    assert metrics.pass_at_k_s(correct, text_id, 1, mesh=mesh8).shape == (13,)
    # ids spread over all of int32: the same counts as small ids
    wide_id = ((text_id.astype(np.int64) * 2_654_435_761 + 12345) % 2**32 - 2**31).astype(np.int32)
    assert metrics.balance_score(correct, selected, wide_id, 3, mesh=mesh8) == \
        metrics.balance_score(correct, selected, text_id, 3, mesh=mesh1)
    np.testing.assert_array_equal(metrics.pass_at_k_s(correct, wide_id, 2, mesh=mesh8),
                                  metrics.pass_at_k_s(correct, text_id, 2, mesh=mesh1))


def test_jax_arrays_accepted():
    correct, text_id, reward, _, selected = random_pool(3)
    import jax.numpy as jnp
    assert metrics.balance_score(jnp.asarray(correct), jnp.asarray(selected), jnp.asarray(text_id), 2) == \
        metrics.balance_score(correct, selected, text_id, 2)


def test_bad_input_is_one_clear_error():
    correct, text_id, reward, _, selected = random_pool(0)  # K = 8
    with pytest.raises(ValueError, match="K < S"):
        metrics.pass_at_k_s(correct, text_id, 9)
    with pytest.raises(ValueError, match="K < S"):
        metrics.reward_at_k_s(correct, reward, 9)
    bad = reward.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN reward at index \[2, 5\]"):
        metrics.reward_at_k_s(correct, bad, 1)
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.balance_score(correct, selected[:, :4], text_id, 2)
    with pytest.raises(ValueError, match="rank 2"):
        metrics.pass_at_k_s(correct[0], text_id[0], 1)
    with pytest.raises(ValueError, match="empty pool"):
        metrics.balance_score(correct[:0], selected[:0], text_id[:0], 2)
    with pytest.raises(ValueError, match="n_star must be a positive integer"):
        metrics.balance_score(correct, selected, text_id, 0)
    with pytest.raises(ValueError, match="text_id must be integers"):
        metrics.pass_at_k_s(correct, text_id.astype(float), 1)
