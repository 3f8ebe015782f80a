"""A baseline's held τ: with the PRM fitted once (the balance score's best τ at the baseline's T,
B-STaR's search restricted to that one temperature), then held; given as a number; answer-only
runs unchanged."""
import numpy as np
import pytest

from balance_reference import reference_balance_score, reference_select
from bstar_jax.bstar import balance, metrics
from bstar_jax.bstar.held_threshold import KEY, HeldThreshold
from configs import demo

GRID = tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))  # the paper's τ grid


def _prm_pool(seed=0, q=12, k=8):
    """A pool whose PRM is calibrated low, as this project's: correct responses score 1 + min-step
    logit / 5 in [-0.35, 0.4] (most at or below 0), wrong ones in [-1.2, -0.45]; a few invalid."""
    rng = np.random.default_rng(seed)
    correct = rng.random((q, k)) < 0.4
    reward = np.where(correct, rng.uniform(-0.35, 0.4, (q, k)), rng.uniform(-1.2, -0.45, (q, k))).astype(np.float32)
    valid = rng.random((q, k)) < 0.9
    text_id = np.tile(np.arange(k, dtype=np.int32), (q, 1))
    text_id[:, 1] = text_id[:, 0]  # a repeated text in every row
    return correct, reward, valid, text_id


def _config(**baseline):
    c = demo.get_config("tiny")
    c.use_prm = (False, True)
    c.baseline.update(baseline)
    return c


def test_the_fit_picks_the_threshold_with_the_best_balance_score():
    """The fit is the search over τ at one temperature: its τ maximises BS(τ) as the plain-Python
    reference computes it (ties: the higher τ), and here it is not the paper's τ = 0."""
    correct, reward, valid, text_id = _prm_pool()
    target = 40
    n_star = metrics.n_star_rule(target, correct.shape[0])
    fit = balance.search(correct[None], reward[None], valid[None], text_id[None], [1.0], GRID, target_size=target,
                         n_star=n_star)
    scores = np.array([reference_balance_score(correct, reference_select(reward, valid, tau, target, text_id),
                                               text_id, n_star) for tau in GRID])
    best = max(i for i in range(len(GRID)) if scores[i] >= scores.max() - balance.TIE_TOL)
    assert fit.threshold == GRID[best] and fit.temperature == 1.0
    assert fit.balance_score == pytest.approx(scores.max(), abs=1e-12)
    np.testing.assert_allclose(fit.balance_score_TxU[0], scores, atol=1e-12)
    assert fit.threshold < 0 and scores[best] > scores[GRID.index(0.0)]


def test_a_fitted_threshold_is_held_from_the_fitting_iteration_on_and_survives_a_restart():
    c = _config()
    held = HeldThreshold(c, "online_rft", use_prm=True)
    assert held.fits and held.needs_fit and held.row() == {KEY: None} and held.checkpoint_meta() == {}
    held.keep(-0.3, 0.0)  # every τ scored 0 (no correct dev response): tells nothing, fit again next time
    held.keep(-0.3, None)
    assert held.needs_fit
    held.keep(-0.3, 0.42)  # iteration 1's fit
    assert not held.needs_fit and held.value == -0.3
    held.keep(0.5, 0.9)  # a later iteration's search phase, were there one, changes nothing
    assert held.value == -0.3 and held.row() == {KEY: -0.3} and held.checkpoint_meta() == {KEY: -0.3}
    resumed = HeldThreshold(c, "online_rft", use_prm=True)
    resumed.restore({"iteration": 2, "threshold": -0.3, **held.checkpoint_meta()})
    assert not resumed.needs_fit and resumed.value == -0.3
    after_p0 = HeldThreshold(c, "online_rft", use_prm=True)
    after_p0.restore({"iteration": 0, "threshold": None})  # P_0's checkpoint: the fit is still to come
    assert after_p0.needs_fit


@pytest.mark.parametrize("variant, use_prm, prm_threshold, want", [
    ("online_rft", True, "0.0", 0.0),  # the paper's literal τ, one field away
    ("rest_em", True, "-0.3", -0.3),
    ("online_rft", False, "fitted", 0.25),  # answer only: baseline.threshold, as before
    ("iterative_rft", False, "fitted", 0.25),
    ("bstar_temperature_only", True, "fitted", 0.25),  # a searching variant holds baseline.threshold
])
def test_runs_that_do_not_fit_hold_a_given_threshold(variant, use_prm, prm_threshold, want):
    held = HeldThreshold(_config(threshold=0.25, prm_threshold=prm_threshold), variant, use_prm)
    assert not held.fits and not held.needs_fit and held.value == want
    assert held.row() == {} and held.checkpoint_meta() == {}
    held.keep(-0.5, 1.0)
    held.restore({KEY: -0.5})
    assert held.value == want


def test_answer_only_every_threshold_in_0_1_selects_the_same_responses():
    """Why answer-only runs keep their τ: under Eq. 1 (reward 0 or 1) every τ in [0, 1) selects
    the same set, so no fit could change what they train on."""
    correct, _, valid, text_id = _prm_pool(seed=1)
    reward = correct.astype(np.float32)
    want = balance.select(reward, valid, 0.0, 40, text_id)
    for tau in (0.1, 0.5, 0.9):
        np.testing.assert_array_equal(balance.select(reward, valid, tau, 40, text_id), want)
