"""Shape-only architectures by name: the HF config.json fields of models the memory check
(`python -m bstar_jax.tpu_fit`) sizes without their weights."""
from __future__ import annotations

from bstar_jax.models.config import ModelConfig

ARCHITECTURES = {
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0),
    "qwen2.5-0.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0),
    "mistral-7b": dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=32768, tie_word_embeddings=False, rope_theta=10000.0,
                       sliding_window=4096),
}


def model_config(name: str) -> ModelConfig:
    """The ModelConfig of a known architecture (a key of ARCHITECTURES)."""
    return ModelConfig.from_hf_dict(ARCHITECTURES[name], source=f"known model {name}")
