"""The report's verdict: run noise from replicates or the A/A pair, the primary comparison from
the run record, Holm over the rest, and the A/A check (bstar_jax.comparisons, bstar_jax.report)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bstar_jax.analysis import comparisons, report, runlog
from bstar_jax.config import choices

Q = 400
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _workdir(path, correct: dict, *, thresholds=None, primary=None, history=()):
    """A workdir with metrics rows (iterations 0 and 1) and per-problem greedy results: `correct`
    maps a run name to its iteration-1 correctness [Q]; P_0 solves the first 100 problems.
    thresholds: run name -> τ of iteration 1 (default 0.0, T = 1.0 for every run)."""
    path.mkdir()
    ids = np.array([f"p{i}" for i in range(Q)])
    p0 = np.arange(Q) < 100
    with open(path / "metrics.jsonl", "w") as f:
        for run, last in correct.items():
            for it, greedy in ((0, p0), (1, np.asarray(last, bool))):
                f.write(json.dumps(dict(iteration=it, variant=run, temperature=None if it == 0 else 1.0,
                                        threshold=None if it == 0 else (thresholds or {}).get(run, 0.0),
                                        pass_at_1=float(greedy.mean()), pass_at_k=None, pass_at_k_s=None,
                                        reward_at_k_s=None, diversity=None)) + "\n")
                comparisons.save_results(str(path), run, it, {"problem_id": ids, "greedy_correct": greedy,
                                                              "sample_correct": np.zeros(Q, np.int32),
                                                              "num_samples": np.int32(0)})
    if primary is not None:
        record = {"config": {"primary": primary}, "history": [{"changes": list(history)}] if history else []}
        (path / "run_config.json").write_text(json.dumps(record))
    return str(path)


def _solves(n):
    return np.arange(Q) < n


def _row(table: str, start: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_parse_primary():
    assert choices.parse_primary("bstar - online_rft") == ("bstar", "online_rft")
    assert choices.parse_primary("bstar+prm - P_0+prm") == ("bstar+prm", "P_0+prm")
    assert choices.parse_primary("") is None
    for bad, needle in [("bstar-online_rft", "<run> - <run>"), ("bstar - nope", "unknown variant"),
                        ("bstar - online_rft+prm", "one reward"), ("bstar-r1 - online_rft", "replicate")]:
        with pytest.raises(ValueError, match=needle):
            choices.parse_primary(bad)


def test_a_a_pair_measures_run_noise_and_its_check_leaves_itself_out(tmp_path):
    """bstar_threshold_only (τ in [0, 1), T as online RFT's) vs online_rft: the A/A pair. With no
    replicate it is the run-noise source (sigma^2_run = 1/2 d^2 per seed) of every other row, and
    its own check uses none."""
    runs = {"bstar": _solves(140), "online_rft": _solves(120), "bstar_threshold_only": _solves(130)}
    work = [_workdir(tmp_path / "s0", runs, thresholds={"bstar_threshold_only": 0.9})]
    rows = runlog.read_metrics(work[0])
    c = comparisons.compare(work, list(runs), [rows], primary="bstar - online_rft", primary_note="test")
    noise = c.noise["greedy Pass@1"]
    assert noise.source == "A/A pair" and noise.dof == 1
    assert noise.variance == pytest.approx(0.5 * (10 / Q) ** 2)
    by = {(r.a, r.b): r for r in c.rows}
    check = by[("bstar_threshold_only", "online_rft")]
    assert check.role == "A/A check" and check.holm_p is None
    primary = by[("bstar", "online_rft")]
    assert primary.role == "primary" and primary.holm_p is None
    # Two trained runs: the model variance is the problem part plus 2 sigma^2_run.
    d = (_solves(140) ^ _solves(120)).astype(float)
    assert primary.diff.model_sd == pytest.approx((d.var(ddof=1) / Q + 2 * noise.variance) ** 0.5)
    assert by[("bstar", "P_0")].diff.model_sd < primary.diff.model_sd  # P_0 carries no training noise
    assert all(r.holm_p is not None for r in c.rows if r.role == "exploratory")
    text = comparisons.verdict(c)
    assert "from the A/A pair bstar_threshold_only vs online_rft" in text
    assert "- A/A check, bstar_threshold_only − online_rft, greedy Pass@1: +0.025" in text
    assert "(run noise left out: this pair is its source)" in text


def test_a_negative_threshold_is_no_a_a_pair(tmp_path):
    """τ < 0 keeps wrong answers too: threshold-only is then another algorithm."""
    runs = {"online_rft": _solves(120), "bstar_threshold_only": _solves(130)}
    work = [_workdir(tmp_path / "s0", runs, thresholds={"bstar_threshold_only": -0.3})]
    c = comparisons.compare(work, list(runs), [runlog.read_metrics(work[0])])
    assert not c.noise["greedy Pass@1"].measured
    assert not any(r.role == "A/A check" for r in c.rows)
    assert "run noise not included" in comparisons.verdict(c)


def test_replicates_measure_run_noise_before_the_a_a_pair(tmp_path):
    """A run and its -r1 in each seed: sigma^2_run from those pairs; the replicates are not compared,
    and the A/A check, now with run noise from elsewhere, is a real test."""
    work = []
    for s, (rft, rep) in enumerate([(120, 128), (110, 104)]):
        work.append(_workdir(tmp_path / f"s{s}", {"online_rft": _solves(rft), "online_rft-r1": _solves(rep),
                                                  "bstar_threshold_only": _solves(rft + 2)},
                             thresholds={"bstar_threshold_only": 0.5}))
    per_dir = [runlog.read_metrics(w) for w in work]
    c = comparisons.compare(work, ["online_rft", "online_rft-r1", "bstar_threshold_only"], per_dir)
    noise = c.noise["greedy Pass@1"]
    assert noise.source == "replicates" and noise.dof == 2
    assert noise.variance == pytest.approx(0.5 * ((8 / Q) ** 2 + (6 / Q) ** 2) / 2)
    assert not any("-r1" in r.a or "-r1" in r.b for r in c.rows)
    check = next(r for r in c.rows if r.role == "A/A check")
    assert "left out" not in comparisons.verdict(c) and not check.resolved
    assert "2 replicate pairs" in comparisons.verdict(c)


def test_the_primary_comes_from_the_run_record(tmp_path):
    runs = {"bstar": _solves(140), "online_rft": _solves(120)}
    a = _workdir(tmp_path / "a", runs, primary="bstar - online_rft")
    assert comparisons.recorded_primary([a]) == ("bstar - online_rft", "config.primary, recorded before the run")
    b = _workdir(tmp_path / "b", runs, primary="online_rft - P_0",
                 history=["primary: 'bstar - online_rft' -> 'online_rft - P_0'"])
    text, note = comparisons.recorded_primary([b])
    assert text == "online_rft - P_0" and "changed after results existed" in note
    with pytest.raises(ValueError, match="different primary"):
        comparisons.recorded_primary([a, b])
    assert comparisons.recorded_primary([_workdir(tmp_path / "c", runs)]) == (None, "no run record names one")


def test_report_prints_the_verdict(tmp_path):
    """The primary from the run record; for older outputs, `python -m bstar_jax.report --primary`."""
    runs = {"bstar": _solves(140), "online_rft": _solves(120)}
    out = report.summarize_seeds([_workdir(tmp_path / "new", runs, primary="bstar - online_rft")])
    assert "- Primary (config.primary, recorded before the run): bstar − online_rft, greedy Pass@1: +0.050" in out
    assert _row(out, "| bstar − online_rft | greedy Pass@1 |")[6] == "primary"
    older = _workdir(tmp_path / "old", runs)
    assert "- No primary comparison" in report.summarize_seeds([older])

    def run(primary):
        return subprocess.run([sys.executable, "-m", "bstar_jax.report", older, "--primary", primary], cwd=ROOT,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)

    res = run("bstar - online_rft")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "- Primary (--primary, given after the run): bstar − online_rft, greedy Pass@1: +0.050" in res.stdout
    res = run("bstar-online_rft")  # a malformed comparison: one line, exit status 2
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: primary comparison 'bstar-online_rft': must be \"<run> - <run>\", e.g. \"bstar - online_rft\", "
        "or \"\" for none"]
