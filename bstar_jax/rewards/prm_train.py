"""PRM training: Math-Shepherd records -> per-token BCE batches -> a jitted, sharded optax step.

PAPER.md §6.2 (`train_rm_pointwise.py --train_on_every_token`): every token of step k's segment
(the step text plus its trailing "\\n\\n") has target label_k and weight 1, prompt tokens weight
0, loss = Σ w·BCE / Σ w. The optimizer is the official one: AdamW (β 0.9/0.999, ε 1e-8, no weight
decay), warmup then cosine to `end_learning_rate`, gradient-norm clipping at 1.0, with token
embeddings and every RMSNorm frozen (the LM head is unused by the PRM and frozen too). The official
run: LR 2e-6 -> 2e-7, warmup 0.2 of an epoch, 2 epochs, batch 256, lengths 768/768/1024.

A record is (question, steps, labels) in the prm-v4 layout: the steps joined by "\\n\\n" are the
response, so the last step may be the answer "# Answer\\n\\n{a}" with its own label (as
`labelling.label_steps` writes them). A token belongs to the segment holding its last character,
so a token that merges the separator with the next step's first characters carries the next label.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bstar_jax import batching, distributed
from bstar_jax import mesh as mesh_lib
from bstar_jax import models
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.tokenizer import ANSWER_MARKER, STEP_SEPARATOR, format_prompt

ANSWER_HEAD = ANSWER_MARKER.lstrip("\n")  # "# Answer\n\n": the answer step of a record


@dataclasses.dataclass(frozen=True)
class PRMRecord:
    """One labelled solution: a label in [0, 1] per step (hard 0/1 or a soft fraction)."""
    question: str
    steps: tuple
    labels: tuple


def as_record(x, index: int = 0) -> PRMRecord:
    """A PRMRecord from a PRMRecord, a (question, steps, labels) tuple, or a dict with the
    fields question/steps/labels or the official prm-v4 input/output/label. Checked."""
    if isinstance(x, PRMRecord):
        rec = x
    elif isinstance(x, dict):
        try:
            q = x["question"] if "question" in x else x["input"]
            steps = x["steps"] if "steps" in x else x["output"]
            labels = x["labels"] if "labels" in x else x["label"]
        except KeyError as e:
            raise ValueError(f"PRM record {index}: missing field {e.args[0]!r} "
                             "(want question/steps/labels or input/output/label)") from None
        rec = PRMRecord(q, tuple(steps), tuple(labels))
    else:
        try:
            q, steps, labels = x
        except (TypeError, ValueError):
            raise ValueError(f"PRM record {index}: expected (question, steps, labels), got "
                             f"{type(x).__name__}") from None
        rec = PRMRecord(q, tuple(steps), tuple(labels))
    _check_record(rec, index)
    return rec


def _check_record(rec: PRMRecord, index: int) -> None:
    where = f"PRM record {index} (question {str(rec.question)[:40]!r})"
    if not isinstance(rec.question, str):
        raise ValueError(f"{where}: the question must be a string")
    if not rec.steps:
        raise ValueError(f"{where}: no steps")
    if len(rec.labels) != len(rec.steps):
        raise ValueError(f"{where}: {len(rec.labels)} labels for {len(rec.steps)} steps")
    for k, step in enumerate(rec.steps):
        if not isinstance(step, str) or not step.strip():
            raise ValueError(f"{where}: step {k} is empty or not a string")
        is_answer = k == len(rec.steps) - 1 and step.startswith(ANSWER_HEAD)
        if STEP_SEPARATOR in step and not is_answer:
            raise ValueError(f"{where}: step {k} contains a blank line; split it into steps")
    labels = np.asarray(rec.labels, np.float64)
    if labels.ndim != 1 or not np.all(np.isfinite(labels)) or labels.min() < 0 or labels.max() > 1:
        raise ValueError(f"{where}: labels must be numbers in [0, 1], got {list(rec.labels)}")


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


def pad_prm_batch(encoded, *, max_len: int, pad_id: int = 0, rows: int | None = None) -> dict:
    """Right-pads encoded records into {tokens int32, targets float32, weights float32} [B, L]."""
    B = rows or len(encoded)
    L = batching.bucket_length(max(ids.size for ids, _, _ in encoded), max_len)
    batch = {"tokens": np.full((B, L), pad_id, np.int32), "targets": np.zeros((B, L), np.float32),
             "weights": np.zeros((B, L), np.float32)}
    for b, (ids, tg, w) in enumerate(encoded):
        batch["tokens"][b, :ids.size], batch["targets"][b, :ids.size], batch["weights"][b, :ids.size] = ids, tg, w
    return batch


def iterate_prm_batches(encoded, batch_size: int, key, *, max_len: int, pad_id: int = 0) -> Iterator[dict]:
    """Endless shuffled batches; epoch e is the permutation drawn from fold_in(key, e)."""
    if not encoded:
        raise ValueError("no PRM records to train on")
    epoch, order = 0, np.zeros((0,), np.int64)
    while True:
        while order.size < batch_size:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(encoded)))
            order, epoch = np.concatenate([order, perm]), epoch + 1
        take, order = order[:batch_size], order[batch_size:]
        yield pad_prm_batch([encoded[i] for i in take], max_len=max_len, pad_id=pad_id)


# ----------------------------------------------------------------------------- loss and optimizer

def prm_loss(cfg: models.ModelConfig, prm_params, batch) -> jax.Array:
    """Σ w·BCE(logit, target) / Σ w over every token (`--train_on_every_token`)."""
    logits_BxL = prm_lib.token_logits(cfg, prm_params, batch["tokens"])
    bce_BxL = optax.sigmoid_binary_cross_entropy(logits_BxL, batch["targets"])
    w_BxL = batch["weights"]
    return jnp.sum(w_BxL * bce_BxL) / jnp.maximum(jnp.sum(w_BxL), 1.0)


def trainable_labels(prm_params) -> dict:
    """'train' / 'freeze' per param: embeddings, norms (and the unused LM head) are frozen."""
    frozen_top = {"embed", "final_norm", "lm_head"}
    frozen_layer = {"attn_norm", "mlp_norm"}
    backbone = {}
    for name, value in prm_params["backbone"].items():
        if name == "layers":
            backbone[name] = {k: ("freeze" if k in frozen_layer else "train") for k in value}
        else:
            backbone[name] = "freeze" if name in frozen_top else "train"
    return {"backbone": backbone, "head": {k: "train" for k in prm_params["head"]}}


def make_prm_optimizer(prm_params, *, learning_rate: float = 2e-6, end_learning_rate: float = 2e-7,
                       warmup_steps: int = 0, total_steps: int = 1, clip_norm: float = 1.0,
                       weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8) -> optax.GradientTransformation:
    """AdamW + linear warmup + cosine decay + global-norm clipping on the trainable params only."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=int(warmup_steps),
        decay_steps=max(int(total_steps), int(warmup_steps) + 1), end_value=end_learning_rate)
    train = optax.chain(optax.clip_by_global_norm(clip_norm),
                        optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.multi_transform({"train": train, "freeze": optax.set_to_zero()},
                                 trainable_labels(prm_params))


class PRMTrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array


def init_train_state(cfg: models.ModelConfig, prm_params, optimizer, mesh=None) -> PRMTrainState:
    """Params placed by the rules table (with a mesh) and optimizer state laid out like them."""
    step = jnp.zeros((), jnp.int32)
    if mesh is None:
        return PRMTrainState(prm_params, jax.jit(optimizer.init)(prm_params), step)
    prm_params = prm_lib.shard_prm(cfg, prm_params, mesh)
    opt_state = jax.jit(optimizer.init)(prm_params)
    # Moments follow their params; scalars (Adam's count) land on one device: replicate them.
    on_mesh = lambda x: isinstance(x.sharding, jax.sharding.NamedSharding) and x.sharding.mesh == mesh
    opt_state = jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, mesh_lib.replicated(mesh)),
                             opt_state)
    return PRMTrainState(prm_params, opt_state, jax.device_put(step, mesh_lib.replicated(mesh)))


def make_train_step(cfg: models.ModelConfig, optimizer, state: PRMTrainState, mesh=None
                    ) -> Callable[[PRMTrainState, dict], tuple[PRMTrainState, jax.Array]]:
    """A jitted `step(state, batch) -> (state, loss)` with the state donated.

    With a mesh, params and optimizer state keep the shardings `init_train_state` gave them and
    the batch is split along mesh.BATCH_AXES.
    """
    labels = trainable_labels(state.params)

    def loss_fn(params, batch):
        # Frozen weights get no gradient computation at all (their update is zero anyway).
        params = jax.tree.map(lambda p, l: jax.lax.stop_gradient(p) if l == "freeze" else p, params, labels)
        return prm_loss(cfg, params, batch)

    def step(state: PRMTrainState, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return PRMTrainState(params, opt_state, state.step + 1), loss

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    batch_sh = {k: mesh_lib.batch_sharding(mesh, 2) for k in ("tokens", "targets", "weights")}
    return jax.jit(step, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, mesh_lib.replicated(mesh)), donate_argnums=0)


def device_batch(batch: dict, mesh) -> dict:
    """Places a host batch on `mesh`, rows along the data-parallel axes (unchanged without a mesh).
    Every process holds the same global batch (same records, same key) and uploads its own rows."""
    if mesh is None:
        return batch
    return {k: distributed.put_global(v, mesh_lib.batch_sharding(mesh, np.ndim(v))) for k, v in batch.items()}


def train_prm(cfg: models.ModelConfig, prm_params, tokenizer, records: Sequence, *, num_steps: int,
              batch_size: int = 8, learning_rate: float = 2e-6, end_learning_rate: float = 2e-7,
              warmup_steps: int | None = None, clip_norm: float = 1.0, max_len: int = 1024,
              seed: int = 0, mesh=None, callback: Callable[[int, float], None] | None = None
              ) -> tuple[dict, list[float]]:
    """Runs `num_steps` PRM updates over shuffled `records`; returns (new params, loss per step).

    records: PRMRecords, (question, steps, labels) tuples or prm-v4 dicts; every record is
    checked and tokenised before the first step, so a bad one fails with its index first.
    warmup_steps defaults to 10% of num_steps (the official 0.2 epoch of a 2-epoch run).
    A non-finite loss raises FloatingPointError (the input params are left as they were).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if mesh is not None:
        batching.check_batch_size(batch_size, mesh)
    recs = [as_record(r, i) for i, r in enumerate(records)]
    encoded = [encode_record(tokenizer, r, max_len=max_len, index=i) for i, r in enumerate(recs)]
    warmup = int(round(0.1 * num_steps)) if warmup_steps is None else int(warmup_steps)
    optimizer = make_prm_optimizer(prm_params, learning_rate=learning_rate,
                                   end_learning_rate=end_learning_rate, warmup_steps=warmup,
                                   total_steps=num_steps, clip_norm=clip_norm)
    # Copy so that donation never invalidates the caller's arrays.
    state = init_train_state(cfg, jax.tree.map(jnp.copy, prm_params), optimizer, mesh)
    train_step = make_train_step(cfg, optimizer, state, mesh)
    pad_id = int(cfg.pad_token_id) if cfg.pad_token_id is not None and cfg.pad_token_id >= 0 else 0
    batches = iterate_prm_batches(encoded, batch_size, jax.random.key(seed), max_len=max_len, pad_id=pad_id)
    losses: list[float] = []
    for i in range(num_steps):
        state, loss = train_step(state, device_batch(next(batches), mesh))
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"PRM training: non-finite loss {loss} at step {i}")
        losses.append(loss)
        if callback is not None:
            callback(i, loss)
    return state.params, losses
