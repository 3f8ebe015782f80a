"""Supervised fine-tuning on selected samples: optax AdamW, completion-only loss, sharded and donated.

One optimizer step = one global batch of `batch_size` rows, split into micro-batches of
`micro_batch_size` rows that a `lax.scan` runs one after another. As in the official code
(PAPER.md §2.3) the loss of a micro-batch is the mean cross-entropy over its target tokens
(response + EOS; prompt tokens masked), scaled by 1/accumulation steps, and the gradients of the
micro-batches are summed. Frozen weights (embeddings, LM head, RMSNorms in the official code)
are not differentiated and never touched, so they stay bit-identical; the optimizer state covers
only the trainable weights. Params are kept in `param_dtype` (fp32 master weights by default) and
cast to `compute_dtype` inside the loss.

The schedule position is the `count` inside the optax state, so handing the same `TrainState`
to the next iteration continues the LR schedule and the Adam moments; `carry_over` applies each
variant's rule (PAPER.md §2.1).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from bstar_jax import batching
from bstar_jax import mesh as mesh_lib
from bstar_jax import models

VARIANTS = ("bstar", "online_rft", "iterative_rft", "rest_em")
_NORMS = ("attn_norm", "mlp_norm", "final_norm")
_BATCH_KEYS = ("tokens", "loss_mask", "positions")


def default_config() -> ml_collections.ConfigDict:
    """SFT settings at the paper's scale (PAPER.md §2.2-§2.3); configs override a few fields."""
    c = ml_collections.ConfigDict()
    c.lr = 4.12e-6  # peak LR; PAPER.md §2.2 "Self-improvement LR" (code)
    c.min_lr = 2e-7  # cosine floor (end value); PAPER.md §2.2
    c.init_lr = 0.0  # LR at schedule count 0, start of the linear warmup (HF/torch convention)
    c.warmup_steps = 105  # optimizer steps; 0.2 x len(loader) = 0.2 x 528, PAPER.md §2.2
    c.decay_steps = 4750  # optimizer steps from 0 to the floor, warmup included (optax); 9 x 528
    c.weight_decay = 0.0  # decoupled (AdamW); 0.0 in the official code; norms/biases never decay
    c.b1 = 0.9  # Adam beta1; PAPER.md §2.3
    c.b2 = 0.999  # Adam beta2; PAPER.md §2.3
    c.eps = 1e-8  # Adam epsilon; PAPER.md §2.3
    c.clip_norm = 1.0  # global gradient-norm clip; PAPER.md §2.3
    c.batch_size = 128  # sequences per optimizer step (global, all devices); PAPER.md §2.2
    c.micro_batch_size = 64  # sequences per accumulation step (global): 8 per GPU x 8 GPUs, §2.2
    c.loss_groups = 1  # token means per micro-batch, averaged; official = one per GPU (8)
    c.max_len = 1024  # tokens per sequence, prompt + target; PAPER.md §2.2
    c.max_prompt_len = 768  # prompt tokens kept (left-truncated); PAPER.md §2.2
    c.max_target_len = 768  # target tokens kept incl. EOS (right-truncated); PAPER.md §2.2
    c.truncate = True  # True: cut as the official code; False: a too-long example is an error
    c.min_bucket = 16  # shortest padded length (tokens); lengths are powers of two up to max_len
    c.pad_id = 0  # token id of padding (masked out of the loss, never attended to)
    c.freeze_embeddings = True  # token embeddings frozen; PAPER.md §2.3 (code)
    c.freeze_lm_head = True  # LM head frozen; PAPER.md §2.3 (code)
    c.freeze_norms = True  # every RMSNorm weight frozen; PAPER.md §2.3 (code)
    c.param_dtype = "float32"  # master-weight dtype the state keeps ("" = as loaded)
    c.compute_dtype = "bfloat16"  # activations/matmuls in the loss ("" = the model config's dtype)
    c.mu_dtype = ""  # Adam first-moment dtype ("" = param dtype; official keeps it in bf16)
    c.steps_per_iteration = 500  # optimizer steps per self-improvement iteration; PAPER.md §2.2
    return c


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm of a step was NaN/inf; that step's update was not applied."""


@flax.struct.dataclass
class TrainState:
    """params: every weight (trainable and frozen); opt_state: optax state over the trainable ones,
    its `count` is the LR-schedule position; step: optimizer steps taken in this run (never reset)."""

    params: Any
    opt_state: Any
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The hashable part of the config that shapes the compiled step."""

    lr: float
    min_lr: float
    init_lr: float
    warmup_steps: int
    decay_steps: int
    weight_decay: float
    b1: float
    b2: float
    eps: float
    clip_norm: float
    batch_size: int
    micro_batch_size: int
    loss_groups: int
    freeze_embeddings: bool
    freeze_lm_head: bool
    freeze_norms: bool
    param_dtype: str
    compute_dtype: str
    mu_dtype: str


def _spec(c) -> _Spec:
    if isinstance(c, _Spec):
        return c
    types = {"float": float, "int": int, "bool": bool, "str": lambda v: str(v or "")}
    s = _Spec(**{f.name: types[f.type](getattr(c, f.name)) for f in dataclasses.fields(_Spec)})
    checks = [
        (s.lr > 0, f"lr={s.lr} must be > 0"),
        (0 <= s.min_lr <= s.lr, f"min_lr={s.min_lr} must be in [0, lr={s.lr}]"),
        (0 <= s.warmup_steps <= s.decay_steps, f"warmup_steps={s.warmup_steps} must be in [0, decay_steps={s.decay_steps}]"),
        (s.decay_steps > 0, f"decay_steps={s.decay_steps} must be > 0"),
        (s.clip_norm > 0, f"clip_norm={s.clip_norm} must be > 0"),
        (s.micro_batch_size > 0 and s.batch_size % s.micro_batch_size == 0,
         f"batch_size={s.batch_size} is not a multiple of micro_batch_size={s.micro_batch_size}"),
        (s.loss_groups > 0 and s.micro_batch_size % s.loss_groups == 0,
         f"micro_batch_size={s.micro_batch_size} is not a multiple of loss_groups={s.loss_groups}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"sft config: {message}")
    return s


# ------------------------------------------------------------------ optimizer and trainable split

def make_schedule(sft_config) -> optax.Schedule:
    """Linear warmup init_lr -> lr over warmup_steps, cosine to min_lr at decay_steps, then flat.
    The update at schedule count c uses schedule(c), as torch's LambdaLR stepped after each update."""
    s = _spec(sft_config)
    return optax.warmup_cosine_decay_schedule(s.init_lr, s.lr, s.warmup_steps, s.decay_steps, s.min_lr)


def make_optimizer(sft_config) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decoupled weight decay on matrices only)."""
    s = _spec(sft_config)
    mu_dtype = jnp.dtype(s.mu_dtype) if s.mu_dtype else None
    adam_kw = dict(b1=s.b1, b2=s.b2, eps=s.eps, mu_dtype=mu_dtype)
    if s.weight_decay:
        decay_mask = lambda p: jax.tree_util.tree_map_with_path(
            lambda path, _: not any(w in str(path[-1]) for w in ("norm", "bias")), p)
        adam = optax.adamw(make_schedule(s), weight_decay=s.weight_decay, mask=decay_mask, **adam_kw)
    else:
        adam = optax.adam(make_schedule(s), **adam_kw)
    return optax.chain(optax.clip_by_global_norm(s.clip_norm), adam)


def trainable_mask(params, sft_config) -> dict:
    """Same-structure dict of bools: True where the weight trains (by the freeze_* options)."""
    s = _spec(sft_config)
    frozen = set()
    if s.freeze_embeddings:
        frozen.add("embed")
    if s.freeze_lm_head:
        frozen.add("lm_head")
    if s.freeze_norms:
        frozen.update(_NORMS)
    if "lm_head" not in params and s.freeze_embeddings != s.freeze_lm_head:
        raise ValueError("sft config: the LM head is tied to the embeddings, so freeze_embeddings "
                         f"({s.freeze_embeddings}) and freeze_lm_head ({s.freeze_lm_head}) must agree")

    def walk(tree):
        return {k: walk(v) if isinstance(v, dict) else k not in frozen for k, v in tree.items()}

    mask = walk(params)
    if not any(jax.tree.leaves(mask)):
        raise ValueError("sft config: every weight is frozen; nothing would train")
    return mask


def _split(tree, mask):
    """(trainable, frozen) sub-dicts of a nested dict; empty branches are dropped."""
    train, frozen = {}, {}
    for k, v in tree.items():
        if isinstance(v, dict):
            t, f = _split(v, mask[k])
            if t:
                train[k] = t
            if f:
                frozen[k] = f
        else:
            (train if mask[k] else frozen)[k] = v
    return train, frozen


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if k in out else v
    return out


def schedule_count(opt_state) -> jax.Array:
    """The LR-schedule position (optimizer updates since the optimizer was created)."""
    for path, value in optax.tree_utils.tree_get_all_with_path(opt_state, "count"):
        if any(getattr(k, "tuple_name", None) == "ScaleByScheduleState" for k in path):
            return value
    raise ValueError("optimizer state has no schedule count")


# ------------------------------------------------------------------ state, shardings

def _param_dtype_shapes(cfg, s: _Spec):
    dt = jnp.dtype(s.param_dtype) if s.param_dtype else cfg.jnp_param_dtype
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dt), models.param_shapes(cfg))


def _opt_state_shardings(abstract_opt, train_shardings, train_shapes, replicated):
    """Each optimizer-state leaf whose trailing dict path and shape match a trainable param gets
    that param's sharding (Adam moments); counts and the rest are replicated."""
    flat_sh = {tuple(k.key for k in path): sh for path, sh in
               jax.tree_util.tree_flatten_with_path(train_shardings)[0]}
    flat_shape = {tuple(k.key for k in path): x.shape for path, x in
                  jax.tree_util.tree_flatten_with_path(train_shapes)[0]}

    def pick(path, leaf):
        keys = []
        for k in reversed(path):
            if not isinstance(k, jax.tree_util.DictKey):
                break
            keys.insert(0, k.key)
        keys = tuple(keys)
        if keys in flat_sh and flat_shape[keys] == leaf.shape:
            return flat_sh[keys]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def _abstract_and_shardings(cfg, s: _Spec, mesh):
    shapes = _param_dtype_shapes(cfg, s)
    mask = trainable_mask(shapes, s)
    p_sh = models.param_shardings(cfg, mesh)
    train_shapes, _ = _split(shapes, mask)
    train_sh, _ = _split(p_sh, mask)
    abstract_opt = jax.eval_shape(make_optimizer(s).init, train_shapes)
    repl = mesh_lib.replicated(mesh)
    opt_sh = _opt_state_shardings(abstract_opt, train_sh, train_shapes, repl)
    abstract = TrainState(shapes, abstract_opt, jax.ShapeDtypeStruct((), jnp.int32))
    return abstract, TrainState(p_sh, opt_sh, repl), mask


def state_shardings(cfg, sft_config, mesh) -> TrainState:
    """NamedShardings of every leaf of the train state on `mesh` (params by the rules table)."""
    return _abstract_and_shardings(cfg, _spec(sft_config), mesh)[1]


def abstract_train_state(cfg, sft_config, mesh) -> TrainState:
    """ShapeDtypeStructs with shardings: the restore target of a checkpoint on `mesh`."""
    abstract, shardings, _ = _abstract_and_shardings(cfg, _spec(sft_config), mesh)
    return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings)


def _fresh_opt_state(params, s: _Spec, opt_shardings):
    train, _ = _split(params, trainable_mask(params, s))
    return jax.jit(make_optimizer(s).init, out_shardings=opt_shardings)(train)


def _copy_params(params, s: _Spec, shardings):
    """A new copy (never aliasing the caller's buffers, which the donated step would delete)."""
    params = jax.device_put(params, shardings)
    cast = (lambda x: x.astype(s.param_dtype)) if s.param_dtype else (lambda x: x)
    return jax.jit(lambda p: jax.tree.map(lambda x: jnp.copy(cast(x)), p), out_shardings=shardings)(params)


def init_train_state(cfg, params, sft_config, mesh) -> TrainState:
    """A fresh train state on `mesh`: a sharded copy of `params`, a new optimizer, step 0."""
    s = _spec(sft_config)
    _, sh, _ = _abstract_and_shardings(cfg, s, mesh)
    params = _copy_params(params, s, sh.params)
    step = jax.device_put(jnp.zeros((), jnp.int32), sh.step)
    return TrainState(params, _fresh_opt_state(params, s, sh.opt_state), step)


def carry_over(variant: str, state: TrainState, p0_params, sft_config) -> TrainState:
    """The state the next iteration trains from (PAPER.md §2.1, DESIGN.md §4):
    bstar / online_rft keep params, optimizer state and schedule position; iterative_rft keeps
    params with a fresh optimizer (schedule restarts); rest_em restarts from P_0 with a fresh one.
    `step` (the run's step counter) always carries on."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if variant in ("bstar", "online_rft"):
        return state
    s = _spec(sft_config)
    p_sh = jax.tree.map(lambda x: x.sharding, state.params)
    opt_sh = jax.tree.map(lambda x: x.sharding, state.opt_state)
    params = state.params
    if variant == "rest_em":
        if p0_params is None:
            raise ValueError("carry_over('rest_em') needs the starting params P_0")
        params = _copy_params(p0_params, s, p_sh)
    return TrainState(params, _fresh_opt_state(params, s, opt_sh), state.step)


# ------------------------------------------------------------------ loss and step

def completion_loss(logits_BxLxV, tokens_BxL, loss_mask_BxL, groups: int = 1):
    """Mean next-token cross-entropy over target tokens (loss_mask = 1), float32.

    Position t's logits predict token t+1, so logits may cover positions 0..L-1 or 0..L-2. With
    `groups` > 1 the rows split into that many equal groups, each averaged over its own target
    tokens, and the group means are averaged (the official per-GPU mean, PAPER.md §2.3).
    """
    B, L = tokens_BxL.shape
    logits = logits_BxLxV[:, :L - 1].astype(jnp.float32)
    weights = loss_mask_BxL[:, 1:].astype(jnp.float32)
    ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BxL[:, 1:])
    sums = jnp.sum(ce_BxL * weights, axis=1).reshape(groups, B // groups).sum(1)
    counts = jnp.sum(weights, axis=1).reshape(groups, B // groups).sum(1)
    return jnp.mean(sums / jnp.maximum(counts, 1.0))


def _micro_loss(cfg, params, mb, groups):
    decoder = models.module(cfg, params)
    hidden_BxLxE, _ = decoder.hidden(mb["tokens"], mb["positions"])
    logits = decoder.logits(hidden_BxLxE[:, :-1])  # the last position predicts nothing
    return completion_loss(logits, mb["tokens"], mb["loss_mask"], groups)


def _batch_shardings(mesh):
    sh = {k: mesh_lib.batch_sharding(mesh, 2) for k in _BATCH_KEYS}
    sh["lengths"] = mesh_lib.batch_sharding(mesh, 1)
    return sh


@functools.lru_cache(maxsize=16)
def _compiled_step(cfg, s: _Spec, mesh):
    abstract, shardings, mask = _abstract_and_shardings(cfg, s, mesh)
    optimizer, schedule = make_optimizer(s), make_schedule(s)
    cfg_c = cfg.replace(dtype=s.compute_dtype) if s.compute_dtype else cfg
    accum = s.batch_size // s.micro_batch_size
    micro_spec = NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES, None))

    def step(state: TrainState, batch):
        train, frozen = _split(state.params, mask)

        def micro(mb):
            loss_fn = lambda t: _micro_loss(cfg_c, _merge(t, frozen), mb, s.loss_groups) / accum
            return jax.value_and_grad(loss_fn)(train)

        if accum == 1:
            loss, grads = micro(batch)
        else:
            # Micro-batch i holds rows i, i+accum, ...: each device keeps its own rows.
            mbs = {k: jax.lax.with_sharding_constraint(
                batch[k].reshape(s.micro_batch_size, accum, -1).swapaxes(0, 1), micro_spec)
                for k in _BATCH_KEYS}

            def body(carry, mb):
                loss_i, grads_i = micro(mb)
                return jax.tree.map(jnp.add, carry, (loss_i, grads_i)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, train))
            (loss, grads), _ = jax.lax.scan(body, zeros, mbs)

        grad_norm = optax.global_norm(grads)
        lr = schedule(schedule_count(state.opt_state))
        updates, opt_state = optimizer.update(grads, state.opt_state, train)
        new_train = optax.apply_updates(train, updates)
        # A non-finite step leaves the state as it was (the caller raises NonFiniteLossError).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jnp.where(finite, new, old)
        new_train = jax.tree.map(keep, new_train, train)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        new_state = TrainState(_merge(new_train, frozen), opt_state, state.step + finite.astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite,
                   "target_tokens": jnp.sum(batch["loss_mask"][:, 1:]), "tokens": jnp.sum(batch["lengths"])}
        return new_state, metrics

    repl = mesh_lib.replicated(mesh)
    return jax.jit(step, in_shardings=(shardings, _batch_shardings(mesh)),
                   out_shardings=(shardings, repl), donate_argnames="state")


def make_train_step(cfg, sft_config, mesh):
    """The jitted step `(state, batch) -> (state, metrics)`; `state` is donated.

    batch: the dict of batching.iterate_batches (tokens, loss_mask, positions, lengths), global,
    batch_size rows. metrics: loss (mean over micro-batches of the per-micro-batch token mean),
    grad_norm (before clipping), lr (used by this update), finite, target_tokens, tokens (non-pad).
    Cached: the same (cfg, config, mesh) returns the same compiled function.
    """
    s = _spec(sft_config)
    batching.check_batch_size(s.batch_size, mesh)
    batching.check_batch_size(s.micro_batch_size, mesh, "micro_batch_size")
    return _compiled_step(cfg, s, mesh)


def device_batch(batch, mesh):
    """Places a host batch on `mesh`, rows along the data-parallel axes. Every process passes the
    same global batch (same examples, same key); each uploads only the rows its devices hold."""
    out = {}
    for k, sharding in _batch_shardings(mesh).items():
        x = np.asarray(batch[k])
        out[k] = jax.make_array_from_callback(x.shape, sharding, lambda index, x=x: x[index])
    return out


# ------------------------------------------------------------------ a budget of steps

def run_sft(state: TrainState, examples, cfg, sft_config, mesh, key, *, num_steps: int | None = None,
            progress: bool = False, description: str = "sft"):
    """Trains `num_steps` (default steps_per_iteration) steps on shuffled batches of `examples`
    ((prompt_ids, target_ids + EOS) pairs). Returns (state, metrics): means of loss and grad_norm,
    the last lr, token counts, seconds and tokens/s (first step's compile included).
    Raises NonFiniteLossError at the first non-finite step; the input `state` was donated, so the
    caller falls back to its last checkpoint."""
    c = sft_config
    num_steps = int(c.steps_per_iteration if num_steps is None else num_steps)
    if cfg.max_position_embeddings < c.max_len:
        raise batching.BatchError(f"max_len={c.max_len} exceeds the model's max_position_embeddings="
                                  f"{cfg.max_position_embeddings}")
    step_fn = make_train_step(cfg, c, mesh)
    batches = batching.iterate_batches(
        examples, c.batch_size, key, max_len=c.max_len, max_prompt_len=c.max_prompt_len,
        max_target_len=c.max_target_len, truncate=c.truncate, min_bucket=c.min_bucket, pad_id=c.pad_id,
        mesh=mesh)
    totals = {"loss": 0.0, "grad_norm": 0.0, "target_tokens": 0, "tokens": 0}
    lr = float("nan")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_steps, desc=description, unit="step")
    start = time.perf_counter()
    batch = device_batch(next(batches), mesh) if num_steps else None
    for i in range(num_steps):
        state, metrics = step_fn(state, batch)
        if i + 1 < num_steps:  # build the next batch while the device works
            batch = device_batch(next(batches), mesh)
        m = jax.device_get(metrics)
        if not m["finite"]:
            raise NonFiniteLossError(f"non-finite loss {float(m['loss'])} (grad norm "
                                     f"{float(m['grad_norm'])}) at step {i} of {num_steps} of this SFT "
                                     f"phase; the update was not applied")
        for k in totals:
            totals[k] += m[k].item()
        lr = float(m["lr"])
        if bar is not None:
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{float(m['loss']):.4f}", tok_s=f"{totals['tokens'] / elapsed:.0f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    n = max(num_steps, 1)
    return state, {"loss": totals["loss"] / n if num_steps else float("nan"),
                   "grad_norm": totals["grad_norm"] / n if num_steps else float("nan"),
                   "lr": lr, "steps": num_steps, "target_tokens": totals["target_tokens"],
                   "tokens": totals["tokens"], "seconds": seconds,
                   "tokens_per_s": totals["tokens"] / seconds if seconds > 0 else float("nan")}
