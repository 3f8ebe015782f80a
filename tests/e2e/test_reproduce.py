"""configs/reproduce.py:tiny end to end through the real command line: every run of the paper's
comparisons (Tables 1, 3 and 6) in one workdir, each using the (T, τ) its variant promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bstar_jax.analysis import runlog
from configs import reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The answer-only runs only (the PRM runs differ by the reward, covered in test_loop), over a
# shorter warm start: the test checks which (T, τ) each run uses, not how well it learns.
ARGS = ["--config=configs/reproduce.py:tiny", "--config.progress=False", "--config.use_prm=(False,)",
        "--config.warm_start.steps=30"]


def run_cli(args, timeout):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_reproduce_tiny_runs_every_comparison(tmp_path):
    """One iteration, then a rerun with two: every run resumes (its first rows unchanged), and the
    fixed run keeps the (T, τ) it started with, B-STaR's choice of the first invocation."""
    work = tmp_path / "reproduce"
    c = reproduce.get_config("tiny")
    assert c.iterations == 2
    res = run_cli(ARGS + [f"--config.workdir={work}", "--config.iterations=1"], timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    first = runlog.read_metrics(str(work))
    res = run_cli(ARGS + [f"--config.workdir={work}"], timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = runlog.read_metrics(str(work))
    assert [r for r in rows if r["iteration"] <= 1] == first
    by_run = {v: {r["iteration"]: r for r in rows if r["variant"] == v} for v in reproduce.VARIANTS}
    for v, its in by_run.items():
        assert sorted(its) == list(range(c.iterations + 1)), v
    used = {v: [(its[i]["temperature"], its[i]["threshold"]) for i in range(1, c.iterations + 1)]
            for v, its in by_run.items()}
    base = (c.baseline.temperature, c.baseline.threshold)

    # Temperature only: τ stays at the baseline's, T is chosen from a search over the whole T grid.
    for it, (t, tau) in enumerate(used["bstar_temperature_only"], 1):
        assert tau == base[1] and t in c.search.temperatures
        table = json.loads((work / "searches" / f"bstar_temperature_only_iter{it:03d}.json").read_text())
        assert table["temperatures"] == list(c.search.temperatures) and table["thresholds"] == [base[1]]
        assert len(table["balance_score"]) == len(c.search.temperatures)
    # Threshold only: T stays at the baseline's, τ is searched over the whole τ grid.
    for it, (t, tau) in enumerate(used["bstar_threshold_only"], 1):
        assert t == base[0] and tau in c.search.thresholds
        table = json.loads((work / "searches" / f"bstar_threshold_only_iter{it:03d}.json").read_text())
        assert table["temperatures"] == [base[0]] and table["thresholds"] == list(c.search.thresholds)
    # Both: the full grid.
    table = json.loads((work / "searches" / "bstar_iter002.json").read_text())
    assert table["temperatures"] == list(c.search.temperatures) and table["thresholds"] == list(c.search.thresholds)
    # Table 6: online RFT at B-STaR's last choice when it started (iteration 1), held on the rerun.
    assert used["online_rft_fixed"] == [used["bstar"][0]] * c.iterations
    for v in ("online_rft", "iterative_rft", "rest_em"):
        assert used[v] == [base] * c.iterations, v
    # Only the searching variants searched.
    searched = {f.name.rsplit("_iter", 1)[0] for f in (work / "searches").iterdir()}
    assert searched == {"bstar", "bstar_temperature_only", "bstar_threshold_only"}

    summary = subprocess.run([sys.executable, "-m", "bstar_jax.report", str(work)], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr[-3000:]
    for needle in ("Per iteration: greedy Pass@1", "Per iteration: Pass@K", "Per iteration: diversity",
                   "Per iteration: (T, τ) used", "| online_rft_fixed − online_rft | greedy Pass@1 |"):
        assert needle in summary.stdout, needle
    assert (work / "plots" / "temperature.png").is_file() and (work / "plots" / "pass_at_k_s_2.png").is_file()


def test_bad_fixed_config_is_one_line(tmp_path):
    """Through the command line (the other bad values of config.fixed: tests/unit/config/test_config_check.py)."""
    needle = "config.fixed.from_run='online_rft'"
    res = run_cli(ARGS + [f"--config.workdir={tmp_path / 'w'}", "--config.fixed.from_run=online_rft"], timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-3000:]
