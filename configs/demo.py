"""The main job: B-STaR vs online RFT with the answer+PRM reward, offline, in minutes on a CPU.

It answers one question on one seed: from the same P_0, with the answer+PRM reward (Eq. 2), does
B-STaR's per-iteration (T, τ) search end above online RFT (T = 1.0; with the PRM its τ is fitted
once, baseline.prm_threshold)? run.py closes with both runs' greedy Pass@1 and their paired
difference over the test problems (config.primary).

The run makes the synthetic shopping task, a BPE and a tiny Llama-family model trained from
scratch to P_0 (300 steps of 16 examples; greedy Pass@1 0.090 on seed 0), labels 48 x 4 of P_0's
solutions by completions (Math-Shepherd) and trains the PRM on them (150 steps of 16), then runs
each method for 3 iterations: M = 32 queries x K = 16 samples, N = 128 (n* = 4), 3 SFT steps of
16. B-STaR searches T in {0.5, 0.7, 0.9, 1.1}, every second temperature of the paper's grid,
and the paper's 21 thresholds, on 32 dev queries x 8 samples. The test split (256 problems,
greedy and K = 4 samples at T = 1.0) is evaluated for P_0 and after the last iteration
(eval.every = 3): what the closing comparison reads.

Cost on a 2-core CPU, measured on a quiet machine (load average 0.5 before the run): 7 min 18 s
of wall time, 12.2 CPU-minutes (user 635 s + sys 99 s; the process keeps 1.6-1.8 cores busy).
Of the wall time the warm start takes 29 %, the PRM 29 %, evaluating P_0 6 %, B-STaR 22 %,
online RFT 13 %.

configs/reproduce.py is the powered comparison on the same task: 512 test problems, 4 iterations,
M = 192, the paper's full grid, every iteration evaluated, seven variants with both rewards.

    python run.py --config=configs/demo.py
    python run.py --config=configs/demo.py:tiny     # about a minute: reproduce.py's tiny loop, these two runs (tests)
"""
from configs import reproduce
from configs.defaults import base_config


def get_config(arg: str | None = None):
    if arg == "tiny":  # the reproduction's tiny loop (both rewards, every iteration evaluated), the demo's two runs
        c = reproduce.get_config("tiny")
        c.workdir, c.variants = "runs/demo_tiny", ("bstar", "online_rft")
        return c
    c = base_config()
    c.workdir = "runs/demo"
    c.task = "gsm8k"  # numeric final answers, checked like GSM8K
    c.variants = ("bstar", "online_rft")
    c.use_prm = (True,)  # answer+PRM (Eq. 2): the PRM is labelled and trained inside the run
    c.primary = "bstar+prm - online_rft+prm"
    c.iterations = 3
    c.warm_start.enabled = True
    # reproduce.py's 300 steps at half its batch: half the cost for as good a P_0 (seed 0: greedy
    # Pass@1 0.098 against 0.090 at batch 32; 150 steps of 32 gave 0.043)
    c.warm_start.steps, c.warm_start.batch_size = 300, 16
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1

    c.data.name = "synthetic"
    # 256 test problems: one seed resolves paired Pass@1 differences of about 0.05-0.08 (docs/results.md)
    c.data.num_train, c.data.num_dev, c.data.num_test = 2000, 32, 256
    c.data.difficulty = 1  # 2 items -> 3 reasoning steps (a tiny model learns it in minutes)

    c.queries_per_iteration = 32  # M
    c.samples_per_query = 16  # K: exploration needs enough draws to reach the harder queries
    c.target_size = 128  # N: n* = ceil(128 / 32) = 4
    c.search.samples_per_query = 8
    c.search.temperatures = (0.5, 0.7, 0.9, 1.1)  # every second T of the paper's grid from 0.5 (results/: B-STaR's most chosen)
    c.search.thresholds = tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))  # paper App. B.2 grid
    c.sampling.max_new_tokens = 96  # solutions are 60-70 tokens (digits spelled one per token)
    c.sampling.batch_rows = 512  # rows per sampler call: CPU throughput is flat above ~256
    c.eval.samples_per_query, c.eval.s_values = 4, (1, 2, 4)
    c.eval.every = 3  # P_0 and the last iteration: what the closing comparison reads

    # One to two epochs over each iteration's selection (20-45 responses), as in reproduce.py
    c.sft.steps_per_iteration = 3
    c.sft.batch_size, c.sft.micro_batch_size = 16, 16
    c.sft.lr, c.sft.min_lr = 3e-4, 3e-5  # P_0's final LR: the self-improvement LR continues P_0's schedule
    c.sft.warmup_steps, c.sft.decay_steps = 1, c.iterations * 3  # warmup 0.3 epoch, decay over the run
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 256, 128, 128
    c.sft.freeze_embeddings = c.sft.freeze_lm_head = c.sft.freeze_norms = False

    c.prm.num_queries, c.prm.samples_per_query, c.prm.completions = 48, 4, 4  # ~190 labelled solutions
    c.prm.steps, c.prm.batch_size, c.prm.micro_batch_size, c.prm.lr, c.prm.min_lr = 150, 16, 16, 1e-3, 1e-4
    return c
