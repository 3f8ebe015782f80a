"""Several processes, one program: launch, host reads of sharded arrays, one writer, decisions.

A pod slice (or a set of GPU hosts) runs one Python process per host; every process runs this
same program on the same global mesh (docs/multihost.md). Five rules follow, and this module
is the one place that implements them:

  - launch: `initialize()` starts `jax.distributed` from the cluster (Cloud TPU VM, Slurm,
    Open MPI: auto-detected) or from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID, and does nothing for a single process;
  - host reads: a process holds only its own shards, so `np.asarray` of a global array fails;
    `to_host` gathers (a collective: every process calls it, in the same order);
  - host data in: `put_global` builds a global array from the host value every process holds;
  - files: one process (`is_writer()`) writes each file; `barrier` makes the others wait until
    it is there (core/files.py: workdir paths, which may be gs://, `write_once`, `one_writer`);
  - decisions: a branch that depends on storage (a file's presence, a listing, a marker's
    contents), the clock or host state (device memory) is taken once, by the writer, and its
    outcome reaches every process (`@decided_on_writer`); a per-host fact every process must
    know about every host is `@gathered`. Two processes reading shared storage a moment apart
    may see different things (the writer may have written in between): deciding apart is how
    hosts diverge into different collectives (tests/unit/core/test_host_decisions.py enforces it).

A process that dies brings the others down: a watchdog thread per process publishes a
heartbeat in the coordinator's key-value store and ends this process with one line naming
the dead peer (or the lost coordinator) well before jax's own, multi-line, heartbeat abort.
"""
from __future__ import annotations

import base64
import functools
import itertools
import logging
import os
import pickle
import sys
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

from bstar_jax.core.errors import UserError

ENV_ADDRESS, ENV_COUNT, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
# A peer silent this long is dead. jax's own heartbeat abort (a multi-line fatal log) is set
# later, as a backstop; the shutdown timeout bounds the exit-time barrier of a failed run.
DEAD_AFTER_S = 20.0
JAX_HEARTBEAT_TIMEOUT_S = 45
JAX_SHUTDOWN_TIMEOUT_S = 30
_BEAT_EVERY_S = 2.0
_KEY = "bstar_jax/alive/"
_DECIDED_KEY = "bstar_jax/decided/"
# How long a process waits for the writer's decision; a dead writer is caught by the watchdog sooner.
DECISION_TIMEOUT_S = 3600


# ----------------------------------------------------------------------------- launch

def launch_settings(environ=None) -> dict | None:
    """The explicit launch from the environment: {coordinator_address, num_processes, process_id},
    None when none of the three variables is set. Raises UserError when only some are set or
    their values do not fit."""
    environ = os.environ if environ is None else environ
    names = (ENV_ADDRESS, ENV_COUNT, ENV_ID)
    given = {n: environ[n] for n in names if environ.get(n, "") != ""}
    if not given:
        return None
    if len(given) < 3:
        # The address alone is how some clusters (Slurm, OMPI) pick a port: let them detect the rest.
        if set(given) == {ENV_ADDRESS} and cluster_detected():
            return None
        missing = ", ".join(n for n in names if n not in given)
        raise UserError(f"multi-host launch: {', '.join(given)} set but {missing} not; set all three "
                        f"(docs/multihost.md) or none for one process")
    try:
        count, pid = int(given[ENV_COUNT]), int(given[ENV_ID])
    except ValueError:
        raise UserError(f"multi-host launch: {ENV_COUNT}={given[ENV_COUNT]!r} and {ENV_ID}={given[ENV_ID]!r} "
                        "must be integers") from None
    if count < 1 or not 0 <= pid < count:
        raise UserError(f"multi-host launch: need {ENV_COUNT} >= 1 and 0 <= {ENV_ID} < {ENV_COUNT}, "
                        f"got {count} and {pid}")
    if ":" not in given[ENV_ADDRESS]:
        raise UserError(f"multi-host launch: {ENV_ADDRESS}={given[ENV_ADDRESS]!r} must be host:port "
                        "(process 0's address and a free port)")
    return dict(coordinator_address=given[ENV_ADDRESS], num_processes=count, process_id=pid)


def cluster_detected() -> bool:
    """True on a cluster whose process count and id jax finds itself: a Cloud TPU VM (found at
    `import jax`), a Slurm job step or an Open MPI launch."""
    from jax._src import cloud_tpu_init  # the flag jax's own TPU cluster detection reads

    if cloud_tpu_init.running_in_cloud_tpu_vm:
        return True
    if all(k in os.environ for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NODELIST")):
        return int(os.environ["SLURM_NTASKS"]) > 1
    return "OMPI_MCA_orte_hnp_uri" in os.environ


def initialize(*, watchdog: bool = True, dead_after_s: float = DEAD_AFTER_S) -> None:
    """Starts `jax.distributed` when this is one of several processes; a no-op for one.

    Must run before anything touches a device (jax.devices(), an array). Explicit settings
    (`launch_settings`) win; otherwise a detected cluster fills them in; otherwise one process.
    With `watchdog`, a peer silent for `dead_after_s` seconds ends this process with one line.
    """
    if jax.distributed.is_initialized():
        return
    settings = launch_settings()
    timeouts = dict(heartbeat_timeout_seconds=JAX_HEARTBEAT_TIMEOUT_S,
                    shutdown_timeout_seconds=JAX_SHUTDOWN_TIMEOUT_S)
    if settings is not None:
        if settings["num_processes"] == 1:
            return
        # Passed explicitly: jax reads only the address from the environment.
        jax.distributed.initialize(**settings, **timeouts)
    elif cluster_detected():
        jax.distributed.initialize(**timeouts)
    else:
        return
    logging.info("jax.distributed: process %d of %d, %d local device(s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count())
    if watchdog and jax.process_count() > 1:
        _start_watchdog(dead_after_s)


def _jax_state():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state


def _die(message: str) -> None:
    """One line on stderr, then exit at once: other threads may be stuck in a collective."""
    sys.stderr.write(f"bstar-jax: {message}\n")
    sys.stderr.flush()
    os._exit(3)


def _start_watchdog(dead_after_s: float = DEAD_AFTER_S) -> None:
    """Heartbeats through the coordinator's key-value store; ends this process with one line
    when a peer's beat stops for `dead_after_s`, or when the coordinator stops answering."""
    state, me, n = _jax_state(), jax.process_index(), jax.process_count()
    client, address = state.client, state.coordinator_address
    last_ok = [time.monotonic()]

    def beat():
        count, seen = 0, {p: (None, time.monotonic()) for p in range(n) if p != me}
        while True:
            count += 1
            try:
                client.key_value_set(f"{_KEY}{me}", str(count), allow_overwrite=True)
                last_ok[0] = time.monotonic()
            except Exception:  # noqa: BLE001  the coordinator is gone: `watch` reports it
                pass
            for p, (value, since) in seen.items():
                try:
                    now_value = client.key_value_try_get(f"{_KEY}{p}")
                except Exception:  # noqa: BLE001  no beat from p yet (or no coordinator)
                    now_value = value
                now = time.monotonic()
                if now_value != value:
                    seen[p] = (now_value, now)
                elif now - since > dead_after_s and now - last_ok[0] < _BEAT_EVERY_S * 2:
                    _die(f"process {p} of {n} stopped (no heartbeat for {now - since:.0f} s); "
                         f"process {me} exits too")
            time.sleep(_BEAT_EVERY_S)

    def watch():  # a separate thread: a key-value call to a dead coordinator may block
        while True:
            time.sleep(_BEAT_EVERY_S)
            if time.monotonic() - last_ok[0] > dead_after_s:
                _die(f"the coordinator (process 0 at {address}) stopped answering for "
                     f"{time.monotonic() - last_ok[0]:.0f} s; process {me} exits")

    threading.Thread(target=beat, name="bstar-heartbeat", daemon=True).start()
    threading.Thread(target=watch, name="bstar-watchdog", daemon=True).start()


# ----------------------------------------------------------------------------- arrays

def process_index() -> int:
    """This process's index, 0 .. process_count() - 1 (0 in a single process)."""
    return jax.process_index()


def process_count() -> int:
    """Number of processes (hosts) running the program together."""
    return jax.process_count()


def is_writer() -> bool:
    """True in the one process that writes files (process 0)."""
    return jax.process_index() == 0


def _one_to_host(x):
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree):
    """numpy copies of every array in `tree`, whole on every process.

    An array sharded across processes is gathered (a collective: every process must call
    `to_host` on it, in the same order); a process-local or fully replicated one is read
    directly. numpy leaves pass through as arrays.
    """
    return jax.tree.map(_one_to_host, tree)


def put_global(tree, sharding):
    """A global jax.Array on `sharding` for each numpy leaf of `tree` (one sharding for all leaves,
    or a matching tree). Every process must hold the same whole value; each places only the
    shards its own devices hold. Valid in one process too (then it is `jax.device_put`)."""
    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: one(x, sharding), tree)
    return jax.tree.map(one, tree, sharding)


# ----------------------------------------------------------------------------- waiting

def barrier(name: str) -> None:
    """Waits until every process reaches `barrier(name)` (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- decisions

class DivergedError(RuntimeError):
    """Two processes reached different decision points: the program took different paths."""


_decisions = itertools.count()  # per process; equal in all while they decide in the same order
_inside = threading.local()  # set while a decided function's body runs in the writer


def _several() -> bool:
    # Checked without touching a device: a decision made before `initialize` is a one-process one.
    return jax.distributed.is_initialized() and jax.process_count() > 1


def _pack(value) -> str:
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def _unpack(text: str):
    return pickle.loads(base64.b64decode(text))


def _portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling, else one of the same kind of message (UserError stays a UserError)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001  an exception class with a custom constructor
        kind = UserError if isinstance(error, UserError) else RuntimeError
        return kind(f"{type(error).__name__}: {error}")


def _exchange(name: str, compute: Callable[[], Any], everyone: bool):
    """The coordinator's key-value store carries each process's (name, outcome) of decision number
    n; `everyone`: every process computes and reads all outcomes, else the writer alone."""
    client, me, n = _jax_state().client, jax.process_index(), jax.process_count()
    number = next(_decisions)
    outcome = None
    if everyone or me == 0:
        _inside.active = True
        try:
            outcome = ("value", compute())
        except Exception as e:  # noqa: BLE001  every process raises the same
            outcome = ("error", _portable(e))
        finally:
            _inside.active = False
        client.key_value_set(f"{_DECIDED_KEY}{number}/{me}", _pack((name, outcome)))
    sources = range(n) if everyone else [0]
    got = []
    for p in sources:
        if p == me:
            got.append((name, outcome))
            continue
        text = client.blocking_key_value_get(f"{_DECIDED_KEY}{number}/{p}", DECISION_TIMEOUT_S * 1000)
        got.append(_unpack(text))
    for p, (their_name, _) in zip(sources, got):
        if their_name != name:
            raise DivergedError(f"process {me} reached decision {number} at {name} where process {p} reached "
                                f"{their_name}: the processes took different paths")
    errors = [o[1] for _, o in got if o[0] == "error"]
    if errors:
        raise errors[0]
    values = [o[1] for _, o in got]
    return values if everyone else values[0]


def decided_on_writer(fn):
    """Decorator: `fn` runs in the writer only and every process returns its result (or raises
    its exception). For a function whose outcome steers the program and depends on storage, the
    clock or host state. Every process must call it, in the same order (like a collective);
    never inside `if is_writer():`. A decided function called from another one's body runs
    plainly. In one process it is `fn`."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def decided(*args, **kwargs):
        if not _several() or getattr(_inside, "active", False):
            return fn(*args, **kwargs)
        return _exchange(name, lambda: fn(*args, **kwargs), everyone=False)

    decided.decided_on_writer = True
    return decided


def gathered(fn):
    """Decorator: every process runs `fn`, and every process returns the list of all processes'
    results (index = process index), the same list everywhere; if any raised, every process
    raises the first such error. For per-host facts the processes must agree on (does every
    host see the workdir?). Called by every process in the same order; [fn()] in one process."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def everyone(*args, **kwargs):
        if not _several() or getattr(_inside, "active", False):
            return [fn(*args, **kwargs)]
        return _exchange(name, lambda: fn(*args, **kwargs), everyone=True)

    everyone.gathered = True
    return everyone
