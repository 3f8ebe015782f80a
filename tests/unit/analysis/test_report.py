"""The seed summary: means and sample standard deviations over workdirs, P_0 and last iterations."""
import json

import pytest

from bstar_jax.analysis import report, runlog


def _write(workdir, pass1_by_variant):
    workdir.mkdir()
    with open(workdir / "metrics.jsonl", "w") as f:
        for variant, values in pass1_by_variant.items():
            for it, p in enumerate(values):
                f.write(json.dumps(dict(
                    iteration=it, variant=variant, temperature=None if it == 0 else 0.7,
                    threshold=None if it == 0 else 0.5, pass_at_1=p, pass_at_k=2 * p,
                    pass_at_k_s={"1": 2 * p, "2": p}, reward_at_k_s={"1": 2 * p, "2": p}, diversity=0.9)) + "\n")


def test_summarize_seeds(tmp_path):
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2, 0.3], "online_rft": [0.1, 0.15, 0.2]})
    _write(tmp_path / "s1", {"bstar": [0.3, 0.4, 0.5], "online_rft": [0.3, 0.35, 0.4]})
    table = report.summarize_seeds([str(tmp_path / "s0"), str(tmp_path / "s1")])
    lines = table.splitlines()
    assert lines[0] == "| run | greedy Pass@1 | Pass@K | Pass@K-2 | Reward@K-1 | diversity |"
    # P_0 = iteration 0 of the first variant; sd with ddof=1: |0.1 - 0.3| / sqrt(2).
    assert lines[2].startswith("| P_0 (iteration 0) | 0.200 ± 0.141 | 0.400 ± 0.283 |")
    assert lines[3].startswith("| bstar, iteration 2 | 0.400 ± 0.141 |")
    assert lines[4].startswith("| online_rft, iteration 2 | 0.300 ± 0.141 |")
    assert any(line.startswith("- bstar, ") and "(0.7, 0.5) (0.7, 0.5)" in line for line in lines)
    assert not any(line.startswith("- online_rft") for line in lines)


def test_summarize_seeds_keeps_the_runs_every_seed_has(tmp_path):
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2], "online_rft": [0.1, 0.3]})
    _write(tmp_path / "s1", {"bstar": [0.3, 0.2]})  # online RFT not run on this seed
    lines = report.summarize_seeds([str(tmp_path / "s0"), str(tmp_path / "s1")]).splitlines()
    assert lines[3].startswith("| bstar, iteration 1 | 0.200 ± 0.000 |")
    assert not any("online_rft" in line for line in lines)


def test_summarize_seeds_names_an_empty_workdir(tmp_path):
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        report.summarize_seeds([str(tmp_path / "s0"), str(tmp_path / "empty")])


def test_summarize_seeds_pairs_runs_by_problem(tmp_path):
    """Per-problem results give paired differences: B-STaR solves 64 more of 512 problems greedily
    than online RFT in every seed; P_0 and online RFT tie on every problem (a zero-width CI)."""
    import numpy as np

    from bstar_jax.analysis import comparisons

    rng = np.random.default_rng(0)
    ids = np.array([f"p{i}" for i in range(512)])
    workdirs = []
    for seed in range(2):
        work = tmp_path / f"s{seed}"
        _write(work, {"bstar": [0.1, 0.2], "online_rft": [0.1, 0.15]})
        p0 = rng.random(512) < 0.2
        rft = p0.copy()
        bstar = rft.copy()
        bstar[np.flatnonzero(~rft)[:64]] = True
        for run, it, greedy in [("bstar", 0, p0), ("online_rft", 0, p0), ("bstar", 1, bstar), ("online_rft", 1, rft)]:
            order = rng.permutation(512)  # rows in any order: pairs are matched by id
            comparisons.save_results(str(work), run, it, {
                "problem_id": ids[order], "greedy_correct": greedy[order],
                "sample_correct": (greedy[order] * 3).astype(np.int32), "num_samples": np.int32(4)})
        workdirs.append(str(work))
    table = report.summarize_seeds(workdirs)
    row = next(line for line in table.splitlines() if line.startswith("| bstar − online_rft | greedy Pass@1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:4] == ["+0.125 +0.125", "+0.125"]
    # The seeds agree exactly (sd 0): the noise model's interval sets the width, from the
    # problem-level SE sqrt(0.125 * 0.875 / 511) per seed (no run noise: no replicate, no A/A pair).
    half = 1.959964 * (0.125 * 0.875 / 511) ** 0.5 / 2 ** 0.5
    low, high = (float(x) for x in cells[4].strip("[]").split(","))
    assert (low, high) == pytest.approx((0.125 - half, 0.125 + half), abs=1e-3)
    assert float(cells[5]) < 1e-6 and cells[7] == "yes"
    # Without a run record naming the primary comparison, every row is exploratory (Holm).
    assert float(cells[6]) < 0.05
    row = next(line for line in table.splitlines() if line.startswith("| online_rft − P_0 | Pass@K |"))
    assert "| +0.000 | [+0.000, +0.000] | 1.000 | 1.000 | no |" in row
    assert "| bstar − P_0 | greedy Pass@1 |" in table
    assert "run noise not included" in table
    assert "- No primary comparison" in table and "- Exploratory: 4 of 6 resolved" in table
    # The primary comparison from the run record: unadjusted, and named in the verdict.
    for work in workdirs:
        (tmp_path / work / "run_config.json").write_text(json.dumps({"config": {"primary": "bstar - online_rft"}}))
    table = report.summarize_seeds(workdirs)
    assert "| bstar − online_rft | greedy Pass@1 | +0.125 +0.125 | +0.125 |" in table
    assert next(line for line in table.splitlines() if line.startswith("| bstar − online_rft | greedy Pass@1 |")
                ).endswith("| primary | yes |")
    assert ("- Primary (config.primary, recorded before the run): bstar − online_rft, greedy Pass@1: +0.125 "
            f"[{0.125 - half:+.3f}, {0.125 + half:+.3f}]") in table
    assert "- Exploratory: 3 of 5 resolved" in table
    assert "online_rft − P_0, greedy Pass@1" in report.summarize_seeds(workdirs, primary="online_rft - P_0")


def test_summarize_seeds_per_iteration(tmp_path):
    """One table per metric with a column per iteration (mean ± sd over seeds), and the (T, τ)
    every run used per iteration, per seed."""
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2, 0.3], "online_rft_fixed": [0.1, 0.15, 0.2]})
    _write(tmp_path / "s1", {"bstar": [0.3, 0.4, 0.5], "online_rft_fixed": [0.3, 0.35, 0.4]})
    lines = report.summarize_seeds([str(tmp_path / "s0"), str(tmp_path / "s1")]).splitlines()
    start = lines.index("Per iteration: greedy Pass@1 (mean over 2 seeds ± sd)")
    assert lines[start + 2] == "| run | it 0 | it 1 | it 2 |"
    assert lines[start + 4] == "| bstar | 0.200 ± 0.141 | 0.300 ± 0.141 | 0.400 ± 0.141 |"
    assert "Per iteration: diversity (mean over 2 seeds ± sd)" in lines
    start = lines.index("Per iteration: (T, τ) used")
    assert lines[start + 5] == "| online_rft_fixed | – / – | 0.7, 0.5 / 0.7, 0.5 | 0.7, 0.5 / 0.7, 0.5 |"
    assert any(line.startswith("- online_rft_fixed, ") for line in lines)  # the fixed run's (T, τ) too


def test_curves_of_the_mean_over_seeds(tmp_path):
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2, 0.3], "online_rft": [0.1, 0.15, 0.2]})
    _write(tmp_path / "s1", {"bstar": [0.3, 0.4, 0.5], "online_rft": [0.3, 0.35, 0.4]})
    rows = report.mean_rows([runlog.read_metrics(str(tmp_path / s)) for s in ("s0", "s1")])
    at = {(r["variant"], r["iteration"]): r for r in rows}
    assert at[("bstar", 2)]["pass_at_1"] == pytest.approx(0.4)
    assert at[("online_rft", 1)]["pass_at_k_s"] == pytest.approx({"1": 0.5, "2": 0.25})
    assert at[("bstar", 0)]["temperature"] is None and at[("bstar", 1)]["temperature"] == pytest.approx(0.7)
    names = report.plot_seeds([str(tmp_path / "s0"), str(tmp_path / "s1")], str(tmp_path / "plots"))
    assert "pass_at_k_s_2.png" in names and "temperature.png" in names
    assert all((tmp_path / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
