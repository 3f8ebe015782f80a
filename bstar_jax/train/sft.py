"""Supervised fine-tuning of the policy on selected samples: the completion-only loss and the
compiled SFT step, trained by bstar_jax/train/trainer.py (sharded, donated, accumulated;
docs/training.md). An SFT config holds the fields of config.sft (declared in
bstar_jax/config/schema.py, listed in docs/config.md); P_0's fine-tune and the warm start pass the
same fields with their own optimizer block.

The loss of a micro-batch is the mean cross-entropy over its target tokens (response + EOS;
prompt tokens masked), as in the official code; the trainer scales it by 1/accumulation steps and
sums the micro-batches' gradients. Frozen weights (embeddings, LM head, RMSNorms in the official
code) are not differentiated and never touched. Params are kept in `param_dtype` (fp32 master
weights by default) and cast to `compute_dtype` inside the loss.
"""
from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import optax

from bstar_jax.train import batching
from bstar_jax import models
from bstar_jax.core import names
from bstar_jax.train import train_state, trainer

_NORMS = ("attn_norm", "mlp_norm", "final_norm")
_BATCH_NDIMS = {"tokens": 2, "loss_mask": 2, "positions": 2, "segment_ids": 2, "lengths": 1}


# The fields of an SFT config the compiled step depends on, its jit cache key: the optimizer block
# and schedule (constants of the program), the dtypes, the loss grouping, remat and the frozen
# weights. The rest (lengths, packing, steps, divergence rules, sizing fractions) never reaches the
# device program, so changing it reuses the compiled step.
STEP_FIELDS = ("lr", "min_lr", "init_lr", "warmup_steps", "decay_steps", "weight_decay", "b1", "b2", "eps",
               "clip_norm", "batch_size", "micro_batch_size", "param_dtype", "compute_dtype", "mu_dtype",
               "loss_groups", "remat", "freeze_embeddings", "freeze_lm_head", "freeze_norms")
_STEP_CACHE_SIZE = 16


def train_spec(sft_config) -> train_state.TrainSpec:
    """The trainer settings of an SFT config (checked)."""
    c = sft_config
    if int(c.loss_groups) <= 0 or int(c.micro_batch_size) % int(c.loss_groups):
        raise ValueError(f"sft config: micro_batch_size={c.micro_batch_size} is not a multiple of "
                         f"loss_groups={c.loss_groups}")
    return train_state.TrainSpec.from_config(c)


def make_schedule(sft_config) -> optax.Schedule:
    """Linear warmup init_lr -> lr over warmup_steps, cosine to min_lr at decay_steps, then flat."""
    return train_state.make_schedule(train_spec(sft_config))


def trainable_mask(params, sft_config) -> dict:
    """Same-structure dict of bools: True where the weight trains (by the freeze_* options)."""
    s = sft_config
    frozen = set()
    if s.freeze_embeddings:
        frozen.add("embed")
    if s.freeze_lm_head:
        frozen.add("lm_head")
    if s.freeze_norms:
        frozen.update(_NORMS)
    if "lm_head" not in params and bool(s.freeze_embeddings) != bool(s.freeze_lm_head):
        raise ValueError("sft config: the LM head is tied to the embeddings, so freeze_embeddings "
                         f"({s.freeze_embeddings}) and freeze_lm_head ({s.freeze_lm_head}) must agree")

    def walk(tree):
        return {k: walk(v) if isinstance(v, dict) else k not in frozen for k, v in tree.items()}

    mask = walk(params)
    train_state.check_mask(mask, "sft config")
    return mask


def abstract_train_state(cfg, sft_config, mesh) -> train_state.TrainState:
    """ShapeDtypeStructs with shardings: the restore target of a checkpoint on `mesh`."""
    shapes = models.param_shapes(cfg)
    return train_state.abstract_state(shapes, trainable_mask(shapes, sft_config), train_spec(sft_config),
                                  models.param_shardings(cfg, mesh), mesh)


def init_train_state(cfg, params, sft_config, mesh) -> train_state.TrainState:
    """A fresh train state on `mesh`: a sharded copy of `params`, a new optimizer, step 0."""
    return train_state.init_state(params, trainable_mask(params, sft_config), train_spec(sft_config),
                              models.param_shardings(cfg, mesh), mesh)


def reset_optimizer(state: train_state.TrainState, sft_config, params=None) -> train_state.TrainState:
    """`state` with a fresh optimizer (schedule back at 0), on `params` (copied) when given."""
    return train_state.reset_optimizer(state, trainable_mask(state.params, sft_config), train_spec(sft_config),
                                   params)


# ------------------------------------------------------------------ loss and step

def completion_loss(logits_BxLxV, tokens_BxL, loss_mask_BxL, groups: int = 1):
    """Mean next-token cross-entropy over target tokens (loss_mask = 1), float32.

    Position t's logits predict token t+1, so logits may cover positions 0..L-1 or 0..L-2. With
    `groups` > 1 the rows split into that many equal groups, each averaged over its own target
    tokens, and the group means are averaged (the official per-GPU mean, docs/training.md).
    Packed rows (batching.pack_step) keep each group's examples in that group's rows, so a
    group's mean is over the same target tokens as without packing.
    """
    B, L = tokens_BxL.shape
    logits = logits_BxLxV[:, :L - 1].astype(jnp.float32)
    weights = loss_mask_BxL[:, 1:].astype(jnp.float32)
    ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BxL[:, 1:])
    sums = jnp.sum(ce_BxL * weights, axis=1).reshape(groups, B // groups).sum(1)
    counts = jnp.sum(weights, axis=1).reshape(groups, B // groups).sum(1)
    return jnp.mean(sums / jnp.maximum(counts, 1.0))


REMAT = names.REMAT


def check_remat(value, field: str = "sft.remat") -> bool:
    """True for "full", False for "none"; anything else is a ValueError naming the field."""
    if value not in REMAT:
        raise ValueError(f"{field}={value!r}: choose one of {', '.join(REMAT)}")
    return value == "full"


def sft_loss(params, batch, *, cfg, groups: int = 1, remat: bool = False):
    """The trainer's loss_fn for SFT: completion_loss of the decoder on one micro-batch.
    remat: recompute each layer's activations in the backward pass (docs/memory.md)."""
    decoder = models.module(cfg, params)
    hidden_BxLxE, _ = decoder.hidden(batch["tokens"], batch["positions"], segment_ids_BxL=batch.get("segment_ids"),
                                     remat=remat)
    logits = decoder.logits(hidden_BxLxE[:, :-1])  # the last position predicts nothing
    return completion_loss(logits, batch["tokens"], batch["loss_mask"], groups)


def _build_step(cfg, sft_config, mesh):
    c = sft_config
    spec = train_spec(c)
    cfg_c = cfg.replace(dtype=str(c.compute_dtype)) if c.compute_dtype else cfg
    loss_fn = functools.partial(sft_loss, cfg=cfg_c, groups=int(c.loss_groups), remat=check_remat(c.remat))
    shapes = models.param_shapes(cfg)
    mask = trainable_mask(shapes, c)
    state_sh = train_state.shardings_of(abstract_train_state(cfg, c, mesh))
    return trainer.make_step(loss_fn, mask, spec, state_sh, _BATCH_NDIMS, mesh)


def step_key(sft_config) -> tuple:
    """The values of STEP_FIELDS: two SFT configs with the same key compile the same step."""
    return tuple((k, sft_config[k]) for k in STEP_FIELDS)


_compiled_steps: collections.OrderedDict = collections.OrderedDict()  # (cfg, step_key, mesh) -> step


def clear_step_cache() -> None:
    """Forgets every compiled step (tests that count compilations)."""
    _compiled_steps.clear()


def make_train_step(cfg, sft_config, mesh):
    """The jitted step `(state, batch) -> (state, metrics)`; `state` is donated (trainer.make_step).

    batch: the dict of batching.iterate_batches (tokens, loss_mask, positions, segment_ids,
    lengths), global: batch_size rows, or packed rows holding batch_size examples. metrics: loss (mean over micro-batches of the per-micro-batch token mean),
    grad_norm (before clipping), lr (used by this update), finite, weight_norm.
    Cached: the same (cfg, step_key(config), mesh) returns the same compiled function.
    """
    train_spec(sft_config)
    batching.check_batch_size(int(sft_config.batch_size), mesh)
    batching.check_batch_size(int(sft_config.micro_batch_size), mesh, "micro_batch_size")
    key = (cfg, step_key(sft_config), mesh)
    if key not in _compiled_steps:
        _compiled_steps[key] = _build_step(cfg, sft_config, mesh)
        while len(_compiled_steps) > _STEP_CACHE_SIZE:
            _compiled_steps.popitem(last=False)
    _compiled_steps.move_to_end(key)
    return _compiled_steps[key]


device_batch = trainer.device_batch


def _batch_stats(batch) -> dict:
    return {"target_tokens": int(batch["loss_mask"][:, 1:].sum()), "tokens": int(batch["lengths"].sum())}


def run_sft(state: train_state.TrainState, examples, cfg, sft_config, mesh, key, *, num_steps: int | None = None,
            progress: bool = False, description: str = "sft", resume: trainer.Progress | None = None,
            save=None, save_every: int = 0):
    """Trains `num_steps` (default steps_per_iteration) steps on shuffled batches of `examples`
    ((prompt_ids, target_ids + EOS) pairs). Returns (state, metrics): means of loss and grad_norm,
    the last lr, token counts, seconds and tokens/s (first step's compile included).
    Raises trainer.NonFiniteError / DivergenceError at the first step that breaks a rule; the input
    `state` was donated, so the caller falls back to its last checkpoint. `resume`, `save` and
    `save_every`: as trainer.fit (continue from a saved step; save on a stop and every N steps)."""
    c = sft_config
    num_steps = int(c.steps_per_iteration if num_steps is None else num_steps)
    if cfg.max_position_embeddings < c.max_len:
        raise batching.BatchError(f"max_len={c.max_len} exceeds the model's max_position_embeddings="
                                  f"{cfg.max_position_embeddings}")
    step_fn = make_train_step(cfg, c, mesh)
    batches = batching.iterate_batches(
        examples, c.batch_size, key, max_len=c.max_len, max_prompt_len=c.max_prompt_len,
        max_target_len=c.max_target_len, truncate=c.truncate, min_bucket=c.min_bucket, pad_id=c.pad_id,
        mesh=mesh, pack=bool(c.get("pack", False)), pack_len=int(c.get("pack_len", 0)),
        accum=int(c.batch_size) // int(c.micro_batch_size), groups=int(c.loss_groups),
        key_cost=batching.attention_key_cost(cfg))
    state, summary = trainer.fit(state, step_fn, batches, train_spec(c), mesh, num_steps, what=description,
                                 progress=progress, batch_stats=_batch_stats, resume=resume, save=save,
                                 save_every=save_every)
    summary.pop("losses")
    summary.setdefault("target_tokens", 0)
    summary.setdefault("tokens", 0)
    summary.setdefault("tokens_per_s", float("nan"))
    return state, summary
