"""MATH answer equivalence by Hugging Face's math-verify, in a pool of worker processes.

`answer_check="math_verify"` (docs/algorithm.md#answer-graders). verify.py isolates the final
answer of the response and of the gold with the project's own extraction (the text after the last
`# Answer` heading, or the last `\\boxed{}`; `verify.extract_answer`), so a response that does not
commit to an answer is wrong in every mode. This module then compares the two answers with
math-verify: each is parsed as `\\boxed{answer}` with its LaTeX and plain-expression extraction
(`LatexExtractionConfig`, `ExprExtractionConfig`; the string itself is kept as a fallback), and
`math_verify.verify(gold, prediction)` compares them: numerically (`\\frac12` = `0.5` = `2/4`),
symbolically (`\\frac{1+x}{2}` = `\\frac{x+1}{2}`), as sets (`\\{1,2\\}` = `\\{2,1\\}`), intervals
(`(1, 2]`) and assignments (`x = 2` vs `2`).

math-verify times itself out with `signal.alarm`, which works only in a main thread (in a worker
thread every call fails, i.e. is graded wrong), and cannot interrupt work stuck inside C code. So
the comparisons run in a `DeadlinePool` of processes, one pair per call in the worker's main
thread: math-verify's own alarm (`MV_TIMEOUT_S` per parse and per comparison) stops the usual slow
cases, the pool's per-item deadline kills a worker stuck beyond it (a warning names the pair),
and either way the pair is graded wrong. Pairs are deduplicated before they are sent (a question's K samples
often share an answer), and results are in input order whatever the number of workers.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from typing import Sequence

from bstar_jax.rewards.deadline_pool import DeadlinePool

# math-verify's own alarm per parse / comparison (whole seconds: signal.alarm). A slow legitimate
# comparison (expanding a polynomial) takes ~0.4 s on a quiet 2-core CPU; 3 s leaves room for load.
MV_TIMEOUT_S = 3
# The pool's deadline per pair: a parse of each side and the comparison that matters, each up to
# MV_TIMEOUT_S, plus slack; the kill is the backstop for work no alarm can stop (stuck in C code).
ITEM_TIMEOUT_S = 15.0
MAX_ITEMS_PER_WORKER = 2000  # sympy's caches grow with every expression a worker sees
# Batch deadline: base + per pair and worker. A pair takes 5-500 ms (benchmarks/answer_grading.py:
# ~16 pairs/s on 2 loaded cores), so this leaves about 8x slack before a batch is cut short.
BATCH_BASE_S, BATCH_PER_ITEM_S = 60.0, 1.0
MAX_WORKERS = 32  # grading runs while the accelerators wait; a TPU host has CPUs to spare
# Imported once by the fork server that starts the workers. "__main__" too: a worker started by
# multiprocessing imports the parent's main script (run.py) unless the server already has, so a
# script that grades with "math_verify" must keep its top level import-safe (`if __name__ ==
# "__main__":`), as with any multiprocessing start method other than fork.
# The last one runs a comparison, so that every worker starts with math-verify's parsers built.
PRELOAD = ("__main__", "bstar_jax.rewards.math_verify_pool", "math_verify", "bstar_jax.rewards.math_verify_warm")


def default_workers() -> int:
    """Worker processes of the shared pool: the CPUs this process may run on, at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


# --------------------------------------------------------------------------- in a worker


@functools.lru_cache(maxsize=4096)
def _parse(answer: str, timeout_s: int):
    """math-verify's parse of one extracted answer (a gold repeats for each of its samples)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse("\\boxed{" + answer + "}", [LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=timeout_s)


def equivalent(pair: tuple[str, str], mv_timeout_s: int = MV_TIMEOUT_S) -> bool:
    """math-verify's verdict on (prediction, gold), two extracted answers; runs in a worker.

    Called in the worker's main thread, so math-verify's alarms work; a parse or comparison that
    passes mv_timeout_s (whole seconds) is False.
    """
    from math_verify import verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeouts are graded wrong here
    prediction, gold = pair
    return bool(verify(_parse(gold, mv_timeout_s), _parse(prediction, mv_timeout_s),
                       timeout_seconds=mv_timeout_s))


# --------------------------------------------------------------------------- in the parent


def make_pool(workers: int | None = None, *, item_timeout_s: float = ITEM_TIMEOUT_S,
              mv_timeout_s: int = MV_TIMEOUT_S, max_items_per_worker: int = MAX_ITEMS_PER_WORKER) -> DeadlinePool:
    """A pool that grades (prediction, gold) pairs with `equivalent`; failed pairs are False.

    workers: default `default_workers()`. item_timeout_s: the pool's deadline per pair.
    mv_timeout_s: math-verify's own per-step alarm.
    """
    fn = functools.partial(equivalent, mv_timeout_s=int(mv_timeout_s))
    return DeadlinePool(fn, workers=workers or default_workers(), item_timeout_s=item_timeout_s,
                        max_items_per_worker=max_items_per_worker, failed=False,
                        preload=PRELOAD)


_shared: DeadlinePool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> DeadlinePool:
    """The process-wide pool, started on first use and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = make_pool()
            atexit.register(_shared.close)
        return _shared


def batch_timeout_s(n_pairs: int, workers: int) -> float:
    """The default deadline of a batch of n_pairs: BATCH_BASE_S + BATCH_PER_ITEM_S per pair and worker."""
    return BATCH_BASE_S + BATCH_PER_ITEM_S * n_pairs / max(1, workers)


def answers_equivalent(pairs: Sequence[tuple[str, str]], *, pool: DeadlinePool | None = None,
                       batch_timeout: float | None = None) -> list[bool]:
    """math-verify's verdict on each (prediction, gold) pair of extracted answers, in input order.

    Equal pairs are graded once. pool: default `shared_pool()`. batch_timeout: seconds for the
    whole batch (default `batch_timeout_s`); pairs left when it passes are False.
    """
    unique = list(dict.fromkeys(pairs))
    if not unique:
        return []
    pool = pool or shared_pool()
    if batch_timeout is None:
        batch_timeout = batch_timeout_s(len(unique), pool.workers)
    verdict = dict(zip(unique, pool.map(unique, batch_timeout_s=batch_timeout)))
    return [bool(verdict[p]) for p in pairs]
