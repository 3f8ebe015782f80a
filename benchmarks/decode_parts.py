"""Two parts of a decode step, ours vs the form they replaced, at the demo's and SmolLM2's shapes.

  * token draw: `strategy.draw` (one uniform per row, inverse CDF found block by block) vs
    `jax.random.categorical` (one Gumbel per vocabulary entry), on [rows, vocab] logits;
  * Q·K of one decode step: keys kept as [B, G, head_dim, slots] (the cache's K layout,
    models/cache.py) vs [B, G, slots, head_dim] (V's layout, which K had before); both give the
    same floats.

Each pair runs in one process on the same inputs, timed after compilation (median of --repeats
calls). Ratio > 1: ours is faster.

    python benchmarks/decode_parts.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bstar_jax.generate import strategy  # noqa: E402

# (name, rows, vocab): the demo's vocabulary and SmolLM2's, at the rows of a sampler call.
DRAWS = [("demo vocab", 512, 384), ("SmolLM2 vocab", 128, 49152), ("SmolLM2 vocab", 256, 49152)]
# (name, B, G = KV heads, M = query heads per KV head, D = head_dim, S = attended slots)
QK = [("demo", 512, 2, 2, 32, 160), ("SmolLM2", 256, 3, 3, 64, 128)]


def median_ms(fn, *args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    ours_draw = jax.jit(strategy.draw)
    categorical = jax.jit(lambda keys, logits: jax.vmap(jax.random.categorical)(keys, logits))
    for name, rows, vocab in DRAWS:
        logits = 3.0 * jax.random.normal(jax.random.key(0), (rows, vocab))
        keys = jax.random.split(jax.random.key(1), rows)
        ours = median_ms(ours_draw, keys, logits, repeats=args.repeats)
        ref = median_ms(categorical, keys, logits, repeats=args.repeats)
        print(f"token draw, {name} ({rows} rows x {vocab}): ours {ours:.2f} ms | reference "
              f"(jax.random.categorical) {ref:.2f} ms | ratio {ref / ours:.1f}", flush=True)
    ours_qk = jax.jit(lambda q, k: jnp.einsum("bkmd,bkds->bkms", q, k, preferred_element_type=jnp.float32))
    ref_qk = jax.jit(lambda q, k: jnp.einsum("bkmd,bksd->bkms", q, k, preferred_element_type=jnp.float32))
    for name, B, G, M, D, S in QK:
        q = jax.random.normal(jax.random.key(2), (B, G, M, D))
        k_BxGxSxD = jax.random.normal(jax.random.key(3), (B, G, S, D))
        k_BxGxDxS = jnp.swapaxes(k_BxGxSxD, 2, 3)
        same = bool(np.array_equal(ours_qk(q, k_BxGxDxS), ref_qk(q, k_BxGxSxD)))
        ours = median_ms(ours_qk, q, k_BxGxDxS, repeats=args.repeats)
        ref = median_ms(ref_qk, q, k_BxGxSxD, repeats=args.repeats)
        print(f"decode Q·K, {name} (B={B}, G={G}, M={M}, D={D}, S={S}): ours (K as D x S) {ours:.2f} ms | "
              f"reference (K as S x D) {ref:.2f} ms | ratio {ref / ours:.1f} | same floats: {same}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
