"""The PRM phase before iteration 1: label P_0's own samples (Math-Shepherd), train the reward head,
and hand the loop a scorer for [T, Q, K] sample grids (paper App. A.1; docs/training.md).

The official code trains its PRM elsewhere; here the starting policy is generator and completer
at once, and the trained PRM is cached in <workdir>/prm so that every run and a resume reuse it.
`config.prm.path` names such a folder (another run's <workdir>/prm, for P_0's architecture): that
PRM scores and none is trained; `check_prm_folder` checks that folder (form and architecture,
from checkpoint metadata) before any work.
"""
from __future__ import annotations

import json
import logging

import jax
import numpy as np

from bstar_jax import models
from bstar_jax.bstar import checkpoint
from bstar_jax.config import plan
from bstar_jax.core import distributed, files, preemption, shapes, streams
from bstar_jax.core.errors import ConfigValueError
from bstar_jax.generate import grid
from bstar_jax.text.format import format_prompt
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards.labelling import label_steps
from bstar_jax.rewards.prm_train import train_prm


def prepare_prm(config, mesh, tokenizer, p0, splits, key):
    """A function GridSamples -> float32 [T, Q, K] of raw min step scores (Eq. 2 divides them by 5)."""
    cfg, p0_params = p0
    p = config.prm
    init = prm_lib.init_prm(cfg, p0_params, init=p.head_init)
    abstract = shapes.abstract(prm_lib.shard_prm(cfg, init, mesh))
    if p.path:  # a supplied PRM: read, never trained or written
        check_prm_folder(config, cfg)
        store = checkpoint.Checkpointer(p.path, read_only=True)
        params = store.restore(abstract).state
        store.close()
        logging.info("PRM: scoring with %s (config.prm.path); none trained", p.path)
        return _scorer(config, cfg, params, tokenizer, mesh)
    preemption.at("PRM phase")
    folder = files.path(config.workdir) / "prm"
    store = checkpoint.Checkpointer(folder, max_to_keep=1, async_save=False)
    restored = store.restore(abstract) if store.latest_iteration() is not None else None
    if restored is not None:
        params = restored.state
        logging.info("PRM: reusing %s", folder)
    else:
        params = _train(config, mesh, tokenizer, p0, init, splits["train"], key)
        store.save(0, params, metrics={"trained_steps": int(p.steps)})
    store.close()
    return _scorer(config, cfg, params, tokenizer, mesh)


def _scorer(config, cfg, params, tokenizer, mesh):
    scoring = plan.prm_scoring(config)
    return lambda samples, questions: score_grid(cfg, params, tokenizer, samples, questions, mesh=mesh,
                                                 max_len=scoring.seq_len, batch_size=scoring.rows)


@distributed.decided_on_writer
def _p0_config(config) -> models.ModelConfig | None:
    """P_0's architecture when files say it before any work: <workdir>/p0/config.json (a warm
    start or P_0 SFT made earlier) or model.path's config.json (P_0 SFT keeps the architecture);
    None otherwise (a warm start not yet made, a .gguf or a hub id: known once P_0 is loaded)."""
    made = bool(config.warm_start.enabled) or int(config.p0_sft.steps) > 0
    candidates = [files.path(config.workdir) / "p0" / "config.json"] if made else []
    if not config.warm_start.enabled and config.model.path:
        candidates.append(files.path(config.model.path) / "config.json")
    for path in candidates:
        if path.is_file():
            return models.ModelConfig.from_hf_dict(json.loads(path.read_text()), source=str(path))
    return None


def check_prm_folder(config, model_cfg: models.ModelConfig | None = None) -> None:
    """Raises ConfigValueError (one line) unless config.prm.path is "" or a PRM folder in the form a
    run writes whose shapes are those of a PRM on P_0 (`model_cfg`, or `_p0_config`; the
    architecture is unchecked while neither is known). Reads metadata only."""
    path = config.prm.path
    if not path:
        return

    def fail(reason: str):
        raise ConfigValueError(f"config.prm.path={path!r}: {reason}; give the prm folder of a run with this model "
                             f"(<workdir>/prm), or set --config.prm.path=\"\" to train one")

    if not files.path(path).is_dir():
        fail("no such folder")
    store = checkpoint.Checkpointer(path, read_only=True)
    try:
        iteration = store.latest_iteration()
        saved = store.saved_shapes(iteration) if iteration is not None else None
    finally:
        store.close()
    if not saved or not any(k.startswith("['backbone']") for k in saved) or "['head']['w']" not in saved:
        fail("not a PRM checkpoint (a run writes <workdir>/prm as a checkpoint of the backbone and the reward head)")
    model_cfg = model_cfg or _p0_config(config)
    if model_cfg is None:
        return
    want = {"backbone": models.param_shapes(model_cfg),
            "head": {"w": jax.ShapeDtypeStruct((model_cfg.hidden_size,), np.float32),
                     "b": jax.ShapeDtypeStruct((), np.float32)}}
    mismatch = checkpoint.shape_mismatch(saved, want)
    if mismatch:
        fail(f"a PRM of another architecture than P_0 ({mismatch})")


def _train(config, mesh, tokenizer, p0, init_params, train, key):
    cfg, p0_params = p0
    solutions, completions, training = plan.prm_training(config)  # the phase's calls
    # The batch order is the fourth sub-key: split keeps the first three of a three-way split.
    query_key, sample_key, label_key, order_key = streams.split(key, 4)
    order = np.asarray(jax.random.permutation(query_key, len(train)))
    queries = [train[i] for i in order[:solutions.queries]]
    samples = grid.sample(p0, tokenizer, [e.question for e in queries], temperatures=list(solutions.temperatures),
                          num_samples=solutions.samples, rng=sample_key, sampling_config=config.sampling, mesh=mesh)
    texts = samples.texts[0].reshape(-1)
    questions = [e.question for e in queries for _ in range(solutions.samples)]
    golds = [e.solution for e in queries for _ in range(solutions.samples)]
    labelled = label_steps(cfg, p0_params, tokenizer, questions, list(texts), golds, task=config.task,
                           rng=label_key, n_completions=completions.completions,
                           max_new_tokens=int(config.sampling.max_new_tokens), temperature=completions.temperature,
                           max_batch=completions.rows, grade_mode=config.answer_check, mesh=mesh)
    records = labelled.records
    if not records:
        raise RuntimeError("PRM: no sampled solution had an answer to label; P_0 cannot produce the format")
    positives = np.mean([l for r in records for l in r.labels])
    logging.info("PRM: %d labelled solutions (%d generate calls), %.0f%% positive steps; training %d steps",
                 len(records), labelled.generate_calls, 100 * positives, training.steps)
    params, losses = train_prm(cfg, init_params, tokenizer, records, training.config, num_steps=training.steps,
                               rng=order_key, mesh=mesh)
    logging.info("PRM: loss %.4f -> %.4f", float(np.mean(losses[:10])), float(np.mean(losses[-10:])))
    return params


def score_grid(cfg, prm_params, tokenizer, samples, questions, *, mesh=None, max_len=None,
               batch_size: int = plan.SCORE_ROWS) -> np.ndarray:
    """float32 [T, Q, K]: raw min step score of every sampled response (−5 when truncated)."""
    T, Q, K = samples.texts.shape
    prompts = [format_prompt(questions[q]) for _ in range(T) for q in range(Q) for _ in range(K)]
    scores = prm_lib.score_responses(cfg, prm_params, tokenizer, prompts, list(samples.texts.reshape(-1)),
                                     finished=~samples.truncated.reshape(-1), mesh=mesh, max_len=max_len,
                                     batch_size=batch_size)
    return scores.prm_min.reshape(T, Q, K).astype(np.float32)
