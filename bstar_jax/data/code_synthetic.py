"""Synthetic programming problems for the CPU demo of the coding domain: short, regular, many correct programs.

Each problem asks for one short function over a list of integers, a string or an integer
(sum the multiples of d, count the items above t, scale and shift a list, running sums, largest
minus smallest, count letters, reverse the words, replace a letter, clip, keep a range, an
arithmetic series, digit sums, powers modulo m), with a parameter drawn from a seed, five
call-based tests (the first an edge case: an empty list or string, or n = 0) and a reference
program. Every family has several correct programs (a generator, a list comprehension, a loop,
`filter`/`map`, a closed form, ...) and each can be written with other variable names, so the
distinct-programs diversity (docs/code.md#diversity) has something to measure.

    Return the sum of the numbers in xs that are divisible by 3.

    ```python
    def sum_multiples(xs):
    ```

    Use Call-Based format

    # Answer

    ```python
    def sum_multiples(xs):
        return sum(x for x in xs if x % 3 == 0)
    ```

The expected outputs come from plain Python functions here, never from running a program text.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import random
import string
from typing import Any, Callable

from bstar_jax.data.code_format import code_question, extract_program, format_code_response
from bstar_jax.core import streams
from bstar_jax.data.records import CodeTests, Example

SPLITS = ("test", "dev", "train")  # generation order: test and dev stay fixed as n_train grows
TESTS_PER_PROBLEM = 5
SEPARATORS = (" ", "-", ",", "+", "_", "/", ".", ":", ";", "|", "*")
WORDS = ("red", "sun", "map", "cat", "tree", "blue", "road", "fish", "moon", "king", "salt", "wind")


@dataclasses.dataclass(frozen=True)
class Family:
    """One kind of problem: its function, parameters, statement, reference and correct programs.

    `programs` are function bodies with "{v}" for the loop variable (its other spellings give
    text variants that normalise to the same program) and the parameters as named fields.
    """
    fn: str
    arg: str  # "xs" (list of int), "s" (string), "n" (int)
    space: Callable[[], list[dict[str, Any]]]  # every parameter setting: one question each
    statement: Callable[..., str]
    reference: Callable[..., Callable[[Any], Any]]
    programs: Callable[..., tuple[str, ...]]
    names: tuple[str, ...] = ("x", "v")
    header: str = ""  # module-level lines some programs need (an import)


def _signed(a: int, b: int, var: str = "{v}") -> str:
    """"{var} * a + b" written with "- |b|" for a negative b."""
    return f"{var} * {a} + {b}" if b >= 0 else f"{var} * {a} - {-b}"


_CMP = {">": ("greater than", lambda x, t: x > t), "<": ("less than", lambda x, t: x < t),
        "==": ("equal to", lambda x, t: x == t)}

FAMILIES: dict[str, Family] = {f.fn: f for f in (
    Family("sum_multiples", "xs",
           lambda: [dict(d=d, op=op) for d in range(2, 10) for op in ("==", "!=")],
           lambda d, op: f"Return the sum of the numbers in xs that are {'' if op == '==' else 'not '}"
                         f"divisible by {d}.",
           lambda d, op: lambda xs: sum(x for x in xs if (x % d == 0) == (op == "==")),
           lambda d, op: (f"return sum({{v}} for {{v}} in xs if {{v}} % {d} {op} 0)",
                          f"return sum([{{v}} for {{v}} in xs if {{v}} % {d} {op} 0])",
                          f"total = 0\nfor {{v}} in xs:\n    if {{v}} % {d} {op} 0:\n        total += {{v}}\n"
                          f"return total",
                          f"return sum(filter(lambda {{v}}: {{v}} % {d} {op} 0, xs))")),
    Family("count_if", "xs",
           lambda: [dict(op=op, t=t) for op in _CMP for t in range(-5, 16)],
           lambda op, t: f"Return how many numbers in xs are {_CMP[op][0]} {t}.",
           lambda op, t: lambda xs: sum(1 for x in xs if _CMP[op][1](x, t)),
           lambda op, t: (f"return sum(1 for {{v}} in xs if {{v}} {op} {t})",
                          f"return len([{{v}} for {{v}} in xs if {{v}} {op} {t}])",
                          f"count = 0\nfor {{v}} in xs:\n    if {{v}} {op} {t}:\n        count += 1\nreturn count",
                          f"return sum({{v}} {op} {t} for {{v}} in xs)")
           + ((f"return xs.count({t})",) if op == "==" else ())),
    Family("scale_shift", "xs",
           lambda: [dict(a=a, b=b) for a in range(2, 10) for b in range(-9, 10) if b],
           lambda a, b: f"Return a list with each number x of xs replaced by {_signed(a, b, 'x')}.",
           lambda a, b: lambda xs: [x * a + b for x in xs],
           lambda a, b: (f"return [{_signed(a, b)} for {{v}} in xs]",
                         f"return list(map(lambda {{v}}: {_signed(a, b)}, xs))",
                         f"out = []\nfor {{v}} in xs:\n    out.append({_signed(a, b)})\nreturn out",
                         f"return [{b} + {a} * {{v}} for {{v}} in xs]")),
    Family("running_sums", "xs",
           lambda: [dict(s=s) for s in range(-9, 21)],
           lambda s: f"Return the running sums of xs starting from {s}: item i is {s} plus xs[0] + ... + xs[i].",
           lambda s: lambda xs: list(itertools.accumulate(xs, initial=s))[1:],
           lambda s: (f"total = {s}\nout = []\nfor {{v}} in xs:\n    total += {{v}}\n    out.append(total)\nreturn out",
                      f"return [{s} + sum(xs[:i + 1]) for i in range(len(xs))]",
                      f"return list(itertools.accumulate(xs, initial={s}))[1:]"),
           names=("x", "y"), header="import itertools\n\n\n"),
    Family("spread", "xs",
           lambda: [dict(z=z) for z in range(-9, 10)],
           lambda z: f"Return the largest number in xs minus the smallest, or {z} when xs is empty.",
           lambda z: lambda xs: max(xs) - min(xs) if xs else z,
           lambda z: (f"return max(xs) - min(xs) if xs else {z}",
                      f"if not xs:\n    return {z}\nreturn max(xs) - min(xs)",
                      f"if not xs:\n    return {z}\n{{v}} = sorted(xs)\nreturn {{v}}[-1] - {{v}}[0]"),
           names=("ys", "order")),
    Family("count_letters", "s",
           lambda: [dict(cs="".join(cs)) for k in (1, 2) for cs in itertools.combinations(string.ascii_lowercase, k)],
           lambda cs: (f"Return how many times the letter '{cs}' occurs in s." if len(cs) == 1
                       else f"Return how many characters of s are '{cs[0]}' or '{cs[1]}'."),
           lambda cs: lambda s: sum(1 for ch in s if ch in cs),
           lambda cs: (f"return s.count('{cs}')", f"return sum(1 for {{v}} in s if {{v}} == '{cs}')",
                       f"count = 0\nfor {{v}} in s:\n    if {{v}} == '{cs}':\n        count += 1\nreturn count",
                       f"return len([{{v}} for {{v}} in s if {{v}} == '{cs}'])") if len(cs) == 1 else
                      (f"return s.count('{cs[0]}') + s.count('{cs[1]}')",
                       f"return sum(1 for {{v}} in s if {{v}} in '{cs}')",
                       f"count = 0\nfor {{v}} in s:\n    if {{v}} == '{cs[0]}' or {{v}} == '{cs[1]}':\n"
                       f"        count += 1\nreturn count",
                       f"return len([{{v}} for {{v}} in s if {{v}} in ('{cs[0]}', '{cs[1]}')])"),
           names=("ch", "c")),
    Family("reverse_words", "s",
           lambda: [dict(sep=sep) for sep in SEPARATORS],
           lambda sep: f"Return the words of s (separated by single spaces) in reverse order, joined by '{sep}'.",
           lambda sep: lambda s: sep.join(reversed(s.split())),
           lambda sep: (f"return '{sep}'.join(reversed(s.split()))",
                        f"return '{sep}'.join(s.split()[::-1])",
                        f"out = []\nfor {{v}} in s.split():\n    out.insert(0, {{v}})\nreturn '{sep}'.join(out)"),
           names=("w", "word")),
    Family("replace_letter", "s",
           lambda: [dict(a=a, b=b) for a, b in itertools.permutations(string.ascii_lowercase, 2)],
           lambda a, b: f"Return s with every '{a}' replaced by '{b}'.",
           lambda a, b: lambda s: s.replace(a, b),
           lambda a, b: (f"return s.replace('{a}', '{b}')",
                         f"return ''.join('{b}' if {{v}} == '{a}' else {{v}} for {{v}} in s)",
                         f"out = ''\nfor {{v}} in s:\n    out += '{b}' if {{v}} == '{a}' else {{v}}\nreturn out"),
           names=("ch", "c")),
    Family("clip", "xs",
           lambda: [dict(lo=lo, hi=lo + w) for lo in range(-5, 6) for w in range(1, 11)],
           lambda lo, hi: f"Return xs with every number below {lo} raised to {lo} and every number above {hi} "
                          f"lowered to {hi}.",
           lambda lo, hi: lambda xs: [min(max(x, lo), hi) for x in xs],
           lambda lo, hi: (f"return [min(max({{v}}, {lo}), {hi}) for {{v}} in xs]",
                           f"return [max({lo}, min({{v}}, {hi})) for {{v}} in xs]",
                           f"return [{lo} if {{v}} < {lo} else {hi} if {{v}} > {hi} else {{v}} for {{v}} in xs]",
                           f"out = []\nfor {{v}} in xs:\n    out.append(min(max({{v}}, {lo}), {hi}))\nreturn out")),
    Family("keep_range", "xs",
           lambda: [dict(lo=lo, hi=lo + w) for lo in range(-5, 11) for w in range(10)],
           lambda lo, hi: f"Return the numbers of xs from {lo} to {hi} inclusive, in their order.",
           lambda lo, hi: lambda xs: [x for x in xs if lo <= x <= hi],
           lambda lo, hi: (f"return [{{v}} for {{v}} in xs if {lo} <= {{v}} <= {hi}]",
                           f"return [{{v}} for {{v}} in xs if {{v}} >= {lo} and {{v}} <= {hi}]",
                           f"return list(filter(lambda {{v}}: {lo} <= {{v}} <= {hi}, xs))",
                           f"out = []\nfor {{v}} in xs:\n    if {lo} <= {{v}} <= {hi}:\n        out.append({{v}})\n"
                           f"return out")),
    Family("series", "n",
           lambda: [dict(a=a, b=b) for a in range(1, 10) for b in range(-9, 10)],
           lambda a, b: f"Return the sum of {_signed(a, b, 'i')} for i from 1 to n.",
           lambda a, b: lambda n: sum(i * a + b for i in range(1, n + 1)),
           lambda a, b: (f"return sum({_signed(a, b)} for {{v}} in range(1, n + 1))",
                         f"total = 0\nfor {{v}} in range(1, n + 1):\n    total += {_signed(a, b)}\nreturn total",
                         f"return {a} * n * (n + 1) // 2 + {b} * n"),
           names=("i", "k")),
    Family("digit_sum", "n",
           lambda: [dict(k=k) for k in range(1, 10)],
           lambda k: f"Return the sum of the digits of n, times {k}.",
           lambda k: lambda n: sum(int(d) for d in str(n)) * k,
           lambda k: (f"return sum(int({{v}}) for {{v}} in str(n)) * {k}",
                      f"return {k} * sum(map(int, str(n)))",
                      f"total = 0\nwhile n > 0:\n    total += n % 10\n    n //= 10\nreturn total * {k}"),
           names=("d", "ch")),
    Family("power_mod", "n",
           lambda: [dict(a=a, m=m) for a in range(2, 10) for m in range(5, 21)],
           lambda a, m: f"Return {a} to the power n, modulo {m}.",
           lambda a, m: lambda n: pow(a, n, m),
           lambda a, m: (f"return pow({a}, n, {m})", f"return {a} ** n % {m}",
                         f"result = 1\nfor {{v}} in range(n):\n    result = result * {a} % {m}\nreturn result % {m}"),
           names=("_", "i")),
)}


def _inputs(family: Family, params: dict[str, Any], rng: random.Random) -> list[Any]:
    """TESTS_PER_PROBLEM arguments: an edge case first, then random ones."""
    if family.arg == "xs":
        return [[]] + [[rng.randint(-9, 20) for _ in range(rng.randint(1, 7))]
                       for _ in range(TESTS_PER_PROBLEM - 1)]
    if family.arg == "n":
        top = 99999 if family.fn == "digit_sum" else 15
        return [0] + [rng.randint(1, top) for _ in range(TESTS_PER_PROBLEM - 1)]
    if family.fn == "reverse_words":
        return [""] + [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
                       for _ in range(TESTS_PER_PROBLEM - 1)]
    # letters of the problem are likely in the test strings, so the counts are not all zero
    letters = "".join(v for k, v in sorted(params.items()) if k in ("cs", "a", "b")) + "xyzq"
    return [""] + ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))
                   for _ in range(TESTS_PER_PROBLEM - 1)]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One synthetic programming problem: a family, its parameters and its test arguments."""
    family: str
    params: tuple[tuple[str, Any], ...]
    args: tuple[Any, ...]

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    def question(self) -> str:
        """The question text: statement, signature fenced, "Use Call-Based format"."""
        f = self.spec
        return code_question(f.statement(**dict(self.params)), f"def {f.fn}({f.arg}):", f.fn)

    def tests(self) -> CodeTests:
        """Call-based tests: each input the argument list, each output the reference's value."""
        reference = self.spec.reference(**dict(self.params))
        return CodeTests.make([[a] for a in self.args], [reference(a) for a in self.args], self.spec.fn)

    def programs(self) -> list[str]:
        """Every correct program text: each body, each spelling of its variable; canonical first."""
        f = self.spec
        texts = {}
        for body in f.programs(**dict(self.params)):
            for name in f.names:
                code = body.format(v=name)
                head = f.header if "itertools." in code else ""
                texts[head + f"def {f.fn}({f.arg}):\n" + "\n".join("    " + line for line in code.split("\n"))] = None
        return list(texts)


def capacity() -> int:
    """The number of distinct questions over all families (1,862)."""
    return sum(len(f.space()) for f in FAMILIES.values())


def make_problem(rng: random.Random, remaining: dict[str, list[dict[str, Any]]] | None = None) -> Problem:
    """Draw one problem: a family uniformly (among those with settings left), then one of its
    parameter settings, which is taken out of `remaining` (every setting when None)."""
    remaining = {fn: f.space() for fn, f in FAMILIES.items()} if remaining is None else remaining
    fn = rng.choice([name for name in sorted(remaining) if remaining[name]])
    params = remaining[fn].pop(rng.randrange(len(remaining[fn])))
    return Problem(fn, tuple(sorted(params.items())), tuple(_inputs(FAMILIES[fn], params, rng)))


def to_example(problem: Problem, id: str) -> Example:
    """The problem as a code `Example` with its canonical program; family and parameters in meta."""
    program = problem.programs()[0]
    meta = (("family", problem.family), ("params", json.dumps(dict(problem.params), sort_keys=True)))
    return Example(id=id, question=problem.question(), solution=format_code_response(program),
                   answer=program, task="code", meta=meta, tests=problem.tests())


def make_splits(seed: int = 0, n_train: int = 1000, n_dev: int = 64, n_test: int = 128) -> dict[str, list[Example]]:
    """Deterministic {"train", "dev", "test"} splits with no question in two splits.

    Each split draws from its own stream seeded by (seed, split name), test first, then dev,
    then train, without replacement; so test and dev do not change with n_train. There are
    `capacity()` (1,862) distinct questions in all.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if min(sizes.values()) < 0:
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if sum(sizes.values()) > capacity():
        raise ValueError(f"code_synthetic has {capacity()} distinct problems, too few for {sizes}")
    remaining = {fn: f.space() for fn, f in FAMILIES.items()}  # drawn without replacement
    out = {}
    for split in SPLITS:
        rng = streams.python_random("bstar-code-synthetic", seed, split)
        out[split] = [to_example(make_problem(rng, remaining), f"code-synthetic-{split}-{i}")
                      for i in range(sizes[split])]
    return out


def problem_of(example: Example) -> Problem:
    """The `Problem` behind a code_synthetic example (from its meta and tests)."""
    meta = dict(example.meta)
    if meta.get("family") not in FAMILIES or example.tests is None:
        raise ValueError(f"{example.id} is not a code_synthetic example")
    params = tuple(sorted(json.loads(meta["params"]).items()))
    return Problem(meta["family"], params, tuple(a[0] for a in example.tests.as_dict()["inputs"]))


def alternative_solutions(example: Example, n: int | None = None, seed: int = 0) -> list[str]:
    """Distinct correct solutions (responses) of a code_synthetic example: the canonical first.

    `n` caps the count (a seeded sample of the others); None = all.
    """
    solutions = [format_code_response(p) for p in problem_of(example).programs()]
    others = solutions[1:]
    if n is not None:
        rng = streams.python_random("bstar-code-synthetic-alternatives", seed)
        others = rng.sample(others, min(max(n - 1, 0), len(others)))
    return solutions[:1] + others


def with_alternatives(examples: list[Example], n_per_problem: int, seed: int = 0) -> list[Example]:
    """Each example repeated with `n_per_problem` distinct solutions; ids get "/{j}" (0 = canonical)."""
    out = []
    for i, ex in enumerate(examples):
        for j, sol in enumerate(alternative_solutions(ex, n_per_problem, seed + i)):
            out.append(dataclasses.replace(ex, id=f"{ex.id}/{j}", solution=sol, answer=extract_program(sol)))
    return out
