"""The call plan: each phase's calls declared once, read by the run and by the fit tool; every
fine-tune reaches the trainer the same way; the SFT step's cache key is an allow-list."""
import jax
import pytest

from bstar_jax.cli import fit as tpu_fit, programs
from bstar_jax.config import plan, schema, sizing
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.rewards import prm_train
from bstar_jax.train import sft, train_state
from configs import demo, gsm8k


def _programs(config, mesh):
    cfg = tpu_fit.model_config(config)
    config = sizing.resolve_sizes(config, cfg, mesh)
    return config, cfg, {p.name: p for p in programs.plan(config, cfg, mesh, sizing.prompt_bucket(config))}


def _decays(spec) -> bool:
    """Whether the optimizer of `spec` carries AdamW's weight-decay state (optax.adamw's masked
    add_decayed_weights), read from the optimizer state's structure."""
    state = jax.eval_shape(train_state.make_optimizer(spec).init, {"w": jax.ShapeDtypeStruct((2, 2), "float32")})
    return "MaskedState" in str(jax.tree_util.tree_structure(state))


def test_the_fit_tool_compiles_the_warm_start_the_run_runs(mesh8):
    """With sft.weight_decay > 0 the SFT step is AdamW, while the warm start keeps its own block
    (weight_decay 0: Adam); the fit tool's warm-start program is the run's step."""
    c = demo.get_config("tiny")
    c.sft.weight_decay = 0.1
    config, cfg, programs = _programs(c, mesh8)
    run = plan.p0(config)  # what bstar/policy.py trains P_0 with
    assert run.name == "warm-start SFT step" and run.config.weight_decay == 0.0
    assert programs["warm-start SFT step"].key == ("sft", cfg, sft.step_key(run.config), 16, 256)
    assert not _decays(sft.train_spec(run.config))
    assert programs["SFT step"].key[2] == sft.step_key(plan.sft(config).config)
    assert _decays(sft.train_spec(plan.sft(config).config))
    # Both read the one declaration: the warm start's own weight decay reaches both.
    c.warm_start.weight_decay = 0.01
    config, _, programs = _programs(c, mesh8)
    assert dict(programs["warm-start SFT step"].key[2])["weight_decay"] == 0.01 == plan.p0(config).config.weight_decay


def test_every_phase_declares_its_calls_and_the_fit_tool_compiles_them(mesh8):
    config, _, programs = _programs(demo.get_config("tiny"), mesh8)
    declared = [call.name for phase in plan.phases(config) for call in phase.calls]
    assert [ph.name for ph in plan.phases(config)] == ["P_0", "PRM", "search", "iteration", "evaluation"]
    # The fit tool adds one decode step and one SFT micro-step, compiled alone for their cost.
    extra = {"sample: iteration": ["decode step"], "SFT step": ["SFT micro-step"]}
    assert list(programs) == [name for n in declared for name in [n] + extra.get(n, [])]
    prm_train_config = plan.prm(config)[2].config
    assert programs["PRM train step"].key[2] == prm_train.train_spec(prm_train_config)


def test_the_run_reads_the_declared_calls():
    c = demo.get_config("tiny")
    assert plan.search(c, "online_rft") is None
    # a baseline with the PRM fits its τ on the dev subset at its own T; answer only it does not
    assert plan.search(c, "online_rft", use_prm=True) == plan.Sample("sample: dev search (T x K)", 8, (1.0,), 4)
    assert plan.search(c, "bstar", use_prm=True).temperatures == (0.7, 1.0)
    c.baseline.prm_threshold = "0.0"
    assert plan.search(c, "online_rft", use_prm=True) is None
    c.baseline.prm_threshold = "fitted"
    assert plan.search(c, "bstar").temperatures == (0.7, 1.0)
    assert plan.search(c, "bstar_threshold_only").temperatures == (1.0,)  # the baseline's T
    assert plan.iteration(c, 0.7) == plan.Sample("sample: iteration", 16, (0.7,), 4)
    greedy, sampled = plan.evaluation(c)
    assert (greedy.temperatures, greedy.samples, sampled.samples) == ((0.0,), 1, 4)
    c.eval.samples_per_query = 0
    assert len(plan.evaluation(c)) == 1
    solutions, completions, training, scoring = plan.prm(c)
    assert (solutions.queries, solutions.samples, completions.completions, training.steps) == (8, 2, 2, 4)


def test_every_fine_tune_gets_its_own_block_the_same_way():
    c = gsm8k.get_config("cpu")
    c.sft.weight_decay, c.sft.b2 = 0.1, 0.95
    specs = {name: train_state.TrainSpec.from_config(plan.train_config(c, name)) for name in schema.BLOCKS}
    assert specs["sft"].weight_decay == 0.1 and specs["sft"].b2 == 0.95
    assert all(specs[n].weight_decay == 0.0 and specs[n].b2 == 0.999 for n in ("p0_sft", "warm_start", "prm"))
    p0 = specs["p0_sft"]  # gsm8k:cpu: 16 steps at 5e-5, batch 8: warmup a tenth (at least 1), cosine to a tenth
    assert (p0.lr, p0.min_lr, p0.warmup_steps, p0.decay_steps, p0.micro_batch_size) == (5e-5, 5e-6, 1, 16, 8)
    warm = plan.train_config(c, "warm_start")
    assert not (warm.freeze_embeddings or warm.freeze_lm_head or warm.freeze_norms)  # from scratch
    assert plan.train_config(c, "p0_sft").freeze_embeddings  # a loaded model: as sft
    prm = plan.train_config(c, "prm")
    assert (prm.param_dtype, prm.max_len, prm.diverge_window) == ("", c.sft.max_len, c.sft.diverge_window)
    with pytest.raises(ValueError, match="no fine-tune 'eval'"):
        plan.train_config(c, "eval")


def test_the_step_cache_key_is_an_allow_list():
    """Fields that never reach the compiled step (stopping rules, sizing fractions, lengths) share
    one compiled step; a field of the program (the LR) does not."""
    from tiny_sft import CFG, tiny_config

    mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    base = sft.make_train_step(CFG, tiny_config(), mesh)
    for field, value in [("diverge_loss_factor", 0.0), ("diverge_window", 7), ("hbm_fraction", 0.5),
                         ("steps_per_iteration", 99), ("max_prompt_len", 16), ("pack", False)]:
        assert sft.step_key(tiny_config(**{field: value})) == sft.step_key(tiny_config()), field
        assert sft.make_train_step(CFG, tiny_config(**{field: value}), mesh) is base, field
    assert sft.make_train_step(CFG, tiny_config(lr=2e-2), mesh) is not base
    assert set(sft.STEP_FIELDS) <= set(schema.SCHEMA.fields["sft"].fields)
