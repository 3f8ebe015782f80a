"""The paper's findings on the demo task, in one workdir and one report (docs/results.md#reproducing-the-papers-findings).

The demo's synthetic shopping task and tiny from-scratch Llama-family model, at the powered sizes
(512 test problems, 4 iterations, M = 192, K = 16, N = 768, the paper's 8 × 21 (T, τ) grid, a
300-step warm start P_0; configs/demo.py is the same task cut to fit 10 minutes). From the same
P_0, each with the answer-only reward and with answer+PRM (Table 1's w/o and w/ RM):

  bstar                   searches (T, τ) every iteration           (a) exploration, (b) chosen (T, τ)
  bstar_temperature_only  searches T, τ = baseline.threshold        (c) Table 3
  bstar_threshold_only    searches τ, T = baseline.temperature      (c) Table 3
  online_rft              T = 1.0, τ = 0.0 every iteration           (a), Tables 1, 3, 6
  online_rft_fixed        B-STaR's last (T, τ), held fixed           (d) Table 6
  iterative_rft, rest_em  the other baselines                       Table 1

14 runs of 4 iterations. The runs go in this order so that online_rft_fixed finds bstar's last
choice (config.fixed.from_run). Wall time alone on a 2-core CPU with two CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): about 40 min for both rewards (seed 0:
answer+PRM half 23 min with the warm start and the PRM, answer-only half 16 min;
docs/results.md). `--config.variants="('bstar','online_rft')"` is the demo's comparison at these
sizes. `iterations` may grow on a rerun of the workdir.

    python run.py --config=configs/reproduce.py
    python -m bstar_jax.report runs/reproduce          # per-iteration tables and paired differences
    python run.py --config=configs/reproduce.py:tiny   # every run at tiny sizes, 2 iterations (tests)
"""
from configs.defaults import base_config, shrink_to_tiny

VARIANTS = ("bstar", "bstar_temperature_only", "bstar_threshold_only", "online_rft", "online_rft_fixed",
            "iterative_rft", "rest_em")


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/reproduce"
    c.task = "gsm8k"  # numeric final answers, checked like GSM8K
    c.variants = VARIANTS
    c.use_prm = (False, True)  # answer-only (Eq. 1) and answer+PRM (Eq. 2)
    c.fixed.from_run = "bstar"  # Table 6: B-STaR's final (T, τ), same reward, held fixed
    c.iterations = 4
    c.warm_start.enabled = True
    c.warm_start.steps = 300  # P_0: 8-24 % greedy Pass@1 on the test split (seeds 0-4)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1

    c.data.name = "synthetic"
    # 512 test problems: paired differences of about 0.06 in Pass@1 are resolved per seed
    # (docs/results.md#paired-comparisons); evaluation then samples 512 x (1 + 8) rows per iteration.
    c.data.num_train, c.data.num_dev, c.data.num_test = 2000, 32, 512
    c.data.difficulty = 1  # 2 items -> 3 reasoning steps (a tiny model learns it in minutes)

    c.queries_per_iteration = 192  # M
    c.samples_per_query = 16  # K: exploration needs enough draws to reach the harder queries
    c.target_size = 768  # N: n* = ceil(768 / 192) = 4
    c.search.samples_per_query = 8
    c.search.temperatures = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)  # paper App. B.2 grid
    c.search.thresholds = tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))  # paper App. B.2 grid
    c.sampling.max_new_tokens = 96  # solutions are 60-70 tokens (digits spelled one per token)
    c.sampling.batch_rows = 512  # rows per sampler call: CPU throughput is flat above ~256
    c.eval.samples_per_query, c.eval.s_values = 8, (1, 2, 4)

    # About one epoch over each iteration's selection, as the paper's 500 steps x 128 over 67.5k.
    c.sft.steps_per_iteration = 16
    c.sft.batch_size, c.sft.micro_batch_size = 32, 32
    c.sft.lr, c.sft.min_lr = 3e-4, 3e-5  # P_0's final LR: the self-improvement LR continues P_0's schedule
    c.sft.warmup_steps, c.sft.decay_steps = 4, 4 * 16  # warmup about 0.2 epoch (the official schedule)
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 256, 128, 128
    c.sft.freeze_embeddings = c.sft.freeze_lm_head = c.sft.freeze_norms = False

    c.prm.num_queries, c.prm.samples_per_query, c.prm.completions = 64, 4, 4
    c.prm.steps, c.prm.batch_size, c.prm.lr, c.prm.min_lr = 150, 32, 1e-3, 1e-4
    if arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/reproduce_tiny"
    return c
