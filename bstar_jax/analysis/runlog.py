"""The run log: what a run writes while it runs. metrics.jsonl gets one row per iteration (and
TensorBoard events, and a mirror such as W&B), searches/ each iteration's BS(T, τ) table. The
workdir may be a local folder or a gs:// URL (every file goes through etils.epath); the report
(analysis/report.py) reads these files back."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from etils import epath

from bstar_jax.core import files

# Keys every metrics.jsonl row carries (docs/algorithm.md#evaluation).
REQUIRED_KEYS = ("iteration", "variant", "temperature", "threshold", "balance_score", "pass_at_1",
                 "pass_at_k", "pass_at_k_s", "reward_at_k_s", "diversity", "n_selected",
                 "selection_precision", "sft_loss", "seconds")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    if hasattr(x, "item") and getattr(x, "shape", None) == ():
        return _jsonable(x.item())
    return x


class MetricsLog:
    """Appends one JSON object per iteration to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool = True, sink=None):
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.workdir = workdir
        self.enabled = enabled
        self.sink = sink if enabled else None  # e.g. analysis.wandb_sink.WandbSink: a mirror, never the source
        self._writers: dict[str, Any] = {}

    def rows(self) -> list[dict]:
        return read_metrics(self.workdir)

    def drop_after(self, variant: str, iteration: int) -> None:
        """Forgets rows of `variant` past `iteration` (a resumed run rewrites them identically)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.workdir)
                if not (r["variant"] == variant and r["iteration"] > iteration)]
        files.write_then_rename(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in keep)))

    def write(self, row: dict) -> None:
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise KeyError(f"metrics row lacks {missing}")
        if not self.enabled:
            return
        row = _jsonable(row)
        if any(r["variant"] == row["variant"] and r["iteration"] == row["iteration"] for r in self.rows()):
            # A rerun that redoes an iteration (killed after its row, before its checkpoint)
            # replaces the row instead of appending a second one.
            self.drop_after(row["variant"], row["iteration"] - 1)
        line = json.dumps(row) + "\n"
        if "://" in str(self.path):  # object stores cannot append: rewrite the file
            self.path.write_text((self.path.read_text() if self.path.exists() else "") + line)
        else:
            with self.path.open("a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        self._tensorboard(row)
        if self.sink is not None:
            self.sink.log(row)

    def _tensorboard(self, row: dict) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # events are a convenience; the JSONL is the record
            return
        variant = row["variant"]
        if variant not in self._writers:
            self._writers[variant] = SummaryWriter(str(epath.Path(self.workdir) / "tensorboard" / variant))
        w, step = self._writers[variant], row["iteration"]
        for key, value in _flat_scalars(row).items():
            w.add_scalar(key, value, step)
        w.flush()

    def log_completions(self, run: str, iteration: int, samples: list[dict]) -> None:
        """A few sampled completions (question, completion, reward, correct) to the mirror, if any."""
        if self.sink is not None and samples:
            self.sink.log_completions(run, iteration, samples)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        if self.sink is not None:
            self.sink.close()


def _flat_scalars(row: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if k in ("iteration", "variant"):
            continue
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def read_metrics(workdir: str) -> list[dict]:
    """All rows of <workdir>/metrics.jsonl (an unfinished last line, from a kill, is ignored)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def save_search_table(workdir: str, variant: str, iteration: int, temperatures, thresholds, table) -> str:
    """Stores one iteration's BS(T, τ) table for the heat map."""
    folder = epath.Path(workdir) / "searches"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}_iter{iteration:03d}.json"
    path.write_text(json.dumps(_jsonable({"temperatures": list(temperatures), "thresholds": list(thresholds),
                                          "balance_score": np.asarray(table).tolist()})))
    return str(path)
