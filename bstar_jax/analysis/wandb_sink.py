"""An optional Weights & Biases mirror of the run's metrics (`config.wandb.enabled`, off by default).

`metrics.jsonl` stays the source of truth; this sink only mirrors it, from the writer process
alone. `wandb` is imported when the sink starts, so a run without it needs no wandb install.
Mode: "online" and "offline" are wandb's own; "auto" (the default) goes online when an API key is
configured and the service answers within `init_timeout_s`, and offline otherwise (no credentials,
no network): offline runs land in `<workdir>/wandb/` and `wandb sync` uploads them later.
Each iteration also logs a small table of sampled completions (question, completion, reward,
correct), as TRL's `log_completions` does.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

MODES = ("auto", "online", "offline")


def _flat(row: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics row, nested keys joined with '/'."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            out[name] = float(value)
    return out


class WandbSink:
    """Mirrors metrics rows and completion tables to one wandb run per workdir."""

    def __init__(self, workdir: str, *, project: str, mode: str = "auto", config: dict | None = None,
                 run_name: str | None = None, init_timeout_s: float = 30.0):
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {MODES}, got {mode!r}")
        import wandb  # lazily: only runs that ask for the sink need the package

        self._wandb = wandb
        os.makedirs(workdir, exist_ok=True)
        common = dict(project=project, dir=workdir, config=config or {}, name=run_name,
                      id=_run_id(workdir), resume="allow", reinit="finish_previous")
        has_key = bool(os.environ.get("WANDB_API_KEY")) or mode == "online"
        self.run = None
        if mode == "online" or (mode == "auto" and has_key and os.environ.get("WANDB_MODE") != "offline"):
            try:
                self.run = wandb.init(mode="online", settings=wandb.Settings(init_timeout=init_timeout_s), **common)
            except Exception as e:  # no network or no login: keep the run, offline
                if mode == "online":
                    raise
                logging.warning("wandb: online start failed (%s); logging offline to %s/wandb", e, workdir)
        if self.run is None:
            self.run = wandb.init(mode="offline", **common)
        self.mode = "offline" if self.run.settings.mode == "offline" else "online"

    def log(self, row: dict) -> None:
        """One metrics row (iteration, variant, scalars); the step is the row's iteration."""
        scalars = {f"{row['variant']}/{k}": v for k, v in _flat(row).items() if k != "iteration"}
        scalars["iteration"] = int(row["iteration"])
        self.run.log(scalars)

    def log_completions(self, run: str, iteration: int, samples: Sequence[dict[str, Any]]) -> None:
        """A table of sampled completions: each sample a dict with question, completion, reward, correct."""
        columns = ["iteration", "question", "completion", "reward", "correct"]
        table = self._wandb.Table(columns=columns)
        for s in samples:
            table.add_data(int(iteration), str(s["question"]), str(s["completion"]), float(s["reward"]),
                           bool(s["correct"]))
        self.run.log({f"{run}/completions": table, "iteration": int(iteration)})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _run_id(workdir: str) -> str:
    """A stable run id per workdir, so a resumed run continues the same wandb run."""
    import hashlib

    return hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:16]
