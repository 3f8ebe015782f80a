"""The seed summary: means and sample standard deviations over workdirs, P_0 and last iterations."""
import json

import pytest

from bstar_jax import report


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


def test_summarize_seeds_names_an_empty_workdir(tmp_path):
    _write(tmp_path / "s0", {"bstar": [0.1, 0.2]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        report.summarize_seeds([str(tmp_path / "s0"), str(tmp_path / "empty")])
