"""The code task's reward in the loop: grades in the texts' order, valid = a program was extracted,
reward 1 only when every test passes, the per-test pass fraction, repeated programs graded once,
the code metrics of evaluation, and the temperature-only search of the code and ARC tasks."""
import numpy as np
import pytest

from bstar_jax.bstar import code_reward, rollout, variants
from bstar_jax.data import CodeTests
from bstar_jax.data.code_format import format_code_response
from bstar_jax.generate.grid import GridSamples

DOUBLE = CodeTests.make([[1], [2], [5]], [2, 4, 10], "double")
UPPER = CodeTests.make([["ab"], [""]], ["AB", ""], "upper")

RIGHT = format_code_response("def double(x):\n    return 2 * x")
RIGHT_RENAMED = format_code_response("def double(y):\n    return 2 * y")
TWO_OF_THREE = format_code_response("def double(x):\n    return 4 if x == 2 else x + 1")  # passes x=1 and x=2
WRONG = format_code_response("def double(x):\n    return x")
UP = format_code_response("def upper(s):\n    return s.upper()")
NO_PROGRAM = "I do not know.\n\n# Answer\n\n"


@pytest.fixture(scope="module")
def grader():
    with code_reward.CodeGrader(timeout_s=2.0, workers=2) as g:
        yield g


def test_grades_come_back_in_order_with_the_pass_fraction(grader):
    texts = np.array([[[RIGHT, WRONG, TWO_OF_THREE, NO_PROGRAM], [UP, NO_PROGRAM, WRONG, UP]],
                      [[RIGHT_RENAMED, RIGHT, RIGHT, None], [WRONG, UP, UP, UP]]], dtype=object)
    before = grader.programs_run
    g = grader.grade(texts, [DOUBLE, UPPER])
    assert g.correct.shape == g.valid.shape == g.pass_fraction.shape == (2, 2, 4)
    np.testing.assert_array_equal(g.correct, [[[1, 0, 0, 0], [1, 0, 0, 1]], [[1, 1, 1, 0], [0, 1, 1, 1]]])
    np.testing.assert_array_equal(g.valid, [[[1, 1, 1, 0], [1, 0, 1, 1]], [[1, 1, 1, 0], [1, 1, 1, 1]]])
    np.testing.assert_allclose(g.pass_fraction[0, 0], [1.0, 0.0, 2 / 3, 0.0], rtol=1e-6)
    # WRONG for `upper` defines no `upper`: it fails both tests
    np.testing.assert_allclose(g.pass_fraction[0, 1], [1.0, 0.0, 0.0, 1.0])
    # distinct (query, program) pairs: double {RIGHT, WRONG, TWO_OF_THREE, RIGHT_RENAMED}, upper {UP, WRONG}
    assert grader.programs_run - before == 6


def test_a_pool_without_programs_runs_nothing_and_is_rewarded_zero(grader):
    before = grader.programs_run
    g = grader.grade(np.array([[["", NO_PROGRAM]]], dtype=object), [DOUBLE])
    assert grader.programs_run == before and not g.valid.any() and not g.correct.any()
    assert (g.pass_fraction == 0).all()
    with pytest.raises(ValueError, match="2 test sets"):
        grader.grade(np.array([[[RIGHT]]], dtype=object), [DOUBLE, UPPER])


def test_score_code_rewards_eq1_of_all_tests_passing(grader):
    texts = np.array([[[RIGHT, TWO_OF_THREE, RIGHT]]], dtype=object)
    samples = GridSamples(temperatures=np.float32([1.0]), texts=texts, tokens=np.zeros((1, 1, 3, 1), np.int32),
                          lengths=np.ones((1, 1, 3), np.int32), truncated=np.zeros((1, 1, 3), bool),
                          logprobs=np.zeros((1, 1, 3, 1), np.float32), prompt_ids=[[1]])
    pool = rollout.score_code(samples, [DOUBLE], grader)
    np.testing.assert_array_equal(pool.reward, np.float32([[[1, 0, 1]]]))
    np.testing.assert_array_equal(pool.text_id, [[[0, 1, 0]]])  # text ids stay exact-string
    assert pool.prm_min is None and pool.test_pass_fraction[0, 0, 1] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="grader"):
        rollout.score_code(samples, [DOUBLE], None)


def test_code_metrics_count_programs_not_strings():
    texts = np.array([[RIGHT, RIGHT_RENAMED, WRONG, RIGHT], [UP, WRONG, WRONG, WRONG]], dtype=object)
    correct = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)
    m = code_reward.code_metrics(texts, correct, np.full((2, 4), 0.5, np.float32), [1, 2])
    # RIGHT and RIGHT_RENAMED normalise to one program: no query has 2 distinct correct programs
    assert m["pass_at_k_s_programs"] == {"1": 1.0, "2": 0.0}
    assert m["distinct_programs"] == 1.0 and m["diversity"] == 1.0
    assert m["eval_test_pass_fraction"] == 0.5
    none = code_reward.code_metrics(texts, np.zeros((2, 4), bool), np.zeros((2, 4)), [1])
    assert none["diversity"] == 0.0 and none["distinct_programs"] == 0.0


def test_code_and_arc_search_the_temperature_only():
    for task in ("code", "arc"):
        assert variants.searches("bstar", "temperature", task)
        assert not variants.searches("bstar", "threshold", task)
    assert variants.searches("bstar", "threshold", "math") and variants.searches("bstar", "threshold")
    assert not variants.searches("online_rft", "temperature", "code")
