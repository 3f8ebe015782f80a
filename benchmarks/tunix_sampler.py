"""Our sampler vs google/tunix's `Sampler` on the same SmolLM2-135M weights, side by side.

Both sample the same GSM-format prompts (the project's chat prompt over GSM8K-style questions)
with the same float32 weights: ours loaded from the embedded GGUF, tunix's Llama 3 model loaded
from the HF folder `models.save_hf` writes from those weights. Every row is made to run the full
`--new-tokens` (no EOS: ours eos_id=-1, tunix an id outside the vocabulary), so both do the same
work: batch x new tokens per call, prompts padded to the same power of two. A batch holds the
four prompts, each repeated batch / 4 times (K samples per query, as a run samples): ours
prefills each distinct prompt once and copies its cache rows, tunix prefills every row.
A greedy check first: same weights and prompts must give the same greedy tokens.

For each batch size it reports
  - tok/s: new tokens per second of one call at T = 0.7, top-p 1 (best of --repeats, compiled);
  - compile: the first call's time minus a compiled call's;
  - a temperature grid (--temperatures) swept one call per temperature, as a run's search does:
    wall time and the number of XLA compilations it triggers (counted with jax.monitoring).
Tunix treats the temperature as a static argument (a compile per temperature); ours takes it
as data (and per row: the whole grid can also go in one call, which is how a run samples it).

Needs `google-tunix` (not a dependency of the project):
    pip install google-tunix==0.1.7 sentencepiece jaxtyping pillow perfetto pandas google-metrax
    python benchmarks/tunix_sampler.py [--batches 16 64] [--new-tokens 64] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bstar_jax import models  # noqa: E402
from bstar_jax.generate.grid import sample_grid  # noqa: E402
from bstar_jax.text.tokenizer import encode_prompts, load_tokenizer  # noqa: E402
from benchmarks.continuous import GSM_QUESTIONS  # noqa: E402

COMPILES = [0]


def _count_compile(event: str, *args, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES[0] += 1


def _timed(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


class Ours:
    """`sample_grid`, the call a run makes: K = batch / 4 samples of each prompt, one slot per row."""

    def __init__(self, cfg, params, tokenizer):
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer

    def __call__(self, batch, new_tokens, temperature, seed):
        out = sample_grid(self.cfg, self.params, self.tokenizer, GSM_QUESTIONS, temperatures=[temperature],
                          num_samples=batch // len(GSM_QUESTIONS), rng=jax.random.key(seed),
                          max_new_tokens=new_tokens, eos_id=-1)
        return out.tokens.reshape(batch, new_tokens)


class Tunix:
    """tunix.generate.sampler.Sampler over tunix's Llama 3 model with SmolLM2's weights."""

    def __init__(self, cfg, params, tokenizer, max_len):
        import functools

        from tunix.generate import sampler as tunix_sampler
        from tunix.models.llama3 import model as llama, params as llama_params

        # tunix 0.1.7's attention calls apply_rope without the config's rope_theta (its default is
        # 1e6; SmolLM2's is 1e5): bind it, or the model is not SmolLM2 (greedy tokens diverge).
        if not hasattr(llama.apply_rope, "func"):
            llama.apply_rope = functools.partial(llama.apply_rope, rope_theta=cfg.rope_theta)

        config = llama.ModelConfig(num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
                                   hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads,
                                   head_dim=cfg.head_dim, num_kv_heads=cfg.num_kv_heads,
                                   rope_theta=int(cfg.rope_theta), norm_eps=cfg.rms_norm_eps,
                                   weight_tying=cfg.tie_word_embeddings)
        with tempfile.TemporaryDirectory() as folder:
            models.save_hf(cfg, params, folder)
            model = llama_params.create_model_from_safe_tensors(folder, config, dtype=jnp.float32)
        self.sampler = tunix_sampler.Sampler(model, tokenizer, tunix_sampler.CacheConfig(
            cache_size=max_len, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
        self.texts = [tokenizer.decode(ids) for ids in encode_prompts(tokenizer, GSM_QUESTIONS)]  # ours, as text
        self.no_eos = cfg.vocab_size + 7

    def __call__(self, batch, new_tokens, temperature, seed):
        texts = [self.texts[i % len(self.texts)] for i in range(batch)]
        sampled = dict(temperature=temperature, top_p=1.0) if temperature > 0 else {}  # no top_p: greedy
        out = self.sampler(texts, max_generation_steps=new_tokens, seed=seed, eos_tokens=[self.no_eos],
                           max_prompt_length=128, **sampled)
        return jnp.asarray(np.stack([np.asarray(t) for t in out.tokens]))


def measure(name, sampler, batch, new_tokens, temperatures, repeats, lines):
    """One sampler at one batch size: compile, steady tok/s, the temperature grid's sweep."""
    before = COMPILES[0]
    first = _timed(lambda: sampler(batch, new_tokens, 0.7, 0))
    steady = min(_timed(lambda: sampler(batch, new_tokens, 0.7, r + 1)) for r in range(repeats))
    compiles_first = COMPILES[0] - before
    before = COMPILES[0]
    sweep = sum(_timed(lambda t=t: sampler(batch, new_tokens, t, 100)) for t in temperatures)
    grid_compiles = COMPILES[0] - before
    tok_s = batch * new_tokens / steady
    print(f"[{name}] batch {batch}: first call {first:.1f} s ({compiles_first} compiles), compiled {steady:.1f} s "
          f"= {tok_s:.1f} tok/s; grid of {len(temperatures)} temperatures {sweep:.1f} s, {grid_compiles} more "
          f"compiles; load {os.getloadavg()[0]:.1f}", flush=True)
    lines[name, batch] = dict(tok_s=tok_s, compile=first - steady, sweep=sweep, grid_compiles=grid_compiles)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="multiples of 4")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 0.7, 0.9, 1.1])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    import tunix  # noqa: F401  (fail early when it is not installed)

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    cfg, params = models.load("smollm2-135m")
    tokenizer = load_tokenizer("smollm2-135m")
    ours, theirs = Ours(cfg, params, tokenizer), Tunix(cfg, params, tokenizer, 128 + max(args.new_tokens, 16))
    # Same weights, same prompts: the greedy tokens must agree (a check of the weight mapping).
    a, b = np.asarray(ours(len(GSM_QUESTIONS), 16, 0.0, 0)), np.asarray(theirs(len(GSM_QUESTIONS), 16, 0.0, 0))
    print(f"greedy, 16 tokens x {len(GSM_QUESTIONS)} prompts: {np.mean(a == b):.3f} of tokens agree", flush=True)
    results = {}
    for batch in args.batches:
        measure("ours", ours, batch, args.new_tokens, args.temperatures, args.repeats, results)
        measure("tunix", theirs, batch, args.new_tokens, args.temperatures, args.repeats, results)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    for batch in args.batches:
        a, b = results["ours", batch], results["tunix", batch]
        print(f"batch {batch}, {args.new_tokens} new tokens: ours {a['tok_s']:.1f} tok/s | tunix {b['tok_s']:.1f} tok/s"
              f" | ratio {a['tok_s'] / b['tok_s']:.2f}; compile ours {a['compile']:.1f} s | tunix {b['compile']:.1f} s;"
              f" {len(args.temperatures)}-temperature grid ours {a['sweep']:.1f} s, {a['grid_compiles']} compiles |"
              f" tunix {b['sweep']:.1f} s, {b['grid_compiles']} compiles")


if __name__ == "__main__":
    main()
