"""The coding domain (the paper's APPS setting): programs rewarded by unit tests in a sandbox.

Each sampled response's program runs against its problem's tests (docs/sandbox.md); reward 1 when
every test passes, else 0, no reward model; B-STaR searches the temperature only, τ at
baseline.threshold (docs/code.md#the-reward-in-the-loop). Evaluation adds Pass@K-S by distinct
programs and the code diversity (docs/code.md#metrics).

Default: APPS-format JSONL files (data.train_path / data.test_path, one problem a line with the
APPS fields, docs/code.md#apps) and Qwen2.5-0.5B-Instruct, sized for one accelerator host:

    python run.py --config=configs/code.py --config.data.train_path=data/apps_train.jsonl \\
        --config.data.test_path=data/apps_test.jsonl
    python run.py --config=configs/code.py ... --config.data.test_name=humaneval   # test on HumanEval
    python run.py --config=configs/code.py:cpu        # code_synthetic, tiny model, on a 2-core CPU
    python run.py --config=configs/code.py:tiny       # about a minute (tests, quick checks)

`cpu` is the offline demo of the domain: the synthetic programming problems (`code_synthetic`,
13 families of one-function problems with five call-based tests each) and a tiny Llama-family
model trained from scratch to a warm start P_0 on their reference programs (several correct
programs per problem, as configs/demo.py does with equation orders), then B-STaR and online RFT
from it. Measured cost and results in docs/code.md#a-run-on-a-cpu.
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/code"
    c.task = "code"  # unit-test reward in the sandbox (docs/code.md)
    c.variants = ("bstar", "online_rft")
    c.use_prm = (False,)  # no reward model for programs (the paper's APPS runs)
    c.iterations = 9
    c.model.path = "Qwen/Qwen2.5-0.5B-Instruct"  # or an HF folder / .gguf; the hub needs a connection
    c.model.dtype = c.sft.compute_dtype = "bfloat16"
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.8  # sizes from device memory (docs/memory.md)
    # Qwen2.5-0.5B's float32 train state (weights + Adam, 9.9 GiB) is sharded over every chip, and
    # each layer recomputed in the backward pass: replicated, a v5e chip has no room for one SFT row.
    c.mesh.data, c.mesh.fsdp = 1, -1
    c.sft.remat = "full"

    c.data.name = "apps_jsonl"
    c.data.train_path = "data/apps_train.jsonl"  # the user's APPS files (docs/code.md#apps)
    c.data.test_path = "data/apps_test.jsonl"
    c.data.num_dev, c.data.num_test = 256, 500

    c.queries_per_iteration = 2048  # M
    c.samples_per_query = 16  # K: 32,768 programs an iteration
    c.target_size = 8192  # N: n* = ceil(8192 / 2048) = 4
    c.search.samples_per_query = 8  # 8 T x 256 dev x 8 = 16,384 programs a search
    c.sampling.max_new_tokens = 768  # an APPS program with a few lines of reasoning
    c.sampling.batch_rows = 1024  # rows per sampler call when hbm_fraction = 0
    c.eval.samples_per_query, c.eval.s_values = 16, (1, 4)
    # A worker per core grades while the accelerator idles; a batch that overruns an hour fails its
    # unfinished programs rather than stall the run (docs/sandbox.md).
    c.code.timeout_s, c.code.batch_timeout_s, c.code.workers = 4.0, 3600.0, 0

    c.p0_sft.steps = 80  # P_0: about one epoch over APPS's ~5,000 reference programs (paper §2.3)
    c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 64, 16, 2e-5

    c.sft.steps_per_iteration = 100
    c.sft.batch_size, c.sft.micro_batch_size = 64, 16
    c.sft.lr, c.sft.min_lr = 1e-5, 1e-6
    c.sft.warmup_steps, c.sft.decay_steps = 10, 9 * 100
    # APPS statements run long; SFT keeps the first 1,024 prompt tokens and 768 of the response.
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 1792, 1024, 768
    if arg == "cpu":
        on_a_cpu(c)
    elif arg == "tiny":
        shrink_to_tiny(c)
        synthetic_programs(c)
        c.workdir = "runs/code_tiny"
        c.warm_start.steps = 200
        c.code.workers = 2
    return c


def synthetic_programs(c):
    """The offline task: code_synthetic problems and a tiny model trained to a warm start P_0."""
    c.task = "code"
    c.data.name = "code_synthetic"
    c.data.train_path = c.data.test_path = ""
    c.warm_start.enabled = True
    c.p0_sft.steps = 0
    c.model.dtype = c.sft.compute_dtype = "float32"  # bfloat16 matmuls are slower on a CPU
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.0
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    return c


def on_a_cpu(c):
    """The `cpu` argument: code_synthetic with a tiny warm-started model, B-STaR vs online RFT."""
    synthetic_programs(c)
    c.workdir = "runs/code_cpu"
    c.iterations = 3
    c.data.num_train, c.data.num_dev, c.data.num_test = 1000, 32, 128
    c.warm_start.vocab_size = 512
    c.warm_start.orders_per_problem = 2  # two correct programs per problem in P_0's data
    c.warm_start.hidden_size, c.warm_start.intermediate_size = 128, 384
    c.warm_start.num_layers, c.warm_start.max_len = 4, 256
    c.warm_start.steps, c.warm_start.batch_size, c.warm_start.lr = 500, 32, 3e-3

    c.queries_per_iteration, c.samples_per_query, c.target_size = 64, 8, 256  # n* = 4
    c.search.samples_per_query = 4
    c.search.temperatures = (0.6, 0.8, 1.0, 1.2)  # 4 T x 32 dev x 4 = 512 programs a search
    c.sampling.max_new_tokens, c.sampling.batch_rows = 80, 512
    c.eval.samples_per_query, c.eval.s_values = 4, (1, 2)
    c.code.workers = 2

    # 8 steps of 32 (2-3 epochs of the ~100 programs selected) at one LR in every iteration: at
    # 3e-4 (P_0's final LR) and 12 steps both methods fell 8-16 points below P_0 (seed 0,
    # docs/code.md#a-run-on-a-cpu).
    c.sft.steps_per_iteration = 8
    c.sft.batch_size, c.sft.micro_batch_size = 32, 32
    c.sft.lr = c.sft.min_lr = 1e-4
    c.sft.warmup_steps, c.sft.decay_steps = 1, 3 * 8
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 256, 128, 128
    c.sft.freeze_embeddings = c.sft.freeze_lm_head = c.sft.freeze_norms = False
    return c
