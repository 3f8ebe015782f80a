"""The closing summary, read from committed run outputs."""
import os

from bstar_jax.analysis import summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEMO = os.path.join(ROOT, "results", "demo", "runs", "seed0")


def test_summary_of_a_finished_run():
    text = summary.summary(DEMO)
    lines = text.splitlines()
    bstar = next(line for line in lines if line.startswith("bstar "))
    assert "0.078 -> 0.123" in bstar  # P_0 and iteration 4 greedy Pass@1 of metrics.jsonl
    assert "(0.5, 0.90), (0.8, 0.90), (0.9, 0.90), (0.9, 0.90)" in bstar  # the chosen (T, τ)
    assert "bstar − online_rft" in text and "leaves out run-to-run" in text
    assert os.path.join(DEMO, "report.md") in text


def test_paired_difference_matches_the_per_problem_files():
    mean, se, n = summary.paired_within_seed(DEMO, "bstar", "online_rft")
    assert n == 512
    assert abs(mean - (0.123046875 - 0.08984375)) < 1e-9  # the two runs' last greedy Pass@1
    assert 0 < se < 0.05


def test_an_empty_workdir_says_so(tmp_path):
    assert "no metrics yet" in summary.summary(str(tmp_path))
