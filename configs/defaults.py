"""Shared defaults of every config; each configs/*.py overrides a handful of fields.

Units are in the comments; "paper §x" / "App. x" point at the number's source
(see docs/algorithm.md#grids-and-defaults).
"""
import ml_collections as mlc

from bstar_jax.train import sft


def base_config() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.workdir = "runs/default"  # outputs: metrics.jsonl, report.md, plots/, checkpoints/
    c.on_config_change = "refuse"  # a rerun whose config differs from <workdir>/run_config.json: refuse | continue
    c.seed = 0  # root PRNG seed; iteration and phase are folded in (resume-exact)
    c.task = "gsm8k"  # answer checker: gsm8k | math | arc | code (unit tests in a sandbox, docs/code.md)
    # normalized grader, "exact" string match (official code), or "math_verify" (MATH only;
    # docs/algorithm.md#answer-graders)
    c.answer_check = "normalized"
    # Run these in turn, each from the same P_0: bstar | online_rft | iterative_rft | rest_em, and the
    # ablations bstar_temperature_only | bstar_threshold_only | online_rft_fixed (docs/algorithm.md#variants)
    c.variants = ("bstar",)
    c.use_prm = (False,)  # one run per (variant, use_prm): answer-only and/or answer+PRM reward (Eq. 1 / Eq. 2)
    c.iterations = 9  # paper §2.3: 9 iterations
    # The report's primary comparison, "a - b" of two run names (or P_0), on greedy Pass@1, chosen
    # before the run; every other comparison is exploratory and Holm-corrected (docs/results.md).
    c.primary = "bstar - online_rft"
    # k >= 1: every run again with independent training draws (search, queries, sample, SFT) and
    # the same P_0, PRM and evaluation draws, named <variant>-r<k>, into the same workdir; pairs of
    # replicates measure the run-to-run noise of the report's intervals (docs/results.md#replicates).
    c.replicate = 0

    c.mesh = mlc.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # device counts per mesh axis; -1 = the rest
    # Per-device memory the *.hbm_fraction fields apply to, GB; 0 = the device's own (memory_stats,
    # else the TPU chip table, else 8 GiB on CPU). docs/memory.md
    c.device_memory_gb = 0.0

    c.model = mlc.ConfigDict()
    c.model.path = "smollm2-135m"  # HF folder, .gguf, embedded alias or hub id (online only)
    c.model.tokenizer = ""  # "" = next to the model (folder or GGUF)
    c.model.param_dtype = "float32"  # weights in memory (fp32 master weights)
    c.model.dtype = "float32"  # activation compute dtype (bfloat16 on TPU)

    c.data = mlc.ConfigDict()
    c.data.name = "gsm_symbolic"  # synthetic | gsm8k_jsonl | gsm8k_tfds | math_jsonl | arc_jsonl | gsm_symbolic
    c.data.train_path = ""  # jsonl path for *_jsonl loaders
    c.data.test_path = ""
    c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
    c.data.num_train = 2000  # problems generated (synthetic / gsm_symbolic)
    c.data.num_dev = 600  # paper §3.3: 600 dev queries for the (T, τ) search
    c.data.num_test = 500  # held-out evaluation queries
    c.data.difficulty = 2  # synthetic / gsm_symbolic difficulty knob

    c.code = mlc.ConfigDict()  # the code task's unit-test reward (docs/code.md#the-reward-in-the-loop)
    c.code.timeout_s = 4.0  # wall-clock seconds per unit test (the sandbox's default)
    c.code.batch_timeout_s = 0.0  # seconds for one rollout's whole batch of programs; 0 = no limit
    c.code.workers = 0  # sandbox worker processes; 0 = one per usable core

    c.queries_per_iteration = 11_500  # M, paper App. B.2 (all MATH train queries)
    c.samples_per_query = 64  # K, paper App. B.2
    c.target_size = 67_500  # N selected per iteration, paper App. B.2
    c.n_star = 0  # 0 = ceil(N / M) (paper Eq. 3); the official code uses 8

    c.baseline = mlc.ConfigDict(dict(temperature=1.0, threshold=0.0))  # paper §2.3: baselines' T and τ
    # online_rft_fixed (Table 6): online RFT at one fixed (T, τ). from_run names a searching variant
    # run earlier in `variants`: its last chosen (T, τ), same reward; "" = temperature and threshold below.
    c.fixed = mlc.ConfigDict(dict(from_run="bstar", temperature=1.0, threshold=0.0))

    c.search = mlc.ConfigDict()
    c.search.mode = "paper"  # paper: (T, τ) jointly on dev | official: T on dev, τ on the iteration pool
    c.search.temperatures = tuple(round(0.5 + 0.1 * i, 2) for i in range(8))  # paper App. B.2: 0.5..1.2 / 0.1
    c.search.thresholds = tuple(round(-1.0 + 0.1 * i, 2) for i in range(21))  # paper App. B.2: -1..1 / 0.1
    c.search.samples_per_query = 64  # K on the dev subset
    c.search.include_reference = False  # official code adds the reference solution with reward 1.0

    c.sampling = mlc.ConfigDict()
    c.sampling.max_new_tokens = 768  # the official sampler's limit
    c.sampling.top_p = 1.0  # the official sampler (vLLM default)
    c.sampling.top_k = 0  # 0 = off (vLLM top_k=-1)
    c.sampling.batch_rows = 512  # rows per sampler call (power of two); bigger grids are chunked
    c.sampling.hbm_fraction = 0.0  # > 0: batch_rows follows from this fraction of device memory (docs/memory.md)
    # Rows per sampler call, in units of batch_rows: a call gets up to this many chunks of rows through
    # batch_rows cache slots, a finished row's slot taking the next row (continuous batching,
    # docs/models.md#sampler-calls-in-a-run); 1 = one slot per row. Same texts for every value.
    # 1 until refilling is measured faster: on a CPU it ran 0.83-0.86x the static batch (README).
    c.sampling.requests_per_slot = 1

    c.eval = mlc.ConfigDict()
    c.eval.samples_per_query = 32  # K for test Pass@K / Pass@K-S / Reward@K-S (Table 1: K = 32)
    c.eval.temperature = 1.0  # test-time T (unstated in the paper; assumption, docs/algorithm.md#grids-and-defaults)
    c.eval.s_values = (1, 4)  # S of Pass@K-S and Reward@K-S (Table 1: P@32-4)
    # Test evaluation every this many iterations; P_0 and the last iteration always. The rows of
    # the others hold None for the test metrics (a cheaper run where the test pass is long).
    c.eval.every = 1

    c.sft = sft.default_config()  # every field documented in bstar_jax/train/sft.py (paper §2.3, App. A.1)
    c.sft.compute_dtype = "float32"  # "bfloat16" on accelerators (fp32 master weights either way)
    c.sft.hbm_fraction = 0.0  # > 0: micro_batch_size (and p0_sft's) follow from this fraction of device memory

    c.prm = mlc.ConfigDict()
    c.prm.path = ""  # a trained PRM checkpoint folder; "" = train one before iteration 1
    c.prm.head_init = "lm_head_mean"  # the official head is the mean of LM-head rows (docs/algorithm.md#paper-vs-official-code)
    c.prm.num_queries = 256  # queries whose sampled solutions are labelled (Math-Shepherd)
    c.prm.samples_per_query = 4  # solutions sampled per labelled query (paper: 15)
    c.prm.completions = 8  # completions per step prefix (paper: 8)
    c.prm.temperature = 1.0
    c.prm.steps = 300  # PRM optimizer steps
    c.prm.batch_size = 32
    c.prm.micro_batch_size = 32  # rows per gradient-accumulation step (global); divides batch_size
    c.prm.remat = "none"  # "full": recompute each layer in the backward pass (docs/memory.md)
    c.prm.lr = 2e-5  # paper App. A.1 trains at 2e-6 on a 7B model; small models need more
    c.prm.min_lr = 2e-6

    c.p0_sft = mlc.ConfigDict()  # SFT a loaded model on reference solutions to make P_0 (paper §2.3)
    c.p0_sft.steps = 0  # 0 = the loaded model is P_0; the paper's P_0 is the SFT checkpoint after epoch 1
    c.p0_sft.lr = 2e-5  # peak LR (warmup 10 %, cosine to a tenth)
    c.p0_sft.batch_size = 64
    c.p0_sft.micro_batch_size = 16

    c.warm_start = mlc.ConfigDict()
    c.warm_start.enabled = False  # train a tokenizer + tiny model from scratch to P_0 (offline demo)
    c.warm_start.vocab_size = 384  # BPE tokens
    c.warm_start.orders_per_problem = 3  # reference solutions per problem, in different equation orders
    c.warm_start.hidden_size = 128
    c.warm_start.intermediate_size = 384
    c.warm_start.num_layers = 4
    c.warm_start.num_heads = 4
    c.warm_start.num_kv_heads = 2
    c.warm_start.max_len = 512  # max positions of the tiny model
    c.warm_start.lr = 3e-3  # peak LR of the from-scratch SFT
    c.warm_start.steps = 400  # optimizer steps to P_0
    c.warm_start.batch_size = 32
    c.export = mlc.ConfigDict()  # policies as HF folders under <workdir>/policies/<run>/ (docs/results.md)
    c.export.final = True  # the last iteration's policy as .../final
    c.export.every_iteration = False  # also each iteration i >= 1 as .../iteration_<i>
    c.checkpoint = mlc.ConfigDict(dict(keep=2))  # keep the last N >= 1 checkpoints (and the last sane one)
    c.progress = True  # tqdm bars
    return c


def shrink_to_tiny(c: mlc.ConfigDict) -> mlc.ConfigDict:
    """The `tiny` argument: the whole loop in about a minute on a CPU (tests, quick checks).

    Whatever the config's model and data, tiny runs the synthetic task with a from-scratch tiny
    model (warm start), so it needs no files and no network.
    """
    c.data.name = "synthetic"
    c.warm_start.enabled = True
    c.p0_sft.steps = 0
    c.model.dtype = c.sft.compute_dtype = "float32"
    c.prm.path = ""
    c.iterations = 2
    c.data.num_train, c.data.num_dev, c.data.num_test = 256, 8, 16
    c.queries_per_iteration, c.samples_per_query, c.target_size = 16, 4, 32
    c.search.temperatures = (0.7, 1.0)
    c.search.thresholds = (-0.2, 0.0, 0.5)
    c.search.samples_per_query = 4
    c.sampling.max_new_tokens = 96
    c.data.difficulty = 1
    c.sampling.batch_rows = 128
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.0  # explicit sizes on a CPU
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.eval.samples_per_query, c.eval.s_values = 4, (1, 2)
    c.sft.steps_per_iteration, c.sft.batch_size, c.sft.micro_batch_size = 4, 16, 8
    c.sft.warmup_steps, c.sft.decay_steps = 2, 40
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 256, 128, 128
    c.warm_start.steps, c.warm_start.batch_size = 150, 16
    c.warm_start.hidden_size, c.warm_start.intermediate_size = 64, 128
    c.warm_start.num_layers, c.warm_start.max_len = 2, 256
    c.prm.num_queries, c.prm.samples_per_query, c.prm.completions, c.prm.steps = 8, 2, 2, 4
    c.prm.batch_size = c.prm.micro_batch_size = 16
    return c
