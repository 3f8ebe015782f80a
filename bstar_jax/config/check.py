"""Every config field checked before any work (docs/errors.md): range, type, names, files.

`validate(config, mesh)` raises `ConfigValueError` (a `UserError`) naming the field, the value
and what to do; it reads the data files through the loaders (whose errors name file:line) and
checks that the workdir is writable. `validate_examples` checks the loaded splits (duplicated
ids and train/test overlap are warnings), `validate_prompt_lengths` the tokenised prompts
against the model's context. Nothing here trains, samples or writes outside the workdir.
"""
from __future__ import annotations

import logging
import math
import os
import uuid

from bstar_jax.config import choices
from bstar_jax import data
from bstar_jax.core import distributed
from bstar_jax.train import sft
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.core.errors import ConfigValueError, UserError
from bstar_jax.data.records import TASKS
from bstar_jax.rewards import prm, verify

ON_CONFIG_CHANGE = ("refuse", "continue")
DTYPES = ("float32", "bfloat16", "float16")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# Longest question or solution accepted (characters): a problem is a few kB; megabytes are a broken
# file, and would otherwise fail late, deep in the sampler.
MAX_TEXT_CHARS = 100_000



def _get(config, path: str):
    node = config
    for part in path.split("."):
        if part not in node:
            raise ConfigValueError(f"config.{path} is missing; the config file must define it (see configs/defaults.py)")
        node = node[part]
    return node


def _fail(path: str, value, want: str):
    raise ConfigValueError(f"config.{path}={value!r}: {want}; set --config.{path}=<value>")


def _int(config, path: str, lo: int | None = None):
    v = _get(config, path)
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, v, "must be an integer")
    if lo is not None and v < lo:
        _fail(path, v, f"must be >= {lo}")
    return v


def _float(config, path: str, *, gt: float | None = None, ge: float | None = None, le: float | None = None):
    v = _get(config, path)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(path, v, "must be a finite number")
    if gt is not None and not v > gt:
        _fail(path, v, f"must be > {gt}")
    if ge is not None and not v >= ge:
        _fail(path, v, f"must be >= {ge}")
    if le is not None and not v <= le:
        _fail(path, v, f"must be <= {le}")
    return float(v)


def _choice(config, path: str, options) -> str:
    v = _get(config, path)
    if v not in options:
        _fail(path, v, f"must be one of {', '.join(map(str, options))}")
    return v


def _bool(config, path: str) -> bool:
    v = _get(config, path)
    if not isinstance(v, bool):
        _fail(path, v, "must be True or False")
    return v


def _seq(config, path: str, *, options=None, kind=None, min_len: int = 1) -> tuple:
    v = _get(config, path)
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        _fail(path, v, "must be a tuple, e.g. (a, b)")
    v = tuple(v)
    if len(v) < min_len:
        _fail(path, v, "must not be empty")
    if len(set(v)) != len(v):
        _fail(path, v, "has repeated values")
    for x in v:
        if options is not None and x not in options:
            _fail(path, v, f"{x!r} is not one of {', '.join(map(str, options))}")
        if kind is not None and (isinstance(x, bool) != (kind is bool) or not isinstance(x, kind)):
            _fail(path, v, f"{x!r} is not a {kind.__name__}")
    return v


def _grid(config, path: str, *, positive: bool) -> tuple:
    v = _seq(config, path)
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            _fail(path, v, f"{x!r} is not a finite number")
        if positive and x <= 0:
            _fail(path, v, "every temperature must be > 0")
    return v


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


def _batch(config, path: str, multiple: int) -> int:
    v = _int(config, path, 1)
    if v % multiple:
        _fail(path, v, f"must be a multiple of {multiple}, the devices along the mesh's data axes "
                       f"{mesh_lib.BATCH_AXES}")
    return v


def validate_fields(config, mesh) -> None:
    """Range, type and name checks of every field that changes what the run does."""
    multiple = mesh_lib.batch_size_multiple(mesh) if mesh is not None else 1
    workdir = _get(config, "workdir")
    if not isinstance(workdir, str) or not workdir.strip():
        _fail("workdir", workdir, "must be a folder path")
    _int(config, "seed")
    task = _choice(config, "task", TASKS)
    if _choice(config, "answer_check", verify.MODES) == "math_verify" and task not in verify.MATH_VERIFY_TASKS:
        _fail("answer_check", "math_verify", f"grades MATH answers (task='math'), not task={task!r}; "
                                             f"use 'normalized' or 'exact'")
    variants = _seq(config, "variants", options=choices.VARIANTS)
    use_prm = _seq(config, "use_prm", kind=bool)
    _primary(config, variants, use_prm)
    _int(config, "replicate", 0)
    _int(config, "iterations", 0)
    _choice(config, "on_config_change", ON_CONFIG_CHANGE)
    _bool(config, "progress")
    _int(config, "checkpoint.keep", 1)
    _bool(config, "export.final")
    _bool(config, "export.every_iteration")

    _choice(config, "model.param_dtype", DTYPES)
    _choice(config, "model.dtype", DTYPES)
    _choice(config, "data.name", data.NAMES)
    _int(config, "data.num_train", 1)
    _int(config, "data.num_dev", 1 if any(v in choices.SEARCHED for v in variants) else 0)
    _int(config, "data.num_test", 1)
    if config.data.name == "synthetic":
        from bstar_jax.data.synthetic import DIFFICULTY

        _choice(config, "data.difficulty", tuple(DIFFICULTY))

    _int(config, "queries_per_iteration", 1)
    K = _int(config, "samples_per_query", 1)
    _int(config, "target_size", 1)
    _int(config, "n_star", 0)
    _float(config, "baseline.temperature", ge=0)
    _float(config, "baseline.threshold")
    _choice(config, "search.mode", choices.SEARCH_MODES)
    _grid(config, "search.temperatures", positive=True)
    _grid(config, "search.thresholds", positive=False)
    _int(config, "search.samples_per_query", 1)
    _bool(config, "search.include_reference")
    del K
    if choices.FIXED in variants:
        _fixed(config, variants)
    _task(config, variants, use_prm)

    _int(config, "sampling.max_new_tokens", 1)
    _float(config, "sampling.top_p", gt=0, le=1)
    _int(config, "sampling.top_k", 0)
    _int(config, "sampling.batch_rows", 1)
    _int(config, "sampling.requests_per_slot", 1)

    eval_k = _int(config, "eval.samples_per_query", 0)  # 0: greedy Pass@1 only
    _int(config, "eval.every", 1)
    _float(config, "eval.temperature", ge=0)
    s_values = _seq(config, "eval.s_values", kind=int)
    if eval_k and (min(s_values) < 1 or max(s_values) > eval_k):
        _fail("eval.s_values", s_values, f"every S must be in 1..eval.samples_per_query (K={eval_k})")

    s = "sft"
    lr = _float(config, f"{s}.lr", gt=0)
    _float(config, f"{s}.min_lr", ge=0, le=lr)
    _float(config, f"{s}.init_lr", ge=0)
    decay = _int(config, f"{s}.decay_steps", 1)
    warm = _int(config, f"{s}.warmup_steps", 0)
    if warm > decay:
        _fail(f"{s}.warmup_steps", warm, f"must be <= sft.decay_steps={decay}")
    _float(config, f"{s}.weight_decay", ge=0)
    for b in ("b1", "b2"):
        if not 0 <= _float(config, f"{s}.{b}") < 1:
            _fail(f"{s}.{b}", config.sft[b], "must be in [0, 1)")
    _float(config, f"{s}.eps", gt=0)
    _float(config, f"{s}.clip_norm", gt=0)
    batch = _batch(config, f"{s}.batch_size", multiple)
    micro = _batch(config, f"{s}.micro_batch_size", multiple)
    if batch % micro:
        _fail(f"{s}.batch_size", batch, f"must be a multiple of sft.micro_batch_size={micro}")
    groups = _int(config, f"{s}.loss_groups", 1)
    if micro % groups:
        _fail(f"{s}.micro_batch_size", micro, f"must be a multiple of sft.loss_groups={groups}")
    max_len = _int(config, f"{s}.max_len", 2)
    _int(config, f"{s}.max_prompt_len", 1)
    _int(config, f"{s}.max_target_len", 1)
    _int(config, f"{s}.min_bucket", 1)
    _int(config, f"{s}.pad_id", 0)
    _int(config, f"{s}.pack_len", 0)
    _int(config, f"{s}.steps_per_iteration", 1)
    for b in ("truncate", "pack", "freeze_embeddings", "freeze_lm_head", "freeze_norms"):
        _bool(config, f"{s}.{b}")
    for d in ("param_dtype", "compute_dtype", "mu_dtype"):
        _choice(config, f"{s}.{d}", DTYPES + ("",))
    _choice(config, f"{s}.remat", sft.REMAT)

    if True in use_prm:
        _choice(config, "prm.head_init", prm.HEAD_INITS)
        for f in ("num_queries", "samples_per_query", "completions", "steps"):
            _int(config, f"prm.{f}", 1)
        prm_batch = _batch(config, "prm.batch_size", multiple)
        prm_micro = _batch(config, "prm.micro_batch_size", multiple)
        _choice(config, "prm.remat", sft.REMAT)
        if prm_batch % prm_micro:
            _fail("prm.batch_size", prm_batch, f"must be a multiple of prm.micro_batch_size={prm_micro}")
        _float(config, "prm.temperature", gt=0)
        prm_lr = _float(config, "prm.lr", gt=0)
        _float(config, "prm.min_lr", ge=0, le=prm_lr)
        if config.prm.path and not distributed.path(config.prm.path).is_dir():
            # Its form and architecture: bstar/prm_phase.check_prm_folder, next, before any work.
            _fail("prm.path", config.prm.path, "no such folder; give a trained PRM folder or \"\" to train one")

    if _int(config, "p0_sft.steps", 0) > 0:
        _float(config, "p0_sft.lr", gt=0)
        p0_batch = _batch(config, "p0_sft.batch_size", multiple)
        p0_micro = _batch(config, "p0_sft.micro_batch_size", multiple)
        if p0_batch % p0_micro:
            _fail("p0_sft.batch_size", p0_batch, f"must be a multiple of p0_sft.micro_batch_size={p0_micro}")

    if _bool(config, "warm_start.enabled"):
        w = "warm_start"
        _int(config, f"{w}.vocab_size", 260)
        _int(config, f"{w}.orders_per_problem", 1)
        heads = _int(config, f"{w}.num_heads", 1)
        kv = _int(config, f"{w}.num_kv_heads", 1)
        if heads % kv:
            _fail(f"{w}.num_heads", heads, f"must be a multiple of warm_start.num_kv_heads={kv}")
        hidden = _int(config, f"{w}.hidden_size", 1)
        if hidden % heads or (hidden // heads) % 2:
            _fail(f"{w}.hidden_size", hidden, f"must be an even multiple (head_dim) of warm_start.num_heads={heads}")
        _int(config, f"{w}.intermediate_size", 1)
        _int(config, f"{w}.num_layers", 1)
        context = _int(config, f"{w}.max_len", 2)
        if max_len > context:
            _fail(f"{s}.max_len", max_len, f"exceeds the warm-start model's context warm_start.max_len={context}")
        _float(config, f"{w}.lr", gt=0)
        _int(config, f"{w}.steps", 1)
        _batch(config, f"{w}.batch_size", multiple)
    else:
        _model_path(config)


def _primary(config, variants: tuple, use_prm: tuple) -> None:
    """config.primary: "" or "a - b" of two run names (or P_0) of one reward; a comparison of
    runs this config does not make is allowed (its workdir may get them later) but logged."""
    text = _get(config, "primary")
    if not isinstance(text, str):
        _fail("primary", text, 'must be "<run> - <run>", e.g. "bstar - online_rft", or ""')
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
    """config.fixed of the online_rft_fixed run: a searching variant listed before it, or ("") a
    temperature > 0 and a finite threshold."""
    source = _get(config, "fixed.from_run")
    if source == "":
        _float(config, "fixed.temperature", gt=0)
        _float(config, "fixed.threshold")
        return
    searching = tuple(choices.SEARCHED)
    if source not in searching:
        _fail("fixed.from_run", source, f"must be \"\" (use fixed.temperature and fixed.threshold) or one of "
                                        f"{', '.join(searching)}")
    if source not in variants or variants.index(source) > variants.index(choices.FIXED):
        _fail("fixed.from_run", source, f"must be listed in config.variants before {choices.FIXED}, "
                                        f"which takes its last (T, τ)")


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
    _float(config, "code.timeout_s", gt=0)
    _float(config, "code.batch_timeout_s", ge=0)
    _int(config, "code.workers", 0)


def _model_path(config) -> None:
    """The model (and tokenizer) a non-warm-start run loads: an alias, an HF folder, a .gguf file
    or (online only) a hub id. Checked for existence here, read later."""
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


def _data_files(config) -> None:
    """Data files named by the config: present, files, and readable by their loader (whose
    errors name file:line)."""
    d = config.data
    if not d.name.endswith("_jsonl"):
        return
    for f in ("train_path", "test_path"):
        p = _get(config, f"data.{f}")
        if not isinstance(p, str) or not p:
            _fail(f"data.{f}", p, f"{d.name} needs a JSONL file")
        if distributed.path(p).is_dir():  # local or gs://
            _fail(f"data.{f}", p, "is a folder; give the JSONL file inside it")
        if not distributed.path(p).is_file():
            _fail(f"data.{f}", p, "no such file")
        data.load_split(d.name, f.split("_")[0], path=p)  # DataError names file:line


def _workdir(config) -> None:
    """The writer creates the workdir and probes that it can write there; every other process
    then checks that it sees the folder (the workdir must be storage all hosts share)."""
    path = distributed.path(config.workdir)
    if distributed.is_writer():
        if path.exists() and not path.is_dir():
            _fail("workdir", config.workdir, "is a file; give a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            _fail("workdir", config.workdir, f"is not writable ({e.strerror or e}); choose a folder you can write to")
    distributed.barrier("workdir probed")
    if not path.is_dir():
        _fail("workdir", config.workdir, f"is not visible from process {distributed.process_index()}: with several "
                               "hosts it must be storage they all share (gs://, NFS; docs/multihost.md)")


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
    from bstar_jax.text import tokenizer as tok

    context = int(getattr(model_cfg, "max_position_embeddings", 0) or 0)
    budget = context - int(config.sampling.max_new_tokens)
    if context and budget < 1:
        _fail("sampling.max_new_tokens", config.sampling.max_new_tokens,
              f"leaves no room for a prompt in the model's context of {context} tokens")
    for name, examples in splits.items():
        if not examples or not context:
            continue
        lengths = [len(ids) for ids in tokenizer([tok.format_prompt(e.question) for e in examples])["input_ids"]]
        worst = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[worst] > budget:
            raise ConfigValueError(
                f"data ({name} split) example {examples[worst].id}: prompt of {lengths[worst]} tokens + "
                f"sampling.max_new_tokens={config.sampling.max_new_tokens} exceeds the model's context of "
                f"{context}; drop the example or lower sampling.max_new_tokens")
