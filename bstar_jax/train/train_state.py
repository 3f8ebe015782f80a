"""The train state: its spec, optimizer and schedule, freezing, and building it on a mesh.

`TrainSpec` holds the settings of one fine-tune (optimizer, schedule, accumulation, dtypes,
divergence rules); `TrainState` the params, the optax state over the trainable weights and the
step count. A same-structure `mask` of bools marks the trainable weights (`split` / `merge`).
`init_state` builds a fresh sharded state, `abstract_state` its ShapeDtypeStructs (a checkpoint's
restore target and the compiled step's shardings), `reset_optimizer` a fresh optimizer on a
state's shardings. The step and the loop that train it: trainer.py. docs/training.md describes the
optimizer, schedule and freezing.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.shapes import abstract, sharded


@flax.struct.dataclass
class TrainState:
    """params: every weight (trainable and frozen); opt_state: optax state over the trainable ones,
    its `count` is the LR-schedule position; step: optimizer steps applied in this run (a skipped,
    non-finite step does not count; carry-over never resets it)."""

    params: Any
    opt_state: Any
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """The settings that shape the compiled step and the stopping rules: one optimizer block, the
    train state's dtypes and the divergence rules. Each field is a config field, declared (type,
    default, range, meaning) in bstar_jax/config/schema.py and listed in docs/config.md."""

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
    param_dtype: str  # "" = as given
    mu_dtype: str  # "" = the param dtype
    diverge_warmup_steps: int
    diverge_window: int
    diverge_loss_factor: float
    diverge_loss_margin: float
    diverge_weight_norm_factor: float

    def __post_init__(self):
        checks = [
            (self.lr > 0, f"lr={self.lr} must be > 0"),
            (0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must be in [0, lr={self.lr}]"),
            (0 <= self.warmup_steps <= self.decay_steps,
             f"warmup_steps={self.warmup_steps} must be in [0, decay_steps={self.decay_steps}]"),
            (self.decay_steps > 0, f"decay_steps={self.decay_steps} must be > 0"),
            (self.clip_norm > 0, f"clip_norm={self.clip_norm} must be > 0"),
            (self.micro_batch_size > 0 and self.batch_size % self.micro_batch_size == 0,
             f"batch_size={self.batch_size} is not a multiple of micro_batch_size={self.micro_batch_size}"),
            (self.diverge_window > 0, f"diverge_window={self.diverge_window} must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"training config: {message}")

    @classmethod
    def from_config(cls, c, **overrides) -> "TrainSpec":
        """The spec from a ConfigDict (or a dict) holding every field by name; `overrides` win. A
        field neither holds is a ValueError naming it."""
        cast = {"float": float, "int": int, "str": lambda v: str(v or "")}
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                value = overrides[f.name]
            elif f.name in c:
                value = c[f.name]
            else:
                raise ValueError(f"training config: no {f.name} (every fine-tune's config holds it, docs/config.md)")
            kw[f.name] = cast[f.type](value)
        return cls(**kw)


# ------------------------------------------------------------------ optimizer

def make_schedule(spec: TrainSpec) -> optax.Schedule:
    """Linear warmup init_lr -> lr over warmup_steps, cosine to min_lr at decay_steps, then flat.
    The update at schedule count c uses schedule(c), as torch's LambdaLR stepped after each update."""
    return optax.warmup_cosine_decay_schedule(spec.init_lr, spec.lr, spec.warmup_steps, spec.decay_steps,
                                              spec.min_lr)


def make_optimizer(spec: TrainSpec) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decoupled weight decay on matrices only, never norms/biases)."""
    mu_dtype = jnp.dtype(spec.mu_dtype) if spec.mu_dtype else None
    adam_kw = dict(b1=spec.b1, b2=spec.b2, eps=spec.eps, mu_dtype=mu_dtype)
    if spec.weight_decay:
        decay_mask = lambda p: jax.tree_util.tree_map_with_path(
            lambda path, _: not any(w in str(path[-1]) for w in ("norm", "bias")), p)
        adam = optax.adamw(make_schedule(spec), weight_decay=spec.weight_decay, mask=decay_mask, **adam_kw)
    else:
        adam = optax.adam(make_schedule(spec), **adam_kw)
    return optax.chain(optax.clip_by_global_norm(spec.clip_norm), adam)


def schedule_count(opt_state) -> jax.Array:
    """The LR-schedule position (optimizer updates since the optimizer was created)."""
    for path, value in optax.tree_utils.tree_get_all_with_path(opt_state, "count"):
        if any(getattr(k, "tuple_name", None) == "ScaleByScheduleState" for k in path):
            return value
    raise ValueError("optimizer state has no schedule count")


# ------------------------------------------------------------------ freezing: split by the mask

def split(tree, mask):
    """(trainable, frozen) sub-dicts of a nested dict by a same-structure mask; empty branches dropped."""
    train, frozen = {}, {}
    for k, v in tree.items():
        if isinstance(v, dict):
            t, f = split(v, mask[k])
            if t:
                train[k] = t
            if f:
                frozen[k] = f
        else:
            (train if mask[k] else frozen)[k] = v
    return train, frozen


def merge(a, b):
    """The inverse of `split`."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if k in out else v
    return out


def check_mask(mask, what: str = "training config") -> None:
    if not any(jax.tree.leaves(mask)):
        raise ValueError(f"{what}: every weight is frozen; nothing would train")


# ------------------------------------------------------------------ state and shardings

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


def abstract_state(param_shapes, mask, spec: TrainSpec, param_shardings, mesh) -> TrainState:
    """ShapeDtypeStructs with shardings of the whole state: a checkpoint's restore target.
    param_shapes: ShapeDtypeStructs (or arrays) of the params; their dtype becomes param_dtype."""
    dt = (lambda x: jnp.dtype(spec.param_dtype)) if spec.param_dtype else (lambda x: x.dtype)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dt(x)), param_shapes)
    train_shapes, _ = split(shapes, mask)
    train_sh, _ = split(param_shardings, mask)
    abstract_opt = jax.eval_shape(make_optimizer(spec).init, train_shapes)
    repl = mesh_lib.replicated(mesh)
    opt_sh = _opt_state_shardings(abstract_opt, train_sh, train_shapes, repl)
    return TrainState(abstract(shapes, param_shardings), abstract(abstract_opt, opt_sh), sharded((), jnp.int32, repl))


def shardings_of(tree):
    """The sharding of every leaf (arrays or ShapeDtypeStructs with shardings)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def _copy_params(params, spec: TrainSpec, shardings):
    """A new copy (never aliasing the caller's buffers, which the donated step would delete)."""
    params = jax.device_put(params, shardings)
    cast = (lambda x: x.astype(spec.param_dtype)) if spec.param_dtype else (lambda x: x)
    return jax.jit(lambda p: jax.tree.map(lambda x: jnp.copy(cast(x)), p), out_shardings=shardings)(params)


def _fresh_opt_state(params, mask, spec: TrainSpec, opt_shardings):
    train, _ = split(params, mask)
    return jax.jit(make_optimizer(spec).init, out_shardings=opt_shardings)(train)


def init_state(params, mask, spec: TrainSpec, param_shardings, mesh) -> TrainState:
    """A fresh state on `mesh`: a sharded copy of `params` (cast to param_dtype), a new optimizer
    over the trainable weights, step 0."""
    check_mask(mask)
    sh = shardings_of(abstract_state(params, mask, spec, param_shardings, mesh))
    params = _copy_params(params, spec, sh.params)
    step = jax.device_put(jnp.zeros((), jnp.int32), sh.step)
    return TrainState(params, _fresh_opt_state(params, mask, spec, sh.opt_state), step)


def reset_optimizer(state: TrainState, mask, spec: TrainSpec, params=None) -> TrainState:
    """The same run with a fresh optimizer (moments zero, schedule at 0) on `state`'s shardings,
    training `params` (copied) when given, else the state's own params. `step` carries on."""
    p_sh, opt_sh = shardings_of(state.params), shardings_of(state.opt_state)
    params = state.params if params is None else _copy_params(params, spec, p_sh)
    return TrainState(params, _fresh_opt_state(params, mask, spec, opt_sh), state.step)
