"""The workdir remembers its run: <workdir>/run_config.json (docs/errors.md).

The first start writes the resolved config and what its model and data resolved to (paths, sizes
and content hashes) atomically. A later start in a workdir that already holds results
(checkpoints, P_0, metrics rows) compares: a field that changes results refuses the run with the
list of differing fields, unless `config.on_config_change="continue"`; fields that do not change
results (`NEUTRAL`) may differ, and `iterations` may grow (a run extends exactly: every iteration
draws its own random numbers). Process 0 alone reads, decides and writes; the other processes
follow its decision (they raise the same refusal). Paths go through etils.epath (gs:// works).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from etils import epath

from bstar_jax.config import choices
from bstar_jax.core import distributed, files
from bstar_jax.core.errors import ConfigChangedError

FILENAME = "run_config.json"
# Fields that change where or how visibly a run goes, not what it computes.
# `replicate` names its runs apart (<variant>-r<k>): it adds runs to a workdir and changes none there.
NEUTRAL = ("workdir", "progress", "on_config_change", "checkpoint.keep", "mesh.data", "mesh.fsdp", "mesh.tensor",
           "export.final", "export.every_iteration", "eval.every", "replicate", "sft.save_every",
           "wandb.enabled", "wandb.project", "wandb.mode", "wandb.completions")
GROWABLE = ("iterations",)
# Fields newer than some records, each with the value that does what a record without it did (a
# function of that record's flat config), or ANY: a record without it ran no variant that reads it
# (online_rft_fixed), or predates the report's primary comparison (`primary` is not neutral:
# changing it once results exist is a change the record keeps). The optimizer blocks of p0_sft and
# warm_start took sft's Adam settings, the PRM's the trainer's defaults; their schedules were the
# derived defaults (None); data.test_name "" is the data's own test split.
ANY = object()


def _as_sft(field: str):
    return lambda old: old.get(f"sft.{field}")


_ADAM = ("init_lr", "b1", "b2", "eps", "clip_norm")


def _held_prm_threshold(old: dict):
    """baseline.prm_threshold of a record without it: the baselines' runs with the PRM held
    baseline.threshold; a record without such a run never read it."""
    if True in (old.get("use_prm") or ()) and set(old.get("variants") or ()) & set(choices.BASELINES):
        return str(float(old.get("baseline.threshold", 0.0)))
    return ANY


INTRODUCED = {
    "fixed.from_run": ANY, "fixed.temperature": ANY, "fixed.threshold": ANY, "primary": ANY,
    "data.test_name": "",
    **{f"{s}.{f}": None for s in ("p0_sft", "warm_start") for f in ("min_lr", "warmup_steps", "decay_steps")},
    **{f"p0_sft.{f}": _as_sft(f) for f in _ADAM + ("weight_decay",)},
    **{f"warm_start.{f}": _as_sft(f) for f in _ADAM},
    "warm_start.weight_decay": 0.0, "warm_start.micro_batch_size": None,
    "prm.warmup_steps": None, "prm.decay_steps": None, "prm.init_lr": 0.0, "prm.weight_decay": 0.0,
    "prm.b1": 0.9, "prm.b2": 0.999, "prm.eps": 1e-8, "prm.clip_norm": 1.0,
    "baseline.prm_threshold": _held_prm_threshold,
}
# Fields no longer in the config, with the value that behaves as the config does without them
# (search.restrict gave way to the variants bstar_temperature_only and bstar_threshold_only).
RETIRED = {"search.restrict": "both"}
_HASH_WHOLE = 64 << 20  # files up to this size are hashed whole; larger: size + head and tail



def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def _file_digest(path: str) -> dict:
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _HASH_WHOLE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(1 << 20))
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return {"size": size, "sha256": h.hexdigest()}


def _resolve(path: str) -> dict | None:
    """What a model/data path resolved to: per file, size and hash (None when not local)."""
    from bstar_jax.models.gguf_io import EMBEDDED_MODELS, embedded_path

    if not path:
        return None
    if path in EMBEDDED_MODELS:
        try:
            path = embedded_path(path)
        except (KeyError, FileNotFoundError):
            return None
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return {"path": os.path.abspath(path), **_file_digest(path)}
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".json", ".safetensors", ".gguf", ".model", ".txt")))
        return {"path": os.path.abspath(path),
                "files": {f: _file_digest(os.path.join(path, f)) for f in files if os.path.isfile(os.path.join(path, f))}}
    return {"path": path}  # a hub id: its revision is not pinned here


def describe(config) -> dict:
    """The record of a run: the flat config and what its model and data paths resolved to."""
    flat = _flatten(config.to_dict())
    resolved = {}
    if not flat.get("warm_start.enabled"):
        for f in ("model.path", "model.tokenizer", "prm.path"):
            resolved[f] = _resolve(flat.get(f) or "")
    for f in ("data.train_path", "data.test_path"):
        if flat.get("data.name", "").endswith("_jsonl"):
            resolved[f] = _resolve(flat.get(f) or "")
    return {"config": flat, "resolved": resolved}


def _has_results(workdir) -> bool:
    workdir = epath.Path(workdir)
    for sub in ("checkpoints", "p0"):
        p = workdir / sub
        if p.is_dir() and any(True for _ in p.iterdir()):
            return True
    metrics = workdir / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().length > 0


def result_fields(config) -> dict:
    """The flat config less the fields that do not change what an iteration computes (NEUTRAL,
    GROWABLE)."""
    return {k: v for k, v in _flatten(config.to_dict()).items() if k not in NEUTRAL and k not in GROWABLE}


def differences(old: dict, new: dict) -> list[str]:
    """`field: old -> new` for every field (or resolved file) that would change results."""
    out = []
    a, b = old.get("config", {}), new.get("config", {})
    for k in sorted(set(a) | set(b)):
        if k in NEUTRAL or a.get(k) == b.get(k):
            continue
        if k in INTRODUCED and k not in a:
            same = INTRODUCED[k](a) if callable(INTRODUCED[k]) else INTRODUCED[k]
            if same is ANY or b.get(k) == same:
                continue
        if k in RETIRED and k not in b and a.get(k) == RETIRED[k]:
            continue
        if k in GROWABLE and isinstance(a.get(k), int) and isinstance(b.get(k), int) and b[k] >= a[k]:
            continue
        out.append(f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}")
    ra, rb = old.get("resolved", {}), new.get("resolved", {})
    for k in sorted(set(ra) | set(rb)):
        if ra.get(k) != rb.get(k) and not (k in [d.split(":")[0] for d in out]):
            out.append(f"{k}: the file(s) it names changed (size or contents)")
    return out


def _write(path: epath.Path, record: dict) -> None:
    files.write_then_rename(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, sort_keys=True)))


@distributed.decided_on_writer
def check_and_record(config) -> None:
    """Refuses a config that would change the results already in the workdir; records this one.

    The first start (or a workdir without results yet) writes the record; a rerun with an
    equivalent config leaves it; `on_config_change="continue"` accepts the change, logs it and
    appends it to the record's history. Runs in the writer; every process raises its refusal.
    """
    workdir = config.workdir
    path = epath.Path(workdir) / FILENAME
    new = describe(config)
    new["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigChangedError(f"{path}: unreadable run record ({e}); restore it, or delete it to "
                                     f"record this config as the workdir's") from None
    has_results = _has_results(workdir)
    if old is not None and has_results:
        diff = differences(old, new)
        if not diff:
            if old.get("config") != new["config"]:  # neutral fields, or more iterations
                _write(path, dict(new, history=old.get("history", [])))
            return
        if config.get("on_config_change", "refuse") != "continue":
            raise ConfigChangedError(
                f"{workdir} holds results of a different config ({'; '.join(diff)}); use another "
                f"--config.workdir, or pass --config.on_config_change=continue to resume with this config")
        logging.warning("%s: continuing with a changed config: %s", workdir, "; ".join(diff))
        new["history"] = old.get("history", []) + [{"written": old.get("written"), "changes": diff}]
    elif old is None and has_results:
        logging.warning("%s: results without a %s (an older version made them); recording this config",
                        workdir, FILENAME)
    _write(path, new)
