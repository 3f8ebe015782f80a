"""Final-answer verification (the official graders): one table of (response, gold) pairs."""
import random

import pytest

from bstar_jax.rewards.math_normalize import hendrycks_normalize, latex_to_text, prm800k_normalize
from bstar_jax.rewards.verify import (
    answer_of_reference,
    answers_match,
    extract_answer,
    has_answer_format,
    is_correct,
    last_boxed,
)

STEPS = "First we add the numbers.\n\nThen we simplify."


def R(answer: str) -> str:
    """A response in the PRM800K step format (docs/algorithm.md)."""
    return STEPS + "\n\n# Answer\n\n" + answer


GSM_SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
MATH_SOLUTION = "We have $x^2 = 3/4$, so $x = \\boxed{\\frac{\\sqrt3}{2}}$."
FORMATTED_SOLUTION = "Halve it.\n\n# Answer\n\n\\frac{1}{2}"

# (response, gold, task, correct under "normalized", correct under "exact")
CASES = [
    # gsm8k: commas, $, units, .0, trailing ".", negatives, fractions, #### marker
    (R("1,234"), "So... \n#### 1234", "gsm8k", True, False),
    (R("$18"), "#### 18", "gsm8k", True, False),
    (R("18 dollars"), "18", "gsm8k", True, False),
    (R("18.0"), "18", "gsm8k", True, False),
    (R("18."), "18", "gsm8k", True, False),
    (R("-3"), "#### -3", "gsm8k", True, True),
    (R("\u22125"), "-5", "gsm8k", True, False),
    (R("5"), "-5", "gsm8k", False, False),
    (R("3/4"), "0.75", "gsm8k", True, False),
    (R("$\\frac{1}{2}$ of a pie"), "0.5", "gsm8k", True, False),
    (R("$1,234.50"), "1234.5", "gsm8k", True, False),
    (R("1,000,000"), "1000000", "gsm8k", True, False),
    (R("12"), "120", "gsm8k", False, False),
    (R("120"), "#### 12", "gsm8k", False, False),
    (R("17.6"), "18", "gsm8k", False, False),  # no rounding to an integer (module docstring)
    (R("2/0"), "2", "gsm8k", False, False),
    (STEPS + "\n#### 72", GSM_SOLUTION, "gsm8k", True, False),  # no "# Answer" block: exact fails
    (R("72"), GSM_SOLUTION, "gsm8k", True, True),
    # math: the two normalisations of the PRM800K grader
    (R("0.5"), "\\frac12", "math", True, False),
    (R("0.5"), "\\frac{1}{2}", "math", True, False),
    (R("0.5"), "\\frac{1}{3}", "math", False, False),
    (R("\\dfrac{1}{2}"), "\\frac{1}{2}", "math", True, False),
    (R("\\frac{1}{2}"), "\\frac{1}{2}", "math", True, True),
    (R("2/4"), "\\frac12", "math", False, False),  # fractions must match exactly
    (R("-\\frac{1}{2}"), "\\frac{-1}{2}", "math", True, False),
    (R("\\left( 1, 2 \\right)"), "(1,2)", "math", True, False),
    (R("(2,1)"), "(1,2)", "math", False, False),
    (R("[1,2)"), "(1,2)", "math", False, False),
    (R("(-\\infty, 3)"), "(-\\infty, 3]", "math", False, False),
    (R("(0.5, 2)"), "\\left(\\frac{1}{2}, 2\\right)", "math", True, False),  # element-wise
    (R("5\\text{ cm}"), "5", "math", True, False),
    (R("30^\\circ"), "30", "math", True, False),
    (R("30^{\\circ}"), "30", "math", True, False),
    (R("50\\%"), "50", "math", True, False),
    (R("50%"), "50", "math", True, False),
    (R("x = 5"), "5", "math", True, False),
    (R("\\$12.50"), "12.50", "math", True, False),
    (R("10,000"), "10000", "math", True, False),
    (R("\\text{Monday}"), "Monday", "math", True, False),
    (R("\\sin x"), "\\cos x", "math", False, False),
    (R("2\\pi"), "\\pi", "math", False, False),
    (R("\\frac{1+x}{2}"), "1+\\frac{x}{2}", "math", False, False),
    (R("\\boxed{\\frac{\\sqrt{3}}{2}}"), MATH_SOLUTION, "math", True, False),
    (STEPS + " Hence $\\boxed{\\frac{\\sqrt{3}}{2}}$.", MATH_SOLUTION, "math", True, False),
    (R("0.5"), FORMATTED_SOLUTION, "math", True, False),
    (R("\\frac{1}{2}"), FORMATTED_SOLUTION, "math", True, True),
    (R("5</s>"), "5", "math", True, True),  # cut at EOS
    (R("5  \n"), "5", "math", True, True),  # trailing whitespace only
    (R("5.0"), "5", "math", True, False),
    # arc: the official regex, "# Answer" blocks, case-insensitive
    (STEPS + " Final answer: (B)", "B", "arc", True, True),
    (STEPS + " Final answer: b", "(B)", "arc", True, True),
    (STEPS + " Final answer: [D]", "A", "arc", False, False),
    (R("(C)"), "c", "arc", True, False),
    (R("C"), "C", "arc", True, False),
    (STEPS + " Final answer: (A). Wait. Final answer: (B)", "B", "arc", True, False),
    ("Final answer: The answer is C", "T", "arc", False, True),  # the official regex reads "T"
    ("Final answer: The answer is C", "C", "arc", False, False),
    ("Final answer: (3)", "3", "arc", True, False),  # digit-keyed ARC items
    # no answer at all: incorrect, never an exception
    (STEPS, "5", "math", False, False),
    (STEPS, "#### 5", "gsm8k", False, False),
    (STEPS, "B", "arc", False, False),
    ("", "5", "math", False, False),
    (R(""), "5", "math", False, False),
    (R("</s>"), "5", "gsm8k", False, False),
    (R("\\boxed{\\frac{1}{2"), "\\frac12", "math", False, False),  # truncated
    (R("seven"), "7", "gsm8k", False, False),
    (None, "5", "math", False, False),
    (R("5"), None, "math", False, False),
    # bytes: invalid UTF-8 is replaced, not fatal
    (b"Step \xff one.\n\n# Answer\n\n5", "5", "math", True, True),
    (b"Step one.\n\n# Answer\n\n\xff", "5", "math", False, False),
    (b"Step one.\n\n# Answer\n\n1,000\xfe", b"#### 1000", "gsm8k", True, False),
    (R("72"), 72, "gsm8k", True, True),
]


@pytest.mark.parametrize("response,gold,task,normalized,exact", CASES)
def test_table(response, gold, task, normalized, exact):
    assert is_correct(response, gold, task) is normalized
    assert is_correct(response, gold, task, mode="exact") is exact


def test_table_covers_the_brief():
    assert len(CASES) >= 40
    for task in ("gsm8k", "math", "arc"):
        rows = [c for c in CASES if c[2] == task]
        assert any(c[3] for c in rows) and any(not c[3] for c in rows)
    assert any(c[3] and not c[4] for c in CASES)  # normalised equal, exact unequal


@pytest.mark.parametrize("text,task,expected", [
    (R("$18 dollars."), "gsm8k", "$18 dollars"),
    (STEPS + "\n#### 1,234\n\nextra text", "gsm8k", "1,234"),
    (R("1") + "\n\n#### 2", "gsm8k", "2"),  # the later marker wins
    (R("\\boxed{\\frac{1}{\\sqrt{2}}}"), "math", "\\frac{1}{\\sqrt{2}}"),
    (R("$x^2$"), "math", "x^2"),
    (R("5") + "\n\n# Question\n\nNext problem", "math", "5"),
    (R("3") + "<|endoftext|>\n\n# Answer\n\n4", "math", "3"),
    (STEPS + " so $\\boxed{\\left\\{1, \\{2\\}\\right\\}}$ and done", "math",
     "\\left\\{1, \\{2\\}\\right\\}"),
    (STEPS + "\n\n# answer: 7", "math", "7"),
    (STEPS + " Final answer: (c)", "arc", "C"),
    (R("[d]"), "arc", "D"),
    (STEPS, "math", None),
    (None, "arc", None),
])
def test_extract_answer(text, task, expected):
    assert extract_answer(text, task) == expected


@pytest.mark.parametrize("gold,task,expected", [
    (GSM_SOLUTION, "gsm8k", "72"),
    ("1,000", "gsm8k", "1,000"),
    (MATH_SOLUTION, "math", "\\frac{\\sqrt3}{2}"),
    (FORMATTED_SOLUTION, "math", "\\frac{1}{2}"),
    ("(1, 2]", "math", "(1, 2]"),
    ("(b)", "arc", "B"),
    ("Because... Final answer: (A)", "arc", "A"),
    ("", "math", None),
    (None, "gsm8k", None),
])
def test_answer_of_reference(gold, task, expected):
    assert answer_of_reference(gold, task) == expected


@pytest.mark.parametrize("text,task,expected", [
    (R("5"), "math", True),
    (STEPS + "\n# Answer\n5", "math", False),  # the official separator only
    (STEPS + " \\boxed{5}", "math", False),
    (STEPS + "\n#### 5", "gsm8k", True),
    (STEPS + "\n#### 5", "math", False),
    (STEPS + " ####", "gsm8k", False),
    (STEPS + " Final answer: (B)", "arc", True),
    (STEPS, "arc", False),
    (None, "math", False),
    (b"\xff\n\n# Answer\n\n\xfe", "math", True),
])
def test_has_answer_format(text, task, expected):
    assert has_answer_format(text, task) is expected


def test_answers_match_compares_extracted_answers():
    assert answers_match("\\dfrac{1}{2}", "0.5", "math")
    assert not answers_match("(1,2)", "(2,1)", "math")
    assert answers_match("$1,000", "1000", "gsm8k")
    assert answers_match("b", "(B)", "arc")
    assert not answers_match("", "B", "arc")


def test_normalizers():
    assert hendrycks_normalize("\\frac12") == "\\frac{1}{2}"
    assert hendrycks_normalize("\\sqrt3") == "\\sqrt{3}"
    assert hendrycks_normalize("\\text{ (A) }") == "(A)"
    assert hendrycks_normalize("k = \\tfrac{3}{4}") == "\\frac{3}{4}"
    assert hendrycks_normalize("3/4") == "\\frac{3}{4}"
    assert prm800k_normalize("\\text{Yes}") == "yes"
    assert prm800k_normalize("5 \\text{ or } 6") == "5,6"
    assert prm800k_normalize("3 million") == "3*10^6"
    assert prm800k_normalize("12 centimeters") == "12"
    assert prm800k_normalize("2.000") == "2"
    assert prm800k_normalize("3\\frac{1}{2}") == "3+1/2"
    assert latex_to_text("\\frac{a+1}{\\sqrt[3]{b}}") == "(a+1)/(root(3)sqrt(b))"
    assert latex_to_text("\\left. x \\right|") == "x |"


def test_last_boxed():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("$\\boxed 7$") == "7"
    assert last_boxed("\\fbox{x}") == "x"
    assert last_boxed("\\boxed{oops") is None
    assert last_boxed("nothing") is None


def test_unknown_task_or_mode_raises():
    with pytest.raises(ValueError, match=r"'apps'.*gsm8k, math, arc"):
        is_correct(R("5"), "5", "apps")
    with pytest.raises(ValueError, match="apps"):
        extract_answer(R("5"), "apps")
    with pytest.raises(ValueError, match="fuzzy"):
        is_correct(R("5"), "5", "math", mode="fuzzy")


def test_never_raises_on_junk():
    rng = random.Random(0)
    alphabet = "0123456789{}()[]\\$%^_/.,=- \n#abxAnswerfrac boxed sqrt text left right"
    pieces = ["\\frac", "\\boxed{", "\\sqrt", "\\text{ ", "\\left(", "}", "{", "# Answer",
              "\n\n# Answer\n\n", "####", "Final answer:", "\\", "1,000", "^\\circ", "%"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
                       for _ in range(rng.randint(0, 40)))
        gold = "".join(rng.choice(pieces + list(alphabet)) for _ in range(rng.randint(0, 10)))
        for task in ("gsm8k", "math", "arc"):
            for mode in ("normalized", "exact"):
                assert is_correct(text, gold, task, mode=mode) in (True, False)
                assert is_correct(text.encode() + b"\xff", gold, task, mode=mode) in (True, False)
            has_answer_format(text, task)
            extract_answer(text, task)
    deep = "{" * 5000 + "1" + "}" * 5000
    assert is_correct(R("\\frac" + deep + "{2}"), "\\frac12", "math") in (True, False)
    assert not is_correct(R("1" + "0" * 5000), "1", "gsm8k")  # beyond int() digit limits


# --------------------------------------------------------------------------- bounded time

_N = 100_000
_A = "\n\n# Answer\n\n"
ADVERSARIAL = {
    "frac_spaces": "# Answer\n\n\\frac{" + " " * _N + "1",
    "frac_spaces_open": _A + "\\frac{" + " " * _N + "1}{",
    "digits": _A + "1" * _N,
    "digit_fraction": _A + "1" * (_N // 2) + "/" + "2" * (_N // 2),
    "dotted_digits": _A + "1." * (_N // 2),
    "hashes": "#" * _N,
    "hash_spaces": "# " * (_N // 2),
    "answer_headings": "# Answer " * (_N // 9),
    "open_braces": _A + "{" * _N,
    "nested_braces": _A + "{" * (_N // 2) + "}" * (_N // 2),
    "boxed_repeated": "\\boxed{" * (_N // 7),
    "boxed_nested": _A + "\\boxed{" * (_N // 16) + "}" * (_N // 16),
    "dollars": _A + "$" * _N,
    "thousands_commas": _A + "1,000" * (_N // 5),
    "spaces": _A + " " * _N + "x",
    "final_answer_repeated": "Final answer: " * (_N // 14),
    "final_answer_spaces": "final answer" + " " * _N + "x",
    "fracs": _A + "\\frac{1}{2}" * (_N // 11),
    "sqrt": _A + "\\sqrt" * (_N // 5),
    "left": _A + "\\left(" * (_N // 6),
    "units": _A + "cm" * (_N // 2),
    "mixed_numbers": _A + "1 " * (_N // 2),
    "text_macros": _A + "\\text{" * (_N // 6),
    "eos_prefixes": "</s" * (_N // 3),
    "tuple": _A + "(" + "1," * (_N // 2) + ")",
}


@pytest.mark.parametrize("task", ["gsm8k", "math", "arc"])
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_checkers_finish_quickly_on_adversarial_text(name, task):
    """Every checker is linear in the text: 100,000 adversarial characters take well under a
    second (a regex with ambiguous quantifiers took minutes on `frac_spaces` at 4,000)."""
    import time

    from bstar_jax.rewards import verify
    from bstar_jax.rewards.math_normalize import math_answers_equal

    text = ADVERSARIAL[name]
    verify._extract.cache_clear()
    verify.answers_match.cache_clear()
    start = time.perf_counter()
    extract_answer(text, task)
    is_correct(text, text, task)
    is_correct(text, "18", task)
    is_correct(text, text, task, mode="exact")
    has_answer_format(text, task)
    math_answers_equal(text, text[::-1])
    assert time.perf_counter() - start < 1.0, f"{name} ({task}) is not linear-time"
