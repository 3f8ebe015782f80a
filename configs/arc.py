"""ARC-Challenge, the paper's third setting: multiple choice, answer-only reward, temperature-only search.

The answer is the choice label after `# Answer` (graded by `rewards.verify`, task "arc"); there is
no reward model, and B-STaR searches the temperature alone with τ at baseline.threshold, as the
paper did for ARC-Challenge (`config.choices.TEMPERATURE_ONLY_TASKS`). Data: ARC JSONL files, in
the HF `allenai/ai2_arc` row shape or the official ARC-V1 shape (`bstar_jax/data/arc.py`); ARC has
no worked solutions, so P_0's fine-tune teaches the format on one-step references ("The correct
choice is (B) ..."). The dev subset is drawn from the training questions.

    python run.py --config=configs/arc.py --config.data.train_path=data/ARC-Challenge-Train.jsonl \\
        --config.data.test_path=data/ARC-Challenge-Test.jsonl
    python run.py --config=configs/arc.py:tiny --config.data.train_path=... --config.data.test_path=...
                                                   # a tiny model warm-started on the file's questions
"""
from configs.defaults import base_config, shrink_to_tiny


def get_config(arg: str | None = None):
    c = base_config()
    c.workdir = "runs/arc"
    c.task = "arc"
    c.variants = ("bstar", "online_rft")
    c.use_prm = (False,)  # answer-only reward (Eq. 1)
    c.iterations = 9
    c.model.path = "Qwen/Qwen2.5-0.5B-Instruct"  # or an HF folder / .gguf / "smollm2-135m" (offline)
    c.model.dtype = c.sft.compute_dtype = "bfloat16"
    c.sampling.hbm_fraction = c.sft.hbm_fraction = 0.8  # sizes from device memory (docs/memory.md)
    # Qwen2.5-0.5B's float32 train state (weights + Adam, 9.9 GiB) is sharded over every chip, and
    # each layer recomputed in the backward pass: replicated, a v5e chip has no room for one SFT row.
    c.mesh.data, c.mesh.fsdp = 1, -1
    c.sft.remat = "full"

    c.data.name = "arc_jsonl"
    c.data.train_path = "data/ARC-Challenge-Train.jsonl"  # 1,119 questions
    c.data.test_path = "data/ARC-Challenge-Test.jsonl"  # 1,172 questions
    c.data.num_dev, c.data.num_test = 200, 1172

    c.queries_per_iteration = 1119  # M: the whole training split each iteration
    c.samples_per_query = 16  # K
    c.target_size = 4476  # N: n* = ceil(4476 / 1119) = 4
    c.search.samples_per_query = 16
    c.sampling.max_new_tokens = 256  # a few reasoning steps and the label
    c.sampling.batch_rows = 1024
    c.eval.samples_per_query, c.eval.s_values = 16, (1, 4)

    c.p0_sft.steps = 18  # P_0: one epoch over the 1,119 one-step references (the answer format)
    c.p0_sft.batch_size, c.p0_sft.micro_batch_size, c.p0_sft.lr = 64, 16, 2e-5

    c.sft.steps_per_iteration = 60
    c.sft.batch_size, c.sft.micro_batch_size = 64, 16
    c.sft.lr, c.sft.min_lr = 1e-5, 1e-6
    c.sft.warmup_steps, c.sft.decay_steps = 6, 9 * 60
    c.sft.max_len, c.sft.max_prompt_len, c.sft.max_target_len = 640, 384, 256
    if arg == "tiny":
        shrink_to_tiny(c)
        c.workdir = "runs/arc_tiny"
        c.task, c.data.name = "arc", "arc_jsonl"  # tiny keeps the ARC files: give small ones
        c.data.train_path, c.data.test_path = "data/arc_tiny_train.jsonl", "data/arc_tiny_test.jsonl"
    return c
