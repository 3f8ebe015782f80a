"""SFT step throughput: our jitted optax step vs a plain PyTorch loop, same model, batch and length.

Both sides: a Llama decoder with the same random weights, the official freezing (embeddings, LM
head and norms frozen, docs/training.md), AdamW, global-norm clipping at 1.0, completion-only loss
(the first half of every row is prompt), fp32 on the CPU, one optimizer step per batch. The two
run alternately in one process after a warmup, and each reports its median step time.

    python benchmarks/sft.py               # tiny and SmolLM2-135M-sized
    python benchmarks/sft.py --sizes tiny --steps 5

Model FLOPs per step are 6 * N * tokens with N = the matmul weights (layers + LM head; attention
scores ignored); MFU divides the achieved rate by the fp32 matmul rate measured here on a
2048x2048 jnp.dot (the CPU has no published peak).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bstar_jax.models.hf import params_from_torch_layout
from bstar_jax.core import mesh as mesh_lib  # noqa: E402
from bstar_jax import models  # noqa: E402
from bstar_jax.config import schema  # noqa: E402
from bstar_jax.train import sft  # noqa: E402

SIZES = {
    # name: (ModelConfig kwargs, batch, seq)
    "tiny": (dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_layers=4, num_heads=4,
                  num_kv_heads=2, head_dim=32), 16, 128),
    "smollm2-135m": (dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                          num_heads=9, num_kv_heads=3, head_dim=64, tie_word_embeddings=True,
                          rope_theta=100000.0), 4, 256),
}


def torch_model(cfg):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    tc = LlamaConfig(**cfg.to_hf_dict())
    tc._attn_implementation = "sdpa"
    return LlamaForCausalLM(tc).float()


def to_params(model, cfg):
    """Our params from a transformers Llama (HF names, torch layout)."""
    return params_from_torch_layout(cfg, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})


def matmul_params(cfg) -> int:
    E, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return cfg.num_layers * (2 * E * q + 2 * E * kv + 3 * E * F) + E * V


def measured_matmul_flops() -> float:
    x = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * 2048 ** 3 / min(times)


def bench(name, steps, rounds):
    kw, B, L = SIZES[name]
    cfg = models.ModelConfig(max_position_embeddings=max(L, 2048), **kw)
    model = torch_model(cfg)
    params = to_params(model, cfg)

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(B, L)).astype(np.int32)
    loss_mask = np.zeros((B, L), np.int32)
    loss_mask[:, L // 2:] = 1
    batch = {"tokens": tokens, "loss_mask": loss_mask,
             "positions": np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy(),
             "segment_ids": np.ones((B, L), np.int32), "lengths": np.full((B,), L, np.int32)}

    # ours
    c = schema.section("sft")
    c.update(dict(batch_size=B, micro_batch_size=B, compute_dtype="float32", max_len=L,
                  lr=1e-5, min_lr=1e-6, warmup_steps=0, decay_steps=1000))
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    state = sft.init_train_state(cfg, params, c, mesh)
    step_fn = sft.make_train_step(cfg, c, mesh)
    dev_batch = sft.device_batch(batch, mesh)

    def ours():
        nonlocal state
        state, m = step_fn(state, dev_batch)
        jax.block_until_ready(m)

    # reference: plain torch loop, same freezing, AdamW, clipping and loss masking
    for pname, p in model.named_parameters():
        p.requires_grad_(not any(w in pname for w in ("embed", "lm_head", "norm")))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    t_tokens = torch.tensor(tokens).long()
    t_labels = torch.where(torch.tensor(loss_mask) == 1, t_tokens, -100)

    def reference():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=t_tokens, labels=t_labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    t = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - t
    ours()
    # torch's intra-op threads spin-wait; on a shared CPU one thread can beat all of them.
    # The reference gets whichever is faster here (after a warmup step).
    reference()
    by_threads = {}
    for n in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(n)
        t = time.perf_counter()
        reference()
        by_threads[n] = time.perf_counter() - t
    torch_threads = min(by_threads, key=by_threads.get)
    torch.set_num_threads(torch_threads)
    times = {"ours": [], "reference": []}
    for _ in range(rounds):
        for label, fn in (("ours", ours), ("reference", reference)):
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    tok = B * L
    return cfg, tok, med, compile_s, torch_threads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,smollm2-135m")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per round (0: by size)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    peak = measured_matmul_flops()
    print(f"cpu: {threads} cores, jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}; "
          f"fp32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s")
    lines = []
    for name in args.sizes.split(","):
        steps = args.steps or (8 if name == "tiny" else 2)
        cfg, tok, med, compile_s, torch_threads = bench(name, steps, args.rounds)
        n = matmul_params(cfg)
        rate = {k: tok / v for k, v in med.items()}
        for label in ("ours", "reference"):
            flops = 6 * n * tok / med[label]
            print(f"{name} {label:9s}: {med[label] * 1e3:8.1f} ms/step  {rate[label]:9.0f} tokens/s  "
                  f"{flops / 1e9:7.1f} GFLOP/s  MFU {flops / peak:6.1%} (6*N*tokens, N={n / 1e6:.1f}M)")
        print(f"{name}: our first step (compile) {compile_s:.1f} s; torch ran with {torch_threads} thread(s)")
        lines.append(f"sft step {name} (batch {SIZES[name][1]} x seq {SIZES[name][2]}, fp32, CPU): "
                     f"ours {rate['ours']:.0f} tokens/s | reference {rate['reference']:.0f} tokens/s | "
                     f"ratio {rate['ours'] / rate['reference']:.2f}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
