"""ModelConfig: the Llama-family architecture as Hugging Face configures it.

One frozen (hashable) dataclass, so that it can be a static argument of every jitted function.
`from_hf_dict` reads a config.json of model_type llama / mistral / qwen2 / qwen3 (SmolLM2 and
Llama 3.2 are llama with tied embeddings; Llama 3.x adds llama3 RoPE scaling) and `to_hf_dict`
writes one back.
"""
from __future__ import annotations
from bstar_jax.core.errors import ConfigError

import dataclasses
import json
import math
import os
from typing import Any

import jax.numpy as jnp

from bstar_jax.core import distributed

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}



@distributed.decided_on_writer
def _is_folder(path: str) -> bool:
    """`path` names a folder (as the writer sees it; each process reads its own copy)."""
    return os.path.isdir(path)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of one decoder; every field mirrors an HF config.json key."""

    model_type: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # llama3 rope scaling as a tuple of (key, value) pairs (hashable); () = none.
    rope_scaling: tuple = ()
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v biases (Qwen2)
    qk_norm: bool = False  # RMSNorm of each query/key head before RoPE (Qwen3)
    sliding_window: int | None = None  # Mistral; None = full causal attention
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"  # storage dtype of the weights
    dtype: str = "float32"  # compute dtype of activations

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unknown model_type {self.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected one of {sorted(_DTYPES)}")

    @property
    def pad_id(self) -> int:
        """The token that fills a row after its EOS and the unused prompt columns (id 0 when the
        checkpoint names no pad token); masks keep it out of every result."""
        return int(self.pad_token_id) if self.pad_token_id is not None and self.pad_token_id >= 0 else 0

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        E, F, V = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = E * q + 2 * E * kv + q * E + 3 * E * F + 2 * E
        if self.attention_bias:
            per_layer += q + 2 * kv
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        return V * E * (1 if self.tie_word_embeddings else 2) + self.num_layers * per_layer + E

    # ------------------------------------------------------------------ HF config.json

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, source: str = "config.json", **overrides) -> "ModelConfig":
        """Reads an HF config dict. `rope_theta` (transformers 4) and `rope_parameters` (5) both work."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{source}: unknown model_type {model_type!r}; "
                              f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        try:
            num_heads = int(d["num_attention_heads"])
            hidden = int(d["hidden_size"])
            rope = dict(d.get("rope_parameters") or {})
            legacy_scaling = d.get("rope_scaling") or {}
            theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
            rope_type = rope.get("rope_type", legacy_scaling.get("rope_type", legacy_scaling.get("type", "default")))
            scaling = ()
            if rope_type == "llama3":
                src = rope if "factor" in rope else legacy_scaling
                scaling = tuple(sorted(
                    (k, float(src[k])) for k in
                    ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")))
            elif rope_type not in ("default", None):
                raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (default, llama3)")
            sliding = d.get("sliding_window")
            if model_type in ("qwen2", "qwen3") and not d.get("use_sliding_window", False):
                sliding = None
            eos = d.get("eos_token_id")
            if isinstance(eos, list):
                eos = eos[0] if eos else None
            cfg = dict(
                model_type=model_type,
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_layers=int(d["num_hidden_layers"]),
                num_heads=num_heads,
                num_kv_heads=int(d.get("num_key_value_heads") or num_heads),
                head_dim=int(d.get("head_dim") or hidden // num_heads),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                rope_scaling=scaling,
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=bool(d.get("attention_bias", model_type == "qwen2")),
                qk_norm=model_type == "qwen3",
                sliding_window=int(sliding) if sliding else None,
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=eos,
                pad_token_id=d.get("pad_token_id"),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {e.args[0]!r}") from None
        if d.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias=true is not supported")
        cfg.update(overrides)
        return cls(**cfg)

    @classmethod
    def from_hf_file(cls, path: str, **overrides) -> "ModelConfig":
        """Reads config.json from a file path or an HF folder."""
        if _is_folder(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no config.json")
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_hf_dict(d, source=path, **overrides)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json transformers needs to rebuild this model."""
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "qwen3": "Qwen3ForCausalLM"}
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope = {"rope_type": "llama3", "rope_theta": self.rope_theta, **dict(self.rope_scaling)}
            rope["original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
        d = {
            "architectures": [arch[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
            "dtype": self.param_dtype,
        }
        if self.model_type in ("llama", "qwen3"):
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = False
        if self.model_type == "mistral":
            d["sliding_window"] = self.sliding_window
        if self.model_type in ("qwen2", "qwen3"):
            d["use_sliding_window"] = False
            d["sliding_window"] = None
        return d


def rope_inv_freq(cfg: ModelConfig):
    """Inverse frequencies [head_dim/2] of RoPE, with llama3 scaling when configured."""
    import numpy as np

    D = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, D, 2, dtype=np.float64) / D))
    if cfg.rope_scaling:
        s = dict(cfg.rope_scaling)
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_len = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)
