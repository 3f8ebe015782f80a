"""The sampling engine compiled for a TPU topology (no TPU needed: libtpu compiles for a described
v5e:2x2): its temporaries stay a small fraction of the KV cache and weights it holds, i.e. the
cache is updated in place and never copied whole (docs/models.md, sampler memory)."""
import jax
import pytest

import static_sampler
from bstar_jax import models
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.generate import engine

pytest.importorskip("libtpu")


CFG = models.ModelConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=64, tie_word_embeddings=True, max_position_embeddings=1024,
                         param_dtype="bfloat16", dtype="bfloat16")


def _v5e_mesh():
    from jax.experimental import topologies

    try:
        devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
    except Exception as e:  # libtpu present but unable to describe a topology here
        pytest.skip(f"no TPU topology description: {e}")
    return mesh_lib.make_mesh(data=-1, devices=devices), len(devices)


def _budget(batch, max_len, n_devices):
    cache = models.cache_bytes(CFG, batch, max_len) / n_devices  # batch split over the chips
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(models.param_shapes(CFG)))
    return cache, weights


def test_static_case_temporaries_are_a_fraction_of_cache_and_weights():
    """requests_per_slot 1 (`sampling.generate`, PRM labelling): 256 requests with prompts of
    their own, a slot each (64 per chip), no refills: each slot's prompt is prefilled into the
    slot. Per chip 2.77 MB of temporaries against a 16.8 MB cache: the engine's fixed ~2 MB of
    step buffers (as with refills, below) and no copy of the cache. At 16 slots per chip that
    fixed part alone (2.23 MB) exceeds a quarter of the 4.2 MB cache, hence 64."""
    mesh, n = _v5e_mesh()
    batch, prompt, new = 256, 32, 224
    memory = engine.lower_generate_requests(CFG, mesh, batch, batch, batch, prompt, new).compile().memory_analysis()
    cache, weights = _budget(batch, prompt + new, n)
    assert memory.temp_size_in_bytes <= 0.25 * (cache + weights), (memory.temp_size_in_bytes, cache, weights)


def test_refilling_temporaries_are_a_fraction_of_cache_and_weights():
    """512 requests over 8 prompts through 256 slots (64 per chip). Per chip the loop's
    temporaries were 2.42 MB at 64 slots, 2.55 MB at 128 and 3.59 MB at 256 (cache 4.2, 8.4 and
    16.8 MB): a fixed ~2.3 MB of step buffers, prompt store and refill plus ~12% of the cache, no
    whole copy of it; at 64 slots per chip they are under the budget, which a copy would exceed."""
    mesh, n = _v5e_mesh()
    requests, prompts, slots, prompt, new = 512, 8, 256, 32, 224
    memory = engine.lower_generate_requests(CFG, mesh, requests, prompts, slots, prompt,
                                            new).compile().memory_analysis()
    cache, weights = _budget(slots, prompt + new, n)
    print(f"engine with refills on v5e:2x2 per chip: temporaries {memory.temp_size_in_bytes} B, "
          f"cache {cache:.0f} B, weights {weights} B")
    assert memory.temp_size_in_bytes <= 0.25 * (cache + weights), (memory.temp_size_in_bytes, cache, weights)


def test_engine_without_refills_keeps_the_decode_layout():
    """R = S (a run's default) with shared prompts: nothing is copied between slots, so the
    compiler gives the cache the layout a plain prefill-then-decode program's decode step uses
    (tests/oracles/static_sampler.py). A per-slot copy (the refilling path) makes it pick a
    layout suited to the copy instead; at SmolLM2 shapes (1,024 rows, v5e:2x2) that held two more
    caches in temporaries, and without it the temporaries were 0.419 GB against a 3.40 GB cache
    (docs/memory.md)."""
    mesh, n = _v5e_mesh()
    requests = slots = 256
    prompts, prompt, new = 8, 32, 224
    compiled = engine.lower_generate_requests(CFG, mesh, requests, prompts, slots, prompt, new).compile()
    static = static_sampler.lower_generate(CFG, mesh, slots, prompt, new).compile()
    static_k = jax.tree.leaves(static.input_formats[0])[-3]  # the cache's k (then v, pos)
    assert compiled.input_formats[0][10].k.layout == static_k.layout, (compiled.input_formats[0][10].k, static_k)
    cache, weights = _budget(slots, prompt + new, n)
    temps = compiled.memory_analysis().temp_size_in_bytes
    assert temps <= 0.25 * (cache + weights), (temps, cache, weights)
