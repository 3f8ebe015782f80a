"""One iteration of Algorithm 1 as plain steps: search -> sample -> reward -> select -> SFT.

`iteration` runs the steps of one run's iteration i and returns what happened (`IterationResult`:
the chosen (T, τ), the pool, the selection, the new train state); the caller (bstar/experiment.py)
evaluates, logs, checkpoints and exports with it (docs/algorithm.md#algorithm-1). The steps read
only their inputs, a `Run` (what stays fixed over a run) and a random stream with the run and
iteration folded in, so a resumed run draws what an uninterrupted one would. Keeping a finished
phase's result is the `phases` store's job (bstar/phases.py: a stopped iteration resumes from its
first unfinished phase); each phase starts at a safe point (core/preemption.py).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Protocol

import jax
import numpy as np

from bstar_jax import data
from bstar_jax.bstar import balance, metrics, rollout, variants
from bstar_jax.bstar.held_threshold import HeldThreshold
from bstar_jax.config import plan
from bstar_jax.core import preemption
from bstar_jax.core.streams import Streams
from bstar_jax.text import tokenizer as tok
from bstar_jax.text.format import format_prompt
from bstar_jax.train import sft, trainer


@dataclasses.dataclass(frozen=True)
class Run:
    """What one run (a variant, with or without the PRM) reads and never changes: the config, P_0,
    the data, its random streams and run number, its reward and its SFT plan."""

    config: object
    mesh: object
    tokenizer: object
    p0: tuple  # (cfg, params) of P_0
    splits: dict
    streams: Streams
    variant: str
    name: str  # config/choices.py's run_name
    index: int  # the run number folded into its training streams (experiment.run_index)
    sft: plan.Train  # the SFT of each iteration: its trainer config and steps
    n_star: int
    prm_scorer: rollout.PRMScorer | None = None
    grader: object = None  # a code task's programs are graded in its sandbox (code_reward.py)
    fixed: tuple[float, float] | None = None  # online_rft_fixed's (T, τ) (experiment.fixed_choice)

    @property
    def cfg(self):
        return self.p0[0]

    def key(self, stream: str, iteration: int) -> jax.Array:
        """The run's key of a training stream at `iteration`."""
        return self.streams.key(stream, run=self.index, iteration=iteration)


@dataclasses.dataclass(frozen=True)
class SearchTable:
    """BS(T, τ) over the searched grid (the heat map's table)."""

    temperatures: list[float]
    thresholds: list[float]
    balance_score: np.ndarray  # [T, U]


@dataclasses.dataclass(frozen=True)
class Choice:
    """The iteration's (T, τ) and the dev balance score it reached (None where nothing was searched)."""

    temperature: float
    threshold: float
    balance_score: float | None = None
    table: SearchTable | None = None


@dataclasses.dataclass(frozen=True)
class Selection:
    """The selected samples [Q, K(+1)] at τ (re-searched on the pool in the official mode), with
    the precision and recall of the selection among the policy's own samples."""

    threshold: float
    selected: np.ndarray
    precision: float | None
    recall: float | None


@dataclasses.dataclass(frozen=True)
class Candidates:
    """What the selection chooses from, [Q, K(+1)]: the pool at T, and with
    search.include_reference the reference solution as column K."""

    correct: np.ndarray
    reward: np.ndarray
    valid: np.ndarray
    text_id: np.ndarray
    K: int  # the policy's own samples per query (columns 0..K-1)


@dataclasses.dataclass(frozen=True)
class IterationResult:
    """What iteration i did: the inputs of its metrics row, checkpoint and export."""

    iteration: int
    choice: Choice
    queries: list
    pool: rollout.Pool
    candidates: Candidates
    selection: Selection
    state: trainer.TrainState  # after SFT (the carried-over state when nothing was selected)
    sft_stats: dict  # loss, tokens_per_s (None when nothing was selected)


class PhaseStore(Protocol):
    """Where an iteration's finished phases are kept (bstar/phases.py `IterationPhases`): each
    method returns the kept result when there is one, else calls `compute` and keeps its result."""

    def search(self, compute: Callable[[], Choice]) -> Choice: ...

    def pool(self, compute: Callable[[], rollout.Pool]) -> rollout.Pool: ...

    def selection(self, compute: Callable[[], Selection]) -> Selection: ...

    def sft_checkpointer(self): ...


def iteration(run: Run, state, it: int, phases: PhaseStore, held: HeldThreshold) -> IterationResult:
    """Algorithm 1, iteration `it` of `run` from train state `state`: the (T, τ) search (for the
    searching variants, and the τ fit of a baseline whose `held` τ is not fitted yet), K samples
    of the iteration's M queries at T, graded and rewarded, the selection at τ, and SFT on it
    with the variant's carry-over rule."""
    here = f"{run.name} iteration {it}"
    policy = (run.cfg, state.params)
    preemption.at(f"{here}: search")
    choice = phases.search(lambda: search(run, policy, it, held))
    queries = draw_queries(run, it)
    call = plan.iteration(run.config, choice.temperature)
    preemption.at(f"{here}: sampling")
    pool = phases.pool(lambda: sample(run, policy, queries, list(call.temperatures), call.samples,
                                      run.key("sample", it)))
    preemption.at(f"{here}: selection")
    cands = candidates(run, pool)
    selection = phases.selection(lambda: select(run, cands, choice))
    examples = [(pool.samples.prompt_ids[q], reference_ids(run, queries[q]) if k == cands.K else
                 pool.samples.response_ids(0, q, k)) for q, k in zip(*np.nonzero(selection.selected))]
    state = variants.carry_over(run.variant, state, run.p0[1], run.sft.config)
    stats = {"loss": None, "tokens_per_s": None}
    preemption.at(f"{here}: SFT")
    if examples:
        state, stats = train(run, state, examples, it, phases.sft_checkpointer())
    else:
        logging.warning("%s iteration %d: nothing selected at τ=%s; SFT skipped", run.name, it, selection.threshold)
    return IterationResult(iteration=it, choice=choice, queries=queries, pool=pool, candidates=cands,
                           selection=selection, state=state, sft_stats=stats)


# ---------------------------------------------------------------------------- the steps


def search(run: Run, policy, it: int, held: HeldThreshold) -> Choice:
    """(T, τ) for iteration `it`: the search for the searching variants (over what each searches,
    the other knob at the baseline's; Algorithm 1, step 1), and for a baseline fitting its τ (over
    τ at the baseline's T; held_threshold.py); fixed otherwise (a baseline's τ: `held`'s)."""
    c = run.config
    base_t, base_tau = float(c.baseline.temperature), float(c.baseline.threshold)
    if run.variant == variants.FIXED:
        if run.fixed is None:
            raise ValueError(f"{run.name}: Run.fixed must hold its (T, τ) (experiment.fixed_choice)")
        return Choice(*run.fixed)
    if run.variant not in variants.SEARCHED and not held.needs_fit:
        return Choice(base_t, held.value)
    # the grid's temperatures where it searches T, else the baseline's
    call = plan.search(c, run.variant, run.prm_scorer is not None)
    temps = list(call.temperatures)
    taus = (list(c.search.thresholds) if held.needs_fit or variants.searches(run.variant, "threshold", c.task)
            else [base_tau])
    dev = run.splits["dev"]
    pool = sample(run, policy, dev, temps, call.samples, run.key("search", it))
    # The dev target keeps the iteration's per-query ratio N / M (docs/algorithm.md#search).
    dev_target = max(1, round(int(c.target_size) * len(dev) / int(c.queries_per_iteration)))
    result = balance.search(pool.correct, pool.reward, pool.valid, pool.text_id, temps, taus,
                            target_size=dev_target, n_star=run.n_star, mode=c.search.mode,
                            include_reference=bool(c.search.include_reference), mesh=run.mesh)
    return Choice(float(result.temperature), float(result.threshold), float(result.balance_score),
                  SearchTable(temps, taus, np.asarray(result.balance_score_TxU)))


def draw_queries(run: Run, it: int) -> list[data.Example]:
    """The iteration's M training queries (all of them when M >= the training set)."""
    train_set, m = run.splits["train"], int(run.config.queries_per_iteration)
    if m >= len(train_set):
        return list(train_set)
    order = np.asarray(jax.random.permutation(run.key("queries", it), len(train_set)))
    return [train_set[i] for i in order[:m]]


def sample(run: Run, policy, examples, temperatures, num_samples: int, rng) -> rollout.Pool:
    """K samples per example at each temperature, graded and rewarded ([T, Q, K])."""
    return rollout.rollout(policy, run.tokenizer, examples, temperatures=temperatures, num_samples=num_samples,
                           rng=rng, config=run.config, mesh=run.mesh, prm_scorer=run.prm_scorer, grader=run.grader)


def candidates(run: Run, pool: rollout.Pool) -> Candidates:
    """The pool at T as the selection's candidates, the reference solution appended with
    search.include_reference (the official code's extra candidate, docs/algorithm.md#selection)."""
    arrays = pool.correct[0], pool.reward[0], pool.valid[0], pool.text_id[0]
    K = arrays[0].shape[1]
    if bool(run.config.search.include_reference):
        arrays = balance.with_reference(*arrays)
    return Candidates(*arrays, K=K)


def select(run: Run, cands: Candidates, choice: Choice) -> Selection:
    """The selection at τ (searched here on the pool in the official mode), per-query cap n*."""
    c, threshold = run.config, choice.threshold
    correct, reward, valid, text_id, K = cands.correct, cands.reward, cands.valid, cands.text_id, cands.K
    if variants.searches(run.variant, "threshold", c.task) and c.search.mode == "official":
        threshold = balance.search_threshold(correct, reward, valid, text_id, c.search.thresholds,
                                             temperature=choice.temperature, target_size=int(c.target_size),
                                             n_star=run.n_star, mode="official", mean_over="selected",
                                             mesh=run.mesh).threshold
    selected = balance.select(reward, valid, threshold, int(c.target_size), text_id, mesh=run.mesh)
    # Precision and recall judge the policy's own samples, not the reference column.
    precision, recall = metrics.selection_precision_recall(correct[:, :K], selected[:, :K], valid[:, :K],
                                                           text_id[:, :K], mesh=run.mesh)
    return Selection(float(threshold), np.asarray(selected), precision, recall)


def reference_ids(run: Run, example) -> list[int]:
    """Target ids (EOS included) of a query's reference solution."""
    return tok.encode_example(run.tokenizer, format_prompt(example.question), example.solution)[1]


def train(run: Run, state, examples, it: int, store=None):
    """SFT on the selected (prompt, response) ids, from the store's last save when there is one;
    saved into `store` every sft.save_every steps, on a stop and at the end (no saves without a
    store). Returns (state, {"loss", "tokens_per_s"})."""
    c, num_steps = run.config, run.sft.steps
    resume = None
    if store is not None and store.latest_iteration() is not None:
        restored = store.restore(sft.abstract_train_state(run.cfg, run.sft.config, run.mesh))
        state, resume = restored.state, trainer.Progress.from_json(restored.meta["progress"])
        if "stats" in restored.meta:  # the phase had finished
            return state, restored.meta["stats"]
        logging.info("%s iteration %d: SFT resumes after step %d", run.name, it, resume.step)

    def save(st, progress):
        store.save(progress.step, st, extra={"progress": progress.to_json()})

    state, stats = sft.run_sft(state, examples, run.cfg, run.sft.config, run.mesh, run.key("sft", it),
                               num_steps=num_steps, progress=bool(c.progress), description=f"{run.name} it{it} SFT",
                               resume=resume, save=None if store is None else save,
                               save_every=int(c.sft.save_every))
    stats = {"loss": stats["loss"], "tokens_per_s": stats["tokens_per_s"]}
    if store is not None:
        store.save(num_steps, state, extra={"progress": trainer.Progress(step=num_steps).to_json(), "stats": stats})
    return state, stats

