"""The self-improvement loop (Algorithm 1 and its baselines): runs and their bookkeeping.

Per run (a variant, with or without the PRM), from the same P_0 (docs/algorithm.md#algorithm-1):
  iteration 0: evaluate P_0;
  iteration i: the steps of Algorithm 1 (bstar/iteration.py: [B-STaR: search (T, τ) on the dev
               subset] -> roll out the iteration's queries at T -> select (τ, per-query cap)
               -> SFT with the variant's carry-over rule), then here: evaluate -> log -> checkpoint
               -> export.
Every draw comes from a named stream (`streams`) with the run and iteration folded in, so a
resumed run draws what an uninterrupted one would; metrics are written before the checkpoint,
and a resume drops rows past it. Each phase of an iteration keeps its result when it finishes
(bstar/phases.py), so a stopped iteration resumes from its first unfinished phase, and a SIGTERM
stops the run at the next safe point (core/preemption.py). Evaluation folds in the iteration
only (common random numbers: runs differ by their policies, not by test-sampling noise), so P_0
is evaluated once per reward.

A run reads what the runs before it found only as arguments (`run_variant`: P_0's evaluation,
the earlier runs' last (T, τ)) and hands back its own (`RunOutcome`); nothing is shared between
runs or between two experiments in one process.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import types
from typing import Mapping

import numpy as np

from bstar_jax.bstar import checkpoint, code_reward, evaluation, export, metrics, variants
from bstar_jax.analysis import comparisons, report, runlog
from bstar_jax.config import check as config_check, choices, plan, record as run_record
from bstar_jax import data
from bstar_jax.core import distributed, files, progress
from bstar_jax.train import sft
from bstar_jax.bstar.held_threshold import HeldThreshold
from bstar_jax.bstar.iteration import IterationResult, Run, iteration
from bstar_jax.bstar.prm_phase import check_prm_folder, prepare_prm
from bstar_jax.core.streams import Streams
from bstar_jax.bstar.policy import load_policy
from bstar_jax.bstar.phases import IterationPhases, config_digest
from bstar_jax.core import preemption


run_name = choices.run_name  # "bstar", "bstar+prm", "online_rft-r1", ... (config/choices.py)
# Replicate k's run numbers start at k * REPLICATE_STRIDE: distinct from every replicate-0 run as
# long as VARIANTS has fewer than REPLICATE_STRIDE / 2 variants.
REPLICATE_STRIDE = 1000


def run_index(variant: str, use_prm: bool, replicate: int = 0) -> int:
    """The run number folded into its random streams search, queries, sample and sft: fixed per
    (variant, reward, replicate), so a run draws the same whichever other runs the config lists.
    P_0, the PRM and the evaluation draws take no run number: replicates share them."""
    return REPLICATE_STRIDE * int(replicate) + 2 * variants.VARIANTS.index(variant) + int(use_prm)


class _QuietLibraries(logging.Filter):
    """Drops the INFO chatter of orbax (a dozen lines per checkpoint), and in every process but
    the writer all INFO lines (they would repeat the writer's); warnings still pass."""

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            return True
        return "/orbax/" not in record.pathname and distributed.is_writer()


def run(config, mesh, *, command: str | None = None) -> str:
    """Runs every (variant, reward) of the config into config.workdir; returns report.md's path.
    Phases longer than one compiled call show progress bars when `config.progress` is on."""
    with progress.shown(bool(config.get("progress", False))):
        return _run_all(config, mesh, command=command)


def _run_all(config, mesh, *, command: str | None) -> str:
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
            handler.addFilter(_QuietLibraries())
    config_check.validate(config, mesh)  # every field, file and the workdir, before any work
    if True in config.use_prm:
        check_prm_folder(config)  # a supplied PRM's form, and its architecture where files say P_0's
    is_writer = distributed.is_writer()
    run_record.check_and_record(config)  # a workdir remembers the config that made it
    streams = Streams(config.seed)
    splits = data.load_splits(config.data, streams)
    config_check.validate_examples(splits)
    config, tokenizer, p0 = load_policy(config, mesh, splits["train"])  # sizes resolved once, before P_0
    if True in config.use_prm:
        check_prm_folder(config, p0[0])  # a supplied PRM must fit P_0, before any run starts
    config_check.validate_prompt_lengths(config, tokenizer, p0[0], splits)
    sink = None
    if bool(config.wandb.enabled) and is_writer:  # lazily: a run without the mirror needs no wandb
        from bstar_jax.analysis.wandb_sink import WandbSink

        sink = WandbSink(config.workdir, project=str(config.wandb.project), mode=str(config.wandb.mode),
                         config=config.to_dict())
    log = runlog.MetricsLog(config.workdir, enabled=is_writer, sink=sink)
    prm_scorer = None
    # What finished runs found, read by the later ones: P_0's evaluation per reward (every run
    # starts from the same P_0) and each run's last (T, τ) (online_rft_fixed's source).
    p0_results: dict[bool, tuple[dict, dict]] = {}
    last_choices: dict[str, tuple[float, float]] = {}
    grader = code_reward.grader_for(config)  # the code task's sandbox pool, shared by every run
    try:
        for variant, use_prm in ((v, p) for p in config.use_prm for v in config.variants):
            if use_prm and prm_scorer is None:
                prm_scorer = prepare_prm(config, mesh, tokenizer, p0, splits, streams.key("prm"))
            one = make_run(config, mesh, tokenizer, p0, splits, streams, variant, prm_scorer if use_prm else None,
                           grader=grader)
            outcome = run_variant(one, log, p0_result=p0_results.get(use_prm),
                                  earlier_choices=types.MappingProxyType(dict(last_choices)))
            if outcome.p0_result is not None:
                p0_results.setdefault(use_prm, outcome.p0_result)
            if outcome.choice is not None:
                last_choices[one.name] = outcome.choice
    finally:
        if grader is not None:
            grader.close()
    log.close()
    if is_writer:
        return report.write_report(config.workdir, title=f"B-STaR: {config.workdir}", command=command)
    return ""


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What a finished run hands the runs after it."""

    p0_result: tuple[dict, dict] | None  # P_0's (metrics row, per-problem results) under its reward, if it has them
    choice: tuple[float, float] | None  # its last (T, τ); None when no iteration ran


def make_run(config, mesh, tokenizer, p0, splits, streams: Streams, variant: str, prm_scorer=None, *,
             grader=None) -> Run:
    """The fixed inputs of the run of (`variant`, reward) in config.replicate (`iteration.Run`)."""
    replicate = int(config.get("replicate", 0))
    use_prm = prm_scorer is not None
    n_star = int(config.n_star) or metrics.n_star_rule(int(config.target_size), int(config.queries_per_iteration))
    return Run(config=config, mesh=mesh, tokenizer=tokenizer, p0=p0, splits=splits, streams=streams, variant=variant,
               name=run_name(variant, use_prm, replicate), index=run_index(variant, use_prm, replicate),
               sft=plan.sft(config), n_star=n_star, prm_scorer=prm_scorer, grader=grader)


def checkpoint_dir(config, name: str):
    """<workdir>/checkpoints/<run>: a run's iteration checkpoints."""
    return files.path(config.workdir) / "checkpoints" / name.replace("+", "_")


def fixed_choice(run: Run, earlier_choices: Mapping[str, tuple]) -> tuple[float, float]:
    """online_rft_fixed's (T, τ) in a fresh run: config.fixed's source run's last choice (same
    reward), else config.fixed.temperature and .threshold."""
    c, f = run.config, run.config.fixed
    if not f.from_run:
        return float(f.temperature), float(f.threshold)
    source = run_name(f.from_run, run.prm_scorer is not None, int(c.get("replicate", 0)))
    if source not in earlier_choices:
        raise config_check.ConfigValueError(
            f"config.fixed.from_run={f.from_run!r}: run {source} has no chosen (T, τ) in {c.workdir} (no "
            f"iteration of it ran); list it before {variants.FIXED} in config.variants with config.iterations >= 1")
    fixed = tuple(float(x) for x in earlier_choices[source])
    logging.info("%s: fixed at %s's last choice T=%s τ=%s", run.name, source, *fixed)
    return fixed


def run_variant(run: Run, log, *, p0_result: tuple[dict, dict] | None = None,
                earlier_choices: Mapping[str, tuple] = types.MappingProxyType({})) -> RunOutcome:
    """`run` from P_0 (or from its last checkpoint under checkpoints/<name>) through
    config.iterations, its rows into `log`. `p0_result`: P_0's evaluation under this reward when
    an earlier run has it (else measured here); `earlier_choices`: the earlier runs' last (T, τ)."""
    c = run.config
    ckpt = checkpoint.Checkpointer(checkpoint_dir(c, run.name), max_to_keep=int(c.checkpoint.keep), async_save=False)
    digest = config_digest(c)
    state = sft.init_train_state(run.cfg, run.p0[1], run.sft.config, run.mesh)
    start, choice = 0, None
    held = HeldThreshold(c, run.variant, run.prm_scorer is not None)  # a baseline's τ, fitted or given
    restored = ckpt.restore(sft.abstract_train_state(run.cfg, run.sft.config, run.mesh)) \
        if ckpt.latest_iteration() is not None else None
    if restored is not None:
        state, start = restored.state, restored.iteration
        logging.info("%s: resuming after iteration %d", run.name, start)
        IterationPhases(c.workdir, run.name, start, digest).clear()  # left by a stop after its save
        held.restore(restored.meta)
        if restored.temperature is not None and restored.threshold is not None:
            choice = (float(restored.temperature), float(restored.threshold))
    else:
        t0 = time.time()
        preemption.at(f"{run.name} iteration 0: evaluation")
        if p0_result is None:
            p0_result = evaluate(run, state.params, 0)
        p0_row, p0_per_problem = p0_result
        keep_per_problem(run, 0, p0_per_problem)
        log_row(log, run, 0, dict(p0_row), temperature=None, threshold=None, t0=t0)
        ckpt.save(0, state, metrics={"iteration": 0})
    log.drop_after(run.name, start)
    if run.variant == variants.FIXED and start < int(c.iterations):  # a resumed run keeps the (T, τ) it started with
        run = dataclasses.replace(run, fixed=choice if choice is not None else fixed_choice(run, earlier_choices))
    for it in range(start + 1, int(c.iterations) + 1):
        state, choice = iterate(run, log, ckpt, digest, state, it, held)
    if bool(c.export.final):
        export_policy(run, state.params, int(c.iterations), final=True)
    ckpt.close()
    return RunOutcome(p0_result=p0_result, choice=choice)


def iterate(run: Run, log, ckpt, digest: str, state, it: int, held: HeldThreshold):
    """Iteration `it` of `run` (`iteration.iteration`), then its bookkeeping: the held τ of a
    fitting baseline, the test pass, the metrics row, the checkpoint and the export. Returns
    (state, the (T, τ) it used)."""
    c, t0 = run.config, time.time()
    here = f"{run.name} iteration {it}"
    phases = IterationPhases(c.workdir, run.name, it, digest)
    phases.kept()  # read as the iteration starts: a resumed one goes on from its first unfinished phase
    result = iteration(run, state, it, phases, held)
    held.keep(result.choice.threshold, result.choice.balance_score)  # a fitting baseline holds its τ from here on
    log_completions(log, run, result)
    table = result.choice.table
    if table is not None and distributed.is_writer():
        runlog.save_search_table(c.workdir, run.name, it, table.temperatures, table.thresholds, table.balance_score)
    preemption.at(f"{here}: evaluation")
    row = dict.fromkeys(evaluation.TEST_METRICS)
    if evaluation.evaluates(c, it):
        row, per_problem = phases.evaluation(lambda: evaluate(run, result.state.params, it))
        keep_per_problem(run, it, per_problem)
    row.update(metrics_row(run, result), **held.row())
    temperature, threshold = result.choice.temperature, result.selection.threshold
    log_row(log, run, it, row, temperature=temperature, threshold=threshold, t0=t0)
    preemption.at(f"{here}: checkpoint")
    ckpt.save(it, result.state, temperature=temperature, threshold=threshold,
              metrics={"iteration": it, "n_selected": int(result.selection.selected.sum())},
              extra=held.checkpoint_meta())
    phases.clear()
    if bool(c.export.every_iteration):
        export_policy(run, result.state.params, it, final=False)
    return result.state, (temperature, threshold)


# ---------------------------------------------------------------------------- bookkeeping


def metrics_row(run: Run, result: IterationResult) -> dict:
    """The training side of an iteration's metrics row (docs/results.md#metrics)."""
    cands, selection, K = result.candidates, result.selection, result.candidates.K
    row = dict(
        balance_score=metrics.balance_score(cands.correct, selection.selected, cands.text_id, run.n_star,
                                            mesh=run.mesh),
        n_selected=int(selection.selected.sum()), selection_precision=selection.precision,
        selection_recall=selection.recall, sft_loss=result.sft_stats["loss"],
        sft_tokens_per_s=result.sft_stats["tokens_per_s"], train_accuracy=float(cands.correct.mean()),
        train_valid=float(cands.valid.mean()),
        selected_diversity=selected_diversity(run, result.pool.texts[0], selection.selected[:, :K]),
        n_star=run.n_star, search_balance_score=result.choice.balance_score)
    if result.pool.test_pass_fraction is not None:  # code: the share of unit tests passed, mean over samples
        row["test_pass_fraction"] = float(result.pool.test_pass_fraction.mean())
    return row


def selected_diversity(run: Run, texts_QxK, selected_QxK) -> float:
    """Diversity of the selection: distinct equations, or on the code task distinct programs."""
    if run.config.task == "code":
        return code_reward.code_diversity(texts_QxK, selected_QxK)
    return metrics.diversity([[texts_QxK[q, k] for k in np.flatnonzero(selected_QxK[q])]
                              for q in range(len(texts_QxK))])


def log_completions(log, run: Run, result: IterationResult) -> None:
    """The first few sampled completions of the iteration (one per query) to the metrics mirror."""
    pool, queries = result.pool, result.queries
    n = min(int(run.config.wandb.completions), len(queries))
    log.log_completions(run.name, result.iteration, [
        dict(question=queries[q].question, completion=str(pool.texts[0][q, 0]),
             reward=float(pool.reward[0][q, 0]), correct=bool(pool.correct[0][q, 0])) for q in range(n)])


def evaluate(run: Run, params, it: int) -> tuple[dict, dict]:
    """(metrics row, per-problem results) of `params`; the key depends on the iteration only
    (shared by all runs), so runs pair up problem by problem."""
    return evaluation.evaluate_per_problem((run.cfg, params), run.tokenizer, run.splits["test"],
                                           rng=run.streams.key("eval", iteration=it), config=run.config,
                                           mesh=run.mesh, prm_scorer=run.prm_scorer, grader=run.grader)


def keep_per_problem(run: Run, it: int, per_problem) -> None:
    if distributed.is_writer():
        comparisons.save_results(run.config.workdir, run.name, it, per_problem)


def export_policy(run: Run, params, it: int, *, final: bool) -> None:
    """The policy as an HF folder under policies/<run>/ (skipped when already there)."""
    folder = export.policy_dir(run.config.workdir, run.name, None if final else it)
    if export.export_policy(run.cfg, params, run.tokenizer, folder, run=run.name, iteration=it):
        logging.info("%s: policy of iteration %d exported to %s", run.name, it, folder)


def log_row(log, run: Run, it: int, row: dict, *, temperature, threshold, t0: float) -> None:
    """Writes one metrics row (with the wall-clock seconds since `t0`) and logs its headline."""
    base = dict(iteration=it, variant=run.name, temperature=temperature, threshold=threshold,
                balance_score=None, n_selected=0, selection_precision=None, selection_recall=None,
                sft_loss=None)
    base.update(row)
    base["seconds"] = round(time.time() - t0, 2)
    log.write(base)

    def fmt(x):  # None: an iteration without a test pass (eval.every)
        return "-" if x is None else f"{x:.3f}"

    bs = base["balance_score"]
    logging.info("%s iteration %d/%d: T=%s τ=%s | greedy Pass@1 %s | Pass@K %s | balance score %s | %s selected | %.0f s",
                 run.name, it, int(run.config.iterations), temperature, threshold, fmt(base["pass_at_1"]),
                 fmt(base["pass_at_k"]), "-" if bs is None else f"{bs:.3f}", base["n_selected"], base["seconds"])
