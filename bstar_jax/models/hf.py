"""Hugging Face safetensors checkpoints in and out.

Torch Linear weights are [out, in]; ours are [in, out] and stacked over layers. The table
`_LAYER_TENSORS` is the one place that names the correspondence, used both ways.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from safetensors import safe_open
from etils import epath
from safetensors.numpy import save as save_safetensors

from bstar_jax.core import distributed
from bstar_jax.core.errors import CheckpointError
from bstar_jax.models.config import ModelConfig

# our layer param -> (HF tensor name under model.layers.{i}., transpose?)
_LAYER_TENSORS = {
    "attn_norm": ("input_layernorm.weight", False),
    "q": ("self_attn.q_proj.weight", True),
    "k": ("self_attn.k_proj.weight", True),
    "v": ("self_attn.v_proj.weight", True),
    "q_bias": ("self_attn.q_proj.bias", False),
    "k_bias": ("self_attn.k_proj.bias", False),
    "v_bias": ("self_attn.v_proj.bias", False),
    "q_norm": ("self_attn.q_norm.weight", False),
    "k_norm": ("self_attn.k_norm.weight", False),
    "o": ("self_attn.o_proj.weight", True),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "gate": ("mlp.gate_proj.weight", True),
    "up": ("mlp.up_proj.weight", True),
    "down": ("mlp.down_proj.weight", True),
}
_TOP_TENSORS = {
    "embed": ("model.embed_tokens.weight", False),
    "final_norm": ("model.norm.weight", False),
    "lm_head": ("lm_head.weight", True),
}



def _open(path: str, framework: str):
    """safe_open, with a damaged (e.g. truncated) file reported as the user's error."""
    try:
        return safe_open(path, framework=framework)
    except Exception as e:  # safetensors raises its own SafetensorError or OSError
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]}); "
                              f"the download or save was probably cut short: fetch or save it again") from None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, for every tensor this config needs (torch layout)."""
    from bstar_jax.models.functional import param_shapes

    shapes = param_shapes(cfg)
    out = {}
    for ours, (name, transpose) in _TOP_TENSORS.items():
        if ours in shapes:
            s = shapes[ours].shape
            out[name] = s[::-1] if transpose else s
    for ours, (name, transpose) in _LAYER_TENSORS.items():
        if ours in shapes["layers"]:
            s = shapes["layers"][ours].shape[1:]
            for i in range(cfg.num_layers):
                out[f"model.layers.{i}.{name}"] = s[::-1] if transpose else s
    return out


def _tensor_files(folder: str) -> dict[str, str]:
    """HF tensor name -> safetensors file path, from the index or the single file."""
    return {name: os.path.join(folder, f) for name, f in _tensor_file_names(folder).items()}


@distributed.decided_on_writer
def _tensor_file_names(folder: str) -> dict[str, str]:
    """HF tensor name -> safetensors file name, as the writer reads `folder` (each process
    then reads the same files of its own copy)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e})") from None
        missing = sorted({v for v in weight_map.values() if not os.path.exists(os.path.join(folder, v))})
        if missing:
            raise CheckpointError(f"{folder}: safetensors shard(s) listed in model.safetensors.index.json "
                                  f"are missing: {', '.join(missing)}")
        return dict(weight_map)
    single = os.path.join(folder, "model.safetensors")
    if not os.path.exists(single):
        raise CheckpointError(f"{folder}: no model.safetensors and no model.safetensors.index.json")
    with _open(single, "numpy") as f:
        return {k: "model.safetensors" for k in f.keys()}


def read_tensors(folder: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Reads every tensor the config needs, checking names and shapes (torch layout, numpy)."""
    files = _tensor_files(folder)
    expected = expected_shapes(cfg)
    if cfg.tie_word_embeddings:
        files.pop("lm_head.weight", None)
    missing = [k for k in expected if k not in files]
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} tensor(s) missing, e.g. {missing[0]!r}")
    by_file: dict[str, list[str]] = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    tensors = {}
    for path, names in by_file.items():
        with _open(path, "flax") as f:
            for name in names:
                try:
                    t = np.asarray(f.get_tensor(name))
                except Exception as e:  # a file cut short after its header
                    raise CheckpointError(f"{path}: tensor {name!r} is unreadable ({str(e)[:200]}); the file is "
                                          f"damaged or truncated: fetch or save it again") from None
                if tuple(t.shape) != tuple(expected[name]):
                    raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, "
                                          f"config.json implies {tuple(expected[name])}")
                tensors[name] = t
    return tensors


def params_from_torch_layout(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> dict:
    """Our params dict (numpy, param dtype) from HF-named tensors in torch layout."""
    dt = cfg.jnp_param_dtype

    def conv(t, transpose):
        t = t.T if transpose else t
        return np.ascontiguousarray(t).astype(dt)

    params = {}
    for ours, (name, transpose) in _TOP_TENSORS.items():
        if name in tensors and not (ours == "lm_head" and cfg.tie_word_embeddings):
            params[ours] = conv(tensors[name], transpose)
    layers = {}
    for ours, (name, transpose) in _LAYER_TENSORS.items():
        key0 = f"model.layers.0.{name}"
        if key0 in tensors:
            layers[ours] = np.stack([conv(tensors[f"model.layers.{i}.{name}"], transpose)
                                     for i in range(cfg.num_layers)])
    params["layers"] = layers
    return params


def load_folder(folder: str, *, param_dtype: str | None = None, dtype: str | None = None):
    """(cfg, numpy params) from an HF folder: config.json + model.safetensors [+ index]."""
    overrides = {k: v for k, v in (("param_dtype", param_dtype), ("dtype", dtype)) if v}
    cfg = ModelConfig.from_hf_file(folder, **overrides)
    return cfg, params_from_torch_layout(cfg, read_tensors(folder, cfg))


def to_torch_layout(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
    """HF-named tensors (torch layout, numpy) from our params."""
    host = jax.device_get(params)
    out = {}
    for ours, (name, transpose) in _TOP_TENSORS.items():
        if ours in host:
            t = np.asarray(host[ours])
            out[name] = np.ascontiguousarray(t.T if transpose else t)
    for ours, (name, transpose) in _LAYER_TENSORS.items():
        if ours in host["layers"]:
            stacked = np.asarray(host["layers"][ours])
            for i in range(cfg.num_layers):
                out[f"model.layers.{i}.{name}"] = np.ascontiguousarray(stacked[i].T if transpose else stacked[i])
    return out


def save_hf(cfg: ModelConfig, params, out_dir, *, max_shard_bytes: int = 4 << 30) -> None:
    """Writes config.json + safetensors (sharded with an index above `max_shard_bytes`) into
    `out_dir`, a local path or a gs:// URL (files are serialised in memory, then written)."""
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = to_torch_layout(cfg, params)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        if current and size + t.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.nbytes
    shards.append(current)
    meta = {"format": "pt"}
    if len(shards) == 1:
        (out_dir / "model.safetensors").write_bytes(save_safetensors(shards[0], metadata=meta))
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (out_dir / fname).write_bytes(save_safetensors(shard, metadata=meta))
        weight_map.update({k: fname for k in shard})
    total = sum(t.nbytes for t in tensors.values())
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
