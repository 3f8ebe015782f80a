"""The call plan: what each phase of a run compiles and at which shapes, declared once. The run
takes its calls from here (P_0 in bstar/policy.py, the PRM in bstar/prm_phase.py, the search,
the iteration and its SFT in bstar/iteration.py, the test pass in bstar/evaluation.py) and the fit
tool (`python -m bstar_jax.tpu_fit`, cli/fit.py) compiles every call of `phases(config)`.

A phase is a tuple of calls:
  `Sample`    one kind of grid.sample call: queries x temperatures x samples per query;
  `Complete`  PRM labelling's completions of step prefixes (labelling.label_steps);
  `Train`     a fine-tune: its trainer config (`train_config`) and steps; one compiled step;
  `Score`     PRM scoring batches (rewards.prm.score_responses).
Every fine-tune reaches the trainer the same way: `train_config(config, section)` is its section's
optimizer block (derived defaults resolved, config/schema.py) over what its loss reads. Sizes that
follow from device memory are resolved before the plan is read (config/sizing.py, resolve_sizes).
Pure Python, as the schema.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from bstar_jax.config import choices, schema

# What the PRM's trainer config takes from config.sft: the stopping rules and the row layout.
_PRM_FROM_SFT = ("diverge_warmup_steps", "diverge_window", "diverge_loss_factor", "diverge_loss_margin",
                 "diverge_weight_norm_factor", "max_len", "pack", "pack_len")
# A model from scratch trains every weight (its embeddings and norms start random).
_FROM_SCRATCH = dict(freeze_embeddings=False, freeze_lm_head=False, freeze_norms=False)
SCORE_ROWS = 128  # responses per PRM scoring batch
SCORE_STEPS = 32  # step positions per row the fit tool compiles the scoring batch for


@dataclasses.dataclass(frozen=True)
class Sample:
    """One kind of grid.sample call: `samples` responses to each of `queries` questions at every
    one of `temperatures` (0.0 = greedy)."""

    name: str
    queries: int
    temperatures: tuple[float, ...]
    samples: int

    @property
    def rows_per_query(self) -> int:
        return len(self.temperatures) * self.samples


@dataclasses.dataclass(frozen=True)
class Complete:
    """PRM labelling's completions: `completions` per step prefix at `temperature`, at most `rows`
    per sampler call; a prompt holds a question and a partial solution."""

    name: str
    rows: int
    completions: int
    temperature: float


@dataclasses.dataclass(frozen=True, eq=False)
class Train:
    """A fine-tune: `steps` optimizer steps of the `loss` ("sft" or "prm") step with `config`."""

    name: str
    loss: str
    config: ml_collections.ConfigDict
    steps: int


@dataclasses.dataclass(frozen=True)
class Score:
    """PRM scoring: batches of `rows` responses of up to `seq_len` tokens."""

    name: str
    rows: int
    seq_len: int


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a run (P_0, PRM, search, iteration, evaluation) and its calls, in order."""

    name: str
    calls: tuple


def train_config(config, section: str) -> ml_collections.ConfigDict:
    """The trainer settings of one fine-tune (`section` one of schema.BLOCKS): the section's
    optimizer block over config.sft's loss, lengths, dtypes and stopping rules (sft, p0_sft,
    warm_start; the warm start unfreezes every weight), or for the PRM over config.sft's stopping
    rules and row layout, with prm.remat and the weights' own dtype."""
    if section not in schema.BLOCKS:
        raise ValueError(f"no fine-tune {section!r}; one of {', '.join(schema.BLOCKS)}")
    if section == "prm":
        c = ml_collections.ConfigDict({k: config.sft[k] for k in _PRM_FROM_SFT})
        c.update(dict(param_dtype="", mu_dtype="", remat=config.prm.remat))
    else:
        c = ml_collections.ConfigDict(config.sft.to_dict())
    c.update(schema.block(config, section))
    if section == "warm_start":
        c.update(_FROM_SCRATCH)
    return c


# ----------------------------------------------------------------------------- the phases

def p0(config) -> Train | None:
    """P_0's fine-tune: the warm start from scratch, or p0_sft of a loaded model (None: neither)."""
    if config.warm_start.enabled:
        return Train("warm-start SFT step", "sft", train_config(config, "warm_start"), int(config.warm_start.steps))
    if int(config.p0_sft.steps) > 0:
        return Train("P_0 SFT step", "sft", train_config(config, "p0_sft"), int(config.p0_sft.steps))
    return None


def prm_training(config) -> tuple[Sample, Complete, Train]:
    """The PRM's making: P_0's solutions to prm.num_queries questions, their step prefixes completed
    (Math-Shepherd labels), the PRM trained."""
    p = config.prm
    return (Sample("sample: PRM solutions", int(p.num_queries), (float(p.temperature),), int(p.samples_per_query)),
            Complete("sample: PRM completions", int(config.sampling.batch_rows), int(p.completions),
                     float(p.temperature)),
            Train("PRM train step", "prm", train_config(config, "prm"), int(p.steps)))


def prm_scoring(config) -> Score:
    """Every rollout's responses scored by the PRM, SCORE_ROWS a batch."""
    return Score("PRM scoring", SCORE_ROWS, int(config.sft.max_len))


def prm(config) -> tuple:
    """The PRM phase: its making (none when prm.path supplies a trained PRM), then its scoring."""
    return (() if config.prm.path else prm_training(config)) + (prm_scoring(config),)


def search(config, variant: str, use_prm: bool = False) -> Sample | None:
    """The dev rollout of a searching variant's (T, τ) search: every temperature of the grid where
    it searches T, else the baseline's; a baseline fitting its τ (choices.fits_threshold) samples at
    the baseline's T (None for a run that neither searches nor fits)."""
    knobs = choices.SEARCHED.get(variant)
    if choices.fits_threshold(config, variant, use_prm):
        knobs = ("threshold",)
    if not knobs:
        return None
    c = config
    temps = tuple(c.search.temperatures) if "temperature" in knobs else (float(c.baseline.temperature),)
    return Sample("sample: dev search (T x K)", int(c.data.num_dev), temps, int(c.search.samples_per_query))


def iteration(config, temperature: float | None = None) -> Sample:
    """An iteration's rollout: M queries (at most the generated training set) x K samples at the
    chosen T (the baseline's when not given: the shape is the same)."""
    c = config
    queries = int(c.queries_per_iteration)
    if c.data.name in ("synthetic", "gsm_symbolic"):
        queries = min(queries, int(c.data.num_train))
    t = float(c.baseline.temperature if temperature is None else temperature)
    return Sample("sample: iteration", queries, (t,), int(c.samples_per_query))


def sft(config) -> Train:
    """The SFT of each iteration on the selected samples."""
    return Train("SFT step", "sft", train_config(config, "sft"), int(config.sft.steps_per_iteration))


def evaluation(config) -> tuple[Sample, ...]:
    """The test pass: greedy Pass@1, and eval.samples_per_query samples at eval.temperature (none
    when that is 0)."""
    e, n = config.eval, int(config.data.num_test)
    calls = (Sample("sample: eval greedy", n, (0.0,), 1),)
    if int(e.samples_per_query):
        calls += (Sample("sample: eval K", n, (float(e.temperature),), int(e.samples_per_query)),)
    return calls


def phases(config) -> list[Phase]:
    """Every phase a run of `config` goes through, in order, with its calls; the search with its
    widest dev rollout over the searching variants."""
    out = []
    first = p0(config)
    if first is not None:
        out.append(Phase("P_0", (first,)))
    if True in tuple(config.use_prm):
        out.append(Phase("PRM", prm(config)))
    searches = [s for s in (search(config, v, p) for v in config.variants for p in config.use_prm) if s is not None]
    if searches:
        out.append(Phase("search", (max(searches, key=lambda s: s.rows_per_query),)))
    out.append(Phase("iteration", (iteration(config), sft(config))))
    out.append(Phase("evaluation", evaluation(config)))
    return out
