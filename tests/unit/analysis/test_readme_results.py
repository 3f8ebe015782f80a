"""README's results table is what the report prints: the `wide` row is regenerated here."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _interval(text: str) -> tuple[str, str, str]:
    m = re.search(r"([+−-]\d\.\d{3}) \[([+−-]\d\.\d{3}), ([+−-]\d\.\d{3})\]", text)
    return tuple(s.replace("−", "-") for s in m.groups())


def test_the_wide_row_is_what_the_report_prints():
    folders = [os.path.join("results", "real_cpu", "wide", f"seed{s}") for s in range(5)]
    res = subprocess.run([sys.executable, "-m", "bstar_jax.report", *folders, "--primary", "bstar - online_rft"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    printed = {}
    for line in res.stdout.splitlines():
        m = re.match(r"\| (bstar|online_rft) − (P_0|online_rft) \| greedy Pass@1 \| [^|]+\| ([^|]+)\| \[([^|]+)\] \|", line)
        if m:
            low, high = (s.strip() for s in m.group(4).split(","))
            printed[(m.group(1), m.group(2))] = (m.group(3).strip(), low, high)
    with open(os.path.join(ROOT, "README.md")) as f:
        row = next(line for line in f if "real_cpu.py:wide" in line and line.startswith("|"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[1] == "5"
    assert _interval(cells[2]) == printed[("bstar", "P_0")]
    assert _interval(cells[3]) == printed[("online_rft", "P_0")]
    assert _interval(cells[4]) == printed[("bstar", "online_rft")]
