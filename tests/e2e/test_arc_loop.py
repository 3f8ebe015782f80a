"""configs/arc.py:tiny end to end on a small ARC file written here: the ARC loader, the answer-only
reward by choice label, and B-STaR's temperature-only search (τ stays at baseline.threshold)."""
import json

import pytest

from bstar_jax.analysis import runlog
from bstar_jax.bstar import experiment as loop
from bstar_jax.core import mesh as mesh_lib
from configs import arc


def write_arc(path, n, seed):
    """ARC rows in the official ARC-V1 shape: which of four numbers is the largest."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            values = rng.sample(range(1, 100), 4)
            choices = [{"label": label, "text": str(v)} for label, v in zip("ABCD", values)]
            f.write(json.dumps({"id": f"arc-{seed}-{i}", "answerKey": "ABCD"[values.index(max(values))],
                                "question": {"stem": "Which number is the largest?", "choices": choices}}) + "\n")
    return str(path)


@pytest.mark.slow
def test_arc_tiny_searches_the_temperature_only(tmp_path):
    c = arc.get_config("tiny")
    c.workdir, c.progress, c.iterations, c.variants = str(tmp_path / "work"), False, 1, ("bstar",)
    c.data.train_path = write_arc(tmp_path / "train.jsonl", 48, seed=0)
    c.data.test_path = write_arc(tmp_path / "test.jsonl", 16, seed=1)
    c.warm_start.steps = 60
    loop.run(c, mesh_lib.make_mesh())
    rows = runlog.read_metrics(c.workdir)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["temperature"] in c.search.temperatures and rows[1]["threshold"] == c.baseline.threshold
    table = json.loads((tmp_path / "work" / "searches" / "bstar_iter001.json").read_text())
    assert len(table["thresholds"]) == 1 and len(table["temperatures"]) == len(c.search.temperatures)
    assert 0.0 <= rows[0]["pass_at_1"] <= 1.0 and rows[1]["train_valid"] > 0  # answers in the format
