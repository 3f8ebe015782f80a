"""The Llama-family decoder: config, NNX module, pure functions, checkpoints in and out."""
from bstar_jax.models.config import ConfigError, ModelConfig
from bstar_jax.models.decoder import CACHE_AXES, Decoder
from bstar_jax.models.functional import (apply, cache_bytes, cache_sharding, forward, hidden_states,
                                         init, init_cache, logical_axes, module, param_shapes,
                                         param_shardings, shard_params)
from bstar_jax.models.gguf_io import EMBEDDED_MODELS, embedded_path
from bstar_jax.models.hf import CheckpointError, save_hf
from bstar_jax.models.loading import load
