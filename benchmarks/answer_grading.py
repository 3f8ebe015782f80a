"""Grading speed: math-verify in its process pool vs the Hendrycks/PRM800K normaliser, on one batch.

A batch of MATH-style responses (default 500, all distinct so that nothing is graded twice):
each has a few reasoning steps and a `# Answer` block whose answer is the gold written another way
(`\\dfrac{3}{4}` for `\\frac34`, `0.75`, `x = 5`, a reordered set, an expanded polynomial ...) or a
near miss (another number, an open end of an interval, a reordered tuple). Both graders get the
same `verify.are_correct` call: answer_check "math_verify" (one trip through a pool of
--workers processes, started and warmed before the clock starts; its start is printed apart)
and "normalized" (in-process, caches cleared). Each grader's accuracy against the generator's
label is printed too: the labels are ours, so read them as a sanity check, not a benchmark.
Last, math-verify's same comparisons in this process, one after another, with no pool: the
pool's speed-up, and a check that it changes no verdict.

    python benchmarks/answer_grading.py [--items 500] [--workers 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]


def _fraction(rng):
    b = rng.choice([2, 4, 5, 8, 3, 7])
    a = rng.randrange(1, 4 * b)
    while a % b == 0:
        a += 1
    gold = f"\\frac{{{a}}}{{{b}}}"
    same = [f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\frac{{{2 * a}}}{{{2 * b}}}"]
    if b in (2, 4, 5, 8):
        same.append(f"{a / b:g}")
    return gold, same, [f"\\frac{{{a + 1}}}{{{b}}}", f"{a / b + 0.01:g}"]


def _integer(rng):
    n = rng.randrange(2, 100_000)
    return str(n), [f"{n:,}", f"x = {n}", f"{n}.0", f"{n}\\text{{ units}}"], [str(n + 1), f"{n}0"]


def _radical(rng):
    k, m = rng.randrange(2, 9), rng.choice([2, 3, 5, 6, 7])
    return (f"{k}\\sqrt{{{m}}}", [f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt{m}", f"\\sqrt{{{m}}}\\cdot {k}"],
            [f"{k + 1}\\sqrt{{{m}}}", f"\\sqrt{{{k * m}}}"])


def _interval(rng):
    a = rng.randrange(-20, 10)
    b = a + rng.randrange(1, 15)
    gold = f"({a}, {b}]"
    return gold, [f"\\left({a},{b}\\right]", f"x \\in ({a}, {b}]"], [f"({a}, {b})", f"[{a}, {b}]"]


def _set(rng):
    xs = rng.sample(range(-9, 20), 3)
    gold = "\\{" + ", ".join(map(str, xs)) + "\\}"
    return (gold, ["\\{" + ", ".join(map(str, xs[::-1])) + "\\}", ", ".join(map(str, xs[1:] + xs[:1]))],
            ["\\{" + ", ".join(map(str, xs[:2] + [xs[2] + 1])) + "\\}"])


def _tuple(rng):
    a, b = rng.randrange(-9, 20), rng.randrange(-9, 20)
    while b == a:
        b += 1
    return f"({a}, {b})", [f"\\left( {a}, {b} \\right)", f"({a},{b})"], [f"({b}, {a})"]


def _polynomial(rng):
    r = rng.randrange(1, 9)
    return (f"x^2 + {2 * r}x + {r * r}", [f"(x+{r})^2", f"x^2+{2 * r}x+{r * r}", f"{r * r} + {2 * r}x + x^2"],
            [f"(x-{r})^2", f"x^2 + {r}x + {r * r}"])


def _pi(rng):
    k = rng.randrange(2, 13)
    return f"\\frac{{\\pi}}{{{k}}}", [f"\\pi/{k}", f"\\dfrac{{\\pi}}{{{k}}}", f"\\frac{{1}}{{{k}}}\\pi"], [f"\\frac{{\\pi}}{{{k + 1}}}"]


def _degrees(rng):
    d = rng.randrange(10, 180)
    return str(d), [f"{d}^\\circ", f"{d}^{{\\circ}}"], [f"{d + 10}^\\circ"]


KINDS = [_fraction, _integer, _radical, _interval, _set, _tuple, _polynomial, _pi, _degrees]
STEPS = "Let the unknown be $x$ and write the condition as an equation.\n\nSolving it step by step gives the value below."


def make_batch(n: int, seed: int):
    """n distinct (response, gold, label) triples: label True iff the answer is the gold's value."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        gold, same, other = rng.choice(KINDS)(rng)
        label = rng.random() < 0.6
        answer = rng.choice(same if label else other)
        response = f"{STEPS} (variant {len(out)})\n\n# Answer\n\n{answer}"
        if (answer, gold) not in seen:
            seen.add((answer, gold))
            out.append((response, gold, label))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from bstar_jax.rewards import math_verify_pool, verify

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    batch = make_batch(args.items, args.seed)
    responses, golds, labels = zip(*batch)

    start = time.perf_counter()
    pool = math_verify_pool.make_pool(args.workers)
    verify.are_correct([f"# Answer\n\n{i}" for i in range(args.workers * 4)], ["1"] * args.workers * 4,
                       "math", mode="math_verify", pool=pool)  # start and warm every worker
    started = time.perf_counter() - start

    start = time.perf_counter()
    ours = verify.are_correct(responses, golds, "math", mode="math_verify", pool=pool)
    ours_s = time.perf_counter() - start
    pool.close()

    verify._extract.cache_clear()
    verify.answers_match.cache_clear()
    start = time.perf_counter()
    ref = verify.are_correct(responses, golds, "math", mode="normalized")
    ref_s = time.perf_counter() - start

    # the same comparisons without the pool: one process, its main thread (math-verify's alarms work)
    pairs = [(verify.extract_answer(r, "math"), verify.answer_of_reference(g, "math")) for r, g in zip(responses, golds)]
    start = time.perf_counter()
    alone = [p[0].strip() == p[1].strip() or math_verify_pool.equivalent(p) for p in pairs]
    alone_s = time.perf_counter() - start

    def accuracy(got):
        return sum(g == lab for g, lab in zip(got, labels)) / len(labels)

    assert alone == ours, "the pool changed a verdict"
    print(f"load average at the end {os.getloadavg()[0]:.1f}; pool start + warm-up ({args.workers} workers): "
          f"{started:.2f} s; pool stats {pool.stats}")
    print(f"accuracy against the generator's labels: math_verify {accuracy(ours):.3f} | "
          f"normalized {accuracy(ref):.3f}; graders agree on {sum(a == b for a, b in zip(ours, ref))} of {len(batch)}")
    n = len(batch)
    ours_rate, ref_rate, alone_rate = n / ours_s, n / ref_s, n / alone_s
    print(f"grading {n} MATH answers: ours (math_verify, {args.workers}-worker pool) {ours_rate:.1f} items/s | "
          f"reference (normalized, in-process) {ref_rate:.0f} items/s | ratio {ours_rate / ref_rate:.4f}")
    print(f"math_verify on {n} answers: ours ({args.workers}-worker pool) {ours_rate:.1f} items/s | "
          f"reference (in-process, one thread) {alone_rate:.1f} items/s | ratio {ours_rate / alone_rate:.2f}")


if __name__ == "__main__":
    main()
