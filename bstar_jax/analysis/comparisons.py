"""Per-problem evaluation results on disk, and the paired comparisons of runs read from them.

<workdir>/eval/<run>/iteration_<i>.npz holds, per test problem, its id, whether the greedy answer
is correct and how many of the K samples are correct (docs/results.md#per-problem-results). The
comparisons pair runs of one reward by problem id within each seed (same test split, same
evaluation key) and summarise the last iteration's differences with `stats.paired_difference`:
intervals over seeds with the run-to-run noise measured from replicate runs, or else from the A/A
pair; one comparison is primary (config.primary), the others exploratory and Holm-corrected
(docs/results.md#how-intervals-are-computed).
"""
from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np

from bstar_jax.analysis import stats
from bstar_jax.config import choices
from bstar_jax.core import files

_FILE = re.compile(r"iteration_(\d+)\.npz$")
# (name, per-problem value, whether it needs the K test samples: a greedy-only evaluation,
# eval.samples_per_query = 0, measures only the metrics that do not).
METRICS = (("greedy Pass@1", lambda d: d["greedy_correct"].astype(float), False),
           # Pass@K of one problem from K samples is whether any of them is correct.
           ("Pass@K", lambda d: (d["sample_correct"] > 0).astype(float), True))
PRIMARY_METRIC = "greedy Pass@1"
# Under the answer-only reward (0 or 1) every τ in [0, 1) keeps the same responses, so this
# variant at T = baseline T is online RFT with other random draws: an A/A pair.
A_A = ("bstar_threshold_only", "online_rft")
LEVEL = 0.95


def results_path(workdir, run: str, iteration: int):
    """<workdir>/eval/<run>/iteration_<i>.npz (an `epath.Path`; the workdir may be gs://)."""
    return files.path(workdir) / "eval" / run / f"iteration_{int(iteration)}.npz"


def save_results(workdir, run: str, iteration: int, per_problem: dict):
    """Writes one evaluation's per-problem arrays (atomically: temp file + rename); returns the path."""
    path = results_path(workdir, run, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in per_problem.items()})
    # over an older file of a redone iteration
    files.write_then_rename(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
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
    folder = files.path(workdir) / "eval" / run
    its = [int(m.group(1)) for f in (folder.iterdir() if folder.is_dir() else ()) if (m := _FILE.match(f.name))]
    return max(its) if its else None


def pairs(runs: list[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to compare, "P_0" standing for iteration 0: per reward (runs sharing the
    "+prm" suffix or not), B-STaR vs each other variant, online RFT at a fixed (T, τ) vs online RFT
    at the baseline's, then each variant vs P_0. Replicates (-r<k>) are not compared: they
    measure the run noise."""
    runs = [r for r in runs if choices.parse_run_name(r)[2] == 0]
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


def recorded_primary(workdirs: list[str]) -> tuple[str | None, str]:
    """(config.primary, where it comes from) of the workdirs' run records; (None, reason) when no
    record has one. Raises ValueError when the records disagree."""
    found = {}
    changed = False
    for w in workdirs:
        path = files.path(w) / "run_config.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        if "primary" in record.get("config", {}):
            found[w] = record["config"]["primary"]
        changed |= any(c.startswith("primary:") for h in record.get("history", []) for c in h.get("changes", []))
    if len(set(found.values())) > 1:
        raise ValueError(f"the run records name different primary comparisons: {found}; pass --primary")
    if not found:
        return None, "no run record names one"
    note = ("config.primary, changed after results existed (run record history): not chosen before the run"
            if changed else "config.primary, recorded before the run")
    return next(iter(found.values())), note


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison a - b on one metric."""

    a: str
    b: str
    metric: str
    diff: stats.PairedDifference
    role: str  # "primary", "exploratory" or "A/A check"
    holm_p: float | None = None  # exploratory rows: Holm-adjusted over all exploratory rows

    @property
    def resolved(self) -> bool:
        return (self.diff.p_value if self.holm_p is None else self.holm_p) < 1 - LEVEL


@dataclasses.dataclass(frozen=True)
class Comparisons:
    rows: list[Row]
    seeds: int
    noise: dict  # metric -> stats.RunNoise
    primary: tuple[str, str] | None
    primary_note: str


def _last(workdir, run, last):
    return last.get((workdir, run), last_iteration(workdir, run))


def _load(workdir: str, a: str, b: str, last: dict):
    """(a, b) dicts of arrays for one workdir; "P_0[+prm]" is iteration 0 of the partner run."""
    def load(name, partner):
        if name.startswith("P_0"):
            return load_results(workdir, partner, 0)
        it = _last(workdir, name, last)
        return None if it is None else load_results(workdir, name, it)
    return load(a, b), load(b, a)


def _is_a_a(rows: list[dict]) -> bool:
    """Whether A_A's runs in one workdir's metrics rows are one algorithm: answer-only, the same T
    every iteration and every τ in [0, 1)."""
    by = {(r["variant"], r["iteration"]): r for r in rows}
    its = sorted(i for v, i in by if v == A_A[0] and i > 0)
    if not its:
        return False
    for i in its:
        x, y = by.get((A_A[0], i)), by.get((A_A[1], i))
        if y is None or x["temperature"] != y["temperature"]:
            return False
        if not all(r["threshold"] is not None and 0 <= r["threshold"] < 1 for r in (x, y)):
            return False
    return True


def run_noise(workdirs: list[str], per_dir: list[list[dict]], last: dict) -> dict:
    """metric -> stats.RunNoise: from replicate runs (a run and its -r<k> in one workdir, at the
    run's last iteration) where there are any, else from the A/A pair, else not measured."""
    def group_means(groups, value, needs_samples):
        out = []
        for workdir, names in groups:
            it = _last(workdir, names[0], last)
            found = [load_results(workdir, n, it) for n in names] if it is not None else []
            found = [d for d in found if d is not None and not (needs_samples and int(d["num_samples"]) == 0)]
            out.append([float(value(d).mean()) for d in found])
        return out

    replicates, a_a = [], []
    for workdir, rows in zip(workdirs, per_dir):
        names = list(dict.fromkeys(r["variant"] for r in rows))
        by_run: dict[tuple, list[str]] = {}
        for n in names:
            variant, prm, k = choices.parse_run_name(n)
            by_run.setdefault((variant, prm), []).append(n)
        # The replicate-0 run first: its last iteration is the group's.
        replicates += [(workdir, sorted(g, key=lambda n: choices.parse_run_name(n)[2]))
                       for g in by_run.values() if len(g) > 1]
        if all(n in names for n in A_A) and _is_a_a(rows):
            a_a.append((workdir, list(A_A)))
    out = {}
    for metric, value, needs_samples in METRICS:
        if replicates:
            out[metric] = stats.run_noise(group_means(replicates, value, needs_samples), "replicates")
        elif a_a:
            out[metric] = stats.run_noise(group_means(a_a, value, needs_samples), "A/A pair")
        else:
            out[metric] = stats.RunNoise()
    return out


def compare(workdirs: list[str], runs: list[str], per_dir: list[list[dict]], *, last: dict | None = None,
            primary: str | None = None, primary_note: str = "") -> Comparisons:
    """Every comparison of `runs` (those in every workdir, one workdir per seed) at the last
    iteration (`last`: (workdir, run) -> iteration; default the highest kept), on every metric
    measured in every seed: the pairs of `pairs`, the primary one and the A/A check."""
    last = last or {}
    noise = run_noise(workdirs, per_dir, last)
    try:
        primary_pair = choices.parse_primary(primary or "")
    except ValueError as e:
        raise ValueError(f"primary comparison {primary!r}: {e}") from None
    todo = [(a, b, "exploratory") for a, b in pairs(runs) if (a, b) != primary_pair]
    if primary_pair:
        todo.insert(0, (*primary_pair, "primary"))
    a_a = all(n in runs for n in A_A) and all(_is_a_a(rows) for rows in per_dir)
    if a_a:
        todo.append((*A_A, "A/A check"))
    rows = []
    for a, b, role in todo:
        found = [_load(w, a, b, last) for w in workdirs]
        if not all(x is not None and y is not None for x, y in found):
            continue
        for metric, value, needs_samples in METRICS:
            if needs_samples and any(int(x["num_samples"]) == 0 or int(y["num_samples"]) == 0 for x, y in found):
                continue
            aligned = [stats.align(x["problem_id"], value(x), y["problem_id"], value(y)) for x, y in found]
            # The A/A pair measures run noise when no replicate does: its own check leaves itself out.
            n = noise[metric] if not (role == "A/A check" and noise[metric].source == "A/A pair") else stats.RunNoise()
            d = stats.paired_difference([p for p, _ in aligned], [q for _, q in aligned], noise=n, level=LEVEL,
                                        trained_runs=1 if b.startswith("P_0") or a.startswith("P_0") else 2)
            rows.append(Row(a, b, metric, d, role if role != "primary" or metric == PRIMARY_METRIC
                            else "exploratory"))
    family = [i for i, r in enumerate(rows) if r.role == "exploratory"]
    for i, p in zip(family, stats.holm([rows[i].diff.p_value for i in family])):
        rows[i] = dataclasses.replace(rows[i], holm_p=p)
    return Comparisons(rows, len(workdirs), noise, primary_pair, primary_note)


def _noise_line(c: Comparisons) -> str:
    measured = {m: n for m, n in c.noise.items() if n.measured}
    if not measured:
        return ("run noise not included: no replicate runs (config.replicate) and no A/A pair, so the "
                "intervals cover the seeds and the test problems only" + (" (with one seed, the test problems only)"
                                                                       if c.seeds == 1 else ""))
    n = next(iter(measured.values()))
    source = (f"{n.dof} replicate pair{'s' * (n.dof > 1)} (a run and its -r<k>)" if n.source == "replicates" else
              f"the A/A pair {A_A[0]} vs {A_A[1]} (answer-only: one algorithm) in {n.dof} seed{'s' * (n.dof > 1)}")
    sds = ", ".join(f"{n.variance ** 0.5:.3f} ({m})" for m, n in measured.items())
    return f"run noise σ_run = {sds}, from {source}"


def paired_table(c: Comparisons) -> str:
    """Markdown: one row per comparison and metric; empty when there is none."""
    if not c.rows:
        return ""
    head = [f"Paired differences at the last iteration over {c.seeds} seed{'s' * (c.seeds > 1)} (a − b, same test "
            f"problems; 95 % CI: the wider of the t interval over seeds and the noise model's; {_noise_line(c)}; "
            f"resolved: p < 0.05, Holm-corrected over the {sum(r.role == 'exploratory' for r in c.rows)} "
            "exploratory rows; docs/results.md#how-intervals-are-computed).", "",
            "| a − b | metric | per seed | mean | 95 % CI | p | Holm p | resolved |", "|---|---|---|---|---|---|---|---|"]
    lines = []
    for r in c.rows:
        d = r.diff
        holm = f"{r.holm_p:.3f}" if r.holm_p is not None else r.role
        lines.append(f"| {r.a} − {r.b} | {r.metric} | {' '.join(f'{x:+.3f}' for x in d.per_seed)} | {d.mean:+.3f} | "
                     f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] | {d.p_value:.3f} | {holm} | {'yes' if r.resolved else 'no'} |")
    return "\n".join(head + lines)


def _summary(r: Row) -> str:
    d = r.diff
    return f"{r.a} − {r.b}, {r.metric}: {d.mean:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}], p = {d.p_value:.3f}"


def verdict(c: Comparisons) -> str:
    """The lines a reader should take away: the primary comparison's result, how many exploratory
    ones survive Holm, and the A/A check."""
    lines = [f"Verdict (95 %, {c.seeds} seed{'s' * (c.seeds > 1)}; {_noise_line(c)}):"]
    primary = [r for r in c.rows if r.role == "primary"]
    if primary:
        r = primary[0]
        lines.append(f"- Primary ({c.primary_note}): {_summary(r)}: "
                     + ("resolved." if r.resolved else "not resolved (the interval covers 0)."))
    elif c.primary:
        lines.append(f"- Primary ({c.primary_note}): {c.primary[0]} − {c.primary[1]}: not measured in these workdirs.")
    else:
        lines.append(f"- No primary comparison ({c.primary_note}; pass --primary \"a - b\"): every comparison is "
                     "exploratory.")
    family = [r for r in c.rows if r.role == "exploratory"]
    kept = [r for r in family if r.resolved]
    lines.append(f"- Exploratory: {len(kept)} of {len(family)} resolved after Holm's correction"
                 + (": " + "; ".join(f"{_summary(r)}, Holm p = {r.holm_p:.3f}" for r in kept) if kept else "") + ".")
    for r in (r for r in c.rows if r.role == "A/A check"):
        own = c.noise[r.metric].source == "A/A pair"
        lines.append(f"- A/A check, {_summary(r)}"
                     + (" (run noise left out: this pair is its source)" if own else "") + ": "
                     + ("excludes 0: the intervals call a difference between two runs of one algorithm real; read "
                        "differences of this size as noise." if r.diff.ci_excludes_zero else "covers 0, as it should."))
    return "\n".join(lines)
