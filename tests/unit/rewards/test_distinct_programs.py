"""Program identity: normalisation by AST (docstrings, layout, local names) and the per-query distinct count."""
import numpy as np
import pytest

from bstar_jax.data import code_format, code_synthetic
from bstar_jax.rewards.distinct_programs import (MAX_PROGRAM_CHARS, code_diversity, distinct_programs,
                                                 normalize_program, program_ids)

LOOP = "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n"


def same(a: str, b: str) -> bool:
    return normalize_program(a) == normalize_program(b)


@pytest.mark.parametrize("other", [
    "def f(xs):\n    '''Sum.'''\n    acc = 0  # running\n\n    for v in xs:\n        acc += v\n    return acc\n",
    "def f(ys):\n    s = 0\n    for y in ys:\n        s += y\n    return (s)\n",  # parameter renamed too
    "def f(xs):\n    total = 0\n    for x in xs: total += x\n    return total",
])
def test_equal_up_to_layout_docstrings_and_local_names(other):
    assert same(LOOP, other)


@pytest.mark.parametrize("other", [
    "def f(xs):\n    total = 0\n    for x in xs:\n        total -= x\n    return total\n",  # operator
    "def f(xs):\n    return sum(xs)\n",  # another program
    "def g(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n",  # entry point
    "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return x\n",  # which local
    "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\nprint(f(xs=[1]))",
])
def test_different_programs_differ(other):
    assert not same(LOOP, other)


def test_renaming_follows_python_scopes():
    def check(equal, a, b):
        assert same(a, b) == equal, (a, b)

    # comprehensions, lambdas and nested functions have their own locals; a comprehension's first
    # iterable is read in the enclosing scope
    check(True, "def f(xs):\n    x = xs\n    return [x for x in x]",
          "def f(xs):\n    y = xs\n    return [z for z in y]")
    check(True, "def f(xs):\n    return list(filter(lambda x: x % 3 == 0, xs))",
          "def f(xs):\n    return list(filter(lambda v: v % 3 == 0, xs))")
    check(True, "def f():\n    c = 0\n    def inc():\n        nonlocal c\n        c += 1\n    inc()\n    return c",
          "def f():\n    z = 0\n    def up():\n        nonlocal z\n        z += 1\n    up()\n    return z")
    # a closure read of the enclosing local vs of a global: different
    check(False, "def f(xs):\n    k = 2\n    return [x * k for x in xs]",
          "def f(xs):\n    m = 2\n    return [x * k for x in xs]")
    # module-level names, `global` names and class attributes keep their spelling
    check(False, "n = 3\ndef f(x):\n    global n\n    n += x\n    return n",
          "m = 3\ndef f(x):\n    global m\n    m += x\n    return m")
    check(True, "x = 5\ndef f():\n    x = 1\n    def g():\n        global x\n        return x\n    return g()",
          "x = 5\ndef f():\n    y = 1\n    def g():\n        global x\n        return x\n    return g()")
    check(False, "class A:\n    k = 1\n    def f(self):\n        return self.k",
          "class A:\n    j = 1\n    def f(self):\n        return self.k")
    # a parameter some call names by keyword keeps its name
    check(False, "def f(a):\n    return a\nprint(f(a=1))", "def f(b):\n    return b\nprint(f(a=1))")
    # imports bound inside a function are locals: the alias is renamed with the name
    check(True, "def f(x):\n    import math\n    return math.sqrt(x)",
          "def f(x):\n    import math as m\n    return m.sqrt(x)")
    # a program that reads its locals by spelling, or binds in a comprehension with :=, is not renamed
    check(False, "def f():\n    a = 1\n    return locals()", "def f():\n    b = 1\n    return locals()")
    check(False, "def f(xs):\n    return [y := x for x in xs] and y", "def f(xs):\n    return [z := x for x in xs] and z")


def test_unparsable_and_huge_programs_compare_by_text():
    assert normalize_program("def f(:") == "text:def f(:" and not same("def f(:", "def f( :")
    huge = "x = 1\n" * (MAX_PROGRAM_CHARS // 6 + 1)
    assert normalize_program(huge) == "text:" + huge
    for deep in ("(" * 50_000 + ")" * 50_000, "x = " + "+".join(["a"] * 30_000), "f = " + "lambda: " * 5_000 + "1"):
        assert normalize_program(deep).startswith(("text:", "ast:"))  # no RecursionError escapes


def test_program_ids_rows_and_distinct_count():
    fence = lambda p: code_format.format_code_response(p)
    other = LOOP.replace("+=", "-=")
    responses = [[fence(LOOP), fence(LOOP.replace("total", "acc")), fence(other), "no program at all"],
                 [fence(other), "", "", fence(LOOP)]]
    ids = program_ids(responses)
    assert ids.dtype == np.int32 and ids.tolist() == [[0, 0, 1, 2], [0, 1, 1, 2]]
    correct = np.array([[True, True, True, False], [False, False, False, False]])
    assert distinct_programs(ids, correct).tolist() == [2, 0]
    assert distinct_programs(ids, np.ones_like(correct)).tolist() == [3, 3]
    assert code_diversity(responses, correct) == 2.0  # the query without a correct response is left out
    assert code_diversity(responses, np.zeros_like(correct)) == 0.0
    with pytest.raises(ValueError, match="same"):
        distinct_programs(ids, correct[:, :2])


def test_synthetic_alternatives_have_several_distinct_programs():
    examples = code_synthetic.make_splits(seed=0, n_train=40, n_dev=0, n_test=0)["train"]
    texts = [code_synthetic.alternative_solutions(e) for e in examples]
    counts = [int(distinct_programs(program_ids([t]), np.ones((1, len(t)), bool))[0]) for t in texts]
    assert min(counts) >= 3  # every problem has several correct programs
    assert all(c <= len(t) for c, t in zip(counts, texts)) and sum(counts) < sum(map(len, texts))  # renamings merge
