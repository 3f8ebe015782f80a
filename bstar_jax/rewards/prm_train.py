"""PRM training: Math-Shepherd records -> per-token BCE batches -> the shared trainer (trainer.py).

As the official `train_rm_pointwise.py --train_on_every_token` (docs/training.md): every token of step k's segment
(the step text plus its trailing "\\n\\n") has target label_k and weight 1, prompt tokens weight
0, loss = Σ w·BCE / Σ w. The optimizer is config.prm's optimizer block, by default the official one:
Adam (β 0.9/0.999, ε 1e-8, no weight decay), warmup a tenth of the steps then cosine to `min_lr`,
gradient-norm clipping at 1.0, with token embeddings and every RMSNorm frozen (the LM head is unused
by the PRM and frozen too). The official run: LR 2e-6 -> 2e-7, warmup 0.2 of an epoch, 2 epochs,
batch 256, lengths 768/768/1024.

A record is (question, steps, labels) in the prm-v4 layout: the steps joined by "\\n\\n" are the
response, so the last step may be the answer "# Answer\\n\\n{a}" with its own label (as
`labelling.label_steps` writes them). A token belongs to the segment holding its last character,
so a token that merges the separator with the next step's first characters carries the next label.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bstar_jax.train import batching
from bstar_jax.core import mesh as mesh_lib
from bstar_jax import models
from bstar_jax.train import train_state, trainer
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards.records import PRMRecord, as_record
from bstar_jax.text.format import STEP_SEPARATOR, format_prompt

def encode_record(tokenizer, rec: PRMRecord, *, max_len: int, index: int = 0):
    """(ids int32 [n], targets float32 [n], weights float32 [n]) of one record, cut to max_len."""
    prompt_ids = prm_lib.bos_ids(tokenizer) + list(tokenizer.encode(format_prompt(rec.question),
                                                                    add_special_tokens=False))
    response = STEP_SEPARATOR.join(rec.steps)
    ids, offsets = prm_lib.encode_with_offsets(tokenizer, response)
    # Segment k = [bounds[k], bounds[k+1]): step k and the separator after it.
    seg_len = [len(s) + len(STEP_SEPARATOR) for s in rec.steps]
    bounds = np.concatenate([[0], np.cumsum(seg_len)])
    labels = np.asarray(rec.labels, np.float32)
    targets = np.zeros(len(ids), np.float32)
    weights = np.zeros(len(ids), np.float32)
    for t, (s, e) in enumerate(offsets):
        if e > s:  # special or empty-span tokens get no weight
            k = int(np.searchsorted(bounds, e - 1, side="right") - 1)
            targets[t], weights[t] = labels[min(k, len(labels) - 1)], 1.0
    n_prompt = len(prompt_ids)
    all_ids = np.asarray(prompt_ids + ids, np.int32)[:max_len]
    targets = np.concatenate([np.zeros(n_prompt, np.float32), targets])[:max_len]
    weights = np.concatenate([np.zeros(n_prompt, np.float32), weights])[:max_len]
    if weights.sum() == 0:
        raise ValueError(f"PRM record {index}: no response token fits max_len={max_len} after "
                         f"{n_prompt} prompt tokens")
    return all_ids, targets, weights


def prm_row(encoded) -> dict[str, np.ndarray]:
    """The batching row of one encoded record (ids, targets, weights)."""
    ids, targets, weights = encoded
    return {"tokens": ids, "targets": targets, "weights": weights}


# ----------------------------------------------------------------------------- loss and optimizer

def prm_loss(cfg: models.ModelConfig, prm_params, batch, remat: bool = False) -> jax.Array:
    """Σ w·BCE(logit, target) / Σ w over every token (`--train_on_every_token`); the same sum over
    the same tokens whether the batch is padded or packed (each token's logit sees only its record)."""
    logits_BxL = prm_lib.token_logits(cfg, prm_params, batch["tokens"], batch.get("positions"),
                                      batch.get("segment_ids"), remat=remat)
    bce_BxL = optax.sigmoid_binary_cross_entropy(logits_BxL, batch["targets"])
    w_BxL = batch["weights"]
    return jnp.sum(w_BxL * bce_BxL) / jnp.maximum(jnp.sum(w_BxL), 1.0)


def trainable_mask(prm_params) -> dict:
    """True where a PRM weight trains: embeddings, norms (and the unused LM head) are frozen."""
    frozen_top = {"embed", "final_norm", "lm_head"}
    frozen_layer = {"attn_norm", "mlp_norm"}
    backbone = {}
    for name, value in prm_params["backbone"].items():
        if name == "layers":
            backbone[name] = {k: k not in frozen_layer for k in value}
        else:
            backbone[name] = name not in frozen_top
    return {"backbone": backbone, "head": {k: True for k in prm_params["head"]}}


BATCH_NDIMS = {"tokens": 2, "targets": 2, "weights": 2, "positions": 2, "segment_ids": 2, "lengths": 1}


def train_spec(prm_config) -> train_state.TrainSpec:
    """The trainer settings of a PRM config: its optimizer block, dtypes and stopping rules (the
    run's comes from bstar_jax/config/plan.py, train_config(config, "prm"))."""
    return train_state.TrainSpec.from_config(prm_config)


def make_step(cfg: models.ModelConfig, mask, spec: train_state.TrainSpec, state_shardings, mesh, *,
              remat: bool = False):
    """The jitted PRM step `(state, batch) -> (state, metrics)` (trainer.make_step on prm_loss);
    batch: tokens, targets, weights, positions, segment_ids [B, L] and lengths [B]."""
    loss_fn = functools.partial(prm_loss, cfg, remat=remat)
    return trainer.make_step(loss_fn, mask, spec, state_shardings, BATCH_NDIMS, mesh)


def train_prm(cfg: models.ModelConfig, prm_params, tokenizer, records: Sequence, prm_config, *, num_steps: int,
              rng, mesh=None) -> tuple[dict, list[float]]:
    """Runs `num_steps` PRM updates over `records` shuffled with `rng` (a key: the batch order);
    returns (new params, loss per step).

    records: PRMRecords, (question, steps, labels) tuples or prm-v4 dicts; every record is
    checked and tokenised before the first step, so a bad one fails with its index first.
    prm_config: the trainer settings (plan.train_config(config, "prm")): an optimizer block
    (batch_size records per step, micro_batch_size per accumulation step), dtypes, stopping rules,
    remat ("full": recompute layers in the backward pass), max_len (tokens per record) and pack
    (several records per row, batching.pack_step; rows of pack_len tokens, 0 = max_len).
    A non-finite loss or gradient norm, or a diverging run, raises a trainer.TrainingError (the
    input params are left as they were). mesh=None trains on one device.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    c = prm_config
    mesh = mesh or mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    spec = train_spec(c)
    batching.check_batch_size(spec.batch_size, mesh)
    batching.check_batch_size(spec.micro_batch_size, mesh, "micro_batch_size")
    max_len = int(c.max_len)
    recs = [as_record(r, i) for i, r in enumerate(records)]
    encoded = [encode_record(tokenizer, r, max_len=max_len, index=i) for i, r in enumerate(recs)]
    mask = trainable_mask(prm_params)
    state = train_state.init_state(prm_params, mask, spec, prm_lib.prm_shardings(cfg, mesh), mesh)
    step_fn = make_step(cfg, mask, spec, train_state.shardings_of(state), mesh, remat=c.remat == "full")
    pad_id = cfg.pad_id
    batches = batching.iterate_rows([prm_row(e) for e in encoded], spec.batch_size, rng,
                                    max_len=max_len, pad_id=pad_id, mesh=mesh, pack=bool(c.pack),
                                    pack_len=int(c.pack_len), accum=spec.batch_size // spec.micro_batch_size,
                                    key_cost=batching.attention_key_cost(cfg))
    state, summary = trainer.fit(state, step_fn, batches, spec, mesh, num_steps, what="PRM training")
    return state.params, summary["losses"]
