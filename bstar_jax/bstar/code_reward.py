"""The coding task's reward in the loop: each sampled program run against its problem's unit tests
in the sandbox (docs/code.md#the-reward-in-the-loop).

A response is *valid* when a program can be read out of it (`data.code_format.extract_program`);
its reward is 1 when that program passes every test of its problem and 0 otherwise (the paper's
APPS reward, Eq. 1 with "correct" = all tests pass); the share of tests it passes is kept as a
metric (`test_pass_fraction`). A run holds one `CodeGrader`: one pool of sandbox workers
(`rewards.Sandbox`), started at the first grading and reused by every rollout of every variant,
closed when the run ends. Within one call a program repeated for the same problem (a policy
repeats itself, more so at low T and in greedy decoding) is run once and its grade shared.

A test's outcome depends on the clock (its time limit, the batch deadline), so with several
processes the writer alone runs the programs and every process takes its grades
(`distributed.decided_on_writer`): a program near its limit cannot pass on one host and fail on
another.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from bstar_jax.bstar import metrics
from bstar_jax.core import distributed
from bstar_jax.data.code_format import extract_program
from bstar_jax.data.records import CodeTests
from bstar_jax.rewards.distinct_programs import code_diversity, distinct_programs, program_ids  # noqa: F401
from bstar_jax.rewards.sandbox import Sandbox


@dataclasses.dataclass(frozen=True)
class CodeGrades:
    """Grades of a pool of responses, every array shaped like the texts ([..., Q, K])."""

    correct: np.ndarray  # bool: a program passed every test of its problem
    valid: np.ndarray  # bool: a program could be extracted
    pass_fraction: np.ndarray  # float32: tests passed / tests run (0.0 without a program)


class CodeGrader:
    """Grades sampled responses by unit tests in one reusable sandbox pool.

    `timeout_s` is each test's wall-clock limit, `batch_timeout_s` (0: none) the limit of one
    call's whole batch, after which the unfinished programs fail; `workers` sandbox workers
    (0: one per usable core). Use as a context manager or call `close()`.
    """

    def __init__(self, *, timeout_s: float = 4.0, batch_timeout_s: float = 0.0, workers: int = 0):
        self.timeout_s = float(timeout_s)
        self.batch_timeout_s = float(batch_timeout_s) or None
        self.workers = int(workers) or None
        self._sandbox: Sandbox | None = None
        self.programs_run = 0  # distinct (problem, program) pairs sent to the sandbox so far

    @property
    def sandbox(self) -> Sandbox:
        """The pool, started on first use."""
        if self._sandbox is None:
            self._sandbox = Sandbox(workers=self.workers)
        return self._sandbox

    @distributed.decided_on_writer
    def grade(self, texts, tests_per_query: Sequence[CodeTests]) -> CodeGrades:
        """Grades `texts` (object [..., Q, K]) against the tests of each of the Q queries; the
        results come back in the texts' order. Run by the writer; every process gets its grades
        (every process must call it)."""
        texts = np.asarray(texts, dtype=object)
        if texts.ndim < 2 or texts.shape[-2] != len(tests_per_query):
            raise ValueError(f"grade: texts of shape {texts.shape} but {len(tests_per_query)} test sets "
                             f"(the query axis is the second last)")
        flat = texts.reshape(-1, texts.shape[-2], texts.shape[-1])
        unique: dict[tuple[int, str], int] = {}  # (query, program) -> index into the batch
        where = np.full(flat.shape, -1, np.int64)
        for index in np.ndindex(flat.shape):
            program = extract_program(flat[index])
            if program is not None:
                where[index] = unique.setdefault((index[1], program), len(unique))
        batch = list(unique)
        results = self.sandbox.run([p for _, p in batch], [tests_per_query[q].as_dict() for q, _ in batch],
                                   timeout_s=self.timeout_s, batch_timeout_s=self.batch_timeout_s) if batch else []
        self.programs_run += len(batch)
        passed = np.array([r.passed for r in results] + [0], np.int64)  # the last: no program
        run = np.array([r.run for r in results] + [1], np.int64)
        lost = sum(o in ("lost", "skipped") for r in results for o in r.outcomes)
        if lost:
            logging.warning("code reward: %d test(s) lost or skipped (worker restart or batch deadline); "
                            "their programs fail them", lost)
        valid = where >= 0
        passed_x, run_x = passed[where], run[where]  # where = -1 picks the "no program" entry
        correct = valid & (run_x > 0) & (passed_x == run_x)
        fraction = np.where(valid, passed_x / np.maximum(run_x, 1), 0.0).astype(np.float32)
        shape = texts.shape
        return CodeGrades(correct.reshape(shape), valid.reshape(shape), fraction.reshape(shape))

    def close(self) -> None:
        """Stops the sandbox workers (a later `grade` starts a fresh pool)."""
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def grader_for(config) -> CodeGrader | None:
    """The run's grader when config.task is "code" (sized by config.code), else None."""
    if config.task != "code":
        return None
    c = config.code
    return CodeGrader(timeout_s=float(c.timeout_s), batch_timeout_s=float(c.batch_timeout_s), workers=int(c.workers))


def code_metrics(texts_QxK, correct_QxK, pass_fraction_QxK, s_values, *, mesh=None) -> dict:
    """The coding task's test metrics from K samples per query (docs/code.md#metrics):

    pass_at_k_s_programs  per S, the share of queries with at least S distinct correct programs
                          (Pass@K-S with programs compared after AST normalisation, not as text);
    distinct_programs     distinct correct programs per query, the mean over all queries;
    diversity             code diversity: the same mean over the queries with a correct one;
    eval_test_pass_fraction  the share of tests passed, the mean over samples.
    """
    correct = np.asarray(correct_QxK, bool)
    ids = program_ids(texts_QxK)
    counts = distinct_programs(ids, correct)
    some = correct.any(axis=1)
    return {
        "pass_at_k_s_programs": {str(s): float(np.mean(metrics.pass_at_k_s(correct, ids, int(s), mesh=mesh)))
                                 for s in s_values},
        "distinct_programs": float(counts.mean()),
        "diversity": float(counts[some].mean()) if some.any() else 0.0,
        "eval_test_pass_fraction": float(np.mean(pass_fraction_QxK)),
    }
