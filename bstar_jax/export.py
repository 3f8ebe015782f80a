"""Policies out of the loop as Hugging Face folders (docs/results.md#exported-policies).

<workdir>/policies/<run>/final and, when config.export.every_iteration, .../iteration_<i>: config.json,
model.safetensors and the tokenizer files, which `transformers.AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load. Each folder is written by the writer process into
<folder>.partial and renamed into place, so a reader never sees half a policy; a marker file
(`bstar_export.json`) records which iteration a folder holds, so a resumed run skips folders that
already hold what it would write.
"""
from __future__ import annotations

import json
import os
import shutil

from bstar_jax import distributed, models

MARKER = "bstar_export.json"


def policy_dir(workdir: str, run: str, iteration: int | None = None) -> str:
    """<workdir>/policies/<run>/final, or .../iteration_<i> when `iteration` is given."""
    leaf = "final" if iteration is None else f"iteration_{int(iteration)}"
    return os.path.join(workdir, "policies", run, leaf)


def exported_iteration(folder: str) -> int | None:
    """The iteration a complete exported folder holds, or None (absent, partial or foreign)."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            return int(json.load(f)["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_policy(cfg, params, tokenizer, folder: str, *, run: str, iteration: int) -> bool:
    """Writes the policy (`cfg`, `params`) and `tokenizer` as an HF folder at `folder`.

    Returns False (and writes nothing) when `folder` already holds this run's `iteration`: a
    resumed run redraws every iteration identically, so that folder is already what it would
    write. Every process must call it (sharded params are gathered collectively); only the
    writer process touches files, and every process returns once the folder is in place.
    """
    if exported_iteration(folder) == int(iteration):  # shared storage: every process sees the same
        return False
    host = distributed.to_host(params)  # a collective: every process gathers
    if distributed.is_writer():
        tmp, old = folder + ".partial", folder + ".old"
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(tmp)
        models.save_hf(cfg, host, tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"run": run, "iteration": int(iteration)}, f)
        if os.path.exists(folder):  # an older iteration's final: swap, then drop it
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(f"export: {folder}")
    return True
