"""The names that config fields choose from and the modules below the config layer own (tasks,
answer checks, data loaders, PRM head inits, remat modes, dtypes). Declared here, on the ground
floor, so that the config schema (bstar_jax/config/schema.py) reads them without importing JAX.
"""

TASKS = ("gsm8k", "math", "arc", "code")  # config.task: the answer checker (rewards/verify.py; code: unit tests)
# config.answer_check (rewards/verify.py); math_verify grades task "math" only.
ANSWER_CHECKS = ("normalized", "exact", "math_verify")
# config.data.name: the loaders of bstar_jax/data; the programming ones hold task "code" problems.
CODE_DATASETS = ("apps_jsonl", "humaneval", "code_synthetic")
DATASETS = ("synthetic", "gsm8k_jsonl", "gsm8k_tfds", "math_jsonl", "arc_jsonl", "gsm_symbolic") + CODE_DATASETS
PRM_HEAD_INITS = ("lm_head_mean", "zero")  # config.prm.head_init (rewards/prm.py)
REMAT = ("none", "full")  # config.sft.remat / config.prm.remat: "full" recomputes each layer backward
DTYPES = ("float32", "bfloat16", "float16")  # model weights and compute (models/config.py)
