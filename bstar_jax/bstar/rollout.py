"""Rollout: sample a set of queries, grade and reward the responses, give each text an id.

The [T, Q, K] pools the search, the selection and the evaluation read. Generate (compiled
sampler calls over chunks of queries, every temperature of the grid in each, continuous batching
across chunks: docs/models.md#sampler-calls-in-a-run), then grade: the
final-answer verifier gives `correct` and the answer-format check gives `valid` (samples without
the answer block are never selected, docs/algorithm.md#selection); then reward with Eq. 1, or
Eq. 2 when a PRM scores the responses (`rewards.combined_reward`, the one place it is computed).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bstar_jax.core import preemption
from bstar_jax.generate import engine as continuous
from bstar_jax.rewards import combined_reward, verify
from bstar_jax.generate.grid import GridSamples, sample_grid

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


def grade(texts_TxQxK: np.ndarray, golds: Sequence[str], task: str, answer_check: str):
    """(correct, valid) bool [T, Q, K] from the verifier."""
    correct = np.zeros(texts_TxQxK.shape, bool)
    valid = np.zeros(texts_TxQxK.shape, bool)
    for q, gold in enumerate(golds):
        for t in range(texts_TxQxK.shape[0]):
            for k, text in enumerate(texts_TxQxK[t, q]):
                valid[t, q, k] = verify.has_answer_format(text, task)
                correct[t, q, k] = verify.is_correct(text, gold, task, mode=answer_check)
    return correct, valid


@dataclasses.dataclass(frozen=True)
class CallShape:
    """How `sample` cuts Q questions into sampler calls (docs/models.md#sampler-calls-in-a-run)."""

    per_chunk: int  # questions per chunk (a chunk's rows fill the slots once)
    chunks: int  # chunks over all the questions
    per_call: int  # chunks one sampler call takes through its slots
    rows_per_query: int  # T x K

    @property
    def chunk_rows(self) -> int:
        """Rows of a chunk: the call's cache slots."""
        return self.per_chunk * self.rows_per_query

    @property
    def questions(self) -> int:
        """Questions (distinct prompts) of one call."""
        return self.per_call * self.per_chunk

    @property
    def requests(self) -> int:
        """Rows (requests) of one call."""
        return self.questions * self.rows_per_query


def call_shape(n_questions: int, rows_per_query: int, sampling_config) -> CallShape:
    """The chunking `sample` uses for `n_questions` questions of `rows_per_query` rows each:
    whole questions per chunk, at most sampling.batch_rows rows (at least one question), and
    sampling.requests_per_slot chunks per call."""
    per_chunk = min(max(1, int(sampling_config.batch_rows) // rows_per_query), n_questions)
    chunks = -(-n_questions // per_chunk)
    per_call = min(max(1, int(sampling_config.requests_per_slot)), chunks)
    return CallShape(per_chunk, chunks, per_call, rows_per_query)


def sample(policy, tokenizer, questions: Sequence[str], *, temperatures: Sequence[float], num_samples: int,
           rng, sampling_config, mesh=None) -> GridSamples:
    """sample_grid over all questions, `batch_rows` cache slots per call (docs/models.md#sampler-calls-in-a-run).

    The questions are cut into chunks of at most `batch_rows` rows (whole queries; the last chunk
    padded with repeats of its first query); the rows of query q and sample k of chunk c draw with
    fold_in(fold_in(rng, c), q * K + k) at EVERY temperature of the grid (`common_keys`), so the
    temperatures of a search are compared on common random numbers.
    Each sampler call takes up to `requests_per_slot` chunks through one chunk's rows of slots: a
    slot whose row has ended takes the next row of the call (continuous batching), so a call runs
    until its rows' tokens are spent, not until each chunk's longest row ends. The keys do not
    depend on the grouping: texts are the same for every `requests_per_slot`. Every call has the
    same shape (the last is padded with whole chunks whose rows stop after one token), so a run
    compiles the sampler once per kind of call.
    """
    cfg, params = policy
    rows_per_query = len(temperatures) * int(num_samples)
    shape = call_shape(len(questions), rows_per_query, sampling_config)
    parts = []
    for first in range(0, shape.chunks, shape.per_call):
        start = first * shape.per_chunk
        call = list(questions[start:start + shape.questions])
        real = len(call)
        call += [call[0]] * (shape.questions - real)
        keys = jnp.concatenate([common_keys(jax.random.fold_in(rng, c), shape.per_chunk, len(temperatures),
                                            int(num_samples)) for c in range(first, first + shape.per_call)])
        caps = np.full(shape.requests, int(sampling_config.max_new_tokens), np.int32)
        caps[real * rows_per_query:] = 1  # padding rows: one step, then their slot is free
        g = sample_grid(cfg, params, tokenizer, call, temperatures=temperatures, num_samples=int(num_samples),
                        rng=keys, max_new_tokens=int(sampling_config.max_new_tokens),
                        top_p=float(sampling_config.top_p), top_k=int(sampling_config.top_k), mesh=mesh,
                        slots=shape.chunk_rows, row_max_new_tokens=caps)
        parts.append(_slice_queries(g, real))
        preemption.check()  # between sampler calls: a stop loses this phase's samples, nothing else
    return _concat_queries(parts)


def common_keys(rng, n_questions: int, n_temperatures: int, num_samples: int) -> jax.Array:
    """Row keys [Q * T * K] of one chunk (row = (q * T + t) * K + k): fold_in(rng, q * K + k), the
    same at every t. Each temperature's samples keep their distribution (K independent draws per
    query), but sample k of a query at T and at T' use the same uniforms token by token (common
    random numbers), so a difference between two temperatures' balance scores reflects the
    temperatures more than the luck of the draw. With one temperature these are
    fold_in(rng, r) for row r."""
    keys_QxK = continuous.request_keys(rng, n_questions * num_samples).reshape(n_questions, 1, num_samples)
    return jnp.broadcast_to(keys_QxK, (n_questions, n_temperatures, num_samples)).reshape(-1)


def _slice_queries(g: GridSamples, n: int) -> GridSamples:
    return GridSamples(temperatures=g.temperatures, texts=g.texts[:, :n], tokens=g.tokens[:, :n],
                       lengths=g.lengths[:, :n], truncated=g.truncated[:, :n], logprobs=g.logprobs[:, :n],
                       prompt_ids=g.prompt_ids[:n])


def _concat_queries(parts: list[GridSamples]) -> GridSamples:
    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[-1] for p in parts)

    def pad(x):
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])

    cat = lambda xs: np.concatenate(xs, axis=1)
    return GridSamples(temperatures=parts[0].temperatures, texts=cat([p.texts for p in parts]),
                       tokens=cat([pad(p.tokens) for p in parts]), lengths=cat([p.lengths for p in parts]),
                       truncated=cat([p.truncated for p in parts]),
                       logprobs=cat([pad(p.logprobs) for p in parts]),
                       prompt_ids=sum((list(p.prompt_ids) for p in parts), []))


def score(samples: GridSamples, questions: Sequence[str], golds: Sequence[str], *, task: str, answer_check: str,
          prm_scorer: PRMScorer | None = None) -> Pool:
    """Grades and rewards sampled responses (Eq. 1, or Eq. 2 when a PRM scorer is given)."""
    correct, valid = grade(samples.texts, golds, task, answer_check)
    prm_min = None if prm_scorer is None else np.asarray(prm_scorer(samples, questions), np.float32)
    return Pool(samples=samples, correct=correct, valid=valid, text_id=text_ids(samples.texts), prm_min=prm_min,
                reward=combined_reward(correct, prm_min))


def rollout(policy, tokenizer, examples, *, temperatures: Sequence[float], num_samples: int, rng, config,
            mesh=None, prm_scorer: PRMScorer | None = None) -> Pool:
    """K samples of each example (`data.Example`) at each temperature, graded and rewarded."""
    questions = [e.question for e in examples]
    samples = sample(policy, tokenizer, questions, temperatures=temperatures, num_samples=num_samples, rng=rng,
                     sampling_config=config.sampling, mesh=mesh)
    return score(samples, questions, [e.solution for e in examples], task=config.task,
                 answer_check=config.answer_check, prm_scorer=prm_scorer)
