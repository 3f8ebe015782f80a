"""Checkpoints of the self-improvement loop: orbax CheckpointManager, one step per iteration.

<directory>/<iteration>/state  params, optimizer state, step (orbax StandardSave; sharded arrays)
<directory>/<iteration>/meta   JSON: iteration, step, the chosen (temperature, threshold),
                               the iteration's metrics, and a fingerprint of every array
(Random keys are not saved: every draw is rebuilt from the seed, see docs/algorithm.md#random-streams.)

Rotation keeps the last `max_to_keep` (>= 1) checkpoints and, besides them, the newest one whose
state and metrics were sane (finite), so a run that drifts into nonsense never rotates away the
last good checkpoint (orbax keeps each checkpoint's `sane` flag as its metrics).

Orbax writes to a temporary folder and renames it when complete, so a crash mid-save leaves the
previous checkpoints as they were. Before a save into a local folder, the free space there is
checked against the state's size: a disk too full for the next checkpoint is a CheckpointError (one
line: folder, space needed and free, how to resume) instead of a failed write deep in orbax. A
checkpoint that is there but unreadable (a truncated or altered file) is detected on restore, by
orbax's own errors or by the fingerprint (a position-weighted sum of every array's bits, checked
after reading), and the previous one is restored instead, with a log line naming the one skipped.
Restoring takes a target of ShapeDtypeStructs with shardings (e.g. sft.abstract_train_state), so a
checkpoint loads onto any mesh.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from bstar_jax.core import distributed
from bstar_jax.core.errors import CheckpointError

log = logging.getLogger(__name__)

_ITEMS = ("state", "meta")



@dataclasses.dataclass
class Restored:
    """One restored iteration: the train state and what the loop needs to resume exactly."""

    iteration: int
    state: Any  # a train state (or the tree that was saved), placed as the target asked
    temperature: float | None
    threshold: float | None
    metrics: dict
    meta: dict  # the whole JSON part, extra fields included


@jax.jit
def _fingerprint(tree):
    """Per leaf, sum over elements of bits(x) * (2 * flat_index + 1) mod 2^32: changes when any
    element changes or two elements swap; independent of the sharding."""

    def one(x):
        x = jnp.asarray(x)
        if x.ndim == 0:
            x = x[None]
        bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        u = jax.lax.bitcast_convert_type(x, bits).astype(jnp.uint32)
        index = jnp.zeros(u.shape, jnp.uint32)
        stride = 1
        for d in reversed(range(u.ndim)):
            index = index + jax.lax.broadcasted_iota(jnp.uint32, u.shape, d) * jnp.uint32(stride % 2**32)
            stride *= u.shape[d]
        return jnp.sum(u * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)

    return jax.tree.map(one, tree)


def _fingerprint_dict(tree) -> dict[str, int]:
    prints = distributed.to_host(_fingerprint(tree))  # replicated scalars: read without a gather
    return {jax.tree_util.keystr(path): int(v) for path, v in jax.tree_util.tree_flatten_with_path(prints)[0]}


def _to_tree(state):
    """A dataclass state (train_state.TrainState: params, opt_state, step) is saved as a dict of its fields."""
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return state


def _from_tree(tree, like):
    if dataclasses.is_dataclass(like):
        return type(like)(**tree)
    return tree


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


class _LastSane:
    """Orbax preservation policy: keep the newest checkpoint whose metrics say it was sane."""

    def should_preserve(self, checkpoints, *, context):
        keep = [False] * len(checkpoints)
        sane = [i for i, c in enumerate(checkpoints) if (c.metrics or {}).get("sane", 1.0) > 0]
        if sane:
            keep[sane[-1]] = True
        return keep


def _finite_numbers(tree) -> bool:
    values = [v for v in jax.tree.leaves(_jsonable(tree)) if isinstance(v, (int, float))]
    return bool(np.all(np.isfinite(np.asarray(values, np.float64)))) if values else True


@jax.jit
def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class Checkpointer:
    """Save, keep the last `max_to_keep` (and the last sane one), and restore (with fallback) one
    checkpoint per iteration."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        directory = os.fspath(directory)  # a local folder or a gs:// URL (orbax takes both)
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        if int(max_to_keep) < 1:
            raise CheckpointError(f"checkpoint.keep={max_to_keep}: keep at least 1 checkpoint, or a rerun "
                                  f"cannot resume; set --config.checkpoint.keep=1 or more")
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(int(max_to_keep)), _LastSane()])
        # best_fn makes orbax store each checkpoint's metrics and read them back on a restart,
        # which the sanity policy needs; the preservation policy alone decides what is kept.
        # read_only: a folder of someone else's (config.prm.path) is read, never created or pruned.
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=lambda m: m.get("sane", 1.0),
                                               create=not read_only, read_only=read_only,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
            "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})

    # ---------------------------------------------------------------- iterations

    @distributed.decided_on_writer
    def iterations(self) -> list[int]:
        """Iterations with a (complete) checkpoint folder, oldest first; readability not checked.
        The writer's list reaches every process."""
        return sorted(self._manager.all_steps())

    @distributed.decided_on_writer
    def latest_iteration(self) -> int | None:
        """The newest saved iteration (None: none yet). restore() says which one it could read."""
        steps = self.iterations()
        return steps[-1] if steps else None

    def save(self, iteration: int, state, *, temperature: float | None = None,
             threshold: float | None = None, metrics: dict | None = None, extra: dict | None = None,
             sane: bool = True) -> None:
        """Saves `state` as `iteration` (asynchronously by default; `wait()` to block).

        The checkpoint counts as sane (never rotated away while it is the newest sane one) when
        `sane` is True and every array of the state and every number of `metrics` is finite.

        Checkpoints at or after `iteration` (left by a run that was rewound to an earlier one) are
        deleted first: they belong to a history this run no longer follows.
        """
        iteration = int(iteration)
        for stale in [s for s in self.iterations() if s >= iteration]:
            log.warning("checkpoint %s: replaced (the run resumed from an earlier iteration)",
                        os.path.join(self.directory, str(stale)))
            self._manager.wait_until_finished()
            self._manager.delete(stale)
        tree = _to_tree(state)
        self._check_free_space(tree, iteration)
        meta = {"iteration": iteration, "temperature": temperature, "threshold": threshold,
                "metrics": _jsonable(metrics or {}),
                "fingerprint": _fingerprint_dict(tree), **_jsonable(extra or {})}
        if dataclasses.is_dataclass(state) and hasattr(state, "step"):
            meta["step"] = int(state.step)
        meta["sane"] = bool(sane and _finite_numbers(metrics or {}) and bool(distributed.to_host(_all_finite(tree))))
        saved = self._manager.save(iteration, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            metrics={"sane": float(meta["sane"])}, force=True)
        if not saved:
            raise CheckpointError(f"{self.directory}: orbax declined to save iteration {iteration}")

    @distributed.decided_on_writer
    def _check_free_space(self, tree, iteration: int) -> None:
        """Raises CheckpointError when the local folder's disk has less free space than the
        arrays of `tree` take (plus 5 %); remote folders (gs://) are not checked. The writer
        looks (the disk is shared); every process raises its error."""
        if "://" in self.directory:
            return
        needed = int(1.05 * sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree)))
        folder = self.directory
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        free = shutil.disk_usage(folder).free
        if free < needed:
            last = self.latest_iteration()  # the stale ones (>= iteration) are deleted by now
            resume = "starts again" if last is None else f"resumes after iteration {last}"
            raise CheckpointError(
                f"{self.directory}: no room to save iteration {iteration} ({needed / 2**30:.2f} GiB "
                f"needed, {free / 2**30:.2f} GiB free on its disk); free space (e.g. old runs' "
                f"checkpoints) and rerun the same command: it {resume}")

    def restore(self, target, iteration: int | None = None) -> Restored | None:
        """Restores onto `target` (a tree of ShapeDtypeStructs with shardings, e.g.
        sft.abstract_train_state(cfg, sft_config, mesh)).

        iteration=None: the newest readable checkpoint, skipping (and logging) unreadable ones;
        None when there is none at all. An explicit iteration that cannot be read raises.
        """
        self._manager.wait_until_finished()
        candidates = sorted(self.iterations(), reverse=True)
        if iteration is not None:
            if int(iteration) not in candidates:
                raise CheckpointError(f"{self.directory}: no checkpoint for iteration {iteration} "
                                      f"(have {sorted(candidates)})")
            candidates = [int(iteration)]
        failures = []
        for it in candidates:
            path = os.path.join(self.directory, str(it))
            mismatch = _first_reported(self._shape_mismatch(it, target))
            if mismatch:
                raise CheckpointError(f"checkpoint {path} holds a different model ({mismatch}): this workdir was "
                                      f"made by another model config; use a new --config.workdir")
            restored, reason, error = None, None, None
            try:
                restored = self._restore_one(it, target)
            except Exception as e:  # orbax/tensorstore raise many types for a damaged file
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                error = e
            # A process whose read failed makes every process skip this checkpoint: restoring
            # different iterations in different processes would run different programs.
            reason = _first_reported(reason)
            if reason is None:
                if iteration is None and restored.meta.get("sane") is False and it != candidates[-1]:
                    log.warning("checkpoint %s holds a non-finite state; resuming from an earlier one", path)
                    continue
                return restored
            failures.append(f"{path} ({reason})")
            if iteration is not None:
                raise CheckpointError(f"checkpoint {path} is unreadable: {reason}") from error
            log.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path, reason)
        if failures:
            raise CheckpointError("no readable checkpoint: " + "; ".join(failures))
        return None

    def saved_shapes(self, iteration: int) -> dict[str, tuple[int, ...]] | None:
        """keystr path -> shape of every array of the saved state (of its params, for a train
        state), from orbax's metadata without reading the arrays; None without readable metadata."""
        try:
            saved = self._manager.item_metadata(iteration)["state"]
            saved = getattr(saved, "tree", saved)
            saved = saved.get("params", saved) if isinstance(saved, dict) else None
        except Exception:  # no metadata (older orbax layout): the fingerprint check still guards
            return None
        if not isinstance(saved, dict):
            return None
        return {jax.tree_util.keystr(p): tuple(getattr(x, "shape", ()))
                for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}

    def _shape_mismatch(self, iteration: int, target) -> str | None:
        """`name: saved shape vs expected` for the first param whose shape differs, else None.
        (Orbax would silently read a differently shaped array into the target.)"""
        want = _to_tree(target)
        want = want.get("params", want) if isinstance(want, dict) else want
        shapes = self.saved_shapes(iteration)
        return None if shapes is None else shape_mismatch(shapes, want)

    def _restore_one(self, iteration: int, target) -> Restored:
        abstract = _to_tree(target)
        out = self._manager.restore(iteration, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        meta = dict(out.meta)
        _check_fingerprint(out.state, meta.get("fingerprint"), os.path.join(self.directory, str(iteration)))
        return Restored(iteration=int(meta.get("iteration", iteration)), state=_from_tree(out.state, target),
                        temperature=meta.get("temperature"),
                        threshold=meta.get("threshold"), metrics=meta.get("metrics") or {}, meta=meta)

    # ---------------------------------------------------------------- lifecycle

    def wait(self) -> None:
        """Blocks until an asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_reported(report: str | None) -> str | None:
    """The first process's non-None `report` (the same in every process), or None."""
    return next((r for r in _reports(report) if r is not None), None)


@distributed.gathered
def _reports(report: str | None) -> str | None:
    return report


def _check_fingerprint(tree, expected: dict | None, path: str) -> None:
    if not expected:
        return
    got = _fingerprint_dict(tree)
    bad = [k for k, v in got.items() if k in expected and expected[k] != v]
    missing = [k for k in expected if k not in got]
    if bad or missing:
        raise CheckpointError(f"{path}: contents do not match the saved fingerprint "
                              f"({len(bad)} arrays differ, e.g. {(bad or missing)[:3]})")


def shape_mismatch(saved: dict[str, tuple[int, ...]], want) -> str | None:
    """`params<path>: saved ... vs this config's ...` for the first array of the tree `want`
    (arrays or ShapeDtypeStructs) whose shape differs from `saved` (`Checkpointer.saved_shapes`)
    or is not there; None when all match."""
    for p, x in jax.tree_util.tree_flatten_with_path(want)[0]:
        k = jax.tree_util.keystr(p)
        if k not in saved:
            return f"params{k}: not in the checkpoint"
        if saved[k] != tuple(x.shape):
            return f"params{k}: saved {saved[k]}, this config makes {tuple(x.shape)}"
    return None

