"""One short check of an accelerator host: decode, SFT and one loop iteration, ours against torch.

    python benchmarks/accelerator.py            # on a GPU or TPU host: about 5-8 minutes on one H100
    python benchmarks/accelerator.py --quick    # tiny shapes on any backend (CI runs it on a CPU)

It runs on whatever backend jax finds and prints, last, one line per comparison:
- decode tokens/s of our sampler (`sampling.generate`, bf16, random weights) at the 0.5B and 1.5B
  Qwen2.5 shapes and batches 64 / 256, its share of the HBM roofline (per decode step the weights
  and the live KV cache are read once), and transformers' `generate` in torch on the same card;
- SFT step tokens/s and model-FLOPs utilisation (6 x matmul params x tokens / step time, against
  the card's bf16 peak) at the 0.5B shape;
- the wall time of one iteration of `configs/gsm8k.py:tiny` (a subprocess of run.py).
Weights are random (nothing is downloaded); every row decodes exactly `--new` tokens (no EOS).
It needs jax, flax, optax, orbax-checkpoint, transformers and torch as the host has them, and
the pure-Python packages of docs/performance.md; a missing one is named in one line.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

NEEDED = ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "etils", "numpy", "absl", "tqdm",
          "tokenizers", "safetensors", "gguf", "matplotlib", "tensorboardX")
missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: missing packages: {', '.join(missing)} (pip install them; see docs/performance.md)")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bstar_jax import models, sampling  # noqa: E402
from bstar_jax.config import schema  # noqa: E402
from bstar_jax.core import mesh as mesh_lib  # noqa: E402
from bstar_jax.models import known  # noqa: E402
from bstar_jax.train import sft  # noqa: E402

# Per device: (HBM bytes/s, dense bf16 FLOP/s), from the vendors' data sheets (SXM parts for GPUs).
GPUS = {"H200": (4.8e12, 989e12), "H100": (3.35e12, 989e12), "A100": (2.0e12, 312e12), "L4": (0.30e12, 121e12),
        "A10": (0.60e12, 125e12)}
TPUS = {"v4": (1.2e12, 275e12), "v5 lite": (0.819e12, 197e12), "v5e": (0.819e12, 197e12), "v5p": (2.765e12, 459e12),
        "v6": (1.638e12, 918e12)}
TINY = dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def peaks(device) -> tuple[float, float] | None:
    """(HBM bytes/s, bf16 FLOP/s) of `device`, or None when the table does not know it (a CPU)."""
    kind = getattr(device, "device_kind", "")
    for table in (GPUS, TPUS):
        for name, value in table.items():
            if name.lower() in kind.lower():
                return value
    return None


def model_config(name: str):
    hf = TINY if name == "tiny" else known.ARCHITECTURES[name]
    return models.ModelConfig.from_hf_dict(hf, source=name, param_dtype="bfloat16", dtype="bfloat16")


def matmul_params(cfg) -> int:
    E, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return cfg.num_layers * (2 * E * q + 2 * E * kv + 3 * E * F) + E * V


def param_bytes(cfg) -> int:
    E, V = cfg.hidden_size, cfg.vocab_size
    return 2 * (matmul_params(cfg) + (0 if cfg.tie_word_embeddings else E * V))


def decode_roofline(cfg, batch: int, prompt: int, new: int, bandwidth: float) -> float:
    """Tokens/s if every decode step only read the weights and the live KV cache once (bf16)."""
    kv_per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2  # K and V, bf16
    mean_context = prompt + new / 2
    step_bytes = param_bytes(cfg) + batch * mean_context * kv_per_token
    return batch * bandwidth / step_bytes


def time_ours_decode(cfg, params, batch, prompt, new, mesh) -> float:
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, cfg.vocab_size, size=(batch, prompt)).astype(np.int32)
    lengths = np.full((batch,), prompt, np.int32)

    def once(seed):
        out = sampling.generate(cfg, params, prompts, lengths, jax.random.key(seed), max_new_tokens=new,
                                temperature=1.0, eos_id=-1, mesh=mesh)
        jax.block_until_ready(out.tokens)
        return out

    once(0)  # compile
    t = time.perf_counter()
    out = once(1)
    seconds = time.perf_counter() - t
    assert int(np.asarray(out.lengths).min()) == new, "a row stopped early: the timing would be unfair"
    return batch * new / seconds


def time_torch_decode(name, batch, prompt, new) -> float | None:
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"reference skipped: {e.name} is not installed", flush=True)
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = dict(TINY if name == "tiny" else known.ARCHITECTURES[name])
    config = transformers.AutoConfig.for_model(**hf)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).to(device).eval()
    ids = torch.randint(3, hf["vocab_size"], (batch, prompt), device=device)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        model.generate(ids, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(ids, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    assert out.shape[1] == prompt + new
    del model
    return batch * new / seconds


def time_sft(cfg, params, batch, length, mesh) -> float:
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, cfg.vocab_size, size=(batch, length)).astype(np.int32)
    loss_mask = np.zeros((batch, length), np.int32)
    loss_mask[:, length // 2:] = 1
    host = {"tokens": tokens, "loss_mask": loss_mask,
            "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy(),
            "segment_ids": np.ones((batch, length), np.int32), "lengths": np.full((batch,), length, np.int32)}
    c = schema.section("sft")
    c.update(dict(batch_size=batch, micro_batch_size=batch, compute_dtype="bfloat16", max_len=length,
                  lr=1e-5, min_lr=1e-6, warmup_steps=0, decay_steps=1000, remat="full"))
    state = sft.init_train_state(cfg, params, c, mesh)
    step = sft.make_train_step(cfg, c, mesh)
    dev_batch = sft.device_batch(host, mesh)
    state, m = step(state, dev_batch)  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        state, m = step(state, dev_batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return batch * length / min(times)


def time_iteration(quick: bool) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, "run.py", "--config=configs/gsm8k.py:tiny", "--config.iterations=1",
               "--config.variants=('bstar',)", f"--config.workdir={workdir}/run", "--config.progress=False"]
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"one iteration of configs/gsm8k.py:tiny failed:\n{res.stderr[-3000:]}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (any backend, CI)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    args = ap.parse_args()
    device = jax.devices()[0]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x "
          f"{getattr(device, 'device_kind', '?')}, load average {os.getloadavg()[0]:.2f}", flush=True)
    peak = peaks(device)
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    names = ["tiny"] if args.quick else ["qwen2.5-0.5b", "qwen2.5-1.5b"]
    batches = [4] if args.quick else [64, 256]
    prompt, new = (16, 8) if args.quick else (args.prompt, args.new)
    results = []
    for name in names:
        cfg = model_config(name)
        params = models.shard_params(cfg, models.init(cfg, 0), mesh)
        for batch in batches:
            ours = time_ours_decode(cfg, params, batch, prompt, new, mesh)
            ref = time_torch_decode(name, batch, prompt, new)
            roof = f", {100 * ours / decode_roofline(cfg, batch, prompt, new, peak[0]):.0f} % of the HBM roofline" \
                if peak else ""
            print(f"decode {name} batch {batch}: ours {ours:,.0f} tok/s{roof}", flush=True)
            results.append((f"decode {name}, batch {batch}, {prompt}+{new} tokens, bf16", ours, ref, "tok/s"))
        if name == names[0]:
            batch, length = (2, 32) if args.quick else (16, 512)
            tok_s = time_sft(cfg, params, batch, length, mesh)
            mfu = f", MFU {100 * 6 * matmul_params(cfg) * tok_s / (peak[1] * jax.device_count()):.0f} %" if peak else ""
            results.append((f"SFT step {name}, batch {batch} x {length}, bf16{mfu}", tok_s, None, "tok/s"))
        del params
    seconds = time_iteration(args.quick)
    for what, ours, ref, unit in results:
        if ref:
            print(f"{what}: ours {ours:,.0f} {unit} | reference {ref:,.0f} {unit} | ratio {ours / ref:.2f}")
        else:
            print(f"{what}: ours {ours:,.0f} {unit}")
    print(f"one iteration of configs/gsm8k.py:tiny (bstar, from start to exit): {seconds:.1f} s")


if __name__ == "__main__":
    main()
