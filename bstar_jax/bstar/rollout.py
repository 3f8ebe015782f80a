"""Rollout: sample a set of queries, grade and reward the responses, give each text an id.

The [T, Q, K] pools the search, the selection and the evaluation read. Generate (`grid.sample`:
compiled sampler calls over chunks of queries, every temperature of the grid in each, continuous
batching across chunks: docs/models.md#sampler-calls-in-a-run), then grade: the
final-answer verifier gives `correct` and the answer-format check gives `valid` (samples without
the answer block are never selected, docs/algorithm.md#selection); then reward with Eq. 1, or
Eq. 2 when a PRM scores the responses (`rewards.combined_reward`, the one place it is computed).
The coding task grades by unit tests in the sandbox instead (`score_code`, code_reward.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from bstar_jax.core import distributed
from bstar_jax.generate import grid
from bstar_jax.generate.grid import GridSamples
from bstar_jax.rewards import combined_reward, verify

# GridSamples and the questions -> float32 [T, Q, K] min step score (raw PRM logit, before / 5).
PRMScorer = Callable[[GridSamples, Sequence[str]], np.ndarray]


@dataclasses.dataclass
class Pool:
    """K responses per query at each temperature, with ground truth and rewards; arrays [T, Q, K]."""

    samples: GridSamples
    correct: np.ndarray  # bool: final answer equals the reference (ground truth)
    valid: np.ndarray  # bool: has the answer block (selectable)
    text_id: np.ndarray  # int32: equal within a query iff the response texts are identical
    prm_min: np.ndarray | None  # float32: min step score (None without a PRM)
    reward: np.ndarray  # float32: training reward, Eq. 1 or Eq. 2
    test_pass_fraction: np.ndarray | None = None  # float32: share of unit tests passed (code task only)

    @property
    def texts(self) -> np.ndarray:
        return self.samples.texts


def text_ids(texts_TxQxK: np.ndarray) -> np.ndarray:
    """int32 [T, Q, K]: ids equal within a (T, Q) row iff the strings are identical."""
    out = np.zeros(texts_TxQxK.shape, np.int32)
    for t in range(texts_TxQxK.shape[0]):
        for q in range(texts_TxQxK.shape[1]):
            seen: dict[str, int] = {}
            out[t, q] = [seen.setdefault(s, len(seen)) for s in texts_TxQxK[t, q]]
    return out


@distributed.decided_on_writer
def grade(texts_TxQxK: np.ndarray, golds: Sequence[str], task: str, answer_check: str):
    """(correct, valid) bool [T, Q, K] from the verifier, the whole pool in one `are_correct` call
    (with answer_check "math_verify", one trip through its process pool). Graded by the writer,
    every process gets its verdicts: math-verify's time limits make a verdict depend on the clock."""
    T, Q, K = texts_TxQxK.shape
    texts = [texts_TxQxK[t, q, k] for t in range(T) for q in range(Q) for k in range(K)]
    golds_TQK = [golds[q] for t in range(T) for q in range(Q) for k in range(K)]
    correct = np.asarray(verify.are_correct(texts, golds_TQK, task, mode=answer_check), bool)
    valid = np.asarray([verify.has_answer_format(text, task) for text in texts], bool)
    return correct.reshape(T, Q, K), valid.reshape(T, Q, K)


def score(samples: GridSamples, questions: Sequence[str], golds: Sequence[str], *, task: str, answer_check: str,
          prm_scorer: PRMScorer | None = None) -> Pool:
    """Grades and rewards sampled responses (Eq. 1, or Eq. 2 when a PRM scorer is given)."""
    correct, valid = grade(samples.texts, golds, task, answer_check)
    prm_min = None if prm_scorer is None else np.asarray(prm_scorer(samples, questions), np.float32)
    return Pool(samples=samples, correct=correct, valid=valid, text_id=text_ids(samples.texts), prm_min=prm_min,
                reward=combined_reward(correct, prm_min))


def score_code(samples: GridSamples, tests: Sequence, grader) -> Pool:
    """Grades sampled programs by their problems' unit tests (`code_reward.CodeGrader`): correct =
    every test passes, reward Eq. 1 of that, valid = a program could be extracted."""
    if grader is None:
        raise ValueError("the code task grades programs in a sandbox: pass grader=code_reward.CodeGrader(...)")
    g = grader.grade(samples.texts, tests)
    return Pool(samples=samples, correct=g.correct, valid=g.valid, text_id=text_ids(samples.texts), prm_min=None,
                reward=combined_reward(g.correct), test_pass_fraction=g.pass_fraction)


def rollout(policy, tokenizer, examples, *, temperatures: Sequence[float], num_samples: int, rng, config,
            mesh=None, prm_scorer: PRMScorer | None = None, grader=None) -> Pool:
    """K samples of each example (`data.Example`) at each temperature, graded and rewarded; a
    code task's by unit tests through `grader` (a `code_reward.CodeGrader`)."""
    questions = [e.question for e in examples]
    samples = grid.sample(policy, tokenizer, questions, temperatures=temperatures, num_samples=num_samples,
                          rng=rng, sampling_config=config.sampling, mesh=mesh)
    if config.task == "code":
        return score_code(samples, [e.tests for e in examples], grader)
    return score(samples, questions, [e.solution for e in examples], task=config.task,
                 answer_check=config.answer_check, prm_scorer=prm_scorer)
