"""The Llama-family decoder: config, NNX module, KV cache, pure functions, checkpoints in and out."""
from bstar_jax.models.cache import (K_AXES, POS_AXES, V_AXES, KVCache, cache_bytes, cache_shapes,
                                    cache_shardings, init_cache)
from bstar_jax.core.errors import CheckpointError, ConfigError
from bstar_jax.models.config import ModelConfig
from bstar_jax.models.decoder import Decoder
from bstar_jax.models.functional import (forward, hidden_states, init, logical_axes, logits, module,
                                         param_shapes, param_shardings, shard_params)
from bstar_jax.models.gguf_io import EMBEDDED_MODELS, embedded_path
from bstar_jax.models.hf import save_hf
from bstar_jax.models.loading import load
