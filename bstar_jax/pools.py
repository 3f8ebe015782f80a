"""Sample and score a set of queries: the [T, Q, K] pools the search, selection and evaluation read.

Generate (one compiled sampler call per chunk of queries, every temperature of the grid in it),
then reward: the final-answer verifier gives `correct` and the answer-format check gives `valid`
(PAPER.md §2.4: samples without the answer block are never selected); with a PRM, the min step
score shifts the reward (Eq. 2): r = 1[correct] + min(step scores) / 5.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from bstar_jax import metrics
from bstar_jax.rewards import verify
from bstar_jax.sample_grid import GridSamples, sample_grid


@dataclasses.dataclass
class Pool:
    """K responses per query at each temperature, with ground truth and rewards; arrays [T, Q, K]."""

    samples: GridSamples
    correct: np.ndarray  # bool: final answer equals the reference (ground truth)
    valid: np.ndarray  # bool: has the answer block (selectable)
    text_id: np.ndarray  # int32: equal within a query iff the response texts are identical
    prm: np.ndarray | None  # float32: min step score / 5 (None without a PRM)
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
    """(correct, valid) bool [T, Q, K] from the verifier, gold answers extracted once per query."""
    correct = np.zeros(texts_TxQxK.shape, bool)
    valid = np.zeros(texts_TxQxK.shape, bool)
    for q, gold in enumerate(golds):
        for t in range(texts_TxQxK.shape[0]):
            for k, text in enumerate(texts_TxQxK[t, q]):
                valid[t, q, k] = verify.has_answer_format(text, task)
                correct[t, q, k] = verify.is_correct(text, gold, task, mode=answer_check)
    return correct, valid


def sample(policy, tokenizer, questions: Sequence[str], *, temperatures: Sequence[float], num_samples: int,
           rng, sampling_config, mesh=None) -> GridSamples:
    """sample_grid over all questions, chunked so each call has at most `batch_rows` rows.

    Every chunk has the same number of queries (the last is padded with repeats and cut), so a
    whole run compiles the sampler once per bucket; chunk c draws with fold_in(rng, c).
    """
    cfg, params = policy
    rows_per_query = len(temperatures) * num_samples
    per_chunk = max(1, int(sampling_config.batch_rows) // rows_per_query)
    per_chunk = min(per_chunk, len(questions))
    parts = []
    for c, start in enumerate(range(0, len(questions), per_chunk)):
        chunk = list(questions[start:start + per_chunk])
        real = len(chunk)
        chunk += [chunk[0]] * (per_chunk - real)
        g = sample_grid(cfg, params, tokenizer, chunk, temperatures=temperatures, num_samples=num_samples,
                        rng=jax.random.fold_in(rng, c), max_new_tokens=int(sampling_config.max_new_tokens),
                        top_p=float(sampling_config.top_p), top_k=int(sampling_config.top_k), mesh=mesh)
        parts.append(_slice_queries(g, real))
    return _concat_queries(parts)


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
          prm_scorer: Callable[[GridSamples, Sequence[str]], np.ndarray] | None = None) -> Pool:
    """Grades and rewards sampled responses (Eq. 1, or Eq. 2 when a PRM scorer is given)."""
    correct, valid = grade(samples.texts, golds, task, answer_check)
    reward = correct.astype(np.float32)
    prm = None
    if prm_scorer is not None:
        prm = np.asarray(prm_scorer(samples, questions), np.float32)
        reward = reward + prm
    return Pool(samples=samples, correct=correct, valid=valid, text_id=text_ids(samples.texts), prm=prm,
                reward=reward)


def evaluate(policy, tokenizer, questions, golds, *, rng, config, mesh=None, prm_scorer=None) -> dict:
    """Held-out test metrics of one policy (DESIGN.md §7): greedy Pass@1, and from K samples at the
    evaluation temperature Pass@K, Pass@K-S, Reward@K-S (training reward; PRM alone too when there
    is one) and distinct-equation diversity of the correct responses."""
    task, check = config.task, config.answer_check
    greedy = sample(policy, tokenizer, questions, temperatures=[0.0], num_samples=1,
                    rng=jax.random.fold_in(rng, 0), sampling_config=config.sampling, mesh=mesh)
    greedy_correct, _ = grade(greedy.texts, golds, task, check)
    K = int(config.eval.samples_per_query)
    drawn = sample(policy, tokenizer, questions, temperatures=[float(config.eval.temperature)], num_samples=K,
                   rng=jax.random.fold_in(rng, 1), sampling_config=config.sampling, mesh=mesh)
    pool = score(drawn, questions, golds, task=task, answer_check=check, prm_scorer=prm_scorer)
    correct, text_id, reward = pool.correct[0], pool.text_id[0], pool.reward[0]
    s_values = [int(s) for s in config.eval.s_values]
    out = {
        "pass_at_1": float(greedy_correct.mean()),
        "pass_at_k": float(np.mean(metrics.pass_at_k(np.full(len(golds), K), correct.sum(1), K))),
        "pass_at_k_s": {str(s): float(np.mean(metrics.pass_at_k_s(correct, text_id, s, mesh=mesh)))
                        for s in s_values},
        "reward_at_k_s": {str(s): float(np.mean(metrics.reward_at_k_s(correct, reward, s, mesh=mesh)))
                          for s in s_values},
        "diversity": metrics.diversity([[t for t, c in zip(pool.texts[0, q], correct[q]) if c]
                                        for q in range(len(golds))]),
        "eval_truncated": float(drawn.truncated.mean()),
        "eval_accuracy": float(correct.mean()),
    }
    if pool.prm is not None:
        out["reward_at_k_s_prm"] = {str(s): float(np.mean(metrics.reward_at_k_s(correct, pool.prm[0], s, mesh=mesh)))
                                    for s in s_values}
    return out
