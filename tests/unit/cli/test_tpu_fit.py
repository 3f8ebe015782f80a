"""tpu_fit: every program of a config compiled for a TPU slice on this CPU (libtpu, no TPU), and the
HBM sizing. Skipped when libtpu is not installed."""
import importlib.util

import pytest

from bstar_jax.config import chips, sizing as hbm
from bstar_jax.core import mesh as mesh_lib
from configs import demo

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")

# In the order of the call plan's phases (config/plan.py): P_0, PRM, search, iteration, evaluation.
PROGRAMS = ["warm-start SFT step", "sample: PRM solutions", "sample: PRM completions", "PRM train step", "PRM scoring",
            "sample: dev search (T x K)", "sample: iteration", "decode step", "SFT step", "SFT micro-step",
            "sample: eval greedy", "sample: eval K"]


@pytest.fixture(scope="module")
def tiny_fit():
    from bstar_jax.cli import fit as tpu_fit

    return tpu_fit.fit(demo.get_config("tiny"), "v5e:2x2")


@pytest.mark.slow
def test_tiny_demo_fits_v5e(tiny_fit):
    results, text, bad = tiny_fit
    assert bad == []
    assert [r.program.name for r in results] == PROGRAMS
    for name in PROGRAMS:
        assert f"| {name} |" in text
    for r in results:
        assert r.error is None and r.argument > 0 and r.total <= 16 * chips.GiB
    costs = {r.program.name: r.cost for r in results if r.cost}
    assert set(costs) == {"decode step", "SFT micro-step"}
    assert all(c["flops"] > 0 and c["bytes accessed"] > 0 for c in costs.values())
    assert "XLA cost per device (v5e" in text
    # PRM labelling runs the engine: 128 rows (batch_rows), 2 completions per prefix -> 64 prompts.
    completions = next(r.program for r in results if r.program.name == "sample: PRM completions")
    assert completions.key[0] == "requests" and completions.shape.endswith("128 requests, 64 prompts")


@pytest.mark.slow
def test_absurd_rows_do_not_fit(tiny_fit):
    """4M rows per sampler call cannot fit 16 GB: a verdict (no traceback), from the arguments alone
    before any compile; the table says no."""
    from bstar_jax.cli import fit as tpu_fit
    from bstar_jax.cli import programs

    results, _, _ = tiny_fit
    rows = 4194304
    p = programs.engine_call("sample: iteration", results[0].program.key[1], _v5e_mesh(), rows, rows, None, 128, 96)
    r = tpu_fit.compile_program(p, 16 * chips.GiB)
    assert r.error.startswith("arguments alone") and not tpu_fit.fits(r, 16 * chips.GiB)
    text = tpu_fit.format_tables([r], chips.CHIPS["v5e"], 16 * chips.GiB, "t")
    assert "| sample: iteration | 4194304 slots" in text and text.rstrip().endswith("| no |")


@pytest.mark.slow
def test_gsm8k_iteration_sampler_fits_v5e_2x4():
    """The iteration's sampler call of gsm8k.py on v5e:2x4 (4,096 slots over 128 prompts, each
    prefilled once and gathered into its 32 slots): 12.8 of 17.2 GB per chip. Gathering every
    layer's prompt columns at once held a second copy of them beside the 9.8 GB cache and ran out
    of HBM, which this catches; the small model of test_tpu_compile.py does not show it."""
    from bstar_jax.cli import fit as tpu_fit
    from configs import gsm8k

    results, _, bad = tpu_fit.fit(gsm8k.get_config(), "v5e:2x4", only="sample: iteration")
    assert [r.program.name for r in results] == ["sample: iteration"] and bad == [], results[0].error
    assert results[0].total <= 0.9 * chips.device_memory_bytes(tpu_fit.topology_devices("v5e:2x4")[0])


def _v5e_mesh():
    from bstar_jax.cli import fit as tpu_fit

    return mesh_lib.make_mesh(-1, 1, 1, devices=tpu_fit.topology_devices("v5e:2x2"))


def test_rows_per_call_follows_memory(mesh8):
    """Rows are a power of two per device times the data axes, and grow with the budget."""
    from bstar_jax.cli import fit as tpu_fit

    cfg = tpu_fit.model_config(_config("smollm2-135m"))
    small = hbm.rows_per_call(cfg, mesh8, 256, 320, 0.8, hbm_bytes=16 * chips.GiB)
    big = hbm.rows_per_call(cfg, mesh8, 256, 320, 0.8, hbm_bytes=32 * chips.GiB)
    per_device = small // mesh_lib.batch_size_multiple(mesh8)
    assert per_device & (per_device - 1) == 0 and big == 2 * small
    weights = hbm.param_bytes(cfg, mesh8)
    used = weights + per_device * hbm.sampler_row_bytes(cfg, mesh8, 256, 320)
    assert used <= 0.8 * 16 * chips.GiB < weights + 2 * per_device * hbm.sampler_row_bytes(cfg, mesh8, 256, 320)
    with pytest.raises(hbm.UserError):
        hbm.rows_per_call(cfg, mesh8, 256, 320, 0.8, hbm_bytes=chips.GiB // 4)


def test_resolve_sizes_keeps_explicit_sizes_when_off(mesh8):
    from bstar_jax.cli import fit as tpu_fit

    config = _config("smollm2-135m")
    config.sampling.hbm_fraction = config.sft.hbm_fraction = 0.0
    cfg = tpu_fit.model_config(config)
    same = hbm.resolve_sizes(config, cfg, mesh8, 256)
    assert same.sampling.batch_rows == config.sampling.batch_rows
    assert same.sft.micro_batch_size == config.sft.micro_batch_size
    config.sampling.hbm_fraction = config.sft.hbm_fraction = 0.5
    config.device_memory_gb, config.sampling.batch_rows = 16.0, 8
    sized = hbm.resolve_sizes(config, cfg, mesh8, 256)
    assert sized.sampling.batch_rows % 8 == 0 and sized.sampling.batch_rows > 8
    assert config.sft.batch_size % sized.sft.micro_batch_size == 0


def test_chip_table_and_known_models():
    assert {k: round(c.hbm_bytes / chips.GiB) for k, c in chips.CHIPS.items()} == {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
    from bstar_jax.cli import fit as tpu_fit

    qwen = tpu_fit.model_config(_config("Qwen/Qwen2.5-1.5B-Instruct"))
    assert (qwen.num_layers, qwen.hidden_size, qwen.num_heads, qwen.num_kv_heads, qwen.head_dim) == (28, 1536, 12, 2, 128)
    assert qwen.attention_bias and qwen.tie_word_embeddings and qwen.vocab_size == 151936
    assert abs(qwen.num_params() / 1e9 - 1.54) < 0.01  # Qwen2.5-1.5B: 1.54B parameters
    mistral = tpu_fit.model_config(_config("mistral-7b"))
    assert abs(mistral.num_params() / 1e9 - 7.24) < 0.01  # Mistral-7B: 7.24B parameters
    assert hbm.prompt_bucket(_config("mistral-7b")) == 512  # gsm8k keeps prompts <= 320 tokens


def _config(path):
    from configs import gsm8k

    c = gsm8k.get_config()
    c.model.path = path
    return c


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code", "arc"])
def test_tiny_code_and_arc_fit_v5e(name):
    """configs/code.py:tiny and configs/arc.py:tiny: every program of the run compiles for v5e:2x2
    and fits (the search samples every temperature: T is what they search)."""
    import importlib

    from bstar_jax.cli import fit as tpu_fit

    results, _, bad = tpu_fit.fit(importlib.import_module(f"configs.{name}").get_config("tiny"), "v5e:2x2")
    without_prm = [n for n in PROGRAMS if "PRM" not in n]  # the code and ARC tasks have no PRM
    assert bad == [] and [r.program.name for r in results] == without_prm
    assert results[1].program.shape.startswith("64 slots")  # the dev search: 8 dev queries x 2 T x 4 samples


@pytest.mark.parametrize("name", ["code", "arc"])
def test_full_code_and_arc_configs_size_for_v5e_2x4(name):
    """The accelerator configs resolve their sizes from a v5e chip's memory (no compile): the
    sharded Qwen2.5-0.5B train state leaves room for SFT rows and sampler slots."""
    import importlib

    from bstar_jax.cli import fit as tpu_fit

    config = importlib.import_module(f"configs.{name}").get_config()
    devices = tpu_fit.topology_devices("v5e:2x4")
    mesh = mesh_lib.make_mesh(int(config.mesh.data), int(config.mesh.fsdp), int(config.mesh.tensor), devices=devices)
    sized = hbm.resolve_sizes(config, tpu_fit.model_config(config), mesh, hbm.prompt_bucket(config))
    assert sized.sampling.batch_rows >= 256 and sized.sft.micro_batch_size >= 8
    assert int(sized.sft.batch_size) % int(sized.sft.micro_batch_size) == 0
