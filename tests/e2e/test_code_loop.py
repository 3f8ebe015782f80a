"""configs/code.py:tiny end to end with hostile programs in the sampled pool: the run completes, every
hostile program scores 0, the reference programs score 1 and are selected, nothing outside the
sandbox is touched, and a rerun resumes from the checkpoint. Also the code task's refusals through
the command line (one line, exit status 2)."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from bstar_jax import data
from bstar_jax.analysis import runlog
from bstar_jax.bstar import code_reward, experiment as loop
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.data.code_format import format_code_response
from bstar_jax.generate import grid
from bstar_jax.core.streams import Streams
from configs import code

# Hostile programs for a call-based problem with entry point {fn}; none can pass every test.
HOSTILE = {
    "infinite_loop": "def {fn}(*args):\n    while True:\n        pass",
    "fork_loop": "import os\n\n\ndef {fn}(*args):\n    for _ in range(50):\n        try:\n            os.fork()\n"
                 "        except OSError:\n            pass\n    return 'forked'",
    "huge_output": "def {fn}(*args):\n    print('x' * 100_000_000)\n    return 'printed'",
    "exit_zero": "import os\n\n\ndef {fn}(*args):\n    os._exit(0)",
    "always_equal": "class Yes:\n    def __eq__(self, other):\n        return True\n\n    def __ne__(self, other):\n"
                    "        return False\n\n\ndef {fn}(*args):\n    return Yes()",
    "decoy_deleter": "import os\nimport shutil\n\n\ndef {fn}(*args):\n    for p in {paths!r}:\n        try:\n"
                     "            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)\n        except OSError:\n"
                     "            pass\n    return 'deleted'",
}


def _config(workdir, iterations):
    c = code.get_config("tiny")
    c.workdir, c.progress, c.iterations = str(workdir), False, iterations
    c.variants = ("bstar",)
    c.warm_start.steps = 30  # the pool's programs are injected: P_0 need not be good
    c.code.timeout_s = 1.0  # the infinite loop costs 1 s a test
    c.eval.samples_per_query, c.eval.s_values = 2, (1,)
    return c


@pytest.fixture
def hostile_pool(monkeypatch):
    """Each sampler call's first queries get, as their sample 0, a hostile program (every kind in
    turn) and, as their last sample, the reference program; the grades of every call are kept."""
    by_question, calls, grades = {}, [], []
    real_sample, real_grade = grid.sample, code_reward.CodeGrader.grade
    paths = []

    def sample(policy, tokenizer, questions, **kw):
        g = real_sample(policy, tokenizer, questions, **kw)
        texts = g.texts.copy()
        injected = {}
        for q, question in enumerate(questions):
            kind = list(HOSTILE)[q % len(HOSTILE)]
            fn = re.search(r"def (\w+)\(", question)[1]
            texts[:, q, 0] = format_code_response(HOSTILE[kind].format(fn=fn, paths=paths))
            if texts.shape[2] > 1:
                texts[:, q, -1] = by_question[question].solution
            injected[q] = kind
        calls.append(injected)
        return dataclasses.replace(g, texts=texts)

    def grade(self, texts, tests):
        out = real_grade(self, texts, tests)
        grades.append((np.asarray(texts, object), out))
        return out

    monkeypatch.setattr(grid, "sample", sample)
    monkeypatch.setattr(code_reward.CodeGrader, "grade", grade)
    return by_question, paths, calls, grades


@pytest.mark.slow
def test_hostile_programs_score_zero_and_the_run_resumes(tmp_path, hostile_pool):
    by_question, paths, calls, grades = hostile_pool
    workdir = tmp_path / "work"
    decoy = tmp_path / "decoy.txt"
    decoy.write_text("keep me")
    paths += [str(decoy), str(workdir / "checkpoints"), str(workdir / "p0"), str(workdir / "metrics.jsonl")]
    c = _config(workdir, iterations=1)
    splits = data.load_splits(c.data, Streams(c.seed))
    by_question.update({e.question: e for split in splits.values() for e in split})

    loop.run(c, mesh_lib.make_mesh())
    assert calls and len(grades) == len(calls)  # every sampler call was graded
    for texts, g in grades:
        T, Q, K = texts.shape
        assert g.valid[:, :, 0].all()  # a hostile program is a program: valid, and scores 0
        assert not g.correct[:, :, 0].any() and (g.pass_fraction[:, :, 0] < 1).all()
        if K > 1:
            assert g.correct[:, :, -1].all()  # the references pass, in the same batches
    assert decoy.read_text() == "keep me"
    rows = runlog.read_metrics(str(workdir))
    assert [r["iteration"] for r in rows] == [0, 1]
    it1 = rows[1]
    assert it1["n_selected"] >= 1 and it1["selection_precision"] == 1.0 and it1["sft_loss"] is not None
    assert 0 < it1["test_pass_fraction"] < 1 and it1["temperature"] in c.search.temperatures
    assert it1["threshold"] == c.baseline.threshold  # temperature-only search
    assert rows[0]["pass_at_k_s_programs"] is not None and rows[0]["eval_test_pass_fraction"] is not None
    assert (workdir / "checkpoints" / "bstar").is_dir() and (workdir / "p0" / "config.json").exists()

    # the rerun restores iteration 1's checkpoint and runs iteration 2 only
    done = len(calls)
    loop.run(_config(workdir, iterations=2), mesh_lib.make_mesh())
    rows2 = runlog.read_metrics(str(workdir))
    assert [r["iteration"] for r in rows2] == [0, 1, 2]
    assert json.dumps(rows2[:2], sort_keys=True) == json.dumps(rows, sort_keys=True)
    search, iteration, greedy, sampled = 1, 1, 1, 1  # no P_0 evaluation again
    assert len(calls) - done == search + iteration + greedy + sampled
    assert decoy.read_text() == "keep me"


def test_the_code_task_refuses_a_prm_on_the_command_line(tmp_path):
    from test_cli import assert_one_error, run_cli

    res = run_cli(["--config.use_prm=(False,True)"], tmp_path / "w", config=["--config=configs/code.py:tiny"])
    assert_one_error(res, 2, "config.use_prm=(False, True)", "unit tests alone")
    assert not os.path.exists(tmp_path / "w" / "p0")
