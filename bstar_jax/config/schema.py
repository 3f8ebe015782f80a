"""Every config field, declared once: type, default, range or choices, unit and a one-line doc.

`defaults()` is the ConfigDict every configs/*.py starts from; `check(config)` checks each field's
type, range and choices (config/check.py adds the checks that involve several fields, files or the
mesh); `markdown()` is docs/config.md, regenerated with

    python -m bstar_jax.config.schema > docs/config.md

A fine-tune's optimizer, schedule and batch are one block type (`OPTIMIZER`), declared once: the
policy's SFT (`sft`), P_0's fine-tune (`p0_sft`), the from-scratch warm start (`warm_start`) and
the PRM (`prm`) each hold an instance with their own defaults. A default may follow from other
fields of its section (`Derived`): the field holds None until it is set, and `block` resolves it.
The field types, and how one value is checked and documented, are in config/fields.py. Pure Python:
reading a config imports no JAX.
"""
from __future__ import annotations

import dataclasses
import types

import ml_collections
from ml_collections import config_dict

from bstar_jax.config import choices
from bstar_jax.config.fields import (Bool, ChoiceOrNumber, ConfigValueError, Derived, Field, Float, Int, Section, Str,
                                     Tuple, When, allowed_text, cell, check_field, default_text, lookup, type_text)
from bstar_jax.core import names


# ----------------------------------------------------------------------------- the optimizer block

OPTIMIZER = {  # one fine-tune's optimizer, schedule and batch (docs/training.md)
    "lr": Float("peak learning rate, reached at the end of the warmup", gt=0),
    "min_lr": Float("cosine floor: the learning rate at decay_steps and after", ge=0),
    "init_lr": Float("learning rate at schedule count 0, where the linear warmup starts", ge=0),
    "warmup_steps": Int("linear warmup init_lr -> lr", ge=0, unit="optimizer steps"),
    "decay_steps": Int("schedule length, warmup included: the cosine lr -> min_lr ends here", ge=1,
                       unit="optimizer steps"),
    "weight_decay": Float("decoupled weight decay (AdamW) of matrices, never norms or biases; 0 = Adam", ge=0),
    "b1": Float("Adam beta1", ge=0, lt=1),
    "b2": Float("Adam beta2", ge=0, lt=1),
    "eps": Float("Adam epsilon", gt=0),
    "clip_norm": Float("global gradient-norm clip", gt=0),
    "batch_size": Int("examples per optimizer step, global (all devices), packed or not", ge=1, unit="examples"),
    "micro_batch_size": Int("examples per gradient-accumulation step, global; divides batch_size", ge=1,
                            unit="examples"),
}
BLOCKS = ("sft", "p0_sft", "warm_start", "prm")  # the sections that hold an optimizer block


def optimizer(**defaults) -> dict[str, Field]:
    """An instance of the optimizer block: every field of OPTIMIZER with this instance's default."""
    if set(defaults) != set(OPTIMIZER):
        raise TypeError(f"optimizer(): give exactly the fields {', '.join(OPTIMIZER)}")
    return {k: dataclasses.replace(f, default=defaults[k]) for k, f in OPTIMIZER.items()}


# The schedule of a fine-tune that runs `steps` steps once (P_0, the warm start): a tenth of them
# warmup, a cosine to a tenth of the peak.
_TENTH_LR = Derived(lambda s: float(s.lr) / 10, "lr / 10")
_TENTH_WARMUP = Derived(lambda s: max(1, int(s.steps) // 10), "max(1, steps // 10)")
_ALL_STEPS = Derived(lambda s: int(s.steps), "steps")
_ADAM = dict(init_lr=0.0, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, clip_norm=1.0)

USES_PRM = When(lambda c: True in tuple(c.use_prm), "a run uses the PRM (True in use_prm)")
P0_SFT = When(lambda c: int(c.p0_sft.steps) > 0, "p0_sft.steps > 0")
WARM_START = When(lambda c: bool(c.warm_start.enabled), "warm_start.enabled")
FIXED = When(lambda c: choices.FIXED in tuple(c.variants), f"{choices.FIXED} is in variants")
FIXED_BY_VALUE = When(lambda c: choices.FIXED in tuple(c.variants) and c.fixed.from_run == "",
                      f"{choices.FIXED} is in variants and fixed.from_run is \"\"")
ALWAYS = When(lambda c: True, "always")

_DTYPE_OR_AS_IS = names.DTYPES + ("",)

SCHEMA = Section("the run, the task and the sizes of the loop", {
    "workdir": Str("outputs: metrics.jsonl, report.md, plots/, checkpoints/", "runs/default", unit="folder",
                   nonempty=True),
    "on_config_change": Str("a rerun whose config differs from <workdir>/run_config.json: refuse or continue",
                            "refuse", choices=("refuse", "continue")),
    "seed": Int("root PRNG seed; iteration and phase are folded in (resume-exact)", 0),
    "task": Str("answer checker", "gsm8k", choices=names.TASKS),
    "answer_check": Str("normalized grader, exact string match (the official code), or math_verify (task math "
                        "only; docs/algorithm.md#answer-graders)", "normalized", choices=names.ANSWER_CHECKS),
    "variants": Tuple(str, "run these in turn, each from the same P_0 (docs/algorithm.md#variants)", ("bstar",),
                      choices=choices.VARIANTS),
    "use_prm": Tuple(bool, "one run per (variant, use_prm): answer-only (Eq. 1) and/or answer+PRM (Eq. 2) reward",
                     (False,)),
    "iterations": Int("self-improvement iterations (paper §2.3: 9)", 9, ge=0, unit="iterations"),
    "primary": Str("the report's primary comparison, \"a - b\" of two run names (or P_0) of one reward, on greedy "
                   "Pass@1, chosen before the run; the rest are Holm-corrected (docs/results.md); \"\" = none",
                   "bstar - online_rft"),
    "replicate": Int("k >= 1: every run again as <variant>-r<k> with independent training draws, the same P_0, PRM "
                     "and evaluation draws (docs/results.md#replicates)", 0, ge=0),
    "mesh": Section("device counts per mesh axis; -1 = the remaining devices (at most one axis)", {
        "data": Int("data-parallel devices", -1, ge=-1, unit="devices"),
        "fsdp": Int("devices the weights are sharded over (FSDP)", 1, ge=-1, unit="devices"),
        "tensor": Int("tensor-parallel devices", 1, ge=-1, unit="devices"),
    }),
    "device_memory_gb": Float("per-device memory the *.hbm_fraction fields apply to; 0 = the device's own "
                              "(docs/memory.md)", 0.0, ge=0, unit="GB"),
    "model": Section("the starting policy (unless warm_start.enabled)", {
        "path": Str("HF folder, .gguf file, embedded alias or hub id (online only)", "smollm2-135m"),
        "tokenizer": Str("tokenizer folder or file; \"\" = next to the model", ""),
        "param_dtype": Str("weights in memory (fp32 master weights)", "float32", choices=names.DTYPES),
        "dtype": Str("activation compute dtype (bfloat16 on TPU)", "float32", choices=names.DTYPES),
    }),
    "data": Section("the task's problems", {
        "name": Str("loader", "gsm_symbolic", choices=names.DATASETS),
        "train_path": Str("JSONL file of the *_jsonl loaders' training split", ""),
        "test_path": Str("JSONL file of the *_jsonl loaders' test split", ""),
        "data_dir": Str("TFDS data_dir; \"\" = TFDS's default", ""),
        "test_name": Str("take the test split from this dataset instead (a test-only set such as humaneval, or a "
                         "*_jsonl loader reading test_path; docs/code.md); \"\" = data.name's own", ""),
        "num_train": Int("problems generated (synthetic, gsm_symbolic)", 2000, ge=1, unit="problems"),
        "num_dev": Int("dev queries of the (T, τ) search (paper §3.3: 600); >= 1 with a searching variant", 600,
                       ge=0, unit="problems"),
        "num_test": Int("held-out evaluation queries", 500, ge=1, unit="problems"),
        "difficulty": Int("synthetic / gsm_symbolic difficulty knob (synthetic: 1, 2 or 3)", 2),
    }),
    "code": Section("the code task's unit-test reward (docs/code.md#the-reward-in-the-loop)", {
        "timeout_s": Float("wall-clock seconds per unit test (the sandbox's default)", 4.0, gt=0, unit="s"),
        "batch_timeout_s": Float("seconds for one rollout's whole batch of programs; 0 = no limit", 0.0, ge=0,
                                 unit="s"),
        "workers": Int("sandbox worker processes; 0 = one per usable core", 0, ge=0, unit="processes"),
    }),
    "queries_per_iteration": Int("M, queries sampled per iteration (paper App. B.2)", 11_500, ge=1, unit="queries"),
    "samples_per_query": Int("K, samples per query (paper App. B.2)", 64, ge=1, unit="samples"),
    "target_size": Int("N, samples selected per iteration (paper App. B.2)", 67_500, ge=1, unit="samples"),
    "n_star": Int("n* of the balance score; 0 = ceil(N / M) (paper Eq. 3); the official code uses 8", 0, ge=0,
                  unit="samples"),
    "baseline": Section("the non-searching variants' (T, τ) (paper §2.3)", {
        "temperature": Float("sampling temperature T", 1.0, ge=0),
        "threshold": Float("reward threshold τ of the baselines and of the T-only searches; the baselines' runs with "
                           "the PRM take prm_threshold", 0.0),
        "prm_threshold": ChoiceOrNumber(
            "τ of online_rft, iterative_rft and rest_em with the PRM: fitted = the τ of search.thresholds with the "
            "best balance score on the dev subset at baseline.temperature, chosen at iteration 1 and held; a number "
            "= that τ (the paper: \"0\"; docs/algorithm.md#fitted-threshold)", choices.FITTED, choices=(choices.FITTED,),
            when=USES_PRM),
    }),
    "fixed": Section("online_rft_fixed's one (T, τ) (Table 6)", {
        "from_run": Str("a searching variant listed earlier in variants: its last (T, τ), same reward; "
                        "\"\" = temperature and threshold below", "bstar"),
        "temperature": Float("T when from_run is \"\"", 1.0, gt=0, when=FIXED_BY_VALUE),
        "threshold": Float("τ when from_run is \"\"", 0.0, when=FIXED_BY_VALUE),
    }, when=FIXED),
    "search": Section("the (T, τ) search on the dev subset (Algorithm 1, docs/algorithm.md#search)", {
        "mode": Str("paper: (T, τ) jointly on dev; official: T on dev, τ on the iteration's pool", "paper",
                    choices=choices.SEARCH_MODES),
        "temperatures": Tuple(float, "T grid (paper App. B.2: 0.5..1.2 by 0.1)",
                              tuple(round(0.5 + 0.1 * i, 2) for i in range(8)), gt=0),
        "thresholds": Tuple(float, "τ grid (paper App. B.2: -1..1 by 0.1)",
                            tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))),
        "samples_per_query": Int("K on the dev subset", 64, ge=1, unit="samples"),
        "include_reference": Bool("add the reference solution with reward 1.0 (the official code)", False),
    }),
    "sampling": Section("every sampler call (docs/models.md#sampler-calls-in-a-run)", {
        "max_new_tokens": Int("response length limit (the official sampler's: 768)", 768, ge=1, unit="tokens"),
        "top_p": Float("nucleus sampling (1 = off, the vLLM default)", 1.0, gt=0, le=1),
        "top_k": Int("top-k sampling; 0 = off (vLLM top_k=-1)", 0, ge=0),
        "batch_rows": Int("rows per sampler call (power of two); bigger grids are chunked", 512, ge=1, unit="rows"),
        "hbm_fraction": Float("> 0: batch_rows follows from this fraction of device memory (docs/memory.md)", 0.0,
                              ge=0, le=1),
        "requests_per_slot": Int("chunks of batch_rows rows one call takes through its slots (continuous "
                                 "batching); 1 = one slot per row; the same texts for every value", 1, ge=1),
    }),
    "eval": Section("held-out evaluation (docs/algorithm.md#evaluation)", {
        "samples_per_query": Int("K of test Pass@K, Pass@K-S, Reward@K-S (Table 1: 32); 0 = greedy Pass@1 only",
                                 32, ge=0, unit="samples"),
        "temperature": Float("test-time T (unstated in the paper; docs/algorithm.md#grids-and-defaults)", 1.0, ge=0),
        "s_values": Tuple(int, "S of Pass@K-S and Reward@K-S (Table 1: P@32-4), each in 1..K", (1, 4)),
        "every": Int("evaluate every this many iterations; P_0 and the last always", 1, ge=1, unit="iterations"),
    }),
    "sft": Section("the policy's SFT each iteration (paper §2.3, App. A.1; docs/training.md); its loss, "
                   "lengths, dtypes and stopping rules also serve P_0's fine-tune and the warm start", {
        **optimizer(lr=4.12e-6, min_lr=2e-7, warmup_steps=105, decay_steps=4750, batch_size=128,
                    micro_batch_size=64, **_ADAM),
        "steps_per_iteration": Int("optimizer steps per self-improvement iteration", 500, ge=1,
                                   unit="optimizer steps"),
        "save_every": Int("SFT steps between saves of the SFT phase (0: at its end and on a stop only); a "
                          "preempted run loses at most this many", 50, ge=0, unit="optimizer steps"),
        "loss_groups": Int("token means per micro-batch, averaged (the official code: one per GPU, 8)", 1, ge=1),
        "pack": Bool("several examples per row, attention kept within each (docs/training.md#packing)", True),
        "pack_len": Int("tokens per packed row; 0 = max_len", 0, ge=0, unit="tokens"),
        "max_len": Int("tokens per example, prompt + target", 1024, ge=2, unit="tokens"),
        "max_prompt_len": Int("prompt tokens kept (left-truncated)", 768, ge=1, unit="tokens"),
        "max_target_len": Int("target tokens kept, EOS included (right-truncated)", 768, ge=1, unit="tokens"),
        "truncate": Bool("cut too-long examples as the official code; False: a too-long example is an error", True),
        "min_bucket": Int("shortest padded length; lengths are powers of two up to max_len", 16, ge=1, unit="tokens"),
        "pad_id": Int("token id of padding (masked out of the loss, never attended to)", 0, ge=0),
        "freeze_embeddings": Bool("token embeddings frozen (the official code)", True),
        "freeze_lm_head": Bool("LM head frozen (the official code)", True),
        "freeze_norms": Bool("every RMSNorm weight frozen (the official code)", True),
        "param_dtype": Str("master-weight dtype of the train state; \"\" = as loaded", "float32",
                           choices=_DTYPE_OR_AS_IS),
        "compute_dtype": Str("activations and matmuls of the loss (bfloat16 on accelerators); \"\" = model.dtype",
                             "float32", choices=_DTYPE_OR_AS_IS),
        "mu_dtype": Str("Adam first-moment dtype; \"\" = the param dtype (the official code: bfloat16)", "",
                        choices=_DTYPE_OR_AS_IS),
        "remat": Str("full: recompute each layer in the backward pass (less memory, ~1/3 more FLOPs)", "none",
                     choices=names.REMAT),
        "hbm_fraction": Float("> 0: micro_batch_size (and p0_sft's) follow from this fraction of device memory",
                              0.0, ge=0, le=1),
        "diverge_warmup_steps": Int("steps of a phase before the loss rule applies (every fine-tune's stopping "
                                    "rules, docs/training.md)", 20, ge=0, unit="optimizer steps"),
        "diverge_window": Int("recent losses whose median is the loss rule's reference", 50, ge=1,
                              unit="optimizer steps"),
        "diverge_loss_factor": Float("stop when loss > this x that median and ...; 0 = rule off", 5.0, ge=0),
        "diverge_loss_margin": Float("... loss > that median + this margin", 1.0, ge=0, unit="nats"),
        "diverge_weight_norm_factor": Float("stop when the global weight norm > this x its phase-start value; "
                                            "0 = rule off", 10.0, ge=0),
    }),
    "prm": Section("the process reward model, trained before iteration 1 on P_0's labelled samples "
                   "(Math-Shepherd; paper App. A.1); batching and stopping rules as sft", {
        "path": Str("a trained PRM checkpoint folder; \"\" = train one", ""),
        "head_init": Str("reward head init; lm_head_mean is the official one (docs/algorithm.md)", "lm_head_mean",
                         choices=names.PRM_HEAD_INITS),
        "num_queries": Int("queries whose sampled solutions are labelled", 256, ge=1, unit="queries"),
        "samples_per_query": Int("solutions sampled per labelled query (paper: 15)", 4, ge=1, unit="samples"),
        "completions": Int("completions per step prefix (paper: 8)", 8, ge=1, unit="samples"),
        "temperature": Float("sampling temperature of the solutions and completions", 1.0, gt=0),
        "steps": Int("PRM optimizer steps", 300, ge=1, unit="optimizer steps"),
        "remat": Str("full: recompute each layer in the backward pass (docs/memory.md)", "none",
                     choices=names.REMAT),
        # App. A.1 trains at 2e-6 on a 7B model; small models need more.
        **optimizer(lr=2e-5, min_lr=2e-6, batch_size=32, micro_batch_size=32,
                    warmup_steps=Derived(lambda s: int(round(0.1 * int(s.steps))), "round(steps / 10)"),
                    decay_steps=Derived(lambda s: max(int(s.steps), int(s.warmup_steps) + 1),
                                        "max(steps, warmup_steps + 1)"), **_ADAM),
    }, when=USES_PRM),
    "p0_sft": Section("SFT of a loaded model on reference solutions to make P_0 (paper §2.3); the sft "
                      "section's loss, lengths, dtypes and freezing", {
        "steps": Int("optimizer steps; 0 = the loaded model is P_0 (the paper's P_0: SFT after epoch 1)", 0, ge=0,
                     unit="optimizer steps", when=ALWAYS),
        **optimizer(lr=2e-5, min_lr=_TENTH_LR, warmup_steps=_TENTH_WARMUP, decay_steps=_ALL_STEPS,
                    batch_size=64, micro_batch_size=16, **_ADAM),
    }, when=P0_SFT),
    "warm_start": Section("train a tokenizer and a tiny model from scratch to P_0 (the offline demo); every "
                          "weight trains", {
        "enabled": Bool("make P_0 here instead of loading model.path", False, when=ALWAYS),
        "vocab_size": Int("byte-level BPE tokens", 384, ge=260, unit="tokens"),
        "orders_per_problem": Int("reference solutions per problem, in different equation orders", 3, ge=1),
        "hidden_size": Int("model width; an even multiple of num_heads", 128, ge=1),
        "intermediate_size": Int("MLP width", 384, ge=1),
        "num_layers": Int("decoder layers", 4, ge=1),
        "num_heads": Int("attention heads", 4, ge=1),
        "num_kv_heads": Int("key/value heads; divides num_heads", 2, ge=1),
        "max_len": Int("the tiny model's context", 512, ge=2, unit="tokens"),
        "steps": Int("optimizer steps to P_0", 400, ge=1, unit="optimizer steps"),
        **optimizer(lr=3e-3, min_lr=_TENTH_LR, warmup_steps=_TENTH_WARMUP, decay_steps=_ALL_STEPS, batch_size=32,
                    micro_batch_size=Derived(lambda s: int(s.batch_size), "batch_size"), **_ADAM),
    }, when=WARM_START),
    "export": Section("policies as HF folders under <workdir>/policies/<run>/ (docs/results.md)", {
        "final": Bool("the last iteration's policy as .../final", True),
        "every_iteration": Bool("also each iteration i >= 1 as .../iteration_<i>", False),
    }),
    "checkpoint": Section("checkpoints under <workdir>/checkpoints/<run>/", {
        "keep": Int("keep the last N checkpoints (and the last sane one)", 2, ge=1, unit="checkpoints"),
    }),
    "progress": Bool("tqdm progress bars", True),
    "wandb": Section("an optional Weights & Biases mirror of metrics.jsonl, from the writer process "
                     "(docs/results.md#weights--biases)", {
        "enabled": Bool("mirror the metrics rows and a table of sampled completions to W&B", False),
        "project": Str("W&B project", "bstar-jax"),
        "mode": Str("online, offline, or auto: online with an API key and a reachable service, else offline",
                    "auto", choices=("auto", "online", "offline")),
        "completions": Int("sampled completions logged per iteration and run", 8, ge=0, unit="completions"),
    }),
})


# ----------------------------------------------------------------------------- walking the tree

def fields(section: Section = SCHEMA, prefix: str = "", when: When | None = None):
    """(dotted path, Field, the condition it is checked under) of every field, in order."""
    for name, node in section.fields.items():
        if isinstance(node, Section):
            yield from fields(node, f"{prefix}{name}.", node.when or when)
        else:
            yield prefix + name, node, node.when or when


def sections(section: Section = SCHEMA, prefix: str = ""):
    """(dotted path, Section) of the tree's sections, the root ("") first."""
    yield prefix.rstrip("."), section
    for name, node in section.fields.items():
        if isinstance(node, Section):
            yield from sections(node, f"{prefix}{name}.")


FIELDS = {path: f for path, f, _ in fields()}


def _build(section: Section) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for name, node in section.fields.items():
        if isinstance(node, Section):
            c[name] = _build(node)
        elif isinstance(node.default, Derived):
            c[name] = config_dict.placeholder(node.kind)  # None until set; `block` derives it
        else:
            c[name] = node.default
    return c


def defaults() -> ml_collections.ConfigDict:
    """The config every configs/*.py starts from: every field at its default."""
    return _build(SCHEMA)


def section(path: str) -> ml_collections.ConfigDict:
    """The defaults of one section, e.g. section("sft")."""
    node = defaults()
    for part in path.split("."):
        node = node[part]
    return node


def block(config, name: str) -> dict:
    """The optimizer block of section `name` (one of BLOCKS) with its derived defaults resolved."""
    node, declared = config[name], SCHEMA.fields[name].fields
    values = types.SimpleNamespace(**{k: node[k] for k in declared})
    for k in OPTIMIZER:
        default = declared[k].default
        if getattr(values, k) is None and isinstance(default, Derived):
            setattr(values, k, default.fn(values))
    return {k: getattr(values, k) for k in OPTIMIZER}


# ----------------------------------------------------------------------------- checking

def check(config) -> None:
    """Every field of the schema that applies to `config` (its condition holds): present, of its
    type, within its range and choices; and no field the schema does not know."""
    _unknown(config, SCHEMA, "")
    for path, f, when in fields():
        v = lookup(config, path)
        if when is None or when.test(config):
            check_field(path, f, v)


def _unknown(node, section: Section, prefix: str) -> None:
    for k in node.keys():
        if k not in section.fields:
            raise ConfigValueError(f"config.{prefix}{k}: not a config field (docs/config.md lists them)")
        if isinstance(section.fields[k], Section) and hasattr(node[k], "keys"):
            _unknown(node[k], section.fields[k], f"{prefix}{k}.")


# ----------------------------------------------------------------------------- docs/config.md

def markdown() -> str:
    """docs/config.md: every field with its type, default, allowed values, unit and meaning."""
    out = ["# Config fields", "",
           "<!-- Generated from bstar_jax/config/schema.py; do not edit. Regenerate with",
           "     python -m bstar_jax.config.schema > docs/config.md -->", "",
           "Every field of a config, as `configs/*.py` set them and `--config.<path>=<value>` overrides them.",
           "`run.py` checks each one before any work (one line naming the field on a bad value, docs/errors.md).",
           "A section's fields are checked only when its condition holds. A default written as an expression",
           "follows from its section's other fields until the field is set.", "",
           "## The optimizer block", "",
           "One fine-tune's optimizer, schedule and batch (docs/training.md). Four sections hold one each, with",
           "their own defaults: `sft` (each iteration), `p0_sft` (P_0 of a loaded model), `warm_start` (P_0 from",
           "scratch) and `prm` (the process reward model).", "",
           "| field | type | allowed | unit | meaning | " + " | ".join(BLOCKS) + " |",
           "|---|---|---|---|---|" + "---|" * len(BLOCKS)]
    for k, f in OPTIMIZER.items():
        instances = [default_text(SCHEMA.fields[b].fields[k]) for b in BLOCKS]
        out.append(f"| `{k}` | {type_text(f)} | {cell(allowed_text(f))} | {f.unit} | {cell(f.doc)} | "
                   + " | ".join(f"`{cell(d)}`" for d in instances) + " |")
    for path, sec in sections():
        own = [(k, f) for k, f in sec.fields.items() if isinstance(f, Field)
               and not (path in BLOCKS and k in OPTIMIZER)]
        if not own:
            continue
        title = f"`{path}`" if path else "Top level"
        out += ["", f"## {title}", "", cell(sec.doc[0].upper() + sec.doc[1:]) + "."]
        if sec.when:
            out.append(f"Checked when {sec.when.doc}.")
        if path in BLOCKS:
            out.append("Also holds an [optimizer block](#the-optimizer-block).")
        out += ["", "| field | type | default | allowed | unit | meaning |", "|---|---|---|---|---|---|"]
        for k, f in own:
            note = " (always checked)" if f.when is ALWAYS else f" (checked when {f.when.doc})" if f.when else ""
            out.append(f"| `{(path + '.' if path else '') + k}` | {type_text(f)} | `{cell(default_text(f))}` | "
                       f"{cell(allowed_text(f))} | {f.unit} | {cell(f.doc)}{note} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
