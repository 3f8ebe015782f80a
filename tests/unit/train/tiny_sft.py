"""Small shared pieces of the train tests: a tiny model config, SFT config and examples.
(Tests share configs where they can: a compiled step is cached per (cfg, config, mesh).)"""
import numpy as np

from bstar_jax import models
from bstar_jax.config import schema

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-5)


def tiny_config(**overrides):
    """Tests share configs where they can: a compiled step is cached per (cfg, config, mesh)."""
    c = schema.section("sft")
    c.update(dict(lr=1e-2, min_lr=1e-3, init_lr=0.0, warmup_steps=0, decay_steps=25, batch_size=8,
                  micro_batch_size=8, max_len=64, max_prompt_len=32, max_target_len=32,
                  compute_dtype="float32", steps_per_iteration=4))
    c.update(overrides)
    return c


def examples(n, seed=0, vocab=64, eos=1):
    rng = np.random.default_rng(seed)
    return [(rng.integers(2, vocab, size=int(rng.integers(1, 8))).tolist(),
             rng.integers(2, vocab, size=int(rng.integers(1, 10))).tolist() + [eos]) for _ in range(n)]
