"""The sampler compiled for a TPU topology (no TPU needed: libtpu compiles for a described v5e:2x2):
its temporaries stay a small fraction of the KV cache and weights it holds, i.e. the cache is
updated in place and never copied whole (docs/models.md, sampler memory)."""
import jax
import pytest

from bstar_jax import mesh as mesh_lib
from bstar_jax import models, sampling

pytest.importorskip("libtpu")


def test_sampler_temporaries_are_a_fraction_of_cache_and_weights():
    from jax.experimental import topologies

    try:
        devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
    except Exception as e:  # libtpu present but unable to describe a topology here
        pytest.skip(f"no TPU topology description: {e}")
    mesh = mesh_lib.make_mesh(data=-1, devices=devices)
    cfg = models.ModelConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=64, tie_word_embeddings=True, max_position_embeddings=1024,
                             param_dtype="bfloat16", dtype="bfloat16")
    batch, prompt, new = 64, 32, 224
    memory = sampling.lower_generate(cfg, mesh, batch, prompt, new).compile().memory_analysis()
    cache = models.cache_bytes(cfg, batch, prompt + new) / len(devices)  # batch split over the 4 chips
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(models.param_shapes(cfg)))
    assert memory.temp_size_in_bytes <= 0.25 * (cache + weights), (memory.temp_size_in_bytes, cache, weights)
