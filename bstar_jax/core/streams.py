"""Named random streams: every random draw of a run comes from one of them.

The root key `jax.random.key(seed)` is split ONCE into one key per name in `NAMES`; a draw for
run r at iteration i of phase p uses fold_in(fold_in(stream[p], r), i). Names, not small
integers, tell the phases apart, so no two phases can meet on the same key however many runs
or iterations there are (folding run 4 into the root once collided with the evaluation salt 4).
A resumed run rebuilds the same streams from the seed and draws what an uninterrupted one
would (docs/algorithm.md#random-streams).

    streams = Streams(config.seed)
    streams.key("sample", run=run_index("bstar", use_prm=True), iteration=3)
    streams.key("eval", iteration=3)      # shared by every run: common random numbers
    queries, sample, label = split(streams.key("prm"), 3)   # sub-draws of one phase
    streams.seed("data")                  # a plain int, for a generator that takes one

This module is the only place a number becomes randomness (tests/unit/core/test_streams.py
checks the package): `Streams` for a run's draws, `as_key` and `python_random` for library
functions whose caller hands them a seed (a stream's, in the loop).
"""
from __future__ import annotations

import random

import jax
import numpy as np

# search: the dev-subset grid sampled for the (T, τ) search; queries: the iteration's M training
# queries; sample: the iteration's K samples per query; sft: SFT batch order; eval: held-out
# evaluation (folded with the iteration only); prm: the PRM phase (labelling and training);
# p0: the P_0 fine-tune of a loaded model; warm_start: the from-scratch tiny warm start's SFT
# batch order; data: the task's data (a generated dataset's seed, or the dev subset drawn from a
# file dataset's training set); init: the warm start's initial params; warm_start_data: the warm
# start's alternative solutions. New names go at the end: `jax.random.split` keeps the keys of
# the names before them.
NAMES = ("search", "queries", "sample", "sft", "eval", "prm", "p0", "warm_start", "data", "init",
         "warm_start_data")


class Streams:
    """The named keys of one seed (see the module docstring)."""

    def __init__(self, seed: int):
        keys = jax.random.split(jax.random.key(int(seed)), len(NAMES))
        self._roots = dict(zip(NAMES, keys))

    def key(self, name: str, *, run: int | None = None, iteration: int | None = None) -> jax.Array:
        """The key of stream `name`, with the run index and then the iteration folded in when given."""
        if name not in self._roots:
            raise ValueError(f"unknown random stream {name!r}; expected one of {NAMES}")
        key = self._roots[name]
        if run is not None:
            key = jax.random.fold_in(key, int(run))
        if iteration is not None:
            key = jax.random.fold_in(key, int(iteration))
        return key

    def seed(self, name: str, *, run: int | None = None, iteration: int | None = None) -> int:
        """A plain int in [0, 2^32) drawn from `key(name, ...)`, for a generator that takes an int
        seed (a generated dataset, reasoning-gym); the same for the same seed, name and folds."""
        return int(np.asarray(jax.random.bits(self.key(name, run=run, iteration=iteration), dtype=np.uint32)))


def split(key: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """`num` independent sub-keys of one draw (e.g. a phase that samples and then labels)."""
    return tuple(jax.random.split(key, int(num)))


def as_key(rng) -> jax.Array:
    """`rng` as a typed key: an int seed (a caller's, e.g. a test's), raw uint32 key data or a key
    array all become one."""
    if isinstance(rng, (int, np.integer)):
        return jax.random.key(int(rng))
    rng = rng if isinstance(rng, jax.Array) else jax.numpy.asarray(rng)
    return rng if jax.numpy.issubdtype(rng.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(rng)


def python_random(*parts: int | str) -> random.Random:
    """A Python `random.Random` seeded by `parts` joined with ":" (e.g. a generated dataset's
    name, seed and split), for generators that draw with Python's random; the string seeds the
    same state on every platform and Python run."""
    return random.Random(":".join(str(p) for p in parts))
