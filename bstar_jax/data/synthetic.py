"""Synthetic shopping word problems for the CPU demo: short, regular, many valid solutions.

A shopper buys k kinds of item (quantity x unit price), then either pays with a bill (answer:
the change) or uses a coupon (answer: the price paid). A solution has one step per item, each
with a GSM8K calculator tag for the cost and, after the first, one for the running total,
then a final step; k + 1 = 3..5 steps. The items can be summed in any of k! orders and each
product written either way round, so correct solutions differ in their equations and the
distinct-equations diversity metric (paper §2.2) has something to measure.

    Ann buys 3 pens at 4 each and 2 cups at 5 each. Ann pays with 30. How much change does
    Ann get?

    Pens cost <<3*4=12>>12.\\n\\nCups cost <<2*5=10>>10, total <<12+10=22>>22.\\n\\n
    Change is <<30-22=8>>8.\\n\\n# Answer\\n\\n8
"""
from __future__ import annotations

import dataclasses
import itertools
import random
import re
from typing import Sequence

from bstar_jax.text import format as fmt
from bstar_jax.core import streams
from bstar_jax.data.records import Example

NAMES = ("Ann", "Ben", "Cal", "Dot", "Eve", "Max", "Sam", "Zoe")
ITEMS = ("pen", "cup", "hat", "book", "bag", "toy", "cake", "ball")
# difficulty -> number of item kinds (steps = kinds + 1), quantity range, unit-price range
DIFFICULTY = {
    1: dict(kinds=2, quantity=(2, 5), price=(2, 9)),
    2: dict(kinds=3, quantity=(2, 9), price=(2, 9)),
    3: dict(kinds=4, quantity=(2, 9), price=(2, 19)),
}
SPLITS = ("test", "dev", "train")  # generation order: test and dev stay fixed as n_train grows


@dataclasses.dataclass(frozen=True)
class Problem:
    """One shopping problem; `kind` is "change" (pays with `amount`) or "coupon" (`amount` off)."""
    name: str
    items: tuple[tuple[str, int, int], ...]  # (item, quantity, unit price)
    kind: str
    amount: int

    @property
    def total(self) -> int:
        return sum(q * p for _, q, p in self.items)

    @property
    def answer(self) -> int:
        return self.amount - self.total if self.kind == "change" else self.total - self.amount

    def question(self) -> str:
        """The problem text."""
        parts = [f"{q} {item}s at {p} each" for item, q, p in self.items]
        bought = ", ".join(parts[:-1]) + " and " + parts[-1]
        if self.kind == "change":
            tail = f"{self.name} pays with {self.amount}. How much change does {self.name} get?"
        else:
            tail = f"{self.name} has a coupon for {self.amount} off. How much does {self.name} pay?"
        return f"{self.name} buys {bought}. {tail}"

    def solution(self, order: Sequence[int] | None = None, flips: Sequence[bool] | None = None) -> str:
        """A correct solution summing items in `order`, writing price*quantity where `flips`."""
        order = range(len(self.items)) if order is None else order
        flips = [False] * len(self.items) if flips is None else flips
        steps, running = [], None
        for i in order:
            item, q, p = self.items[i]
            a, b = (p, q) if flips[i] else (q, p)
            step = f"{item.capitalize()}s cost <<{a}*{b}={q * p}>>{q * p}"
            if running is None:
                running = q * p
                steps.append(step + ".")
            else:
                new = running + q * p
                steps.append(step + f", total <<{running}+{q * p}={new}>>{new}.")
                running = new
        t, m = self.total, self.amount
        if self.kind == "change":
            steps.append(f"Change is <<{m}-{t}={m - t}>>{m - t}.")
        else:
            steps.append(f"With the coupon <<{t}-{m}={t - m}>>{t - m}.")
        return fmt.format_response(steps, str(self.answer))


_QUESTION = re.compile(
    r"(\w+) buys (.+)\. \1 (?:pays with (\d+)\. How much change does \1 get\?"
    r"|has a coupon for (\d+) off\. How much does \1 pay\?)")
_ITEM = re.compile(r"(\d+) (\w+)s at (\d+) each")


def parse_question(question: str) -> Problem:
    """Inverse of `Problem.question`; ValueError if the text is not a synthetic problem."""
    m = _QUESTION.fullmatch(question.strip())
    if not m:
        raise ValueError(f"not a synthetic shopping problem: {question!r}")
    items = tuple((item, int(q), int(p)) for q, item, p in _ITEM.findall(m.group(2)))
    if m.group(3) is not None:
        return Problem(m.group(1), items, "change", int(m.group(3)))
    return Problem(m.group(1), items, "coupon", int(m.group(4)))


def make_problem(rng: random.Random, difficulty: int = 2) -> Problem:
    """Draw one problem; the answer is always a positive integer."""
    if difficulty not in DIFFICULTY:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTY)}, got {difficulty}")
    d = DIFFICULTY[difficulty]
    items = tuple((item, rng.randint(*d["quantity"]), rng.randint(*d["price"]))
                  for item in rng.sample(ITEMS, d["kinds"]))
    total = sum(q * p for _, q, p in items)
    if rng.random() < 0.5:
        return Problem(rng.choice(NAMES), items, "change", (total // 10 + 1 + rng.randint(0, 2)) * 10)
    return Problem(rng.choice(NAMES), items, "coupon", rng.randint(1, min(9, total - 1)))


def to_example(problem: Problem, id: str) -> Example:
    """The problem as an `Example` with its canonical solution (question order, quantity*price)."""
    return Example(id=id, question=problem.question(), solution=problem.solution(),
                   answer=str(problem.answer), task="gsm8k")


def make_splits(seed: int = 0, n_train: int = 1000, n_dev: int = 64, n_test: int = 128,
                difficulty: int = 2) -> dict[str, list[Example]]:
    """Deterministic {"train", "dev", "test"} splits with no question in two splits.

    Each split draws from its own stream seeded by (seed, split name), test first, then dev,
    then train, skipping questions already drawn; so test and dev do not change with n_train.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if min(sizes.values()) < 0:
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    seen: set[str] = set()
    out = {}
    for split in SPLITS:
        rng = streams.python_random("bstar-synthetic", seed, split, difficulty)
        examples, tries = [], 0
        while len(examples) < sizes[split]:
            tries += 1
            if tries > 100 * sizes[split] + 1000:
                raise ValueError(f"difficulty {difficulty} has too few distinct problems for {sizes}")
            problem = make_problem(rng, difficulty)
            if problem.question() not in seen:
                seen.add(problem.question())
                examples.append(to_example(problem, f"synthetic-{split}-{len(examples)}"))
        out[split] = examples
    return out


def alternative_solutions(question: str | Example, n: int | None = None, seed: int = 0) -> list[str]:
    """Distinct correct solutions of a synthetic problem: the canonical one first, then others.

    Alternatives reorder the partial sums (k! orders) and swap product operands (2^k); all end
    with the same answer. `n` caps the count (a seeded sample of the alternatives); None = all.
    """
    problem = parse_question(question.question if isinstance(question, Example) else question)
    k = len(problem.items)
    texts = dict.fromkeys(problem.solution(order, flips)
                          for order in itertools.permutations(range(k))
                          for flips in itertools.product((False, True), repeat=k))
    canonical = problem.solution()
    others = [t for t in texts if t != canonical]
    if n is not None:
        rng = streams.python_random("bstar-synthetic-alternatives", seed)
        others = rng.sample(others, min(max(n - 1, 0), len(others)))
    return [canonical] + others


def with_alternatives(examples: Sequence[Example], n_per_problem: int, seed: int = 0) -> list[Example]:
    """Each example repeated with `n_per_problem` distinct solutions (SFT data with mixed orders).

    Ids get a suffix "/{j}"; j = 0 is the canonical solution.
    """
    out = []
    for i, ex in enumerate(examples):
        for j, sol in enumerate(alternative_solutions(ex, n_per_problem, seed + i)):
            out.append(dataclasses.replace(ex, id=f"{ex.id}/{j}", solution=sol))
    return out
