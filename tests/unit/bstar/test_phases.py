"""The phase store an iteration's steps run through (bstar/phases.py): a phase is computed once and
kept; the same iteration started again (a resumed run) reads it back equal, without computing it."""
import numpy as np
import pytest

from bstar_jax.bstar import phases, rollout
from bstar_jax.bstar.iteration import Choice, SearchTable, Selection
from bstar_jax.generate.grid import GridSamples


def _pool() -> rollout.Pool:
    texts = np.array([[["a\n\n# Answer\n\n4", "b"], ["c", "c"]]], dtype=object)
    zeros = np.zeros(texts.shape, np.int32)
    samples = GridSamples(temperatures=np.array([0.7], np.float32), texts=texts,
                          tokens=np.arange(12, dtype=np.int32).reshape(1, 2, 2, 3), lengths=zeros + 2,
                          truncated=zeros.astype(bool), logprobs=np.full((1, 2, 2, 3), -0.5, np.float32),
                          prompt_ids=[[5, 6], [7]])
    return rollout.Pool(samples=samples, correct=zeros == 0, valid=zeros == 0, text_id=zeros, prm_min=None,
                        reward=np.ones(texts.shape, np.float32),
                        test_pass_fraction=np.full(texts.shape, 0.6, np.float32))


def _never():
    raise AssertionError("a kept phase was computed again")


def test_each_phase_is_computed_once_and_read_back_by_a_resumed_iteration(tmp_path):
    table = SearchTable([0.5, 0.9], [0.0, 0.5, 1.0], np.arange(6, dtype=np.float64).reshape(2, 3) / 10)
    choice = Choice(0.9, 0.5, 0.4, table)
    selection = Selection(0.5, np.array([[True, False], [False, True]]), 0.75, None)
    evaluation = ({"pass_at_1": 0.5, "pass_at_k_s": {"2": 0.25}}, {"greedy_correct": np.array([True, False])})
    calls = []
    first = phases.IterationPhases(tmp_path, "bstar+prm", 2, "abc")
    assert first.kept() == []
    assert first.search(lambda: calls.append("search") or choice) is choice
    pool = first.pool(lambda: calls.append("pool") or _pool())
    assert first.selection(lambda: calls.append("selection") or selection) is selection
    assert first.evaluation(lambda: calls.append("evaluation") or evaluation) is evaluation
    assert calls == ["search", "pool", "selection", "evaluation"]

    again = phases.IterationPhases(tmp_path, "bstar+prm", 2, "abc")
    assert again.kept() == ["evaluation", "pool", "search", "selection"]
    back = again.search(_never)
    assert (back.temperature, back.threshold, back.balance_score) == (0.9, 0.5, 0.4)
    assert back.table.temperatures == table.temperatures and back.table.thresholds == table.thresholds
    np.testing.assert_array_equal(back.table.balance_score, table.balance_score)
    kept_pool = again.pool(_never)
    assert kept_pool.samples.texts.tolist() == pool.samples.texts.tolist()
    np.testing.assert_array_equal(kept_pool.test_pass_fraction, pool.test_pass_fraction)  # the code task's too
    kept = again.selection(_never)
    assert (kept.threshold, kept.precision, kept.recall) == (0.5, 0.75, None)
    np.testing.assert_array_equal(kept.selected, selection.selected)
    row, per_problem = again.evaluation(_never)
    assert row == evaluation[0] and per_problem.keys() == {"greedy_correct"}
    np.testing.assert_array_equal(per_problem["greedy_correct"], evaluation[1]["greedy_correct"])


def test_a_choice_without_a_search_round_trips_and_another_config_recomputes(tmp_path):
    first = phases.IterationPhases(tmp_path, "online_rft", 1, "abc")
    first.search(lambda: Choice(1.0, 0.0))
    back = phases.IterationPhases(tmp_path, "online_rft", 1, "abc").search(_never)
    assert back == Choice(1.0, 0.0, None, None)
    changed = phases.IterationPhases(tmp_path, "online_rft", 1, "other")
    with pytest.raises(AssertionError, match="computed again"):
        changed.search(_never)
