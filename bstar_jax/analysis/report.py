"""The report of finished runs: report.md with one table per variant and the paper's monitoring
curves as PNGs, and the tables over seeds (`python -m bstar_jax.report`). It reads the run log
(analysis/runlog.py: metrics.jsonl, searches/). The workdir may be a local folder or a gs:// URL
(every file goes through etils.epath)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
from etils import epath

from bstar_jax.analysis import comparisons, runlog
from bstar_jax.config import choices


def _series(rows, variant, key, sub=None):
    xs, ys = [], []
    for r in rows:
        if r["variant"] != variant:
            continue
        v = r.get(key)
        if sub is not None:
            v = (v or {}).get(str(sub))
        if v is None:
            continue
        xs.append(r["iteration"])
        ys.append(v)
    return xs, ys


def _base(run: str) -> str:
    """The variant of a run name ("bstar+prm", "bstar-r1" -> "bstar")."""
    return choices.parse_run_name(run)[0]


def _plot_curves(rows, variants, out_dir, note: str = "") -> list[str]:
    """One PNG per metric; answer-only and answer+PRM runs side by side when both ran. A variant
    keeps its colour in both panels; the (T, τ)-searching runs are solid, the others dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    s_values = sorted({int(s) for r in rows for s in (r.get("pass_at_k_s") or {})})
    panels = [("pass_at_1", None, "greedy Pass@1 (test)"), ("pass_at_k", None, "Pass@K (test)")]
    panels += [("pass_at_k_s", s, f"Pass@K-{s} (test)") for s in s_values]
    panels += [("reward_at_k_s", s, f"Reward@K-{s} (test, training reward)") for s in s_values]
    panels += [("diversity", None, "distinct-equation diversity"), ("balance_score", None, "balance score"),
               ("temperature", None, "chosen temperature T"), ("threshold", None, "chosen threshold τ")]
    groups = [(label, [v for v in variants if v.endswith("+prm") == prm])
              for label, prm in (("answer-only reward", False), ("answer+PRM reward", True))]
    groups = [g for g in groups if g[1]]
    colours = plt.get_cmap("tab10")
    known = {v: i for i, v in enumerate(choices.VARIANTS)}
    written = []
    for key, sub, title in panels:
        fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.4), squeeze=False)
        for ax, (label, runs) in zip(axes[0], groups):
            for v in runs:
                xs, ys = _series(rows, v, key, sub)
                if xs:
                    base = _base(v)
                    ax.plot(xs, ys, marker="o", label=v, color=colours(known.get(base, len(known)) % 10),
                            linestyle="-" if base in choices.SEARCHED else "--")
            ax.set_title((title if len(groups) == 1 else f"{title}, {label}") + note, fontsize=9)
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        name = f"{key}{'' if sub is None else '_' + str(sub)}.png"
        fig.tight_layout()
        _save_png(fig, out_dir / name)
        plt.close(fig)
        written.append(name)
    return written


def _plot_heatmap(workdir, out_dir) -> str | None:
    folder = epath.Path(workdir) / "searches"
    if not folder.is_dir() or not list(folder.iterdir()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(f.name for f in folder.iterdir())
    full = [n for n in names if n.startswith(("bstar_iter", "bstar+prm_iter"))]  # the full (T, τ) search when it ran
    last = (full or names)[-1]
    s = json.loads((folder / last).read_text())
    table = np.asarray(s["balance_score"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    im = ax.imshow(table, aspect="auto", origin="lower", cmap="viridis")
    ax.set_yticks(range(len(s["temperatures"])), [f"{t:.2f}" for t in s["temperatures"]])
    step = max(1, len(s["thresholds"]) // 10)
    ax.set_xticks(range(0, len(s["thresholds"]), step), [f"{t:.2f}" for t in s["thresholds"][::step]])
    ax.set_xlabel("reward threshold τ")
    ax.set_ylabel("temperature T")
    ax.set_title(f"balance score BS(T, τ), {last[:-5]}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    name = "balance_heatmap.png"
    _save_png(fig, out_dir / name)
    plt.close(fig)
    return name


def _save_png(fig, path: epath.Path) -> None:
    """The figure as PNG bytes, written through epath (matplotlib writes local files only)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    path.write_bytes(buffer.getvalue())


def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_report(workdir: str, *, title: str = "B-STaR run", command: str | None = None) -> str:
    """Writes <workdir>/report.md and <workdir>/plots/*.png from metrics.jsonl; returns the path."""
    rows = runlog.read_metrics(workdir)
    plots = epath.Path(workdir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    names = _plot_curves(rows, variants, plots) if rows else []
    heat = _plot_heatmap(workdir, plots)
    s_values = sorted({int(s) for r in rows for s in (r.get("pass_at_k_s") or {})})
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["Pass@K-S counts distinct correct responses among K test samples; Reward@K-S asks whether the "
              "S responses ranked highest by the training reward are all correct (Reward@K-1 = Best-of-K). "
              "Under the answer-only reward the two coincide at S = 1.", ""]
    for v in variants:
        head = ["iter", "T", "τ", "BS", "Pass@1", "Pass@K"]
        head += [f"Pass@K-{s}" for s in s_values] + [f"Reward@K-{s}" for s in s_values]
        head += ["diversity", "selected", "precision", "SFT loss", "s"]
        lines += [f"## {v}", ""]
        fitted = [r["fitted_threshold"] for r in rows if r["variant"] == v and r.get("fitted_threshold") is not None]
        if fitted:  # a baseline with the PRM whose τ was fitted on the dev subset (baseline.prm_threshold)
            lines += [f"τ = {fitted[0]:g} fitted at its first iteration on the dev subset (the balance score's best "
                      f"τ at the baseline's T), held since.", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["variant"] == v):
            cells = [r["iteration"], r["temperature"], r["threshold"], r["balance_score"], r["pass_at_1"],
                     r["pass_at_k"]]
            cells += [(r.get("pass_at_k_s") or {}).get(str(s)) for s in s_values]
            cells += [(r.get("reward_at_k_s") or {}).get(str(s)) for s in s_values]
            cells += [r["diversity"], r["n_selected"], r["selection_precision"], r["sft_loss"],
                      _fmt(r["seconds"], 1)]
            lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
        lines.append("")
    if names:
        lines += ["## Curves", ""] + [f"![{n[:-4]}](plots/{n})" for n in names] + [""]
    if heat:
        lines += ["## Last search", "", f"![balance heat map](plots/{heat})", ""]
    path = epath.Path(workdir) / "report.md"
    path.write_text("\n".join(lines))
    return str(path)


def summarize_seeds(workdirs: list[str], primary: str | None = None) -> str:
    """Markdown table over runs of one config with different seeds: P_0 and each variant's last
    iteration, mean ± sample standard deviation of greedy Pass@1, Pass@K, Pass@K-S, Reward@K-1 and
    diversity, then the chosen (T, τ) per iteration of each searched run, then paired differences
    with confidence intervals and the verdict (`comparisons`, docs/results.md). `primary`: the
    primary comparison "a - b"; None: config.primary of the workdirs' run records."""
    per_dir = [runlog.read_metrics(w) for w in workdirs]
    if not all(per_dir):
        raise ValueError(f"no metrics.jsonl rows in {[w for w, r in zip(workdirs, per_dir) if not r]}")
    # Only the runs every workdir has: a statistic over seeds needs each seed.
    variants = [v for v in dict.fromkeys(r["variant"] for r in per_dir[0])
                if all(any(r["variant"] == v for r in rows) for rows in per_dir)]
    if not variants:
        raise ValueError(f"no run (variant) is in every one of {list(workdirs)}")
    s_values = sorted({int(s) for r in per_dir[0] for s in (r.get("pass_at_k_s") or {})} - {1})
    cols = [("greedy Pass@1", lambda r: r["pass_at_1"]), ("Pass@K", lambda r: r["pass_at_k"])]
    cols += [(f"Pass@K-{s}", lambda r, s=s: (r["pass_at_k_s"] or {}).get(str(s))) for s in s_values]
    cols += [("Reward@K-1", lambda r: (r["reward_at_k_s"] or {}).get("1")), ("diversity", lambda r: r["diversity"])]
    # the coding task's (docs/code.md#metrics): distinct programs, and the share of tests passed
    cols += [(f"Pass@K-{s} programs", lambda r, s=s: (r.get("pass_at_k_s_programs") or {}).get(str(s)))
             for s in s_values]
    cols += [("tests passed", lambda r: r.get("eval_test_pass_fraction"))]
    cols = [(n, get) for n, get in cols if any(get(r) is not None for rows in per_dir for r in rows)]  # measured ones

    def cell(rows, get):
        x = np.array([get(r) for r in rows], float)
        if np.isnan(x).all():  # not measured (e.g. a greedy-only evaluation)
            return "–"
        return f"{x.mean():.3f} ± {x.std(ddof=1) if len(x) > 1 else 0.0:.3f}"

    def pick(rows, variant, last):
        its = [r for r in rows if r["variant"] == variant]
        return max(its, key=lambda r: r["iteration"]) if last else min(its, key=lambda r: r["iteration"])

    lines = ["| run | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    p0 = [pick(rows, variants[0], last=False) for rows in per_dir]
    lines.append("| P_0 (iteration 0) | " + " | ".join(cell(p0, g) for _, g in cols) + " |")
    for v in variants:
        last = [pick(rows, v, last=True) for rows in per_dir]
        lines.append(f"| {v}, iteration {last[0]['iteration']} | " + " | ".join(cell(last, g) for _, g in cols) + " |")
    lines.append("")
    # The runs whose (T, τ) is not the baseline's: searched each iteration, fixed from config.fixed,
    # or a baseline's τ fitted at its first iteration.
    fitted = {r["variant"] for rows in per_dir for r in rows if r.get("fitted_threshold") is not None}
    for v in (v for v in variants if _base(v) in choices.SEARCHED or _base(v) == choices.FIXED or v in fitted):
        for w, rows in zip(workdirs, per_dir):
            chosen = [(r["temperature"], r["threshold"]) for r in rows if r["variant"] == v and r["iteration"] > 0]
            lines.append(f"- {v}, {w}: " + " ".join(f"({t:g}, {tau:g})" for t, tau in chosen))
    balance = [("balance score of the iteration's selection", lambda r: r.get("balance_score"))]
    lines += [""] + per_iteration(per_dir, variants, cols + balance)
    last_its = {(w, v): pick(rows, v, last=True)["iteration"] for w, rows in zip(workdirs, per_dir) for v in variants}
    note = "--primary, given after the run"
    if primary is None:
        primary, note = comparisons.recorded_primary(workdirs)
    # Reads eval/<run>/iteration_<i>.npz.
    result = comparisons.compare(workdirs, variants, per_dir, last=last_its, primary=primary, primary_note=note)
    paired = comparisons.paired_table(result)
    return "\n".join(lines + (["", paired, "", comparisons.verdict(result)] if paired else []))


def per_iteration(per_dir: list[list[dict]], variants: list[str], cols) -> list[str]:
    """Markdown lines: for each metric of `cols`, a run x iteration table of the mean over seeds
    (± sample sd when there are several), then the (T, τ) each run used per iteration (per seed,
    separated by " / ") -- the curves of exploration and of the chosen configurations."""
    its = sorted({r["iteration"] for rows in per_dir for r in rows})
    head = "| run | " + " | ".join(f"it {i}" for i in its) + " |"
    rule = "|---" * (len(its) + 1) + "|"

    def at(rows, v, i):
        return next((r for r in rows if r["variant"] == v and r["iteration"] == i), None)

    def cell(v, i, get):
        x = np.array([y for y in (get(r) for r in (at(rows, v, i) for rows in per_dir) if r is not None)
                      if y is not None], float)
        if x.size == 0:
            return "–"
        return f"{x.mean():.3f}" + (f" ± {x.std(ddof=1):.3f}" if x.size > 1 else "")

    seeds = f" (mean over {len(per_dir)} seeds ± sd)" if len(per_dir) > 1 else ""
    lines = []
    for name, get in cols:
        lines += [f"Per iteration: {name}{seeds}", "", head, rule]
        lines += [f"| {v} | " + " | ".join(cell(v, i, get) for i in its) + " |" for v in variants]
        lines.append("")

    def config_cell(v, i):
        rs = [at(rows, v, i) for rows in per_dir]
        return " / ".join("–" if r is None or r["temperature"] is None else f"{r['temperature']:g}, {r['threshold']:g}"
                          for r in rs)

    lines += ["Per iteration: (T, τ) used", "", head, rule]
    lines += [f"| {v} | " + " | ".join(config_cell(v, i) for i in its) + " |" for v in variants]
    return lines


def mean_rows(per_dir: list[list[dict]]) -> list[dict]:
    """One metrics row per (run, iteration): the mean over seeds of every number in the rows
    (None where no seed has it), nested ones (Pass@K-S, Reward@K-S) per S alike."""
    def mean(xs):
        xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
        return float(np.mean(xs)) if xs else None

    groups: dict[tuple, list[dict]] = {}
    for rows in per_dir:
        for r in rows:
            groups.setdefault((r["variant"], r["iteration"]), []).append(r)
    out = []
    for (variant, iteration), rs in groups.items():
        row = {"variant": variant, "iteration": iteration}
        for k in dict.fromkeys(k for r in rs for k in r if k not in row):
            values = [r.get(k) for r in rs]
            if any(isinstance(v, dict) for v in values):
                subs = sorted({s for v in values for s in (v or {})}, key=int)
                row[k] = {s: mean([(v or {}).get(s) for v in values]) for s in subs}
            else:
                row[k] = mean(values)
        out.append(row)
    return out


def plot_seeds(workdirs: list[str], out_dir: str) -> list[str]:
    """The monitoring curves (as in report.md) of the mean over seeds, as PNGs in `out_dir`."""
    per_dir = [runlog.read_metrics(w) for w in workdirs]
    rows = mean_rows(per_dir)
    folder = epath.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(r["variant"] for r in per_dir[0]))
    return _plot_curves(rows, variants, folder, note=f", mean of {len(per_dir)} seeds" if len(per_dir) > 1 else "")


if __name__ == "__main__":  # python -m bstar_jax.report runs/demo_seed0 runs/demo_seed1 ... [--plots DIR]
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Tables over seeds (and curves of their mean with --plots).")
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--plots", default="", help="folder for PNG curves of the mean over seeds")
    parser.add_argument("--primary", default=None, help='the primary comparison "a - b" (default: config.primary '
                                                        "from the workdirs' run records)")
    args = parser.parse_args()
    try:
        print(summarize_seeds(args.workdirs, args.primary))
    except ValueError as e:  # empty workdirs, a malformed --primary, records that disagree: the user's to fix
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.plots:
        print("\n".join(f"![{n[:-4]}]({os.path.join(args.plots, n)})" for n in plot_seeds(args.workdirs, args.plots)))
