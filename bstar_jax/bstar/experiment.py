"""The self-improvement loop (Algorithm 1 and its baselines): the iteration driver.

Per run (a variant, with or without the PRM), from the same P_0 (docs/algorithm.md#algorithm-1):
  iteration 0: evaluate P_0;
  iteration i: [B-STaR: roll out the dev subset at every T of the grid, search (T, τ)]
               -> roll out the iteration's queries at T -> select (τ, per-query cap)
               -> SFT with the variant's carry-over rule -> evaluate -> log -> checkpoint.
Every draw comes from a named stream (`streams`) with the run and iteration folded in, so a
resumed run draws what an uninterrupted one would; metrics are written before the checkpoint,
and a resume drops rows past it. Each phase of an iteration keeps its result when it finishes
(bstar/phases.py), so a stopped iteration resumes from its first unfinished phase, and a SIGTERM
stops the run at the next safe point (core/preemption.py). Evaluation folds in the iteration
only (common random numbers: runs differ by their policies, not by test-sampling noise), so P_0
is evaluated once per reward.
"""
from __future__ import annotations

import logging
import time

import jax
import numpy as np

from bstar_jax.bstar import balance, checkpoint, code_reward, evaluation, export, metrics, rollout, variants
from bstar_jax.bstar.held_threshold import HeldThreshold
from bstar_jax.analysis import comparisons, report, runlog
from bstar_jax.config import check as config_check, choices, plan, record as run_record
from bstar_jax import data
from bstar_jax.core import distributed, files
from bstar_jax.train import sft
from bstar_jax.text import tokenizer as tok
from bstar_jax.text.format import format_prompt
from bstar_jax.bstar.prm_phase import check_prm_folder, prepare_prm
from bstar_jax.core.streams import Streams
from bstar_jax.bstar.policy import load_policy
from bstar_jax.bstar.phases import EVALUATION, POOL, SEARCH, SELECTION, IterationPhases, config_digest
from bstar_jax.core import preemption
from bstar_jax.train import trainer


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
    """Runs every (variant, reward) of the config into config.workdir; returns report.md's path."""
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
    p0_rows: dict[bool, dict] = {}  # iteration-0 metrics per reward: every run starts from the same P_0
    last_choices: dict[str, tuple] = {}  # run name -> its last (T, τ), for online_rft_fixed
    grader = code_reward.grader_for(config)  # the code task's sandbox pool, shared by every run
    try:
        for variant, use_prm in ((v, p) for p in config.use_prm for v in config.variants):
            if use_prm and prm_scorer is None:
                prm_scorer = prepare_prm(config, mesh, tokenizer, p0, splits, streams.key("prm"))
            Run(config, mesh, tokenizer, p0, splits, log, streams, variant, prm_scorer if use_prm else None,
                p0_rows=p0_rows, last_choices=last_choices, grader=grader).go()
    finally:
        if grader is not None:
            grader.close()
    log.close()
    if is_writer:
        return report.write_report(config.workdir, title=f"B-STaR: {config.workdir}", command=command)
    return ""


class Run:
    """One variant of the loop from P_0, with its own checkpoints under checkpoints/<name>."""

    def __init__(self, config, mesh, tokenizer, p0, splits, log, streams: Streams, variant, prm_scorer, *,
                 p0_rows: dict | None = None, last_choices: dict | None = None, grader=None):
        self.config, self.mesh, self.tokenizer, self.splits, self.log = config, mesh, tokenizer, splits, log
        self.cfg, self.p0_params = p0
        self.streams, self.variant, self.prm_scorer = streams, variant, prm_scorer
        self.grader = grader  # a code task's programs are graded in its sandbox (code_reward.py)
        self.p0_rows = {} if p0_rows is None else p0_rows
        # The last (T, τ) of every run so far (this one's is added as it goes); online_rft_fixed
        # reads its source's here, and keeps the one it started with (`fixed`) on a resume.
        self.last_choices = {} if last_choices is None else last_choices
        self.fixed: tuple[float, float] | None = None
        self.held = HeldThreshold(config, variant, prm_scorer is not None)  # a baseline's τ, fitted or given
        self.replicate = int(config.get("replicate", 0))
        self.name = run_name(variant, prm_scorer is not None, self.replicate)
        self.index = run_index(variant, prm_scorer is not None, self.replicate)
        self.sft = plan.sft(config)  # the SFT of each iteration: its trainer config and steps
        self.n_star = int(config.n_star) or metrics.n_star_rule(int(config.target_size),
                                                                 int(config.queries_per_iteration))
        self.digest = config_digest(config)
        folder = files.path(config.workdir) / "checkpoints" / self.name.replace("+", "_")
        self.ckpt = checkpoint.Checkpointer(folder,
                                            max_to_keep=int(config.checkpoint.keep), async_save=False)

    def go(self) -> None:
        c = self.config
        state = sft.init_train_state(self.cfg, self.p0_params, self.sft.config, self.mesh)
        start = 0
        restored = self.ckpt.restore(sft.abstract_train_state(self.cfg, self.sft.config, self.mesh)) \
            if self.ckpt.latest_iteration() is not None else None
        if restored is not None:
            state, start = restored.state, restored.iteration
            logging.info("%s: resuming after iteration %d", self.name, start)
            IterationPhases(c.workdir, self.name, start, self.digest).clear()  # left by a stop after its save
            self.held.restore(restored.meta)
            if restored.temperature is not None and restored.threshold is not None:
                choice = (float(restored.temperature), float(restored.threshold))
                self.last_choices[self.name] = choice
                if self.variant == variants.FIXED:
                    self.fixed = choice
        else:
            t0 = time.time()
            preemption.at(f"{self.name} iteration 0: evaluation")
            use_prm = self.prm_scorer is not None
            if use_prm not in self.p0_rows:  # (row, per-problem results), shared by the runs of this reward
                self.p0_rows[use_prm] = self._evaluate_per_problem(state.params, 0)
            p0_row, p0_per_problem = self.p0_rows[use_prm]
            self._keep_per_problem(0, p0_per_problem)
            self._log_row(0, dict(p0_row), temperature=None, threshold=None, t0=t0)
            self.ckpt.save(0, state, metrics={"iteration": 0})
        self.log.drop_after(self.name, start)
        for it in range(start + 1, int(c.iterations) + 1):
            state = self.iteration(it, state)
        if bool(c.export.final):
            self._export(state.params, int(c.iterations), final=True)
        self.ckpt.close()

    # ------------------------------------------------------------------ one iteration

    def iteration(self, it: int, state):
        c, t0 = self.config, time.time()
        phases = IterationPhases(c.workdir, self.name, it, self.digest)
        done = phases.finished()  # a resumed iteration goes on from its first unfinished phase
        here = f"{self.name} iteration {it}"
        policy = (self.cfg, state.params)
        preemption.at(f"{here}: search")
        if SEARCH in done:
            temperature, threshold, dev_balance_score = phases.load(SEARCH)[1]["choice"]
        else:
            temperature, threshold, dev_balance_score = self._choose(policy, it)
            phases.save(SEARCH, {}, {"choice": [temperature, threshold, dev_balance_score]})
        self.held.keep(threshold, dev_balance_score)  # a fitting baseline holds the τ its fit chose from here on
        queries = self._queries(it)
        call = plan.iteration(c, temperature)
        preemption.at(f"{here}: sampling")
        if POOL in done:
            pool = phases.load_pool()
        else:
            pool = self._pool(policy, queries, list(call.temperatures), call.samples, self._key("sample", it))
            phases.save_pool(pool)
        preemption.at(f"{here}: selection")
        self._log_completions(it, queries, pool)
        samples = pool.samples
        correct, reward, valid, text_id = pool.correct[0], pool.reward[0], pool.valid[0], pool.text_id[0]
        K = correct.shape[1]
        if bool(c.search.include_reference):  # the official code's extra candidate (docs/algorithm.md#selection)
            correct, reward, valid, text_id = balance.with_reference(correct, reward, valid, text_id)
        if SELECTION in done:
            kept, meta = phases.load(SELECTION)
            selected, (threshold, precision, recall) = kept["selected"], meta["selection"]
        else:
            threshold, selected, precision, recall = self._select(correct, reward, valid, text_id, K, temperature,
                                                                  threshold)
            phases.save(SELECTION, {"selected": selected}, {"selection": [threshold, precision, recall]})
        examples = [(samples.prompt_ids[q], self._reference_ids(queries[q]) if k == K else
                     samples.response_ids(0, q, k)) for q, k in zip(*np.nonzero(selected))]
        state = variants.carry_over(self.variant, state, self.p0_params, self.sft.config)
        train_stats = {"loss": None, "tokens_per_s": None}
        preemption.at(f"{here}: SFT")
        if examples:
            state, train_stats = self._sft(state, examples, it, phases)
        else:
            logging.warning("%s iteration %d: nothing selected at τ=%s; SFT skipped", self.name, it, threshold)
        preemption.at(f"{here}: evaluation")
        row = dict.fromkeys(evaluation.TEST_METRICS)
        if evaluation.evaluates(c, it):
            if EVALUATION in done:
                per_problem, row = phases.load(EVALUATION)
            else:
                row, per_problem = self._evaluate_per_problem(state.params, it)
                phases.save(EVALUATION, per_problem, row)
            self._keep_per_problem(it, per_problem)
        row.update(
            balance_score=metrics.balance_score(correct, selected, text_id, self.n_star, mesh=self.mesh),
            n_selected=int(selected.sum()), selection_precision=precision, selection_recall=recall,
            sft_loss=train_stats["loss"], sft_tokens_per_s=train_stats["tokens_per_s"],
            train_accuracy=float(correct.mean()), train_valid=float(valid.mean()),
            selected_diversity=self._selected_diversity(pool.texts[0], selected[:, :K]),
            n_star=self.n_star, search_balance_score=dev_balance_score, **self.held.row())
        if pool.test_pass_fraction is not None:  # code: the share of unit tests passed, mean over samples
            row["test_pass_fraction"] = float(pool.test_pass_fraction.mean())
        self._log_row(it, row, temperature=temperature, threshold=threshold, t0=t0)
        self.last_choices[self.name] = (temperature, threshold)
        preemption.at(f"{here}: checkpoint")
        self.ckpt.save(it, state, temperature=temperature, threshold=threshold,
                       metrics={"iteration": it, "n_selected": int(selected.sum())}, extra=self.held.checkpoint_meta())
        phases.clear()
        if bool(c.export.every_iteration):
            self._export(state.params, it, final=False)
        return state

    def _select(self, correct, reward, valid, text_id, K, temperature, threshold):
        """(τ, selected [Q, K(+1)], precision, recall): the selection at τ (searched here in the
        official mode)."""
        c = self.config
        if variants.searches(self.variant, "threshold", c.task) and c.search.mode == "official":
            threshold = balance.search_threshold(correct, reward, valid, text_id, c.search.thresholds,
                                                 temperature=temperature, target_size=int(c.target_size),
                                                 n_star=self.n_star, mode="official", mean_over="selected",
                                                 mesh=self.mesh).threshold
        selected = balance.select(reward, valid, threshold, int(c.target_size), text_id, mesh=self.mesh)
        # Precision and recall judge the policy's own samples, not the reference column.
        precision, recall = metrics.selection_precision_recall(correct[:, :K], selected[:, :K], valid[:, :K],
                                                               text_id[:, :K], mesh=self.mesh)
        return float(threshold), np.asarray(selected), precision, recall

    def _sft(self, state, examples, it: int, phases: IterationPhases):
        """The SFT phase, from its last save when there is one; saved every sft.save_every steps,
        on a stop and at its end. Returns (state, {"loss", "tokens_per_s"})."""
        c = self.config
        store, num_steps = phases.sft_checkpointer(), self.sft.steps
        resume = None
        if store.latest_iteration() is not None:
            restored = store.restore(sft.abstract_train_state(self.cfg, self.sft.config, self.mesh))
            state, resume = restored.state, trainer.Progress.from_json(restored.meta["progress"])
            if "stats" in restored.meta:  # the phase had finished
                return state, restored.meta["stats"]
            logging.info("%s iteration %d: SFT resumes after step %d", self.name, it, resume.step)

        def save(st, progress):
            store.save(progress.step, st, extra={"progress": progress.to_json()})

        state, stats = sft.run_sft(state, examples, self.cfg, self.sft.config, self.mesh, self._key("sft", it),
                                   num_steps=num_steps, progress=bool(c.progress), description=f"{self.name} it{it} SFT", resume=resume,
                                   save=save, save_every=int(c.sft.save_every))
        stats = {"loss": stats["loss"], "tokens_per_s": stats["tokens_per_s"]}
        done = trainer.Progress(step=num_steps)
        store.save(num_steps, state, extra={"progress": done.to_json(), "stats": stats})
        return state, stats

    def _selected_diversity(self, texts_QxK, selected_QxK) -> float:
        """Diversity of the selection: distinct equations, or on the code task distinct programs."""
        if self.config.task == "code":
            return code_reward.code_diversity(texts_QxK, selected_QxK)
        return metrics.diversity([[texts_QxK[q, k] for k in np.flatnonzero(selected_QxK[q])]
                                  for q in range(len(texts_QxK))])

    def _log_completions(self, it: int, queries, pool) -> None:
        """The first few sampled completions of the iteration (one per query) to the metrics mirror."""
        n = min(int(self.config.wandb.completions), len(queries))
        self.log.log_completions(self.name, it, [
            dict(question=queries[q].question, completion=str(pool.texts[0][q, 0]),
                 reward=float(pool.reward[0][q, 0]), correct=bool(pool.correct[0][q, 0])) for q in range(n)])

    def _key(self, stream: str, it: int):
        return self.streams.key(stream, run=self.index, iteration=it)

    def _pool(self, policy, examples, temperatures, num_samples, rng) -> rollout.Pool:
        """K samples per example at each temperature, graded and rewarded ([T, Q, K])."""
        return rollout.rollout(policy, self.tokenizer, examples, temperatures=temperatures, num_samples=num_samples,
                               rng=rng, config=self.config, mesh=self.mesh, prm_scorer=self.prm_scorer,
                               grader=self.grader)

    def _reference_ids(self, example) -> list[int]:
        """Target ids (EOS included) of a query's reference solution."""
        return tok.encode_example(self.tokenizer, format_prompt(example.question), example.solution)[1]

    def _choose(self, policy, it):
        """(T, τ, dev balance score) for this iteration: the search for the searching variants
        (over what each searches, the other knob at the baseline's), and for a baseline fitting its
        τ (over τ at the baseline's T; held_threshold.py); fixed otherwise."""
        c = self.config
        base_t, base_tau = float(c.baseline.temperature), float(c.baseline.threshold)
        if self.variant == variants.FIXED:
            return (*self._fixed_choice(), None)
        if self.variant not in variants.SEARCHED and not self.held.needs_fit:
            return base_t, self.held.value, None
        # the grid's temperatures where it searches T, else the baseline's
        call = plan.search(c, self.variant, self.prm_scorer is not None)
        temps = list(call.temperatures)
        taus = (list(c.search.thresholds) if self.held.needs_fit or variants.searches(self.variant, "threshold", c.task)
                else [base_tau])
        dev = self.splits["dev"]
        pool = self._pool(policy, dev, temps, call.samples, self._key("search", it))
        # The dev target keeps the iteration's per-query ratio N / M (docs/algorithm.md#search).
        dev_target = max(1, round(int(c.target_size) * len(dev) / int(c.queries_per_iteration)))
        result = balance.search(pool.correct, pool.reward, pool.valid, pool.text_id, temps, taus,
                                target_size=dev_target, n_star=self.n_star, mode=c.search.mode,
                                include_reference=bool(c.search.include_reference), mesh=self.mesh)
        if distributed.is_writer():
            runlog.save_search_table(c.workdir, self.name, it, temps, taus, result.balance_score_TxU)
        return float(result.temperature), float(result.threshold), float(result.balance_score)

    def _fixed_choice(self) -> tuple[float, float]:
        """online_rft_fixed's (T, τ): the one it started with when resuming, else config.fixed's
        source run's last choice (same reward), else config.fixed.temperature and .threshold."""
        if self.fixed is None:
            f = self.config.fixed
            if f.from_run:
                source = run_name(f.from_run, self.prm_scorer is not None, self.replicate)
                if source not in self.last_choices:
                    raise config_check.ConfigValueError(
                        f"config.fixed.from_run={f.from_run!r}: run {source} has no chosen (T, τ) in "
                        f"{self.config.workdir} (no iteration of it ran); list it before "
                        f"{variants.FIXED} in config.variants with config.iterations >= 1")
                self.fixed = tuple(float(x) for x in self.last_choices[source])
                logging.info("%s: fixed at %s's last choice T=%s τ=%s", self.name, source, *self.fixed)
            else:
                self.fixed = (float(f.temperature), float(f.threshold))
        return self.fixed

    def _queries(self, it) -> list[data.Example]:
        """The iteration's M training queries (all of them when M >= the training set)."""
        train, m = self.splits["train"], int(self.config.queries_per_iteration)
        if m >= len(train):
            return list(train)
        order = np.asarray(jax.random.permutation(self._key("queries", it), len(train)))
        return [train[i] for i in order[:m]]

    def _evaluate_per_problem(self, params, it):
        """(metrics row, per-problem results) of `params`; the key depends on the iteration only
        (shared by all runs), so runs pair up problem by problem."""
        return evaluation.evaluate_per_problem((self.cfg, params), self.tokenizer, self.splits["test"],
                                               rng=self.streams.key("eval", iteration=it), config=self.config,
                                               mesh=self.mesh, prm_scorer=self.prm_scorer, grader=self.grader)

    def _keep_per_problem(self, it, per_problem) -> None:
        if distributed.is_writer():
            comparisons.save_results(self.config.workdir, self.name, it, per_problem)

    def _export(self, params, it, *, final: bool) -> None:
        """The policy as an HF folder under policies/<run>/ (skipped when already there)."""
        folder = export.policy_dir(self.config.workdir, self.name, None if final else it)
        if export.export_policy(self.cfg, params, self.tokenizer, folder, run=self.name, iteration=it):
            logging.info("%s: policy of iteration %d exported to %s", self.name, it, folder)

    def _log_row(self, it, row, *, temperature, threshold, t0) -> None:
        base = dict(iteration=it, variant=self.name, temperature=temperature, threshold=threshold,
                    balance_score=None, n_selected=0, selection_precision=None, selection_recall=None,
                    sft_loss=None)
        base.update(row)
        base["seconds"] = round(time.time() - t0, 2)
        self.log.write(base)

        def fmt(x):  # None: an iteration without a test pass (eval.every)
            return "-" if x is None else f"{x:.3f}"

        logging.info("%s it%d: T=%s τ=%s pass@1=%s pass@K=%s BS=%s selected=%s (%.0fs)", self.name, it,
                     temperature, threshold, fmt(base["pass_at_1"]), fmt(base["pass_at_k"]), base["balance_score"],
                     base["n_selected"], base["seconds"])
