"""config.prm.path: a folder in the form a run writes to <workdir>/prm scores, and no PRM is
trained; any other folder is one line (exit status 2 on the command line) before any work."""
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from bstar_jax import data, models
from bstar_jax.bstar import checkpoint, policy, prm_phase
from bstar_jax.config import check as config_check
from bstar_jax.core import mesh as mesh_lib, streams
from bstar_jax.core.errors import ConfigValueError
from bstar_jax.generate.grid import GridSamples
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.text import tokenizer as tok
from bstar_jax.text import format as fmt
from configs import demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HEAD_BIAS = 2.5  # a supplied PRM with w = 0 scores every step of a finished response 2.5


def _tiny_model_cfg(tokenizer, hidden=32):
    return models.ModelConfig(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden,
                              intermediate_size=2 * hidden, num_layers=1, num_heads=2, num_kv_heads=1,
                              head_dim=hidden // 2, max_position_embeddings=512, tie_word_embeddings=True,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)


def _config(workdir, model_dir, prm_path):
    c = demo.get_config("tiny")
    c.workdir, c.progress = str(workdir), False
    c.warm_start.enabled, c.model.path = False, str(model_dir)
    c.variants, c.use_prm, c.prm.path = ("online_rft",), (True,), str(prm_path)
    return c


def _save_prm(folder, cfg, params, *, bias=HEAD_BIAS):
    """A PRM folder as prm_phase writes <workdir>/prm: one checkpoint (iteration 0) of its params."""
    prm = prm_lib.init_prm(cfg, params, init="zero")
    prm["head"]["b"] = jnp.float32(bias)
    with checkpoint.Checkpointer(folder, max_to_keep=1, async_save=False) as store:
        store.save(0, prm, metrics={"trained_steps": 0})
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """P_0: a random one-layer model and a BPE of the synthetic task, as an HF folder; and a PRM
    folder for it."""
    base = tmp_path_factory.mktemp("prm_path")
    train = data.load_splits(demo.get_config("tiny").data, streams.Streams(0))["train"]
    tokenizer = tok.train_bpe([fmt.format_prompt(e.question) + e.solution for e in train], 300, base / "p0")
    cfg = _tiny_model_cfg(tokenizer)
    params = models.init(cfg, 0)
    models.save_hf(cfg, params, base / "p0")
    return base, cfg, params


def test_a_supplied_prm_scores_and_none_is_trained(tmp_path, model, monkeypatch):
    base, cfg, params = model
    c = _config(tmp_path / "work", base / "p0", _save_prm(tmp_path / "prm", cfg, params))
    mesh = mesh_lib.make_mesh()
    config_check.validate(c, mesh)

    def no_training(*args, **kwargs):
        raise AssertionError("a PRM was trained although config.prm.path names one")

    monkeypatch.setattr(prm_phase, "_train", no_training)
    splits = data.load_splits(c.data, streams.Streams(c.seed))
    _, tokenizer, p0 = policy.load_policy(c, mesh, splits["train"])
    score = prm_phase.prepare_prm(c, mesh, tokenizer, p0, splits, streams.Streams(0).key("prm"))
    texts = np.array([[["We add 3 and 4.\n\nSo x = 7.\n\n# Answer\n\n7", "We add 3 and"]]], dtype=object)
    samples = GridSamples(temperatures=np.ones(1, np.float32), texts=texts, tokens=np.zeros((1, 1, 2, 1), np.int32),
                          lengths=np.ones((1, 1, 2), np.int32), truncated=np.array([[[False, True]]]),
                          logprobs=np.zeros((1, 1, 2, 1), np.float32), prompt_ids=[[1]])
    np.testing.assert_allclose(score(samples, ["What is 3 + 4?"]), [[[HEAD_BIAS, prm_lib.TRUNCATED_SCORE]]])
    assert not (tmp_path / "work" / "prm").exists()


def test_any_other_folder_is_one_line_before_any_work(tmp_path, model):
    """Missing, not a PRM checkpoint (empty, or a policy's train state), or a PRM of another
    architecture: one ConfigValueError line (a UserError) naming config.prm.path, from the checks
    the loop runs before any work (config validation, then prm_phase.check_prm_folder)."""
    base, cfg, params = model
    os.makedirs(tmp_path / "empty")
    with checkpoint.Checkpointer(tmp_path / "policy", max_to_keep=1, async_save=False) as store:
        store.save(0, {"params": params})
    wide = _tiny_model_cfg(tok.load_tokenizer(str(base / "p0")), hidden=64)
    _save_prm(tmp_path / "wide", wide, models.init(wide, 0))
    cases = {"missing": "no such folder", "empty": "not a PRM checkpoint", "policy": "not a PRM checkpoint",
             "wide": "a PRM of another architecture than P_0 (params['backbone']"}
    for name, needle in cases.items():
        c = _config(tmp_path / f"work_{name}", base / "p0", tmp_path / name)
        with pytest.raises(ConfigValueError) as e:
            config_check.validate_fields(c, None)
            prm_phase.check_prm_folder(c)
        message = str(e.value)
        assert message.startswith(f"config.prm.path='{tmp_path / name}': {needle}") and "\n" not in message
    # Once P_0 is loaded (a .gguf or a warm start not made yet say nothing before), the loop checks it too.
    with pytest.raises(ConfigValueError, match="another architecture"):
        prm_phase.check_prm_folder(_config(tmp_path / "w", tmp_path / "nowhere", tmp_path / "wide"), cfg)


def test_the_command_line_exits_2_and_changes_nothing(tmp_path, model):
    base, _, _ = model
    wide = _tiny_model_cfg(tok.load_tokenizer(str(base / "p0")), hidden=64)
    _save_prm(tmp_path / "wide", wide, models.init(wide, 0))
    work = tmp_path / "work"
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    res = subprocess.run([sys.executable, "run.py", "--config=configs/demo.py:tiny", f"--config.workdir={work}",
                          "--config.warm_start.enabled=False", f"--config.model.path={base / 'p0'}",
                          "--config.use_prm=(True,)", f"--config.prm.path={tmp_path / 'wide'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(errors) == 1 and "config.prm.path=" in errors[0] and "another architecture" in errors[0]
    assert not work.exists() or not os.listdir(work)  # no P_0, record, checkpoints or metrics
