"""Policies out of the loop as Hugging Face folders (docs/results.md#exported-policies).

<workdir>/policies/<run>/final and, when config.export.every_iteration, .../iteration_<i>: config.json,
model.safetensors and the tokenizer files, which `transformers.AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load. Each folder is written by the writer process into
<folder>.partial and renamed into place (`files.write_then_rename`), so a reader never sees half a
policy; a marker file (`bstar_export.json`) records which iteration a folder holds, so a resumed
run skips folders that already hold what it would write. The writer alone reads the marker and
every process follows its answer: a process reading it a moment later could see the folder the
writer has just written and skip the barrier the writer waits at.
"""
from __future__ import annotations

import json
import tempfile

from bstar_jax.core import distributed, files
from bstar_jax import models

MARKER = "bstar_export.json"


def policy_dir(workdir, run: str, iteration: int | None = None):
    """<workdir>/policies/<run>/final, or .../iteration_<i> when `iteration` is given (an
    `epath.Path`: the workdir may be local or gs://)."""
    leaf = "final" if iteration is None else f"iteration_{int(iteration)}"
    return files.path(workdir) / "policies" / run / leaf


@distributed.decided_on_writer
def exported_iteration(folder) -> int | None:
    """The iteration a complete exported folder holds, or None (absent, partial or foreign);
    read by the writer, the same answer in every process."""
    try:
        return int(json.loads((files.path(folder) / MARKER).read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_policy(cfg, params, tokenizer, folder, *, run: str, iteration: int) -> bool:
    """Writes the policy (`cfg`, `params`) and `tokenizer` as an HF folder at `folder`.

    Returns False (and writes nothing) when `folder` already holds this run's `iteration`: a
    resumed run redraws every iteration identically, so that folder is already what it would
    write. Every process must call it (sharded params are gathered collectively); only the
    writer process touches files, and every process returns once the folder is in place.
    """
    if exported_iteration(folder) == int(iteration):  # the writer's reading, in every process
        return False
    host = distributed.to_host(params)  # a collective: every process gathers
    if distributed.is_writer():
        def write_policy(tmp):
            models.save_hf(cfg, host, tmp)
            with tempfile.TemporaryDirectory() as local:  # save_pretrained writes local files only
                tokenizer.save_pretrained(local)
                files.copy_tree(local, tmp)
            (tmp / MARKER).write_text(json.dumps({"run": run, "iteration": int(iteration)}))

        # over an older iteration's final: kept (as <folder>.old) until the new one is in place
        files.write_then_rename(folder, write_policy)
    distributed.barrier(f"export: {folder}")
    return True
