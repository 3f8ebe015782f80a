"""The paper's setting (paper §2.3, App. B.2): MATH in the `# Answer` format, answer+PRM reward,
the main (T, τ) grid, 9 iterations of 500 steps. Point the data paths at Hendrycks-format jsonl
(MATH train + test minus MATH500 for training, MATH500 for test) and the model at an SFT'd
checkpoint (the paper's P_0 is Mistral-7B after one SFT epoch).

    python run.py --config=configs/math.py --config.model.path=/ckpt/mistral-7b-sft-ep1 \\
        --config.data.train_path=math_train.jsonl --config.data.test_path=math500.jsonl
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/math"
    c.task = "math"
    # The paper's MATH500 grader (PRM800K, sympy off) and ~500x faster than "math_verify", which
    # accepts more equal answers (docs/algorithm.md#answer-graders)
    c.answer_check = "normalized"
    c.variants = ("bstar", "online_rft")
    c.use_prm = (True,)  # Eq. 2: answer + PRM (paper App. A.1)
    c.primary = "bstar+prm - online_rft+prm"
    c.iterations = 9  # paper §2.3
    c.model.path = "smollm2-135m"  # replace with the SFT'd P_0 (paper §2.3: Mistral-7B, epoch 1)
    c.model.dtype = "bfloat16"
    c.sft.compute_dtype = "bfloat16"
    c.mesh.data, c.mesh.fsdp = 1, -1  # FSDP: a 7B model's fp32 state is sharded over every chip
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.8  # sizes from device memory (docs/memory.md)
    # Recompute each layer in the backward pass: Mistral-7B's SFT and PRM steps fit a v5p:2x2x1
    # with it (77.4 and 70.1 of 102 GB per device, docs/memory.md), not without.
    c.sft.remat = c.prm.remat = "full"
    c.data.name = "math_jsonl"
    c.data.train_path = "data/math_train.jsonl"  # 11,500 problems (paper App. A.1)
    c.data.test_path = "data/math500.jsonl"  # MATH500 (paper §2.3)
    c.data.num_dev, c.data.num_test = 600, 500  # paper §3.3, §2.3
    c.queries_per_iteration = 11_500  # M, paper App. B.2
    c.samples_per_query = 64  # K, paper App. B.2
    c.target_size = 67_500  # N, paper App. B.2 -> n* = 6
    c.search.samples_per_query = 64
    c.sampling.max_new_tokens = 768  # the official sampler's limit
    c.prm.num_queries, c.prm.samples_per_query, c.prm.completions = 11_500, 15, 8  # paper App. A.1
    c.prm.steps, c.prm.batch_size, c.prm.lr, c.prm.min_lr = 2000, 256, 2e-6, 2e-7  # paper App. A.1
    if arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/math_tiny"
    return c
