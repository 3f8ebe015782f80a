"""Two tiny loop runs into one workdir: a PRM run scoring with a supplied PRM (config.prm.path:
none trained), then its replicate (config.replicate=1), and the report over both."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from bstar_jax import data, models
from bstar_jax.analysis import comparisons, report, runlog
from bstar_jax.bstar import checkpoint, experiment as loop
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.text import tokenizer as tok
from bstar_jax.text import format as fmt
from bstar_jax.core.streams import Streams
from configs import demo


@pytest.mark.slow
def test_a_supplied_prm_and_a_replicate_in_one_workdir(tmp_path, monkeypatch):
    from bstar_jax.bstar import prm_phase

    train = data.load_splits(demo.get_config("tiny").data, Streams(0))["train"]
    tokenizer = tok.train_bpe([fmt.format_prompt(e.question) + e.solution for e in train], 300, tmp_path / "p0")
    cfg = models.ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                             num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=512,
                             tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    params = models.init(cfg, 0)
    models.save_hf(cfg, params, tmp_path / "p0")
    head = prm_lib.init_prm(cfg, params, init="zero")
    head["head"]["b"] = jnp.float32(2.5)
    with checkpoint.Checkpointer(tmp_path / "prm", max_to_keep=1, async_save=False) as store:
        store.save(0, head, metrics={"trained_steps": 0})

    def no_training(*args, **kwargs):
        raise AssertionError("a PRM was trained although config.prm.path names one")

    monkeypatch.setattr(prm_phase, "_train", no_training)
    work = tmp_path / "work"
    c = demo.get_config("tiny")
    c.workdir, c.progress, c.iterations = str(work), False, 1
    c.warm_start.enabled, c.model.path = False, str(tmp_path / "p0")
    c.variants, c.use_prm, c.prm.path = ("online_rft",), (True,), str(tmp_path / "prm")
    c.primary = "online_rft+prm - P_0+prm"
    mesh = mesh_lib.make_mesh()
    loop.run(c, mesh)
    c.replicate = 1
    loop.run(c, mesh)

    assert not (work / "prm").exists()
    rows = runlog.read_metrics(str(work))
    assert [(r["variant"], r["iteration"]) for r in rows] == [
        ("online_rft+prm", 0), ("online_rft+prm", 1), ("online_rft-r1+prm", 0), ("online_rft-r1+prm", 1)]
    # P_0 and the evaluation draws are shared: the replicate's iteration 0 is the run's.
    a, b = (comparisons.load_results(str(work), run, 0) for run in ("online_rft+prm", "online_rft-r1+prm"))
    np.testing.assert_array_equal(a["sample_correct"], b["sample_correct"])
    assert (work / "checkpoints" / "online_rft-r1_prm").is_dir()
    assert json.loads((work / "run_config.json").read_text())["config"]["replicate"] == 1
    summary = report.summarize_seeds([str(work)])
    assert "from 1 replicate pair (a run and its -r<k>)" in summary
    assert "- Primary (config.primary, recorded before the run): online_rft+prm − P_0+prm" in summary
    assert "online_rft-r1" not in summary.split("Paired differences")[1].split("Verdict")[0]
