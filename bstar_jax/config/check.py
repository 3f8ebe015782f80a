"""Every config field checked before any work (docs/errors.md): range, type, names, files.

`validate(config, mesh)` raises `ConfigValueError` (a `UserError`) naming the field, the value
and what to do. Each field's type, range and choices come from the schema (config/schema.py);
this module adds what involves several fields, the mesh or files: batch sizes against the mesh and
each other, schedules, the warm-start model's shapes, the data files through their loaders (whose
errors name file:line), the model path and a writable workdir. `validate_examples` checks the
loaded splits (duplicated ids and train/test overlap are warnings), `validate_prompt_lengths` the
tokenised prompts against the model's context. Nothing here trains, samples or writes outside the
workdir.
"""
from __future__ import annotations

import logging
import math
import os
import uuid

from bstar_jax.config import choices, fields, schema
from bstar_jax import data
from bstar_jax.core import distributed, files
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.rewards import verify

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# Longest question or solution accepted (characters): a problem is a few kB; megabytes are a broken
# file, and would otherwise fail late, deep in the sampler.
MAX_TEXT_CHARS = 100_000

ConfigValueError = fields.ConfigValueError
_fail = fields.fail
_get = fields.lookup


def validate_mesh_config(mesh_config, n_devices: int | None = None) -> None:
    """data/fsdp/tensor sizes: integers >= 1 or -1 (at most one), their product the device count."""
    import jax

    n = jax.device_count() if n_devices is None else n_devices
    sizes = {}
    for axis in ("data", "fsdp", "tensor"):
        v = _get(mesh_config, axis)
        if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and v != -1):
            _fail(f"mesh.{axis}", v, "must be an integer >= 1, or -1 for the remaining devices")
        sizes[axis] = v
    free = [a for a, v in sizes.items() if v == -1]
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if len(free) > 1:
        _fail(f"mesh.{free[1]}", -1, f"only one mesh axis may be -1 (also mesh.{free[0]})")
    if (free and n % fixed) or (not free and fixed != n):
        raise ConfigValueError(f"config.mesh: data*fsdp*tensor = {sizes} does not fit {n} device(s); "
                               f"make the product {n} or set one axis to -1")


def _fine_tune(config, section: str, multiple: int) -> None:
    """One optimizer block: both batch sizes divide over the mesh's data axes and the micro-batch
    divides the batch, min_lr <= lr, warmup_steps <= decay_steps (derived defaults resolved)."""
    b = schema.block(config, section)
    for size in ("batch_size", "micro_batch_size"):
        if b[size] % multiple:
            _fail(f"{section}.{size}", b[size], f"must be a multiple of {multiple}, the devices along the mesh's "
                                                f"data axes {mesh_lib.BATCH_AXES}")
    if b["batch_size"] % b["micro_batch_size"]:
        _fail(f"{section}.batch_size", b["batch_size"],
              f"must be a multiple of {section}.micro_batch_size={b['micro_batch_size']}")
    if b["min_lr"] > b["lr"]:
        _fail(f"{section}.min_lr", b["min_lr"], f"must be <= {section}.lr={b['lr']}")
    if b["warmup_steps"] > b["decay_steps"]:
        _fail(f"{section}.warmup_steps", b["warmup_steps"],
              f"must be <= {section}.decay_steps={b['decay_steps']}")


def validate_fields(config, mesh) -> None:
    """Every field's type, range and choices (the schema), then the checks across fields."""
    schema.check(config)
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    task, variants = config.task, tuple(config.variants)
    if config.answer_check == "math_verify" and task not in verify.MATH_VERIFY_TASKS:
        _fail("answer_check", "math_verify", f"grades MATH answers (task='math'), not task={task!r}; "
                                             f"use 'normalized' or 'exact'")
    _primary(config, variants, tuple(config.use_prm))
    if any(v in choices.SEARCHED for v in variants) and config.data.num_dev < 1:
        _fail("data.num_dev", config.data.num_dev, "must be >= 1: a searching variant samples the dev subset")
    if any(choices.fits_threshold(config, v, p) for v in variants for p in config.use_prm) and config.data.num_dev < 1:
        _fail("data.num_dev", config.data.num_dev, "must be >= 1: a baseline with the PRM fits its τ on the dev "
                                                   "subset (baseline.prm_threshold=\"fitted\"); or give a number")
    if config.data.name == "synthetic":
        from bstar_jax.data.synthetic import DIFFICULTY

        if config.data.difficulty not in DIFFICULTY:
            _fail("data.difficulty", config.data.difficulty,
                  f"must be one of {', '.join(map(str, DIFFICULTY))} for the synthetic task")
    if choices.FIXED in variants:
        _fixed(config, variants)
    _task(config, variants, tuple(config.use_prm))
    eval_k, s_values = config.eval.samples_per_query, tuple(config.eval.s_values)
    if eval_k and (min(s_values) < 1 or max(s_values) > eval_k):
        _fail("eval.s_values", s_values, f"every S must be in 1..eval.samples_per_query (K={eval_k})")

    s = config.sft
    _fine_tune(config, "sft", multiple)
    if s.micro_batch_size % s.loss_groups:
        _fail("sft.micro_batch_size", s.micro_batch_size, f"must be a multiple of sft.loss_groups={s.loss_groups}")
    if schema.USES_PRM.test(config):
        _fine_tune(config, "prm", multiple)
        if config.prm.path and not files.path(config.prm.path).is_dir():
            # Its form and architecture: bstar/prm_phase.check_prm_folder, next, before any work.
            _fail("prm.path", config.prm.path, "no such folder; give a trained PRM folder or \"\" to train one")
    if schema.P0_SFT.test(config):
        _fine_tune(config, "p0_sft", multiple)
    if schema.WARM_START.test(config):
        w = config.warm_start
        _fine_tune(config, "warm_start", multiple)
        if w.num_heads % w.num_kv_heads:
            _fail("warm_start.num_heads", w.num_heads, f"must be a multiple of warm_start.num_kv_heads={w.num_kv_heads}")
        if w.hidden_size % w.num_heads or (w.hidden_size // w.num_heads) % 2:
            _fail("warm_start.hidden_size", w.hidden_size,
                  f"must be an even multiple (head_dim) of warm_start.num_heads={w.num_heads}")
        if s.max_len > w.max_len:
            _fail("sft.max_len", s.max_len, f"exceeds the warm-start model's context warm_start.max_len={w.max_len}")
    else:
        _model_path(config)


def _primary(config, variants: tuple, use_prm: tuple) -> None:
    """config.primary: "" or "a - b" of two run names (or P_0) of one reward; a comparison of
    runs this config does not make is allowed (its workdir may get them later) but logged."""
    text = _get(config, "primary")  # a string (the schema)
    try:
        pair = choices.parse_primary(text)
    except ValueError as e:
        _fail("primary", text, str(e))
    runs = {choices.run_name(v, p) for v in variants for p in use_prm} | {"P_0" + "+prm" * p for p in use_prm}
    missing = [r for r in pair or () if r not in runs]
    if missing:
        logging.warning("config.primary=%r: this config makes no run %s; the report will say it was not measured",
                        text, " or ".join(missing))


def _fixed(config, variants: tuple) -> None:
    """config.fixed.from_run of the online_rft_fixed run: a searching variant listed before it, or
    "" (the schema checks fixed.temperature and fixed.threshold then)."""
    source = _get(config, "fixed.from_run")
    if source == "":
        return
    searching = tuple(choices.SEARCHED)
    if source not in searching:
        _fail("fixed.from_run", source, f"must be \"\" (use fixed.temperature and fixed.threshold) or one of "
                                        f"{', '.join(searching)}")
    if source not in variants or variants.index(source) > variants.index(choices.FIXED):
        _fail("fixed.from_run", source, f"must be listed in config.variants before {choices.FIXED}, "
                                        f"which takes its last (T, τ)")


@distributed.decided_on_writer
def _prm_path(config) -> None:
    """prm.path, when given, is a folder (as the writer sees it)."""
    if config.prm.path and not os.path.isdir(config.prm.path):
        _fail("prm.path", config.prm.path, "no such folder; give a trained PRM folder or \"\" to train one")


def _task(config, variants: tuple, use_prm: tuple) -> None:
    """The code task: a programming dataset, the unit-test reward alone (no PRM), the sandbox's
    limits; on the temperature-only tasks no variant that searches τ alone."""
    task, name = config.task, config.data.name
    if (task == "code") != (name in data.CODE_NAMES):
        _fail("task", task, f"data.name={name} is " + ("a programming dataset, which needs task 'code'"
                                                      if name in data.CODE_NAMES else
                                                      f"not a programming dataset ({', '.join(data.CODE_NAMES)})"))
    if task in choices.TEMPERATURE_ONLY_TASKS and "bstar_threshold_only" in variants:
        _fail("variants", variants, f"bstar_threshold_only searches τ, which task {task!r} holds at "
                                    f"baseline.threshold (temperature-only search); drop it")
    if task != "code":
        return
    if True in use_prm:
        _fail("use_prm", use_prm, "task 'code' is rewarded by unit tests alone (no PRM); use (False,)")


@distributed.decided_on_writer
def _model_path(config) -> None:
    """The model (and tokenizer) a non-warm-start run loads: an alias, an HF folder, a .gguf file
    or (online only) a hub id. Checked for existence here (by the writer; every process raises
    its error), read later (by every process, from its own copy)."""
    from bstar_jax.models.gguf_io import EMBEDDED_MODELS

    for path_field in ("model.path", "model.tokenizer"):
        p = _get(config, path_field)
        if not isinstance(p, str) or (path_field == "model.path" and not p):
            _fail(path_field, p, "must be an HF folder, a .gguf file or an embedded alias")
        if not p or p in EMBEDDED_MODELS:
            continue
        local = os.path.expanduser(p)
        if os.path.isdir(local):
            if path_field == "model.path" and not os.path.isfile(os.path.join(local, "config.json")):
                _fail(path_field, p, "this folder has no config.json, so it is not an HF model folder")
            if (path_field == "model.tokenizer" or not config.model.tokenizer) and not any(
                    os.path.isfile(os.path.join(local, f)) for f in _TOKENIZER_FILES):
                _fail(path_field, p, f"this folder has no tokenizer ({', '.join(_TOKENIZER_FILES)}); "
                                     f"point config.model.tokenizer at one")
            continue
        if os.path.isfile(local):
            if path_field == "model.path" and not local.endswith(".gguf"):
                _fail(path_field, p, "is a file but not a .gguf; give an HF model folder or a .gguf file")
            continue
        hub_id = p.count("/") == 1 and not p.startswith((".", "/", "~")) and not p.endswith(".gguf")
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        if not hub_id or offline:
            _fail(path_field, p, "no such file or folder" + (" (and the hub is offline)" if hub_id else "")
                  + f"; give an HF model folder, a .gguf file or one of {', '.join(EMBEDDED_MODELS)}")


@distributed.decided_on_writer
def _data_files(config) -> None:
    """Data files named by the config: present, files, and readable by their loader (whose
    errors name file:line); checked by the writer, every process raises its error."""
    d = config.data
    if not d.name.endswith("_jsonl"):
        return
    for f in ("train_path", "test_path"):
        p = _get(config, f"data.{f}")
        if not isinstance(p, str) or not p:
            _fail(f"data.{f}", p, f"{d.name} needs a JSONL file")
        if files.path(p).is_dir():  # local or gs://
            _fail(f"data.{f}", p, "is a folder; give the JSONL file inside it")
        if not files.path(p).is_file():
            _fail(f"data.{f}", p, "no such file")
        data.load_split(d.name, f.split("_")[0], path=p)  # DataError names file:line


def _workdir(config) -> None:
    """The writer creates the workdir and probes that it can write there; every other process
    then checks that it sees the folder (the workdir must be storage all hosts share), and every
    process stops with the same line when one does not."""
    path = files.path(config.workdir)
    _probe_workdir(config)
    blind = [i for i, seen in enumerate(_sees(path)) if not seen]
    if blind:
        _fail("workdir", config.workdir, f"is not visible from process {', '.join(map(str, blind))}: with several "
                               "hosts it must be storage they all share (gs://, NFS; docs/multihost.md)")


@distributed.decided_on_writer
def _probe_workdir(config) -> None:
    path = files.path(config.workdir)
    if path.exists() and not path.is_dir():
        _fail("workdir", config.workdir, "is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        _fail("workdir", config.workdir, f"is not writable ({e.strerror or e}); choose a folder you can write to")


@distributed.gathered
def _sees(path) -> bool:
    return files.path(path).is_dir()


def validate(config, mesh) -> None:
    """Every check that needs no model: fields, data files, workdir (DESIGN §8 of the docs)."""
    validate_fields(config, mesh)
    _data_files(config)
    _workdir(config)


def validate_examples(splits: dict) -> None:
    """Loaded splits: non-empty; duplicated ids and test questions also in train are warnings."""
    for name, examples in splits.items():
        if name != "dev" and not examples:
            raise ConfigValueError(f"data: the {name} split is empty; check config.data")
        for e in examples:
            if max(len(e.question), len(e.solution)) > MAX_TEXT_CHARS:
                raise ConfigValueError(f"data ({name} split) example {e.id}: question or solution longer than "
                                       f"{MAX_TEXT_CHARS} characters; drop it or fix the file")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            logging.warning("data: the %s split repeats ids (e.g. %r)", name, dup)
    train_q = {e.question.strip() for e in splits.get("train", ())}
    overlap = [e.id for e in splits.get("test", ()) if e.question.strip() in train_q]
    if overlap:
        logging.warning("data: %d test question(s) also appear in train (e.g. %s): test metrics overstate",
                        len(overlap), overlap[0])


def validate_prompt_lengths(config, tokenizer, model_cfg, splits: dict) -> None:
    """Every prompt plus max_new_tokens fits the model's context; names the example at fault."""
    from bstar_jax.text.format import format_prompt

    context = int(getattr(model_cfg, "max_position_embeddings", 0) or 0)
    budget = context - int(config.sampling.max_new_tokens)
    if context and budget < 1:
        _fail("sampling.max_new_tokens", config.sampling.max_new_tokens,
              f"leaves no room for a prompt in the model's context of {context} tokens")
    for name, examples in splits.items():
        if not examples or not context:
            continue
        lengths = [len(ids) for ids in tokenizer([format_prompt(e.question) for e in examples])["input_ids"]]
        worst = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[worst] > budget:
            raise ConfigValueError(
                f"data ({name} split) example {examples[worst].id}: prompt of {lengths[worst]} tokens + "
                f"sampling.max_new_tokens={config.sampling.max_new_tokens} exceeds the model's context of "
                f"{context}; drop the example or lower sampling.max_new_tokens")
