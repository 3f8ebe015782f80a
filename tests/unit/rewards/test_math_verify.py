"""answer_check="math_verify": math-verify's MATH equivalence in a pool of worker processes.

Agreement with the Hendrycks/PRM800K grader on the verifier's own table, the answers only
math-verify gets right, and the pool: deadlines, crashes, recycling, order and worker count.
"""
import threading
import time

import numpy as np
import pytest

from bstar_jax.rewards import math_verify_pool, verify
from bstar_jax.rewards.deadline_pool import DeadlinePool
from tests.unit.rewards.test_verify import ADVERSARIAL, CASES, R

MATH_CASES = [c for c in CASES if c[2] == "math"]

# Where math-verify and the normalised grader part ways on the table, and which is right.
DISAGREE = {
    # PRM800K's rule that an unreduced fraction never matches a reduced one is a grading
    # convention, not mathematics: 2/4 is 1/2, and the question asks for a value. math-verify is right.
    (R("2/4"), "\\frac12"): True,
}

# (prediction, gold, math-verify's verdict): equal values written differently, which the string
# normalisation cannot see (it says False to every True here), and near misses it must still refuse.
BEYOND_NORMALISATION = [
    ("\\frac14", "0.25", True),  # decimals and fractions (normalised: only 0.5 = \frac12)
    ("\\frac{3}{4}", "0.75", True),
    ("x \\in (1, 2]", "(1,2]", True),  # intervals, written as a membership
    ("(1,2]", "(1,2)", False),
    ("\\{1,2\\}", "\\{2,1\\}", True),  # sets are unordered
    ("\\{1,2\\}", "\\{1,3\\}", False),
    ("2, 1", "1, 2", True),  # "all solutions" lists
    ("\\frac{1+x}{2}", "\\frac{x+1}{2}", True),  # symbolic equality
    ("x^2+2x+1", "(x+1)^2", True),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("10^{3}", "1000", True),
    ("0.333", "\\frac13", False),  # 6 decimals must agree
    ("(2,1)", "(1,2)", False),  # tuples stay ordered
    ("(-\\infty, 3)", "(-\\infty, 3]", False),
]

# The brief's four: right under both graders where the normaliser already handles them.
BOTH_RIGHT = [("\\frac12", "0.5"), ("x = 2", "2"), ("(1, 2]", "(1,2]")]


@pytest.fixture(scope="module")
def pools():
    """A 1-worker and a 2-worker pool, shut down after the module."""
    one, two = math_verify_pool.make_pool(1), math_verify_pool.make_pool(2)
    yield one, two
    one.close()
    two.close()


def test_agrees_with_the_normaliser_on_the_verifier_table(pools):
    responses, golds, expected = [], [], []
    for response, gold, _, normalized, _ in MATH_CASES:
        responses.append(response)
        golds.append(gold)
        expected.append(DISAGREE.get((response, gold), normalized))
    assert len(responses) >= 30
    got = verify.are_correct(responses, golds, "math", mode="math_verify", pool=pools[1])
    wrong = [(r, g, e) for r, g, e, x in zip(responses, golds, expected, got) if e != x]
    assert not wrong


@pytest.mark.parametrize("prediction,gold,expected", BEYOND_NORMALISATION)
def test_right_where_the_normaliser_is_not(pools, prediction, gold, expected):
    assert verify.are_correct([R(prediction)], [gold], "math", mode="math_verify", pool=pools[0]) == [expected]
    if expected:
        assert not verify.is_correct(R(prediction), gold, "math")


@pytest.mark.parametrize("prediction,gold", BOTH_RIGHT)
def test_single_item_is_correct_uses_the_shared_pool(prediction, gold):
    assert verify.is_correct(R(prediction), gold, "math", mode="math_verify")
    assert verify.is_correct(R(prediction), gold, "math")
    assert not verify.is_correct(R(prediction), "7", "math", mode="math_verify")


def test_same_results_in_input_order_for_one_and_two_workers(pools):
    pairs = [(R(p), g) for p, g, _ in BEYOND_NORMALISATION] + [(c[0], c[1]) for c in MATH_CASES]
    pairs = pairs + pairs[::-1]  # duplicates are graded once and copied back in place
    responses, golds = zip(*pairs)
    one = verify.are_correct(responses, golds, "math", mode="math_verify", pool=pools[0])
    two = verify.are_correct(responses, golds, "math", mode="math_verify", pool=pools[1])
    assert one == two
    assert one == one[:len(pairs) // 2] + one[:len(pairs) // 2][::-1]
    assert 0 < sum(one) < len(one)


def test_works_from_a_worker_thread(pools):
    """math-verify's own timeouts use signal.alarm, which fails (False) outside the main thread;
    the pool calls it in its workers' main threads, so a grading thread gets real verdicts."""
    out = []
    thread = threading.Thread(target=lambda: out.append(verify.are_correct(
        [R("\\frac14"), R("3")], ["0.25", "4"], "math", mode="math_verify", pool=pools[0])))
    thread.start()
    thread.join(60)
    assert out == [[True, False]]


def test_a_stuck_item_is_graded_wrong_and_the_rest_still_graded():
    """9^(9^9) has 370 million digits: math-verify works on it far past the pool's deadline (its
    own alarm is set later here, so that the pool's kill is what stops it)."""
    with math_verify_pool.make_pool(1, item_timeout_s=2.0, mv_timeout_s=60) as pool:
        answers = [("\\frac14", "0.25"), ("9^{9^{9}}", "2"), ("x = 2", "2"), ("\\{1,2\\}", "\\{2,1\\}")]
        start = time.perf_counter()
        got = math_verify_pool.answers_equivalent(answers, pool=pool)
        elapsed = time.perf_counter() - start
        assert got == [True, False, True, True]
        assert pool.stats["timeouts"] == 1 and pool.stats["workers_started"] == 2
    assert elapsed < 30, "the stuck item was not cut at its deadline"


def test_deadlines_crashes_errors_and_recycling():
    """The pool on its own, with `eval` as the function: items that hang, kill their worker or
    raise fail alone; every other item is right, in input order."""
    items = ["1 + 1", "__import__('time').sleep(60)", "2 * 3", "__import__('os')._exit(3)",
             "1 / 0", "'ok'"] + [f"{i} ** 2" for i in range(6)]
    with DeadlinePool(eval, workers=2, item_timeout_s=2.0, max_items_per_worker=3, failed="x") as pool:
        got = pool.map(items)
        again = pool.map(items[:1] + items[2:3])
    assert got == [2, "x", 6, "x", "x", "ok"] + [i ** 2 for i in range(6)]
    assert again == [2, 6]
    assert pool.stats["timeouts"] == 1 and pool.stats["crashes"] == 1 and pool.stats["errors"] == 1
    assert pool.stats["workers_started"] >= 5  # 2 replaced after a failure, the others every 3 items


def test_batch_deadline_fails_what_is_left():
    with DeadlinePool(eval, workers=1, item_timeout_s=30.0, failed=None) as pool:
        got = pool.map(["1", "__import__('time').sleep(60)", "3"], batch_timeout_s=1.0)
    assert got == [1, None, None]
    assert pool.stats["batch_timeouts"] == 1


def test_rollout_grades_a_pool_in_one_trip(monkeypatch):
    from bstar_jax.bstar import rollout

    calls = []
    real = math_verify_pool.answers_equivalent
    monkeypatch.setattr(math_verify_pool, "answers_equivalent", lambda pairs, **kw: calls.append(pairs) or real(pairs, **kw))
    texts = np.array([[[R("0.25"), R("\\frac14"), "no answer"], [R("\\{2,1\\}"), R("\\{1,3\\}"), R("\\{1,2\\}")]]] * 2,
                     dtype=object)
    correct, valid = rollout.grade(texts, ["\\frac{1}{4}", "\\{1,2\\}"], "math", "math_verify")
    assert correct.tolist() == [[[True, True, False], [True, False, True]]] * 2
    assert valid.tolist() == [[[True, True, False], [True, True, True]]] * 2
    # one pool call, with every answered sample whose answer is not the gold's own string
    assert len(calls) == 1 and len(calls[0]) == 8


def test_mode_and_config_checks(mesh1):
    from bstar_jax.config import check as config_check
    from configs import gsm8k, math

    with pytest.raises(ValueError, match="math_verify.*'gsm8k'"):
        verify.is_correct(R("5"), "5", "gsm8k", mode="math_verify")
    config_check.validate_fields(math.get_config(None), mesh1)
    c = gsm8k.get_config(None)
    c.answer_check = "math_verify"
    with pytest.raises(config_check.ConfigValueError, match="config.answer_check='math_verify'.*task='gsm8k'"):
        config_check.validate_fields(c, mesh1)
    c.answer_check = "fuzzy"
    with pytest.raises(config_check.ConfigValueError, match="normalized, exact, math_verify"):
        config_check.validate_fields(c, mesh1)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_finishes_quickly_on_adversarial_text(name):
    """test_verify.py's 100,000-character texts: the extraction is linear, an answer over
    MAX_ANSWER_CHARS is compared as a string, and any comparison is cut at the pool's deadline."""
    text = ADVERSARIAL[name]
    verify._extract.cache_clear()
    start = time.perf_counter()
    verify.is_correct(text, text, "math", mode="math_verify")
    verify.is_correct(text, "18", "math", mode="math_verify")
    verify.are_correct([text, text[::-1]], [text[::-1], "\\frac12"], "math", mode="math_verify")
    assert time.perf_counter() - start < 1.0 + 3 * math_verify_pool.ITEM_TIMEOUT_S, f"{name} is unbounded"
