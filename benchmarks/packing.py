"""SFT throughput, packed rows vs one example per power-of-two bucket, same examples and steps.

Target tokens (response + EOS, the tokens the loss is over) per second of the jitted SFT step
(sft.make_train_step) on batches from batching.iterate_batches with `pack` on (ours) and off
(reference: the padded buckets). Both sides train the same examples in the same order; every
batch shape is compiled in a warmup pass, then the two alternate, `--rounds` timed passes each.

    python benchmarks/packing.py                     # demo selections and GSM-format lengths
    python benchmarks/packing.py --cases demo --steps 4

Cases (lengths in tokens, uniform in the ranges):
  demo: the demo's selections: prompts 26-34, responses 60-70; the warm-start model (vocab 384,
        hidden 128, 4 layers), batch 32, max_len 256 (configs/demo.py).
  gsm:  SmolLM2 on GSM8K: prompts 100-200, responses 100-300; SmolLM2-135M widths (vocab 49152,
        hidden 576, MLP 1536, 9/3 heads) with --gsm-layers layers (30 in the real model; fewer
        keep a CPU run short), batch 8, max_len 1024.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bstar_jax.train import batching
from bstar_jax import models  # noqa: E402
from bstar_jax.config import schema  # noqa: E402
from bstar_jax.train import sft  # noqa: E402
from bstar_jax.core import mesh as mesh_lib  # noqa: E402


def case(name, gsm_layers):
    if name == "demo":
        cfg = models.ModelConfig(vocab_size=384, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
                                 num_kv_heads=2, head_dim=32, max_position_embeddings=512)
        return cfg, (26, 34), (60, 70), 32, 256
    cfg = models.ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=gsm_layers,
                             num_heads=9, num_kv_heads=3, head_dim=64, tie_word_embeddings=True,
                             rope_theta=100000.0, max_position_embeddings=2048)
    return cfg, (100, 200), (100, 300), 8, 1024


def bench(name, steps, rounds, gsm_layers):
    cfg, prompt_range, response_range, batch_size, max_len = case(name, gsm_layers)
    rng = np.random.default_rng(0)
    n = batch_size * steps
    examples = [(rng.integers(2, cfg.vocab_size, int(rng.integers(*prompt_range, endpoint=True))).tolist(),
                 rng.integers(2, cfg.vocab_size, int(rng.integers(*response_range, endpoint=True))).tolist())
                for _ in range(n)]
    mesh = mesh_lib.make_mesh(-1, 1, 1)
    params = models.init(cfg, 0)
    runs = {}
    for label, pack in (("ours", True), ("reference", False)):
        c = schema.section("sft")
        c.update(dict(batch_size=batch_size, micro_batch_size=batch_size, compute_dtype="float32", max_len=max_len,
                      max_prompt_len=max_len, max_target_len=max_len, lr=1e-5, min_lr=1e-6, warmup_steps=0,
                      decay_steps=1000, pack=pack, freeze_embeddings=True, freeze_lm_head=True))
        it = batching.iterate_batches(examples, batch_size, jax.random.key(0), max_len=max_len, pack=pack,
                                      key_cost=batching.attention_key_cost(cfg))
        host = [next(it) for _ in range(steps)]
        batches = [sft.device_batch(b, mesh) for b in host]
        runs[label] = dict(step=sft.make_train_step(cfg, c, mesh), state=sft.init_train_state(cfg, params, c, mesh),
                           batches=batches, target=sum(int(b["loss_mask"][:, 1:].sum()) for b in host),
                           shapes=sorted({b["tokens"].shape for b in host}), times=[],
                           slots=sum(b["tokens"].size for b in host), real=sum(int(b["lengths"].sum()) for b in host))

    def run_pass(r):
        t = time.perf_counter()
        for b in r["batches"]:
            r["state"], m = r["step"](r["state"], b)
        jax.block_until_ready(m)
        return time.perf_counter() - t

    for r in runs.values():  # compile every shape
        run_pass(r)
    for _ in range(rounds):
        for r in runs.values():
            r["times"].append(run_pass(r))
    assert runs["ours"]["target"] == runs["reference"]["target"]
    rate = {k: r["target"] / min(r["times"]) for k, r in runs.items()}
    for k, r in runs.items():
        print(f"{name} {k:9s}: shapes {r['shapes']}, fill {r['real'] / r['slots']:.0%}, "
              f"best pass {min(r['times']):.2f} s over {steps} steps")
    return (f"sft target tokens/s, {name} ({cfg.num_layers} layers, batch {batch_size}, fp32, CPU): "
            f"ours {rate['ours']:.0f} tok/s | reference {rate['reference']:.0f} tok/s | "
            f"ratio {rate['ours'] / rate['reference']:.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="demo,gsm")
    ap.add_argument("--steps", type=int, default=6, help="steps per timed pass")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gsm-layers", type=int, default=4)
    args = ap.parse_args()
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} cores); "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    lines = [bench(name, args.steps, args.rounds, args.gsm_layers) for name in args.cases.split(",")]
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
