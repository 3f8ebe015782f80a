"""The finished phases of the iteration in progress: a stopped run loses at most one phase.

An iteration is search -> sampling -> selection -> SFT (bstar/iteration.py) -> evaluation
(bstar/experiment.py). Each phase's result is kept here when the phase finishes (`search`,
`pool`, `selection`, `evaluation`: the kept result if there is one, else the phase computed and
kept), and read back by a resumed run, which goes on from the first unfinished phase and so
produces what an uninterrupted run produces:

<workdir>/phases/<run>/iteration_<i>/
  digest.json     which config made these files (a resume with a changed config ignores them)
  search.npz      the BS(T, τ) table and the chosen (T, τ) with its dev balance score
  pool.npz        the sampled pool: texts, token ids, lengths, log-probs, grades, PRM scores, rewards,
                  the share of unit tests passed (code)
  selection.npz   the threshold used, the selection and its precision and recall
  sft/            orbax checkpoints of the SFT phase: every sft.save_every steps, on a stop, at its end
  evaluation.npz  the test metrics and the per-problem results

The writer process writes each file (into a temporary name, then renamed, so a file is there
whole or not at all); which files are there is decided by the writer and every process reads the
ones it says (each file is whole and never rewritten). The folder is removed once the
iteration's checkpoint is saved.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Callable

import numpy as np

from bstar_jax.bstar import checkpoint
from bstar_jax.bstar.iteration import Choice, SearchTable, Selection
from bstar_jax.bstar.rollout import Pool
from bstar_jax.config import record as run_record
from bstar_jax.core import distributed, files
from bstar_jax.generate.grid import GridSamples

SEARCH, POOL, SELECTION, EVALUATION = "search", "pool", "selection", "evaluation"
_META = "__meta__"


def config_digest(config) -> str:
    """A hash of every config field that changes results (record.result_fields)."""
    text = json.dumps(run_record.result_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class IterationPhases:
    """The phase files of one iteration of one run."""

    def __init__(self, workdir, run: str, iteration: int, digest: str):
        self.folder = files.path(workdir) / "phases" / run.replace("+", "_") / f"iteration_{int(iteration)}"
        self.digest = digest
        self._sft: checkpoint.Checkpointer | None = None
        self._kept: list[str] | None = None  # `finished()` when first asked: what this iteration had kept

    def kept(self) -> list[str]:
        """The phases kept before this iteration (re)started: `finished()`, read once (every
        process calls it, in the same order)."""
        if self._kept is None:
            self._kept = self.finished()
        return self._kept

    def _once(self, name: str, compute: Callable, encode: Callable, decode: Callable):
        if name in self.kept():
            return decode(*self.load(name))
        value = compute()
        self.save(name, *encode(value))
        return value

    def search(self, compute: Callable[[], Choice]) -> Choice:
        """The iteration's (T, τ), with the BS(T, τ) table where it searched."""
        def encode(c: Choice):
            table = {} if c.table is None else dict(temperatures=np.asarray(c.table.temperatures, np.float64),
                                                    thresholds=np.asarray(c.table.thresholds, np.float64),
                                                    balance_score=c.table.balance_score)
            return table, {"choice": [c.temperature, c.threshold, c.balance_score]}

        def decode(arrays, meta):
            table = None if "balance_score" not in arrays else SearchTable(
                arrays["temperatures"].tolist(), arrays["thresholds"].tolist(), arrays["balance_score"])
            return Choice(*meta["choice"], table=table)

        return self._once(SEARCH, compute, encode, decode)

    def pool(self, compute: Callable[[], Pool]) -> Pool:
        """The iteration's sampled, graded and rewarded pool."""
        if POOL in self.kept():
            return self.load_pool()
        pool = compute()
        self.save_pool(pool)
        return pool

    def selection(self, compute: Callable[[], Selection]) -> Selection:
        """The threshold used, the selection and its precision and recall."""
        def decode(arrays, meta):
            threshold, precision, recall = meta["selection"]
            return Selection(threshold, arrays["selected"], precision, recall)

        return self._once(SELECTION, compute,
                          lambda s: ({"selected": s.selected}, {"selection": [s.threshold, s.precision, s.recall]}),
                          decode)

    def evaluation(self, compute: Callable[[], tuple[dict, dict]]) -> tuple[dict, dict]:
        """(test metrics row, per-problem results) of the iteration's policy."""
        return self._once(EVALUATION, compute, lambda result: (result[1], result[0]),
                          lambda arrays, meta: (meta, arrays))

    @distributed.decided_on_writer
    def finished(self) -> list[str]:
        """Names of the phases whose result is kept (sorted); none when another config made them
        (that folder is then removed)."""
        stamp = self.folder / "digest.json"
        if not stamp.exists():
            return []
        if json.loads(stamp.read_text()).get("digest") != self.digest:
            self.folder.rmtree()
            return []
        return sorted(f.name[:-len(".npz")] for f in self.folder.iterdir() if f.name.endswith(".npz"))

    def save(self, name: str, arrays: dict, meta: dict | None = None) -> None:
        """Keeps a finished phase's arrays (numpy) and JSON meta (the writer writes; the others go on)."""
        if distributed.is_writer():
            self._write(name, arrays, meta)

    def _write(self, name: str, arrays: dict, meta: dict | None) -> None:
        self._stamp()
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()},
                 **{_META: np.asarray(json.dumps(meta or {}))})
        files.write_then_rename(self.folder / f"{name}.npz", lambda tmp: tmp.write_bytes(buffer.getvalue()))

    def load(self, name: str) -> tuple[dict, dict]:
        """(arrays, meta) of a phase `finished()` listed."""
        with np.load(io.BytesIO((self.folder / f"{name}.npz").read_bytes()), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != _META}
            return arrays, json.loads(str(f[_META]))

    def _stamp(self) -> None:
        stamp = self.folder / "digest.json"
        if not stamp.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"digest": self.digest}))

    # ---------------------------------------------------------------- the pool

    def save_pool(self, pool: Pool) -> None:
        s = pool.samples
        offsets = np.cumsum([0] + [len(p) for p in s.prompt_ids])
        arrays = dict(temperatures=s.temperatures, texts=np.asarray(s.texts, dtype=str), tokens=s.tokens,
                      lengths=s.lengths, truncated=s.truncated, logprobs=s.logprobs,
                      prompt_ids=np.asarray([i for p in s.prompt_ids for i in p], np.int64),
                      prompt_offsets=offsets, correct=pool.correct, valid=pool.valid, text_id=pool.text_id,
                      reward=pool.reward)
        for name in ("prm_min", "test_pass_fraction"):
            if getattr(pool, name) is not None:
                arrays[name] = getattr(pool, name)
        self.save(POOL, arrays)

    def load_pool(self) -> Pool:
        a, _ = self.load(POOL)
        o = a["prompt_offsets"]
        prompt_ids = [a["prompt_ids"][o[i]:o[i + 1]].tolist() for i in range(len(o) - 1)]
        samples = GridSamples(temperatures=a["temperatures"], texts=a["texts"].astype(object), tokens=a["tokens"],
                              lengths=a["lengths"], truncated=a["truncated"], logprobs=a["logprobs"],
                              prompt_ids=prompt_ids)
        return Pool(samples=samples, correct=a["correct"], valid=a["valid"], text_id=a["text_id"],
                    prm_min=a.get("prm_min"), reward=a["reward"], test_pass_fraction=a.get("test_pass_fraction"))

    # ---------------------------------------------------------------- SFT

    def sft_checkpointer(self) -> checkpoint.Checkpointer:
        """The SFT phase's checkpoints (every process opens it: orbax saves collectively)."""
        if self._sft is None:
            self._sft = checkpoint.Checkpointer(self.folder / "sft", max_to_keep=1, async_save=False)
        return self._sft

    def clear(self) -> None:
        """Drops the phase files of this iteration and earlier ones (this one's checkpoint is
        saved; earlier ones may be left by a stop between a save and its clear). Every process
        calls it."""
        if self._sft is not None:
            self._sft.close()
            self._sft = None
        if distributed.is_writer():
            self._remove_through(int(self.folder.name.split("_")[-1]))

    def _remove_through(self, iteration: int) -> None:
        run = self.folder.parent
        for old in (run.iterdir() if run.is_dir() else ()):
            if old.name.startswith("iteration_") and int(old.name.split("_")[-1]) <= iteration:
                old.rmtree()
