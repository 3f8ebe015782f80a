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


def get_config(arg: str | None = None):
    if arg == "tiny":  # the reproduction's tiny loop (both rewards, every iteration evaluated), the demo's two runs
        c = reproduce.get_config("tiny")
        c.workdir, c.variants = "runs/demo_tiny", ("bstar", "online_rft")
        return c
    c = reproduce.get_config()  # the same task, model and recipe; the sizes below are cut
    c.workdir = "runs/demo"
    c.variants = ("bstar", "online_rft")
    c.use_prm = (True,)  # answer+PRM (Eq. 2): the PRM is labelled and trained inside the run
    c.primary = "bstar+prm - online_rft+prm"
    c.iterations = 3
    # reproduce.py's 300 steps at half its batch: half the cost for as good a P_0 (seed 0: greedy
    # Pass@1 0.098 against 0.090 at batch 32; 150 steps of 32 gave 0.043)
    c.warm_start.batch_size = 16
    # 256 test problems: one seed resolves paired Pass@1 differences of about 0.05-0.08 (docs/results.md)
    c.data.num_test = 256

    c.queries_per_iteration = 32  # M
    c.target_size = 128  # N: n* = ceil(128 / 32) = 4
    c.search.temperatures = (0.5, 0.7, 0.9, 1.1)  # every second T of the paper's grid from 0.5 (results/: B-STaR's most chosen)
    c.eval.samples_per_query = 4
    c.eval.every = 3  # P_0 and the last iteration: what the closing comparison reads

    # One to two epochs over each iteration's selection (20-45 responses), as in reproduce.py
    c.sft.steps_per_iteration = 3
    c.sft.batch_size, c.sft.micro_batch_size = 16, 16
    c.sft.warmup_steps, c.sft.decay_steps = 1, c.iterations * 3  # warmup 0.3 epoch, decay over the run

    c.prm.num_queries = 48  # ~190 labelled solutions
    c.prm.batch_size, c.prm.micro_batch_size = 16, 16
    return c
