"""The one trainer: train state, optimizer, freezing, the jitted step and the stopping rules.

Every fine-tune in the package runs through here: the policy's SFT (each iteration, P_0 and the
warm start; loss = completion cross-entropy, bstar_jax/train/sft.py) and the PRM head (loss = per-token
BCE, bstar_jax/rewards/prm_train.py). A caller supplies
  * params (a nested dict) and a same-structure `mask` of bools, True where a weight trains;
  * `loss_fn(params, micro_batch) -> float32 scalar`, pure and jittable; the full params are
    passed, frozen weights included (they are constants to the differentiation);
  * a `TrainSpec` (optimizer, schedule, accumulation, dtypes, divergence rules).
This is the only module that differentiates (`jax.value_and_grad`). docs/training.md describes the
optimizer, schedule, freezing and the non-finite and divergence rules.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import DivergenceError, NonFiniteError, TrainingError
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


# ------------------------------------------------------------------ the step

def batch_shardings(ndims: dict[str, int], mesh) -> dict:
    """Rows along the data-parallel axes for each batch entry of the given rank."""
    return {k: mesh_lib.batch_sharding(mesh, n) for k, n in ndims.items()}


def device_batch(batch, mesh) -> dict:
    """Places a host batch on `mesh`, rows along the data-parallel axes. Every process passes the
    same global batch (same examples, same key); each uploads only the rows its devices hold."""
    out = {}
    for k, x in batch.items():
        x = np.asarray(x)
        out[k] = jax.make_array_from_callback(x.shape, mesh_lib.batch_sharding(mesh, x.ndim),
                                              lambda index, x=x: x[index])
    return out


def make_step(loss_fn: Callable, mask, spec: TrainSpec, state_shardings: TrainState, batch_ndims: dict, mesh):
    """The jitted `step(state, batch) -> (state, metrics)`; `state` is donated.

    The global batch (batch_size rows, or any multiple of accum rows: packed batches hold several
    examples per row, docs/training.md) is split into accum = batch_size / micro_batch_size
    micro-batches (micro-batch i = rows i, i + accum, ..., so each device keeps its own rows) that a `lax.scan`
    runs in turn; the loss of each is loss_fn(...) / accum and their gradients are summed. Only the
    trainable weights are differentiated and updated. A step whose loss or gradient norm is not
    finite applies no update (params, optimizer state and step stay as they were).
    metrics: loss, grad_norm (before clipping), lr (used by this update), finite, weight_norm
    (global norm of all params after the step).
    """
    optimizer, schedule = make_optimizer(spec), make_schedule(spec)
    accum = spec.batch_size // spec.micro_batch_size

    def step(state: TrainState, batch):
        train, frozen = split(state.params, mask)

        def micro(mb):
            return jax.value_and_grad(lambda t: loss_fn(merge(t, frozen), mb) / accum)(train)

        if accum == 1:
            loss, grads = micro(batch)
        else:
            mbs = {k: jax.lax.with_sharding_constraint(
                jnp.swapaxes(x.reshape(-1, accum, *x.shape[1:]), 0, 1),
                NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES, *([None] * (x.ndim - 1)))))
                for k, x in batch.items()}

            def body(carry, mb):
                return jax.tree.map(jnp.add, carry, micro(mb)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, train))
            (loss, grads), _ = jax.lax.scan(body, zeros, mbs)

        grad_norm = optax.global_norm(grads)
        lr = schedule(schedule_count(state.opt_state))
        updates, opt_state = optimizer.update(grads, state.opt_state, train)
        new_train = optax.apply_updates(train, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jnp.where(finite, new, old)
        new_train = jax.tree.map(keep, new_train, train)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        params = merge(new_train, frozen)
        new_state = TrainState(params, opt_state, state.step + finite.astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite,
                   "weight_norm": optax.global_norm(params)}
        return new_state, metrics

    return jax.jit(step, in_shardings=(state_shardings, batch_shardings(batch_ndims, mesh)),
                   out_shardings=(state_shardings, mesh_lib.replicated(mesh)), donate_argnames="state")


# ------------------------------------------------------------------ stopping rules

class Monitor:
    """Checks each step's host metrics; raises NonFiniteError or DivergenceError (one line).

    Rules (docs/training.md): a non-finite loss or gradient norm stops at once (the step applied
    nothing); after `diverge_warmup_steps` steps of the phase, a loss above both
    diverge_loss_factor x and diverge_loss_margin + the median of the last `diverge_window` losses
    stops; a global weight norm above diverge_weight_norm_factor x its value at the phase start stops.
    """

    def __init__(self, spec: TrainSpec, initial_weight_norm: float, what: str, num_steps: int):
        self.spec, self.norm0, self.what, self.num_steps = spec, float(initial_weight_norm), what, num_steps
        self.losses: list[float] = []

    def check(self, i: int, m: dict) -> None:
        s, where = self.spec, f"{self.what}: step {i} of {self.num_steps}"
        loss, gnorm, wnorm = float(m["loss"]), float(m["grad_norm"]), float(m["weight_norm"])
        if not np.isfinite(loss):
            raise NonFiniteError(f"{where}: non-finite loss {loss} (gradient norm {gnorm}); the update was not "
                                 f"applied; lower the LR or check the data")
        if not np.isfinite(gnorm):
            raise NonFiniteError(f"{where}: non-finite gradient norm {gnorm} (loss {loss:.4g} finite); the update "
                                 f"was not applied; lower the LR or check the data")
        if s.diverge_weight_norm_factor and wnorm > s.diverge_weight_norm_factor * self.norm0:
            raise DivergenceError(f"{where}: weight norm {wnorm:.4g} > {s.diverge_weight_norm_factor:g} x its "
                                  f"start {self.norm0:.4g} (diverge_weight_norm_factor); lower the LR")
        recent = self.losses[-s.diverge_window:]
        if s.diverge_loss_factor and len(self.losses) >= max(1, s.diverge_warmup_steps):
            median = float(np.median(recent))
            if loss > s.diverge_loss_factor * median and loss > median + s.diverge_loss_margin:
                raise DivergenceError(f"{where}: loss {loss:.4g} > {s.diverge_loss_factor:g} x the running median "
                                      f"{median:.4g} of the last {len(recent)} steps (diverge_loss_factor); "
                                      f"lower the LR")
        self.losses.append(loss)


@jax.jit
def _weight_norm(params):
    return optax.global_norm(params)


@dataclasses.dataclass
class Progress:
    """How far a fit has come: what a resumed fit needs to continue exactly as an uninterrupted
    one (the per-step losses feed the divergence rule and the summary's means). JSON-able."""

    step: int = 0  # steps done
    losses: list = dataclasses.field(default_factory=list)
    grad_norms: list = dataclasses.field(default_factory=list)
    lr: float = float("nan")
    totals: dict = dataclasses.field(default_factory=dict)  # summed batch_stats
    weight_norm0: float | None = None  # the weight norm at the phase start (the divergence rule)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Progress":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def fit(state: TrainState, step_fn, batches: Iterator[dict], spec: TrainSpec, mesh, num_steps: int, *,
        what: str = "training", progress: bool = False, description: str | None = None,
        batch_stats: Callable[[dict], dict] | None = None, resume: Progress | None = None,
        save: Callable[[TrainState, Progress], None] | None = None, save_every: int = 0):
    """Runs `num_steps` steps of `step_fn` on `batches` (host dicts), checking each (`Monitor`).

    Returns (state, summary): mean loss and grad_norm, last lr, per-step losses, the summed
    `batch_stats(host_batch)` entries, seconds and (with a `tokens` stat) tokens/s; the first
    step's compile is included in the time. On a TrainingError the input state was donated: the
    caller falls back to its last checkpoint.

    After each step is a safe point (core/preemption.py): when a stop was asked, `save(state,
    progress)` runs (if given) and `preemption.Preempted` is raised. `save` also runs every
    `save_every` steps (0: never; not after the last step: the caller keeps the result). A fit
    given `resume` (the `Progress` a save received, `state` the state saved with it) skips the
    batches of the steps done and continues: the same steps, losses and result as one run.
    """
    from bstar_jax.core import preemption

    done = resume if resume is not None else Progress()
    if done.weight_norm0 is None:
        done.weight_norm0 = float(_weight_norm(state.params)) if num_steps else 0.0
    monitor = Monitor(spec, done.weight_norm0, what, num_steps)
    monitor.losses = list(done.losses)
    bar = None
    if progress and distributed.is_writer():  # one bar per run, not one per host
        from tqdm.auto import tqdm
        bar = tqdm(total=num_steps, initial=done.step, desc=description or what, unit="step")
    for _ in range(done.step):  # the batches of the steps already done: host work only
        next(batches)
    start, start_tokens = time.perf_counter(), done.totals.get("tokens", 0)
    host = next(batches) if done.step < num_steps else None
    batch = device_batch(host, mesh) if host is not None else None
    for i in range(done.step, num_steps):
        state, metrics = step_fn(state, batch)
        for k, v in (batch_stats(host) if batch_stats else {}).items():
            done.totals[k] = done.totals.get(k, 0) + v
        if i + 1 < num_steps:  # build the next batch while the device works
            host = next(batches)
            batch = device_batch(host, mesh)
        m = jax.device_get(metrics)
        monitor.check(i, m)
        done.losses.append(float(m["loss"]))
        done.grad_norms.append(float(m["grad_norm"]))
        done.lr = float(m["lr"])
        done.step = i + 1
        if bar is not None:
            postfix = {"loss": f"{done.losses[-1]:.4f}"}
            if "tokens" in done.totals:
                postfix["tok_s"] = f"{(done.totals['tokens'] - start_tokens) / (time.perf_counter() - start):.0f}"
            bar.set_postfix(**postfix)
            bar.update(1)
        stop = preemption.requested()
        if save is not None and (stop or (save_every > 0 and done.step % save_every == 0 and done.step < num_steps)):
            save(state, done)
        if stop:
            if bar is not None:
                bar.close()
            preemption.stop()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    summary = {"loss": float(np.mean(done.losses)) if done.losses else float("nan"),
               "grad_norm": float(np.mean(done.grad_norms)) if done.grad_norms else float("nan"),
               "lr": done.lr, "steps": num_steps, "losses": list(done.losses), "seconds": seconds,
               **done.totals}
    if "tokens" in done.totals:
        new_tokens = done.totals["tokens"] - start_tokens
        summary["tokens_per_s"] = new_tokens / seconds if seconds > 0 else float("nan")
    return state, summary
