"""Held-out metrics of one policy (docs/algorithm.md#evaluation).

Greedy Pass@1, and from K samples at the evaluation temperature: unbiased Pass@K, Pass@K-S,
Reward@K-S under the training reward (and under the PRM alone when there is one), and the
distinct-equation diversity of the correct responses. With K = 0 (`eval.samples_per_query`) only
greedy Pass@1 is measured and the sampled metrics are None. On the coding task the diversity is
the code diversity, and Pass@K-S by distinct programs, the distinct programs and the share of
tests passed are added (`code_reward.code_metrics`, docs/code.md#metrics).
"""
from __future__ import annotations

import jax
import numpy as np

from bstar_jax.bstar import code_reward, metrics, rollout
from bstar_jax.config import plan


# The test metrics of a row (`evaluate`'s keys without a PRM), None in an iteration not evaluated
# (and all but pass_at_1 None when eval.samples_per_query is 0).
TEST_METRICS = ("pass_at_1", "pass_at_k", "pass_at_k_s", "reward_at_k_s", "diversity", "eval_truncated",
                "eval_accuracy")


def evaluates(config, iteration: int) -> bool:
    """Whether `iteration` is evaluated on the test split: P_0 (0), every `eval.every`-th, the last."""
    return iteration % int(config.eval.every) == 0 or iteration == int(config.iterations)


def evaluate_per_problem(policy, tokenizer, examples, *, rng, config, mesh=None, prm_scorer=None, grader=None):
    """(test metrics row, per-problem results) of `policy` on `examples`; `rng` is the
    iteration's evaluation key. The per-problem results map problem_id (str [Q]), greedy_correct
    (bool [Q]), sample_correct (int32 [Q]: correct among the K samples) and num_samples (K), the
    inputs of paired comparisons between runs (docs/results.md). `grader` grades a code task's
    programs (`code_reward.CodeGrader`)."""
    greedy_key, sample_key = jax.random.split(rng)
    greedy_call, *sampled_call = plan.evaluation(config)  # the test pass's calls
    greedy = rollout.rollout(policy, tokenizer, examples, temperatures=list(greedy_call.temperatures),
                             num_samples=greedy_call.samples, rng=greedy_key, config=config, mesh=mesh, grader=grader)
    greedy_correct = np.asarray(greedy.correct[0, :, 0], bool)
    per_problem = {"problem_id": np.array([str(e.id) for e in examples]), "greedy_correct": greedy_correct}
    if not sampled_call:  # eval.samples_per_query = 0, greedy Pass@1 only: the sampled metrics are not measured
        out = dict.fromkeys(TEST_METRICS)
        out["pass_at_1"] = float(greedy_correct.mean())
        return out, {**per_problem, "sample_correct": np.zeros(len(examples), np.int32), "num_samples": np.int32(0)}
    call = sampled_call[0]
    K = call.samples
    pool = rollout.rollout(policy, tokenizer, examples, temperatures=list(call.temperatures),
                           num_samples=K, rng=sample_key, config=config, mesh=mesh, prm_scorer=prm_scorer,
                           grader=grader)
    correct, text_id, reward = pool.correct[0], pool.text_id[0], pool.reward[0]
    s_values = [int(s) for s in config.eval.s_values]

    def reward_at(score_QxK):
        return {str(s): float(np.mean(metrics.reward_at_k_s(correct, score_QxK, s, mesh=mesh))) for s in s_values}

    out = {
        "pass_at_1": float(greedy.correct.mean()),
        "pass_at_k": float(np.mean(metrics.pass_at_k(np.full(len(examples), K), correct.sum(1), K))),
        "pass_at_k_s": {str(s): float(np.mean(metrics.pass_at_k_s(correct, text_id, s, mesh=mesh)))
                        for s in s_values},
        "reward_at_k_s": reward_at(reward),
        "diversity": metrics.diversity([[t for t, c in zip(pool.texts[0, q], correct[q]) if c]
                                        for q in range(len(examples))]),
        "eval_truncated": float(pool.samples.truncated.mean()),
        "eval_accuracy": float(correct.mean()),
    }
    if pool.test_pass_fraction is not None:
        out.update(code_reward.code_metrics(pool.texts[0], correct, pool.test_pass_fraction[0], s_values, mesh=mesh))
    if pool.prm_min is not None:
        out["reward_at_k_s_prm"] = reward_at(pool.prm_min[0])
    return out, {**per_problem, "sample_correct": correct.sum(1).astype(np.int32), "num_samples": np.int32(K)}
