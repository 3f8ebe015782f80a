"""What a finished run prints last: the answer to its question, on one screen.

Per run: P_0 -> last evaluated greedy Pass@1, Pass@K and diversity; the (T, τ) each iteration
used; the paired difference of the two runs the config compares (B-STaR − online RFT by default)
over the test problems of this one seed, with a 95 % interval that leaves out run-to-run training
noise (one seed cannot measure it: `python -m bstar_jax.report` over several seeds does); and
where report.md, the plots and the exported policies are.
"""
from __future__ import annotations

import math

import numpy as np
from etils import epath

from bstar_jax.analysis import comparisons, stats
from bstar_jax.analysis.runlog import read_metrics

Z95 = 1.959964  # two-sided 95 % normal quantile: the test set has hundreds of problems


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _choices(rows: list[dict]) -> str:
    picks = [(r.get("temperature"), r.get("threshold")) for r in rows if r["iteration"] > 0]
    return ", ".join(f"({_fmt(t, 1)}, {_fmt(u, 2)})" for t, u in picks if t is not None) or "-"


def paired_within_seed(workdir: str, a: str, b: str) -> tuple[float, float, int] | None:
    """(mean of a − b in greedy correctness at each run's last evaluation, its problem-level
    standard error, number of problems), or None when either run has no per-problem results."""
    last_a, last_b = comparisons.last_iteration(workdir, a), comparisons.last_iteration(workdir, b)
    if last_a is None or last_b is None:
        return None
    ra, rb = comparisons.load_results(workdir, a, last_a), comparisons.load_results(workdir, b, last_b)
    if ra is None or rb is None:
        return None
    x, y = stats.align(ra["problem_id"], ra["greedy_correct"], rb["problem_id"], rb["greedy_correct"])
    d = x - y
    se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


def for_config(config) -> str:
    """The closing summary of the run `config` describes, comparing its primary pair (when that is
    two runs, not a run against P_0); what `run.py` and the notebook print last."""
    from bstar_jax.config.choices import parse_primary

    primary = parse_primary(str(config.get("primary", "")))
    compare = primary if primary and "P_0" not in primary[1] else None
    return summary(config.workdir, compare=compare)


def summary(workdir: str, *, compare: tuple[str, str] | None = None) -> str:
    """The closing summary of `workdir` as text (see the module docstring). `compare` is the pair
    (a, b) to difference; by default B-STaR against online RFT of the same reward when both ran."""
    rows = read_metrics(workdir)
    if not rows:
        return f"{workdir}: no metrics yet"
    runs = list(dict.fromkeys(r["variant"] for r in rows))
    w = max(len(r) for r in runs) + 2
    lines = [f"Summary of {workdir}", "",
             f"{'run':<{w}} {'greedy Pass@1 (P_0 -> last)':<28} {'Pass@K':<15} {'diversity':<15} (T, τ) per iteration"]
    for run in runs:
        mine = sorted((r for r in rows if r["variant"] == run), key=lambda r: r["iteration"])
        evaluated = [r for r in mine if r.get("pass_at_1") is not None]
        first, last = evaluated[0], evaluated[-1]
        lines.append(f"{run:<{w}} {_fmt(first['pass_at_1']) + ' -> ' + _fmt(last['pass_at_1']):<28} "
                     f"{_fmt(first.get('pass_at_k')) + ' -> ' + _fmt(last.get('pass_at_k')):<15} "
                     f"{_fmt(first.get('diversity')) + ' -> ' + _fmt(last.get('diversity')):<15} "
                     f"{_choices(mine)}")
    pairs = [compare] if compare else [(f"bstar{s}", f"online_rft{s}") for s in ("", "+prm")]
    for a, b in pairs:
        if a not in runs or b not in runs:
            continue
        got = paired_within_seed(workdir, a, b)
        if got is None:
            continue
        mean, se, n = got
        lines += ["", f"{a} − {b}, greedy Pass@1 at the last evaluation: {mean:+.3f} "
                      f"[{mean - Z95 * se:+.3f}, {mean + Z95 * se:+.3f}]",
                  f"  (95 %, paired over the {n} test problems of this seed; it leaves out run-to-run training",
                  "  noise, so an interval over seeds is wider: python -m bstar_jax.report <workdirs of several seeds>)"]
    root = epath.Path(workdir)
    lines += ["", f"report:   {root / 'report.md'}", f"plots:    {root / 'plots'}"]
    policies = root / "policies"
    if policies.exists():
        lines.append(f"policies: {policies}/<run>/final (Hugging Face folders)")
    return "\n".join(lines)
