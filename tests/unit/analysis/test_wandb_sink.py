"""The optional W&B mirror, offline (no credentials, no network): it starts offline, logs, and
writes the completions table where `wandb sync` finds it."""
import glob
import json
import os

import pytest

pytest.importorskip("wandb")

from bstar_jax.analysis.wandb_sink import WandbSink, _flat  # noqa: E402


def test_flat_keeps_numeric_leaves():
    row = {"iteration": 2, "variant": "bstar", "pass_at_1": 0.5, "pass_at_k_s": {"1": 0.7, "2": None},
           "converged": True, "temperature": None}
    assert _flat(row) == {"iteration": 2.0, "pass_at_1": 0.5, "pass_at_k_s/1": 0.7}


def test_offline_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = str(tmp_path / "run")
    sink = WandbSink(workdir, project="bstar-jax-test", config={"seed": 0})
    assert sink.mode == "offline"
    sink.log({"iteration": 0, "variant": "bstar", "pass_at_1": 0.25})
    sink.log_completions("bstar", 1, [dict(question="2 + 2?", completion="4", reward=1.0, correct=True),
                                      dict(question="3 + 3?", completion="5", reward=0.0, correct=False)])
    sink.close()
    runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))
    assert len(runs) == 1
    tables = glob.glob(os.path.join(runs[0], "files", "media", "table", "bstar", "*.table.json"))
    assert len(tables) == 1
    with open(tables[0]) as f:
        table = json.load(f)
    assert table["columns"] == ["iteration", "question", "completion", "reward", "correct"]
    assert table["data"] == [[1, "2 + 2?", "4", 1.0, True], [1, "3 + 3?", "5", 0.0, False]]


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="wandb mode"):
        WandbSink(str(tmp_path), project="p", mode="sometimes")


def test_the_metrics_log_mirrors_rows_and_completions(tmp_path):
    from bstar_jax.analysis.runlog import MetricsLog

    class Recorder:
        def __init__(self):
            self.rows, self.tables, self.closed = [], [], False

        def log(self, row):
            self.rows.append(row)

        def log_completions(self, run, iteration, samples):
            self.tables.append((run, iteration, samples))

        def close(self):
            self.closed = True

    sink = Recorder()
    log = MetricsLog(str(tmp_path), sink=sink)
    row = {k: None for k in ("temperature", "threshold", "balance_score", "pass_at_1", "pass_at_k", "pass_at_k_s",
                             "reward_at_k_s", "diversity", "n_selected", "selection_precision", "sft_loss", "seconds")}
    row.update(iteration=0, variant="bstar", pass_at_1=0.5)
    log.write(row)
    log.log_completions("bstar", 1, [dict(question="q", completion="c", reward=1.0, correct=True)])
    log.close()
    assert [r["pass_at_1"] for r in sink.rows] == [0.5] and sink.tables[0][:2] == ("bstar", 1) and sink.closed
    assert len(log.rows()) == 1  # metrics.jsonl stays the record
    silent = MetricsLog(str(tmp_path / "other"), enabled=False, sink=Recorder())
    assert silent.sink is None  # only the writer mirrors
