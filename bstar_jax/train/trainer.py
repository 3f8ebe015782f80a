"""The one trainer: the jitted step, the stopping rules and the loop that runs them.

Every fine-tune in the package runs through here: the policy's SFT (each iteration, P_0 and the
warm start; loss = completion cross-entropy, bstar_jax/train/sft.py) and the PRM head (loss = per-token
BCE, bstar_jax/rewards/prm_train.py). A caller supplies
  * a `train_state.TrainState` (params, optimizer state, step) and a same-structure `mask` of
    bools, True where a weight trains (train_state.py builds both);
  * `loss_fn(params, micro_batch) -> float32 scalar`, pure and jittable; the full params are
    passed, frozen weights included (they are constants to the differentiation);
  * a `train_state.TrainSpec` (optimizer, schedule, accumulation, dtypes, divergence rules).
This is the only module that differentiates (`jax.value_and_grad`). docs/training.md describes the
optimizer, schedule, freezing and the non-finite and divergence rules.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from bstar_jax.core import distributed
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import DivergenceError, NonFiniteError, TrainingError
from bstar_jax.train.train_state import (TrainSpec, TrainState, make_optimizer, make_schedule, merge, schedule_count,
                                        split)

__all__ = ["DivergenceError", "NonFiniteError", "TrainingError", "Monitor", "Progress", "batch_shardings",
           "device_batch", "fit", "make_step"]


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
