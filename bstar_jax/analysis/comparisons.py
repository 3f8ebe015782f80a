"""Per-problem evaluation results on disk, and the paired comparisons of runs read from them.

<workdir>/eval/<run>/iteration_<i>.npz holds, per test problem, its id, whether the greedy answer
is correct and how many of the K samples are correct (docs/results.md#per-problem-results). The
comparisons pair runs of one reward by problem id within each seed (same test split, same
evaluation key) and summarise the last iteration's differences with `stats.paired_difference`.
"""
from __future__ import annotations

import io
import re

import numpy as np

from bstar_jax.core import distributed
from bstar_jax.analysis import stats

_FILE = re.compile(r"iteration_(\d+)\.npz$")
# (name, per-problem value, whether it needs the K test samples: a greedy-only evaluation,
# eval.samples_per_query = 0, measures only the metrics that do not).
METRICS = (("greedy Pass@1", lambda d: d["greedy_correct"].astype(float), False),
           # Pass@K of one problem from K samples is whether any of them is correct.
           ("Pass@K", lambda d: (d["sample_correct"] > 0).astype(float), True))


def results_path(workdir, run: str, iteration: int):
    """<workdir>/eval/<run>/iteration_<i>.npz (an `epath.Path`; the workdir may be gs://)."""
    return distributed.path(workdir) / "eval" / run / f"iteration_{int(iteration)}.npz"


def save_results(workdir, run: str, iteration: int, per_problem: dict):
    """Writes one evaluation's per-problem arrays (atomically: temp file + rename); returns the path."""
    path = results_path(workdir, run, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in per_problem.items()})
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)  # over an older file of a redone iteration
    return path


def load_results(workdir: str, run: str, iteration: int) -> dict[str, np.ndarray] | None:
    """The per-problem arrays of (run, iteration), or None when that evaluation was not kept."""
    path = results_path(workdir, run, iteration)
    if not path.exists():
        return None
    with np.load(io.BytesIO(path.read_bytes())) as f:
        return {k: f[k] for k in f.files}


def last_iteration(workdir: str, run: str) -> int | None:
    """The highest iteration with per-problem results of `run`, or None."""
    folder = distributed.path(workdir) / "eval" / run
    its = [int(m.group(1)) for f in (folder.iterdir() if folder.is_dir() else ()) if (m := _FILE.match(f.name))]
    return max(its) if its else None


def pairs(runs: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to compare, "P_0" standing for iteration 0: per reward (runs sharing the
    "+prm" suffix or not), B-STaR vs each other variant, online RFT at a fixed (T, τ) vs online RFT
    at the baseline's, then each variant vs P_0."""
    out = []
    for suffix in ("", "+prm"):
        same = [r for r in runs if r.endswith("+prm") == (suffix == "+prm")]
        bstar = "bstar" + suffix
        if bstar in same:
            out += [(bstar, r) for r in same if r != bstar]
        if "online_rft_fixed" + suffix in same and "online_rft" + suffix in same:  # Table 6
            out.append(("online_rft_fixed" + suffix, "online_rft" + suffix))
        out += [(r, "P_0" + suffix) for r in same]
    return out


def _per_seed(workdir: str, a: str, b: str, last: dict):
    """(a, b) dicts of arrays for one workdir; "P_0[+prm]" is iteration 0 of the partner run."""
    def load(name, partner):
        if name.startswith("P_0"):
            return load_results(workdir, partner, 0)
        it = last.get((workdir, name), last_iteration(workdir, name))
        return None if it is None else load_results(workdir, name, it)
    return load(a, b), load(b, a)


def paired_table(workdirs: list[str], runs: list[str], *, last: dict | None = None, num_resamples: int = 10_000,
                 seed: int = 0) -> str:
    """Markdown table of paired differences (last iteration, a - b) over `workdirs` (one per seed);
    `last` maps (workdir, run) to its last iteration (default: the highest kept). Empty when no
    pair has per-problem results in every workdir."""
    lines, last = [], last or {}
    for a, b in pairs(runs):
        found = [_per_seed(w, a, b, last) for w in workdirs]
        if not all(x is not None and y is not None for x, y in found):
            continue
        for metric, value, needs_samples in METRICS:
            if needs_samples and any(int(x["num_samples"]) == 0 or int(y["num_samples"]) == 0 for x, y in found):
                continue
            aligned = [stats.align(x["problem_id"], value(x), y["problem_id"], value(y)) for x, y in found]
            d = stats.paired_difference([p for p, _ in aligned], [q for _, q in aligned],
                                        num_resamples=num_resamples, seed=seed)
            verdict = "yes" if d.ci_excludes_zero and d.beyond_two_se else "no"
            lines.append(f"| {a} − {b} | {metric} | {' '.join(f'{x:+.3f}' for x in d.per_seed)} | {d.mean:+.3f} | "
                         f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] | {d.standard_error:.3f} | {verdict} |")
    if not lines:
        return ""
    n = len(workdirs)
    head = [f"Paired differences at the last iteration over {n} seed{'s' * (n > 1)} (a − b, same test problems; "
            "95 % CI: bootstrap over seeds, then problems within seed; significant: the CI excludes 0 "
            "and |mean| > 2 SE).", "",
            "| a − b | metric | per seed | mean | 95 % CI | SE | significant |", "|---|---|---|---|---|---|---|"]
    return "\n".join(head + lines)
