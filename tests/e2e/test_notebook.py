"""The Colab notebook runs top to bottom on CPU with the tiny config, so it cannot rot, and ends
with the summary `python run.py` prints."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_colab_notebook_executes_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("BSTAR_CONFIG_ARG", "tiny")
    monkeypatch.setenv("BSTAR_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    nb = nbformat.read(os.path.join(ROOT, "colab", "bstar_gsm8k_tpu.ipynb"), as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "report.md" in outputs and "Summary of" in outputs  # run.py's closing summary
    assert "greedy Pass@1 (P_0 -> last)" in outputs
    assert (tmp_path / "run" / "plots" / "pass_at_1.png").exists()
