"""configs/reproduce.py keeps the powered sizes; configs/demo.py is the same task and model cut to
fit 10 minutes on a CPU, and their `:tiny` presets are one loop (the tests rely on it)."""
from bstar_jax.config import choices
from configs import demo, reproduce

PAPER_TEMPERATURES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)  # App. B.2
PAPER_THRESHOLDS = tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))
# What the demo may cut; every other field (task, data, model shape, learning rates) is the reproduction's.
SIZES = {"workdir", "variants", "use_prm", "primary", "fixed.from_run", "iterations", "data.num_test",
         "queries_per_iteration", "samples_per_query", "target_size", "search.samples_per_query",
         "search.temperatures", "search.thresholds", "eval.samples_per_query", "eval.s_values", "eval.every",
         "warm_start.steps", "warm_start.batch_size", "prm.num_queries", "prm.samples_per_query",
         "prm.completions", "prm.steps", "prm.batch_size", "prm.micro_batch_size",
         "sft.steps_per_iteration", "sft.batch_size", "sft.micro_batch_size", "sft.warmup_steps", "sft.decay_steps",
         "sampling.batch_rows"}


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k: v})
    return out


def test_reproduce_keeps_the_powered_sizes():
    c = reproduce.get_config()
    assert c.variants == reproduce.VARIANTS and len(c.variants) == 7 and c.use_prm == (False, True)
    assert c.fixed.from_run == "bstar" and c.iterations == 4 and c.eval.every == 1
    assert (c.warm_start.steps, c.warm_start.batch_size) == (300, 32)
    assert (c.data.num_train, c.data.num_dev, c.data.num_test) == (2000, 32, 512)
    assert (c.queries_per_iteration, c.samples_per_query, c.target_size) == (192, 16, 768)
    assert c.search.temperatures == PAPER_TEMPERATURES and c.search.thresholds == PAPER_THRESHOLDS
    assert c.search.samples_per_query == 8 and (c.eval.samples_per_query, c.eval.s_values) == (8, (1, 2, 4))
    assert (c.sft.steps_per_iteration, c.sft.batch_size, c.sft.lr, c.sft.min_lr) == (16, 32, 3e-4, 3e-5)
    assert (c.prm.num_queries, c.prm.samples_per_query, c.prm.completions, c.prm.steps) == (64, 4, 4, 150)
    assert c.prm.batch_size == 32 and c.sampling.batch_rows == 512


def test_demo_is_the_reproduction_cut_down():
    full, cut = _flat(reproduce.get_config().to_dict()), _flat(demo.get_config().to_dict())
    changed = {k for k in full if full[k] != cut[k]}
    assert changed <= SIZES, changed - SIZES
    for k in changed - {"workdir", "variants", "use_prm", "primary", "fixed.from_run", "search.temperatures",
                        "search.thresholds", "eval.s_values", "eval.every", "sft.decay_steps"}:
        assert cut[k] <= full[k], k  # a cut, never a larger size
    assert set(cut["search.temperatures"]) <= set(PAPER_TEMPERATURES)
    assert set(cut["search.thresholds"]) <= set(PAPER_THRESHOLDS)
    assert cut["data.num_test"] >= 256  # the paired interval of the closing summary needs the problems


def test_demo_compares_bstar_with_online_rft_under_the_prm_reward():
    c = demo.get_config()
    assert c.variants == ("bstar", "online_rft") and c.use_prm == (True,)
    a, b = choices.parse_primary(c.primary)
    assert {a, b} == {choices.run_name(v, True) for v in c.variants} and a == "bstar+prm"


def test_tiny_presets_are_one_loop():
    """Both `:tiny` run the same task and sizes with both rewards; they differ only in which runs."""
    d, r = _flat(demo.get_config("tiny").to_dict()), _flat(reproduce.get_config("tiny").to_dict())
    assert {k for k in d if d[k] != r[k]} <= {"workdir", "variants", "fixed.from_run"}
    assert d["use_prm"] == (False, True) and d["primary"] == "bstar - online_rft" and d["iterations"] == 2
    assert (d["data.num_test"], d["queries_per_iteration"], d["samples_per_query"]) == (16, 16, 4)
