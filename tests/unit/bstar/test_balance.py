"""Selection and the (T, τ) search: hand fixtures, equality with the plain-Python reference on
random pools (ties included), sharded == unsharded, restricted searches, bad input."""
import numpy as np
import pytest

from bstar_jax.bstar import balance, metrics
from balance_reference import reference_balance_score, reference_search, reference_select

# The fixture pool, Q = 2, K = 4 (used by several tests; arithmetic in the comments).
# row 0: rewards 0.9 0.5 0.9 0.1, texts 0 1 0 2, correct 1 0 1 0, all valid
#        ranking: 0 (0.9), 2 (0.9, tie -> higher index later), 1 (0.5), 3 (0.1)
# row 1: rewards 0.3 0.8 0.6 0.7, texts 5 6 7 8, correct 0 1 0 1, sample 2 invalid
#        ranking: 1 (0.8), 3 (0.7), 0 (0.3); 2 never a candidate
REWARD = np.array([[0.9, 0.5, 0.9, 0.1], [0.3, 0.8, 0.6, 0.7]], np.float32)
VALID = np.array([[1, 1, 1, 1], [1, 1, 0, 1]], bool)
TEXT = np.array([[0, 1, 0, 2], [5, 6, 7, 8]], np.int32)
CORRECT = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], bool)


def test_select_hand_fixture():
    # τ = 0.2: candidates row 0 -> 0, 2, 1 (texts 0, 0, 1); row 1 -> 1, 3, 0
    # distinct (query, text) pairs under cap c: c=1: 1+1 = 2; c=2: 1+2 = 3; c=3: 2+3 = 5; c=4: 5
    want = {
        1: [[1, 0, 0, 0], [0, 1, 0, 0]],  # c = 1 (2 pairs >= 1, not truncated to 1)
        3: [[1, 0, 0, 0], [0, 1, 0, 1]],  # c = 2; sample 2 of row 0 is a repeat of sample 0's text
        4: [[1, 1, 0, 0], [1, 1, 0, 1]],  # c = 3
        6: [[1, 1, 0, 0], [1, 1, 0, 1]],  # unreachable -> c = K = 4, same as c = 3 here
    }
    for target, rows in want.items():
        np.testing.assert_array_equal(balance.select(REWARD, VALID, 0.2, target, TEXT), np.array(rows, bool))
        np.testing.assert_array_equal(reference_select(REWARD, VALID, 0.2, target, TEXT), np.array(rows, bool))
    # τ = 0.7: reward > τ is strict: row 1 sample 3 (0.7) is out; row 0 -> 0, 2; row 1 -> 1
    np.testing.assert_array_equal(balance.select(REWARD, VALID, 0.7, 100, TEXT),
                                  np.array([[1, 0, 0, 0], [0, 1, 0, 0]], bool))


def _fixture_pools():
    # Second temperature: row 0 rewards 0.1 0.95 0.2 0.3 (a wrong answer on top), row 1 as before.
    reward2 = REWARD.copy()
    reward2[0] = [0.1, 0.95, 0.2, 0.3]
    stack = lambda a, b: np.stack([a, b])
    return stack(CORRECT, CORRECT), stack(REWARD, reward2), stack(VALID, VALID), stack(TEXT, TEXT)


def test_search_hand_fixture_and_tie_rules():
    # n* = 2, target 3, τ grid {0.2, 0.6}
    # T = 0.5 (first pool), τ = 0.2: c = 2 (see test_select_hand_fixture)
    #   row 0 selects {0}: n = 1, n' = 1 -> min(1/2, 1) * 1/1 = 0.5; row 1 {1, 3}: n = n' = 2 -> 1
    #   BS = 0.75
    # T = 0.5, τ = 0.6: candidates row 0 -> 0, 2; row 1 -> 1, 3; c=1: 2 pairs, c=2: 1+2 = 3 -> c = 2
    #   the same selection -> BS = 0.75 (a tie in τ)
    # T = 1.0 (second pool), τ = 0.2: row 0 ranking 1 (0.95), 3 (0.3); 2 (0.2) is not > 0.2
    #   c = 2: row 0 {1, 3}, both wrong -> 0; row 1 {1, 3} -> 1; BS = 0.5
    # T = 1.0, τ = 0.6: row 0 {1} -> 0; row 1 {1, 3} -> 1 (c = 2: 1 + 2 = 3); BS = 0.5
    correct, reward, valid, text = _fixture_pools()
    kw = dict(target_size=3, n_star=2)
    paper = balance.search(correct, reward, valid, text, [0.5, 1.0], [0.2, 0.6], **kw)
    np.testing.assert_array_equal(paper.balance_score_TxU, [[0.75, 0.75], [0.5, 0.5]])
    np.testing.assert_array_equal(paper.cap_TxU, [[2, 2], [2, 2]])
    np.testing.assert_array_equal(paper.n_selected_TxU, [[3, 3], [4, 3]])
    assert (paper.temperature, paper.threshold, paper.balance_score) == (0.5, 0.6, 0.75)  # tie -> higher τ
    official = balance.search(correct, reward, valid, text, [0.5, 1.0], [0.2, 0.6], mode="official", **kw)
    assert (official.temperature, official.threshold) == (0.5, 0.2)  # tie -> first τ
    # ties in T: the same pool at both temperatures, grid given high to low
    same = [np.stack([x[0], x[0]]) for x in (correct, reward, valid, text)]
    paper = balance.search(*same, [1.0, 0.5], [0.2, 0.6], **kw)
    assert (paper.temperature, paper.threshold) == (0.5, 0.6)  # the lower T, then the higher τ
    official = balance.search(*same, [1.0, 0.5], [0.2, 0.6], mode="official", **kw)
    assert (official.temperature, official.threshold) == (1.0, 0.2)  # the first T, the first τ
    # n* from the rule: ceil(3 / 2) = 2, the same table
    assert balance.search(correct, reward, valid, text, [0.5, 1.0], [0.2, 0.6], target_size=3).n_star == 2


def test_reference_solution_option():
    # with the reference appended (reward 1.0, correct, own text) and target 3:
    # T = 1.0, τ = 0.6: row 0 ranking ref (1.0), 1 (0.95); row 1 ref, 1 (0.8), 3 (0.7)
    #   c = 1: 2 pairs; c = 2: 4 -> c = 2. row 0 {ref, 1}: n = 2, n' = 1 -> 1/2 * 1/2 = 1/4
    #   row 1 {ref, 1}: n = n' = 2 -> 1. BS = 5/8
    correct, reward, valid, text = _fixture_pools()
    res = balance.search(correct, reward, valid, text, [0.5, 1.0], [0.2, 0.6], target_size=3, n_star=2,
                         include_reference=True)
    assert res.balance_score_TxU[1, 1] == 5 / 8
    ref = reference_search(correct, reward, valid, text, [0.5, 1.0], [0.2, 0.6], target_size=3, n_star=2,
                           include_reference=True)
    np.testing.assert_allclose(res.balance_score_TxU, ref[3], rtol=0, atol=1e-12)


def random_search_pool(seed, temperatures=3, num_queries=13, num_samples=8):
    """Pools with ties on purpose: rewards on a 0.2 grid that the thresholds hit exactly,
    repeated texts, and for some seeds the same pool at every temperature or flat rewards."""
    rng = np.random.default_rng(seed)
    shape = (temperatures, num_queries, num_samples)
    correct = rng.random(shape) < rng.random((temperatures, num_queries, 1))
    text_id = rng.integers(0, 1 + seed % 6, shape) * 2 + correct
    reward = correct + rng.integers(-5, 6, shape) / 5.0
    valid = rng.random(shape) < 0.85
    if seed % 3 == 0:  # identical pools: every temperature ties
        correct, reward, valid, text_id = (np.repeat(x[:1], temperatures, 0) for x in (correct, reward, valid, text_id))
    if seed % 5 == 1:  # flat rewards: every threshold below them ties
        reward = np.full(shape, 0.4)
    if seed % 8 == 5:  # ids spread over all of int32 (the two-pass sort of texts)
        text_id = (text_id * 2_654_435_761 + 12345) % 2**32 - 2**31
    return correct, reward.astype(np.float32), valid, text_id.astype(np.int32)


THRESHOLDS = [-1.0, -0.6, -0.2, 0.0, 0.2, 0.6, 1.2]  # values the rewards take too
TEMPERATURES = [0.6, 1.0, 0.8]  # not sorted, so "lower T" and "first T" differ


@pytest.mark.parametrize("mode", balance.MODES)
def test_search_equals_reference_on_random_pools(mode):
    ties_seen = 0
    for seed in range(50):
        pool = random_search_pool(seed)
        kw = dict(target_size=int(10 + seed * 7 % 60), mode=mode, include_reference=seed % 4 == 2,
                  mean_over="selected" if seed % 7 == 3 else "all",
                  n_star=None if seed % 2 else 1 + seed % 8)
        ours = balance.search(*pool, TEMPERATURES, THRESHOLDS, **kw)
        ref_t, ref_tau, ref_best, ref_table = reference_search(*pool, TEMPERATURES, THRESHOLDS, **kw)
        np.testing.assert_allclose(ours.balance_score_TxU, ref_table, rtol=0, atol=1e-12, err_msg=f"seed {seed}")
        assert (ours.temperature, ours.threshold) == (ref_t, ref_tau), f"seed {seed}"
        assert ours.balance_score == pytest.approx(ref_best, abs=1e-12)
        ties_seen += np.sum(ours.balance_score_TxU >= ours.balance_score - 1e-12) > 1
    assert ties_seen >= 20  # the tie rules were exercised


def test_select_and_score_match_reference_and_the_search_table():
    for seed in (0, 1, 4, 5):  # identical pools, flat rewards, random, int32-wide text ids
        correct, reward, valid, text_id = random_search_pool(seed)
        res = balance.search(correct, reward, valid, text_id, TEMPERATURES, THRESHOLDS, target_size=40, n_star=3)
        for t in range(3):
            for u, tau in enumerate(THRESHOLDS):
                selected = balance.select(reward[t], valid[t], tau, 40, text_id[t])
                np.testing.assert_array_equal(selected, reference_select(reward[t], valid[t], tau, 40, text_id[t]))
                score = metrics.balance_score(correct[t], selected, text_id[t], 3)
                assert score == res.balance_score_TxU[t, u]  # bit-equal: same exact numerators
                assert score == pytest.approx(reference_balance_score(correct[t], selected, text_id[t], 3), abs=1e-12)


def test_answer_only_reward_selects_only_correct():
    # r = 1[correct], τ in [0, 1): every selection is pure, so n'_i = n_i and bs_i = min(n_i/n*, 1)
    for seed in range(5):
        correct, _, valid, text_id = random_search_pool(seed)
        reward = correct.astype(np.float32)
        res = balance.search(correct, reward, valid, text_id, TEMPERATURES, [0.0, 0.5, 0.99], target_size=30,
                             n_star=2)
        for t in range(3):
            selected = balance.select(reward[t], valid[t], 0.5, 30, text_id[t])
            assert not np.any(selected & ~correct[t])
            n_i = np.array([len(set(ids[m])) for ids, m in zip(text_id[t], selected)])
            assert res.balance_score_TxU[t, 1] == pytest.approx(np.mean(np.minimum(n_i / 2, 1)), abs=1e-12)
        assert np.all((res.balance_score_TxU >= 0) & (res.balance_score_TxU <= 1))


def test_sharded_equals_unsharded(mesh8, mesh1):
    pool = random_search_pool(4, num_queries=13)  # 13 % 8 != 0: padded rows must count for nothing
    for mean_over in ("all", "selected"):
        a = balance.search(*pool, TEMPERATURES, THRESHOLDS, target_size=37, mean_over=mean_over, mesh=mesh8)
        b = balance.search(*pool, TEMPERATURES, THRESHOLDS, target_size=37, mean_over=mean_over, mesh=mesh1)
        np.testing.assert_array_equal(a.balance_score_TxU, b.balance_score_TxU)
        np.testing.assert_array_equal(a.cap_TxU, b.cap_TxU)
        np.testing.assert_array_equal(a.n_selected_TxU, b.n_selected_TxU)
    reward, valid, text_id = pool[1][0], pool[2][0], pool[3][0]
    np.testing.assert_array_equal(balance.select(reward, valid, 0.0, 37, text_id, mesh=mesh8),
                                  balance.select(reward, valid, 0.0, 37, text_id, mesh=mesh1))


def test_restricted_searches():
    correct, reward, valid, text_id = random_search_pool(7)
    full = balance.search(correct, reward, valid, text_id, TEMPERATURES, THRESHOLDS, target_size=40)
    # temperature only (Table 3): τ fixed -> one column of the full table
    only_t = balance.search_temperature(correct, reward, valid, text_id, TEMPERATURES, 0.2, target_size=40)
    np.testing.assert_array_equal(only_t.balance_score_TxU[:, 0], full.balance_score_TxU[:, 4])
    assert only_t.threshold == 0.2 and only_t.temperature in TEMPERATURES
    # threshold only (Table 3) / the official re-search on a pool: one row of the table
    for mode in balance.MODES:
        only_tau = balance.search_threshold(correct[1], reward[1], valid[1], text_id[1], THRESHOLDS,
                                            temperature=1.0, target_size=40, mode=mode)
        np.testing.assert_array_equal(only_tau.balance_score_TxU[0], full.balance_score_TxU[1])
        ref = reference_search(correct[1:2], reward[1:2], valid[1:2], text_id[1:2], [1.0], THRESHOLDS,
                               target_size=40, mode=mode)
        assert (only_tau.temperature, only_tau.threshold) == (1.0, ref[1])


def test_bad_input_is_one_clear_error():
    correct, reward, valid, text_id = random_search_pool(2)
    kw = dict(target_size=10)
    with pytest.raises(ValueError, match="threshold grid is empty"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, [], **kw)
    with pytest.raises(ValueError, match="temperature grid is empty"):
        balance.search(correct[:0], reward[:0], valid[:0], text_id[:0], [], THRESHOLDS, **kw)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        balance.search(correct, reward, valid, text_id, [0.5, 0.0, 1.0], THRESHOLDS, **kw)
    bad = reward.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN reward at index \[1, 2, 3\]"):
        balance.search(correct, bad, valid, text_id, TEMPERATURES, THRESHOLDS, **kw)
    with pytest.raises(ValueError, match="NaN reward"):
        balance.select(bad[1], valid[1], 0.0, 10, text_id[1])
    with pytest.raises(ValueError, match="shape mismatch"):
        balance.search(correct, reward[:, :, :4], valid, text_id, TEMPERATURES, THRESHOLDS, **kw)
    with pytest.raises(ValueError, match="3 temperatures but pools for 2"):
        balance.search(correct[:2], reward[:2], valid[:2], text_id[:2], TEMPERATURES, THRESHOLDS, **kw)
    with pytest.raises(ValueError, match="repeated values"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, [0.1, 0.1], **kw)
    with pytest.raises(ValueError, match="non-finite"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, [0.1, np.inf], **kw)
    with pytest.raises(ValueError, match="mode must be one of"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, THRESHOLDS, mode="best", **kw)
    with pytest.raises(ValueError, match="target_size must be a positive integer"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, THRESHOLDS, target_size=0)
    with pytest.raises(ValueError, match="n_star must be a positive integer"):
        balance.search(correct, reward, valid, text_id, TEMPERATURES, THRESHOLDS, n_star=2.5, **kw)
    with pytest.raises(ValueError, match="tau must be one finite threshold"):
        balance.select(reward[0], valid[0], [0.1, 0.2], 10, text_id[0])
    with pytest.raises(ValueError, match="rank 3"):
        balance.search(correct[0], reward[0], valid[0], text_id[0], [1.0], THRESHOLDS, **kw)
