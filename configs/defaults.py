"""Shared defaults of every config; each configs/*.py overrides a handful of fields.

Every field, its default, range, unit and meaning is declared once in bstar_jax/config/schema.py
(listed in docs/config.md); "paper §x" / "App. x" there point at a number's source
(docs/algorithm.md#grids-and-defaults). Reading a config imports no training code.
"""
import ml_collections as mlc

from bstar_jax.config import schema


def base_config() -> mlc.ConfigDict:
    """Every field at its schema default."""
    return schema.defaults()


def shrink_to_tiny(c: mlc.ConfigDict) -> mlc.ConfigDict:
    """The `tiny` argument: the whole loop in about a minute on a CPU (tests, quick checks).

    Whatever the config's model and data, tiny runs the synthetic task with a from-scratch tiny
    model (warm start), so it needs no files and no network.
    """
    c.data.name = "synthetic"
    c.warm_start.enabled = True
    c.p0_sft.steps = 0
    c.model.dtype = c.sft.compute_dtype = "float32"
    c.prm.path = ""
    c.iterations = 2
    c.data.num_train, c.data.num_dev, c.data.num_test = 256, 8, 16
    c.queries_per_iteration, c.samples_per_query, c.target_size = 16, 4, 32
    c.search.temperatures = (0.7, 1.0)
    c.search.thresholds = (-0.2, 0.0, 0.5)
    c.search.samples_per_query = 4
    c.sampling.max_new_tokens = 96
    c.data.difficulty = 1
    c.sampling.batch_rows = 128
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.0  # explicit sizes on a CPU
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.eval.samples_per_query, c.eval.s_values = 4, (1, 2)
    c.sft.steps_per_iteration, c.sft.batch_size, c.sft.micro_batch_size = 4, 16, 8
    c.sft.warmup_steps, c.sft.decay_steps = 2, 40
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 256, 128, 128
    c.warm_start.steps, c.warm_start.batch_size = 150, 16
    c.warm_start.hidden_size, c.warm_start.intermediate_size = 64, 128
    c.warm_start.num_layers, c.warm_start.max_len = 2, 256
    c.prm.num_queries, c.prm.samples_per_query, c.prm.completions, c.prm.steps = 8, 2, 2, 4
    c.prm.batch_size = c.prm.micro_batch_size = 16
    return c
