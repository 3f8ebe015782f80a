"""Progress bars with an ETA for the phases that loop over compiled calls.

A run shows them when `config.progress` is on (`shown`), on the writer process only, on stderr;
each bar is named after the place the run is at (`preemption.place()`, e.g. "bstar iteration 2:
sampling") and counts what the phase is made of (sampler rows, PRM completions, SFT steps). The
first call of a phase includes its compile, so the ETA settles after it. A bar is closed when its
phase ends (`leave=False`): what stays on screen is the one line per iteration the run prints.
"""
from __future__ import annotations

import contextlib
import contextvars

from bstar_jax.core import distributed, preemption

_SHOWN = contextvars.ContextVar("bstar_progress_shown", default=False)


@contextlib.contextmanager
def shown(on: bool):
    """Within this block, phases show their bars (when `on`). Scoped: a run's setting ends with it."""
    token = _SHOWN.set(bool(on))
    try:
        yield
    finally:
        _SHOWN.reset(token)


def enabled() -> bool:
    """Whether bars are shown here: inside `shown(True)`, on the writer process."""
    return _SHOWN.get() and distributed.is_writer()


class _Silent:
    def update(self, n: int = 1) -> None:
        del n


@contextlib.contextmanager
def bar(total: int, *, unit: str):
    """A bar over `total` `unit`s of the current phase; `.update(n)` after each call. A silent
    stand-in where bars are off, or when the phase is one call (nothing to estimate)."""
    if not enabled() or total <= 1:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    b = tqdm(total=int(total), desc=preemption.place(), unit=unit, leave=False, dynamic_ncols=True,
             mininterval=1.0, smoothing=0.5)
    try:
        yield b
    finally:
        b.close()
