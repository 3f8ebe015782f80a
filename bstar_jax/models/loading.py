"""`load(path)`: one entry point for HF folders, .gguf files, embedded aliases and hub ids."""
from __future__ import annotations

import os

import jax

from bstar_jax.core import distributed
from bstar_jax.core.errors import ModelNotFoundError
from bstar_jax.models.functional import param_shardings
from bstar_jax.models.gguf_io import EMBEDDED_MODELS, embedded_path, load_gguf
from bstar_jax.models.hf import load_folder



def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@distributed.decided_on_writer
def _exists(path: str) -> bool:
    return os.path.exists(path)


@distributed.decided_on_writer
def _layout(local: str) -> str:
    """"folder" (an HF folder), "gguf" (anything else: a file), or "no_config" (a folder without
    config.json), as the writer sees `local`; every process reads its own copy the same way."""
    if os.path.isdir(local):
        return "folder" if os.path.isfile(os.path.join(local, "config.json")) else "no_config"
    return "gguf"


def resolve(path: str) -> str:
    """A local path for `path`: an alias's GGUF, an existing file/folder, or a downloaded hub id
    (downloaded by every host into its own cache)."""
    if path in EMBEDDED_MODELS:
        return embedded_path(path)
    if _exists(path):
        return path
    looks_local = path.endswith(".gguf") or path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local:
        raise ModelNotFoundError(f"model {path}: no such file or folder; give an HF model folder, a .gguf file "
                                 f"or one of the embedded aliases {', '.join(EMBEDDED_MODELS)}")
    if _offline():
        raise ModelNotFoundError(f"model {path}: not a local path, and the hub is unreachable (HF_HUB_OFFLINE=1); "
                                f"pass a local HF folder, a .gguf file or one of {', '.join(EMBEDDED_MODELS)}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except Exception as e:  # network errors come in many types
        raise ModelNotFoundError(f"model {path}: could not download from the hub ({type(e).__name__}: {e})") from None


def load(path: str, *, mesh=None, param_dtype: str | None = None, dtype: str | None = None):
    """(cfg, params) from an HF folder, a .gguf file, an embedded alias or a hub id.

    With `mesh`, each param goes straight from host memory into its sharded layout on the mesh.
    """
    local = resolve(path)
    layout = _layout(local)
    if layout == "no_config":
        raise ModelNotFoundError(f"model {path}: the folder has no config.json, so it is not an HF model folder")
    if layout == "folder":
        cfg, params = load_folder(local, param_dtype=param_dtype, dtype=dtype)
    else:
        cfg, params = load_gguf(local, param_dtype=param_dtype, dtype=dtype)
    if mesh is not None:
        params = jax.device_put(params, param_shardings(cfg, mesh))
    else:
        params = jax.device_put(params)
    return cfg, params
