"""The config schema: every field declared once, the defaults, the per-field checks and docs/config.md
built from it; configs read without training code; overrides of derived defaults."""
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from bstar_jax.config import schema
from configs import demo, gsm8k, math, real_cpu, reproduce

ROOT = pathlib.Path(__file__).resolve().parents[3]
PRESETS = [(m, a) for m in (demo, gsm8k, math, real_cpu, reproduce) for a in (None, "tiny")] + [
    (gsm8k, "cpu"), (real_cpu, "fast"), (real_cpu, "wide")]


def test_docs_config_md_is_current():
    """Regenerate with: python -m bstar_jax.config.schema > docs/config.md"""
    assert (ROOT / "docs" / "config.md").read_text() == schema.markdown(), \
        "docs/config.md is stale: python -m bstar_jax.config.schema > docs/config.md"


def test_configs_import_no_training_code():
    code = ("import sys; from configs import demo, gsm8k, math, real_cpu, reproduce; demo.get_config('tiny'); "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'torch')]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
    return out


def test_every_preset_holds_exactly_the_schema_fields_and_passes_it():
    for module, arg in PRESETS:
        c = module.get_config(arg)
        assert set(_flat(c.to_dict())) == set(schema.FIELDS), (module.__name__, arg)
        schema.check(c)


def test_one_optimizer_block_type_four_instances():
    for name in schema.BLOCKS:
        declared = schema.SCHEMA.fields[name].fields
        for k, f in schema.OPTIMIZER.items():  # the same type, range and doc; the instance's own default
            assert dataclass_without_default(declared[k]) == dataclass_without_default(f), (name, k)
    c = schema.defaults()
    assert schema.block(c, "sft")["lr"] == 4.12e-6 and schema.block(c, "warm_start")["lr"] == 3e-3


def dataclass_without_default(f):
    import dataclasses

    return dataclasses.replace(f, default=None)


def test_derived_defaults_follow_their_section_until_set():
    c = demo.get_config("tiny")
    c.p0_sft.steps, c.p0_sft.lr = 25, 1e-3
    p0 = schema.block(c, "p0_sft")
    assert (p0["min_lr"], p0["warmup_steps"], p0["decay_steps"]) == (1e-4, 2, 25)
    w = schema.block(c, "warm_start")  # tiny: 150 steps of batch 16, lr 3e-3
    assert (w["min_lr"], w["warmup_steps"], w["decay_steps"], w["micro_batch_size"]) == (3e-3 / 10, 15, 150, 16)
    prm = schema.block(c, "prm")  # tiny: 4 steps, round(0.4) = 0 steps of warmup
    assert (prm["warmup_steps"], prm["decay_steps"]) == (0, 4)
    c.p0_sft.min_lr, c.p0_sft.warmup_steps = 5e-5, 0
    p0 = schema.block(c, "p0_sft")
    assert (p0["min_lr"], p0["warmup_steps"], p0["decay_steps"]) == (5e-5, 0, 25)


def test_command_line_overrides_reach_derived_and_block_fields():
    argv = ["run.py", "--config=configs/demo.py:tiny", "--config.p0_sft.min_lr=1e-6", "--config.p0_sft.steps=40",
            "--config.warm_start.weight_decay=0.1", "--config.prm.b2=0.95"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    fv(argv)
    c = fv.config
    assert schema.block(c, "p0_sft")["min_lr"] == 1e-6 and schema.block(c, "p0_sft")["decay_steps"] == 40
    assert c.warm_start.weight_decay == 0.1 and c.prm.b2 == 0.95 and c.sft.b2 == 0.999


@pytest.mark.parametrize("path, value, message", [
    ("p0_sft.b2", 1.0, "config.p0_sft.b2=1.0: must be in [0, 1)"),
    ("warm_start.clip_norm", 0.0, "config.warm_start.clip_norm=0.0: must be > 0"),
    ("prm.warmup_steps", -1, "config.prm.warmup_steps=-1: must be >= 0"),
    ("sampling.hbm_fraction", 1.5, "config.sampling.hbm_fraction=1.5: must be in [0, 1]"),
    ("sft.diverge_window", 0, "config.sft.diverge_window=0: must be >= 1"),
    ("search.thresholds", (0.0, "x"), "'x' is not a finite number"),
    ("model.path", 3, "config.model.path=3: must be a string"),
])
def test_a_bad_value_is_one_line_naming_the_field(path, value, message):
    c = demo.get_config("tiny")
    c.use_prm, c.p0_sft.steps = (False, True), 10
    *parents, leaf = path.split(".")
    node = c
    for p in parents:
        node = node[p]
    with node.ignore_type():
        node[leaf] = value
    with pytest.raises(schema.ConfigValueError) as e:
        schema.check(c)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value, ok", [("fitted", True), ("0.0", True), ("-0.3", True), ("0", True),
                                       ("fit", False), ("nan", False), ("inf", False), ("", False)])
def test_prm_threshold_is_fitted_or_a_number_as_text(value, ok):
    """baseline.prm_threshold: "fitted" or a finite number written as text (a config field keeps
    one type); the command line gives it as text whatever it looks like."""
    c = demo.get_config("tiny")
    c.use_prm = (True,)
    c.baseline.prm_threshold = value
    if ok:
        schema.check(c)
        return
    with pytest.raises(schema.ConfigValueError) as e:
        schema.check(c)
    assert f"config.baseline.prm_threshold={value!r}: must be one of fitted or a finite number" in str(e.value)
    assert "\n" not in str(e.value)


def test_prm_threshold_from_the_command_line_is_text():
    argv = ["run.py", "--config=configs/demo.py:tiny", "--config.baseline.prm_threshold=-0.3"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
    fv(argv)
    assert fv.config.baseline.prm_threshold == "-0.3"
    schema.check(fv.config)


def test_fields_of_a_phase_that_does_not_run_are_not_checked():
    c = demo.get_config("tiny")
    c.use_prm, c.p0_sft.steps, c.warm_start.enabled = (False,), 0, False
    c.prm.lr = c.p0_sft.lr = c.warm_start.lr = -1.0
    schema.check(c)
    c.use_prm = (True,)
    with pytest.raises(schema.ConfigValueError, match=r"config.prm.lr=-1.0: must be > 0"):
        schema.check(c)


def test_unknown_and_missing_fields_are_named():
    c = demo.get_config("tiny")
    c.sft.lrr = 1.0
    with pytest.raises(schema.ConfigValueError, match=r"config.sft.lrr: not a config field"):
        schema.check(c)
    c = demo.get_config("tiny")
    del c.eval["every"]
    with pytest.raises(schema.ConfigValueError, match=r"config.eval.every is missing"):
        schema.check(c)
