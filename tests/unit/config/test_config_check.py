"""config_check (every field before any work) and run_record (a workdir remembers its run), in-process."""
import json
import os

import pytest

from bstar_jax.config import check as config_check, record as run_record
from bstar_jax.core.errors import UserError
from configs import demo


def tiny(workdir):
    c = demo.get_config("tiny")
    c.workdir = str(workdir)
    return c


def write_arc(path, n, seed=0):
    """A small ARC JSONL file (HF row shape): which of four numbers is the largest."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            values = rng.sample(range(1, 100), 4)
            labels = ["A", "B", "C", "D"]
            f.write(json.dumps({"id": f"arc-{seed}-{i}", "question": "Which number is the largest?",
                                "choices": {"label": labels, "text": [str(v) for v in values]},
                                "answerKey": labels[values.index(max(values))]}) + "\n")
    return str(path)


def test_the_shipped_configs_pass(tmp_path, mesh8, monkeypatch):
    from configs import arc, code, gsm8k, math, real_cpu, reproduce

    config_check.validate(tiny(tmp_path / "a"), mesh8)
    presets = [(module, arg) for module in (demo, gsm8k, math, real_cpu, reproduce, code, arc) for arg in ("tiny", None)]
    arc_files = write_arc(tmp_path / "arc_train.jsonl", 32), write_arc(tmp_path / "arc_test.jsonl", 16, seed=1)
    for module, arg in presets + [(gsm8k, "cpu"), (real_cpu, "fast"), (real_cpu, "wide"), (code, "cpu")]:
        c = module.get_config(arg)
        c.workdir = str(tmp_path / f"{module.__name__}_{arg}")
        if module is arc and arg == "tiny":  # tiny keeps the ARC files: small ones here
            c.data.train_path, c.data.test_path = arc_files
        # full-size configs: fields only (their data and model files are the user's; a hub id
        # is accepted where the hub can be reached)
        with monkeypatch.context() as m:
            m.setenv("HF_HUB_OFFLINE", "0")
            (config_check.validate if arg in ("tiny", "cpu") else config_check.validate_fields)(c, mesh8)


@pytest.mark.parametrize("overrides, needle", [
    (dict(variants=("bstar", "bstar_threshold_only")), "config.variants=('bstar', 'bstar_threshold_only'): "
                                                       "bstar_threshold_only searches τ"),
    (dict(use_prm=(False, True)), "config.use_prm=(False, True): task 'code' is rewarded by unit tests alone"),
    (dict(task="gsm8k"), "config.task='gsm8k': data.name=code_synthetic is a programming dataset"),
    (dict(**{"code.timeout_s": 0.0}), "config.code.timeout_s=0.0: must be > 0"),
    (dict(**{"code.workers": -1}), "config.code.workers=-1: must be >= 0"),
])
def test_code_task_refuses_what_it_cannot_run(tmp_path, mesh1, overrides, needle):
    """On the code task: no τ-only search (τ stays at baseline.threshold), no PRM, a programming
    dataset; one line naming the field, a UserError (the CLI's exit status 2)."""
    from configs import code

    c = code.get_config("tiny")
    c.workdir = str(tmp_path)
    config_check.validate(c, mesh1)
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    with pytest.raises(UserError) as e:
        config_check.validate(c, mesh1)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_programming_dataset_needs_the_code_task_and_arc_searches_t_only(tmp_path, mesh1):
    c = tiny(tmp_path)
    c.data.name = "code_synthetic"
    with pytest.raises(config_check.ConfigValueError, match=r"config.task='gsm8k': data.name=code_synthetic"):
        config_check.validate(c, mesh1)
    c.data.name, c.task = "synthetic", "code"
    with pytest.raises(config_check.ConfigValueError, match=r"config.task='code': data.name=synthetic is not a "):
        config_check.validate(c, mesh1)
    c.task, c.variants = "arc", ("bstar_threshold_only",)
    with pytest.raises(config_check.ConfigValueError, match=r"config.variants=.*task 'arc' holds at baseline"):
        config_check.validate(c, mesh1)


@pytest.mark.parametrize("field, value, needle", [
    ("samples_per_query", 0, "config.samples_per_query=0: must be >= 1"),
    ("iterations", -1, "config.iterations=-1"),
    ("iterations", 2.5, "must be an integer"),
    ("use_prm", (True, "yes"), "not a bool"),
    ("search.temperatures", (0.5, float("inf")), "finite"),
    ("eval.s_values", (0, 1), "1..eval.samples_per_query"),
    ("sft.b2", 1.0, "[0, 1)"),
    ("sft.compute_dtype", "int8", "config.sft.compute_dtype"),
    ("checkpoint.keep", 0, "config.checkpoint.keep=0"),
    ("prm.head_init", "random", "config.prm.head_init"),
    ("data.difficulty", 99, "config.data.difficulty"),
    ("sampling.requests_per_slot", 0, "config.sampling.requests_per_slot=0: must be >= 1"),
    ("eval.every", 0, "config.eval.every=0: must be >= 1"),
])
def test_each_field_is_checked(tmp_path, mesh1, field, value, needle):
    c = tiny(tmp_path)
    c.use_prm = (False, True)
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    with node.ignore_type():
        node[leaf] = value
    with pytest.raises(config_check.ConfigValueError) as e:
        config_check.validate(c, mesh1)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, UserError)


@pytest.mark.parametrize("variants, fixed, needle", [
    (("bstar", "online_rft_fixed"), dict(from_run="online_rft"), "config.fixed.from_run='online_rft': must be"),
    (("online_rft_fixed", "bstar"), dict(from_run="bstar"), "before online_rft_fixed"),
    (("online_rft_fixed",), dict(from_run="bstar_threshold_only"), "before online_rft_fixed"),
    (("online_rft_fixed",), dict(from_run="", temperature=0.0), "config.fixed.temperature=0.0: must be > 0"),
    (("online_rft_fixed",), dict(from_run="", threshold=float("nan")), "config.fixed.threshold=nan"),
])
def test_fixed_configuration_is_checked(tmp_path, mesh1, variants, fixed, needle):
    """online_rft_fixed's (T, τ): a searching run listed before it, or valid numbers."""
    c = tiny(tmp_path)
    c.variants = variants
    c.fixed.update(fixed)
    with pytest.raises(config_check.ConfigValueError) as e:
        config_check.validate(c, mesh1)
    assert needle in str(e.value) and "\n" not in str(e.value)
    c.fixed.update(dict(from_run="", temperature=1.1, threshold=-0.1))
    config_check.validate(c, mesh1)
    c.variants = ("online_rft",)  # config.fixed is read by online_rft_fixed only
    c.fixed.temperature = -1.0
    config_check.validate(c, mesh1)


def test_a_fitted_baseline_threshold_needs_the_dev_subset(tmp_path, mesh1):
    """online_rft with the PRM fits τ on the dev subset unless baseline.prm_threshold is a number."""
    c = tiny(tmp_path)
    c.variants, c.use_prm, c.data.num_dev = ("online_rft",), (False, True), 0
    with pytest.raises(config_check.ConfigValueError) as e:
        config_check.validate(c, mesh1)
    assert "config.data.num_dev=0: must be >= 1: a baseline with the PRM fits its τ" in str(e.value)
    c.baseline.prm_threshold = "0.0"
    config_check.validate(c, mesh1)
    c.baseline.prm_threshold, c.use_prm = "fitted", (False,)  # answer only: no fit
    config_check.validate(c, mesh1)


def test_batch_sizes_must_divide_the_data_axes(tmp_path, mesh8, mesh1):
    c = tiny(tmp_path)
    c.sft.batch_size = c.sft.micro_batch_size = 12
    config_check.validate(c, mesh1)
    with pytest.raises(config_check.ConfigValueError, match=r"config.sft.batch_size=12: must be a multiple of 8"):
        config_check.validate(c, mesh8)


def test_mesh_config():
    config_check.validate_mesh_config(dict(data=-1, fsdp=2, tensor=1), n_devices=8)
    for bad, needle in [(dict(data=-1, fsdp=-1, tensor=1), "only one mesh axis"),
                        (dict(data=3, fsdp=1, tensor=1), "does not fit 8"),
                        (dict(data=0, fsdp=1, tensor=1), "config.mesh.data=0")]:
        with pytest.raises(config_check.ConfigValueError, match=needle):
            config_check.validate_mesh_config(bad, n_devices=8)


def test_examples_warn_on_overlap_and_duplicates(caplog):
    from bstar_jax.data import Example

    a = Example("1", "q1", "s\n\n# Answer\n\n1", "1", "gsm8k")
    b = Example("2", "q2", "s\n\n# Answer\n\n2", "2", "gsm8k")
    config_check.validate_examples({"train": [a, a, b], "dev": [], "test": [b]})
    text = caplog.text
    assert "repeats ids" in text and "also appear in train" in text
    with pytest.raises(config_check.ConfigValueError, match="test split is empty"):
        config_check.validate_examples({"train": [a], "dev": [], "test": []})


# --------------------------------------------------------------------------- run_record


def _results(workdir):
    os.makedirs(os.path.join(workdir, "checkpoints", "bstar", "0"), exist_ok=True)


def test_record_is_written_then_enforced(tmp_path):
    c = tiny(tmp_path / "w")
    os.makedirs(c.workdir)
    run_record.check_and_record(c)
    path = os.path.join(c.workdir, run_record.FILENAME)
    record = json.load(open(path))
    assert record["config"]["seed"] == 0 and record["config"]["search.temperatures"] == [0.7, 1.0]
    # No results yet: any config may take the workdir over.
    c.seed = 5
    run_record.check_and_record(c)
    assert json.load(open(path))["config"]["seed"] == 5
    _results(c.workdir)
    c.seed = 6
    with pytest.raises(run_record.ConfigChangedError, match=r"seed: 5 -> 6.*on_config_change=continue"):
        run_record.check_and_record(c)
    # Neutral fields and more iterations are fine; fewer iterations are not.
    c.seed, c.progress, c.checkpoint.keep, c.iterations = 5, False, 7, 9
    run_record.check_and_record(c)
    assert json.load(open(path))["config"]["iterations"] == 9
    c.iterations = 1
    with pytest.raises(run_record.ConfigChangedError, match="iterations: 9 -> 1"):
        run_record.check_and_record(c)
    c.on_config_change = "continue"
    run_record.check_and_record(c)
    record = json.load(open(path))
    assert record["config"]["iterations"] == 1 and "iterations: 9 -> 1" in record["history"][-1]["changes"][0]


def test_record_of_an_older_config_still_resumes(tmp_path):
    """A record made before config.fixed, baseline.prm_threshold and the optimizer blocks of p0_sft,
    warm_start and prm existed, and while search.restrict did ("both", the behaviour of today's
    bstar), is no change when the new fields do what the older code did; any other value, or
    search.restrict, is. The older code held baseline.threshold in online_rft+prm: a fitted τ is
    a change there, and none in a workdir without a baseline's PRM run."""
    c = tiny(tmp_path / "w")
    c.baseline.prm_threshold = "0.0"  # what the older code held: baseline.threshold
    os.makedirs(c.workdir)
    run_record.check_and_record(c)
    _results(c.workdir)
    path = os.path.join(c.workdir, run_record.FILENAME)
    record = json.load(open(path))
    for k in run_record.INTRODUCED:
        del record["config"][k]
    record["config"]["search.restrict"] = "both"
    open(path, "w").write(json.dumps(record))
    run_record.check_and_record(c)
    open(path, "w").write(json.dumps(record))
    c.baseline.prm_threshold = "fitted"
    with pytest.raises(run_record.ConfigChangedError, match=r"baseline.prm_threshold: '\(unset\)' -> 'fitted'"):
        run_record.check_and_record(c)
    c.use_prm, record["config"]["use_prm"] = (False,), [False]  # no PRM run: the older code never read it
    open(path, "w").write(json.dumps(record))
    run_record.check_and_record(c)
    c.use_prm, record["config"]["use_prm"], c.baseline.prm_threshold = (False, True), [False, True], "0.0"
    # A new field at a value other than what the older code did is a change: the warm start ran Adam.
    open(path, "w").write(json.dumps(record))
    c.warm_start.weight_decay = 0.1
    with pytest.raises(run_record.ConfigChangedError, match=r"warm_start.weight_decay: '\(unset\)' -> 0.1"):
        run_record.check_and_record(c)
    c.warm_start.weight_decay = 0.0
    record["config"]["search.restrict"] = "temperature"
    open(path, "w").write(json.dumps(record))
    with pytest.raises(run_record.ConfigChangedError, match="search.restrict: 'temperature' -> '.unset.'"):
        run_record.check_and_record(c)


def test_record_notices_a_changed_data_file(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "q", "answer": "#### 1"}\n')
    c = tiny(tmp_path / "w")
    c.data.name, c.data.train_path, c.data.test_path = "gsm8k_jsonl", str(data), str(data)
    os.makedirs(c.workdir)
    run_record.check_and_record(c)
    _results(c.workdir)
    run_record.check_and_record(c)
    data.write_text('{"question": "q", "answer": "#### 2"}\n')
    with pytest.raises(run_record.ConfigChangedError, match="data.train_path: the file"):
        run_record.check_and_record(c)


def test_rotation_keeps_the_last_sane_checkpoint(tmp_path, mesh1):
    import jax.numpy as jnp

    from bstar_jax.bstar import checkpoint

    with pytest.raises(checkpoint.CheckpointError, match="keep at least 1"):
        checkpoint.Checkpointer(tmp_path / "none", max_to_keep=0)
    ck = checkpoint.Checkpointer(tmp_path / "c", max_to_keep=1, async_save=False)
    ck.save(0, {"w": jnp.ones(3)})
    ck.save(1, {"w": jnp.ones(3)}, metrics={"pass_at_1": 0.5})
    ck.save(2, {"w": jnp.full(3, jnp.nan)})  # a diverged state
    ck.save(3, {"w": jnp.ones(3)}, metrics={"loss": float("inf")})
    assert ck.iterations() == [1, 3]
    ck.close()
    ck = checkpoint.Checkpointer(tmp_path / "c", max_to_keep=1, async_save=False)  # a restart
    ck.save(4, {"w": jnp.ones(3)}, sane=False)
    assert ck.iterations() == [1, 4]
    target = {"w": jnp.ones(3)}
    assert ck.restore(target).iteration == 1  # the newest sane one
    ck.save(5, {"params": {"w": jnp.ones(3)}})
    with pytest.raises(checkpoint.CheckpointError, match=r"holds a different model.*saved \(3,\), this config makes \(4,\)"):
        ck.restore({"params": {"w": jnp.ones(4)}})
    ck.close()
