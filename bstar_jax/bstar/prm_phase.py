"""The PRM phase before iteration 1: label P_0's own samples (Math-Shepherd), train the reward head,
and hand the loop a scorer for [T, Q, K] sample grids (paper App. A.1; docs/training.md).

The official code trains its PRM elsewhere; here the starting policy is generator and completer
at once, and the trained PRM is cached in <workdir>/prm so that every run and a resume reuse it.
"""
from __future__ import annotations

import logging

import jax
import numpy as np

from bstar_jax.bstar import checkpoint, rollout
from bstar_jax.core import distributed, preemption, streams
from bstar_jax.text import tokenizer as tok
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards.labelling import label_steps
from bstar_jax.rewards.prm_train import train_prm


def prepare_prm(config, mesh, tokenizer, p0, splits, key):
    """A function GridSamples -> float32 [T, Q, K] of raw min step scores (Eq. 2 divides them by 5)."""
    cfg, p0_params = p0
    p = config.prm
    folder = distributed.path(config.workdir) / "prm"
    init = prm_lib.init_prm(cfg, p0_params, init=p.head_init)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            prm_lib.shard_prm(cfg, init, mesh))
    preemption.at("PRM phase")
    store = checkpoint.Checkpointer(folder, max_to_keep=1, async_save=False)
    restored = store.restore(abstract) if store.latest_iteration() is not None else None
    if restored is not None:
        params = restored.state
        logging.info("PRM: reusing %s", folder)
    else:
        params = _train(config, mesh, tokenizer, p0, init, splits["train"], key)
        store.save(0, params, metrics={"trained_steps": int(p.steps)})
    store.close()
    return lambda samples, questions: score_grid(cfg, params, tokenizer, samples, questions, mesh=mesh,
                                                 max_len=int(config.sft.max_len))


def _train(config, mesh, tokenizer, p0, init_params, train, key):
    cfg, p0_params = p0
    p = config.prm
    query_key, sample_key, label_key = streams.split(key, 3)
    order = np.asarray(jax.random.permutation(query_key, len(train)))
    queries = [train[i] for i in order[: int(p.num_queries)]]
    samples = rollout.sample(p0, tokenizer, [e.question for e in queries], temperatures=[float(p.temperature)],
                           num_samples=int(p.samples_per_query), rng=sample_key,
                           sampling_config=config.sampling, mesh=mesh)
    texts = samples.texts[0].reshape(-1)
    questions = [e.question for e in queries for _ in range(int(p.samples_per_query))]
    golds = [e.solution for e in queries for _ in range(int(p.samples_per_query))]
    labelled = label_steps(cfg, p0_params, tokenizer, questions, list(texts), golds, task=config.task,
                           rng=label_key, n_completions=int(p.completions),
                           max_new_tokens=int(config.sampling.max_new_tokens), temperature=float(p.temperature),
                           max_batch=int(config.sampling.batch_rows), grade_mode=config.answer_check, mesh=mesh)
    records = labelled.records
    if not records:
        raise RuntimeError("PRM: no sampled solution had an answer to label; P_0 cannot produce the format")
    positives = np.mean([l for r in records for l in r.labels])
    logging.info("PRM: %d labelled solutions (%d generate calls), %.0f%% positive steps; training %d steps",
                 len(records), labelled.generate_calls, 100 * positives, int(p.steps))
    params, losses = train_prm(cfg, init_params, tokenizer, records, num_steps=int(p.steps),
                               batch_size=int(p.batch_size), micro_batch_size=int(p.micro_batch_size),
                               remat=p.remat == "full", learning_rate=float(p.lr),
                               end_learning_rate=float(p.min_lr), max_len=int(config.sft.max_len),
                               seed=int(config.seed), mesh=mesh, pack=bool(config.sft.pack),
                               pack_len=int(config.sft.pack_len))
    logging.info("PRM: loss %.4f -> %.4f", float(np.mean(losses[:10])), float(np.mean(losses[-10:])))
    return params


def score_grid(cfg, prm_params, tokenizer, samples, questions, *, mesh=None, max_len=None) -> np.ndarray:
    """float32 [T, Q, K]: raw min step score of every sampled response (−5 when truncated)."""
    T, Q, K = samples.texts.shape
    prompts = [tok.format_prompt(questions[q]) for _ in range(T) for q in range(Q) for _ in range(K)]
    scores = prm_lib.score_responses(cfg, prm_params, tokenizer, prompts, list(samples.texts.reshape(-1)),
                                     finished=~samples.truncated.reshape(-1), mesh=mesh, max_len=max_len,
                                     batch_size=128)
    return scores.prm_min.reshape(T, Q, K).astype(np.float32)
