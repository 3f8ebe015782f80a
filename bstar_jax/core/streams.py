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
"""
from __future__ import annotations

import jax

# search: the dev-subset grid sampled for the (T, τ) search; queries: the iteration's M training
# queries; sample: the iteration's K samples per query; sft: SFT batch order; eval: held-out
# evaluation (folded with the iteration only); prm: the PRM phase (labelling and training);
# p0: the P_0 fine-tune of a loaded model; warm_start: the from-scratch tiny warm start.
NAMES = ("search", "queries", "sample", "sft", "eval", "prm", "p0", "warm_start")


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


def split(key: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """`num` independent sub-keys of one draw (e.g. a phase that samples and then labels)."""
    return tuple(jax.random.split(key, int(num)))
