"""The embedded offline default: B-STaR vs online RFT on the synthetic shopping task, on a CPU.

Generates the task, trains a BPE tokenizer and a tiny Llama-family model to a warm start P_0
(cached in <workdir>/p0), then runs B-STaR and online RFT, each with the answer-only reward and
with answer+PRM, from the same P_0, and writes one report comparing them.

    python run.py --config=configs/demo.py          # about an hour on a 2-core CPU (README, wall time)
    python run.py --config=configs/demo.py --config.use_prm="(False,)"   # answer-only: about half an hour
    python run.py --config=configs/demo.py:tiny     # about a minute (tests, quick checks)
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/demo"
    c.task = "gsm8k"  # numeric final answers, checked like GSM8K
    c.variants = ("bstar", "online_rft")
    c.use_prm = (False, True)  # answer-only (Eq. 1) and answer+PRM (Eq. 2)
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
        c.workdir = "runs/demo_tiny"
    return c
