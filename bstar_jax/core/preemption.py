"""Preemption: SIGTERM stops the run at the next safe point, every process at the same one.

A spot / preemptible VM gets SIGTERM some seconds before it is taken away. The loop calls
`check()` at safe points, between compiled calls (after each sampler call, each SFT or PRM step,
each phase); the first `check()` after the signal raises `Preempted`, the code around it saves
what it can (an SFT phase saves its train state and progress), and the command line prints one
line saying how to resume and exits with status 143 (docs/errors.md#preemption). Rerunning the
same command resumes from the last finished phase.

A SIGTERM handler sets a flag in the process that gets the signal (`install()`). With several
processes each safe point is also an agreement: every process hands its flag to every other
(`distributed.gathered`, through the coordinator's key-value store, a millisecond next to a
compiled call) and all stop when any was asked, so every process stops at the same safe point,
whichever hosts got the signal. A notice from jax's preemption service counts as an ask too
(`multihost_utils.reached_preemption_sync_point`, where the platform sends notices other than
SIGTERM, e.g. a Cloud TPU maintenance event); its own sync point alone is not relied on, since a
host that passed it before the point was agreed would never stop. Every process must call
`check()` in the same order, which the program does: it is one program.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import jax

from bstar_jax.core import distributed

EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM

_asked = threading.Event()
_asked_at = [0.0]
_count = [0]  # safe points passed: the step ids of jax's sync protocol
_place = ["starting"]
_in_place = [0]  # safe points passed since the last `at`
_last = [time.monotonic()]
_fired = [False]
_TEST_ENV = "BSTAR_TEST_SIGNAL"
# The longest time between two safe points, per place: a stop asked there waits at most this
# (plus a save); benchmarks/preemption.py prints them.
gaps: dict[str, float] = {}


class Preempted(BaseException):
    """The run was asked to stop (SIGTERM) and stopped at a safe point. A BaseException, like
    KeyboardInterrupt: no `except Exception` on the way up may swallow it."""

    def __init__(self, where: str, asked_s: float | None = None):
        super().__init__(where)
        self.where, self.asked_s = where, asked_s


def _on_sigterm(signum, frame) -> None:
    if not _asked.is_set():
        _asked_at[0] = time.monotonic()
        _asked.set()


def _several() -> bool:
    return jax.distributed.is_initialized() and jax.process_count() > 1


def install() -> None:
    """Takes SIGTERM as a request to stop at the next safe point. Call after
    `distributed.initialize()`: the handler then replaces the one jax's preemption service set."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def at(place: str) -> None:
    """Names where the run is (e.g. "bstar iteration 2: SFT"), for the stop line; a phase
    boundary, so also a safe point (`check`)."""
    _place[0] = place
    _in_place[0] = 0
    _last[0] = time.monotonic()
    check()


def place() -> str:
    """Where the run is, as last named by `at`."""
    return _place[0]


def requested() -> bool:
    """A safe point: True once a stop was asked (in every process at the same safe point)."""
    _count[0] += 1
    _in_place[0] += 1
    now = time.monotonic()
    gaps[_place[0]] = max(gaps.get(_place[0], 0.0), now - _last[0])
    _last[0] = now
    _test_signal()
    if _several():
        return any(_asks(_asked.is_set() or _notice(_count[0])))
    return _asked.is_set()


@distributed.gathered
def _asks(asked: bool) -> bool:
    return asked


def _notice(step: int) -> bool:
    """jax's preemption service's word at safe point `step` (False where it is off)."""
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is off (jax_enable_preemption_service)
        return False


def stop() -> None:
    """Raises `Preempted` for the current place (after `requested()` said so)."""
    asked = time.monotonic() - _asked_at[0] if _asked.is_set() else None
    logging.warning("stop asked (SIGTERM): stopping at %s", _place[0])
    raise Preempted(_place[0], asked)


def check() -> None:
    """A safe point that raises `Preempted` once a stop was asked."""
    if requested():
        stop()


def reset() -> None:
    """Forgets a stop request and the counts (tests run several loops in one process)."""
    _asked.clear()
    _count[0] = 0
    gaps.clear()


def _test_signal() -> None:
    """Tests stop a run at a named place: BSTAR_TEST_SIGNAL="<place part>#<n>:<TERM|KILL>" sends
    the signal to this process at the n-th safe point of the first place containing <place part>
    (process BSTAR_TEST_SIGNAL_PROCESS only, default 0)."""
    spec = os.environ.get(_TEST_ENV)
    if not spec or _fired[0]:
        return
    where, _, name = spec.rpartition(":")
    part, _, n = where.partition("#")
    if part in _place[0] and _in_place[0] >= int(n or 1) and \
            jax.process_index() == int(os.environ.get(_TEST_ENV + "_PROCESS", "0")):
        _fired[0] = True
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
        time.sleep(0.2)  # let the handler (or jax's notifier) see it before the next step
